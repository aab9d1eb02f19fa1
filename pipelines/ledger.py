"""The run ledger (in the target) and the lock that keeps two runs from writing one target.

The lock is held by the operating system or the database session, never by a row alone, so
that a killed run cannot leave a lock behind: on SQLite an flock on a file beside the
database (released by the kernel when the process dies), on PostgreSQL a session-level
advisory lock (released when the session ends). The holder is named in a side record so that
a refused run can say who holds the target: the lock file's content on SQLite, the session's
application_name on PostgreSQL.

A run that takes the lock says in its log what a killed holder left behind: on SQLite the lock
file still naming it, on PostgreSQL (where the server forgets a dead session's lock) the
ledger entries still "running".
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Connection, Engine, inspect, select, text
from sqlalchemy.exc import DBAPIError

from pipelines.db import mask_text
from pipelines.errors import TargetBusyError
from pipelines.target_schema import migration_run_stages, migration_runs

log = logging.getLogger(__name__)
_ADVISORY_KEY = 0x4546_5043  # "EFPC"
_APPLICATION_PREFIX = "efp-migrate "
_APPLICATION_NAME_BYTES = 63  # PostgreSQL's NAMEDATALEN - 1


@dataclass(frozen=True)
class LockHolder:
    run_id: str
    pid: int
    hostname: str


@contextlib.contextmanager
def target_lock(engine: Engine, run_id: str) -> Iterator[None]:
    """Holds the target for one run; refuses at once if another live run holds it."""
    if engine.dialect.name == "sqlite":
        with _sqlite_lock(engine, run_id):
            yield
    elif engine.dialect.name == "postgresql":
        with _postgres_lock(engine, run_id):
            yield
    else:
        log.warning("no run lock on %s targets: make sure a single run writes it", engine.dialect.name)
        yield


def _lock_path(engine: Engine) -> Path | None:
    database = engine.url.database
    if not database or database == ":memory:":
        return None
    return Path(database).with_name(Path(database).name + ".efp-lock")


@contextlib.contextmanager
def _sqlite_lock(engine: Engine, run_id: str) -> Iterator[None]:
    path = _lock_path(engine)
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    handle: IO[str] = path.open("a+", encoding="utf-8")
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            raise TargetBusyError(_busy_message(handle.read())) from None
        handle.seek(0)
        previous = handle.read()
        if previous.strip():
            # The file outlived a killed run; the kernel released its lock, so it is stale.
            log.warning("taking over a stale lock left by %s", previous.strip())
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"run_id": run_id, "pid": os.getpid(), "hostname": socket.gethostname()}))
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            handle.flush()
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    finally:
        handle.close()


@contextlib.contextmanager
def _postgres_lock(engine: Engine, run_id: str) -> Iterator[None]:
    connection = engine.connect()
    try:
        # PostgreSQL keeps at most 63 bytes of application_name: compact JSON, so that a
        # 22-character run id and a 7-digit pid still fit whole (57 characters).
        record = json.dumps({"run_id": run_id, "pid": os.getpid()}, separators=(",", ":"))
        application_name = f"{_APPLICATION_PREFIX}{record}"
        connection.execute(text("SELECT set_config('application_name', :name, false)"),
                           {"name": application_name.encode()[:_APPLICATION_NAME_BYTES].decode(errors="ignore")})
        _keep_session_alive(connection)
        got = connection.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": _ADVISORY_KEY}).scalar()
        connection.commit()
        if not got:
            holder = connection.execute(
                text("SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                     "WHERE l.locktype = 'advisory' AND l.objid = :key AND l.granted LIMIT 1"),
                {"key": _ADVISORY_KEY},
            ).scalar()
            raise TargetBusyError(_busy_message((holder or "").removeprefix(_APPLICATION_PREFIX)))
        # The server released the lock of any session that died; what such a run leaves is its
        # ledger entry, still "running": say that the target is taken over from it.
        _log_unfinished_runs(connection)
        connection.commit()
        try:
            yield
        except BaseException:
            _postgres_unlock(connection, run_id, failed=True)  # never hides what ended the run
            raise
        _postgres_unlock(connection, run_id, failed=False)
    finally:
        connection.close()


def _postgres_unlock(connection: Connection, run_id: str, *, failed: bool) -> None:
    try:
        connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _ADVISORY_KEY})
        connection.commit()
    except DBAPIError as exc:
        reason = mask_text(str(exc.orig or exc).strip().splitlines()[0])
        if failed:
            log.debug("run lock session of %s already gone: %s", run_id, reason)
        else:
            log.warning("the session holding the run lock ended before run %s did (%s): another run may have "
                        "written the target meanwhile", run_id, reason)


def _keep_session_alive(connection: Connection) -> None:
    """The lock's session sits idle for the whole run: no server idle timeout may end it (and
    silently release the lock), and a client that died without closing it (a crashed host) is
    noticed within about a minute instead of the system's two hours of TCP keepalive."""
    settings = {"tcp_keepalives_idle": "30", "tcp_keepalives_interval": "10", "tcp_keepalives_count": "3"}
    if int(connection.execute(text("SELECT current_setting('server_version_num')")).scalar_one()) >= 140000:
        settings["idle_session_timeout"] = "0"
    for name, value in settings.items():
        connection.execute(text("SELECT set_config(:name, :value, false)"), {"name": name, "value": value})


