"""Reads the four legacy tables from a database, as the driver returns their values.

Only `SELECTABLE_COLUMNS` are selected (never `mot_de_passe_hash`), from a statement built with
SQLAlchemy so that every identifier is quoted by the dialect. The columns are selected without
SQLAlchemy types on purpose: typed results would be converted by SQLAlchemy's own processors
(on SQLite, a text 'N' in a boolean column would become True), whereas `pipelines.extract`
judges raw values with the same rules as for CSV.

Rows are streamed in chunks (server-side cursor where the driver has one), ordered by the key:
utilisateurs and habilitations by id, applications by code, etablissements by all columns.

A SQLite file is read through ADBC instead (columnar, no Python object per text value: several
times faster at a million users) when that gives the very values the driver would. ADBC types a
column as a whole (an integer among text becomes its digits, a REAL becomes "1.500000e+00"),
so a first scan (`typeof`, inside SQLite) sends a table with a REAL or BLOB value anywhere, or
with integers and text mixed in one numeric, date or flag column, the driver's way, as it does
any table ADBC cannot read (say, text that is not UTF-8, which the driver names as an error).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from pipelines.db import first_line, make_engine, mask_url
from pipelines.errors import InputError
from pipelines.frames import TEXT_DTYPE
from pipelines.legacy_schema import (
    BOOLEAN_COLUMNS,
    DATE_COLUMNS,
    INTEGER_COLUMNS,
    LEGACY_TABLES,
    SELECTABLE_COLUMNS,
    TIMESTAMP_COLUMNS,
    UNIQUE_KEYS,
)
from pipelines.memory import gc_paused

log = logging.getLogger(__name__)
T = TypeVar("T")

CHUNK_ROWS = 50_000
# Columns the extract parses (numbers, dates, flags): read as the driver's values, not as text.
_TYPED_COLUMNS: dict[str, tuple[str, ...]] = {
    table: (*INTEGER_COLUMNS.get(table, ()), *TIMESTAMP_COLUMNS.get(table, ()), *DATE_COLUMNS.get(table, ()),
            *BOOLEAN_COLUMNS.get(table, ()))
    for table in SELECTABLE_COLUMNS
}
ORDER_BY: dict[str, tuple[str, ...]] = {
    "utilisateurs": ("id_utilisateur",),
    "etablissements": SELECTABLE_COLUMNS["etablissements"],
    "applications": ("code_application",),
    "habilitations": ("id_habilitation",),
}


@dataclass(frozen=True)
class SqlLocator:
    """Names a row by its key ("id_utilisateur 42"), else by its rank in the ordered SELECT.

    `keys` is the key column's own array (no copy): a tuple of Python ints weighed 100 MB for a
    million users' habilitations, held while the table was typed."""

    source: str
    key: str | None
    keys: npt.NDArray[Any] | tuple[object, ...] = field(compare=False)

    def row(self, index: int) -> str | None:
        if self.key is not None and self.keys[index] is not None:
            return f"{self.key} {self.keys[index]}"
        return f"row {index + 1}"

    def rows(self, first: int, second: int) -> str | None:
        return None  # a duplicate key is named in the message; rows of a SELECT have no line


@dataclass(frozen=True)
class SqlTable:
    # Text columns as text, the others as driver values; NA for NULL and for "". A dict, so that
    # the extract can give up each column once it is typed (`extract.normalise_read_columns`).
    columns: dict[str, pd.Series]
    locator: SqlLocator

    @property
    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.columns, copy=False)


def read_sql_tables(url: str, then: Callable[[str, SqlTable], T]) -> tuple[dict[str, T], str]:
    """Reads the four tables, handing each to `then` as soon as it is read (so that its raw
    values, which weigh twice its typed frame, are gone soon; at most two tables are read ahead); returns
    what `then` made of each, and the URL with its password masked.

    A missing table or column, or a database error, is an InputError.
    """
    engine = make_engine(url, what="--source")
    display = mask_url(engine.url)
    try:
        _check_sqlite_file(engine, display)
        with engine.connect() as connection:
            _check_tables(connection, display)
            # ADBC reads the tables two at a time in other threads (SQLite releases the GIL) while
            # this one types each as it comes; not-yet-started reads are cancelled if typing one
            # fails. Two readers: the census and the select of habilitations, the longest, start
            # at once instead of after utilisateurs' (1M users: extract 11.2 -> 9.5 s).
            pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="efp-legacy-read")
            try:
                pending = {table: pool.submit(_read_table_arrow, engine, table) for table in LEGACY_TABLES}
                tables = {table: then(table, pending.pop(table).result() or _read_table(connection, table))
                          for table in LEGACY_TABLES}
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
    except SQLAlchemyError as exc:
        # The driver's own first line says what went wrong; the rest is SQLAlchemy boilerplate.
        raise InputError(display, None, f"cannot be read: {first_line(getattr(exc, 'orig', None) or exc)}") from None
    finally:
        engine.dispose()
    return tables, display


