"""The load stage: keyed, set-based upserts of the transform's frames into the EFP Connect target.

Everything happens in one database transaction, so that an error or a killed process at any
point leaves the target exactly as it was:

1. every frame is staged, in chunks so that memory stays bounded: on PostgreSQL into a
   temporary table by binary `COPY`; on SQLite into a side database file written by ADBC from
   Arrow, which the load's connection attaches (pipelines/sqlite_staging.py);
2. set-based SQL then makes the target's migrated rows converge on the frames, keyed by the
   legacy identifiers (`siret`, application `code`, `legacy_user_id`,
   `legacy_habilitation_id`): new keys are inserted, changed rows updated, unchanged rows left
   alone (so `written_by_run` names the run that last changed a row), and migrated rows whose
   key is no longer in the frames removed when nothing native still needs them.

Rows the migration did not write (`origin` = NATIVE) are never updated nor deleted: a native
establishment or application with a key of the frames is simply used, and a migrated
entitlement whose access tuple a native entitlement already holds is not written twice.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Connection, Engine, inspect, select, text

from pipelines import set_based_checks, sqlite_staging
from pipelines.errors import MigrationError
from pipelines.faults import checkpoint
from pipelines.frames import TARGET_FRAME_COLUMNS, TargetFrames
from pipelines.memory import release_freed_memory
from pipelines.target_schema import ORIGIN_MIGRATION, target_metadata
from pipelines.target_setup import init_target

log = logging.getLogger(__name__)

Progress = Callable[[str, int], None]

# The target tables the load writes, in the order their counts are reported.
LOAD_TABLES: tuple[str, ...] = (
    "applications",
    "establishments",
    "accounts",
    "entitlements",
    "access_requests",
    "migration_exceptions",
)
# What read_target_state returns, each with the columns that order it.
STATE_TABLES: tuple[str, ...] = (
    "accounts",
    "establishments",
    "applications",
    "entitlements",
    "access_requests",
)

# How each frame column is staged: int (BIGINT), text, bool, timestamp (naive) or date.
_COLUMN_KINDS: dict[str, dict[str, str]] = {
    "applications": {"code": "text", "name": "text", "legacy_code": "text"},
    "establishments": {
        "siret": "text",
        "siren": "text",
        "name": "text",
        "address": "text",
        "postal_code": "text",
        "city": "text",
        "closed_on": "date",
    },
    "accounts": {
        "legacy_user_id": "int",
        "login": "text",
        "email": "text",
        "last_name": "text",
        "first_name": "text",
        "phone": "text",
        "account_type": "text",
        "status": "text",
        "created_at": "timestamp",
        "last_login_at": "timestamp",
    },
    "entitlements": {
        "legacy_habilitation_id": "int",
        "legacy_user_id": "int",
        "application_code": "text",
        "siret": "text",
        "role": "text",
        "is_access_manager": "bool",
        "valid_from": "timestamp",
        "valid_until": "timestamp",
        "delegated_by_legacy_user_id": "int",
    },
    "access_requests": {
        "legacy_habilitation_id": "int",
        "legacy_user_id": "int",
        "application_code": "text",
        "siret": "text",
        "role": "text",
        "requested_at": "timestamp",
        "last_reminder_at": "timestamp",
    },
    "exceptions": {
        "entity": "text",
        "legacy_key": "text",
        "outcome": "text",
        "reason_code": "text",
        "detail": "text",
        "merged_into": "text",
    },
}
# Declared types: on SQLite the same names SQLAlchemy uses for the target, so that staging and
# target columns share their type affinity and compare alike.
_SQL_TYPES: dict[str, dict[str, str]] = {
    "postgresql": {
        "int": "BIGINT",
        "text": "TEXT",
        "bool": "BOOLEAN",
        "timestamp": "TIMESTAMP",
        "date": "DATE",
    },
    "sqlite": {"int": "BIGINT", "text": "TEXT", "bool": "BOOLEAN", "timestamp": "DATETIME", "date": "DATE"},
}
_COPY_TYPES = {"int": "int8", "text": "text", "bool": "bool", "timestamp": "timestamp", "date": "date"}
_SQLITE_CACHE_KIB = 262_144

_STAGING_PREFIX = "efp_load_"
_MOVING_LOGIN_PREFIX = "~moving~"


class LoadError(MigrationError):
    """The frames cannot be loaded as they are (duplicate keys, dangling references, a taken login)."""


# How PostgreSQL checks the foreign keys of the rows a habilitation table receives.
FK_CHECKS: tuple[str, ...] = ("auto", "per-row", "set")
SET_CHECKS_FROM_ROWS = 100_000


@dataclass(frozen=True)
class LoadConfig:
    run_id: str
    batch_rows: int = 50_000
    """Rows converted and sent to the staging tables at a time (bounds memory)."""
    fk_checks: str = "auto"
    """PostgreSQL only. "per-row": the foreign-key triggers check every inserted habilitation
    (about 11 µs a row on the benchmark machine), every index takes each row as it comes, and
    readers never wait. "set": a habilitation table's foreign keys are dropped and added back
    inside the load's transaction, so that PostgreSQL checks them with one set-based query, and
    in a first wave a table receiving more rows than it holds has its indexes (but its primary
    key) dropped and built again, one sort each (pipelines/set_based_checks.py); until the load
    commits, readers of those tables and of the tables they reference wait. "auto": "set" for
    a table receiving at least `set_checks_from_rows` new rows (a first wave), else "per-row"."""
    set_checks_from_rows: int = SET_CHECKS_FROM_ROWS

    def __post_init__(self) -> None:
        if not self.run_id:
            raise ValueError("run_id must not be empty")
        if self.batch_rows < 1:
            raise ValueError("batch_rows must be positive")
        if self.fk_checks not in FK_CHECKS:
            raise ValueError(f"fk_checks must be one of {', '.join(FK_CHECKS)}, not {self.fk_checks!r}")
        if self.set_checks_from_rows < 1:
            raise ValueError("set_checks_from_rows must be positive")


@dataclass(frozen=True)
class TableLoadCounts:
    """What the load did to one target table.

    `updated` includes habilitations whose access tuple changed (their row is replaced);
    `deleted` counts migrated rows no longer in the frames; `kept_referenced` such rows kept
    because something native still references them; `native_kept` rows of the frames whose
    key (or, for entitlements, access tuple) a NATIVE row already holds: that row is used as
    is and nothing is written.
    """

    staged: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    kept_referenced: int = 0
    native_kept: int = 0

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class LoadResult:
    """What the load did: counts per target table (in LOAD_TABLES order) and its timings."""

    run_id: str
    tables: Mapping[str, TableLoadCounts]
    elapsed_seconds: float
    engine: str = ""
    staging_seconds: float = 0.0
    set_checked: tuple[str, ...] = ()
    """Tables whose foreign keys PostgreSQL checked set-based (see LoadConfig.fk_checks)."""
    indexes_rebuilt: tuple[str, ...] = ()
    """Tables whose indexes PostgreSQL built after their insert, one sort each (first waves)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "engine": self.engine,
            "tables": {name: counts.to_dict() for name, counts in self.tables.items()},
            "set_checked": list(self.set_checked),
            "indexes_rebuilt": list(self.indexes_rebuilt),
            "staging_seconds": round(self.staging_seconds, 3),
            "elapsed_seconds": round(self.elapsed_seconds, 3),
        }


