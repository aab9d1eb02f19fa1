"""Extract stage: reads the legacy export (SQL database or CSV folder) into `LegacyFrames`.

The readers only fetch values: `csv_reader` gives text, `sql_reader` gives what the database
driver returns. The rules that turn those into typed frames live here, once, so that the same
data read from a CSV folder (any encoding, delimiter or date style) or from SQLite or PostgreSQL
gives equal frames and the same input fingerprint:

- identifiers are non-negative integers (`int64`, `Int64` for the nullable `id_delegant`);
- timestamps are `datetime64[ns]`, naive, Europe/Paris wall time (an aware database value is
  converted to Paris time); `date_fermeture` is a date at midnight;
- booleans are `bool` (O/N, oui/non, 1/0, true/false in any case, or a database boolean);
- text is kept exactly as found, with an empty value turned into NA; `type_compte` and both
  `statut` are trimmed, upper-cased and checked against their enumeration, and handed on as
  categoricals of it; `code_application` is trimmed; the habilitations' `code_application`,
  `siret` and `role` are handed on as categoricals of the values they hold;
- required columns hold a value, and `id_utilisateur` / `id_habilitation` are unique.

Row order: utilisateurs and habilitations by id; etablissements and applications in file order
for CSV, and for SQL in the order of the SELECT (applications by code, etablissements by all
columns). The fingerprint does not depend on that order.

Any breach stops the run with an `InputError` naming the file (or table), the line (or key) and
the problem. Values of `courriel`, `nom`, `prenom` and `telephone` (and anything holding "@")
are never quoted in a message, and `mot_de_passe_hash` is never read by either reader.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.arrow_text import arrow_strings, category_texts, decoded, fixed_width_matrix, terminated_bytes
from pipelines.csv_reader import ByteFields, csv_file_name, read_csv_table
from pipelines.db import looks_like_url
from pipelines.errors import InputError
from pipelines.frames import LEGACY_FRAME_COLUMNS, TEXT_DTYPE, LegacyFrames
from pipelines.legacy_schema import (
    BOOLEAN_COLUMNS,
    DATE_COLUMNS,
    ENUM_COLUMNS,
    INTEGER_COLUMNS,
    NOT_NULL_COLUMNS,
    TIMESTAMP_COLUMNS,
    UNIQUE_KEYS,
)
from pipelines.sql_reader import read_sql_tables

log = logging.getLogger(__name__)

PARIS = "Europe/Paris"

# Identifiers that may be NULL (a habilitation without delegation) keep pandas' nullable integer.
NULLABLE_INTEGER_COLUMNS = frozenset({("habilitations", "id_delegant")})
TRIMMED_COLUMNS: dict[str, tuple[str, ...]] = {
    "applications": ("code_application",),
    "habilitations": ("code_application",),
}
# Values that may be personal data: never quoted in an error message.
PERSONAL_COLUMNS = frozenset({"courriel", "nom", "prenom", "telephone"})

BOOLEAN_WORDS: dict[str, bool] = {
    "o": True,
    "oui": True,
    "1": True,
    "true": True,
    "n": False,
    "non": False,
    "0": False,
    "false": False,
}
BOOLEANS_HELP = "accepted: O/N, oui/non, 1/0, true/false"
DATES_HELP = "accepted: 2023-04-05, 2023-04-05 10:20:00, 2023-04-05T10:20:00, 05/04/2023, 05/04/2023 10:20[:00]"


# --- public API ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExtractConfig:
    """`source` is a SQLAlchemy URL (anything containing "://") or the path of a CSV folder."""

    source: str


@dataclass(frozen=True)
class ExtractResult:
    frames: LegacyFrames
    source_kind: str  # "sql" or "csv"
    source_display: str  # masked URL or folder path
    row_counts: dict[str, int]
    # SHA-256 of the canonical content of the four frames: the same data gives the same value
    # whatever the source (CSV variant, SQLite, PostgreSQL) and whatever the row order.
    input_fingerprint: str
    file_checksums: dict[str, str] = field(default_factory=dict)  # SHA-256 of each CSV file; empty for SQL
    elapsed_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "source_kind": self.source_kind,
            "source_display": self.source_display,
            "row_counts": dict(self.row_counts),
            "input_fingerprint": self.input_fingerprint,
            "file_checksums": dict(self.file_checksums),
            "elapsed_seconds": round(self.elapsed_seconds, 3),
        }


class RowLocator(Protocol):
    """Where a row of a raw table came from, for error messages (CSV: lines; SQL: keys)."""

    @property
    def source(self) -> str: ...

    def row(self, index: int) -> str | None: ...

    def rows(self, first: int, second: int) -> str | None: ...


def extract(config: ExtractConfig) -> ExtractResult:
    """Reads and checks the four legacy tables; an unreadable input raises InputError."""
    started = time.perf_counter()
    raw: dict[str, tuple[pd.DataFrame, RowLocator, dict[str, ByteFields]]]
    checksums: dict[str, str] = {}
    if looks_like_url(config.source):
        # Each table is typed as soon as it is read: its raw values go before the next is read.
        typed, display = read_sql_tables(config.source, lambda table, read: normalise_read_columns(
            table, read.columns, read.locator))
        kind = "sql"
        frames = LegacyFrames(**{table: typed[table] for table in LEGACY_FRAME_COLUMNS})
    else:
        folder = Path(config.source)
        if not folder.is_dir():
            problem = "is not a folder" if folder.exists() else "folder not found"
            raise InputError(str(folder), None, f"{problem} (expected a folder of CSV files or a database URL)")
        kind, display, raw = "csv", str(folder), {}
        for table in LEGACY_FRAME_COLUMNS:
            read = read_csv_table(folder, table)
            checksums[csv_file_name(table)] = read.sha256
            raw[table] = (read.frame, read.locator, read.fields)
        frames = LegacyFrames(**{table: normalise_table(table, *raw.pop(table)) for table in LEGACY_FRAME_COLUMNS})
    fingerprint = fingerprint_frames(frames)
    elapsed = time.perf_counter() - started
    log.info("extracted %s from %s in %.1f s", frames.row_counts(), display, elapsed)
    return ExtractResult(frames, kind, display, frames.row_counts(), fingerprint, checksums, elapsed)


# --- normalisation -------------------------------------------------------------------------


class _Problems:
    """Collects cell problems and raises the one on the earliest row (the first added wins ties)."""

    def __init__(self, locator: RowLocator) -> None:
        self._locator = locator
        self._first: tuple[int, str] | None = None
        # Set on a subset's collector: its row i is row rows[i] of the parent's table.
        self._parent: _Problems | None = None
        self._rows: npt.NDArray[np.intp] | None = None

    def add(self, row: int, problem: str) -> None:
        if self._parent is not None and self._rows is not None:
            self._parent.add(int(self._rows[row]), problem)
        elif self._first is None or row < self._first[0]:
            self._first = (row, problem)

    def subset(self, rows: npt.NDArray[np.intp]) -> _Problems:
        """A collector for a subset of the rows (numbered from 0), reporting to this one."""
        child = _Problems(self._locator)
        child._parent, child._rows = self, rows
        return child

    def raise_first(self) -> None:
        if self._first is not None:
            row, problem = self._first
            raise InputError(self._locator.source, self._locator.row(row), problem)


def normalise_table(
    table: str, raw: pd.DataFrame, locator: RowLocator, fields: Mapping[str, ByteFields] | None = None
) -> pd.DataFrame:
    """Raw values of one table to its typed frame.

    `raw` holds text (CSV) or driver values (SQL); `fields` holds CSV columns left as byte
    ranges (identifiers and dates), parsed here without going through Python strings.
    """
    return _normalise(table, raw.__getitem__, locator, fields)


def normalise_read_columns(table: str, raw: dict[str, pd.Series], locator: RowLocator) -> pd.DataFrame:
    """`normalise_table` of a table's raw columns, each one given up (taken out of `raw`) as soon
    as it is typed: at a million users the raw habilitations weighed 0.4 GB, all held until the
    last date column was parsed."""
    return _normalise(table, raw.pop, locator, None)


def _normalise(table: str, take: Callable[[str], pd.Series], locator: RowLocator,
               fields: Mapping[str, ByteFields] | None) -> pd.DataFrame:
    problems = _Problems(locator)
    columns = {
        column: _convert_bytes(table, column, fields[column], problems)
        if fields and column in fields
        else _convert(table, column, take(column), problems)
        for column in LEGACY_FRAME_COLUMNS[table]
    }
    for column in NOT_NULL_COLUMNS[table]:
        empty = np.flatnonzero(columns[column].isna().to_numpy())
        if len(empty):
            problems.add(int(empty[0]), f"{column}: empty, but a value is required")
    problems.raise_first()
    frame = pd.DataFrame({column: _final_dtype(table, column, values) for column, values in columns.items()})
    key = UNIQUE_KEYS.get(table)
    return frame if key is None else _unique_and_sorted(frame, key, locator)


def _convert(table: str, column: str, values: pd.Series, problems: _Problems) -> pd.Series:
    values = values.reset_index(drop=True)
    if column in INTEGER_COLUMNS.get(table, ()):
        return _integers(column, values, problems)
    date_only = column in DATE_COLUMNS.get(table, ())
    if date_only or column in TIMESTAMP_COLUMNS.get(table, ()):
        return _timestamps(column, values, problems, date_only=date_only)
    if column in BOOLEAN_COLUMNS.get(table, ()):
        return _booleans(column, values, problems)
    return _text_column(table, column, values, problems)


def _convert_bytes(table: str, column: str, fields: ByteFields, problems: _Problems) -> pd.Series:
    if column in INTEGER_COLUMNS.get(table, ()):
        return _integers_from_bytes(column, fields, problems)
    stamps = _timestamps_from_bytes(column, fields, problems)
    if column in DATE_COLUMNS.get(table, ()):
        stamps = stamps.astype("datetime64[D]").astype("datetime64[ns]")
    return pd.Series(stamps)


def _text_column(table: str, column: str, values: pd.Series, problems: _Problems) -> pd.Series:
    allowed = ENUM_COLUMNS.get(table, {}).get(column)
    if allowed is not None:
        return _enumeration(column, values, allowed, problems)
    trim = _trimmed if column in TRIMMED_COLUMNS.get(table, ()) else None
    if column in FEW_VALUED_TEXT_COLUMNS.get(table, ()) and isinstance(values.dtype, pd.CategoricalDtype):
        return _recoded(values, trim)
    if trim is not None:
        return _map_distinct(values, trim)
    return _text(values)


def _recoded(values: pd.Series, function: Callable[[str], str | None] | None) -> pd.Series:
    """A categorical (as the CSV reader parses few-valued columns) as the categorical of its
    values after `function`, categories sorted as `astype("category")` sorts the SQL reader's
    text: straight from the codes. Made as text first, it took a string a row (3 million), then a
    hash of each to code them again."""
    codes, uniques = values.cat.codes.to_numpy(), list(values.cat.categories)  # codes of a byte or two a row
    held = np.zeros(len(uniques) + 1, dtype=bool)  # the categories: the values held (the last: NA)
    held[codes] = True
    mapped = pd.Series([(function(str(value)) if function else value) if kept else None
                        for value, kept in zip(uniques, held[:-1].tolist(), strict=True)], dtype=TEXT_DTYPE)
    number, categories = pd.factorize(mapped, sort=True)  # a value mapped to NA, or not held: code -1
    positions = np.append(number, -1).astype(codes.dtype)  # code -1 (NA) picks the trailing -1
    return pd.Series(pd.Categorical.from_codes(positions[codes], categories=pd.Index(categories, dtype=TEXT_DTYPE)))


# Text of a few thousand distinct values at most, three million rows: as categoricals (a code of
# one to four bytes a row, each distinct text once) they weigh 25 MB at a million users, against
# 135 MB as text, held from the extract to the load and again in the reconciliation.
FEW_VALUED_TEXT_COLUMNS: dict[str, tuple[str, ...]] = {"habilitations": ("code_application", "siret", "role")}


def _final_dtype(table: str, column: str, values: pd.Series) -> pd.Series:
    """The dtypes of frames.py; NOT NULL has been checked, so the nullable arrays hold no NA here."""
    if column in INTEGER_COLUMNS.get(table, ()):
        return values if (table, column) in NULLABLE_INTEGER_COLUMNS else values.astype(np.int64)
    if column in BOOLEAN_COLUMNS.get(table, ()):
        return values.astype(bool)
    if column in FEW_VALUED_TEXT_COLUMNS.get(table, ()) and not isinstance(values.dtype, pd.CategoricalDtype):
        return values.astype("category")  # the SQL reader's text; the categories: the values held, sorted
    return values


def _unique_and_sorted(frame: pd.DataFrame, key: str, locator: RowLocator) -> pd.DataFrame:
    """Checks that `key` is unique and returns the frame in key order."""
    keys = frame[key].to_numpy(dtype=np.int64)
    if bool(np.all(keys[1:] > keys[:-1])):
        return frame  # already in strictly increasing order: nothing to check or sort
    # Unique keys need no stable sort; after sorting, a duplicate sits next to its twin.
    order = np.argsort(keys, kind="quicksort")
    ordered = keys[order]
    if bool(np.any(ordered[1:] == ordered[:-1])):
        second = int(np.flatnonzero(pd.Series(keys).duplicated().to_numpy())[0])
        value = int(keys[second])
        first = int(np.flatnonzero(keys == value)[0])
        raise InputError(locator.source, locator.rows(first, second), f"duplicate {key} {value}")
    return frame.take(order).reset_index(drop=True)


def _shown(column: str, value: object) -> str:
    """A value as quoted in a message: never personal data, never a whole pasted document.

    A value with "@" is hidden whatever its column: an email address in the wrong column.
    """
    text = str(value)
    if column in PERSONAL_COLUMNS or "@" in text:
        return "(value not shown)"
    return repr(text if len(text) <= 40 else text[:40] + "…")


# --- text ----------------------------------------------------------------------------------------


def _text(values: pd.Series) -> pd.Series:
    """Text as found, as TEXT_DTYPE. Both readers already give NA for an empty value."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        codes, uniques = _distinct(values)
        return pd.Series(np.array([*uniques, None], dtype=object)[codes], dtype=TEXT_DTYPE)
    return values if values.dtype == TEXT_DTYPE else values.astype(TEXT_DTYPE)