def _check_sqlite_file(engine: Engine, display: str) -> None:
    # Connecting to a missing SQLite file would silently create an empty database.
    database = engine.url.database
    if (
        engine.dialect.name == "sqlite"
        and database
        and database != ":memory:"
        and not Path(database).exists()
    ):
        raise InputError(display, None, "database file not found")


def _check_tables(connection: Connection, display: str) -> None:
    inspector = sa.inspect(connection)
    present = set(inspector.get_table_names())
    for table, columns in SELECTABLE_COLUMNS.items():
        if table not in present:
            raise InputError(f"table {table}", None, f"table not found in {display}")
        found = {column["name"] for column in inspector.get_columns(table)}
        missing = [column for column in columns if column not in found]
        if missing:
            raise InputError(f"table {table}", None, f"missing required column(s): {', '.join(missing)}")


def _read_table(connection: Connection, table: str) -> SqlTable:
    columns = SELECTABLE_COLUMNS[table]
    statement = _select(table)
    # Text columns become text chunk by chunk (the extract would make them text anyway): the
    # driver's Python strings for millions of rows weigh several times the text column.
    text = [name not in _TYPED_COLUMNS.get(table, ()) for name in columns]
    parts: list[list[pd.Series]] = [[] for _ in columns]
    result = connection.execution_options(stream_results=True, yield_per=CHUNK_ROWS).execute(statement)
    with gc_paused():  # millions of row tuples, none of them a cycle
        for chunk in result.partitions():
            for collected, is_text, column_values in zip(parts, text, zip(*chunk, strict=True), strict=True):
                array = np.empty(len(column_values), dtype=object)
                array[:] = column_values
                array[array == ""] = None  # an empty string is NULL, as an empty CSV field is
                collected.append(pd.Series(array, dtype=TEXT_DTYPE if is_text else object, copy=False))
    series: dict[str, pd.Series] = {}
    for name, is_text, chunks in zip(columns, text, parts, strict=True):
        series[name] = (pd.concat(chunks, ignore_index=True) if chunks
                        else pd.Series([], dtype=TEXT_DTYPE if is_text else object))
        chunks.clear()  # one column's chunks at a time, not the whole table twice
    log.info("table %s: %d rows", table, len(series[columns[0]]))
    return _sql_table(table, series)


def _select(table: str) -> sa.Select[Any]:
    columns = SELECTABLE_COLUMNS[table]
    # Untyped columns: no SQLAlchemy result processing (see the module docstring).
    source = sa.table(table, *(sa.column(name) for name in columns))
    return sa.select(*(source.c[name] for name in columns)).order_by(*(source.c[name] for name in ORDER_BY[table]))


def _sql_table(table: str, series: dict[str, pd.Series]) -> SqlTable:
    key = UNIQUE_KEYS.get(table)
    keys = series[key].to_numpy() if key else ()
    return SqlTable(series, SqlLocator(f"table {table}", key, keys))


# --- SQLite through ADBC ---------------------------------------------------------------------------

def adbc_batch_rows(rows: int) -> dict[str, str]:
    """The SQLite driver's statement option for batches of `rows` rows. It infers a column's type
    from its first batch (a column NULL in all of it would be taken for an integer, and its later
    text refused), so a read that meets that is done again in one batch of exactly the table's
    size, not a large constant: the driver reserves its buffers for a whole batch, the frames
    built on them keep them, and tens of GB of reserved address space make the next fork of the
    process (a subprocess, a database server) fail with ENOMEM."""
    return {"adbc.sqlite.query.batch_rows": str(max(rows, 1))}


# Rows per batch of a legacy table read through ADBC. Each batch becomes pandas values as it
# arrives, so a table is never held whole as the driver gives it beside its pandas values (at a
# million users the habilitations were 490 MB of Arrow data). Smaller batches measured no lower
# peak and a slower read (the pieces are joined again).
LEGACY_BATCH_ROWS = 1_048_576

_TEXT_TIMESTAMPS = {table: (*TIMESTAMP_COLUMNS.get(table, ()), *DATE_COLUMNS.get(table, ())) for table in LEGACY_TABLES}


