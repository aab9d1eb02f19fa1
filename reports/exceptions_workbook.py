"""`exceptions.csv`: the exception register as data stewards open it, in French Excel or LibreOffice.

UTF-8 with a byte order mark, `;` between cells and CRLF line ends (what a French spreadsheet
expects when the file is double-clicked), French column headers, one row per row of the
register, the explanation and suggested action of its rule (validation/rules.py, the single
source), sorted for review: what stops or loses access first (blocking rules, then rejections),
then by entity in the contract's order, reason code in the order of the checks, and legacy key
(numeric keys numerically). Every text cell that a spreadsheet would run as a formula is
neutralised (reports/spreadsheet_safety.py).
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from reports.spreadsheet_safety import neutralise_row
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


def write_exceptions_workbook(register: pd.DataFrame, run_dir: Path, *,
                              offending_values: pd.DataFrame | None = None) -> Path:
    """Write `run_dir / "exceptions.csv"` from the exception register and return its path.

    `offending_values` (columns entity, legacy_key, value and optionally reason_code; see
    `offending_values_from`) adds a « valeur en cause » column.
    """
    rows = workbook_rows(register, offending_values)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / FILE_NAME
    partial = run_dir / f".{FILE_NAME}.partial"
    with partial.open("w", encoding="utf-8-sig", newline="") as handle:
        writer = csv.writer(handle, delimiter=";", lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
        writer.writerow(neutralise_row(list(rows.columns)))
        for record in rows.itertuples(index=False, name=None):
            writer.writerow(neutralise_row(["" if _missing(value) else str(value) for value in record]))
    partial.replace(path)
    return path


def workbook_rows(register: pd.DataFrame, offending_values: pd.DataFrame | None = None) -> pd.DataFrame:
    """The workbook as a frame: French headers, one row per register row, in review order."""
    values = _offending_lookup(offending_values)
    records: list[tuple[tuple[Any, ...], list[Any]]] = []
    for record in register[
        ["entity", "legacy_key", "outcome", "reason_code", "detail", "merged_into"]
    ].itertuples(index=False, name=None):
        entity, key, outcome = str(record[0]), str(record[1]), str(record[2])
        reason = "" if _missing(record[3]) else str(record[3])
        detail, merged_into = record[4], record[5]
        rule = _RULES.get((entity, reason))
        row = [
            ENTITY_LABELS.get(entity, entity), key, OUTCOME_LABELS.get(outcome, outcome), reason,
            rule.explanation_fr if rule else "", rule.action_fr if rule else "",
            "" if _missing(detail) else str(detail), "" if _missing(merged_into) else str(merged_into),
        ]
        if values is not None:
            row.append(values.get((entity, key, reason)) or values.get((entity, key, "")) or "")
        records.append((_review_order(entity, key, outcome, reason, rule), row))
    records.sort(key=lambda item: item[0])
    columns = [*COLUMNS, OFFENDING_COLUMN] if values is not None else list(COLUMNS)
    return pd.DataFrame([row for _order, row in records], columns=columns, dtype=object)


def offending_values_from(results: Mapping[str, Any]) -> pd.DataFrame:
    """The login behind each user exception, read from the validation results (`RuleEngine.results`).

    Only the columns of OFFENDING_VALUE_COLUMNS are taken: the value the steward must fix to
    clear an INVALID_EMAIL, DUPLICATE_LOGIN or LOGIN_TAKEN, never a phone number or a name.
    """
    rows: list[dict[str, str]] = []
    for result in results.values():
        for expectation_result in result.results:
            config = expectation_result.expectation_config
            meta = config.meta or {}
            column = config.kwargs.get("column")
            if column not in OFFENDING_VALUE_COLUMNS or "reason_code" not in meta:
                continue
            outcome = expectation_result.result or {}
            key_columns = outcome.get("unexpected_index_column_names") or []
            for item in outcome.get("unexpected_index_list") or []:
                if not isinstance(item, dict) or not key_columns or _missing(item.get(column)):
                    continue
                rows.append({"entity": str(meta.get("entity", "")), "legacy_key": str(item[key_columns[0]]),
                             "reason_code": str(meta["reason_code"]), "value": str(item[column])})
    return pd.DataFrame(rows, columns=["entity", "legacy_key", "reason_code", "value"], dtype=object)


def _offending_lookup(offending_values: pd.DataFrame | None) -> dict[tuple[str, str, str], str] | None:
    if offending_values is None:
        return None
    missing = {"entity", "legacy_key", "value"} - set(offending_values.columns)
    if missing:
        raise ValueError(f"offending_values lacks the column(s) {sorted(missing)}")
    lookup: dict[tuple[str, str, str], list[str]] = {}
    has_reason = "reason_code" in offending_values.columns
    for record in offending_values.to_dict("records"):
        if _missing(record["value"]):
            continue
        reason = "" if not has_reason or _missing(record["reason_code"]) else str(record["reason_code"])
        found = lookup.setdefault((str(record["entity"]), str(record["legacy_key"]), reason), [])
        if str(record["value"]) not in found:
            found.append(str(record["value"]))
    return {key: " | ".join(found) for key, found in lookup.items()}


def _review_order(entity: str, key: str, outcome: str, reason: str, rule: Rule | None) -> tuple[Any, ...]:
    priority = 0 if rule is not None and rule.blocking else _OUTCOME_RANK.get(outcome, 5)
    entity_rank = ENTITIES.index(entity) if entity in ENTITIES else len(ENTITIES)
    rule_order = rule.order if rule is not None else 1_000
    natural_key = (0, int(key), "") if key.isascii() and key.isdigit() else (1, 0, key)
    return (priority, entity_rank, entity, rule_order, reason, natural_key)


def _missing(value: Any) -> bool:
    return value is None or (pd.api.types.is_scalar(value) and bool(pd.isna(value)))