def _distinct(values: pd.Series) -> tuple[npt.NDArray[np.intp], list[Any]]:
    """Codes (-1 for NA) and distinct values: the CSV reader parses few-valued columns as categories."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        return np.asarray(values.cat.codes, dtype=np.intp), list(values.cat.categories)
    codes, uniques = pd.factorize(values)
    return codes.astype(np.intp), list(uniques)


def _trimmed(value: str) -> str | None:
    return value.strip() or None


def _upper_trimmed(value: str) -> str | None:
    return value.strip().upper() or None


def _map_distinct(values: pd.Series, function: Callable[[str], str | None]) -> pd.Series:
    """Applies `function` once per distinct value (these columns hold few distinct values)."""
    codes, uniques = _distinct(values)
    mapped = np.array([function(str(value)) for value in uniques] + [None], dtype=object)
    return pd.Series(mapped[codes], dtype=TEXT_DTYPE)  # code -1 (NA) picks the trailing None


def _enumeration(column: str, values: pd.Series, allowed: tuple[str, ...], problems: _Problems) -> pd.Series:
    """Trimmed and upper-cased, as a categorical of the allowed values: a byte a row, where text
    took 13 to 14 bytes (the three enumerations weighed 62 MB at a million users, held from the
    extract to the load). Judged and coded once per distinct value."""
    codes, uniques = _distinct(values)
    normalised = [_upper_trimmed(str(value)) for value in uniques]
    outside = [at for at, value in enumerate(normalised) if value is not None and value not in allowed]
    if outside:
        row = int(np.flatnonzero(np.isin(codes, outside))[0])
        problems.add(row, f"{column}: {_shown(column, values.iat[row])} is not one of {', '.join(allowed)}")
        return pd.Series(np.array([*normalised, None], dtype=object)[codes], dtype=TEXT_DTYPE)  # the extract stops
    # Code -1 (NA) picks the trailing -1.
    positions = np.array([allowed.index(value) if value is not None else -1 for value in normalised] + [-1])
    return pd.Series(pd.Categorical.from_codes(positions[codes], dtype=pd.CategoricalDtype(list(allowed))))


# --- integers ----------------------------------------------------------------------------------

_INT64_MAX = np.iinfo(np.int64).max


def _integers(column: str, values: pd.Series, problems: _Problems) -> pd.Series:
    """Non-negative integers as Int64 (NA where empty or invalid, the problem being recorded)."""
    if not isinstance(values.dtype, pd.StringDtype):
        try:
            native = pd.array(values.to_numpy(), dtype="Int64") if values.dtype.kind in "iu" \
                else pd.array(values.to_numpy(dtype=object), dtype="Int64")
        except (TypeError, ValueError, OverflowError):
            values = values.astype(TEXT_DTYPE)  # odd driver values: judged as text
        else:
            negative = np.flatnonzero(native.to_numpy(dtype=np.int64, na_value=0) < 0)
            if len(negative):
                row = int(negative[0])
                problems.add(row, f"{column}: {_shown(column, native[row])} is not a non-negative integer")
            return pd.Series(native)
    return _integers_from_text(column, _text(values), problems)


_MAX_SAFE_DIGITS = 18  # every 18-digit number fits in int64; longer ones are judged as text


def _integers_from_bytes(column: str, fields: ByteFields, problems: _Problems) -> pd.Series:
    """Plain digit fields become numbers in numpy; anything else is judged as text (spaces, errors)."""
    lengths = fields.lengths
    data = np.zeros(len(fields), dtype=np.int64)
    valid = np.zeros(len(fields), dtype=bool)
    for size in np.unique(lengths[(lengths > 0) & (lengths <= _MAX_SAFE_DIGITS)]):
        rows = np.flatnonzero(lengths == size)
        digits = fields.matrix(rows, int(size)) - np.uint8(ord("0"))  # wraps around below "0"
        numeric = (digits < 10).all(axis=0)
        value = np.zeros(len(rows), dtype=np.int64)
        for position in range(int(size)):
            value = value * 10 + digits[position]
        data[rows[numeric]] = value[numeric]
        valid[rows[numeric]] = True
    others = np.flatnonzero(~valid & (lengths > 0))
    if len(others):
        texts = pd.Series(fields.texts(others), dtype=TEXT_DTYPE)
        judged = _integers_from_text(column, texts, problems.subset(others)).array
        data[others] = judged.to_numpy(dtype=np.int64, na_value=0)
        valid[others] = ~judged.isna()
    return pd.Series(pd.arrays.IntegerArray(data, ~valid))


def _integers_from_text(column: str, values: pd.Series, problems: _Problems) -> pd.Series:
    rows = np.flatnonzero(values.notna().to_numpy())
    texts = values.iloc[rows]
    originals = texts.to_numpy(dtype=object)
    joined = "".join(originals)
    # Plain ASCII digits (str.isdigit alone would accept "²" or "١٢"): checked for the whole
    # column at once, value by value only when that fails. Surrounding spaces are tolerated.
    if joined.isascii() and joined.isdigit():
        valid = np.ones(len(texts), dtype=bool)
    else:
        stripped = texts.str.strip()
        valid = (stripped.str.isdigit() & stripped.str.isascii()).to_numpy(dtype=bool)
    too_large: set[int] = set()
    try:
        numbers = texts[valid].astype(np.int64).to_numpy()
    except OverflowError:
        too_large = {int(i) for i in np.flatnonzero(valid) if int(originals[i]) > _INT64_MAX}
        valid[list(too_large)] = False
        numbers = texts[valid].astype(np.int64).to_numpy()
    invalid = np.flatnonzero(~valid)
    if len(invalid):
        first = int(invalid[0])
        reason = "is too large" if first in too_large else "is not a non-negative integer"
        problems.add(int(rows[first]), f"{column}: {_shown(column, originals[first])} {reason}")
    data = np.zeros(len(values), dtype=np.int64)
    data[rows[valid]] = numbers
    mask = np.ones(len(values), dtype=bool)
    mask[rows[valid]] = False
    return pd.Series(pd.arrays.IntegerArray(data, mask))


# --- booleans ----------------------------------------------------------------------------------


def _boolean_of(value: object) -> bool | None:
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        return BOOLEAN_WORDS.get(value.strip().lower())
    return None


def _booleans(column: str, values: pd.Series, problems: _Problems) -> pd.Series:
    """Booleans as pandas' nullable boolean; a value that is not one is recorded as a problem."""
    codes, uniques = _distinct(values)  # few distinct values: decide once per value
    decided = [_boolean_of(value) for value in uniques]
    known = np.array([choice is not None for choice in decided] + [False], dtype=bool)
    truth = np.array([bool(choice) for choice in decided] + [False], dtype=bool)
    undecided = np.flatnonzero((codes >= 0) & ~known[codes])
    if len(undecided):
        row = int(undecided[0])
        problems.add(row, f"{column}: {_shown(column, values.iat[row])} is not a boolean ({BOOLEANS_HELP})")
    return pd.Series(pd.arrays.BooleanArray(truth[codes], ~known[codes]))


