"""Reads the EFP Connect target for the reconciliation: every table, typed per column kind.

Kinds: int -> Int64, bool -> boolean, datetime and date -> datetime64[ns], text -> str (Arrow
backed), redacted -> "***" where a password hash is set, NULL elsewhere: the hash itself is never
selected, by either way of reading.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import (
    Boolean,
    Connection,
    Date,
    DateTime,
    Dialect,
    Engine,
    Integer,
    Table,
    case,
    inspect,
    literal,
    null,
    select,
)
from sqlalchemy.exc import SQLAlchemyError

from pipelines.db import first_line, mask_text, mask_url
from pipelines.errors import ConfigurationError
from pipelines.frames import TEXT_DTYPE
from pipelines.memory import gc_paused, release_freed_memory
from pipelines.sql_reader import adbc_batch_rows
from pipelines.target_schema import TARGET_TABLES, migration_runs
from reports.evidence import REDACTED, REDACTED_COLUMNS

log = logging.getLogger(__name__)

_READ_TABLES: tuple[Table, ...] = (*TARGET_TABLES, migration_runs)


def require_target_schema(engine: Engine) -> None:
    """Raises ConfigurationError unless the target has every table the reconciliation reads."""
    try:
        present = set(inspect(engine).get_table_names())
    except SQLAlchemyError as exc:
        raise _unreadable(engine, exc) from None
    absent = [t.name for t in _READ_TABLES if t.name not in present]
    if absent:
        raise ConfigurationError(
            f"--target: {mask_url(engine.url)} has no EFP Connect schema (missing: {', '.join(absent)}); "
            "nothing to reconcile (create it with `efp-migrate init-target`)"
        )


TableHook = Callable[[str, pd.DataFrame], pd.DataFrame]
"""What becomes of each table as soon as it is read (say, hashed, then cut to the columns still
needed), so that the whole target is never held at once; run again on every table if the read
starts over the other way."""


class BatchSink(Protocol):
    """Takes a table batch by batch as it is read (say, to hash it), so that only the columns
    it keeps are ever held whole."""

    kept: tuple[str, ...]  # the columns the table's frame keeps, in the table's order

    def add(self, rows: pd.DataFrame) -> None:
        """One batch, every column typed as in the whole table's frame, in the read's order.
        May raise NotStreamableError: the table is then read whole and given to the TableHook."""

    def close(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The table's frame (the kept columns, every row): what becomes of it."""


SinkFactory = Callable[[str], "BatchSink | None"]
"""The sink of a table by name, made afresh for each reading of it; None reads it whole."""


class NotStreamableError(Exception):
    """A sink cannot take this table batch by batch (rows out of the order it needs, say)."""


def read_target(engine: Engine, each: TableHook | None = None,
                sinks: SinkFactory | None = None) -> dict[str, pd.DataFrame]:
    """Every target table the reconciliation needs, read in one go (one snapshot on PostgreSQL),
    each table as `each` makes it, or batch by batch through the sink `sinks` gives it.

    The sinks are used where the table is read through ADBC: the driver's way reads each table
    whole and gives it to `each`, as does a table whose sink refuses a batch (NotStreamableError). So
    `each` must make of a whole table what the sink makes of it batch by batch.

    Through ADBC when its driver takes the URL and the values (columnar, no Python object per
    value, the GIL released while it reads: several times faster); else through SQLAlchemy's
    driver, whose rows are typed chunk by chunk. Both give the same frames (a test compares them).
    """
    require_target_schema(engine)
    try:
        frames = read_target_arrow(engine, each, sinks)
        if frames is None:
            frames = read_target_driver(engine, each)
    except _HookError as failed:
        raise failed.original from None  # the hook's own error, not a reason to read the other way
    release_freed_memory()  # the drivers' batches, freed: 0.4 GB at a million users
    return frames


class _HookError(Exception):
    def __init__(self, original: Exception) -> None:
        super().__init__(str(original))
        self.original = original