@dataclass
class _Counts:
    staged: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    kept_referenced: int = 0
    native_kept: int = 0

    def frozen(self) -> TableLoadCounts:
        return TableLoadCounts(**asdict(self))


@dataclass
class _Step:
    """The open transaction and what every step needs from it."""

    conn: Connection
    dialect: str
    run_id: str
    progress: Progress | None
    fk_checks: str = "auto"
    set_checks_from_rows: int = SET_CHECKS_FROM_ROWS
    counts: dict[str, _Counts] = field(default_factory=lambda: {name: _Counts() for name in LOAD_TABLES})
    set_checked: list[str] = field(default_factory=list)
    indexes_rebuilt: list[str] = field(default_factory=list)

    def set_based(self, new_rows: int) -> bool:
        """Whether a table receiving `new_rows` has its constraints checked set-based."""
        if self.dialect != "postgresql" or self.fk_checks == "per-row":
            return False
        return self.fk_checks == "set" or new_rows >= self.set_checks_from_rows

    def has_more_rows(self, table: str, *, than: int) -> bool:
        # Counts no further than it needs to: the table may be large.
        return self.scalar(f"SELECT count(*) FROM (SELECT 1 FROM {table} LIMIT {int(than) + 1}) x") > than

    def execute(self, sql: str, what: str | None = None) -> int:
        rowcount = int(self.conn.execute(text(sql), {"run_id": self.run_id}).rowcount)
        if what is not None:
            self.report(what, rowcount)
        return rowcount

    def scalar(self, sql: str) -> int:
        value = self.conn.execute(text(sql), {"run_id": self.run_id}).scalar()
        return int(value or 0)

    def pair(self, sql: str) -> tuple[int, int]:
        row = self.conn.execute(text(sql), {"run_id": self.run_id}).one()
        return int(row[0] or 0), int(row[1] or 0)

    def exists(self, sql_from_where: str) -> bool:
        return self.conn.execute(text(f"SELECT 1 {sql_from_where} LIMIT 1")).first() is not None

    def report(self, what: str, rows: int) -> None:
        log.debug("load: %s: %d", what, rows)
        checkpoint("load:batch" if what.startswith("staging") else "load:step")
        if self.progress is not None:
            self.progress(what, rows)

    # --- dialect differences -------------------------------------------------------------

    def differs(self, left: str, right: str) -> str:
        """NULL-safe inequality."""
        if self.dialect == "postgresql":
            return f"{left} IS DISTINCT FROM {right}"
        return f"{left} IS NOT {right}"

    def any_differs(self, pairs: Sequence[tuple[str, str]]) -> str:
        return "(" + " OR ".join(self.differs(left, right) for left, right in pairs) + ")"

    def absent_from(self, column: str, table: str, other_column: str, *, other_nullable: bool = False) -> str:
        """`column` has no equal in `table.other_column` (an anti-join).

        PostgreSQL plans NOT EXISTS as a hashed anti-join (NOT IN over a large set may not be);
        SQLite builds one ephemeral index for NOT IN, where NOT EXISTS would rescan an
        unindexed staging table for every row.
        """
        if self.dialect == "postgresql":
            return f"NOT EXISTS (SELECT 1 FROM {table} x WHERE x.{other_column} = {column})"
        not_null = f" WHERE {other_column} IS NOT NULL" if other_nullable else ""
        return f"{column} NOT IN (SELECT {other_column} FROM {table}{not_null})"


def staging_table(frame_name: str) -> str:
    return f"{_STAGING_PREFIX}{frame_name}"