# --- timestamps --------------------------------------------------------------------------------


def _timestamps(column: str, values: pd.Series, problems: _Problems, *, date_only: bool) -> pd.Series:
    """datetime64[ns] in Paris wall time (NaT where empty or invalid, the problem being recorded)."""
    if isinstance(values.dtype, pd.StringDtype):
        stamps = _timestamps_from_text(column, values, problems)
    else:
        present = values.notna().to_numpy()
        kinds = {type(value) for value in values.to_numpy(dtype=object)[present]}
        if kinds and all(issubclass(kind, str) for kind in kinds):
            stamps = _timestamps_from_text(column, _text(values), problems)
        else:
            stamps = _timestamps_from_native(column, values, problems)
    if date_only:
        stamps = stamps.astype("datetime64[D]").astype("datetime64[ns]")
    return pd.Series(stamps)


def _timestamps_from_native(column: str, values: pd.Series, problems: _Problems) -> npt.NDArray[np.datetime64]:
    """Database datetimes and dates; aware ones are converted to Paris time, then made naive.

    A number is no date: pandas would take 20200115 for nanoseconds after 1970, silently.
    """
    objects = values.to_numpy(dtype=object)
    kind = pd.api.types.infer_dtype(objects, skipna=True)  # in C; only odd columns are looked at row by row
    numbers: npt.NDArray[np.intp] = np.empty(0, dtype=np.intp)
    if kind not in ("datetime", "datetime64", "date", "empty"):
        numbers = np.flatnonzero([(isinstance(v, int) and not isinstance(v, bool))
                                  or (isinstance(v, float | Decimal) and not math.isnan(v))  # a NaN is NULL
                                  for v in objects])
    if len(numbers):
        row = int(numbers[0])
        problems.add(row, f"{column}: {_shown(column, objects[row])} is a number, not a date ({DATES_HELP})")
        return np.full(len(values), np.datetime64("NaT"), dtype="datetime64[ns]")
    try:
        parsed = pd.to_datetime(values, utc=True) if _any_aware(values) else pd.to_datetime(values)
    except (TypeError, ValueError) as exc:
        problems.add(0, f"{column}: values are not timestamps ({str(exc).splitlines()[0]})")
        return np.full(len(values), np.datetime64("NaT"), dtype="datetime64[ns]")
    if parsed.dt.tz is not None:
        parsed = parsed.dt.tz_convert(PARIS).dt.tz_localize(None)
    stamps = parsed.to_numpy()
    low, high = np.datetime64(_FIRST_YEAR_START), np.datetime64(_LAST_YEAR_END)
    outside = np.flatnonzero(~np.isnat(stamps) & ((stamps < low) | (stamps >= high)))
    if len(outside):
        row = int(outside[0])
        problems.add(row, f"{column}: {_shown(column, values.iat[row])} {_OUT_OF_RANGE}")
        stamps = stamps.copy()
        stamps[outside] = np.datetime64("NaT")
    return stamps.astype("datetime64[ns]")