def _made(table: Table, frame: pd.DataFrame, each: TableHook | None) -> pd.DataFrame:
    if each is None:
        return frame
    try:
        made = each(table.name, frame)
    except Exception as exc:
        raise _HookError(exc) from exc
    del frame
    release_freed_memory()  # what the hook let go of goes back before the next table is read
    return made


def read_target_driver(engine: Engine, each: TableHook | None = None) -> dict[str, pd.DataFrame]:
    """The tables through the SQLAlchemy engine's own driver (rows as tuples, typed per chunk)."""
    frames: dict[str, pd.DataFrame] = {}
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "postgresql":
                # One snapshot for every table, however long the reading takes.
                conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin(), gc_paused():
                for table in _READ_TABLES:
                    frames[table.name] = _made(table, _read_table(conn, table), each)
    except SQLAlchemyError as exc:
        raise _unreadable(engine, exc) from None
    return frames


def _read_table(conn: Connection, table: Table) -> pd.DataFrame:
    """A whole table through the driver's own cursor (rows as plain tuples), typed per column kind.

    A password hash is never fetched: the query returns "***" where one is set, NULL elsewhere.
    """
    statement = _select_sql(table, conn.dialect)
    names = [column.name for column in table.columns]
    kinds = [column_kind(table, name) for name in names]
    sqlite = conn.dialect.name == "sqlite"
    # Typed chunk by chunk: the driver's Python objects for a whole table of millions of rows
    # would weigh several times the typed columns.
    pieces: list[list[pd.Series]] = [[] for _ in names]
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(statement)
        while rows := cursor.fetchmany(_READ_CHUNK_ROWS):
            grid = _object_grid(rows, len(names))
            del rows
            for i, kind in enumerate(kinds):
                pieces[i].append(_typed_column(np.ascontiguousarray(grid[:, i]), kind, sqlite=sqlite))
            del grid
    finally:
        cursor.close()
    columns: dict[str, pd.Series] = {}
    for i, name in enumerate(names):
        parts = pieces[i]
        columns[name] = (pd.concat(parts, ignore_index=True) if parts
                         else _typed_column(np.empty(0, dtype=object), kinds[i], sqlite=sqlite))
        parts.clear()
    return pd.DataFrame(columns, copy=False)


_READ_CHUNK_ROWS = 200_000


def _object_grid(rows: list[tuple[Any, ...]], width: int) -> npt.NDArray[np.object_]:
    """Rows of a result as a 2-D object array (one value per cell, strings kept whole)."""
    if not rows:
        return np.empty((0, width), dtype=object)
    try:
        from pandas._libs import lib  # the C routine behind pandas' own read_sql

        grid: npt.NDArray[np.object_] = lib.to_object_array_tuples(rows)  # type: ignore[attr-defined]
    except (ImportError, AttributeError):
        grid = np.empty((len(rows), width), dtype=object)
        for i, column in enumerate(zip(*rows, strict=True)):
            grid[:, i] = column
    return grid


def _typed_column(values: npt.NDArray[np.object_], kind: str, *, sqlite: bool) -> pd.Series:
    """One dtype per kind whatever the driver returned: Int64, boolean, datetime64[ns], str."""
    if kind in ("int", "bool"):
        try:  # no NULL: plain integers, converted in C
            numbers = pd.Series(values.astype(np.int64)).astype("Int64")
        except TypeError:
            numbers = pd.to_numeric(pd.Series(values, dtype=object)).astype("Int64")
        return numbers.astype("boolean") if kind == "bool" else numbers
    if kind in ("datetime", "date"):
        # SQLite keeps timestamps as ISO text; PostgreSQL's driver gives datetime objects.
        parsed = pd.to_datetime(pd.Series(values, dtype=object), format="ISO8601" if sqlite else None)
        return parsed.astype("datetime64[ns]")
    return pd.Series(values, dtype="str")  # Arrow-backed when pyarrow is there: a fraction of the memory