_S_APP = staging_table("applications")
_S_EST = staging_table("establishments")
_S_ACC = staging_table("accounts")
_S_ENT = staging_table("entitlements")
_S_REQ = staging_table("access_requests")
_S_EXC = staging_table("exceptions")
_MIG = f"'{ORIGIN_MIGRATION}'"
# The tables whose rows say who wrote them (the exceptions are the migration's own).
_ORIGIN_TABLES = frozenset(LOAD_TABLES) - {"migration_exceptions"}


class Handover:
    """Frames whose holder gives them up to the load: it takes them out and lets them go once
    staged, so that what runs beside the rest of the load has their memory (0.4 GB at a million
    users). Taken once."""

    def __init__(self, frames: TargetFrames) -> None:
        self._frames: TargetFrames | None = frames

    def take(self) -> TargetFrames:
        frames, self._frames = self._frames, None
        if frames is None:
            raise LoadError("these frames were handed over to a load already")
        return frames


def load(
    engine: Engine,
    frames: TargetFrames | Handover,
    config: LoadConfig,
    *,
    progress: Progress | None = None,
    after_staging: Callable[[], object] | None = None,
    before_commit: Callable[[], object] | None = None,
) -> LoadResult:
    """Makes the target's migrated rows equal to `frames`, in one transaction.

    `progress(step, rows)` is called after every chunk staged (rows so far) and every SQL step
    (rows it touched); an exception it raises aborts the load and rolls everything back.
    `after_staging()` is called once every frame is staged, before the set-based SQL (from there
    on the load mostly waits on the database: the run starts the stewards' reports then).
    `before_commit()` is called once everything is written, just before the commit: an exception
    either raises rolls everything back too (the run waits there for the stewards' reports).
    Frames given as a Handover are let go of before `after_staging()`.
    """
    started = time.perf_counter()
    if isinstance(frames, Handover):
        frames = frames.take()
    _check_frames(frames)
    init_target(engine)
    dialect = engine.dialect.name
    if dialect not in _SQL_TYPES:
        raise LoadError(f"the load supports PostgreSQL and SQLite targets, not {dialect}")
    staged_rows = sum(len(frames.table(name)) for name in _COLUMN_KINDS)
    with engine.connect() as conn, contextlib.ExitStack() as side:
        raw = _driver_connection(conn)
        saved_pragmas = _prepare_sqlite(raw) if dialect == "sqlite" else {}
        try:
            step = _Step(conn=conn, dialect=dialect, run_id=config.run_id, progress=progress,
                         fk_checks=config.fk_checks, set_checks_from_rows=config.set_checks_from_rows)
            staging_started = time.perf_counter()
            if dialect == "sqlite":
                # Staged before the transaction: ATTACH is refused inside one, and the side file
                # is private to this load (the target is neither read nor written meanwhile).
                _stage_sqlite(step, frames, config.batch_rows, side.enter_context(sqlite_staging.side_database()))
                side.callback(sqlite_staging.detach, raw)
            with conn.begin():
                if dialect == "sqlite" and not raw.in_transaction:
                    # Takes the write lock now: nobody writes the target between our reads and writes.
                    raw.execute("BEGIN IMMEDIATE")
                elif dialect == "postgresql":
                    # Transaction-scoped: room for the hash joins over the staged frames.
                    conn.execute(text("SET LOCAL work_mem = '256MB'"))
                    # And for the index builds of a first wave (_indexes_rebuilt): one sort each.
                    conn.execute(text("SET LOCAL maintenance_work_mem = '256MB'"))
                    _stage_postgres(step, frames, config.batch_rows)
                staging_seconds = time.perf_counter() - staging_started
                log.info("load %s: %d rows staged in %.1fs", config.run_id, staged_rows, staging_seconds)
                # From here on the staged rows are the database's: where this was the frames' last
                # reference (a Handover), they go now.
                del frames
                release_freed_memory()
                checkpoint("load:staged")
                if after_staging is not None:
                    after_staging()
                _converge(step)
                checkpoint("load:converged")  # everything written, nothing committed yet
                if before_commit is not None:
                    before_commit()
        finally:
            if saved_pragmas:
                _restore_sqlite(raw, saved_pragmas)
    elapsed = time.perf_counter() - started
    result = LoadResult(
        run_id=config.run_id,
        engine=dialect,
        tables={name: counts.frozen() for name, counts in step.counts.items()},
        staging_seconds=staging_seconds,
        elapsed_seconds=elapsed,
        set_checked=tuple(step.set_checked),
        indexes_rebuilt=tuple(step.indexes_rebuilt),
    )
    log.info("load %s done in %.1fs", config.run_id, elapsed)
    return result


def _driver_connection(conn: Connection) -> Any:
    """The DB-API connection under `conn` (psycopg or sqlite3), in the same transaction."""
    raw = conn.connection.driver_connection
    if raw is None:
        raise LoadError("the target connection has no driver connection")
    return raw


# --- checks on the frames ------------------------------------------------------------------