def _any_aware(values: pd.Series) -> bool:
    return any(getattr(value, "tzinfo", None) is not None for value in values.dropna().head(1))


def _timestamps_from_bytes(column: str, fields: ByteFields, problems: _Problems) -> TimestampArray:
    """Fields in an accepted layout become instants in numpy; the rest is judged as text."""
    lengths = fields.lengths
    stamps, status = _parse_layouts(lengths, lambda rows, size: (rows, fields.matrix(rows, size)))
    others = np.flatnonzero((lengths > 0) & (status != _VALID))
    if len(others):
        texts = pd.Series(fields.texts(others), dtype=TEXT_DTYPE)
        stamps[others] = _timestamps_from_text(column, texts, problems.subset(others))
    return stamps


def _timestamps_from_text(column: str, values: pd.Series, problems: _Problems) -> npt.NDArray[np.datetime64]:
    rows = np.flatnonzero(values.notna().to_numpy())
    strings = arrow_strings(values)
    if strings is not None:
        parsed, status = parse_arrow_timestamps(strings)
    else:
        texts = values.to_numpy(dtype=object)[rows]
        parsed, status = parse_timestamp_texts(texts)
    invalid = np.flatnonzero(status != _VALID)
    if len(invalid):
        first = int(invalid[0])
        reason = _OUT_OF_RANGE if status[first] == _OUT_OF_RANGE_STATUS else f"is not a valid date ({DATES_HELP})"
        shown = strings[first].as_py() if strings is not None else texts[first]
        problems.add(int(rows[first]), f"{column}: {_shown(column, shown)} {reason}")
    stamps = np.full(len(values), np.datetime64("NaT"), dtype="datetime64[ns]")
    stamps[rows] = parsed
    return stamps


