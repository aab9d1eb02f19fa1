"""The evidence's content hashes: a table as canonical CSV text, hashed with SHA-256.

The text (what an auditor can recompute from a dump of the table): a header line of the column
names, then one line per row, every line ending in LF; rows ordered by the table's unique key
when it has one, else by their own text in code-point order; fields are NULL as an empty field,
"" quoted, text quoted CSV-style when it holds a quote, a comma or a line break, timestamps as
ISO 8601 (to the second, or to the microsecond when they have a fraction), dates as
YYYY-MM-DD, booleans true/false, integers in decimal, a redacted value (a password hash) as ***.

Two ways produce the same bytes. The reference builds each line as a Python string; the fast
one builds the fields of 250,000 rows at a time as Arrow string arrays and joins them in C
(pyarrow.compute), then hashes the array's own buffer: at a million users the Python lines
took some 20 s of the reconciliation. Any chunk the fast way cannot take (a value Arrow does not
hold, such as text with a lone surrogate) goes the reference way; a property test proves the
two give the same digest.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.arrow_text import categorical_strings, data_bytes, factorized, terminated_bytes

REDACTED = "***"
# Never read: the reconciliation selects "***" where one is set, NULL elsewhere.
REDACTED_COLUMNS = frozenset({"mot_de_passe_hash", "password_hash"})
CHUNK_ROWS = 250_000
_CSV_NEEDS_QUOTES_PATTERN = r'[",\r\n]'
_CSV_NEEDS_QUOTES = re.compile(_CSV_NEEDS_QUOTES_PATTERN)
_CSV_NEEDS_QUOTES_BYTES = (b'"', b",", b"\r", b"\n")
# What the fast way may raise on a value it cannot hold; that chunk then goes the reference way.
ARROW_REFUSALS = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, UnicodeError, TypeError,
                   ValueError, OverflowError)


# --- one column as canonical fields ----------------------------------------------------------------


def _csv_field(value: object) -> str:
    text = str(value)
    if text == "":
        return '""'  # an empty string, as opposed to NULL (an empty field)
    if _CSV_NEEDS_QUOTES.search(text):
        return '"' + text.replace('"', '""') + '"'
    return text


def _per_distinct(values: npt.NDArray[Any], render: Callable[[Any], str]) -> npt.NDArray[np.object_]:
    """`render` applied once per distinct value; a missing value gives an empty field."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    return _fields_by_code(codes, uniques, render)


def _fields_by_code(codes: npt.NDArray[np.signedinteger[Any]], uniques: Sequence[Any] | npt.NDArray[Any],
                    render: Callable[[Any], str]) -> npt.NDArray[np.object_]:
    """Each row's rendered distinct value (one Python string per distinct value, shared); code -1,
    missing, an empty field."""
    fields = np.array([*map(render, uniques), ""], dtype=object)
    rendered: npt.NDArray[np.object_] = fields[codes]  # the NA code, -1, takes the last, empty, field
    return rendered


def _text_fields(series: pd.Series) -> npt.NDArray[np.object_]:
    values = series.to_numpy(dtype=object)
    missing = series.isna().to_numpy()
    present = values[~missing]
    try:
        joined = "\x1f".join(present)
    except TypeError:  # not only strings
        return _per_distinct(values, _csv_field)
    has_empty = len(present) > 0 and (joined == "" or "\x1f\x1f" in joined or joined.startswith("\x1f")
                                      or joined.endswith("\x1f"))
    if has_empty or _CSV_NEEDS_QUOTES.search(joined):
        return _per_distinct(values, _csv_field)
    if not missing.any():
        return values  # the usual case: every value is already its own field
    fields = values.copy()
    fields[missing] = ""
    return fields


