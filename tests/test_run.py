"""`efp-migrate run` end to end, on SQLite and PostgreSQL targets.

The legacy extract is the one of tests/test_outcomes.py (every reason code at least once),
written as a CSV folder whose users all carry the password hash `$2b$12$SECRETHASHSECRETHASH`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from click.testing import CliRunner, Result
from sqlalchemy import create_engine, text

from pipelines.cli import main
from pipelines.load import read_target_state
from tests.legacy_builders import write_csv_folder, write_database
from tests.test_outcomes import _tables

AS_OF = "2025-01-01T00:00:00"
HASH = "$2b$12$SECRETHASHSECRETHASH"
# Bookkeeping that legitimately differs between two runs of the same input.
RUN_COLUMNS = ("created_by_run", "written_by_run")
SURROGATES = ("account_id", "entitlement_id", "request_id")


def run(source: str | Path, target: str, out: Path, *extra: str) -> Result:
    return CliRunner().invoke(main, ["run", "--source", str(source), "--target", target, "--out", str(out),
                                     "--as-of", AS_OF, *extra])


def state(url: str, *, drop: tuple[str, ...] = RUN_COLUMNS) -> dict[str, pd.DataFrame]:
    engine = create_engine(url)
    try:
        tables = read_target_state(engine)
    finally:
        engine.dispose()
    return {name: frame.drop(columns=[c for c in drop if c in frame.columns]).reset_index(drop=True)
            for name, frame in tables.items()}


def comparable(url: str) -> dict[str, pd.DataFrame]:
    """The target by natural keys: surrogate ids replaced by the legacy ids they stand for."""
    tables = state(url, drop=RUN_COLUMNS)
    accounts = tables["accounts"]
    legacy_of = dict(zip(accounts["account_id"], accounts["legacy_user_id"], strict=True))
    for name in ("entitlements", "access_requests"):
        tables[name]["account_id"] = tables[name]["account_id"].map(legacy_of)
    keys = {"accounts": "legacy_user_id", "entitlements": "legacy_habilitation_id",
            "access_requests": "legacy_habilitation_id", "establishments": "siret", "applications": "code"}
    return {name: tables[name].drop(columns=[c for c in SURROGATES if c in tables[name].columns])
            .sort_values(keys[name]).reset_index(drop=True) for name in keys}


def assert_same_target(left: str, right: str) -> None:
    a, b = comparable(left), comparable(right)
    for name in a:
        pd.testing.assert_frame_equal(a[name], b[name], check_dtype=False, obj=name)


@pytest.fixture
def legacy_csv(tmp_path: Path) -> Path:
    return write_csv_folder(_tables(), tmp_path / "legacy")


def test_run_migrates_reconciles_and_never_carries_the_hash(legacy_csv: Path, target_url: str,
                                                             tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = run(legacy_csv, target_url, out)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "reconciliation.json").read_text())
    assert report["verdict"] == "RECONCILED_WITH_EXCEPTIONS"
    for entity, counts in report["outcomes"].items():
        assert counts["source"] == counts["migrated"] + counts["excluded"] + counts["rejected"] + counts["merged"], entity
    # No native account in this target: user 9 is migrated here (LOGIN_TAKEN needs one).
    assert report["outcomes"]["user"] == {"source": 14, "migrated": 5, "excluded": 2, "rejected": 7, "merged": 0}
    tables = state(target_url)
    accounts = tables["accounts"]
    assert sorted(accounts["legacy_user_id"]) == [1, 8, 9, 10, 12]
    assert accounts["must_reset_password"].astype(bool).all()
    assert accounts["password_hash"].isna().all()
    assert set(accounts["origin"]) == {"MIGRATION"}
    assert oct(out.stat().st_mode & 0o777) == "0o700"
    for path in out.rglob("*"):  # owner-only, files and folders alike
        assert path.stat().st_mode & 0o077 == 0, path
    # The legacy hash is nowhere: not in the run folder, not in the target.
    for path in out.rglob("*"):
        if path.is_file():
            assert HASH.encode() not in path.read_bytes(), path
    for frame in state(target_url, drop=()).values():
        assert not frame.astype(str).apply(lambda column: column.str.contains("SECRETHASH", regex=False)).any().any()


def test_rerun_of_same_input_changes_nothing(legacy_csv: Path, target_url: str, tmp_path: Path) -> None:
    assert run(legacy_csv, target_url, tmp_path / "first").exit_code == 0
    before = state(target_url, drop=())
    second = run(legacy_csv, target_url, tmp_path / "second")
    assert second.exit_code == 0, second.output
    after = state(target_url, drop=())
    for name in before:  # same account ids, and rows nobody changed keep the run that wrote them
        pd.testing.assert_frame_equal(before[name], after[name], obj=name)


def _wave_two() -> dict[str, list[dict[str, Any]]]:
    """A later snapshot: user 1 renamed, user 12 deleted, user 15 new, habilitation 126 revoked,
    habilitation 130 new (for the new user), 115 changes role label spelling only."""
    tables = _tables()
    for user in tables["utilisateurs"]:
        if user["id_utilisateur"] == 1:
            user["nom"] = "Martin-Durand"
        if user["id_utilisateur"] == 12:
            user["statut"] = "SUPPRIME"
    tables["utilisateurs"].append({**tables["utilisateurs"][0], "id_utilisateur": 15,
                                   "courriel": "eve@example.fr", "telephone": None})
    for habilitation in tables["habilitations"]:
        if habilitation["id_habilitation"] == 126:
            habilitation["statut"] = "REVOQUEE"
    tables["habilitations"].append({**tables["habilitations"][0], "id_habilitation": 130, "id_utilisateur": 15,
                                    "code_application": "DECA", "role": None, "responsable_acces": False})
    return tables


def test_delta_snapshot_converges(legacy_csv: Path, new_database_url: Callable[[str], str], engine_kind: str,
                                  tmp_path: Path) -> None:
    waved = new_database_url(engine_kind)
    fresh = new_database_url(engine_kind)
    assert run(legacy_csv, waved, tmp_path / "wave1").exit_code == 0
    wave_two = write_csv_folder(_wave_two(), tmp_path / "legacy2")
    second = run(wave_two, waved, tmp_path / "wave2")
    assert second.exit_code == 0, second.output
    assert run(wave_two, fresh, tmp_path / "fresh").exit_code == 0
    assert_same_target(waved, fresh)
    accounts = state(waved)["accounts"].set_index("legacy_user_id")
    assert accounts.at[1, "last_name"] == "Martin-Durand"
    assert 12 not in accounts.index
    assert 15 in accounts.index


def test_database_source_and_csv_variants_give_the_same_target(
    new_database_url: Callable[[str], str], engine_kind: str, tmp_path: Path
) -> None:
    tables = _tables()
    from_database = new_database_url("sqlite")
    legacy_db = write_database(tables, new_database_url(engine_kind))
    assert run(legacy_db, from_database, tmp_path / "db").exit_code == 0
    variants = [("utf-8", ";"), ("utf-8-sig", ","), ("cp1252", ";"), ("cp1252", ",")]
    for encoding, delimiter in variants:
        folder = write_csv_folder(tables, tmp_path / f"csv-{encoding}-{delimiter!r}", delimiter=delimiter,
                                  encoding=encoding)
        target = new_database_url("sqlite")
        result = run(folder, target, tmp_path / f"out-{encoding}-{delimiter!r}")
        assert result.exit_code == 0, result.output
        assert_same_target(from_database, target)


def test_sigkill_during_load_then_rerun_converges(legacy_csv: Path, new_database_url: Callable[[str], str],
                                                  engine_kind: str, tmp_path: Path) -> None:
    crashed = new_database_url(engine_kind)
    reference = new_database_url(engine_kind)
    assert run(legacy_csv, reference, tmp_path / "reference").exit_code == 0
    command = [sys.executable, "-m", "pipelines", "run", "--source", str(legacy_csv), "--target", crashed,
               "--out", str(tmp_path / "crashed"), "--as-of", AS_OF]
    killed = subprocess.run(command, env={**os.environ, "EFP_KILL_AT": "load:staged"}, capture_output=True,
                            timeout=300, check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()
    half = state(crashed)
    assert half["accounts"].empty  # nothing of the load survived
    assert half["entitlements"].empty
    engine = create_engine(crashed)
    with engine.connect() as conn:
        ledger_status = conn.execute(text("SELECT status FROM migration_run_stages WHERE stage = 'load'")).scalar()
        crashed_run = conn.execute(text("SELECT run_id FROM migration_runs")).scalar()
    engine.dispose()
    assert ledger_status == "running"
    rerun = run(legacy_csv, crashed, tmp_path / "crashed")
    assert rerun.exit_code == 0, rerun.output
    assert f"run {crashed_run}" in rerun.output  # the unfinished run was resumed, not restarted
    assert_same_target(crashed, reference)


def test_second_run_on_a_busy_target_is_refused(legacy_csv: Path, target_url: str, tmp_path: Path) -> None:
    from pipelines.db import make_engine
    from pipelines.ledger import target_lock

    engine = make_engine(target_url)
    try:
        with target_lock(engine, "20250101T000000-holder"):
            result = run(legacy_csv, target_url, tmp_path / "second")
    finally:
        engine.dispose()
    assert result.exit_code == 2
    assert "20250101T000000-holder" in result.output
    # Refused before anything was written: not even the schema.
    inspector_engine = create_engine(target_url)
    from sqlalchemy import inspect

    assert "accounts" not in inspect(inspector_engine).get_table_names()
    inspector_engine.dispose()


def test_native_rows_are_never_touched(legacy_csv: Path, target_url: str, tmp_path: Path) -> None:
    from pipelines.target_setup import init_target

    engine = create_engine(target_url)
    init_target(engine)
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO accounts (legacy_user_id, login, email, last_name, first_name, account_type, status, "
            "must_reset_password, created_at, origin) VALUES (NULL, 'native@example.fr', 'Native@Example.fr', "
            "'Natif', 'Nina', 'PRO', 'ACTIVE', false, '2024-12-01 10:00:00', 'NATIVE')"))
        conn.execute(text("INSERT INTO establishments (siret, siren, name, origin) "
                          "VALUES ('73282932000074', '732829320', 'Nom natif', 'NATIVE')"))
        conn.execute(text("INSERT INTO applications (code, name, origin) VALUES ('EDOF', 'EDOF natif', 'NATIVE')"))
        conn.execute(text(
            "INSERT INTO entitlements (account_id, application_code, siret, role, is_access_manager, valid_from, "
            "origin) SELECT account_id, 'EDOF', '73282932000074', 'GESTIONNAIRE_EDOF', true, "
            "'2024-12-01 10:00:00', 'NATIVE' FROM accounts WHERE login = 'native@example.fr'"))
    engine.dispose()
    before = {name: frame[frame["origin"] == "NATIVE"].reset_index(drop=True)
              for name, frame in state(target_url, drop=()).items()}
    result = run(legacy_csv, target_url, tmp_path / "run")
    assert result.exit_code == 0, result.output
    after = {name: frame[frame["origin"] == "NATIVE"].reset_index(drop=True)
             for name, frame in state(target_url, drop=()).items()}
    for name, frame in before.items():
        pd.testing.assert_frame_equal(frame, after[name], obj=name)
    report = json.loads((tmp_path / "run" / "reconciliation.json").read_text())
    assert report["verdict"] == "RECONCILED_WITH_EXCEPTIONS"


def test_each_stage_as_its_own_command_gives_the_same_target(
    legacy_csv: Path, new_database_url: Callable[[str], str], engine_kind: str, tmp_path: Path
) -> None:
    """The run checks foreign keys set-based, the load command per row: same target either way."""
    by_run = new_database_url(engine_kind)
    by_stages = new_database_url(engine_kind)
    whole = run(legacy_csv, by_run, tmp_path / "run", "--json", "--fk-checks", "set")
    assert whole.exit_code == 0, whole.output
    out = str(tmp_path / "stages")
    runner = CliRunner()
    for args in (["extract", "--source", str(legacy_csv), "--out", out],
                 ["validate", "--out", out, "--as-of", AS_OF, "--target", by_stages],
                 ["transform", "--out", out],
                 ["load", "--target", by_stages, "--out", out, "--fk-checks", "per-row"]):
        result = runner.invoke(main, args)
        assert result.exit_code == 0, (args, result.output)
    assert_same_target(by_run, by_stages)
    on_postgres = engine_kind == "postgres"
    assert json.loads(whole.output)["stages"]["load"]["set_checked"] == (
        ["entitlements", "access_requests"] if on_postgres else [])
    assert json.loads(result.output)["set_checked"] == []
    status = runner.invoke(main, ["status", "--target", by_stages])
    assert status.exit_code == 0
    assert '"stage": "load"' in status.output


def test_rollback_removes_what_the_run_created(legacy_csv: Path, target_url: str, tmp_path: Path) -> None:
    result = run(legacy_csv, target_url, tmp_path / "run", "--json")
    assert result.exit_code == 0, result.output
    run_id = json.loads(result.output)["run_id"]
    engine = create_engine(target_url)
    with engine.begin() as conn:  # someone logged in: the reset is done, a password exists
        conn.execute(text("UPDATE accounts SET must_reset_password = false, password_hash = 'x' "
                          "WHERE legacy_user_id = 1"))
    engine.dispose()
    refused = CliRunner().invoke(main, ["rollback", "--target", target_url, "--run", run_id])
    assert refused.exit_code == 2
    assert "have been used" in refused.output
    assert not state(target_url)["accounts"].empty
    forced = CliRunner().invoke(main, ["rollback", "--target", target_url, "--run", run_id, "--force"])
    assert forced.exit_code == 0, forced.output
    after = state(target_url)
    for name in ("accounts", "entitlements", "access_requests", "establishments", "applications"):
        assert after[name].empty, name


def test_the_load_commits_only_once_the_stewards_reports_are_written(legacy_csv: Path, target_url: str,
                                                                     tmp_path: Path) -> None:
    """The reports are written beside the load: when they cannot be, nothing is loaded."""
    out = tmp_path / "run"
    (out / "exceptions.csv" / "in-the-way").mkdir(parents=True)  # the workbook cannot take its place
    failed = run(legacy_csv, target_url, out)
    assert isinstance(failed.exception, IsADirectoryError), failed.output
    assert state(target_url)["accounts"].empty
    engine = create_engine(target_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT status FROM migration_runs")).scalars().all() == ["failed"]
    engine.dispose()
    log = (out / "run.log.jsonl").read_text(encoding="utf-8")
    assert "stage reports started" in log
    assert "stage reports done" not in log

    (out / "exceptions.csv" / "in-the-way").rmdir()
    (out / "exceptions.csv").rmdir()
    again = run(legacy_csv, target_url, out, "--json")
    assert again.exit_code == 0, again.output
    assert (out / "exceptions.csv").is_file()
    assert not state(target_url)["accounts"].empty
    log = (out / "run.log.jsonl").read_text(encoding="utf-8")
    assert log.index("stage reports done") < log.index("stage load done")



def test_the_stewards_reports_start_once_the_load_has_staged_and_are_written_when_it_fails_before(
        legacy_csv: Path, target_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Started from the staging's end (the staging's Python would share the interpreter lock with
    them); a load that fails before then still leaves the stewards their reports."""
    out = tmp_path / "run"
    done = run(legacy_csv, target_url, out)
    assert done.exit_code == 0, done.output
    log = (out / "run.log.jsonl").read_text(encoding="utf-8")
    assert log.index("rows staged in") < log.index("stage reports started") < log.index("stage load done")

    from pipelines import load as load_module

    def lost(*args: object, **kwargs: object) -> None:
        raise ConnectionError("the database went away during the staging")

    monkeypatch.setattr(load_module, "_stage_postgres", lost)
    monkeypatch.setattr(load_module, "_stage_sqlite", lost)
    again = tmp_path / "again"
    failed = run(legacy_csv, target_url, again)
    assert isinstance(failed.exception, ConnectionError), failed.output
    log = (again / "run.log.jsonl").read_text(encoding="utf-8")
    assert "rows staged in" not in log
    assert "stage reports done" in log
    assert (again / "exceptions.csv").is_file()
    assert (again / "validation" / "index.html").is_file()