def _log_unfinished_runs(connection: Connection) -> None:
    if not inspect(connection).has_table(migration_runs.name):
        return
    rows = connection.execute(
        select(migration_runs.c.run_id, migration_runs.c.started_at)
        .where(migration_runs.c.status == "running").order_by(migration_runs.c.started_at)
    ).all()
    for row in rows:
        log.warning("taking over the target from run %s (started %s), which stopped without finishing: "
                    "its session is gone", row.run_id, row.started_at)


def _busy_message(holder_record: str) -> str:
    try:
        holder = json.loads(holder_record)
        who = f"run {holder.get('run_id')} (pid {holder.get('pid')})"
    except (ValueError, AttributeError):
        who = "another run"
    return f"the target is being written by {who}; wait for it to finish (see `efp-migrate status`)"


# --- the ledger ----------------------------------------------------------------------------


def find_resumable_run(engine: Engine, fingerprint: str, options: dict[str, Any]) -> tuple[str, datetime] | None:
    """An earlier run of the same input and options that did not finish: it is resumed, not restarted."""
    with engine.connect() as conn:
        row = conn.execute(
            select(migration_runs.c.run_id, migration_runs.c.as_of)
            .where(migration_runs.c.input_fingerprint == fingerprint)
            .where(migration_runs.c.options == json.dumps(options, sort_keys=True))
            .where(migration_runs.c.status.in_(("running", "failed")))
            .order_by(migration_runs.c.started_at.desc())
            .limit(1)
        ).first()
    return (row.run_id, row.as_of) if row else None


def record_run(conn: Connection, *, run_id: str, as_of: datetime, source: str, fingerprint: str,
               options: dict[str, Any], started_at: datetime, out_dir: str) -> None:
    existing = conn.execute(select(migration_runs.c.run_id).where(migration_runs.c.run_id == run_id)).first()
    if existing:
        conn.execute(migration_runs.update().where(migration_runs.c.run_id == run_id)
                     .values(status="running", ended_at=None))
        return
    conn.execute(migration_runs.insert().values(
        run_id=run_id, as_of=as_of, source=source, input_fingerprint=fingerprint,
        options=json.dumps(options, sort_keys=True), status="running", started_at=started_at, out_dir=out_dir,
    ))


def finish_run(engine: Engine, run_id: str, status: str, ended_at: datetime) -> None:
    with engine.begin() as conn:
        conn.execute(migration_runs.update().where(migration_runs.c.run_id == run_id)
                     .values(status=status, ended_at=ended_at))


def record_stage(engine_or_conn: Engine | Connection, *, run_id: str, stage: str, status: str,
                 started_at: datetime, ended_at: datetime | None, fingerprint: str | None,
                 result: dict[str, Any] | None) -> None:
    payload = json.dumps(result, sort_keys=True, default=str) if result is not None else None

    def write(conn: Connection) -> None:
        conn.execute(migration_run_stages.delete().where(migration_run_stages.c.run_id == run_id)
                     .where(migration_run_stages.c.stage == stage))
        conn.execute(migration_run_stages.insert().values(
            run_id=run_id, stage=stage, status=status, started_at=started_at, ended_at=ended_at,
            input_fingerprint=fingerprint, result=payload))

    if isinstance(engine_or_conn, Connection):
        write(engine_or_conn)
    else:
        with engine_or_conn.begin() as conn:
            write(conn)


def list_runs(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        runs = conn.execute(select(migration_runs).order_by(migration_runs.c.started_at)).mappings().all()
        stages = conn.execute(select(migration_run_stages).order_by(migration_run_stages.c.started_at)
                              ).mappings().all()
    by_run: dict[str, list[dict[str, Any]]] = {}
    for stage in stages:
        by_run.setdefault(stage["run_id"], []).append(
            {k: stage[k] for k in ("stage", "status", "started_at", "ended_at")})
    return [{**{k: run[k] for k in ("run_id", "status", "as_of", "started_at", "ended_at", "source")},
             "stages": by_run.get(run["run_id"], [])} for run in runs]