def _datetime_text(series: pd.Series, kind: str) -> tuple[npt.NDArray[np.str_], npt.NDArray[np.bool_]]:
    """ISO 8601 text of every value (vectorised: a million distinct instants is the usual case),
    and where a value is missing."""
    values = pd.to_datetime(series).to_numpy(dtype="datetime64[us]")
    missing = np.isnat(values)
    if kind == "date":
        text = np.datetime_as_string(values, unit="D")
    else:
        whole = values.astype("datetime64[s]")
        text = np.datetime_as_string(whole, unit="s")
        fractional = ~missing & (whole != values)
        if fractional.any():  # (numpy's text dtype is wide enough for the microseconds)
            text[fractional] = np.datetime_as_string(values[fractional], unit="us")
    return text, missing


def _datetime_fields(series: pd.Series, kind: str) -> npt.NDArray[np.object_]:
    text, missing = _datetime_text(series, kind)
    fields = text.astype(object)
    fields[missing] = ""
    return fields


def canonical_column(series: pd.Series, kind: str) -> npt.NDArray[np.object_]:
    """A column as canonical CSV fields (Python strings): the reference."""
    if kind in ("datetime", "date"):
        return _datetime_fields(series, kind)
    if kind not in ("redacted", "int", "bool"):
        return _text_fields(series)
    missing = series.isna().to_numpy()
    if kind == "redacted":
        fields = np.where(missing, "", REDACTED).astype(object)
    elif kind == "int":
        numbers = pd.to_numeric(series).astype("Int64").to_numpy(dtype=np.int64, na_value=0)
        fields = np.full(len(numbers), "", dtype=object)
        present = numbers[~missing]  # often mostly NULL (id_delegant): convert only the values
        fields[~missing] = np.fromiter(map(str, present.tolist()), dtype=object, count=len(present))
    else:
        truth = series.astype("boolean").fillna(False).to_numpy(dtype=bool)
        fields = np.where(truth, "true", "false").astype(object)
    fields[missing] = ""
    return fields


def _as_arrow(values: Any, kind: pa.DataType | None = None) -> pa.Array:
    array = pa.array(values, type=kind)
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    return array


_MICROSECONDS_PER_DAY = 86_400_000_000
# The instants numpy writes with a four-digit year and no sign: 0001-01-01 to 9999-12-31 (Arrow
# writes the same text for them; outside, the reference way is taken).
_FIRST_WRITTEN_MICROS = -62_135_596_800_000_000
_PAST_WRITTEN_MICROS = 253_402_300_800_000_000