def _check_frames(frames: TargetFrames) -> None:
    """What the database would reject less legibly, or accept wrongly, is refused up front."""
    for name, columns in TARGET_FRAME_COLUMNS.items():
        missing = [c for c in columns if c not in frames.table(name).columns]
        if missing:
            raise LoadError(f"frame {name} lacks column(s) {', '.join(missing)}")
    keys = {
        "applications": ("code",),
        "establishments": ("siret",),
        "accounts": ("legacy_user_id", "login"),
        "entitlements": ("legacy_habilitation_id",),
        "access_requests": ("legacy_habilitation_id",),
    }
    for name, key_columns in keys.items():
        frame = frames.table(name)
        for column in key_columns:
            values = frame[column]
            if values.isna().any():
                raise LoadError(f"frame {name}: {column} is missing on {int(values.isna().sum())} row(s)")
            duplicated = values[values.duplicated()]
            if len(duplicated):
                sample = ", ".join(str(v) for v in duplicated.unique()[:5])
                raise LoadError(f"frame {name}: {column} is not unique ({sample})")
    for name, kinds in _COLUMN_KINDS.items():
        for column, kind in kinds.items():
            if kind in ("timestamp", "date") and isinstance(frames.table(name)[column].dtype, pd.DatetimeTZDtype):
                raise LoadError(f"frame {name}: column {column}: timestamps must be naive (Europe/Paris wall time)")
    known_users = frames.accounts["legacy_user_id"]
    for name in ("entitlements", "access_requests"):
        holders = frames.table(name)["legacy_user_id"]
        dangling = holders[~holders.isin(known_users)]
        if len(dangling):
            sample = ", ".join(str(v) for v in dangling.unique()[:5])
            raise LoadError(f"frame {name}: legacy_user_id not among the accounts ({sample})")


# --- staging -------------------------------------------------------------------------------


def _prepare_sqlite(raw: Any) -> dict[str, Any]:
    """Connection settings for the load (outside any transaction, where PRAGMAs take effect)."""
    saved = {
        "main.cache_size": raw.execute("PRAGMA main.cache_size").fetchone()[0],
        "temp.cache_size": raw.execute("PRAGMA temp.cache_size").fetchone()[0],
    }
    if not raw.in_transaction:
        # Referential integrity is part of the contract, whatever engine the caller built.
        raw.execute("PRAGMA foreign_keys=ON")
    # A larger page cache keeps the index B-trees in memory while millions of rows go in.
    raw.execute(f"PRAGMA main.cache_size=-{_SQLITE_CACHE_KIB}")
    raw.execute(f"PRAGMA temp.cache_size=-{_SQLITE_CACHE_KIB}")
    return saved


def _restore_sqlite(raw: Any, saved: Mapping[str, Any]) -> None:
    for name, value in saved.items():
        raw.execute(f"PRAGMA {name}={int(value)}")


def _stage_postgres(step: _Step, frames: TargetFrames, batch_rows: int) -> None:
    types = _SQL_TYPES[step.dialect]
    for name, kinds in _COLUMN_KINDS.items():
        frame = frames.table(name)
        table = staging_table(name)
        columns_sql = ", ".join(f"{column} {types[kind]}" for column, kind in kinds.items())
        step.conn.execute(text(f"CREATE TEMP TABLE {table} ({columns_sql}) ON COMMIT DROP"))
        _copy_postgres(step, frame, name, batch_rows)
        # Temporary tables are never analysed automatically; the planner needs their size.
        step.conn.execute(text(f"ANALYZE {table}"))
        step.counts[_loaded_table(name)].staged = len(frame)


def _stage_sqlite(step: _Step, frames: TargetFrames, batch_rows: int, path: str) -> None:
    """The staging tables written into the side file `path`, which the load's connection then
    attaches (pipelines/sqlite_staging.py); the SQL names them unqualified, as on PostgreSQL."""
    raw = _driver_connection(step.conn)
    if raw.in_transaction:
        raise LoadError("the SQLite target connection is inside a transaction already: the load needs its own")
    types = _SQL_TYPES[step.dialect]
    tables = {}
    for name, kinds in _COLUMN_KINDS.items():
        columns_sql = ", ".join(f"{column} {types[kind]}" for column, kind in kinds.items())
        tables[staging_table(name)] = (columns_sql, partial(sqlite_staging.arrow_table, frames.table(name), kinds))
        step.counts[_loaded_table(name)].staged = len(frames.table(name))
    names = {staging_table(name): name for name in _COLUMN_KINDS}
    sqlite_staging.write_side_database(path, tables, batch_rows,
                                       lambda table, done: step.report(f"staging {names[table]}", done))
    sqlite_staging.attach(raw, path)


def _loaded_table(frame_name: str) -> str:
    return "migration_exceptions" if frame_name == "exceptions" else frame_name


def _copy_postgres(step: _Step, frame: pd.DataFrame, name: str, batch_rows: int) -> None:
    # Binary COPY a row at a time from Python, not CSV written by Arrow: for 2 million
    # entitlements Arrow's CSV took half the client's CPU (1.9 against 4.0 s) but PostgreSQL
    # parses CSV more slowly than it reads binary, and the copy took longer (6.7 against 4.4 s).
    kinds = _COLUMN_KINDS[name]
    raw = _driver_connection(step.conn)
    columns = ", ".join(kinds)
    with raw.cursor() as cursor, cursor.copy(
        f"COPY {staging_table(name)} ({columns}) FROM STDIN (FORMAT BINARY)"
    ) as copy:
        copy.set_types([_COPY_TYPES[kind] for kind in kinds.values()])
        for done, rows in _row_chunks(frame, kinds, batch_rows):
            for row in rows:
                copy.write_row(row)
            step.report(f"staging {name}", done)


def _row_chunks(
    frame: pd.DataFrame, kinds: Mapping[str, str], batch_rows: int
) -> Iterator[tuple[int, Iterator[tuple[Any, ...]]]]:
    """(rows done so far, that chunk's rows as driver-ready tuples), one chunk at a time."""
    for start in range(0, len(frame), batch_rows):
        chunk = frame.iloc[start : start + batch_rows]
        columns = [_driver_values(chunk[column], kind) for column, kind in kinds.items()]
        yield start + len(chunk), zip(*columns, strict=True)


