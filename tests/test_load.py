"""The load stage: keyed upserts into the target, convergence between waves, NATIVE rows
untouched, and one transaction (a failure anywhere leaves the target exactly as before).

Every test runs on SQLite and on a real PostgreSQL (`engine_kind`). The frames are built by
hand; `_wave_one` and `_wave_two` say in their docstrings what they contain.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import signal
import subprocess
import sys
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import Engine, exc, insert, select, text, update

from pipelines.db import make_engine
from pipelines.frames import TARGET_FRAME_COLUMNS, TargetFrames
from pipelines.load import Handover, LoadConfig, LoadError, LoadResult, load, read_target_state
from pipelines.target_schema import (
    accounts,
    applications,
    entitlements,
    establishments,
    migration_exceptions,
)
from pipelines.target_setup import init_target

_INT64 = {"legacy_user_id", "legacy_habilitation_id"}
_NULLABLE_INT = {"delegated_by_legacy_user_id"}
_TIMESTAMPS = {
    "created_at",
    "last_login_at",
    "valid_from",
    "valid_until",
    "requested_at",
    "last_reminder_at",
    "closed_on",
}
_BOOLEANS = {"is_access_manager"}

SIRET_A = "11111111111111"
SIRET_B = "22222222222222"
SIRET_NATIVE = "33333333333333"
NATIVE_LOGIN = "native.user@efp-connect.fr"


def _frame(name: str, rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """A frame with the dtypes of the frames' conventions (frames.py)."""
    columns = TARGET_FRAME_COLUMNS[name]
    frame = pd.DataFrame([dict(row) for row in rows], columns=list(columns))
    for column in columns:
        if column in _INT64:
            frame[column] = frame[column].astype("int64")
        elif column in _NULLABLE_INT:
            frame[column] = frame[column].astype("Int64")
        elif column in _TIMESTAMPS:
            frame[column] = pd.to_datetime(frame[column]).astype("datetime64[ns]")
        elif column in _BOOLEANS:
            frame[column] = frame[column].astype(bool)
    return frame


def _frames(
    *,
    accounts_rows: Sequence[Mapping[str, Any]],
    establishments_rows: Sequence[Mapping[str, Any]],
    applications_rows: Sequence[Mapping[str, Any]],
    entitlements_rows: Sequence[Mapping[str, Any]],
    access_requests_rows: Sequence[Mapping[str, Any]] = (),
    exceptions_rows: Sequence[Mapping[str, Any]] = (),
) -> TargetFrames:
    return TargetFrames(
        accounts=_frame("accounts", accounts_rows),
        establishments=_frame("establishments", establishments_rows),
        applications=_frame("applications", applications_rows),
        entitlements=_frame("entitlements", entitlements_rows),
        access_requests=_frame("access_requests", access_requests_rows),
        exceptions=_frame("exceptions", exceptions_rows),
    )


def _account(legacy_user_id: int, login: str, last_name: str, account_type: str = "PRO") -> dict[str, Any]:
    return {
        "legacy_user_id": legacy_user_id,
        "login": login,
        "email": login.capitalize(),
        "last_name": last_name,
        "first_name": "Prénom",
        "phone": "+33123456789" if legacy_user_id % 2 else None,
        "account_type": account_type,
        "status": "ACTIVE",
        "created_at": datetime(2019, 3, 4, 10, 11, 12),
        "last_login_at": datetime(2024, 10, 1, 8, 0, 0, 250000) if legacy_user_id % 2 else None,
    }


def _establishment(siret: str, name: str) -> dict[str, Any]:
    return {
        "siret": siret,
        "siren": siret[:9],
        "name": name,
        "address": "1 rue de la Paix",
        "postal_code": "75001",
        "city": "Paris",
        "closed_on": datetime(2023, 6, 30) if siret == SIRET_B else None,
    }


def _entitlement(
    hab: int, user: int, app: str, siret: str | None, role: str, *, manager: bool = False
) -> dict[str, Any]:
    return {
        "legacy_habilitation_id": hab,
        "legacy_user_id": user,
        "application_code": app,
        "siret": siret,
        "role": role,
        "is_access_manager": manager,
        "valid_from": datetime(2020, 1, 15, 9, 0, 0),
        "valid_until": datetime(2026, 12, 31, 23, 59, 59) if hab % 2 else None,
        "delegated_by_legacy_user_id": 1001 if hab == 5003 else None,
    }


def _request(hab: int, user: int, app: str, siret: str | None) -> dict[str, Any]:
    return {
        "legacy_habilitation_id": hab,
        "legacy_user_id": user,
        "application_code": app,
        "siret": siret,
        "role": None,
        "requested_at": datetime(2024, 9, 1, 14, 0, 0),
        "last_reminder_at": datetime(2024, 10, 1, 14, 0, 0) if hab % 2 else None,
    }


def _exception(entity: str, key: str, outcome: str, reason: str) -> dict[str, Any]:
    return {
        "entity": entity,
        "legacy_key": key,
        "outcome": outcome,
        "reason_code": reason,
        "detail": f"{reason} on {key}",
        "merged_into": None,
    }


_APPLICATIONS = [
    {"code": "EDOF", "name": "EDOF", "legacy_code": "EDOF"},
    {"code": "SOFFI", "name": "SOFFI", "legacy_code": "SOFFI"},
]


