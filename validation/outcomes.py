"""From rule failures to one outcome per record: the first broken rule, in the contract's order."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from validation.rules import Rule

MIGRATED = "migrated"


def first_failure(
    keys: pd.Series, rules: tuple[Rule, ...], failures: dict[str, frozenset[Any]]
) -> tuple[pd.Series, pd.Series]:
    """(outcome, reason_code) per record; corrections do not decide an outcome and are skipped.

    The earliest broken rule wins (see `first_failure_codes`).
    """
    deciding = [rule for rule in rules if rule.outcome != "corrected"]
    outcomes = (MIGRATED, *dict.fromkeys(rule.outcome for rule in deciding))
    reasons = tuple(dict.fromkeys(rule.reason_code for rule in deciding))
    outcome, reason = first_failure_codes(keys, rules, failures, outcomes, reasons)
    return (pd.Series(np.array(outcomes, dtype=object)[outcome], index=keys.index, dtype=object),
            pd.Series(np.array([*reasons, None], dtype=object)[reason], index=keys.index, dtype=object))


def first_failure_codes(
    keys: pd.Series, rules: tuple[Rule, ...], failures: dict[str, frozenset[Any]],
    outcomes: Sequence[str], reasons: Sequence[str],
) -> tuple[npt.NDArray[np.int16], npt.NDArray[np.int16]]:
    """`first_failure` as positions in `outcomes` and in `reasons` (-1: no reason): two bytes a
    record, where the text (a Python object a record, then its categories) took 0.2 GB for the
    2.9 million habilitations of a million users. An outcome or reason not listed is refused
    (ValueError), never made missing.

    Rules are applied from the last to the first so that the earliest broken rule wins.
    """
    deciding = [rule for rule in rules if rule.outcome != "corrected"]
    unlisted = sorted({rule.outcome for rule in deciding} - set(outcomes) - {MIGRATED}
                      | {rule.reason_code for rule in deciding} - set(reasons))
    if unlisted or MIGRATED not in outcomes:
        raise ValueError(f"not among the outcomes {tuple(outcomes)} or reasons {tuple(reasons)}: "
                         f"{unlisted or [MIGRATED]}")
    outcome = np.full(len(keys), list(outcomes).index(MIGRATED), dtype=np.int16)
    reason = np.full(len(keys), -1, dtype=np.int16)
    for rule in sorted(deciding, key=lambda r: r.order, reverse=True):
        broken = breaks(keys, failures, rule.reason_code).to_numpy(dtype=bool)
        outcome[broken] = list(outcomes).index(rule.outcome)
        reason[broken] = list(reasons).index(rule.reason_code)
    return outcome, reason


def breaks(keys: pd.Series, failures: dict[str, frozenset[Any]], reason_code: str) -> pd.Series:
    return keys.isin(list(failures.get(reason_code, ())))