def _unreadable(engine: Engine, exc: Exception) -> ConfigurationError:
    return ConfigurationError(f"--target: cannot read {mask_url(engine.url)}: {mask_text(str(exc))}")


def column_kind(table: Table, column: str) -> str:
    """int, bool, datetime, date, redacted or text: how a column is typed and written as evidence."""
    if column in REDACTED_COLUMNS:
        return "redacted"
    kind = table.c[column].type
    if isinstance(kind, Boolean):
        return "bool"
    if isinstance(kind, Integer):  # BigInteger is an Integer
        return "int"
    if isinstance(kind, DateTime):
        return "datetime"
    if isinstance(kind, Date):
        return "date"
    return "text"


def _select_sql(table: Table, dialect: Dialect) -> str:
    """SELECT of every column in key order, the password hash replaced by "***" where set."""
    selected = [
        case((column.is_(None), null()), else_=literal(REDACTED)).label(column.name)
        if column.name in REDACTED_COLUMNS else column
        for column in table.columns
    ]
    # In key order, so that hashing the evidence finds the rows already sorted.
    query = select(*selected).order_by(*table.primary_key.columns)
    return str(query.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))


# --- through ADBC ---------------------------------------------------------------------------------


def read_target_arrow(engine: Engine, each: TableHook | None = None,
                      sinks: SinkFactory | None = None) -> dict[str, pd.DataFrame] | None:
    """The tables through an ADBC driver (SQLite, PostgreSQL), in one transaction; None when ADBC
    cannot do it (no driver for this database, a URL or option libpq does not take, a value of an
    unexpected type), and the caller reads through SQLAlchemy's driver instead."""
    try:
        connection = _adbc_connect(engine)
    except Exception as exc:
        log.info("target read through SQLAlchemy's driver (ADBC: %s)", first_line(exc))
        return None
    if connection is None:
        return None
    frames: dict[str, pd.DataFrame] = {}
    try:
        with connection, connection.cursor() as cursor:
            for table in _READ_TABLES:
                sink = sinks(table.name) if sinks is not None else None
                if sink is not None:
                    try:
                        frames[table.name] = _streamed(cursor, table, engine.dialect, sink)
                        continue
                    except NotStreamableError as refused:
                        log.info("table %s: read whole (%s)", table.name, refused)
                        # After SQLite's driver refused a batch half-way, its next reading of the
                        # same statement gave a single row: another statement first, as below.
                        frames[table.name] = _made(table, _read_in_one_batch(cursor, table, engine.dialect), each)
                        continue
                frames[table.name] = _made(table, _read_table_arrow(cursor, table, engine.dialect), each)
            connection.rollback()  # it only read
    except _HookError:
        raise
    except Exception as exc:
        log.info("target read through SQLAlchemy's driver (ADBC: %s)", first_line(exc))
        return None
    return frames


# Rows per batch of the SQLite driver. Each batch is typed as it arrives, so that a table is never
# held whole as the driver gives it: SQLite's timestamps come as ISO text, and at a million users
# the entitlements alone were 1.1 GB of it, read while the legacy extract ran beside. Not fewer:
# a table whose text column is NULL through a whole first batch is read again (the register's
# merged_into, in its first 262,144 rows at a million users: 1.5 s more).
TARGET_BATCH_ROWS = 1_048_576


# Rows per batch of the SQLite driver for a table taken by a sink, which holds only the columns it
# keeps: a batch as the driver gives it (every column, timestamps as ISO text) is the reading's
# peak, and a million of the entitlements' rows were 0.5 GB of it. A column NULL all through a
# first batch, then text, makes the driver refuse a later one: the table is then read whole.
STREAMED_BATCH_ROWS = 262_144


def _streamed(cursor: Any, table: Table, dialect: Dialect, sink: BatchSink) -> pd.DataFrame:
    """The table batch by batch through `sink`, then the kept columns' frame through its close."""
    frame = _read_table_arrow(cursor, table, dialect, sink)
    made: pd.DataFrame = _sinks_own(sink.close, frame)
    del frame
    release_freed_memory()
    return made