def _read_table_arrow(engine: Engine, table: str) -> SqlTable | None:
    """The table through ADBC when its values are ones ADBC gives exactly as the driver does
    (see the module docstring); None otherwise, and the caller reads it the driver's way."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:" or engine.url.query:
        return None
    columns = SELECTABLE_COLUMNS[table]
    preparer = engine.dialect.identifier_preparer
    quoted = [preparer.quote(name) for name in columns]
    statement = str(_select(table).compile(dialect=engine.dialect))
    # The storage classes each column holds, in one scan inside SQLite.
    census = ", ".join(f"group_concat(DISTINCT typeof({q}))" for q in quoted)
    try:
        import adbc_driver_sqlite.dbapi as adbc_sqlite

        with adbc_sqlite.connect(database) as connection, connection.cursor() as cursor:
            cursor.execute(f"SELECT count(*), {census} FROM {preparer.quote(table)}")  # names quoted by the dialect
            rows, *found = cursor.fetchone() or (0,)
            held = {name: frozenset(str(classes or "null").split(",")) for name, classes in zip(columns, found,
                                                                                                strict=True)}
            typed = set(_TYPED_COLUMNS.get(table, ()))
            for name in columns:
                mixed = name in typed and {"integer", "text"} <= held[name]
                if mixed or not held[name] <= {"null", "integer", "text"}:
                    log.info("table %s: read the driver's way (column %s holds %s)", table, name,
                             ", ".join(sorted(held[name])))
                    return None
            try:
                series = _batched_values(cursor, table, statement, held, min(int(rows), LEGACY_BATCH_ROWS))
            except OSError as exc:
                # A column NULL through a whole first batch, then text: once more in one batch, on a
                # cursor of its own (the failed one gives no rows when executed again).
                log.info("table %s: read again in one batch (ADBC: %s)", table, first_line(exc))
                with connection.cursor() as again:
                    series = _batched_values(again, table, statement, held, int(rows))
        read = len(series[columns[0]])
        if read != rows:  # never fewer rows than the table holds, whatever the driver did
            raise ValueError(f"{read} rows read of {rows}")
    except Exception as exc:  # any refusal means: the driver's way
        log.info("table %s: read the driver's way (ADBC: %s)", table, first_line(exc))
        return None
    log.info("table %s: %d rows (ADBC)", table, len(series[columns[0]]))
    return _sql_table(table, series)


def _batched_values(cursor: Any, table: str, statement: str, held: dict[str, frozenset[str]],
                    batch_rows: int) -> dict[str, pd.Series]:
    """Each column's values as `_arrow_values` makes them, batch by batch, then joined."""
    columns = SELECTABLE_COLUMNS[table]
    typed = set(_TYPED_COLUMNS.get(table, ()))
    pieces: dict[str, list[pd.Series]] = {name: [] for name in columns}
    cursor.adbc_statement.set_options(**adbc_batch_rows(batch_rows))
    cursor.execute(statement)
    for batch in cursor.fetch_record_batch():
        batch.validate(full=True)  # text that is not UTF-8: the driver's way names it as an error
        if batch.schema.names != list(columns):
            raise ValueError(f"columns {batch.schema.names}")
        for name in columns:
            pieces[name].append(_arrow_values(
                batch.column(name), text=name not in typed, text_dtype=name in _TEXT_TIMESTAMPS[table],
                integers=name in INTEGER_COLUMNS.get(table, ()) and held[name] == {"integer"},
                integer_nulls="integer" in held[name]))
        del batch
    series: dict[str, pd.Series] = {}
    for name in columns:
        parts = pieces.pop(name)  # one column's pieces at a time, not the whole table twice
        series[name] = (parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True) if parts
                        else _arrow_values(pa.nulls(0, pa.string()), text=name not in typed,
                                           text_dtype=name in _TEXT_TIMESTAMPS[table]))
    return series


def _arrow_values(values: pa.Array, *, text: bool, text_dtype: bool, integers: bool = False,
                  integer_nulls: bool = False) -> pd.Series:
    """The values the driver's way gives, from a column of one type (integers, text or NULLs):
    text columns as TEXT_DTYPE, a date column of text too (the extract takes it as text either
    way), other columns as the driver's Python values; "" is NULL. An integer column without a
    NULL is int64 (its values, read one by one, are the same Python ints): a Python object per
    identifier weighed 270 MB at a million users. `integer_nulls`: NULLs of a column that holds
    integers elsewhere (a batch of NULLs only), which the whole column would type as integers."""
    if values.null_count == len(values):  # the driver types NULLs as integers
        values = pa.nulls(len(values), pa.int64() if integer_nulls else pa.string())
    is_text = pa.types.is_string(values.type) or pa.types.is_large_string(values.type)
    if is_text:
        values = pc.if_else(pc.equal(values, ""), pa.scalar(None, values.type), values)
    if text or (text_dtype and is_text):
        # An integer in a text column becomes its decimal digits, as the driver's int would.
        strings = pc.cast(values, pa.large_string())
        return pd.Series(strings.to_pandas(types_mapper={pa.large_string(): TEXT_DTYPE}.get), dtype=TEXT_DTYPE)
    if not (is_text or pa.types.is_integer(values.type)):
        raise TypeError(f"unexpected column type {values.type}")
    if integers and values.null_count == 0 and pa.types.is_integer(values.type):
        return pd.Series(values.to_numpy(zero_copy_only=False, writable=True), dtype=np.int64, copy=False)
    objects = (values.to_numpy(zero_copy_only=False).astype(object) if values.null_count == 0
               else np.array(values.to_pylist(), dtype=object))
    return pd.Series(objects, dtype=object, copy=False)