def _driver_values(series: pd.Series, kind: str) -> list[Any]:
    """One column as Python values the driver takes, NA as None (vectorised where pandas can)."""
    if kind == "int":
        if isinstance(series.dtype, np.dtype) and series.dtype.kind in "iu":
            return series.tolist()
        return _objects(series.astype("Int64"))
    if kind == "bool":
        return series.tolist() if series.dtype == np.bool_ else _objects(series.astype("boolean"))
    if kind == "text":
        values = _objects(series)
        if pd.api.types.infer_dtype(values, skipna=True) not in ("string", "empty"):
            values = [None if value is None else str(value) for value in values]
        return values
    naive = _naive_datetimes(series)
    unit = "datetime64[us]" if kind == "timestamp" else "datetime64[D]"
    # numpy turns datetime64[us] into datetime.datetime, [D] into datetime.date, NaT into None.
    dates: list[Any] = naive.to_numpy(dtype=unit).astype(object).tolist()
    return dates


def _objects(series: pd.Series) -> list[Any]:
    values = series.to_numpy(dtype=object)
    missing = pd.isna(values)
    if missing.any():
        values = values.copy()  # to_numpy may hand out the frame's own array
        values[missing] = None
    result: list[Any] = values.tolist()
    return result


def _naive_datetimes(series: pd.Series) -> pd.Series:
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        raise LoadError(f"column {series.name}: timestamps must be naive (Europe/Paris wall time)")
    if not pd.api.types.is_datetime64_dtype(series.dtype):
        series = pd.to_datetime(series)
    return series


# --- convergence ---------------------------------------------------------------------------


def _converge(step: _Step) -> None:
    """The set-based SQL, in foreign-key order: referenced tables first, deletions in reverse."""
    _upsert_keyed(step, "applications", _S_APP, "code", ("name", "legacy_code"))
    _upsert_keyed(
        step,
        "establishments",
        _S_EST,
        "siret",
        ("siren", "name", "address", "postal_code", "city", "closed_on"),
    )
    # Habilitations that left the frames or changed tuple go first: that frees both their
    # accounts and their access tuples for what follows.
    entitlements_removed = _remove_stale_habilitations(step, "entitlements", _S_ENT)
    requests_removed = _remove_stale_habilitations(step, "access_requests", _S_REQ)
    _remove_stale_accounts(step)
    _upsert_accounts(step)
    _upsert_habilitations(step, "entitlements", _S_ENT, entitlements_removed)
    _upsert_habilitations(step, "access_requests", _S_REQ, requests_removed)
    _remove_stale_referenced(step, "establishments", _S_EST, "siret")
    _remove_stale_referenced(step, "applications", _S_APP, "code")
    _replace_exceptions(step)


@dataclass(frozen=True)
class _Upsert:
    """One keyed upsert from a staging table `s` into a target table.

    `values` are (target column, expression over `s` and `joins`); `updated` the columns an
    existing migrated row takes from the frames. ON CONFLICT's WHERE only lets a migrated row
    that actually differs be updated, so NATIVE rows are out of reach and an unchanged row
    keeps its `written_by_run`.
    """

    table: str
    key: str
    staging: str
    values: tuple[tuple[str, str], ...]
    updated: tuple[str, ...]
    joins: str = ""
    new_row_condition: str = ""

    def sql(self, step: _Step, *, without_key_index: bool = False) -> str:
        """`without_key_index`: a first wave into a table whose indexes are dropped for the
        insert (_indexes_rebuilt): with no unique index on the key for ON CONFLICT, the rows
        whose key a (native) row holds are left out by an anti-join, which is the same thing
        with no row of ours to update and the table locked by the drop."""
        expressions = dict(self.values)
        columns = ", ".join(column for column, _ in self.values)
        selected = ", ".join(expression for _, expression in self.values)
        if without_key_index:
            return (
                f"INSERT INTO {self.table} ({columns}, origin, created_by_run, written_by_run) "
                f"SELECT {selected}, {_MIG}, :run_id, :run_id FROM {self.staging} s {self.joins} "
                f"WHERE {step.absent_from(f's.{self.key}', self.table, self.key)}{self.new_row_condition}"
            )
        if step.exists(f"FROM {self.table} WHERE origin = {_MIG}"):
            # A later wave: only rows that are new or differ are selected (`t` is the target
            # row), so the many unchanged rows are neither locked nor, on PostgreSQL, given a
            # sequence number that the conflict then throws away.
            changed = step.any_differs([(f"t.{c}", expressions[c]) for c in self.updated])
            source = (
                f"FROM {self.staging} s {self.joins} "
                f"LEFT JOIN {self.table} t ON t.{self.key} = s.{self.key} "
                f"WHERE (t.{self.key} IS NULL{self.new_row_condition}) OR (t.origin = {_MIG} AND {changed})"
            )
        else:
            # First wave: nothing of ours to compare with. Not reading the target in the SELECT
            # lets SQLite insert as it reads instead of materialising the SELECT first.
            # (`WHERE true` also settles SQLite's parsing ambiguity before ON CONFLICT.)
            source = f"FROM {self.staging} s {self.joins} WHERE true{self.new_row_condition}"
        changed_in_update = step.any_differs([(f"{self.table}.{c}", f"excluded.{c}") for c in self.updated])
        return (
            f"INSERT INTO {self.table} ({columns}, origin, created_by_run, written_by_run) "
            f"SELECT {selected}, {_MIG}, :run_id, :run_id {source} "
            f"ON CONFLICT ({self.key}) DO UPDATE SET "
            + ", ".join(f"{c} = excluded.{c}" for c in self.updated)
            + ", written_by_run = excluded.written_by_run "
            f"WHERE {self.table}.origin = {_MIG} AND {changed_in_update}"
        )

    def matched(self, step: _Step) -> tuple[int, int]:
        """(staged keys held by a migrated row, staged keys held by any row)."""
        return step.pair(
            f"SELECT sum(CASE WHEN t.origin = {_MIG} THEN 1 ELSE 0 END), count(*) "
            f"FROM {self.staging} s JOIN {self.table} t ON t.{self.key} = s.{self.key}"
        )