# The accepted layouts, letter by letter: Y year, M month, D day, h hour, m minute, s second,
# f a decimal fraction of a second; any other character must be there as is. Day first in the
# French layouts. Databases write a fraction after ISO seconds ("2023-04-05 10:20:00.000000" is
# how SQLAlchemy stores a timestamp in SQLite), hence the ISO layouts with 1 to 9 "f".
_BASE_TEMPLATES = (
    "YYYY-MM-DD",
    "YYYY-MM-DD hh:mm:ss",
    "YYYY-MM-DDThh:mm:ss",
    "DD/MM/YYYY",
    "DD/MM/YYYY hh:mm",
    "DD/MM/YYYY hh:mm:ss",
)
DATE_TEMPLATES = _BASE_TEMPLATES + tuple(
    f"YYYY-MM-DD{separator}hh:mm:ss." + "f" * places for separator in " T" for places in range(1, 10)
)
_TEMPLATES_BY_LENGTH: dict[int, tuple[str, ...]] = {
    size: tuple(template for template in DATE_TEMPLATES if len(template) == size)
    for size in sorted({len(template) for template in DATE_TEMPLATES})
}
_FIELD_LETTERS = "YMDhmsf"
_VALID, _MALFORMED, _OUT_OF_RANGE_STATUS = 0, 1, 2
# datetime64[ns] spans 1677-09-21 to 2262-04-11: whole years inside it only.
_FIRST_YEAR, _LAST_YEAR = 1678, 2261
_FIRST_YEAR_START, _LAST_YEAR_END = f"{_FIRST_YEAR}-01-01", f"{_LAST_YEAR + 1}-01-01"
_OUT_OF_RANGE = f"is outside the supported range (years {_FIRST_YEAR} to {_LAST_YEAR})"

