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

import codecs
import csv
import functools
import io
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.arrow_text import arrow_array, arrow_strings, data_bytes, terminated_bytes
from reports.spreadsheet_safety import neutralise_arrow, neutralise_row, neutralise_values
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
# whole register; only a slice's cells are ever made. Made whole, then put in order, the cells of
# 644,585 rows (a million users) took 0.6 GB beside the load.
SLICE_ROWS = 65_536

# The file's dialect (French Excel's): csv.writer's QUOTE_MINIMAL with these, no escape character.
DELIMITER = ";"
LINE_END = "\r\n"
# The characters for which csv.writer quotes a field here: the delimiter, the quote character and
# those of the line end (CPython 3.11's _csv, checked against every code point at the start, the
# middle and the end of a field). All ASCII: never a byte of a longer UTF-8 sequence.
_NEEDS_QUOTES_BYTES = (b";", b'"', b"\r", b"\n")
_TEXT = pa.large_string()
# What Arrow raises on a value it cannot hold (text with a lone surrogate, which no UTF-8 encodes):
# that slice is written by csv.writer, which raises the UnicodeEncodeError the file always raised.
_ARROW_REFUSALS = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, UnicodeError)


def write_exceptions_workbook(register: pd.DataFrame, run_dir: Path, *,
                              offending_values: pd.DataFrame | None = None) -> Path:
    """Write `run_dir / "exceptions.csv"` from the exception register and return its path.

    `offending_values` (columns entity, legacy_key, value and optionally reason_code; see
    `offending_values_from`) adds a « valeur en cause » column.

    Each slice's lines are made by Arrow and written as the bytes of one buffer: csv.writer took
    2.8 s of the 3.9 s of a million users' workbook (644,585 rows), and the Python cells it needs
    (and their neutralisation) most of the rest; by Arrow the whole write takes 1.3 s, of which
    the order and the rule columns 0.4 s. The bytes are csv.writer's with the utf-8-sig encoding
    (a property test compares them); a slice Arrow cannot hold is written by csv.writer itself.
    """
    workbook = _workbook(register, offending_values, neutralised=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / FILE_NAME
    partial = run_dir / f".{FILE_NAME}.partial"
    with partial.open("wb") as handle:
        handle.write(codecs.BOM_UTF8)  # once, at the start, as the utf-8-sig codec writes it
        _write_rows(handle, [neutralise_row(list(workbook.header))])
        fast = _arrow_workbook(workbook)
        for rows in workbook.row_slices():
            _write_slice(handle, workbook, fast, rows)
    partial.replace(path)
    return path


def workbook_rows(register: pd.DataFrame, offending_values: pd.DataFrame | None = None) -> pd.DataFrame:
    """The workbook as a frame: French headers, one row per register row, in review order."""
    workbook = _workbook(register, offending_values, neutralised=False)
    made = [_slice_cells(workbook, rows) for rows in workbook.row_slices()]
    return pd.DataFrame({name: np.concatenate([columns[name] for columns in made]) if made
                         else np.array([], dtype=object) for name in workbook.header}, dtype=object)


@dataclass(frozen=True)
class _Workbook:
    """What the workbook's cells are made from, a slice of rows at a time: the register, the
    offending values' lookup, the rule's columns per distinct (entity, reason code, outcome) and
    each row's code among them, and the rows' review order. `neutralised` for the file (see
    spreadsheet_safety)."""

    header: list[str]
    register: pd.DataFrame
    values: pd.Series | None
    decided: pd.DataFrame
    codes: np.ndarray
    entity: _CodedText
    reason: _CodedText
    order: np.ndarray
    neutralised: bool

    def row_slices(self) -> Iterator[np.ndarray]:
        """The register's row positions in review order, SLICE_ROWS at a time."""
        for start in range(0, len(self.order), SLICE_ROWS):
            yield self.order[start:start + SLICE_ROWS]


def _workbook(register: pd.DataFrame, offending_values: pd.DataFrame | None, *, neutralised: bool) -> _Workbook:
    """The workbook's header, order and rule columns. Bad `offending_values` fail here, before
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
        for column in _RULE_TEXT_COLUMNS:
            decided[column] = neutralise_values(decided[column])
    codes = np.asarray(codes, dtype=np.int64)
    order = _review_order(register["legacy_key"], decided, codes, entity, reason)
    return _Workbook(header, register, values, decided, codes, entity, reason, order, neutralised)


def _slice_cells(workbook: _Workbook, rows: np.ndarray) -> dict[str, np.ndarray]:
    """The cells (text, by column) of the register's `rows`, as Python strings."""
    def cells(column: np.ndarray) -> np.ndarray:
        return np.array(neutralise_values(column), dtype=object) if workbook.neutralised else column

    register, entity, reason = workbook.register, workbook.entity, workbook.reason
    rule = workbook.decided.take(workbook.codes[rows])
    key = _text(register["legacy_key"].iloc[rows])
    columns: dict[str, np.ndarray] = {
        COLUMNS[0]: rule["entity_label"].to_numpy(), COLUMNS[1]: cells(key),
        COLUMNS[2]: rule["outcome_label"].to_numpy(), COLUMNS[3]: rule["reason"].to_numpy(),
        COLUMNS[4]: rule["explanation"].to_numpy(), COLUMNS[5]: rule["action"].to_numpy(),
        COLUMNS[6]: cells(_text(register["detail"].iloc[rows], missing="")),
        COLUMNS[7]: cells(_text(register["merged_into"].iloc[rows], missing="")),
    }
    if workbook.values is not None:
        columns[OFFENDING_COLUMN] = cells(_offending_column(
            workbook.values, entity.texts[entity.codes[rows]], key, reason.texts[reason.codes[rows]]))
    return columns


# --- the file's lines by Arrow --------------------------------------------------------------------


@dataclass(frozen=True)
class _ArrowWorkbook:
    """What every slice's lines share, in Arrow: per distinct (entity, reason code, outcome), the
    entity's field and the four fields after the legacy key joined; the keys that have an
    offending value; the register's Arrow-backed text columns (None for another column)."""

    entity_fields: pa.Array
    rule_fields: pa.Array
    known_keys: pa.Array | None
    columns: dict[str, pa.Array | None]


def _arrow_workbook(workbook: _Workbook) -> _ArrowWorkbook | None:
    """None when a rule column or an offending key is text Arrow cannot hold: then every slice
    is written by csv.writer."""
    try:
        fields = {column: _csv_fields(_arrow_of(workbook.decided[column].to_numpy(dtype=object)))
                  for column in _RULE_TEXT_COLUMNS}
        known = (None if workbook.values is None else
                 _arrow_of(workbook.values.index.unique(level="legacy_key").to_numpy(dtype=object)))
    except _ARROW_REFUSALS:
        return None
    rule_fields = pc.binary_join_element_wise(*(fields[column] for column in _RULE_TEXT_COLUMNS[1:]),
                                              pa.scalar(DELIMITER, _TEXT))
    columns = {column: arrow_array(workbook.register[column]) for column in ("legacy_key", "detail", "merged_into")}
    return _ArrowWorkbook(fields["entity_label"], rule_fields, known, columns)


def _write_slice(handle: BinaryIO, workbook: _Workbook, fast: _ArrowWorkbook | None, rows: np.ndarray) -> None:
    """The lines of the register's `rows`: Arrow's bytes, else (text Arrow cannot hold, or no
    `fast`) csv.writer's."""
    if fast is not None:
        try:
            lines = terminated_bytes(_slice_lines(workbook, fast, rows), LINE_END)
        except _ARROW_REFUSALS:
            pass
        else:
            handle.write(lines)
            return
    _write_rows(handle, zip(*_slice_cells(workbook, rows).values(), strict=True))


def _write_rows(handle: BinaryIO, rows: Iterable[Iterable[str]]) -> None:
    """`rows` written by csv.writer in the file's dialect, encoded in strict UTF-8 (what the
    utf-8-sig codec writes after its byte order mark; its error on a lone surrogate too)."""
    text = io.TextIOWrapper(handle, encoding="utf-8", newline="", write_through=True)
    try:
        csv.writer(text, delimiter=DELIMITER, lineterminator=LINE_END, quoting=csv.QUOTE_MINIMAL).writerows(rows)
    finally:
        text.detach()  # flushed; the file stays open


def _slice_lines(workbook: _Workbook, fast: _ArrowWorkbook, rows: np.ndarray) -> pa.Array:
    """The lines (without their line end) of the register's `rows`, as csv.writer writes them
    from _slice_cells: one Arrow string array."""
    register = workbook.register
    codes = pa.array(workbook.codes[rows])
    key = _register_text(register["legacy_key"], fast.columns["legacy_key"], rows, missing=None)
    fields = [
        fast.entity_fields.take(codes), _cell_fields(key), fast.rule_fields.take(codes),
        _cell_fields(_register_text(register["detail"], fast.columns["detail"], rows, missing="")),
        _cell_fields(_register_text(register["merged_into"], fast.columns["merged_into"], rows, missing="")),
    ]
    if fast.known_keys is not None:  # (None without offending values)
        fields.append(_cell_fields(_offending_arrow(workbook, fast.known_keys, rows, key)))
    line: pa.Array = pc.binary_join_element_wise(*fields, pa.scalar(DELIMITER, _TEXT))
    return line


def _cell_fields(texts: pa.Array) -> pa.Array:
    """A register text column's fields: neutralised as `neutralise_values` does, then quoted."""
    return _csv_fields(neutralise_arrow(texts))


def _csv_fields(texts: pa.Array) -> pa.Array:
    """Each text as csv.writer writes it as a field of a row of several (QUOTE_MINIMAL, quotes
    doubled, no escape character): between double quotes, each of its own doubled, when it holds
    `;`, `"`, CR or LF; as it is otherwise, even empty (a row of one empty field would be `""`:
    the workbook's rows have 8 or 9) or with leading or trailing spaces."""
    held = data_bytes(texts)  # a copy, but `bytes.find` is memchr: most columns of a slice need no quotes
    if not any(held.find(character) >= 0 for character in _NEEDS_QUOTES_BYTES):
        return texts
    needs_quotes = functools.reduce(pc.or_, (pc.match_substring(texts, character.decode())
                                             for character in _NEEDS_QUOTES_BYTES))
    quote = pa.scalar('"', texts.type)
    quoted = pc.binary_join_element_wise(quote, pc.replace_substring(texts, '"', '""'), quote,
                                         pa.scalar("", texts.type))
    return pc.if_else(needs_quotes, quoted, texts)


def _arrow_of(values: np.ndarray) -> pa.Array:
    """Python strings as an Arrow large string array (UnicodeEncodeError on a lone surrogate)."""
    return pa.array(values, type=_TEXT)


def _register_text(series: pd.Series, strings: pa.Array | None, rows: np.ndarray, *,
                   missing: str | None) -> pa.Array:
    """`_text(series.iloc[rows], missing=missing)` as an Arrow large string array: an Arrow-backed
    column taken by Arrow (no Python string a row); another one's cells passed as they are when
    they are all `str` (the usual `merged_into`: text and missing values), else _text's."""
    if strings is not None:
        taken = strings.take(pa.array(rows))
        if not taken.null_count:
            return taken.cast(_TEXT)
        if missing is not None:
            return pc.fill_null(taken, missing).cast(_TEXT)
    cells = series.iloc[rows]
    values = cells.to_numpy(dtype=object)
    absent = pd.isna(values)
    if missing is not None and absent.any():
        values = np.where(absent, missing, values)
    # Exactly str (which _text writes as it is; not a subclass, whose str() may differ). A C loop
    # over the types: 2 ms a slice. Missing values without `missing` are other types: _text's way.
    if set(map(type, values)) <= {str}:
        return _arrow_of(values)
    return _arrow_of(_text(cells, missing=missing))


def _offending_arrow(workbook: _Workbook, known_keys: pa.Array, rows: np.ndarray, key: pa.Array) -> pa.Array:
    """_offending_column of the register's `rows`, as an Arrow string array. Only the rows whose
    key has an offending value are looked up as Python strings (25,855 values for 644,585 rows at
    a million users); a row's value depends on its own entity, key and reason code only."""
    hit = np.flatnonzero(pc.is_in(key, value_set=known_keys).to_numpy(zero_copy_only=False))
    at = rows[hit]
    entity, reason = workbook.entity, workbook.reason
    found = _offending_column(cast(pd.Series, workbook.values), entity.texts[entity.codes[at]],
                              np.array(key.take(pa.array(hit)).to_pylist(), dtype=object),
                              reason.texts[reason.codes[at]])
    shown = _arrow_of(np.concatenate([np.array([""], dtype=object), found]))  # "" first, for the others
    picks = np.zeros(len(rows), dtype=np.int64)
    picks[hit] = np.arange(1, len(hit) + 1)
    return shown.take(pa.array(picks))


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
# Those that are cells, in the file's order.
_RULE_TEXT_COLUMNS = ("entity_label", "outcome_label", "reason", "explanation", "action")


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
    # As objects: an Index of the keys would be Arrow text, whose isin went through a Python list of
    # the lookup's keys for every slice (2 s of the workbook's 6 at a million users).
    known = values.index.unique(level="legacy_key").to_numpy(dtype=object)
    rows = np.flatnonzero(pd.Index(key, dtype=object).isin(known))
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