def _without_times(report: dict[str, Any]) -> dict[str, Any]:
    """A reconciliation report less what differs between two readings of the same state: when
    it ran, where it wrote, and the ledger's state (the run's own reading is made before the run
    is marked finished)."""
    header = dict(report["header"])
    for key in ("started_at", "ended_at"):
        header.pop(key, None)
    header["configuration"] = {k: v for k, v in header["configuration"].items() if k != "out_dir"}
    header["register_run"] = {k: v for k, v in header["register_run"].items() if k not in ("status", "ended_at")}
    evidence = {side: [e for e in tables if not str(e["table"]).startswith("migration_")
                       or e["table"] == "migration_exceptions"] for side, tables in report["evidence"].items()}
    return {**report, "header": header, "evidence": evidence}


def test_the_run_reads_the_legacy_source_for_its_reconciliation_beside_the_load_and_reports_as_alone(
        legacy_csv: Path, target_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its reconciliation's reading of the legacy source is done once, in the thread beside the
    load (queued behind the stewards' reports), and gives the report a reconciliation alone gives."""
    from reports import reconciliation

    readers: list[str] = []
    extract_legacy = reconciliation.extract_legacy

    def recorded(source: str) -> Any:
        readers.append(threading.current_thread().name)
        return extract_legacy(source)

    monkeypatch.setattr(reconciliation, "extract_legacy", recorded)
    out = tmp_path / "run"
    done = run(legacy_csv, target_url, out, "--json")
    assert done.exit_code == 0, done.output
    assert len(readers) == 1, readers
    assert readers[0].startswith("beside-the-load"), readers
    log = (out / "run.log.jsonl").read_text(encoding="utf-8")
    assert log.index("rows staged in") < log.index("stage reports done") < log.index("legacy source read and hashed")

    alone = tmp_path / "alone"
    result = CliRunner().invoke(main, ["reconcile", "--source", str(legacy_csv), "--target", target_url,
                                       "--as-of", AS_OF, "--out", str(alone),
                                       "--run", json.loads(done.output)["run_id"]])
    assert result.exit_code == 0, result.output
    assert readers[1] == threading.main_thread().name
    in_run = json.loads((out / "reconciliation.json").read_text(encoding="utf-8"))
    by_itself = json.loads((alone / "reconciliation.json").read_text(encoding="utf-8"))
    assert in_run["evidence"]["legacy"]
    assert _without_times(in_run) == _without_times(by_itself)

    # A load that fails before its staging is done never has the legacy source read for a
    # reconciliation that will not come.
    from pipelines import load as load_module

    def lost(*args: object, **kwargs: object) -> None:
        raise ConnectionError("the database went away during the staging")

    monkeypatch.setattr(load_module, "_stage_postgres", lost)
    monkeypatch.setattr(load_module, "_stage_sqlite", lost)
    readers.clear()
    failed = run(legacy_csv, target_url, tmp_path / "again")
    assert isinstance(failed.exception, ConnectionError), failed.output
    assert readers == []


class _Cycle:
    """Garbage only the cyclic collector frees (the run pauses it inside its stages)."""

    def __init__(self) -> None:
        self.itself = self


def test_the_reading_beside_the_load_starts_once_the_reports_garbage_is_collected(
        legacy_csv: Path, target_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The stewards' reports let go of the rule engine's results, which hold cycles: the legacy
    source is read (its peak) once they are collected, not beside them until the load's end."""
    from pipelines import run as run_module
    from reports import reconciliation

    left: list[weakref.ref[_Cycle]] = []
    write_reports = run_module._write_stewards_reports
    extract_legacy = reconciliation.extract_legacy
    alive_when_read: list[bool] = []

    def reports_leaving_a_cycle(*args: Any) -> None:
        write_reports(*args)
        left.append(weakref.ref(_Cycle()))

    def recorded(source: str) -> Any:
        alive_when_read.append(left[0]() is not None)
        return extract_legacy(source)

    monkeypatch.setattr(run_module, "_write_stewards_reports", reports_leaving_a_cycle)
    monkeypatch.setattr(reconciliation, "extract_legacy", recorded)
    done = run(legacy_csv, target_url, tmp_path / "run")
    assert done.exit_code == 0, done.output
    assert alive_when_read == [False]


STRICT_GATE = "min_records_for_shares = 0\n[max_rejected_share]\nuser = 0.01\n"


def test_gate_stops_the_run_before_anything_is_loaded(legacy_csv: Path, target_url: str, tmp_path: Path) -> None:
    gate = tmp_path / "gate.toml"
    gate.write_text(STRICT_GATE, encoding="utf-8")
    result = run(legacy_csv, target_url, tmp_path / "run", "--gate", str(gate))
    assert result.exit_code == 3, result.output
    assert "max_rejected_share.user" in result.output
    assert "7 of 14 user records rejected" in result.output
    from sqlalchemy import inspect

    engine = create_engine(target_url)
    assert inspect(engine).get_table_names() == []  # the target was not touched at all
    engine.dispose()
    # The stewards still get what they need to act.
    assert (tmp_path / "run" / "exceptions.csv").is_file()
    assert (tmp_path / "run" / "validation" / "index.html").is_file()


def test_no_gate_overrides_and_is_recorded(legacy_csv: Path, target_url: str, tmp_path: Path) -> None:
    gate = tmp_path / "gate.toml"
    gate.write_text(STRICT_GATE, encoding="utf-8")
    result = run(legacy_csv, target_url, tmp_path / "run", "--gate", str(gate), "--no-gate")
    assert result.exit_code == 0, result.output
    engine = create_engine(target_url)
    with engine.connect() as conn:
        status = conn.execute(text("SELECT status FROM migration_run_stages WHERE stage = 'gate'")).scalar()
    engine.dispose()
    assert status == "overridden"


def test_resolution_file_merges_a_duplicate_group(legacy_csv: Path, target_url: str, tmp_path: Path) -> None:
    """Users 2 and 3 share a login; the steward keeps 3: 2 is merged and its access follows."""
    tables = _tables()
    tables["habilitations"].append({**tables["habilitations"][0], "id_habilitation": 600, "id_utilisateur": 2,
                                    "code_application": "DECA", "role": None, "responsable_acces": False})
    legacy = write_csv_folder(tables, tmp_path / "legacy-with-access")
    resolutions = tmp_path / "resolutions.csv"
    resolutions.write_text("id_utilisateur_survivant;commentaire\n3;garde le compte récent\n", encoding="utf-8")
    first = run(legacy, target_url, tmp_path / "before")
    assert first.exit_code == 0, first.output
    before = (tmp_path / "before" / "exceptions.csv").read_text(encoding="utf-8-sig")
    assert "DUPLICATE_LOGIN" in before
    result = run(legacy, target_url, tmp_path / "after", "--resolutions", str(resolutions))
    assert result.exit_code == 0, result.output
    tables_after = state(target_url)
    accounts = tables_after["accounts"].set_index("legacy_user_id")
    assert 3 in accounts.index
    assert 2 not in accounts.index
    entitlements = tables_after["entitlements"].set_index("legacy_habilitation_id")
    assert accounts.at[3, "account_id"] == entitlements.at[600, "account_id"]
    import csv

    with (tmp_path / "after" / "exceptions.csv").open(encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.reader(handle, delimiter=";"))
    header = rows[0]
    users = {row[1]: dict(zip(header, row, strict=True)) for row in rows[1:] if row[0] == "utilisateur"}
    assert "3" not in users  # the survivor is migrated as is
    assert "DUPLICATE_LOGIN" in users["2"].values()
    assert "fusionné" in users["2"]["issue"]
    assert users["2"]["fusionné dans"] == "3"
    report = json.loads((tmp_path / "after" / "reconciliation.json").read_text())
    assert report["verdict"] == "RECONCILED_WITH_EXCEPTIONS"
    assert report["outcomes"]["user"]["merged"] == 1


@pytest.mark.parametrize("bad", ["--resolutions"])
def test_resolution_naming_a_user_outside_any_group_is_refused(legacy_csv: Path, target_url: str,
                                                               tmp_path: Path, bad: str) -> None:
    resolutions = tmp_path / "resolutions.csv"
    resolutions.write_text("id_utilisateur_survivant\n1\n", encoding="utf-8")
    result = run(legacy_csv, target_url, tmp_path / "run", bad, str(resolutions))
    assert result.exit_code == 2
    assert "id_utilisateur 1 is not in a DUPLICATE_LOGIN group" in result.output


def test_every_reason_code_lands_in_the_register(legacy_csv: Path, target_url: str, tmp_path: Path) -> None:
    """The per-record outcomes of tests/test_outcomes.py, this time through the whole run and the target."""
    from tests.test_outcomes import EXPECTED_USERS, HABILITATIONS

    engine = create_engine(target_url)
    from pipelines.target_setup import init_target

    init_target(engine)
    with engine.begin() as conn:  # a native account holding user 9's login
        conn.execute(text(
            "INSERT INTO accounts (legacy_user_id, login, email, last_name, first_name, account_type, status, "
            "must_reset_password, created_at, origin) VALUES (NULL, 'native@example.fr', 'native@example.fr', "
            "'Natif', 'Nina', 'PRO', 'ACTIVE', false, '2024-12-01 10:00:00', 'NATIVE')"))
    engine.dispose()
    result = run(legacy_csv, target_url, tmp_path / "run")
    assert result.exit_code == 0, result.output
    engine = create_engine(target_url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT entity, legacy_key, outcome, reason_code, merged_into "
                                 "FROM migration_exceptions WHERE outcome <> 'corrected'")).all()
        migrated_users = {r[0] for r in conn.execute(text(
            "SELECT legacy_user_id FROM accounts WHERE origin = 'MIGRATION'"))}
        migrated_habilitations = {r[0] for r in conn.execute(text(
            "SELECT legacy_habilitation_id FROM entitlements UNION SELECT legacy_habilitation_id FROM access_requests"))}
    engine.dispose()
    register = {(entity, key): (outcome, reason) for entity, key, outcome, reason, _merged in rows}
    for user_id, (outcome, reason) in EXPECTED_USERS.items():
        if outcome == "migrated":
            assert user_id in migrated_users, user_id
            assert ("user", str(user_id)) not in register
        else:
            assert register[("user", str(user_id))] == (outcome, reason), user_id
    for habilitation_id, (_fields, outcome, reason) in HABILITATIONS.items():
        if outcome == "migrated":
            assert habilitation_id in migrated_habilitations, habilitation_id
        else:
            assert register[("habilitation", str(habilitation_id))] == (outcome, reason), habilitation_id
    merged = {(entity, key): into for entity, key, outcome, _reason, into in rows if outcome == "merged"}
    assert merged == {("habilitation", "101"): "100", ("habilitation", "118"): "117"}


@pytest.mark.slow
def test_conservation_law_on_a_generated_export_of_10000_users(new_database_url: Callable[[str], str],
                                                               engine_kind: str, tmp_path: Path) -> None:
    legacy = new_database_url(engine_kind)
    generated = CliRunner().invoke(main, ["generate-legacy", "--users", "10000", "--seed", "7", "--out", legacy])
    assert generated.exit_code == 0, generated.output
    target = new_database_url(engine_kind)
    result = CliRunner().invoke(main, ["run", "--source", legacy, "--target", target, "--out", str(tmp_path / "run"),
                                       "--as-of", "2024-11-14T00:00:00"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "run" / "reconciliation.json").read_text())
    assert report["verdict"] == "RECONCILED_WITH_EXCEPTIONS"
    assert report["outcomes"]["user"]["source"] == 10_000
    for entity, counts in report["outcomes"].items():
        assert counts["source"] == counts["migrated"] + counts["excluded"] + counts["rejected"] + counts["merged"], entity
        assert counts["migrated"] > 0, entity
    for application in report["applications"]:
        assert application["unexplained"] == 0, application


def test_unreachable_target_fails_fast_with_a_masked_url(legacy_csv: Path, tmp_path: Path) -> None:
    target = "postgresql://migration:Tr3s-S3cret@127.0.0.1:9/efp"  # nothing listens on port 9
    result = run(legacy_csv, target, tmp_path / "run")
    assert result.exit_code == 2
    assert "cannot connect to postgresql+psycopg://migration:***@127.0.0.1:9/efp" in result.output
    assert "Tr3s-S3cret" not in result.output
    assert "Traceback" not in result.output