TimestampArray = npt.NDArray[np.datetime64]
StatusArray = npt.NDArray[np.int8]


def parse_timestamp_texts(texts: npt.NDArray[np.object_]) -> tuple[TimestampArray, StatusArray]:
    """Parses texts in DATE_TEMPLATES, vectorised: the instants (NaT if not valid) and a status each.

    Status 0 is valid, 1 is not a date in an accepted layout (or an impossible one such as
    31/02/2023), 2 is a real date outside what datetime64[ns] holds. Surrounding spaces are
    tolerated.
    """
    stamps, status = _parse_texts(texts)
    retry = np.flatnonzero(status == _MALFORMED)
    if len(retry):
        stripped = np.array([str(text).strip() for text in texts[retry]], dtype=object)
        changed = np.flatnonzero(stripped != texts[retry])
        if len(changed):
            again_stamps, again_status = _parse_texts(stripped[changed])
            stamps[retry[changed]] = again_stamps
            status[retry[changed]] = again_status
    return stamps, status


# Rows parsed at a time: a row's instant depends on its text only, and the character matrix and
# the fields of a whole column of millions of rows weighed 0.3 GB.
TIMESTAMP_CHUNK_ROWS = 262_144


def parse_arrow_timestamps(strings: pa.Array, chunk_rows: int | None = None) -> tuple[TimestampArray, StatusArray]:
    """parse_timestamp_texts on an Arrow string array, its characters taken from Arrow's buffer,
    `chunk_rows` (else TIMESTAMP_CHUNK_ROWS) rows at a time.

    Layouts are ASCII: counting bytes rather than characters only moves a text that is not ASCII,
    which no layout matches, from one unmatched length to another. The texts left malformed (a
    few, if any) then go through parse_timestamp_texts itself, so nothing is judged differently.
    """
    chunk = max(1, chunk_rows or TIMESTAMP_CHUNK_ROWS)
    if len(strings) <= chunk:
        return _parse_arrow_chunk(strings)
    stamps = np.empty(len(strings), dtype="datetime64[ns]")
    status = np.empty(len(strings), dtype=np.int8)
    for start in range(0, len(strings), chunk):
        end = min(start + chunk, len(strings))
        stamps[start:end], status[start:end] = _parse_arrow_chunk(strings.slice(start, end - start))
    return stamps, status


def _parse_arrow_chunk(strings: pa.Array) -> tuple[TimestampArray, StatusArray]:
    lengths = pc.binary_length(strings).to_numpy(zero_copy_only=False).astype(np.int64)
    stamps, status = _parse_layouts(lengths, lambda rows, size: (rows, fixed_width_matrix(strings, rows, size)))
    retry = np.flatnonzero(status == _MALFORMED)
    if len(retry):
        texts = np.array(strings.take(pa.array(retry)).to_pylist(), dtype=object)
        stamps[retry], status[retry] = parse_timestamp_texts(texts)
    return stamps, status