def _wave_one() -> TargetFrames:
    """First wave.

    - applications EDOF, SOFFI;
    - establishments A, B (B closed) and SIRET_NATIVE, which the target already holds as a
      NATIVE row (the frame's name for it differs and must not be written);
    - accounts 1001 alice, 1002 bob, 1003 carol (AGENT), 1004 dave;
    - entitlements 5001 alice EDOF/A GESTIONNAIRE_EDOF (manager), 5002 alice SOFFI/A,
      5003 bob EDOF/SIRET_NATIVE LECTEUR_EDOF (delegated by 1001), 5004 carol SOFFI without
      SIRET, 5005 dave EDOF/B;
    - access request 7001 bob SOFFI/B;
    - two exceptions.
    """
    return _frames(
        applications_rows=_APPLICATIONS,
        establishments_rows=[
            _establishment(SIRET_A, "Alpha"),
            _establishment(SIRET_B, "Beta"),
            _establishment(SIRET_NATIVE, "Name from the legacy portal"),
        ],
        accounts_rows=[
            _account(1001, "alice@example.fr", "Martin"),
            _account(1002, "bob@example.fr", "Bernard"),
            _account(1003, "carol@example.fr", "Petit", "AGENT"),
            _account(1004, "dave@example.fr", "Durand"),
        ],
        entitlements_rows=[
            _entitlement(5001, 1001, "EDOF", SIRET_A, "GESTIONNAIRE_EDOF", manager=True),
            _entitlement(5002, 1001, "SOFFI", SIRET_A, "UTILISATEUR"),
            _entitlement(5003, 1002, "EDOF", SIRET_NATIVE, "LECTEUR_EDOF"),
            _entitlement(5004, 1003, "SOFFI", None, "UTILISATEUR"),
            _entitlement(5005, 1004, "EDOF", SIRET_B, "GESTIONNAIRE_EDOF"),
        ],
        access_requests_rows=[_request(7001, 1002, "SOFFI", SIRET_B)],
        exceptions_rows=[
            _exception("user", "1009", "rejected", "INVALID_EMAIL"),
            _exception("habilitation", "5999", "excluded", "NOT_GRANTED"),
        ],
    )


def _wave_two() -> TargetFrames:
    """Second wave, against `_wave_one`.

    - alice's last name changed; alice and bob swapped logins;
    - dave (1004) is gone, with his entitlement 5005, and establishment B with them;
    - 5002 removed; 5003 changed role (LECTEUR_EDOF -> GESTIONNAIRE_EDOF); 5006 added
      (carol EDOF without SIRET); 5001 and 5004 unchanged;
    - access request 7002 added (alice EDOF/A), 7001 unchanged;
    - one exception instead of two.
    """
    return _frames(
        applications_rows=_APPLICATIONS,
        establishments_rows=[
            _establishment(SIRET_A, "Alpha"),
            _establishment(SIRET_NATIVE, "Name from the legacy portal"),
        ],
        accounts_rows=[
            _account(1001, "bob@example.fr", "Martin-Durand"),
            _account(1002, "alice@example.fr", "Bernard"),
            _account(1003, "carol@example.fr", "Petit", "AGENT"),
        ],
        entitlements_rows=[
            _entitlement(5001, 1001, "EDOF", SIRET_A, "GESTIONNAIRE_EDOF", manager=True),
            _entitlement(5003, 1002, "EDOF", SIRET_NATIVE, "GESTIONNAIRE_EDOF"),
            _entitlement(5004, 1003, "SOFFI", None, "UTILISATEUR"),
            _entitlement(5006, 1003, "EDOF", None, "LECTEUR_EDOF"),
        ],
        access_requests_rows=[
            _request(7001, 1002, "SOFFI", SIRET_A),
            _request(7002, 1001, "EDOF", SIRET_A),
        ],
        exceptions_rows=[_exception("user", "1004", "excluded", "USER_DELETED")],
    )


@pytest.fixture
def engine(target_url: str) -> Iterator[Engine]:
    """The target (empty schema plus the NATIVE rows of `_seed_natives`), disposed afterwards."""
    target = make_engine(target_url)
    init_target(target)
    _seed_natives(target)
    yield target
    target.dispose()


def _seed_natives(target: Engine) -> None:
    """What EFP Connect created itself since it opened: an account (no legacy_user_id, a real
    password hash), the establishment SIRET_NATIVE, the application PIC, and one entitlement."""
    with target.begin() as conn:
        account_id = conn.execute(
            insert(accounts)
            .values(
                legacy_user_id=None,
                login=NATIVE_LOGIN,
                email="Native.User@efp-connect.fr",
                last_name="Native",
                first_name="Nina",
                phone="+33612345678",
                account_type="PRO",
                status="ACTIVE",
                must_reset_password=False,
                password_hash="$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA",
                created_at=datetime(2024, 11, 20, 9, 30, 15, 123456),
                last_login_at=datetime(2025, 1, 2, 3, 4, 5),
                origin="NATIVE",
            )
            .returning(accounts.c.account_id)
        ).scalar_one()
        conn.execute(
            insert(establishments).values(
                siret=SIRET_NATIVE, siren=SIRET_NATIVE[:9], name="Native name", city="Lyon", origin="NATIVE"
            )
        )
        conn.execute(insert(applications).values(code="PIC", name="PIC", legacy_code=None, origin="NATIVE"))
        conn.execute(
            insert(entitlements).values(
                account_id=account_id,
                application_code="PIC",
                siret=SIRET_NATIVE,
                role="UTILISATEUR",
                is_access_manager=True,
                valid_from=datetime(2024, 12, 1),
                origin="NATIVE",
            )
        )


