"""Two runs against one target, on SQLite and PostgreSQL, with the holder a real second process.

A small Python process takes the run lock (`pipelines.ledger.target_lock`) and sleeps; while it
holds it, `efp-migrate run` is refused at once (exit 2) with a message naming the holder's run
and pid, before validating or writing anything. Once the holder is SIGKILLed, its lock never
blocks the next run, and the takeover of what it left behind is logged in the run's log.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from pipelines.cli import main
from tests.legacy_builders import write_csv_folder
from tests.test_hardening_inputs import dump_target
from tests.test_outcomes import _tables

AS_OF = "2025-01-01T00:00:00"
HOLDER = """
import os, sys, time
if len(sys.argv) > 3:
    os.getpid = lambda: int(sys.argv[3])  # a large pid, as on hosts with pid_max = 4194304
from pipelines.db import make_engine
from pipelines.ledger import target_lock
engine = make_engine(sys.argv[1])
with target_lock(engine, sys.argv[2]):
    print("held", flush=True)
    time.sleep(120)
"""


def run(source: Path, target: str, out: Path) -> Result:
    return CliRunner().invoke(main, ["run", "--source", str(source), "--target", target, "--out", str(out),
                                     "--as-of", AS_OF])


def log_messages(out: Path) -> list[str]:
    lines = (out / "run.log.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["message"] for line in lines]


class Holder:
    """A second process holding the target's run lock until it is killed."""

    def __init__(self, target: str, run_id: str, *pid: str) -> None:
        self.process = subprocess.Popen([sys.executable, "-c", HOLDER, target, run_id, *pid],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line == b"held\n", self.process.stderr.read() if self.process.stderr else line

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        assert self.process.wait(timeout=30) == -signal.SIGKILL

    def close(self) -> None:
        if self.process.poll() is None:
            self.kill()
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def holders() -> Iterator[list[Holder]]:
    started: list[Holder] = []
    yield started
    for holder in started:
        holder.close()


@pytest.fixture
def legacy_csv(tmp_path: Path) -> Path:
    return write_csv_folder(_tables(), tmp_path / "legacy")


def test_second_run_is_refused_while_a_live_process_holds_the_target_then_proceeds_once_it_is_killed(
    legacy_csv: Path, target_url: str, tmp_path: Path, holders: list[Holder], engine_kind: str
) -> None:
    holder = Holder(target_url, "RUN-X")
    holders.append(holder)

    refused = run(legacy_csv, target_url, tmp_path / "refused")

    assert refused.exit_code == 2, refused.output
    assert refused.stderr == (f"error: the target is being written by run RUN-X (pid {holder.process.pid}); "
                              "wait for it to finish (see `efp-migrate status`)\n")
    assert "Traceback" not in refused.output
    assert dump_target(target_url) == {}  # refused before anything was written
    # ... and before validating: no stewards' reports in the refused run's folder.
    assert sorted(p.name for p in (tmp_path / "refused").iterdir()) == ["run.log.jsonl"]

    holder.kill()
    after = run(legacy_csv, target_url, tmp_path / "after")

    assert after.exit_code == 0, after.output
    if engine_kind == "sqlite":
        # The lock file outlived its holder: taken over, and said so.
        takeovers = [m for m in log_messages(tmp_path / "after") if m.startswith("taking over a stale lock")]
        assert len(takeovers) == 1
        assert '"run_id": "RUN-X"' in takeovers[0]
        assert f'"pid": {holder.process.pid}' in takeovers[0]


@pytest.mark.postgres
def test_holder_with_a_large_pid_and_full_length_run_id_is_still_named(
    new_database_url: Callable[[str], str], holders: list[Holder], legacy_csv: Path, tmp_path: Path
) -> None:
    """PostgreSQL keeps the holder record in application_name, at most 63 bytes."""
    target = new_database_url("postgres")
    run_id = "20250101T000000-abcdef"
    holders.append(Holder(target, run_id, "4194303"))

    refused = run(legacy_csv, target, tmp_path / "refused")

    assert refused.exit_code == 2
    assert f"run {run_id} (pid 4194303)" in refused.stderr


def test_a_run_killed_while_holding_the_target_does_not_block_the_next_and_the_takeover_is_logged(
    legacy_csv: Path, target_url: str, tmp_path: Path
) -> None:
    """A real run SIGKILLed during its load (it holds the lock and has recorded itself in the
    ledger); the next run, with another input so that it does not resume the killed one."""
    killed = subprocess.run(
        [sys.executable, "-m", "pipelines", "run", "--source", str(legacy_csv), "--target", target_url,
         "--out", str(tmp_path / "killed"), "--as-of", AS_OF],
        env={**os.environ, "EFP_KILL_AT": "load:staged"}, capture_output=True, timeout=300, check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()
    killed_run = next(json.loads(line)["run_id"] for line in
                      (tmp_path / "killed" / "run.log.jsonl").read_text(encoding="utf-8").splitlines())
    tables = _tables()
    tables["utilisateurs"][0]["nom"] = "Durand"
    other_input = write_csv_folder(tables, tmp_path / "legacy2")

    after = run(other_input, target_url, tmp_path / "after")

    assert after.exit_code == 0, after.output
    takeovers = [m for m in log_messages(tmp_path / "after") if m.startswith("taking over")]
    assert len(takeovers) == 1, log_messages(tmp_path / "after")
    assert killed_run in takeovers[0]


@pytest.mark.postgres
def test_lock_session_survives_a_server_idle_session_timeout(new_database_url: Callable[[str], str]) -> None:
    """A database whose sessions are closed after 1 s idle (`idle_session_timeout`, as DBAs set
    it): the run lock, held by an idle session for the whole run, must not silently vanish."""
    import time

    from sqlalchemy import create_engine, text

    from pipelines.db import make_engine
    from pipelines.ledger import target_lock

    target = new_database_url("postgres")
    admin = create_engine(target, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        if conn.execute(text("SELECT current_setting('server_version_num')::int")).scalar_one() < 140000:
            pytest.skip("idle_session_timeout exists from PostgreSQL 14")
        conn.execute(text(f'ALTER DATABASE "{conn.engine.url.database}" SET idle_session_timeout = \'1s\''))
    engine = make_engine(target)
    try:
        with target_lock(engine, "RUN-IDLE"):
            time.sleep(2.5)
            with admin.connect() as conn:
                holders = conn.execute(text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted")).scalar_one()
            assert holders == 1, "the lock was lost while the run still believed it held the target"
    finally:
        engine.dispose()
        admin.dispose()


@pytest.mark.postgres
def test_a_lost_lock_session_is_reported_not_raised(new_database_url: Callable[[str], str],
                                                    caplog: pytest.LogCaptureFixture) -> None:
    """The lock's session is terminated while the run (here, an empty body) goes on: the run's
    outcome stands, and the log warns that the target was unguarded."""
    import logging

    from sqlalchemy import create_engine, text

    from pipelines.db import make_engine
    from pipelines.ledger import target_lock

    target = new_database_url("postgres")
    engine, admin = make_engine(target), create_engine(target, isolation_level="AUTOCOMMIT")
    try:
        with (caplog.at_level(logging.WARNING, logger="pipelines.ledger"), target_lock(engine, "RUN-LOST"),
              admin.connect() as conn):
            # Waits (up to 5 s) until the lock's session is gone.
            conn.execute(text("SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
                              "WHERE datname = current_database() AND pid <> pg_backend_pid()"))
    finally:
        engine.dispose()
        admin.dispose()
    warnings = [r.getMessage() for r in caplog.records if r.name == "pipelines.ledger"]
    assert len(warnings) == 1
    assert warnings[0].startswith("the session holding the run lock ended before run RUN-LOST did")