def _upsert_keyed(step: _Step, table: str, staging: str, key: str, columns: Sequence[str]) -> None:
    """Establishments and applications: a NATIVE row with the key is used as it is."""
    upsert = _Upsert(
        table=table,
        key=key,
        staging=staging,
        values=tuple((c, f"s.{c}") for c in (key, *columns)),
        updated=tuple(columns),
    )
    _count_upsert(step, step.counts[table], upsert)


def _count_upsert(step: _Step, counts: _Counts, upsert: _Upsert) -> None:
    migrated, matched = upsert.matched(step)
    with _indexes_rebuilt(step, upsert.table, new_rows=counts.staged - matched) as rebuilt:
        written = step.execute(upsert.sql(step, without_key_index=rebuilt), f"upsert {upsert.table}")
    counts.native_kept = matched - migrated
    counts.inserted = counts.staged - matched
    counts.updated = written - counts.inserted
    counts.unchanged = migrated - counts.updated


# Every account column the frames carry, but its key.
_ACCOUNT_COLUMNS = tuple(c for c in TARGET_FRAME_COLUMNS["accounts"] if c != "legacy_user_id")


def _remove_stale_accounts(step: _Step) -> None:
    """Migrated accounts no longer in the frames go, unless something still references them."""
    counts = step.counts["accounts"]
    stale = f"accounts.origin = {_MIG} AND " + step.absent_from(
        "accounts.legacy_user_id", _S_ACC, "legacy_user_id"
    )
    candidates = step.scalar(f"SELECT count(*) FROM accounts WHERE {stale}")
    if candidates == 0:
        return
    unreferenced = _unreferenced(step, "accounts")
    counts.deleted = step.execute(f"DELETE FROM accounts WHERE {stale} AND {unreferenced}", "delete accounts")
    counts.kept_referenced = candidates - counts.deleted


def _upsert_accounts(step: _Step) -> None:
    """Accounts, keyed by legacy_user_id; account_id is the target's and never changes."""
    if step.exists(f"FROM accounts WHERE origin = {_MIG}"):
        # A login may move from one migrated account to another between two waves: the
        # accounts whose login changes first take a unique placeholder, so that no row-by-row
        # unique check sees two holders.
        step.execute(
            f"UPDATE accounts SET login = '{_MOVING_LOGIN_PREFIX}' || CAST(legacy_user_id AS TEXT) "
            f"WHERE origin = {_MIG} AND legacy_user_id IN ("
            f"SELECT s.legacy_user_id FROM {_S_ACC} s "
            f"JOIN accounts a ON a.legacy_user_id = s.legacy_user_id WHERE s.login <> a.login)",
            "move logins",
        )
    taken = step.conn.execute(
        text(
            f"SELECT s.legacy_user_id, s.login, a.origin FROM {_S_ACC} s "
            "JOIN accounts a ON a.login = s.login "
            "WHERE a.legacy_user_id IS NULL OR a.legacy_user_id <> s.legacy_user_id "
            "ORDER BY s.legacy_user_id LIMIT 5"
        )
    ).all()
    if taken:
        sample = ", ".join(f"{row[0]} ({row[1]}, held by a {row[2]} account)" for row in taken)
        raise LoadError(f"login already taken in the target for legacy_user_id {sample}")
    upsert = _Upsert(
        table="accounts",
        key="legacy_user_id",
        staging=_S_ACC,
        values=(
            ("legacy_user_id", "s.legacy_user_id"),
            *((c, f"s.{c}") for c in _ACCOUNT_COLUMNS),
            # Every account the migration writes resets its password at first login.
            ("must_reset_password", "true"),
            ("password_hash", "NULL"),
        ),
        updated=(*_ACCOUNT_COLUMNS, "must_reset_password", "password_hash"),
    )
    _count_upsert(step, step.counts["accounts"], upsert)


# Habilitation tables: their access tuple and the attributes updated in place.
_TUPLE_COLUMNS = ("application_code", "siret", "role")
_ATTRIBUTES = {
    "entitlements": ("is_access_manager", "valid_from", "valid_until", "delegated_by_legacy_user_id"),
    "access_requests": ("requested_at", "last_reminder_at"),
}


@dataclass(frozen=True)
class _Removed:
    stale: int
    retupled: int
    # Retupled rows whose new tuple a native entitlement holds: they are not written back.
    retupled_to_native: int


