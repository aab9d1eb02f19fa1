"""From rule failures to one outcome per record: the first broken rule, in the contract's order."""

from __future__ import annotations

from typing import Any

import pandas as pd

from validation.rules import Rule

MIGRATED = "migrated"


def first_failure(
    keys: pd.Series, rules: tuple[Rule, ...], failures: dict[str, frozenset[Any]]
) -> tuple[pd.Series, pd.Series]:
    """(outcome, reason_code) per record; corrections do not decide an outcome and are skipped.

    Rules are applied from the last to the first so that the earliest broken rule wins.
    """
    outcome = pd.Series(MIGRATED, index=keys.index, dtype=object)
    reason = pd.Series(None, index=keys.index, dtype=object)
    for rule in sorted(rules, key=lambda r: r.order, reverse=True):
        if rule.outcome == "corrected":
            continue
        broken = keys.isin(list(failures.get(rule.reason_code, ())))
        outcome[broken] = rule.outcome
        reason[broken] = rule.reason_code
    return outcome, reason


def breaks(keys: pd.Series, failures: dict[str, frozenset[Any]], reason_code: str) -> pd.Series:
    return keys.isin(list(failures.get(reason_code, ())))
