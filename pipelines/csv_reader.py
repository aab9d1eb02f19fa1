"""Reads one legacy CSV extract into a frame of raw text, and says which line each row came from.

The file is read once into memory: its SHA-256 is part of the run's evidence, and decoding,
delimiting and parsing all need the whole file anyway. The steps, each stopping the run with an
`InputError` that names the file and the line:

1. encoding: strict UTF-8 (a BOM is dropped), else Windows-1252; everything after this step
   works on UTF-8 bytes;
2. delimiter: `;` or `,`, whichever splits the header into the required columns;
3. record layout: a vectorised scan of the bytes finds where each record starts and checks
   its field count (pandas' C parser silently pads short rows and, with `usecols`, silently
   truncates long ones, so it cannot be trusted to reject them). When quotes are used in a
   way the scan cannot follow exactly (a bare quote inside an unquoted field), the stdlib
   `csv` module does the same job line by line;
4. values: pandas' C parser reads the allow-listed columns only (never `mot_de_passe_hash`),
   as text (few-valued columns as categories of text); an empty field becomes NA.

Values are not interpreted here (dates, numbers, booleans): `pipelines.extract` does that for
the CSV and the SQL readers alike, and asks `CsvLocator` for the line of a faulty row.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd

from pipelines.errors import InputError
from pipelines.legacy_schema import DATE_COLUMNS, INTEGER_COLUMNS, SELECTABLE_COLUMNS, TIMESTAMP_COLUMNS

log = logging.getLogger(__name__)

DELIMITERS = (";", ",")
_HEADER_RULE = "the header must name them, separated by ';' or ','"
ENCODINGS = ("UTF-8", "Windows-1252")

# Columns holding a handful of distinct values (codes, flags, enumerations, role labels).
FEW_VALUED = frozenset({"type_compte", "statut", "code_application", "role", "responsable_acces", "actif"})

_BOM = b"\xef\xbb\xbf"
_QUOTE, _LF, _CR = ord('"'), ord("\n"), ord("\r")
# What pandas' C parser skips as a blank line: only spaces and tabs (and the line end).
_BLANK_BYTES = b" \t\r\n"

# A 1 MB field (free text, pasted documents) is legitimate; the stdlib default is 128 KB.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))

Offsets = npt.NDArray[np.int64]


def csv_file_name(table: str) -> str:
    return f"{table}.csv"


@dataclass(frozen=True)
class CsvLocator:
    """Maps a row of the frame (0-based, file order) to the physical line where its record starts."""

    source: str
    data: bytes
    # The byte offset in `data` of every data record (fast scan), or, when the stdlib scan was
    # needed, the line of every data record. Lines from offsets are only counted for an error.
    record_offsets: Offsets
    record_lines: Offsets | None = None

    @property
    def record_count(self) -> int:
        return len(self.record_lines if self.record_lines is not None else self.record_offsets)

    def line_of(self, row: int) -> int:
        if self.record_lines is not None:
            return int(self.record_lines[row])
        return _line_at(self.data, int(self.record_offsets[row]))

    def row(self, index: int) -> str | None:
        return f"line {self.line_of(index)}"

    def rows(self, first: int, second: int) -> str | None:
        return f"lines {self.line_of(first)} and {self.line_of(second)}"


@dataclass(frozen=True)
class ByteFields:
    """One column as byte ranges of the (UTF-8) file, one per row, never made into strings.

    Identifiers and dates are most of a large file; reading them through pandas would make a
    Python string of every value only to parse it. Quoted fields point inside their quotes;
    an empty range is an empty field (NA).
    """

    source: bytes
    data: npt.NDArray[np.uint8]  # `source` as an array
    begin: Offsets
    end: Offsets
    quoted: npt.NDArray[np.bool_]

    def __len__(self) -> int:
        return len(self.begin)

    @property
    def lengths(self) -> Offsets:
        return self.end - self.begin

    def matrix(self, rows: npt.NDArray[np.intp], size: int) -> npt.NDArray[np.uint8]:
        """The first `size` bytes of the given rows, as a (size, rows) matrix: one row per position."""
        # Every window of `size` bytes of the file, as a view (no copy): one gather takes them all.
        windows = np.lib.stride_tricks.sliding_window_view(self.data, size)
        return np.ascontiguousarray(windows[self.begin[rows]].T)

    def texts(self, rows: npt.NDArray[np.intp]) -> npt.NDArray[np.object_]:
        """The given rows as text, as pandas would have read them (doubled quotes undone)."""
        texts = []
        for begin, end, quoted in zip(self.begin[rows], self.end[rows], self.quoted[rows], strict=True):
            value = self.source[begin:end].decode("utf-8")
            texts.append(value.replace('""', '"') if quoted else value)
        return np.array(texts, dtype=object)


@dataclass(frozen=True)
class CsvTable:
    """One CSV file: allow-listed columns in schema order, NA for empty fields.

    Text columns are in `frame` (few-valued ones as categories); identifier and date columns are
    in `fields` as byte ranges when the fast layout scan could delimit them, else in `frame`.
    """

    frame: pd.DataFrame
    fields: dict[str, ByteFields]
    locator: CsvLocator
    sha256: str
    encoding: str
    delimiter: str


def read_csv_table(folder: Path, table: str) -> CsvTable:
    """Reads `<folder>/<table>.csv`; every problem is an InputError naming the file (not the path)."""
    file_name = csv_file_name(table)
    path = folder / file_name
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InputError(file_name, None, f"file not found in {folder}") from None
    except OSError as exc:
        raise InputError(file_name, None, f"cannot be read: {exc.strerror or exc}") from None
    checksum = hashlib.sha256(raw).hexdigest()
    parsed = parse_csv_bytes(file_name, table, raw)
    log.info("%s: %d rows (%s, delimiter %r)", file_name, len(parsed.frame), parsed.encoding, parsed.delimiter)
    return CsvTable(parsed.frame, parsed.fields, parsed.locator, checksum, parsed.encoding, parsed.delimiter)


@dataclass(frozen=True)
class ParsedCsv:
    frame: pd.DataFrame
    fields: dict[str, ByteFields]
    locator: CsvLocator
    encoding: str
    delimiter: str


def parse_csv_bytes(file_name: str, table: str, raw: bytes) -> ParsedCsv:
    """Parses the bytes of one CSV file of `table` (see the module docstring for the steps)."""
    if not raw or raw == _BOM:
        raise InputError(file_name, None, "empty file")
    nul = raw.find(b"\x00")
    if nul >= 0:
        # Also what a UTF-16 export looks like: say what is expected rather than guess.
        raise InputError(
            file_name,
            f"line {_line_at(raw, nul)}",
            "NUL byte in the data (expected UTF-8 or Windows-1252 text)",
        )
    data, encoding = _to_utf8(file_name, raw)
    required = SELECTABLE_COLUMNS[table]
    delimiter, positions, n_fields = _read_header(file_name, data, required)
    layout = _scan_layout(file_name, data, delimiter, n_fields)
    typed = INTEGER_COLUMNS.get(table, ()) + TIMESTAMP_COLUMNS.get(table, ()) + DATE_COLUMNS.get(table, ())
    fields = {column: layout.field(positions[column]) for column in typed} if layout.fast else {}
    text_positions = {column: position for column, position in positions.items() if column not in fields}
    frame = _read_values(file_name, data, delimiter, text_positions, n_fields, layout.locator)
    return ParsedCsv(frame, fields, layout.locator, encoding, delimiter)


# --- 1. encoding -------------------------------------------------------------------------


def _to_utf8(file_name: str, raw: bytes) -> tuple[bytes, str]:
    """The file as UTF-8 bytes without BOM, and the encoding it was found in."""
    body = raw[len(_BOM) :] if raw.startswith(_BOM) else raw
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as utf8_error:
        try:
            text = body.decode("cp1252")
        except UnicodeDecodeError as cp1252_error:
            raise _undecodable(file_name, body, utf8_error, cp1252_error) from None
        return text.encode("utf-8"), ENCODINGS[1]
    return body, ENCODINGS[0]


def _undecodable(
    file_name: str, body: bytes, utf8_error: UnicodeDecodeError, cp1252_error: UnicodeDecodeError
) -> InputError:
    # Valid multi-byte UTF-8 before the first UTF-8 error means the file was meant to be UTF-8:
    # its first invalid byte is the one to fix. Otherwise Windows-1252 was meant, and the byte to
    # fix is one of the five that Windows-1252 leaves undefined.
    meant_utf8 = not body[: utf8_error.start].isascii()
    position = utf8_error.start if meant_utf8 else cp1252_error.start
    problem = f"byte 0x{body[position]:02X} cannot be decoded (the file is neither UTF-8 nor Windows-1252)"
    return InputError(file_name, f"line {_line_at(body, position)}", problem)


def _line_at(data: bytes, offset: int) -> int:
    """1-based physical line of a byte offset; CRLF, LF and a lone CR each end a line."""
    line_feeds = data.count(b"\n", 0, offset)
    lone_returns = data.count(b"\r", 0, offset) - data.count(b"\r\n", 0, offset)
    return 1 + line_feeds + lone_returns


# --- 2. header and delimiter -------------------------------------------------------------


def _read_header(file_name: str, data: bytes, required: tuple[str, ...]) -> tuple[str, dict[str, int], int]:
    """The delimiter, the position of each required column, and the number of fields per row."""
    end = len(data)
    for terminator in (b"\n", b"\r"):
        found = data.find(terminator, 0, end)
        if found >= 0:
            end = found
    header_line = data[:end].decode("utf-8")
    closest: list[str] = list(required)
    for delimiter in DELIMITERS:
        names = [name.strip().lower() for name in next(csv.reader([header_line], delimiter=delimiter), [])]
        missing = [column for column in required if column not in names]
        if not missing:
            repeated = [column for column in required if names.count(column) > 1]
            if repeated:
                raise InputError(file_name, "line 1", f"column {repeated[0]} appears more than once in the header")
            return delimiter, {column: names.index(column) for column in required}, len(names)
        # Report against the delimiter that came closest: that is the one the file most likely uses.
        if len(missing) < len(closest):
            closest = missing
    problem = f"missing required column(s): {', '.join(closest)} ({_HEADER_RULE})"
    raise InputError(file_name, "line 1", problem)


# --- 3. record layout ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Layout:
    """Where the data records are; with the fast scan, also where each of their fields is."""

    locator: CsvLocator
    data: bytes
    n_fields: int
    fast: bool = False
    starts: Offsets | None = None  # per data record
    ends: Offsets | None = None  # per data record: offset of its line end (or of the end of file)
    first_delimiter: Offsets | None = None  # per data record: index in `delimiters`
    delimiters: Offsets | None = None  # offsets of the delimiters outside quotes

    def field(self, position: int) -> ByteFields:
        """Byte ranges of the field at `position` in every data record (fast scan only)."""
        if self.starts is None or self.ends is None or self.first_delimiter is None or self.delimiters is None:
            raise ValueError("field ranges need the fast layout scan")
        buf = np.frombuffer(self.data, dtype=np.uint8)
        begin = self.starts if position == 0 else self.delimiters[self.first_delimiter + position - 1] + 1
        if position < self.n_fields - 1:
            end = self.delimiters[self.first_delimiter + position]
        else:
            end = self.ends.copy()
            # In a CRLF line end the CR belongs to the line end, not to the last field.
            at_line_feed = (end < len(buf)) & (buf[np.minimum(end, len(buf) - 1)] == _LF)
            end[at_line_feed & (end > begin) & (buf[np.maximum(end - 1, 0)] == _CR)] -= 1
        # With structural quotes, a field starting with a quote ends with its closing quote.
        quoted = (end - begin >= 2) & (buf[np.minimum(begin, len(buf) - 1)] == _QUOTE)
        return ByteFields(self.data, buf, begin + quoted, end - quoted, quoted)


def _scan_layout(file_name: str, data: bytes, delimiter: str, n_fields: int) -> _Layout:
    """Checks that every data record has `n_fields` fields and locates each one."""
    buf = np.frombuffer(data, dtype=np.uint8)
    quotes = np.flatnonzero(buf == _QUOTE)
    if len(quotes) and not _quotes_are_structural(buf, quotes, ord(delimiter)):
        log.info("%s: quotes inside unquoted fields, checking the layout with the csv module", file_name)
        lines = _scan_layout_slowly(file_name, data, delimiter, n_fields)
        locator = CsvLocator(file_name, data, record_offsets=np.zeros(0, dtype=np.int64), record_lines=lines)
        return _Layout(locator, data, n_fields)

    terminators = _line_terminators(buf)
    delimiters = np.flatnonzero(buf == ord(delimiter))
    if len(quotes):
        # Between an opening quote (even rank) and its closing quote everything is field content.
        terminators = terminators[np.searchsorted(quotes, terminators) % 2 == 0]
        delimiters = delimiters[np.searchsorted(quotes, delimiters) % 2 == 0]
    ends = np.append(terminators, len(buf)).astype(np.int64, copy=False)
    starts = np.concatenate(([0], terminators + 1)).astype(np.int64, copy=False)
    # Delimiters before each record start; a record's field count is the difference plus one.
    delimiters_before = np.searchsorted(delimiters, np.concatenate(([0], ends)))
    field_counts = np.diff(delimiters_before) + 1

    unterminated_at = int(quotes[-1]) if len(quotes) % 2 else None
    # Record 0 is the header; a record that is empty or only spaces is a blank line, skipped
    # as pandas does.
    data_records = np.arange(1, len(starts))
    lone = data_records[field_counts[1:] == 1]
    blank = np.array([r for r in lone if not data[starts[r] : ends[r]].strip(_BLANK_BYTES)], dtype=np.int64)
    data_records = np.setdiff1d(data_records, blank, assume_unique=True)
    if unterminated_at is not None:
        # The unterminated field swallows the rest of the file: only records before it count.
        data_records = data_records[starts[data_records] <= unterminated_at][:-1]
    wrong = data_records[field_counts[data_records] != n_fields]
    if len(wrong):
        record = int(wrong[0])
        raise InputError(
            file_name,
            f"line {_line_at(data, int(starts[record]))}",
            f"expected {n_fields} fields, found {int(field_counts[record])}",
        )
    if unterminated_at is not None:
        raise _unterminated(file_name, _line_at(data, unterminated_at))
    return _Layout(
        CsvLocator(file_name, data, record_offsets=starts[data_records]),
        data,
        n_fields,
        fast=True,
        starts=starts[data_records],
        ends=ends[data_records],
        first_delimiter=delimiters_before[data_records].astype(np.int64, copy=False),
        delimiters=delimiters.astype(np.int64, copy=False),
    )


def _quotes_are_structural(buf: npt.NDArray[np.uint8], quotes: Offsets, delimiter: int) -> bool:
    """True when every quote opens a field, closes it, or is doubled inside it.

    Then "inside a quoted field" is simply "after an odd number of quotes", which the fast
    scan relies on. A bare quote inside an unquoted field (`12 "bis"`) breaks that parity.
    """
    boundary = np.array([delimiter, _LF, _CR], dtype=np.uint8)
    openers, closers = quotes[0::2], quotes[1::2]
    before = buf[np.maximum(openers - 1, 0)]
    # The byte before an opener is a delimiter or line end, or the closer of a doubled quote.
    opens_ok = (openers == 0) | np.isin(before, boundary) | (before == _QUOTE)
    after = buf[np.minimum(closers + 1, len(buf) - 1)]
    closes_ok = (closers == len(buf) - 1) | np.isin(after, boundary) | (after == _QUOTE)
    return bool(opens_ok.all() and closes_ok.all())


def _line_terminators(buf: npt.NDArray[np.uint8]) -> Offsets:
    """Offsets of LF bytes and of CR bytes not followed by LF, in order."""
    line_feeds = np.flatnonzero(buf == _LF)
    returns = np.flatnonzero(buf == _CR)
    if not len(returns):
        return line_feeds.astype(np.int64, copy=False)
    following = buf[np.minimum(returns + 1, len(buf) - 1)]
    lone = returns[(returns == len(buf) - 1) | (following != _LF)]
    return np.union1d(line_feeds, lone).astype(np.int64, copy=False)


def _unterminated(file_name: str, line: int) -> InputError:
    return InputError(file_name, f"line {line}", "unterminated quote: the quoted field starting here never ends")


def _scan_layout_slowly(file_name: str, data: bytes, delimiter: str, n_fields: int) -> Offsets:
    """The layout check with the stdlib csv module (same quoting rules as pandas' C parser).

    Used only for files whose quotes defeat the fast scan. Returns the line of each data record.
    """
    text = data.decode("utf-8")
    physical = _PhysicalLines(text)
    reader = csv.reader(physical, delimiter=delimiter, quotechar='"', doublequote=True, strict=False)
    lines: list[int] = []
    first_line = 1
    for record in reader:
        start, first_line = first_line, reader.line_num + 1
        if start == 1:
            continue  # the header, already checked
        single_line = reader.line_num == start
        if not record or (single_line and len(record) == 1 and not physical.last.strip(" \t\r\n")):
            continue  # blank line
        if len(record) != n_fields:
            if physical.exhausted and _ends_inside_quotes(text[physical.record_offset(start) :], delimiter):
                raise _unterminated(file_name, start)
            raise InputError(file_name, f"line {start}", f"expected {n_fields} fields, found {len(record)}")
        lines.append(start)
    # The csv module (strict=False) returns an unterminated last field as if it were closed.
    if lines and _ends_inside_quotes(text[physical.record_offset(lines[-1]) :], delimiter):
        raise _unterminated(file_name, lines[-1])
    return np.array(lines, dtype=np.int64)


class _PhysicalLines:
    """Iterates the lines of a text for csv.reader, remembering the last one and where lines start."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._starts: list[int] = []
        self.last = ""
        self.exhausted = False

    def __iter__(self) -> Iterator[str]:
        offset = 0
        for line in io.StringIO(self._text, newline=""):
            self._starts.append(offset)
            offset += len(line)
            self.last = line
            yield line
        self.exhausted = True

    def record_offset(self, line: int) -> int:
        return self._starts[line - 1]


# A quoted field (doubled quotes inside), then anything up to the next delimiter or line end:
# the csv module and pandas both append characters after a closing quote to the field.
# Possessive: `"abc""` must not backtrack into `"abc"` + `"` (a doubled quote never closes).
_QUOTED = re.compile(r'"[^"]*+(?:""[^"]*+)*+"')
_UNQUOTED = {delimiter: re.compile(f"[^{re.escape(delimiter)}\r\n]*") for delimiter in DELIMITERS}


def _ends_inside_quotes(record_text: str, delimiter: str) -> bool:
    """True when the record starting this text opens a quoted field that the text never closes."""
    unquoted = _UNQUOTED[delimiter]
    position = 0
    while position < len(record_text):
        if record_text[position] == '"':
            quoted = _QUOTED.match(record_text, position)
            if quoted is None:
                return True
            position = quoted.end()
        match = unquoted.match(record_text, position)
        position = match.end() if match else position
        if position >= len(record_text) or record_text[position] != delimiter:
            return False  # end of the record
        position += 1
    return False


# --- 4. values -----------------------------------------------------------------------------


def _read_values(
    file_name: str, data: bytes, delimiter: str, positions: dict[str, int], n_fields: int, locator: CsvLocator
) -> pd.DataFrame:
    """The columns at `positions` as text (NA for empty), in that order; others are never converted."""
    # Placeholder names: header spellings vary (case, spaces), positions are what was checked.
    names = [f"field_{position}" for position in range(n_fields)]
    # Few-valued columns come as categories: the parser then makes one string per distinct value
    # instead of one per row, which halves the time of the largest file.
    dtypes = {names[position]: "category" if column in FEW_VALUED else str for column, position in positions.items()}
    try:
        frame = pd.read_csv(
            io.BytesIO(data),
            sep=delimiter,
            header=0,
            names=names,
            usecols=[names[position] for position in positions.values()],
            dtype=dtypes,
            keep_default_na=False,
            na_values=[""],
            quotechar='"',
            doublequote=True,
            quoting=csv.QUOTE_MINIMAL,
            skip_blank_lines=True,
            index_col=False,
            encoding="utf-8",
            engine="c",
        )
    except (pd.errors.ParserError, ValueError) as exc:
        # The layout scan accepted the file, so this is a parser limit rather than a data error.
        raise InputError(file_name, None, f"cannot be parsed: {str(exc).strip().splitlines()[0]}") from None
    if len(frame) != locator.record_count:
        problem = f"cannot be parsed reliably: {len(frame)} rows read, {locator.record_count} records found"
        raise InputError(file_name, None, problem)
    return frame.rename(columns={names[position]: column for column, position in positions.items()})[list(positions)]