def _native_snapshot(target: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """The NATIVE rows as the driver returns them (SQLite: the stored text itself)."""
    tables = ("accounts", "establishments", "applications", "entitlements", "access_requests")
    with target.connect() as conn:
        return {
            table: [
                tuple(row)
                for row in conn.execute(text(f"SELECT * FROM {table} WHERE origin = 'NATIVE' ORDER BY 1"))
            ]
            for table in tables
        }


def _exceptions(target: Engine) -> list[tuple[Any, ...]]:
    columns = [migration_exceptions.c[c] for c in ("run_id", *TARGET_FRAME_COLUMNS["exceptions"])]
    with target.connect() as conn:
        return [tuple(row) for row in conn.execute(select(*columns).order_by(*columns[:4]))]


def _everything(target: Engine) -> tuple[dict[str, pd.DataFrame], list[tuple[Any, ...]], dict[str, Any]]:
    return read_target_state(target), _exceptions(target), _native_snapshot(target)


def _assert_same(before: tuple[dict[str, pd.DataFrame], list[Any], dict[str, Any]], target: Engine) -> None:
    state, exceptions, natives = _everything(target)
    for name, frame in before[0].items():
        pd.testing.assert_frame_equal(state[name], frame, obj=name)
    assert exceptions == before[1]
    assert natives == before[2]


def _records(frame: pd.DataFrame, columns: Sequence[str]) -> list[tuple[Any, ...]]:
    """Rows as plain Python values (NA as None), sorted: comparable whatever the dtypes."""
    rows = []
    for record in frame[list(columns)].astype(object).itertuples(index=False):
        values = []
        for value in record:
            if value is None or (not isinstance(value, str) and pd.isna(value)):
                values.append(None)
            elif isinstance(value, pd.Timestamp):
                values.append(value.to_pydatetime())
            else:
                values.append(value)
        rows.append(tuple(values))
    return sorted(rows, key=repr)


def _migrated(state: Mapping[str, pd.DataFrame], name: str) -> pd.DataFrame:
    frame = state[name]
    migrated = frame[frame["origin"] == "MIGRATION"]
    if name in ("entitlements", "access_requests"):
        holders = state["accounts"].set_index("account_id")["legacy_user_id"]
        migrated = migrated.assign(legacy_user_id=migrated["account_id"].map(holders))
    return migrated


def _assert_converged(target: Engine, frames: TargetFrames, *, native_keys: Mapping[str, set[str]]) -> None:
    """The migrated rows of the target are exactly the frames (less rows whose key is NATIVE)."""
    state = read_target_state(target)
    keys = {"establishments": "siret", "applications": "code"}
    for name in ("accounts", "establishments", "applications", "entitlements", "access_requests"):
        columns = TARGET_FRAME_COLUMNS[name]
        expected = frames.table(name)
        if name in keys:
            expected = expected[~expected[keys[name]].isin(native_keys.get(name, set()))]
        assert _records(_migrated(state, name), columns) == _records(expected, columns), name
    migrated_accounts = _migrated(state, "accounts")
    assert migrated_accounts["must_reset_password"].all()
    assert migrated_accounts["password_hash"].isna().all()


def _run(target: Engine, frames: TargetFrames | Handover, run_id: str, **kwargs: Any) -> LoadResult:
    return load(target, frames, LoadConfig(run_id=run_id, batch_rows=2), **kwargs)


# --- tests ---------------------------------------------------------------------------------


def test_first_load_writes_the_frames_and_leaves_native_rows_alone(engine: Engine) -> None:
    natives = _native_snapshot(engine)
    frames = _wave_one()
    result = _run(engine, frames, "w1")

    _assert_converged(engine, frames, native_keys={"establishments": {SIRET_NATIVE}})
    assert _native_snapshot(engine) == natives
    counts = result.to_dict()["tables"]
    assert counts["accounts"] == {
        "staged": 4, "inserted": 4, "updated": 0, "unchanged": 0, "deleted": 0,
        "kept_referenced": 0, "native_kept": 0,
    }
    assert counts["establishments"]["inserted"] == 2
    assert counts["establishments"]["native_kept"] == 1
    assert counts["entitlements"]["inserted"] == 5
    assert counts["access_requests"]["inserted"] == 1
    assert counts["migration_exceptions"]["inserted"] == 2
    json.dumps(result.to_dict())  # the ledger stores it as JSON

    state = read_target_state(engine)
    migrated = _migrated(state, "accounts")
    assert set(migrated["origin"]) == {"MIGRATION"}
    assert set(migrated["created_by_run"]) == {"w1"}
    assert set(migrated["written_by_run"]) == {"w1"}
    # The native establishment is used as it is by the entitlement that names its SIRET.
    native_establishment = state["establishments"].set_index("siret").loc[SIRET_NATIVE]
    assert native_establishment["name"] == "Native name"
    assert native_establishment["origin"] == "NATIVE"
    assert [tuple(row) for row in _exceptions(engine)] == [
        ("w1", "habilitation", "5999", "excluded", "NOT_GRANTED", "NOT_GRANTED on 5999", None),
        ("w1", "user", "1009", "rejected", "INVALID_EMAIL", "INVALID_EMAIL on 1009", None),
    ]


def test_identical_reload_changes_nothing(engine: Engine) -> None:
    frames = _wave_one()
    _run(engine, frames, "w1")
    before = _everything(engine)

    result = _run(engine, frames, "w1-again")

    state = read_target_state(engine)
    for name, frame in before[0].items():
        # Same account_ids, same rows, and written_by_run still names the first run.
        pd.testing.assert_frame_equal(state[name], frame, obj=name)
    assert _native_snapshot(engine) == before[2]
    for name in ("accounts", "establishments", "applications", "entitlements", "access_requests"):
        counts = result.tables[name]
        assert counts.inserted == counts.updated == counts.deleted == counts.kept_referenced == 0, name
        assert counts.unchanged + counts.native_kept == counts.staged, name
    # The other run's exceptions are its own: the new run adds its rows beside them.
    assert [row[0] for row in _exceptions(engine)] == ["w1", "w1", "w1-again", "w1-again"]


def test_second_wave_converges_exactly_to_the_new_frames(engine: Engine) -> None:
    _run(engine, _wave_one(), "w1")
    first = read_target_state(engine)
    natives = _native_snapshot(engine)

    second = _wave_two()
    result = _run(engine, second, "w2")

    _assert_converged(engine, second, native_keys={"establishments": {SIRET_NATIVE}})
    assert _native_snapshot(engine) == natives
    state = read_target_state(engine)
    ids_before = first["accounts"].set_index("legacy_user_id")["account_id"]
    ids_after = state["accounts"].set_index("legacy_user_id")["account_id"]
    for legacy_user_id in (1001, 1002, 1003):
        assert ids_after[legacy_user_id] == ids_before[legacy_user_id]
    written_by = state["accounts"].set_index("legacy_user_id")["written_by_run"]
    assert (written_by[1001], written_by[1002], written_by[1003]) == ("w2", "w2", "w1")
    entitlement_runs = _migrated(state, "entitlements").set_index("legacy_habilitation_id")
    assert entitlement_runs.loc[5001, "written_by_run"] == "w1"
    assert entitlement_runs.loc[5003, "written_by_run"] == "w2"
    assert entitlement_runs.loc[5006, "created_by_run"] == "w2"
    assert SIRET_B not in set(state["establishments"]["siret"])

    tables = result.to_dict()["tables"]
    assert tables["accounts"] == {
        "staged": 3, "inserted": 0, "updated": 2, "unchanged": 1, "deleted": 1,
        "kept_referenced": 0, "native_kept": 0,
    }
    assert tables["entitlements"] == {
        "staged": 4, "inserted": 1, "updated": 1, "unchanged": 2, "deleted": 2,
        "kept_referenced": 0, "native_kept": 0,
    }
    assert tables["access_requests"]["inserted"] == 1
    assert tables["access_requests"]["updated"] == 1  # 7001 moved to another establishment
    assert tables["establishments"]["deleted"] == 1
    assert tables["establishments"]["native_kept"] == 1
    assert _exceptions(engine) == [
        ("w1", "habilitation", "5999", "excluded", "NOT_GRANTED", "NOT_GRANTED on 5999", None),
        ("w1", "user", "1009", "rejected", "INVALID_EMAIL", "INVALID_EMAIL on 1009", None),
        ("w2", "user", "1004", "excluded", "USER_DELETED", "USER_DELETED on 1004", None),
    ]

    # Loading the second wave again is a no-op.
    again = _run(engine, second, "w2")
    for name, frame in state.items():
        pd.testing.assert_frame_equal(read_target_state(engine)[name], frame, obj=name)
    assert again.tables["entitlements"].unchanged == 4


def test_rerunning_a_run_replaces_its_exceptions(engine: Engine) -> None:
    frames = _wave_one()
    _run(engine, frames, "w1")
    _run(engine, _wave_two(), "other-run")
    replaced = TargetFrames(
        accounts=frames.accounts,
        establishments=frames.establishments,
        applications=frames.applications,
        entitlements=frames.entitlements,
        access_requests=frames.access_requests,
        exceptions=_frame(
            "exceptions", [_exception("establishment", SIRET_B, "corrected", "SIREN_CORRECTED")]
        ),
    )

    result = _run(engine, replaced, "w1")

    assert result.tables["migration_exceptions"].deleted == 2
    assert result.tables["migration_exceptions"].inserted == 1
    assert _exceptions(engine) == [
        ("other-run", "user", "1004", "excluded", "USER_DELETED", "USER_DELETED on 1004", None),
        ("w1", "establishment", SIRET_B, "corrected", "SIREN_CORRECTED", f"SIREN_CORRECTED on {SIRET_B}",
         None),
    ]


def test_every_migrated_account_must_reset_its_password(engine: Engine) -> None:
    """Even one whose flags changed in the target since: the migration writes them again."""
    frames = _wave_one()
    _run(engine, frames, "w1")
    with engine.begin() as conn:
        conn.execute(
            update(accounts)
            .where(accounts.c.legacy_user_id == 1003)
            .values(must_reset_password=False, password_hash="$argon2id$set-after-wave-one")
        )
    natives = _native_snapshot(engine)

    result = _run(engine, frames, "w1-again")

    assert result.tables["accounts"].updated == 1
    _assert_converged(engine, frames, native_keys={"establishments": {SIRET_NATIVE}})
    assert _native_snapshot(engine) == natives
    native = read_target_state(engine)["accounts"].set_index("login").loc[NATIVE_LOGIN]
    assert not native["must_reset_password"]
    assert native["password_hash"].startswith("$argon2id$")


def test_native_references_keep_migrated_rows_and_native_access_is_not_duplicated(engine: Engine) -> None:
    """After the first wave, EFP Connect itself gave alice (1001) PIC/SIRET_NATIVE and bob (1002)
    EDOF/A LECTEUR_EDOF (two NATIVE entitlements on migrated accounts). The next wave drops
    alice and dave, and brings 5010 = bob EDOF/A LECTEUR_EDOF from the legacy portal.

    Alice's account stays (a native row references it) but her migrated access goes; dave goes;
    5010 is not written, since bob already holds that access natively."""
    _run(engine, _wave_one(), "w1")
    with engine.begin() as conn:
        ids = dict(conn.execute(select(accounts.c.legacy_user_id, accounts.c.account_id)).all())
        for account, app, siret, role in (
            (ids[1001], "PIC", SIRET_NATIVE, "UTILISATEUR"),
            (ids[1002], "EDOF", SIRET_A, "LECTEUR_EDOF"),
        ):
            conn.execute(
                insert(entitlements).values(
                    account_id=account, application_code=app, siret=siret, role=role,
                    is_access_manager=False, valid_from=datetime(2025, 2, 1), origin="NATIVE",
                )
            )
    natives = _native_snapshot(engine)
    first = _wave_one()
    without_alice = TargetFrames(
        accounts=first.accounts[~first.accounts["legacy_user_id"].isin([1001, 1004])],
        establishments=first.establishments,
        applications=first.applications,
        entitlements=pd.concat(
            [
                first.entitlements[~first.entitlements["legacy_user_id"].isin([1001, 1004])],
                _frame("entitlements", [_entitlement(5010, 1002, "EDOF", SIRET_A, "LECTEUR_EDOF")]),
            ],
            ignore_index=True,
        ),
        access_requests=first.access_requests,
        exceptions=first.exceptions,
    )

    result = _run(engine, without_alice, "w3")

    assert _native_snapshot(engine) == natives
    state = read_target_state(engine)
    kept = state["accounts"].set_index("legacy_user_id").loc[1001]
    assert kept["origin"] == "MIGRATION"
    assert kept["written_by_run"] == "w1"  # kept as it was, not rewritten
    assert result.tables["accounts"].kept_referenced == 1
    assert result.tables["accounts"].deleted == 1  # dave
    migrated = _migrated(state, "entitlements")
    assert 1001 not in set(migrated["legacy_user_id"])  # alice's migrated access is gone
    assert 5010 not in set(migrated["legacy_habilitation_id"])  # bob holds it natively already
    assert result.tables["entitlements"].native_kept == 1
    assert result.tables["entitlements"].inserted == 0
    assert result.tables["entitlements"].deleted == 3  # 5001, 5002 (alice), 5005 (dave)
    assert result.tables["entitlements"].unchanged == 2


def test_a_login_held_by_a_native_account_is_refused(engine: Engine) -> None:
    _run(engine, _wave_one(), "w1")
    before = _everything(engine)
    wave = _wave_one()
    wave.accounts.loc[wave.accounts["legacy_user_id"] == 1003, "login"] = NATIVE_LOGIN

    with pytest.raises(LoadError, match="1003"):
        _run(engine, wave, "w2")

    _assert_same(before, engine)


@pytest.mark.parametrize(
    ("defect", "message"),
    [
        ("duplicate_habilitation", "legacy_habilitation_id is not unique"),
        ("unknown_holder", "legacy_user_id not among the accounts"),
        ("duplicate_login", "login is not unique"),
        ("aware_timestamps", "valid_from: timestamps must be naive"),
    ],
)
def test_inconsistent_frames_are_refused_before_anything_is_written(
    engine: Engine, defect: str, message: str
) -> None:
    before = _everything(engine)
    wave = _wave_one()
    if defect == "duplicate_habilitation":
        wave.entitlements.loc[1, "legacy_habilitation_id"] = 5001
    elif defect == "unknown_holder":
        wave.entitlements.loc[1, "legacy_user_id"] = 999_999
    elif defect == "aware_timestamps":
        wave.entitlements["valid_from"] = pd.to_datetime(wave.entitlements["valid_from"]).dt.tz_localize("Europe/Paris")
    else:
        wave.accounts.loc[1, "login"] = "alice@example.fr"

    with pytest.raises(LoadError, match=message):
        _run(engine, wave, "w1")

    _assert_same(before, engine)


def test_a_foreign_key_violation_rolls_everything_back(engine: Engine) -> None:
    """An entitlement names an application neither the frames nor the target know."""
    _run(engine, _wave_one(), "w1")
    before = _everything(engine)
    wave = _wave_two()
    wave.entitlements.loc[wave.entitlements["legacy_habilitation_id"] == 5006, "application_code"] = "NOPE"

    with pytest.raises(exc.IntegrityError):
        _run(engine, wave, "w2")

    _assert_same(before, engine)
    # Nothing of the failed attempt lingers on the connection: the next load goes through.
    _run(engine, _wave_two(), "w2")
    _assert_converged(engine, _wave_two(), native_keys={"establishments": {SIRET_NATIVE}})


def test_before_commit_runs_once_everything_is_written_and_its_failure_rolls_back(
    engine: Engine, target_url: str
) -> None:
    _run(engine, _wave_one(), "w1")
    before = _everything(engine)
    seen: list[str] = []
    calls: list[int] = []

    def before_commit() -> None:
        calls.append(len(seen))
        # Every step is done, and another connection still sees the target as it was.
        assert seen[-1] == "insert migration_exceptions"
        other = make_engine(target_url)
        try:
            with other.connect() as conn:
                assert conn.execute(text("SELECT count(*) FROM migration_exceptions WHERE run_id = 'w2'")).scalar() == 0
        finally:
            other.dispose()
        raise _InterruptedError("the stewards' reports could not be written")

    with pytest.raises(_InterruptedError, match="stewards' reports"):
        _run(engine, _wave_two(), "w2", progress=lambda step, rows: seen.append(step), before_commit=before_commit)

    assert calls == [len(seen)]
    _assert_same(before, engine)
    result = _run(engine, _wave_two(), "w2", before_commit=lambda: calls.append(-1))
    assert calls[-1] == -1
    assert result.tables["migration_exceptions"].inserted == 1
    _assert_converged(engine, _wave_two(), native_keys={"establishments": {SIRET_NATIVE}})



def test_after_staging_runs_once_every_frame_is_staged_before_any_sql_and_its_failure_rolls_back(
    engine: Engine,
) -> None:
    _run(engine, _wave_one(), "w1")
    before = _everything(engine)
    frames = _wave_two()
    seen: list[str] = []
    calls: list[list[str]] = []

    def after_staging() -> None:
        calls.append(list(seen))
        raise _InterruptedError("the stewards' reports could not be started")

    with pytest.raises(_InterruptedError, match="could not be started"):
        _run(engine, frames, "w2", progress=lambda step, rows: seen.append(step), after_staging=after_staging)

    assert len(calls) == 1
    staged = calls[0]
    assert staged == seen  # nothing after it
    assert all(step.startswith("staging ") for step in staged)
    assert {step.removeprefix("staging ") for step in staged} == {
        name for name in ("applications", "establishments", "accounts", "entitlements", "access_requests",
                          "exceptions") if len(frames.table(name))}
    _assert_same(before, engine)

    seen.clear()
    calls.clear()
    result = _run(engine, frames, "w2", progress=lambda step, rows: seen.append(step),
                  after_staging=lambda: calls.append(list(seen)))
    assert len(calls) == 1
    assert len(seen) > len(calls[0])  # the SQL steps came after
    assert not any(step.startswith("staging ") for step in seen[len(calls[0]):])
    assert result.tables["migration_exceptions"].inserted == 1
    _assert_converged(engine, frames, native_keys={"establishments": {SIRET_NATIVE}})

def test_frames_handed_over_are_let_go_once_staged_and_only_once(engine: Engine) -> None:
    """What runs beside the rest of the load (the stewards' reports, the reconciliation's reading
    of the legacy source) has the frames' memory: nothing of the load holds them after staging."""
    frames = _wave_one()
    expected = _wave_one()
    watched = {name: weakref.ref(frames.table(name)) for name in TARGET_FRAME_COLUMNS}
    handover = Handover(frames)
    del frames
    alive: list[list[str]] = []

    def after_staging() -> None:
        gc.collect()
        alive.append([name for name, ref in watched.items() if ref() is not None])

    _run(engine, handover, "w1", after_staging=after_staging)
    assert alive == [[]]
    _assert_converged(engine, expected, native_keys={"establishments": {SIRET_NATIVE}})
    with pytest.raises(LoadError, match="handed over to a load already"):
        _run(engine, handover, "w1-again")

    kept = _wave_one()  # given as they are, the caller's frames stay the caller's
    _run(engine, kept, "w1-kept")
    _assert_converged(engine, kept, native_keys={"establishments": {SIRET_NATIVE}})


def _foreign_keys(target: Engine) -> list[tuple[Any, ...]]:
    """Every foreign key of the target as the engine's catalogue states it (PostgreSQL: with
    its definition and whether it is validated)."""
    with target.connect() as conn:
        if target.dialect.name == "postgresql":
            return [tuple(row) for row in conn.execute(text(
                "SELECT CAST(conrelid AS regclass)::text, conname, pg_get_constraintdef(oid), convalidated "
                "FROM pg_constraint WHERE contype = 'f' ORDER BY 1, 2"
            ))]
        tables = [row[0] for row in conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'table'"))]
        return sorted(
            (table, *row) for table in tables for row in conn.execute(text(f"PRAGMA foreign_key_list({table})"))
        )


def _indexes(target: Engine) -> list[tuple[Any, ...]]:
    """Every index of the target with its definition (PostgreSQL: and whether it is valid and
    which constraint it backs)."""
    with target.connect() as conn:
        if target.dialect.name == "postgresql":
            return [tuple(row) for row in conn.execute(text(
                "SELECT CAST(i.indrelid AS regclass)::text, ic.relname, pg_get_indexdef(i.indexrelid), "
                "i.indisunique, i.indisvalid, c.conname, c.contype "
                "FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid "
                "JOIN pg_namespace n ON n.oid = ic.relnamespace "
                "LEFT JOIN pg_constraint c ON c.conindid = i.indexrelid AND c.conrelid = i.indrelid "
                "WHERE n.nspname = 'public' ORDER BY 1, 2"
            ))]
        return [tuple(row) for row in conn.execute(text(
            "SELECT tbl_name, name, sql FROM sqlite_master WHERE type = 'index' ORDER BY 1, 2"
        ))]


# Wave one brings 4 accounts (the target holds 1 native), 5 entitlements (1 native), 1 access
# request and 2 exceptions into tables that hold no migrated row. Wave two changes the first
# two tables, brings 1 exception where the table holds wave one's 2, and 2 access requests once
# the one of wave one is deleted (its tuple changed), leaving none of ours in the table.
_WAVE_ONE_REBUILT = ("accounts", "entitlements", "access_requests", "migration_exceptions")
_WAVE_TWO_REBUILT = ("access_requests",)


@pytest.mark.parametrize("fk_checks", ["set", "per-row"])
def test_set_based_checks_load_the_same_rows_and_put_every_constraint_and_index_back(
    engine: Engine, fk_checks: str
) -> None:
    constraints = _foreign_keys(engine)
    indexes = _indexes(engine)
    assert constraints  # the schema has foreign keys for this test to watch
    assert len(indexes) >= 10  # and unique indexes, some backing constraints, some not
    natives = _native_snapshot(engine)
    set_based = engine.dialect.name == "postgresql" and fk_checks == "set"
    for run_id, wave, rebuilt in (("w1", _wave_one(), _WAVE_ONE_REBUILT), ("w2", _wave_two(), _WAVE_TWO_REBUILT)):
        result = load(engine, wave, LoadConfig(run_id=run_id, batch_rows=2, fk_checks=fk_checks))

        _assert_converged(engine, wave, native_keys={"establishments": {SIRET_NATIVE}})
        assert result.set_checked == (("entitlements", "access_requests") if set_based else ())
        assert result.to_dict()["set_checked"] == list(result.set_checked)
        assert result.indexes_rebuilt == (rebuilt if set_based else ())
        assert result.to_dict()["indexes_rebuilt"] == list(result.indexes_rebuilt)
        # Same names, same definitions, validated: nothing tells the two ways apart afterwards.
        assert _foreign_keys(engine) == constraints
        assert _indexes(engine) == indexes
    assert _native_snapshot(engine) == natives


def _canonical(target: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the target's tables less the ids the target numbers itself (which depend on
    the order rows were inserted in), an account named by its login."""
    state = read_target_state(target)
    logins = state["accounts"].set_index("account_id")["login"]
    canonical = {}
    for name, table in state.items():
        rows = table.drop(columns=[c for c in ("account_id", "entitlement_id", "request_id") if c in table.columns])
        if name != "accounts" and "account_id" in table.columns:
            rows = rows.assign(account=table["account_id"].map(logins))
        canonical[name] = sorted(
            tuple(None if pd.isna(v) else v for v in row) for row in rows.itertuples(index=False)
        )
    with target.connect() as conn:
        canonical["migration_exceptions"] = sorted(tuple(row) for row in conn.execute(text(
            "SELECT run_id, entity, legacy_key, outcome, reason_code, detail, merged_into FROM migration_exceptions"
        )))
    return canonical


@pytest.mark.postgres
def test_a_first_wave_without_its_key_indexes_leaves_out_the_keys_native_rows_hold_as_on_conflict_does(
    new_database_url: Callable[[str], str],
) -> None:
    """Natives holding a key of the frames (a legacy id EFP Connect gave an account of its own,
    a native entitlement with a legacy id): with the key's unique index dropped for the insert,
    the anti-join must leave the same rows out as ON CONFLICT does row by row."""
    outcomes = []
    for fk_checks in ("set", "per-row"):
        target = make_engine(new_database_url("postgres"))
        try:
            init_target(target)
            _seed_natives(target)
            with target.begin() as conn:
                conn.execute(text("UPDATE accounts SET legacy_user_id = 1004 WHERE origin = 'NATIVE'"))
                conn.execute(text("UPDATE entitlements SET legacy_habilitation_id = 5004 WHERE origin = 'NATIVE'"))
            result = load(target, _wave_one(), LoadConfig(run_id="w1", fk_checks=fk_checks))
            outcomes.append((result.indexes_rebuilt, result.to_dict()["tables"], _canonical(target)))
        finally:
            target.dispose()
    (rebuilt, counts, rows), (rebuilt_per_row, counts_per_row, rows_per_row) = outcomes
    assert rebuilt == _WAVE_ONE_REBUILT
    assert rebuilt_per_row == ()
    assert counts["accounts"]["native_kept"] == 1
    assert counts["entitlements"]["native_kept"] == 1
    assert counts == counts_per_row
    assert rows == rows_per_row


@pytest.mark.postgres
def test_a_table_holding_more_rows_than_it_receives_keeps_its_indexes(
    new_database_url: Callable[[str], str],
) -> None:
    """Rebuilding the indexes of a table larger than the insert would cost more than the
    insert: five native accounts against wave one's four keep the accounts' indexes."""
    target = make_engine(new_database_url("postgres"))
    try:
        init_target(target)
        _seed_natives(target)
        with target.begin() as conn:
            for n in range(4):
                conn.execute(text(
                    "INSERT INTO accounts (login, email, last_name, first_name, account_type, status, "
                    "must_reset_password, created_at, origin) VALUES "
                    f"('native{n}@efp-connect.fr', 'native{n}@efp-connect.fr', 'N', 'N', 'PRO', 'ACTIVE', "
                    "false, '2024-12-01', 'NATIVE')"
                ))
        result = load(target, _wave_one(), LoadConfig(run_id="w1", fk_checks="set"))

        assert result.indexes_rebuilt == ("entitlements", "access_requests", "migration_exceptions")
        _assert_converged(target, _wave_one(), native_keys={"establishments": {SIRET_NATIVE}})
    finally:
        target.dispose()


@pytest.mark.parametrize("fk_checks", ["set", "per-row"])
def test_a_duplicate_access_tuple_fails_either_way_naming_the_index_and_rolls_everything_back(
    engine: Engine, fk_checks: str
) -> None:
    """The frames' checks cover their keys, not the access tuple: its unique index finds the
    duplicate, row by row or when it is built again after the insert."""
    before = _everything(engine)
    constraints, indexes = _foreign_keys(engine), _indexes(engine)
    wave = _wave_one()
    duplicate = wave.entitlements[wave.entitlements["legacy_habilitation_id"] == 5001].assign(
        legacy_habilitation_id=5009
    )
    wave = dataclasses.replace(wave, entitlements=pd.concat([wave.entitlements, duplicate], ignore_index=True))

    with pytest.raises(exc.IntegrityError, match=r"uq_entitlements_access|UNIQUE constraint failed") as raised:
        load(engine, wave, LoadConfig(run_id="w1", fk_checks=fk_checks))

    if engine.dialect.name == "postgresql":
        # Both name the duplicated key, as "already exists" row by row, "is duplicated" rebuilt.
        assert f"EDOF, {SIRET_A}, GESTIONNAIRE_EDOF)" in str(raised.value.orig)
    _assert_same(before, engine)
    assert _foreign_keys(engine) == constraints
    assert _indexes(engine) == indexes


@pytest.mark.parametrize(("threshold", "expected"), [(5, ("entitlements",)), (6, ())])
def test_auto_foreign_key_checks_go_set_based_from_the_threshold_of_new_rows(
    engine: Engine, threshold: int, expected: tuple[str, ...]
) -> None:
    """Wave one inserts 4 accounts, 5 entitlements, 1 access request and 2 exceptions."""
    result = load(engine, _wave_one(), LoadConfig(run_id="w1", set_checks_from_rows=threshold))

    assert result.set_checked == (expected if engine.dialect.name == "postgresql" else ())
    assert result.indexes_rebuilt == (expected if engine.dialect.name == "postgresql" else ())
    _assert_converged(engine, _wave_one(), native_keys={"establishments": {SIRET_NATIVE}})


def test_fk_checks_must_be_a_known_way() -> None:
    with pytest.raises(ValueError, match="fk_checks must be one of auto, per-row, set"):
        LoadConfig(run_id="r", fk_checks="none")


@pytest.mark.parametrize("fk_checks", ["set", "per-row"])
def test_a_foreign_key_violation_found_either_way_rolls_back_constraints_included(
    engine: Engine, fk_checks: str
) -> None:
    load(engine, _wave_one(), LoadConfig(run_id="w1"))
    before = _everything(engine)
    constraints = _foreign_keys(engine)
    wave = _wave_two()
    wave.entitlements.loc[wave.entitlements["legacy_habilitation_id"] == 5006, "application_code"] = "NOPE"

    with pytest.raises(exc.IntegrityError, match=r"application_code|FOREIGN KEY") as raised:
        load(engine, wave, LoadConfig(run_id="w2", fk_checks=fk_checks))

    if engine.dialect.name == "postgresql":
        # The set-based check names the constraint and the key, as the per-row trigger does.
        assert "entitlements_application_code_fkey" in str(raised.value)
        assert "(NOPE)" in str(raised.value)
    _assert_same(before, engine)
    assert _foreign_keys(engine) == constraints


class _InterruptedError(Exception):
    """Stands for anything that stops a load midway (a crash, a kill)."""


@pytest.mark.parametrize(
    "failing_step",
    [
        "staging entitlements",
        "upsert accounts",
        "delete entitlements",
        "upsert entitlements",
        "delete establishments",
        "insert migration_exceptions",
    ],
)
def test_a_failure_at_any_step_leaves_the_target_as_before(engine: Engine, failing_step: str) -> None:
    _run(engine, _wave_one(), "w1")
    before = _everything(engine)

    seen = _wave_two_failing_at(engine, failing_step, LoadConfig(run_id="w2", batch_rows=2))

    assert seen[-1] == failing_step
    _assert_same(before, engine)


def _wave_two_failing_at(engine: Engine, failing_step: str, config: LoadConfig) -> list[str]:
    """Loads _wave_two, stopped by an error at `failing_step`; the steps seen until then."""
    seen: list[str] = []

    def progress(step: str, rows: int) -> None:
        seen.append(step)
        if step == failing_step:
            raise _InterruptedError(f"killed at {step} ({rows} rows)")

    with pytest.raises(_InterruptedError):
        load(engine, _wave_two(), config, progress=progress)
    return seen


@pytest.mark.parametrize("failing_step", ["upsert entitlements", "upsert access_requests"])
def test_a_failure_while_foreign_keys_are_dropped_leaves_them_in_place(engine: Engine, failing_step: str) -> None:
    """Set-based checks: stopped while a table's constraints are dropped (PostgreSQL; on SQLite
    the same failure, with nothing dropped)."""
    _run(engine, _wave_one(), "w1")
    before = _everything(engine)
    constraints = _foreign_keys(engine)

    seen = _wave_two_failing_at(engine, failing_step, LoadConfig(run_id="w2", fk_checks="set"))

    assert seen[-1] == failing_step
    if engine.dialect.name == "postgresql" and failing_step == "upsert access_requests":
        assert "check entitlements entitlements_account_id_fkey" in seen  # entitlements' were back
    _assert_same(before, engine)
    assert _foreign_keys(engine) == constraints


_KILL_SCRIPT = """
import os, signal, sys
from pipelines.db import make_engine
from pipelines.load import LoadConfig, load
from tests.test_load import _wave_two

def progress(step, rows):
    if step == sys.argv[2]:
        os.kill(os.getpid(), signal.SIGKILL)

load(make_engine(sys.argv[1]), _wave_two(), LoadConfig(run_id="w2", batch_rows=2), progress=progress)
"""


@pytest.mark.parametrize("killed_at", ["staging accounts", "upsert entitlements", "load:converged"])
def test_a_killed_process_leaves_the_target_as_before(
    engine: Engine, target_url: str, killed_at: str
) -> None:
    _run(engine, _wave_one(), "w1")
    before = _everything(engine)

    killed = subprocess.run(
        [sys.executable, "-c", _KILL_SCRIPT, target_url, killed_at],
        cwd=Path(__file__).resolve().parents[1],
        # A progress step, or the load's own crash point just before it commits.
        env={**os.environ, "EFP_KILL_AT": killed_at},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert killed.returncode == -signal.SIGKILL, killed.stderr
    _assert_same(before, engine)


def test_progress_reports_staging_chunks_and_sql_steps(engine: Engine) -> None:
    steps: list[tuple[str, int]] = []
    _run(engine, _wave_one(), "w1", progress=lambda step, rows: steps.append((step, rows)))
    # batch_rows=2: the four accounts go in two chunks.
    staged_accounts = [rows for step, rows in steps if step == "staging accounts"]
    assert staged_accounts == [2, 4]
    assert ("upsert entitlements", 5) in steps
    assert steps[-1] == ("insert migration_exceptions", 2)


@pytest.mark.sqlite
@pytest.mark.postgres
def test_both_engines_end_in_the_same_state(new_database_url: Callable[[str], str]) -> None:
    states = []
    for kind in ("sqlite", "postgres"):
        target = make_engine(new_database_url(kind))
        try:
            init_target(target)
            _seed_natives(target)
            _run(target, _wave_one(), "w1")
            _run(target, _wave_two(), "w2")
            states.append(_comparable(read_target_state(target)))
        finally:
            target.dispose()
    sqlite_state, postgres_state = states
    for name, frame in sqlite_state.items():
        pd.testing.assert_frame_equal(postgres_state[name], frame, obj=name)


def _comparable(state: Mapping[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Surrogate ids differ between engines (PostgreSQL's sequences skip): logins stand in."""
    key_columns = ("legacy_user_id", "legacy_habilitation_id", "login", "siret", "code")
    logins = state["accounts"].set_index("account_id")["login"]
    comparable = {}
    for name, table in state.items():
        frame = table
        if "account_id" in frame.columns and name != "accounts":
            frame = frame.assign(holder_login=frame["account_id"].map(logins))
        frame = frame.drop(columns=[c for c in ("account_id", "entitlement_id", "request_id") if c in frame])
        keys = [c for c in key_columns if c in frame]
        comparable[name] = frame.sort_values(keys, na_position="last").reset_index(drop=True)
    return comparable