def _sinks_own(call: Callable[[pd.DataFrame], Any], frame: pd.DataFrame) -> Any:
    """A sink's call; its error is its own (not a reason to read the other way), NotStreamableError aside."""
    try:
        return call(frame)
    except NotStreamableError:
        raise
    except Exception as exc:
        raise _HookError(exc) from exc


def _read_table_arrow(cursor: Any, table: Table, dialect: Dialect, sink: BatchSink | None = None) -> pd.DataFrame:
    statement = _select_sql(table, dialect)
    if dialect.name != "sqlite":
        return _typed_batches(cursor, table, statement, sink)
    cursor.adbc_statement.set_options(**adbc_batch_rows(TARGET_BATCH_ROWS if sink is None else STREAMED_BATCH_ROWS))
    try:
        return _typed_batches(cursor, table, statement, sink)
    except OSError as exc:
        # The driver types a column from its first batch: NULL all through it reads as an integer,
        # and a later batch's text is then refused. Once more in one batch (see adbc_batch_rows),
        # counted in the same transaction; a sink has seen batches already: read whole instead.
        if sink is not None:
            raise NotStreamableError(f"ADBC: {first_line(exc)}") from exc
        log.info("table %s: read again in one batch (ADBC: %s)", table.name, first_line(exc))
    return _read_in_one_batch(cursor, table, dialect)


def _read_in_one_batch(cursor: Any, table: Table, dialect: Dialect) -> pd.DataFrame:
    """The table read again, in one batch on SQLite, its rows counted in the same transaction."""
    cursor.execute(f"SELECT count(*) FROM {dialect.identifier_preparer.quote(table.name)}")
    counted = cursor.fetchone()
    if dialect.name == "sqlite":
        cursor.adbc_statement.set_options(**adbc_batch_rows(int(counted[0]) if counted else 0))
    return _typed_batches(cursor, table, _select_sql(table, dialect))


def _typed_batches(cursor: Any, table: Table, statement: str, sink: BatchSink | None = None) -> pd.DataFrame:
    """The table's frame: every column, or with a sink the columns it keeps, each batch given
    whole to the sink first."""
    names = [column.name for column in table.columns]
    kinds = [column_kind(table, name) for name in names]
    kept = [i for i, name in enumerate(names) if sink is None or name in sink.kept]
    pieces: list[list[pa.Array]] = [[] for _ in names]
    cursor.execute(statement)
    reader = cursor.fetch_record_batch()
    # Read here, batch after batch. Tried: each next batch read ahead in a thread of its own while
    # this one is typed and hashed (the driver decodes with the GIL released): the target side at a
    # million users took 12.9 s instead of 14.3 (medians of five), but a standalone reconciliation,
    # whose legacy extract runs beside, peaked at 1.49 to 1.67 GB instead of 1.35 to 1.36.
    try:
        for batch in reader:
            if batch.schema.names != names:
                raise ValueError(f"{table.name}: columns {batch.schema.names} instead of {names}")
            typed = [_typed_chunk(batch.column(i), kind) for i, kind in enumerate(kinds)]
            del batch
            if sink is not None:
                # The batch as the whole table's frame would hold it (the same dtypes, hence the
                # same canonical text).
                _sinks_own(sink.add, pd.DataFrame(
                    {name: _series(pa.chunked_array([typed[i]], type=_ARROW_TYPES[kinds[i]]), kinds[i])
                     for i, name in enumerate(names)}, copy=False))
            for i in kept:
                # With a sink, each batch's kept columns are copied into buffers of their own:
                # as cast, they shared the driver's, which pinned 0.4 GB of whole batches at a
                # million users.
                pieces[i].append(typed[i] if sink is None else pa.concat_arrays([typed[i]]))
            del typed  # the columns not kept go with their batch
    finally:
        reader.close()  # a reading given up half-way, closed before the cursor runs anything else
    columns: dict[str, pd.Series] = {}
    for i, name in enumerate(names):
        if i not in kept:
            continue
        chunks = pieces[i]
        if _ARROW_TYPES[kinds[i]] == pa.large_string() and chunks and sink is None:
            # Text is copied into one array of its own: the chunks share the driver's buffers, which
            # the driver sized for a whole batch; kept by the frame, a million users' target held
            # 1.5 GB of memory for 0.8 GB of frames.
            chunks = [pa.concat_arrays(chunks)]
        columns[name] = _series(pa.chunked_array(chunks, type=_ARROW_TYPES[kinds[i]]), kinds[i])
        pieces[i] = []  # this column's chunks go before the next column is made
    return pd.DataFrame(columns, copy=False)