def _parse_texts(texts: npt.NDArray[np.object_]) -> tuple[TimestampArray, StatusArray]:
    lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    return _parse_layouts(lengths, lambda rows, size: _character_columns(texts[rows], rows, size))


# Gives, for rows of one length, the rows kept and their characters as a (length, rows) matrix.
MatrixSource = Callable[[npt.NDArray[np.intp], int], tuple[npt.NDArray[np.intp], npt.NDArray[np.uint8]]]


def _parse_layouts(lengths: npt.NDArray[np.int64], matrix_of: MatrixSource) -> tuple[TimestampArray, StatusArray]:
    stamps = np.full(len(lengths), np.datetime64("NaT"), dtype="datetime64[ns]")
    status = np.full(len(lengths), _MALFORMED, dtype=np.int8)
    for size, templates in _TEMPLATES_BY_LENGTH.items():
        rows = np.flatnonzero(lengths == size)
        if not len(rows):
            continue
        rows, chars = matrix_of(rows, size)
        for template in templates:
            matched = _matches(template, chars) & (status[rows] == _MALFORMED)
            if matched.all():
                fields = {letter: _number(template, letter, chars) for letter in _FIELD_LETTERS}
                stamps[rows], status[rows] = _compose(fields, template.count("f"))
            elif matched.any():
                subset = chars[:, matched]
                fields = {letter: _number(template, letter, subset) for letter in _FIELD_LETTERS}
                stamps[rows[matched]], status[rows[matched]] = _compose(fields, template.count("f"))
    return stamps, status


def _character_columns(
    texts: npt.NDArray[np.object_], rows: npt.NDArray[np.intp], size: int
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.uint8]]:
    """Texts of one length as a (size, n) byte matrix: row i holds the i-th character of every text.

    Joining and encoding the texts at once is far cheaper than any per-text work; texts that are
    not ASCII cannot match a layout and are left out.
    """
    try:
        joined = "".join(texts).encode("ascii")
    except UnicodeEncodeError:
        ascii_only = np.fromiter(map(str.isascii, texts), dtype=bool, count=len(texts))
        texts, rows = texts[ascii_only], rows[ascii_only]
        joined = "".join(texts).encode("ascii")
    matrix = np.frombuffer(joined, dtype=np.uint8).reshape(len(texts), size)
    return rows, np.ascontiguousarray(matrix.T)


def _matches(template: str, chars: npt.NDArray[np.uint8]) -> npt.NDArray[np.bool_]:
    matched = np.ones(chars.shape[1], dtype=bool)
    for position, symbol in enumerate(template):
        if symbol in _FIELD_LETTERS:
            matched &= (chars[position] - np.uint8(ord("0"))) < 10  # wraps around below "0"
        else:
            matched &= chars[position] == ord(symbol)
    return matched


def _number(template: str, letter: str, chars: npt.NDArray[np.uint8]) -> npt.NDArray[np.int64]:
    value = np.zeros(chars.shape[1], dtype=np.int64)
    for position in (i for i, symbol in enumerate(template) if symbol == letter):
        value = value * 10 + (chars[position] - np.uint8(ord("0")))
    return value


_DAYS_IN_MONTH = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)
_DAYS_BEFORE_MONTH = np.concatenate(([0], np.cumsum(_DAYS_IN_MONTH)[:-1]))
# Per supported year: leap or not, and the day number (from 1970-01-01) of its 1st of January.
# Table look-ups instead of integer division, which numpy does slowly.
_YEARS = np.arange(_FIRST_YEAR, _LAST_YEAR + 1, dtype=np.int64)
_LEAP_YEARS = (_YEARS % 4 == 0) & ((_YEARS % 100 != 0) | (_YEARS % 400 == 0))
_NEW_YEAR_DAYS = (_YEARS - 1970).astype("datetime64[Y]").astype("datetime64[D]").astype(np.int64)


def _compose(fields: dict[str, npt.NDArray[np.int64]], fraction_places: int) -> tuple[TimestampArray, StatusArray]:
    """Calendar check and assembly in integer arithmetic (no per-row Python, no datetime objects)."""
    year, month, day = fields["Y"], fields["M"], fields["D"]
    hour, minute, second = fields["h"], fields["m"], fields["s"]
    in_range = (year >= _FIRST_YEAR) & (year <= _LAST_YEAR)
    year_index = np.clip(year - _FIRST_YEAR, 0, len(_YEARS) - 1)
    leap = _LEAP_YEARS[year_index]
    if not in_range.all():  # still tell 9999-02-29 (no such day) from 9999-12-31 (out of range)
        other = year[~in_range]
        leap[~in_range] = (other % 4 == 0) & ((other % 100 != 0) | (other % 400 == 0))
    month_ok = (month >= 1) & (month <= 12)
    month_index = np.where(month_ok, month - 1, 0)
    month_length = _DAYS_IN_MONTH[month_index] + (leap & (month == 2))
    valid = month_ok & (day >= 1) & (day <= month_length) & (hour <= 23) & (minute <= 59) & (second <= 59)
    status = np.where(valid, np.where(in_range, _VALID, _OUT_OF_RANGE_STATUS), _MALFORMED).astype(np.int8)
    ok = status == _VALID
    days = (
        _NEW_YEAR_DAYS[year_index[ok]]
        + _DAYS_BEFORE_MONTH[month_index[ok]]
        + (leap[ok] & (month[ok] > 2))
        + day[ok]
        - 1
    )
    seconds = days * 86_400 + hour[ok] * 3_600 + minute[ok] * 60 + second[ok]
    nanoseconds = seconds * 1_000_000_000 + fields["f"][ok] * 10 ** (9 - fraction_places)
    stamps = np.full(len(year), np.datetime64("NaT"), dtype="datetime64[ns]")
    stamps[ok] = nanoseconds.astype("datetime64[ns]")
    return stamps, status


