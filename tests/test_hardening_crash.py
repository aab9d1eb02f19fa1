"""Crashes anywhere in a run: SIGKILL at every named point, then a plain rerun converges.

For each engine, every kill point gets its own target; the killed runs are real
`python -m pipelines run` processes with `EFP_KILL_AT` set, started ahead by a module fixture
(they are independent, so several run at once) while the uninterrupted reference run and the
reruns go in-process. Each
test then checks that its process died by SIGKILL, what the target holds right after the
crash, and that a rerun without the variable, into the same run folder, ends with the
reference's target (by natural keys, see tests/test_run.py) and the reference's reports
(reconciliation.json with run ids, times and locations normalised; the per-application CSV
byte for byte).

PostgreSQL only: the loading connection is cut mid-load by the server
(`pg_terminate_backend`); the target is exactly as before and a rerun converges.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pandas as pd
import pytest
from click.testing import CliRunner, Result
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from pipelines.cli import main
from pipelines.errors import MigrationError
from tests.conftest import _create_postgres_database
from tests.legacy_builders import write_csv_folder, write_database
from tests.test_hardening_inputs import dump_target
from tests.test_outcomes import _tables
from tests.test_run import assert_same_target, comparable

AS_OF = "2025-01-01T00:00:00"
BEFORE_LOAD = ("extract:done", "validate:done", "transform:done")
DURING_LOAD = ("load:batch#2", "load:staged", "load:step#3", "load:converged")
AFTER_LOAD = ("reconcile:start",)
POINTS = (*BEFORE_LOAD, *DURING_LOAD, *AFTER_LOAD)
ENGINES = [pytest.param("sqlite", marks=pytest.mark.sqlite), pytest.param("postgres", marks=pytest.mark.postgres)]


def run(source: str | Path, target: str, out: Path) -> Result:
    return CliRunner().invoke(main, ["run", "--source", str(source), "--target", target, "--out", str(out),
                                     "--as-of", AS_OF])


def normalised_report(out: Path) -> dict[str, Any]:
    """reconciliation.json without what legitimately differs between two runs of the same input:
    run ids, wall-clock times, where the run folder and target are, and the hashes of target
    rows (they include surrogate ids and the run that wrote each row)."""
    report = json.loads((out / "reconciliation.json").read_text(encoding="utf-8"))
    run_ids = {report["run_id"], report["header"]["run_id"]}

    def scrub(value: Any, key: str = "") -> Any:
        if isinstance(value, dict):
            return {k: scrub(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [scrub(v) for v in value]
        if key.endswith("_at") and value is not None:
            return "<time>"
        if isinstance(value, str) and value in run_ids:
            return "<run>"
        return value

    cleaned = scrub(report)
    cleaned["header"]["configuration"].pop("target")
    cleaned["header"]["configuration"].pop("out_dir")
    for evidence in cleaned["evidence"]["target"]:
        evidence.pop("sha256")
    return dict(cleaned)


# --- the killed runs, all started at once -------------------------------------------------------


@dataclass
class Crash:
    target: str
    out: Path
    process: subprocess.Popen[bytes]
    stderr: IO[bytes]

    def wait(self) -> int:
        code = self.process.wait(timeout=600)
        self.stderr.close()
        return code


@dataclass
class CrashLab:
    """Starts the killed runs ahead of the tests that check them, a few at a time (each is a
    whole Python process with pandas and Great Expectations: about 250 MB)."""

    legacy: Path
    folder: Path
    new_url: Callable[[str], str]
    pending: list[tuple[str, str]] = field(default_factory=list)
    crashes: dict[tuple[str, str], Crash] = field(default_factory=dict)
    references: dict[str, tuple[str, Path]] = field(default_factory=dict)
    window: int = max(4, 2 * (os.cpu_count() or 1))

    def crash(self, kind: str, point: str) -> Crash:
        if (kind, point) not in self.crashes:
            self.pending.remove((kind, point))
            self.start(kind, point)
        running = sum(crash.process.poll() is None for crash in self.crashes.values())
        while self.pending and running < self.window:
            self.start(*self.pending.pop(0))
            running += 1
        return self.crashes[kind, point]

    def start(self, kind: str, point: str) -> None:
        name = f"{kind}-{point.replace(':', '-').replace('#', '-')}"
        target, out = self.new_url(kind), self.folder / name
        stderr = (self.folder / f"{name}.stderr").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "pipelines", "run", "--source", str(self.legacy), "--target", target,
             "--out", str(out), "--as-of", AS_OF],
            env={**os.environ, "EFP_KILL_AT": point}, stdout=subprocess.DEVNULL, stderr=stderr)
        self.crashes[kind, point] = Crash(target, out, process, stderr)

    def reference(self, kind: str) -> tuple[str, Path]:
        if kind not in self.references:
            target, out = self.new_url(kind), self.folder / f"{kind}-reference"
            result = run(self.legacy, target, out)
            assert result.exit_code == 0, result.output
            self.references[kind] = (target, out)
        return self.references[kind]


@pytest.fixture(scope="module")
def lab(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CrashLab]:
    folder = tmp_path_factory.mktemp("crashes")
    counter = iter(range(1_000))

    def new_url(kind: str) -> str:
        if kind == "sqlite":
            return f"sqlite:///{folder / f'target{next(counter)}.sqlite'}"
        return _create_postgres_database(request.getfixturevalue("postgres_server_url"))

    lab = CrashLab(write_csv_folder(_tables(), folder / "legacy"), folder, new_url)
    # Only the engines and points of the tests actually selected (-m, -k), in their order.
    lab.pending = [(item.callspec.params["kind"], item.callspec.params["point"]) for item in request.session.items
                   if item.module is request.module and item.name.startswith("test_sigkill_at_")]
    yield lab
    for crash in lab.crashes.values():
        if crash.process.poll() is None:
            crash.process.kill()
        crash.wait()


def _ledger(url: str) -> tuple[list[tuple[str, str]], dict[str, str]]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            runs = [(row[0], row[1]) for row in conn.execute(text("SELECT run_id, status FROM migration_runs"))]
            stages = {row[0]: row[1] for row in conn.execute(text("SELECT stage, status FROM migration_run_stages"))}
    finally:
        engine.dispose()
    return runs, stages


@pytest.mark.slow
@pytest.mark.parametrize("point", POINTS)
@pytest.mark.parametrize("kind", ENGINES)
def test_sigkill_at_any_point_then_rerun_converges(lab: CrashLab, kind: str, point: str) -> None:
    crash = lab.crash(kind, point)
    reference_target, reference_out = lab.reference(kind)

    code = crash.wait()

    assert code == -signal.SIGKILL, (crash.out.parent / f"{crash.out.name}.stderr").read_text()
    crashed_run = None
    if point in BEFORE_LOAD:
        assert dump_target(crash.target) == {}, "nothing is written before the load"
    else:
        runs, stages = _ledger(crash.target)
        assert [status for _run, status in runs] == ["running"]
        crashed_run = runs[0][0]
        if point in DURING_LOAD:
            assert stages["load"] == "running"
            half = comparable(crash.target)
            for name in ("accounts", "entitlements", "access_requests", "establishments", "applications"):
                assert half[name].empty, f"{name}: rows of a load that never committed"
        else:
            assert stages["load"] == "succeeded"
            assert_same_target(crash.target, reference_target)

    rerun = run(lab.legacy, crash.target, crash.out)

    assert rerun.exit_code == 0, rerun.output
    if crashed_run:
        assert f"run {crashed_run}" in rerun.output  # the unfinished run was resumed
    runs, stages = _ledger(crash.target)
    assert [status for _run, status in runs] == ["succeeded"]
    assert set(stages.values()) <= {"succeeded", "passed"}
    assert_same_target(crash.target, reference_target)
    assert normalised_report(crash.out) == normalised_report(reference_out)
    assert (crash.out / "reconciliation_by_application.csv").read_bytes() == (
        reference_out / "reconciliation_by_application.csv").read_bytes()
    verify = CliRunner().invoke(main, ["verify", str(crash.out)])
    assert verify.exit_code == 0, verify.output
    # What the killed run left behind is taken over, and the log says so: on SQLite its lock
    # file (taken before validating), on PostgreSQL its ledger entry (recorded before loading).
    takeovers = [json.loads(line)["message"] for line in
                 (crash.out / "run.log.jsonl").read_text(encoding="utf-8").splitlines() if "taking over" in line]
    left_something = point != "extract:done" if kind == "sqlite" else point not in BEFORE_LOAD
    assert len(takeovers) == (1 if left_something else 0), takeovers


# --- PostgreSQL: the server cuts the loading connection ---------------------------------------------


@pytest.mark.postgres
def test_connection_cut_mid_load_rolls_back_and_rerun_converges(
    new_database_url: Callable[[str], str], tmp_path: Path
) -> None:
    """A target holding a first wave; the second wave's load loses its connection (terminated
    by the server) after its first staged batch."""
    from pipelines.load import LoadConfig, load, read_target_state
    from tests.test_run import _wave_two

    target, fresh = new_database_url("postgres"), new_database_url("postgres")
    legacy = write_database(_tables(), new_database_url("sqlite"))
    assert run(legacy, target, tmp_path / "wave1").exit_code == 0
    wave_two = _transformed(_wave_two())
    engine = create_engine(target)
    before = read_target_state(engine)
    calls: list[str] = []

    def cut(step: str, _rows: int) -> None:
        calls.append(step)
        if len(calls) == 1:
            killer = create_engine(target, isolation_level="AUTOCOMMIT")
            with killer.connect() as conn:
                killed = conn.execute(text(
                    "SELECT count(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()")).scalar_one()
            killer.dispose()
            assert killed == 1

    try:
        with pytest.raises((DBAPIError, MigrationError), match="connection"):
            load(engine, wave_two, LoadConfig(run_id="RUN-CUT"), progress=cut)
        assert len(calls) == 1
        after = read_target_state(engine)
        for name, frame in before.items():
            pd.testing.assert_frame_equal(frame, after[name], obj=name)

        load(engine, wave_two, LoadConfig(run_id="RUN-AGAIN"))
    finally:
        engine.dispose()
    fresh_engine = create_engine(fresh)
    try:
        load(fresh_engine, wave_two, LoadConfig(run_id="RUN-FRESH"))
    finally:
        fresh_engine.dispose()
    assert_same_target(target, fresh)


def _transformed(tables: dict[str, list[dict[str, Any]]]) -> Any:
    import datetime as dt

    from mappings.mapping import load_mapping
    from pipelines.transform import transform
    from pipelines.validate import ValidateConfig, validate
    from tests.legacy_builders import to_frames

    frames = to_frames(tables)
    validated = validate(frames, ValidateConfig(as_of=dt.datetime(2025, 1, 1), mapping=load_mapping()))
    return transform(frames, validated).target


@pytest.mark.postgres
def test_connection_cut_during_a_run_is_one_line_exit_2_and_the_rerun_resumes(
    new_database_url: Callable[[str], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`efp-migrate run` of a second wave whose database sessions are all terminated by the
    server after the load's first staged batch (as a server restart or a network cut would)."""
    import pipelines.load
    from pipelines.load import read_target_state
    from tests.test_run import _wave_two

    target, fresh = new_database_url("postgres"), new_database_url("postgres")
    legacy = write_database(_tables(), new_database_url("sqlite"))
    assert run(legacy, target, tmp_path / "wave1").exit_code == 0
    wave_two = write_csv_folder(_wave_two(), tmp_path / "legacy2")
    engine = create_engine(target)
    before = read_target_state(engine)
    engine.dispose()
    report = pipelines.load._Step.report
    calls: list[str] = []

    def cut_then_report(step: Any, what: str, rows: int) -> None:
        calls.append(what)
        if len(calls) == 1:
            killer = create_engine(target, isolation_level="AUTOCOMMIT")
            with killer.connect() as conn:
                conn.execute(text("SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
                                  "WHERE datname = current_database() AND pid <> pg_backend_pid()"))
            killer.dispose()
        report(step, what, rows)

    monkeypatch.setattr(pipelines.load._Step, "report", cut_then_report)
    cut = run(wave_two, target, tmp_path / "wave2")
    monkeypatch.undo()

    assert cut.exit_code == 2, cut.output
    assert cut.stdout == ""
    assert cut.stderr.startswith("error: "), cut.stderr
    assert cut.stderr.count("\n") == 1, cut.stderr
    assert "Traceback" not in cut.output
    engine = create_engine(target)
    after = read_target_state(engine)
    engine.dispose()
    for name, frame in before.items():
        pd.testing.assert_frame_equal(frame, after[name], obj=name)

    rerun = run(wave_two, target, tmp_path / "wave2")
    assert rerun.exit_code == 0, rerun.output
    assert "resuming unfinished run" in rerun.output
    assert run(wave_two, fresh, tmp_path / "fresh").exit_code == 0
    assert_same_target(target, fresh)
    resumed, reference = normalised_report(tmp_path / "wave2"), normalised_report(tmp_path / "fresh")
    for key in ("verdict", "applications", "outcomes"):  # the register itself keeps wave 1's rows
        assert resumed[key] == reference[key], key
