"""`exceptions.csv`: the exception register as data stewards open it, in French Excel or LibreOffice.

UTF-8 with a byte order mark, `;` between cells and CRLF line ends (what a French spreadsheet
expects when the file is double-clicked), French column headers, one row per row of the
register, the explanation and suggested action of its rule (validation/rules.py, the single
source), sorted for review: what stops or loses access first (blocking rules, then rejections),
then by entity in the contract's order, reason code in the order of the checks, and legacy key
(numeric keys numerically). Every text cell that a spreadsheet would run as a formula is
neutralised (reports/spreadsheet_safety.py).

The register has a row per rejected habilitation: at a million users, hundreds of thousands of
rows. What depends on the rule (labels, rank, explanation) is decided once per distinct
(entity, reason code, outcome), the order is one stable sort of computed columns.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import pyarrow.compute as pc

from pipelines.arrow_text import arrow_strings
from reports.spreadsheet_safety import neutralise_row, neutralise_values
from validation.french import ENTITIES, ENTITY_LABELS, OUTCOME_LABELS
from validation.rules import RULES, Rule

FILE_NAME = "exceptions.csv"
COLUMNS: tuple[str, ...] = ("entité", "clé legacy", "issue", "code motif", "explication", "action suggérée",
                            "détail", "fusionné dans")
OFFENDING_COLUMN = "valeur en cause"
# Values that may be shown beside an exception: the login (and the email it is made from), which
# the steward needs to find and fix the record; nothing else personal.
OFFENDING_VALUE_COLUMNS = frozenset({"login", "email"})
_OUTCOME_RANK = {"rejected": 1, "merged": 2, "corrected": 3, "excluded": 4}
_RULES: dict[tuple[str, str], Rule] = {(r.entity, r.reason_code): r for r in RULES}
_NATURAL_KEY = r"[0-9]+"  # str.isascii() and str.isdigit()


# Register rows made into cells and written at a time. The order is worked out on codes of the
# whole register; only a slice's cells are ever Python strings. Made whole, then put in order,
# the cells of 644,585 rows (a million users) took 0.6 GB beside the load.
SLICE_ROWS = 65_536


def write_exceptions_workbook(register: pd.DataFrame, run_dir: Path, *,
                              offending_values: pd.DataFrame | None = None) -> Path:
    """Write `run_dir / "exceptions.csv"` from the exception register and return its path.

    `offending_values` (columns entity, legacy_key, value and optionally reason_code; see
    `offending_values_from`) adds a « valeur en cause » column.
    """
    header, slices = _workbook_slices(register, offending_values, neutralised=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / FILE_NAME
    partial = run_dir / f".{FILE_NAME}.partial"
    with partial.open("w", encoding="utf-8-sig", newline="") as handle:
        writer = csv.writer(handle, delimiter=";", lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
        writer.writerow(neutralise_row(list(header)))
        for columns in slices:
            writer.writerows(zip(*columns.values(), strict=True))
    partial.replace(path)
    return path


def workbook_rows(register: pd.DataFrame, offending_values: pd.DataFrame | None = None) -> pd.DataFrame:
    """The workbook as a frame: French headers, one row per register row, in review order."""
    header, slices = _workbook_slices(register, offending_values, neutralised=False)
    made = list(slices)
    return pd.DataFrame({name: np.concatenate([columns[name] for columns in made]) if made
                         else np.array([], dtype=object) for name in header}, dtype=object)


def _workbook_slices(register: pd.DataFrame, offending_values: pd.DataFrame | None, *,
                     neutralised: bool) -> tuple[list[str], Iterator[dict[str, np.ndarray]]]:
    """The workbook's header, and its columns (text, in review order) a slice of rows at a time;
    `neutralised` for the file (see spreadsheet_safety). Bad `offending_values` fail here, before
    anything is written."""
    values = _offending_lookup(offending_values)
    header = [*COLUMNS, *([OFFENDING_COLUMN] if values is not None else [])]
    entity = _coded_text(register["entity"])
    outcome = _coded_text(register["outcome"])
    reason = _coded_text(register["reason_code"], missing="")
    # Everything the rule decides, once per distinct (entity, reason code, outcome).
    triples = (entity.codes * len(reason.texts) + reason.codes) * len(outcome.texts) + outcome.codes
    codes, distinct = pd.factorize(triples)
    decided = pd.DataFrame([
        _rule_columns(entity.texts[t // len(outcome.texts) // len(reason.texts)],
                      reason.texts[t // len(outcome.texts) % len(reason.texts)], outcome.texts[t % len(outcome.texts)])
        for t in np.asarray(distinct).tolist()], columns=_RULE_COLUMNS)
    if neutralised:
        for column in ("entity_label", "outcome_label", "reason", "explanation", "action"):
            decided[column] = neutralise_values(decided[column])
    codes = np.asarray(codes, dtype=np.int64)
    order = _review_order(register["legacy_key"], decided, codes, entity, reason)
    return header, _slices(register, values, decided, codes, entity, reason, order, neutralised)


def _slices(register: pd.DataFrame, values: pd.Series | None, decided: pd.DataFrame, codes: np.ndarray,
            entity: _CodedText, reason: _CodedText, order: np.ndarray,
            neutralised: bool) -> Iterator[dict[str, np.ndarray]]:
    def cells(column: np.ndarray) -> np.ndarray:
        return np.array(neutralise_values(column), dtype=object) if neutralised else column

    for start in range(0, len(order), SLICE_ROWS):
        rows = order[start:start + SLICE_ROWS]
        rule = decided.take(codes[rows])
        key = _text(register["legacy_key"].iloc[rows])
        columns: dict[str, np.ndarray] = {
            COLUMNS[0]: rule["entity_label"].to_numpy(), COLUMNS[1]: cells(key),
            COLUMNS[2]: rule["outcome_label"].to_numpy(), COLUMNS[3]: rule["reason"].to_numpy(),
            COLUMNS[4]: rule["explanation"].to_numpy(), COLUMNS[5]: rule["action"].to_numpy(),
            COLUMNS[6]: cells(_text(register["detail"].iloc[rows], missing="")),
            COLUMNS[7]: cells(_text(register["merged_into"].iloc[rows], missing="")),
        }
        if values is not None:
            columns[OFFENDING_COLUMN] = cells(_offending_column(
                values, entity.texts[entity.codes[rows]], key, reason.texts[reason.codes[rows]]))
        yield columns


def _review_order(keys: pd.Series, decided: pd.DataFrame, codes: np.ndarray, entity: _CodedText,
                  reason: _CodedText) -> np.ndarray:
    """The rows' positions in review order (see the module docstring): one stable sort by priority,
    entity rank, entity, rule order, reason code, then the legacy key, numeric keys as numbers (by
    their length without leading zeros, then their digits), after them the others as text. Text
    is sorted by code point, as the sort of the Python strings it replaces: the rank of each
    distinct text, the keys' in Arrow (UTF-8's byte order is code-point order)."""
    if not len(keys):
        return np.array([], dtype=np.intp)
    if not isinstance(keys.dtype, pd.StringDtype) or keys.hasnans:  # as _text writes them
        keys = pd.Series(_text(keys), dtype="str")
    keys = keys.astype("str")
    numeric = keys.str.fullmatch(_NATURAL_KEY).to_numpy(dtype=bool, na_value=False)
    digits = keys.str.lstrip("0")
    sorted_as = digits.where(numeric, keys)
    arrow = arrow_strings(sorted_as)
    key_ranks = (np.asarray(pc.rank(arrow, sort_keys="ascending", tiebreaker="dense")) if arrow is not None
                 else pd.factorize(sorted_as.to_numpy(dtype=object), sort=True)[0])  # (text not in Arrow)
    order: np.ndarray = np.lexsort((  # the last key sorts first
        key_ranks,
        np.where(numeric, digits.str.len().to_numpy(dtype=np.int64, na_value=0), 0),
        ~numeric,
        reason.ranks[reason.codes],
        decided["rule_order"].to_numpy(dtype=np.int64)[codes],
        entity.ranks[entity.codes],
        decided["entity_rank"].to_numpy(dtype=np.int64)[codes],
        decided["priority"].to_numpy(dtype=np.int64)[codes],
    ))
    return order


@dataclass(frozen=True)
class _CodedText:
    """A column as a code per row and, per code, its text as _text writes it and that text's rank
    in code-point order."""

    codes: np.ndarray
    texts: np.ndarray
    ranks: np.ndarray


def _coded_text(series: pd.Series, *, missing: str | None = None) -> _CodedText:
    codes, uniques = pd.factorize(series, use_na_sentinel=False)
    texts = _text(pd.Series(uniques, dtype=series.dtype), missing=missing)
    ranks, _ = pd.factorize(texts, sort=True)
    return _CodedText(np.asarray(codes, dtype=np.int64), texts, np.asarray(ranks, dtype=np.int64))


_RULE_COLUMNS = ["entity_label", "outcome_label", "reason", "explanation", "action", "priority", "entity_rank",
                 "rule_order"]


def _rule_columns(entity: str, reason: str, outcome: str) -> tuple[Any, ...]:
    rule = _RULES.get((entity, reason))
    priority = 0 if rule is not None and rule.blocking else _OUTCOME_RANK.get(outcome, 5)
    entity_rank = ENTITIES.index(entity) if entity in ENTITIES else len(ENTITIES)
    return (ENTITY_LABELS.get(entity, entity), OUTCOME_LABELS.get(outcome, outcome), reason,
            rule.explanation_fr if rule else "", rule.action_fr if rule else "",
            priority, entity_rank, rule.order if rule is not None else 1_000)


def offending_values_from(results: Mapping[str, Any]) -> pd.DataFrame:
    """The login behind each user exception, read from the validation results (`RuleEngine.results`).

    Only the columns of OFFENDING_VALUE_COLUMNS are taken: the value the steward must fix to
    clear an INVALID_EMAIL, DUPLICATE_LOGIN or LOGIN_TAKEN, never a phone number or a name.
    The failing keys are Great Expectations'; their values come with them (`failing_records`).
    """
    from validation.evaluate import failing_records

    columns = ["entity", "legacy_key", "reason_code", "value"]
    parts: list[pd.DataFrame] = []
    for suite, result in results.items():
        for expectation_result in result.results:
            config = expectation_result.expectation_config
            meta = config.meta or {}
            column = config.kwargs.get("column")
            if column not in OFFENDING_VALUE_COLUMNS or "reason_code" not in meta:
                continue
            records = failing_records(results, suite, expectation_result)
            if records is None or column not in records.columns:
                continue
            shown = records[records[column].notna()]
            parts.append(pd.DataFrame({
                "entity": str(meta.get("entity", "")),
                "legacy_key": _text(shown[records.columns[-1]]),
                "reason_code": str(meta["reason_code"]),
                "value": _text(shown[column]),
            }, columns=columns, dtype=object))
    if not parts:
        return pd.DataFrame(columns=columns, dtype=object)
    return pd.concat(parts, ignore_index=True)


def _offending_lookup(offending_values: pd.DataFrame | None) -> pd.Series | None:
    """(entity, legacy key, reason code or "") -> the distinct values, in order, joined by " | "."""
    if offending_values is None:
        return None
    missing = {"entity", "legacy_key", "value"} - set(offending_values.columns)
    if missing:
        raise ValueError(f"offending_values lacks the column(s) {sorted(missing)}")
    shown = offending_values[offending_values["value"].notna()]
    reason = (_text(shown["reason_code"], missing="") if "reason_code" in shown.columns
              else np.full(len(shown), "", dtype=object))
    found = pd.DataFrame({"entity": _text(shown["entity"]), "legacy_key": _text(shown["legacy_key"]),
                          "reason": reason, "value": _text(shown["value"])}, dtype=object).drop_duplicates()
    keys = ["entity", "legacy_key", "reason"]
    several = found.duplicated(keys, keep=False)  # most records have one value: no join for those
    single: pd.Series = found[~several].set_index(keys)["value"]
    joined: pd.Series = found[several].groupby(keys, sort=False)["value"].agg(" | ".join)
    return cast(pd.Series, pd.concat([single, joined]))


def _offending_column(values: pd.Series, entity: np.ndarray, key: np.ndarray, reason: np.ndarray) -> np.ndarray:
    """The values of the row's own reason code, else those recorded without one, else ""."""
    column = np.full(len(entity), "", dtype=object)
    rows = np.flatnonzero(pd.Index(key).isin(values.index.get_level_values("legacy_key")))
    if not len(rows):
        return column
    entity, key, reason = entity[rows], key[rows], reason[rows]
    table = values.to_numpy(dtype=object)
    for reasons in (np.full(len(rows), "", dtype=object), reason):  # the exact reason last: it wins
        at = values.index.get_indexer(pd.MultiIndex.from_arrays([entity, key, reasons]))
        hit = at >= 0
        found = table[at[hit]]
        # An empty value is no value: what was there stays (as `a or b` did).
        column[rows[hit]] = np.where(found.astype(bool), found, column[rows[hit]])
    return column


def _text(series: pd.Series, *, missing: str | None = None) -> np.ndarray:
    """The cells as `str`, one per row (an object array); with `missing`, that text for missing cells."""
    if isinstance(series.dtype, pd.StringDtype) and (missing is not None or not series.hasnans):
        return np.asarray(series.to_numpy(dtype=object, na_value=cast(Any, missing)))  # already str objects
    values = series.to_numpy(dtype=object)
    if missing is None:
        return np.array([str(value) for value in values], dtype=object)
    absent = pd.isna(values)
    return np.array([missing if gone else str(value) for value, gone in zip(values, absent, strict=True)],
                    dtype=object)