def _datetime_arrow(series: pd.Series, kind: str) -> pa.Array | None:
    """_datetime_text's fields written by Arrow's own casts to text (formatting millions of
    instants one by one is what the evidence thread spent most on; writing their digits with
    numpy, 4.5 times as long as Arrow). None for a year numpy would not write with four digits.

    The day and the second are floored here, in integers, as numpy floors them before 1970; only
    the instants with a fraction of a second are written from microseconds, by Arrow, which
    writes all six digits as numpy does."""
    values = pd.to_datetime(series).to_numpy(dtype="datetime64[us]")
    missing = np.isnat(values)
    micros = np.where(missing, 0, values.view(np.int64))
    if len(micros) and (micros.min() < _FIRST_WRITTEN_MICROS or micros.max() >= _PAST_WRITTEN_MICROS):
        return None
    if kind == "date":
        days = (micros // _MICROSECONDS_PER_DAY).astype(np.int32)
        return pc.fill_null(pc.cast(pa.array(days, pa.date32(), mask=missing), pa.string()), "")
    seconds = micros // 1_000_000
    text = _iso_text(pa.array(seconds, pa.timestamp("s"), mask=missing))
    fractional = micros != seconds * 1_000_000
    if fractional.any():  # rare: legacy instants are to the second
        with_fraction = _iso_text(pa.array(micros, pa.timestamp("us"), mask=missing))
        text = pc.if_else(pa.array(fractional), with_fraction, text)
    return pc.fill_null(text, "")


def _iso_text(instants: pa.Array) -> pa.Array:
    """Arrow writes "2024-01-31 10:20:30[.123456]"; ISO 8601's separator is "T"."""
    return pc.replace_substring(pc.cast(instants, pa.string()), " ", "T", max_replacements=1)


def arrow_column(series: pd.Series, kind: str) -> pa.Array:
    """The same fields as canonical_column, as an Arrow string array without nulls."""
    if kind in ("datetime", "date"):
        written = _datetime_arrow(series, kind)
        if written is not None:
            return written
        text, missing = _datetime_text(series, kind)
        return _as_arrow(np.where(missing, "", text), pa.string())
    missing = pa.array(series.isna().to_numpy())
    if kind == "redacted":
        return pc.if_else(missing, "", REDACTED)
    if kind == "int":
        numbers = _as_arrow(pd.to_numeric(series).astype("Int64"), pa.int64())
        return pc.fill_null(pc.cast(numbers, pa.string()), "")
    if kind == "bool":
        truth = pc.fill_null(_as_arrow(series.astype("boolean"), pa.bool_()), False)
        return pc.if_else(missing, "", pc.if_else(truth, "true", "false"))
    strings = _text_arrow(series)
    if strings is None:  # not only strings
        return _as_arrow(_text_fields(series), pa.string())
    held = data_bytes(strings)  # the characters that need quotes are ASCII: a byte search finds them
    quoted = any(held.find(character) >= 0 for character in _CSV_NEEDS_QUOTES_BYTES)
    empty = pc.any(pc.equal(strings, "")).as_py()
    if quoted or empty:  # rare: quoting is done the reference way, once per distinct value
        codes, uniques = factorized(series)
        return _as_arrow(_fields_by_code(codes, uniques, _csv_field), pa.string())
    return pc.fill_null(strings, "")


def _text_arrow(series: pd.Series) -> pa.Array | None:
    """A text column as an Arrow string array, missing values null; None when it holds other
    values than text. A categorical is decoded by Arrow: the legacy habilitations' application,
    SIRET, role and status are, and pandas would make a Python string a row of each (5.8 million
    at 500,000 users)."""
    text = categorical_strings(series) if isinstance(series.dtype, pd.CategoricalDtype) else _as_arrow(series)
    if text is None:
        return None
    if not pa.types.is_string(text.type) and not pa.types.is_large_string(text.type):
        if len(text) != text.null_count:  # not only strings (or only NULL, which any type holds)
            return None
        text = pa.nulls(len(text), pa.string())
    return text.cast(pa.string())


# --- a table's canonical text and its digest -----------------------------------------------------


def _lines_reference(rows: pd.DataFrame, kinds: dict[str, str]) -> list[str]:
    parts = [canonical_column(rows[c], kinds[c]) for c in kinds]
    return list(map(",".join, zip(*parts, strict=True)))


def _lines_arrow(rows: pd.DataFrame, kinds: dict[str, str]) -> pa.Array:
    """Every row's line, without its LF, as one Arrow string array."""
    fields = [arrow_column(rows[c], kinds[c]) for c in kinds]
    if len(fields) == 1:
        return fields[0]
    return pc.binary_join_element_wise(*fields, ",")


def text_bytes(lines: pa.Array) -> memoryview:
    """The lines, each followed by LF, as the bytes of one Arrow buffer (no Python string per line)."""
    return terminated_bytes(lines, "\n")


def _reference_update(digest: Any, lines: Sequence[str]) -> None:
    digest.update(("\n".join(lines) + "\n").encode("utf-8", "surrogatepass"))


def _update_lines(digest: Any, rows: pd.DataFrame, kinds: dict[str, str], fast: bool) -> None:
    """The rows' lines, in the order given, into the digest: the fast way, else the reference."""
    if len(rows) == 0:
        return
    try:
        if not fast:
            raise ValueError("the reference way was asked for")
        digest.update(text_bytes(_lines_arrow(rows, kinds)))
    except ARROW_REFUSALS:
        _reference_update(digest, _lines_reference(rows, kinds))


def _header(kinds: dict[str, str]) -> Any:
    return hashlib.sha256((",".join(kinds) + "\n").encode("utf-8"))


def canonical_digest(frame: pd.DataFrame, kinds: dict[str, str], order_key: str | None, *,
                     fast: bool = True) -> tuple[str, str]:
    """SHA-256 of the table's canonical CSV text and how its rows were ordered.

    `fast=False` takes the reference way for every chunk (what the property test compares with).
    """
    digest = _header(kinds)
    key = frame[order_key] if order_key is not None else None
    if key is not None and key.notna().all() and key.is_unique:
        numeric = kinds[order_key or ""] == "int"
        values = key.to_numpy(dtype=np.int64) if numeric else key.to_numpy(dtype=object)
        order = np.argsort(values, kind="stable")
        in_order = bool((order == np.arange(len(order))).all())  # then no reordering copy is needed
        # Chunk by chunk (a field depends on its value only): the text of a whole table of
        # millions of rows would outweigh the table itself.
        for start in range(0, len(frame), CHUNK_ROWS):
            rows = frame.iloc[start:start + CHUNK_ROWS] if in_order else frame.iloc[order[start:start + CHUNK_ROWS]]
            _update_lines(digest, rows, kinds, fast)
            del rows
        return digest.hexdigest(), f"by {order_key}"
    how = "by canonical line (code-point order)"
    if len(frame) == 0:
        return digest.hexdigest(), how
    try:
        if not fast:
            raise ValueError("the reference way was asked for")
        lines = _lines_arrow(frame, kinds)
        # UTF-8 byte order is code-point order, the order Python's sorted() gives the reference.
        ordered = lines.take(pc.sort_indices(lines))
        for start in range(0, len(ordered), CHUNK_ROWS):
            digest.update(text_bytes(ordered.slice(start, CHUNK_ROWS)))
    except ARROW_REFUSALS:
        digest = _header(kinds)
        reference = sorted(_lines_reference(frame, kinds))
        for start in range(0, len(reference), CHUNK_ROWS):
            _reference_update(digest, reference[start:start + CHUNK_ROWS])
    return digest.hexdigest(), how


class NotInKeyOrderError(Exception):
    """Rows given to a KeyOrderedDigest out of their key's order (or with a missing key)."""


class KeyOrderedDigest:
    """canonical_digest of a table whose rows come batch by batch, already in the order of a
    unique integer key (a target table read ORDER BY its primary key): the same bytes, hence the
    same digest, without the whole table ever held. At a million users the whole target tables
    held for hashing were 0.8 GB of the reconciliation's peak.

    `update` raises NotInKeyOrderError when a batch's keys are missing or do not strictly increase
    from the last batch's: the caller then hashes the whole table with canonical_digest, which
    orders the rows itself.
    """

    def __init__(self, kinds: dict[str, str], order_key: str, *, fast: bool = True) -> None:
        if kinds.get(order_key) != "int":
            raise ValueError(f"{order_key}: rows come in key order only for an integer key")
        self._kinds, self._order_key, self._fast = dict(kinds), order_key, fast
        self._digest = _header(kinds)
        self._last: int | None = None
        self.row_count = 0

    def update(self, rows: pd.DataFrame) -> None:
        if len(rows) == 0:
            return
        key = rows[self._order_key]
        if key.isna().any():
            raise NotInKeyOrderError(f"{self._order_key} is missing on some rows")
        values = key.to_numpy(dtype=np.int64)
        if (np.diff(values) <= 0).any() or (self._last is not None and int(values[0]) <= self._last):
            raise NotInKeyOrderError(f"{self._order_key} does not strictly increase")
        for start in range(0, len(rows), CHUNK_ROWS):
            _update_lines(self._digest, rows.iloc[start:start + CHUNK_ROWS], self._kinds, self._fast)
        self._last = int(values[-1])
        self.row_count += len(rows)

    def result(self) -> tuple[str, str]:
        """(SHA-256, how the rows were ordered), as canonical_digest gives them."""
        return self._digest.hexdigest(), f"by {self._order_key}"