def _remove_stale_habilitations(step: _Step, table: str, staging: str) -> _Removed:
    """Deletes migrated rows whose habilitation left the frames or whose access tuple changed.

    A changed tuple is deleted here and inserted anew by the upsert: updating it in place
    could collide transiently with the unique access index (two rows swapping roles).
    """
    if not step.exists(f"FROM {table} WHERE origin = {_MIG}"):
        return _Removed(0, 0, 0)
    stale = step.execute(
        f"DELETE FROM {table} WHERE origin = {_MIG} AND "
        + step.absent_from(f"{table}.legacy_habilitation_id", staging, "legacy_habilitation_id"),
        f"delete {table}",
    )
    changed = (
        f"SELECT t.legacy_habilitation_id FROM {staging} s "
        f"JOIN {table} t ON t.legacy_habilitation_id = s.legacy_habilitation_id "
        "JOIN accounts a ON a.account_id = t.account_id "
        f"WHERE t.origin = {_MIG} AND "
        + step.any_differs(
            [("a.legacy_user_id", "s.legacy_user_id"), *((f"t.{c}", f"s.{c}") for c in _TUPLE_COLUMNS)]
        )
    )
    retupled_to_native = 0
    if table == "entitlements" and _native_entitlements_on_migrated_accounts(step):
        retupled_to_native = step.scalar(
            f"SELECT count(*) FROM ({changed}) c "
            f"JOIN {staging} s ON s.legacy_habilitation_id = c.legacy_habilitation_id "
            f"JOIN accounts a ON a.legacy_user_id = s.legacy_user_id WHERE {_NATIVE_TUPLE_EXISTS}"
        )
    retupled = step.execute(
        f"DELETE FROM {table} WHERE origin = {_MIG} AND legacy_habilitation_id IN ({changed})",
        f"replace changed {table}",
    )
    return _Removed(stale, retupled, retupled_to_native)


@contextlib.contextmanager
def _foreign_keys_checked(step: _Step, table: str, *, new_rows: int) -> Iterator[None]:
    """Around the insert of a habilitation table's rows: how PostgreSQL checks their foreign keys.

    Per row, each inserted row fires one trigger per foreign key, which looks the key up and
    locks the referenced row: at 2 million entitlements that was 25 s of a 58 s load. Set-based
    (pipelines/set_based_checks.py), the table's foreign keys are dropped here and added back
    afterwards, which makes PostgreSQL check every row with one anti-join (about 1.5 s).
    """
    if not step.set_based(new_rows):
        yield
        return
    with set_based_checks.foreign_keys_dropped(step.conn, table) as names:
        yield
    for name in names:
        step.report(f"check {table} {name}", 0)
    step.set_checked.append(table)


@contextlib.contextmanager
def _indexes_rebuilt(step: _Step, table: str, *, new_rows: int) -> Iterator[bool]:
    """Around a large insert into a table that holds fewer rows than it receives: its indexes
    (but its primary key) are dropped and built again afterwards, each by one sort
    (pipelines/set_based_checks.py). Yields whether any was dropped: an upsert whose key's
    unique index is gone cannot use ON CONFLICT, and goes by an anti-join instead.

    Row by row, at a million users, the accounts' inserts took 10 to 14 s and the
    entitlements' 20 to 22 s, most of it in index entries at random places (login, the access
    tuple) and their WAL; without the indexes 2 and 9.5 s, and each index then builds in 0.5 to
    3 s. Only a first wave goes this way: a table with rows of ours takes its changes row by
    row, and one with more rows (native ones) than it receives would be rebuilt at a cost
    larger than the insert's.
    """
    if new_rows == 0 or not step.set_based(new_rows) or step.has_more_rows(table, than=new_rows) or (
        table in _ORIGIN_TABLES and step.exists(f"FROM {table} WHERE origin = {_MIG}")
    ):
        yield False
        return
    with set_based_checks.indexes_dropped(step.conn, table) as names:
        yield bool(names)
    if names:
        step.report(f"index {table}", 0)
        step.indexes_rebuilt.append(table)


def _native_entitlements_on_migrated_accounts(step: _Step) -> bool:
    # Only accounts that exist before this load can carry native entitlements.
    return step.exists(
        "FROM entitlements n JOIN accounts a ON a.account_id = n.account_id "
        f"WHERE n.origin <> {_MIG} AND a.legacy_user_id IS NOT NULL"
    )


# A native entitlement holds the access tuple of staged row `s` on account `a` (the unique
# index uq_entitlements_access answers it).
_NATIVE_TUPLE_EXISTS = (
    "EXISTS (SELECT 1 FROM entitlements n "
    "WHERE n.account_id = a.account_id AND n.application_code = s.application_code "
    "AND coalesce(n.siret, '') = coalesce(s.siret, '') AND n.role = s.role "
    f"AND n.origin <> {_MIG})"
)