# --- fingerprint -----------------------------------------------------------------------------

_FINGERPRINT_VERSION = b"efp-legacy-frames/1\n"


def fingerprint_frames(frames: LegacyFrames) -> str:
    """SHA-256 over the four frames, column by column, rows in a canonical order.

    Keyed tables are already in key order; the others are sorted by all their columns, so the
    file order of a CSV or the ORDER BY of a database does not matter. Values are hashed from
    their typed form (see `_update_with_column`), never from their source text.
    """
    digest = hashlib.sha256(_FINGERPRINT_VERSION)
    for table, columns in LEGACY_FRAME_COLUMNS.items():
        frame = frames.table(table)
        key = UNIQUE_KEYS.get(table)
        if key is None:
            frame = frame.sort_values(list(columns), kind="stable", na_position="last", ignore_index=True)
        elif not frame[key].is_monotonic_increasing:
            frame = frame.take(np.argsort(frame[key].to_numpy(), kind="quicksort"))  # unique keys
        digest.update(f"{table}:{len(frame)}\n".encode())
        for column in columns:
            digest.update(f"{column}\n".encode())
            _update_with_column(digest, frame[column])
    return digest.hexdigest()


def _update_with_column(digest: Any, values: pd.Series, *, fast: bool = True) -> None:
    """Feeds one column in a canonical binary form (little-endian, NA made explicit).

    `fast=False` takes the reference way for text (what the property test compares with).
    A categorical of text (the enumerations) is fed as its text: the same fingerprint as read
    as text.
    """
    if fast and _update_with_arrow_text(digest, values):
        return
    if isinstance(values.dtype, pd.CategoricalDtype):
        values = values.astype(TEXT_DTYPE)
    if pd.api.types.is_string_dtype(values.dtype):
        texts = values.to_numpy(dtype=object, na_value="")
        # No value is "" (readers turn it into NA), so "" can stand for NA, and NUL (which no CSV
        # value holds) can separate values. A value holding NUL falls back to length prefixes.
        joined = "\x00".join(texts)
        if joined.count("\x00") != max(len(texts) - 1, 0):
            lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
            lengths[values.isna().to_numpy()] = -1
            digest.update(lengths.astype("<i8").tobytes())
            joined = "".join(texts)
        digest.update(joined.encode("utf-8", "surrogatepass"))
    elif pd.api.types.is_datetime64_dtype(values.dtype):
        digest.update(values.to_numpy(dtype="datetime64[ns]").view(np.int64).astype("<i8").tobytes())
    elif pd.api.types.is_bool_dtype(values.dtype):
        digest.update(values.to_numpy(dtype=np.uint8).tobytes())
    else:  # integers, nullable or not
        digest.update(values.isna().to_numpy().astype(np.uint8).tobytes())
        digest.update(values.to_numpy(dtype="<i8", na_value=0).tobytes())


_FINGERPRINT_CHUNK_ROWS = 1_000_000


def _update_with_arrow_text(digest: Any, values: pd.Series) -> bool:
    """The reference's NUL-separated text of an Arrow-backed column, or of a categorical of text
    (decoded by Arrow), fed from Arrow's buffers.

    False (nothing fed) when the column is neither or a value holds NUL: the reference way then
    length-prefixes the values.
    """
    size = _FINGERPRINT_CHUNK_ROWS
    if isinstance(values.dtype, pd.CategoricalDtype):
        dictionary = category_texts(values)
        if dictionary is None or pc.any(pc.match_substring(dictionary, "\x00")).as_py():
            return False
        # Decoded a chunk at a time: the whole column decoded, its NAs filled and its values
        # terminated were three copies of its text at once (2.9 million SIRETs: 0.2 GB), at the
        # end of the reconciliation's extract, where the target's access is worked out beside it.
        codes = values.cat.codes.to_numpy()
        chunks: Iterable[pa.Array] = (pc.fill_null(decoded(codes[start:start + size], dictionary), "")
                                      for start in range(0, len(values), size))
    elif pd.api.types.is_string_dtype(values.dtype):
        strings = arrow_strings(values, nulls="")
        if strings is None or pc.any(pc.match_substring(strings, "\x00")).as_py():
            return False
        chunks = (strings.slice(start, size) for start in range(0, len(values), size))
    else:
        return False
    for start, text in zip(range(0, len(values), size), chunks, strict=True):
        chunk = terminated_bytes(text, "\x00")
        last = start + size >= len(values)
        digest.update(chunk[:-1] if last else chunk)  # separators between values, none after the last
    return True