def _adbc_connect(engine: Engine) -> Any:
    url = engine.url
    if engine.dialect.name == "sqlite":
        if not url.database or url.database == ":memory:" or url.query:
            return None
        import adbc_driver_sqlite.dbapi as adbc_sqlite

        return adbc_sqlite.connect(url.database)
    if engine.dialect.name == "postgresql":
        import adbc_driver_postgresql.dbapi as adbc_postgresql

        uri = url.set(drivername="postgresql").render_as_string(hide_password=False)
        connection = adbc_postgresql.connect(uri)
        try:  # one snapshot for every table, as on the other way
            connection.adbc_connection.set_options(**{
                "adbc.connection.transaction.isolation_level": "adbc.connection.transaction.isolation.repeatable_read"})
        except Exception:
            connection.close()
            raise
        return connection
    return None


# The Arrow type every chunk of a column of each kind is brought to before the column is made.
_ARROW_TYPES = {"int": pa.int64(), "bool": pa.int64(), "datetime": pa.timestamp("us"), "date": pa.timestamp("us"),
                "text": pa.large_string(), "redacted": pa.large_string()}


def _typed_chunk(values: pa.Array, kind: str) -> pa.Array:
    """One batch's column as _ARROW_TYPES[kind]: SQLite gives integers and text (timestamps as ISO
    text), PostgreSQL its own types."""
    wanted = _ARROW_TYPES[kind]
    if values.null_count == len(values):  # SQLite's driver types a column of NULLs as an integer
        return pa.nulls(len(values), type=wanted)
    if kind in ("int", "bool"):
        if not (pa.types.is_integer(values.type) or pa.types.is_boolean(values.type)):
            raise TypeError(f"{kind} column read as {values.type}")
        return pc.cast(values, wanted)
    if kind in ("datetime", "date"):
        if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
            # ISO text ("2024-11-14 00:00:00.000000", "2024-11-14"): Arrow's ISO 8601 parser,
            # else (an offset, say) pandas', as the other way parses it.
            try:
                return pc.cast(values, wanted)
            except pa.ArrowInvalid:
                text = pd.Series(values.to_pandas(types_mapper={values.type: TEXT_DTYPE}.get))
                parsed = pd.to_datetime(text, format="ISO8601").astype("datetime64[ns]")
                return pa.array(parsed.to_numpy(dtype="datetime64[us]"), type=wanted)
        if pa.types.is_timestamp(values.type) and values.type.tz is not None:
            raise TypeError(f"{kind} column read as {values.type}")
        if not (pa.types.is_timestamp(values.type) or pa.types.is_date(values.type)):
            raise TypeError(f"{kind} column read as {values.type}")
        return pc.cast(values, wanted)
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        raise TypeError(f"text column read as {values.type}")
    return pc.cast(values, wanted)


def _series(values: pa.ChunkedArray, kind: str) -> pd.Series:
    """The column of _typed_column's dtype for its kind, from its typed chunks."""
    if kind in ("int", "bool"):
        numbers = pd.Series(values.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get))
        return numbers.astype("boolean") if kind == "bool" else numbers
    if kind in ("datetime", "date"):
        return pd.Series(values.to_pandas(), dtype="datetime64[ns]")
    return pd.Series(values.to_pandas(types_mapper={pa.large_string(): TEXT_DTYPE}.get))