def _upsert_habilitations(step: _Step, table: str, staging: str, removed: _Removed) -> None:
    """Entitlements and access requests, keyed by legacy_habilitation_id.

    account_id comes from the account that holds the staged legacy_user_id. A new entitlement
    whose access tuple a native entitlement already holds is not written (the unique access
    index allows one row per tuple, and the native one is not ours to change).
    """
    counts = step.counts[table]
    attributes = _ATTRIBUTES[table]
    new_row_condition = ""
    native_tuples = 0
    if table == "entitlements" and _native_entitlements_on_migrated_accounts(step):
        new_row_condition = f" AND NOT {_NATIVE_TUPLE_EXISTS}"
        native_tuples = step.scalar(
            f"SELECT count(*) FROM {staging} s JOIN accounts a ON a.legacy_user_id = s.legacy_user_id "
            f"WHERE {_NATIVE_TUPLE_EXISTS} AND "
            + step.absent_from(
                "s.legacy_habilitation_id", table, "legacy_habilitation_id", other_nullable=True
            )
        )
    upsert = _Upsert(
        table=table,
        key="legacy_habilitation_id",
        staging=staging,
        values=(
            ("account_id", "a.account_id"),
            *((c, f"s.{c}") for c in ("legacy_habilitation_id", *_TUPLE_COLUMNS, *attributes)),
        ),
        updated=attributes,
        joins="JOIN accounts a ON a.legacy_user_id = s.legacy_user_id",
        new_row_condition=new_row_condition,
    )
    migrated, matched = upsert.matched(step)
    new_keys = counts.staged - matched
    with (
        _foreign_keys_checked(step, table, new_rows=new_keys),
        _indexes_rebuilt(step, table, new_rows=new_keys) as rebuilt,
    ):
        written = step.execute(upsert.sql(step, without_key_index=rebuilt), f"upsert {table}")
    # Rows written back after a tuple change count as updated, not as new habilitations.
    rewritten = removed.retupled - removed.retupled_to_native
    new_rows = counts.staged - matched - native_tuples
    updated_in_place = written - new_rows
    counts.native_kept = matched - migrated + native_tuples
    counts.inserted = new_rows - rewritten
    counts.updated = updated_in_place + rewritten
    counts.unchanged = migrated - updated_in_place
    counts.deleted = removed.stale + removed.retupled_to_native


def _remove_stale_referenced(step: _Step, table: str, staging: str, key: str) -> None:
    """Migrated establishments/applications absent from the frames go once nothing references them."""
    counts = step.counts[table]
    stale = f"{table}.origin = {_MIG} AND " + step.absent_from(f"{table}.{key}", staging, key)
    candidates = step.scalar(f"SELECT count(*) FROM {table} WHERE {stale}")
    if candidates == 0:
        return
    counts.deleted = step.execute(
        f"DELETE FROM {table} WHERE {stale} AND {_unreferenced(step, table)}", f"delete {table}"
    )
    counts.kept_referenced = candidates - counts.deleted


def _unreferenced(step: _Step, table: str) -> str:
    """No row of any table (ours or EFP Connect's own) references this row by a foreign key."""
    conditions: list[str] = []
    inspector = inspect(step.conn)
    foreign_keys = inspector.get_multi_foreign_keys()
    for (schema, referencing), keys in sorted(foreign_keys.items(), key=lambda item: str(item[0])):
        if schema is not None and schema != inspector.default_schema_name:
            continue
        for fk in keys:
            if fk["referred_table"] != table or fk.get("referred_schema") not in (None, schema):
                continue
            pairs = list(zip(fk["constrained_columns"], fk["referred_columns"], strict=True))
            if len(pairs) == 1:
                (column, referred), = pairs
                conditions.append(
                    step.absent_from(f"{table}.{referred}", referencing, column, other_nullable=True)
                )
            else:
                join = " AND ".join(f"x.{column} = {table}.{referred}" for column, referred in pairs)
                conditions.append(f"NOT EXISTS (SELECT 1 FROM {referencing} x WHERE {join})")
    return " AND ".join(conditions) if conditions else "true"


def _replace_exceptions(step: _Step) -> None:
    """This run's exceptions are replaced as a whole, so that re-running the run is idempotent."""
    counts = step.counts["migration_exceptions"]
    counts.deleted = step.execute(
        "DELETE FROM migration_exceptions WHERE run_id = :run_id", "delete migration_exceptions"
    )
    columns = _COLUMN_KINDS["exceptions"]
    with _indexes_rebuilt(step, "migration_exceptions", new_rows=counts.staged):
        counts.inserted = step.execute(
            f"INSERT INTO migration_exceptions (run_id, {', '.join(columns)}) "
            f"SELECT :run_id, {', '.join(f's.{c}' for c in columns)} FROM {_S_EXC} s",
            "insert migration_exceptions",
        )


# --- reading the target back ---------------------------------------------------------------

_STATE_ORDER: dict[str, tuple[str, ...]] = {
    "accounts": ("legacy_user_id", "login"),
    "establishments": ("siret",),
    "applications": ("code",),
    "entitlements": ("legacy_habilitation_id", "account_id", "application_code", "siret", "role"),
    "access_requests": ("legacy_habilitation_id", "account_id", "application_code", "siret", "requested_at"),
}


def read_target_state(engine: Engine) -> dict[str, pd.DataFrame]:
    """The target's tables, ordered by their keys (NULL keys last), with engine-neutral dtypes.

    Integers are Int64, booleans boolean, timestamps and dates datetime64[ns], text string:
    the same state reads back identically from SQLite and PostgreSQL.
    """
    state: dict[str, pd.DataFrame] = {}
    with engine.connect() as conn:
        for name in STATE_TABLES:
            table = target_metadata.tables[name]
            order: list[Any] = []
            for column_name in _STATE_ORDER[name]:
                column = table.c[column_name]
                # NULLs sort first on SQLite, last on PostgreSQL: make it explicit.
                order.extend((column.is_(None), column))
            rows = conn.execute(select(table).order_by(*order)).all()
            data = {
                column.name: pd.Series([row[i] for row in rows], dtype=_state_dtype(column.type))
                for i, column in enumerate(table.columns)
            }
            state[name] = pd.DataFrame(data, columns=[c.name for c in table.columns])
    return state


def _state_dtype(sql_type: Any) -> Any:
    python_type = sql_type.python_type
    if python_type is bool:
        return "boolean"
    if python_type is int:
        return "Int64"
    if python_type.__name__ in ("datetime", "date"):
        return "datetime64[ns]"
    return pd.StringDtype()
