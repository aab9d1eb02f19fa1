"""The independent reconciliation (reports/), its three views, its manifest and its commands.

The legacy side is a small fixed extract built in code (`defects_tables`); the target side is
written by hand, with plain SQL inserts, as a correct migration of it plus the matching
exception register of one run. Nothing here runs the pipeline: the reconciliation is checked
against what the contract says the migration must produce.

`defects_tables`, as-of 2024-11-14 00:00 (Europe/Paris):
- users: 1 PRO ACTIF (courriel with spaces and capitals); 2 PRO EN_ATTENTE with phone "n/a"
  (PHONE_DROPPED); 3 AGENT VERROUILLE; 4 SUPPRIME (USER_DELETED); 5 with an invalid courriel
  (INVALID_EMAIL); 6 and 7 share a login, 7 merged into 6 by a steward (DUPLICATE_LOGIN);
  8 named `<script>alert(1)</script>`;
- establishments: A (written with spaces, two rows: DUPLICATE_SIRET), B (wrong siren:
  SIREN_CORRECTED), C (bad check digit: INVALID_SIRET);
- applications: the catalogue, ECR and REFSTRUCT retired, LEGACYX active but unmapped;
- habilitations 101-123: a duplicate (102 of 101, two spellings of one role), expired (104),
  future start (105), retired app (106), unmapped role (107, 119 whose label is hostile HTML),
  agent without SIRET (108), deleted holder (109), rejected holder (110), merged holder whose
  access duplicates the survivor's (111, 112), rejected establishment (113), unmapped app
  (114), refused (115), pending (116), orphan user (117), PRO without SIRET (118), an end
  date in the future (121), orphan application (122), orphan establishment (123).
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, create_engine, delete, insert, update

from pipelines.cli import main
from pipelines.target_schema import (
    access_requests,
    accounts,
    applications,
    entitlements,
    establishments,
    migration_exceptions,
    migration_runs,
)
from pipelines.target_setup import init_target
from pipelines.timeutil import parse_as_of
from reports.manifest import verify_manifest, write_manifest
from reports.reconciliation import (
    NOT_RECONCILED,
    RECONCILED,
    RECONCILED_WITH_EXCEPTIONS,
    LegacyInputs,
    LegacySource,
    ReconcileConfig,
    ReconciliationReport,
    control_hashes,
    reconcile_frames,
)
from reports.render import (
    CSV_NAME,
    DIFFERENCES_NAME,
    HTML_NAME,
    JSON_NAME,
    REGISTER_NAME,
    render_csv,
    render_html,
    render_json,
)
from tests.legacy_builders import CATALOGUE, build_tables, default_applications, to_frames, write_csv_folder

GOLDEN = Path(__file__).parent / "golden"
REGENERATE = os.environ.get("EFP_REGENERATE_GOLDEN") == "1"
AS_OF = datetime(2024, 11, 14)
RUN_ID = "20241114T010000-a1b2c3"
OLD_RUN_ID = "20241101T010000-000000"
HOSTILE = "<script>alert(1)</script>"
PASSWORD_HASH = "$2b$12$SECRETHASHSECRETHASH"
A, B, C, D = "44306184100005", "55203253400000", "12345678901234", "38012986600006"
FIXED_START, FIXED_END = datetime(2024, 11, 14, 9, 0), datetime(2024, 11, 14, 9, 1)


# --- the legacy extract ---------------------------------------------------------------------------


def defects_tables() -> dict[str, list[dict[str, Any]]]:
    users = [
        {"id_utilisateur": 1, "courriel": "  Alice.Martin@Example.FR ", "nom": "Martin", "prenom": "Alice"},
        {"id_utilisateur": 2, "courriel": "bob@exemple.fr", "statut": "EN_ATTENTE", "telephone": "n/a"},
        {
            "id_utilisateur": 3,
            "courriel": "agent@travail.gouv.fr",
            "type_compte": "AGENT",
            "statut": "VERROUILLE",
        },
        {"id_utilisateur": 4, "courriel": "gone@exemple.fr", "statut": "SUPPRIME"},
        {"id_utilisateur": 5, "courriel": "not-an-email"},
        {"id_utilisateur": 6, "courriel": "dup@exemple.fr"},
        {"id_utilisateur": 7, "courriel": " DUP@exemple.fr"},
        {"id_utilisateur": 8, "courriel": "eve@exemple.fr", "nom": HOSTILE},
    ]
    establishments_rows = [
        {"siret": "443 061 841 00005", "siren": "443061841"},
        {"siret": A, "siren": "443061841", "raison_sociale": "Doublon"},
        {"siret": B, "siren": "552032530"},
        {"siret": C, "siren": "123456789"},
    ]
    habilitations = [
        {
            "id_habilitation": 101,
            "id_utilisateur": 1,
            "code_application": "EDOF",
            "siret": "443 061 841 00005",
            "role": "Gestionnaire EDOF",
            "responsable_acces": True,
        },
        {
            "id_habilitation": 102,
            "id_utilisateur": 1,
            "code_application": "EDOF",
            "siret": A,
            "role": "GESTIONNAIRE_EDOF",
            "date_debut": "2022-01-01 00:00:00",
        },
        {"id_habilitation": 103, "id_utilisateur": 1, "code_application": "MAF", "siret": A},
        {
            "id_habilitation": 104,
            "id_utilisateur": 1,
            "code_application": "CERES",
            "siret": A,
            "date_fin": "2024-01-01 00:00:00",
        },
        {
            "id_habilitation": 105,
            "id_utilisateur": 1,
            "code_application": "SOFFI",
            "siret": A,
            "date_debut": "2025-01-01 00:00:00",
        },
        {"id_habilitation": 106, "id_utilisateur": 2, "code_application": "ECR", "siret": A},
        {
            "id_habilitation": 107,
            "id_utilisateur": 2,
            "code_application": "EDOF",
            "siret": A,
            "role": "Directeur",
        },
        {"id_habilitation": 108, "id_utilisateur": 3, "code_application": "DECA"},
        {"id_habilitation": 109, "id_utilisateur": 4, "code_application": "EDOF", "siret": A},
        {"id_habilitation": 110, "id_utilisateur": 5, "code_application": "MAF", "siret": A},
        {"id_habilitation": 111, "id_utilisateur": 7, "code_application": "MAF", "siret": B},
        {
            "id_habilitation": 112,
            "id_utilisateur": 6,
            "code_application": "MAF",
            "siret": B,
            "role": "utilisateur",
        },
        {"id_habilitation": 113, "id_utilisateur": 2, "code_application": "EDOF", "siret": C},
        {"id_habilitation": 114, "id_utilisateur": 2, "code_application": "LEGACYX", "siret": A},
        {
            "id_habilitation": 115,
            "id_utilisateur": 1,
            "code_application": "MSDC",
            "siret": A,
            "statut": "REFUSEE",
        },
        {
            "id_habilitation": 116,
            "id_utilisateur": 2,
            "code_application": "CERES",
            "siret": A,
            "statut": "EN_ATTENTE",
            "date_debut": "2024-10-01 10:00:00",
            "date_relance": "2024-10-15 10:00:00",
        },
        {"id_habilitation": 117, "id_utilisateur": 999, "code_application": "MAF", "siret": A},
        {"id_habilitation": 118, "id_utilisateur": 2, "code_application": "MAF"},
        {
            "id_habilitation": 119,
            "id_utilisateur": 8,
            "code_application": "EDOF",
            "siret": A,
            "role": HOSTILE,
        },
        {"id_habilitation": 120, "id_utilisateur": 8, "code_application": "MAF", "siret": A},
        {
            "id_habilitation": 121,
            "id_utilisateur": 1,
            "code_application": "EDOF",
            "siret": A,
            "role": "Lecteur EDOF",
            "date_fin": "2025-06-30 00:00:00",
            "id_delegant": 2,
        },
        {"id_habilitation": 122, "id_utilisateur": 2, "code_application": "ZZZ", "siret": A},
        {"id_habilitation": 123, "id_utilisateur": 3, "code_application": "DECA", "siret": D},
    ]
    apps = [
        *default_applications(),
        {"code_application": "LEGACYX", "libelle": "Appli locale", "actif": True},
    ]
    return build_tables(users, establishments_rows, habilitations, apps)


def clean_tables() -> dict[str, list[dict[str, Any]]]:
    """No defect at all: every record migrates as is."""
    users = [
        {"id_utilisateur": 1, "courriel": "alice@exemple.fr"},
        {"id_utilisateur": 3, "courriel": "agent@travail.gouv.fr", "type_compte": "AGENT"},
    ]
    habilitations = [
        {
            "id_habilitation": 201,
            "id_utilisateur": 1,
            "code_application": "EDOF",
            "siret": A,
            "role": "Lecteur EDOF",
        },
        {"id_habilitation": 202, "id_utilisateur": 3, "code_application": "DECA"},
    ]
    catalogue = [app for app in default_applications() if app["actif"]]
    return build_tables(users, [{"siret": A, "siren": "443061841"}], habilitations, catalogue)


# --- the target, written by hand as the contract says a correct migration leaves it -------------

T0 = datetime(2020, 1, 15, 9, 0)
START = datetime(2021, 3, 1, 8, 0)


def _account(
    account_id: int,
    legacy_id: int | None,
    login: str,
    *,
    account_type: str = "PRO",
    status: str = "ACTIVE",
    origin: str = "MIGRATION",
) -> dict[str, Any]:
    return {
        "account_id": account_id,
        "legacy_user_id": legacy_id,
        "login": login,
        "email": login,
        "last_name": "Martin",
        "first_name": "Claire",
        "phone": None,
        "account_type": account_type,
        "status": status,
        "must_reset_password": origin == "MIGRATION",
        "password_hash": None,
        "created_at": T0,
        "last_login_at": None,
        "origin": origin,
        "created_by_run": RUN_ID if origin == "MIGRATION" else None,
        "written_by_run": RUN_ID if origin == "MIGRATION" else None,
    }


def _entitlement(
    entitlement_id: int,
    account_id: int,
    app: str,
    siret: str | None,
    role: str,
    *,
    legacy_id: int | None,
    valid_from: datetime = START,
    valid_until: datetime | None = None,
    manager: bool = False,
    origin: str = "MIGRATION",
) -> dict[str, Any]:
    return {
        "entitlement_id": entitlement_id,
        "account_id": account_id,
        "application_code": app,
        "siret": siret,
        "role": role,
        "is_access_manager": manager,
        "valid_from": valid_from,
        "valid_until": valid_until,
        "delegated_by_legacy_user_id": None,
        "legacy_habilitation_id": legacy_id,
        "origin": origin,
        "created_by_run": RUN_ID if origin == "MIGRATION" else None,
        "written_by_run": RUN_ID if origin == "MIGRATION" else None,
    }


def _exception(
    entity: str,
    key: str,
    outcome: str,
    reason: str,
    detail: str,
    *,
    merged_into: str | None = None,
    run_id: str = RUN_ID,
) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "entity": entity,
        "legacy_key": key,
        "outcome": outcome,
        "reason_code": reason,
        "detail": detail,
        "merged_into": merged_into,
    }


def _run(run_id: str, started: datetime, status: str = "succeeded") -> dict[str, Any]:
    return {
        "run_id": run_id,
        "as_of": AS_OF,
        "source": "legacy-fixture",
        "input_fingerprint": None,
        "options": "{}",
        "status": status,
        "started_at": started,
        "ended_at": started,
    }


DEFECTS_REGISTER = [
    _exception("user", "4", "excluded", "USER_DELETED", "compte au statut SUPPRIME"),
    _exception("user", "5", "rejected", "INVALID_EMAIL", "courriel absent ou syntaxiquement invalide"),
    _exception("user", "7", "merged", "DUPLICATE_LOGIN", "fusionné dans id_utilisateur 6", merged_into="6"),
    _exception("user", "2", "corrected", "PHONE_DROPPED", "téléphone non valide, non repris"),
    _exception("establishment", C, "rejected", "INVALID_SIRET", f"SIRET '{C}' : clé de contrôle fausse"),
    _exception("establishment", A, "corrected", "DUPLICATE_SIRET", "2 lignes pour ce SIRET ; ligne retenue : 2"),
    _exception("establishment", B, "corrected", "SIREN_CORRECTED", "siren '552032530' remplacé par '552032534'"),
    _exception("application", "ECR", "excluded", "APPLICATION_RETIRED", "application inactive (actif = faux)"),
    _exception("application", "REFSTRUCT", "excluded", "APPLICATION_RETIRED", "application inactive (actif = faux)"),
    _exception("application", "LEGACYX", "rejected", "APPLICATION_UNMAPPED", "aucun code EFP Connect"),
    _exception(
        "habilitation",
        "102",
        "merged",
        "DUPLICATE_ACCESS",
        "doublon de id_habilitation 101",
        merged_into="101",
    ),
    _exception("habilitation", "104", "excluded", "EXPIRED", "accès échu à la date d'arrêté"),
    _exception("habilitation", "106", "excluded", "APPLICATION_RETIRED", "application retirée"),
    _exception("habilitation", "107", "rejected", "ROLE_UNMAPPED", "rôle 'Directeur' inconnu pour EDOF"),
    _exception("habilitation", "109", "excluded", "USER_DELETED", "id_utilisateur 4 supprimé"),
    _exception("habilitation", "110", "rejected", "USER_REJECTED", "id_utilisateur 5 rejeté"),
    _exception(
        "habilitation",
        "112",
        "merged",
        "DUPLICATE_ACCESS",
        "doublon de id_habilitation 111",
        merged_into="111",
    ),
    _exception("habilitation", "113", "rejected", "ESTABLISHMENT_REJECTED", f"SIRET {C} rejeté"),
    _exception("habilitation", "114", "rejected", "APPLICATION_UNMAPPED", "application sans correspondance"),
    _exception("habilitation", "115", "excluded", "NOT_GRANTED", "statut REFUSEE"),
    _exception("habilitation", "117", "rejected", "ORPHAN_USER", "id_utilisateur 999 absent de l'extraction"),
    _exception("habilitation", "118", "rejected", "MISSING_SIRET", "usager PRO sans SIRET"),
    _exception("habilitation", "119", "rejected", "ROLE_UNMAPPED", f"rôle '{HOSTILE}' inconnu pour EDOF"),
    _exception("habilitation", "122", "rejected", "ORPHAN_APPLICATION", "application absente de l'extraction"),
    _exception("habilitation", "123", "rejected", "ORPHAN_ESTABLISHMENT", f"SIRET {D} absent des établissements"),
]
# The missing tuples the register explains (by reason), for the migrated target below.
DEFECTS_EXPLAINED = {
    "APPLICATION_UNMAPPED": 1,
    "ESTABLISHMENT_REJECTED": 1,
    "MISSING_SIRET": 1,
    "ORPHAN_ESTABLISHMENT": 1,
    "ROLE_UNMAPPED": 2,
    "USER_REJECTED": 1,
}


def _insert(engine: Engine, table: Any, rows: list[dict[str, Any]]) -> None:
    if rows:
        with engine.begin() as conn:
            conn.execute(insert(table), rows)


def _catalogue_applications() -> list[dict[str, Any]]:
    return [
        {
            "code": code,
            "name": f"Application {code}",
            "legacy_code": code,
            "origin": "MIGRATION",
            "created_by_run": RUN_ID,
            "written_by_run": RUN_ID,
        }
        for code in CATALOGUE
    ]


def _establishment(siret: str) -> dict[str, Any]:
    return {
        "siret": siret,
        "siren": siret[:9],
        "name": "Formation Conseil SARL",
        "address": "1 rue de la Paix",
        "postal_code": "75002",
        "city": "Paris",
        "closed_on": None,
        "origin": "MIGRATION",
        "created_by_run": RUN_ID,
        "written_by_run": RUN_ID,
    }


def migrate_defects(engine: Engine) -> None:
    """The target a correct migration of `defects_tables` at AS_OF leaves, with one native account."""
    init_target(engine)
    _insert(engine, applications, _catalogue_applications())
    _insert(engine, establishments, [_establishment(A), _establishment(B)])
    _insert(
        engine,
        accounts,
        [
            _account(1, 1, "alice.martin@example.fr"),
            _account(2, 2, "bob@exemple.fr", status="PENDING"),
            _account(3, 3, "agent@travail.gouv.fr", account_type="AGENT", status="LOCKED"),
            _account(4, 6, "dup@exemple.fr"),
            _account(5, 8, "eve@exemple.fr"),
            _account(50, None, "native@efp.fr", origin="NATIVE"),
        ],
    )
    _insert(
        engine,
        entitlements,
        [
            _entitlement(1, 1, "EDOF", A, "GESTIONNAIRE_EDOF", legacy_id=101, manager=True),
            _entitlement(2, 1, "MAF", A, "UTILISATEUR", legacy_id=103),
            _entitlement(3, 1, "SOFFI", A, "UTILISATEUR", legacy_id=105, valid_from=datetime(2025, 1, 1)),
            _entitlement(4, 3, "DECA", None, "UTILISATEUR", legacy_id=108),
            _entitlement(5, 4, "MAF", B, "UTILISATEUR", legacy_id=111),
            _entitlement(6, 5, "MAF", A, "UTILISATEUR", legacy_id=120),
            _entitlement(7, 1, "EDOF", A, "LECTEUR_EDOF", legacy_id=121, valid_until=datetime(2025, 6, 30)),
            _entitlement(8, 50, "EDOF", A, "GESTIONNAIRE_EDOF", legacy_id=None, origin="NATIVE"),
        ],
    )
    _insert(
        engine,
        access_requests,
        [
            {
                "request_id": 1,
                "account_id": 2,
                "application_code": "CERES",
                "siret": A,
                "role": "UTILISATEUR",
                "requested_at": datetime(2024, 10, 1, 10),
                "last_reminder_at": datetime(2024, 10, 15, 10),
                "legacy_habilitation_id": 116,
                "origin": "MIGRATION",
                "created_by_run": RUN_ID,
                "written_by_run": RUN_ID,
            }
        ],
    )
    # An older run with a register of its own: the default register is the latest run's.
    _insert(
        engine,
        migration_runs,
        [_run(OLD_RUN_ID, datetime(2024, 11, 1, 1)), _run(RUN_ID, datetime(2024, 11, 14, 1))],
    )
    _insert(
        engine,
        migration_exceptions,
        [
            *DEFECTS_REGISTER,
            _exception("habilitation", "103", "rejected", "ROLE_UNMAPPED", "stale", run_id=OLD_RUN_ID),
        ],
    )


def migrate_clean(engine: Engine) -> None:
    init_target(engine)
    _insert(engine, applications, _catalogue_applications())
    _insert(engine, establishments, [_establishment(A)])
    _insert(
        engine,
        accounts,
        [
            _account(1, 1, "alice@exemple.fr"),
            _account(2, 3, "agent@travail.gouv.fr", account_type="AGENT"),
            _account(50, None, "native@efp.fr", origin="NATIVE"),
        ],
    )
    _insert(
        engine,
        entitlements,
        [
            _entitlement(1, 1, "EDOF", A, "LECTEUR_EDOF", legacy_id=201),
            _entitlement(2, 2, "DECA", None, "UTILISATEUR", legacy_id=202),
            _entitlement(3, 50, "MAF", A, "UTILISATEUR", legacy_id=None, origin="NATIVE"),
        ],
    )
    _insert(engine, migration_runs, [_run(RUN_ID, datetime(2024, 11, 14, 1))])


def tamper(engine: Engine) -> None:
    """What an auditor must see: an access lost, one gained, a role changed, a reset cleared, a
    password hash set."""
    with engine.begin() as conn:
        conn.execute(delete(entitlements).where(entitlements.c.legacy_habilitation_id == 103))
        conn.execute(
            insert(entitlements),
            [_entitlement(90, 3, "EDOF", None, "LECTEUR_EDOF", legacy_id=None, origin="NATIVE")],
        )
        conn.execute(update(entitlements).where(entitlements.c.legacy_habilitation_id == 120).values(role=HOSTILE))
        conn.execute(update(accounts).where(accounts.c.legacy_user_id == 2).values(must_reset_password=False))
        conn.execute(update(accounts).where(accounts.c.legacy_user_id == 8).values(password_hash=PASSWORD_HASH))


# --- fixtures and helpers -------------------------------------------------------------------------


@pytest.fixture
def engine(target_url: str) -> Iterator[Engine]:
    created = create_engine(target_url)
    yield created
    created.dispose()


def config(target_url: str, out_dir: Path, **overrides: Any) -> ReconcileConfig:
    values: dict[str, Any] = {
        "source": "legacy-fixture",
        "target_url": target_url,
        "as_of": AS_OF,
        "out_dir": out_dir,
        "started_at": FIXED_START,
        "ended_at": FIXED_END,
    }
    values.update(overrides)
    return ReconcileConfig(**values)


def reconcile_tables(
    tables: dict[str, list[dict[str, Any]]], engine: Engine, target_url: str, out_dir: Path, **overrides: Any
) -> ReconciliationReport:
    inputs = LegacyInputs(source_display="legacy-fixture", file_checksums={"utilisateurs.csv": "0" * 64})
    return reconcile_frames(to_frames(tables), engine, config(target_url, out_dir, **overrides), inputs=inputs)


def by_app(report: ReconciliationReport) -> dict[str, Any]:
    return {a.application_code: a for a in report.applications}


def normalised_json(text: str) -> dict[str, Any]:
    """The JSON with what legitimately varies between two reconciliations blanked."""
    data = json.loads(text)
    data["run_id"] = "<run_id>"
    data["header"]["run_id"] = "<run_id>"
    for key in ("started_at", "ended_at"):
        data["header"][key] = "<timestamp>"
    data["header"]["configuration"]["target"] = "<target>"
    data["header"]["configuration"]["out_dir"] = "<out_dir>"
    data["exception_register"]["run_id"] = "<run_id>"
    register_run = data["header"]["register_run"]
    if register_run:
        register_run["run_id"] = "<run_id>"
    return data


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if REGENERATE:
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.is_file(), f"{path} missing: run with EFP_REGENERATE_GOLDEN=1 to create it"
    assert text == path.read_text(encoding="utf-8"), f"{name} differs from its golden file"


# --- the verdicts ---------------------------------------------------------------------------------


def test_correct_migration_of_defects_is_reconciled_with_exceptions(
    engine: Engine, target_url: str, tmp_path: Path
) -> None:
    migrate_defects(engine)
    report = reconcile_tables(defects_tables(), engine, target_url, tmp_path)

    assert report.verdict == RECONCILED_WITH_EXCEPTIONS, report.verdict_reasons
    assert report.run_id == RUN_ID
    assert report.explained_by_reason() == DEFECTS_EXPLAINED
    apps = by_app(report)
    assert (apps["EDOF"].legacy_access, apps["EDOF"].target_access, apps["EDOF"].explained) == (5, 2, 3)
    assert apps["EDOF"].missing_explained_by_reason == {"ESTABLISHMENT_REJECTED": 1, "ROLE_UNMAPPED": 2}
    assert (apps["MAF"].legacy_access, apps["MAF"].target_access, apps["MAF"].explained) == (5, 3, 2)
    assert (apps["DECA"].legacy_access, apps["DECA"].target_access) == (2, 1)
    assert (apps["LEGACYX"].legacy_access, apps["LEGACYX"].target_access) == (1, 0)
    assert (apps["SOFFI"].legacy_access, apps["SOFFI"].target_access) == (0, 0)  # starts in the future
    assert apps["ECR"].legacy_codes == ("ECR",)
    assert apps["ECR"].legacy_access == 0
    assert all(a.unexplained == 0 for a in report.applications)
    assert report.totals()["legacy_access"] == 13
    assert report.totals()["matched"] == 6
    assert apps["MAF"].legacy_control_hash != apps["MAF"].target_control_hash
    assert apps["EDOF"].matched == 2

    outcomes = {o.entity: o for o in report.outcomes}
    assert (
        outcomes["user"].source,
        outcomes["user"].migrated,
        outcomes["user"].excluded,
        outcomes["user"].rejected,
        outcomes["user"].merged,
    ) == (8, 5, 1, 1, 1)
    assert (
        outcomes["establishment"].source,
        outcomes["establishment"].migrated,
        outcomes["establishment"].rejected,
    ) == (3, 2, 1)
    assert (
        outcomes["application"].source,
        outcomes["application"].migrated,
        outcomes["application"].excluded,
        outcomes["application"].rejected,
    ) == (20, 17, 2, 1)
    assert (
        outcomes["habilitation"].source,
        outcomes["habilitation"].migrated,
        outcomes["habilitation"].excluded,
        outcomes["habilitation"].rejected,
        outcomes["habilitation"].merged,
    ) == (23, 8, 4, 9, 2)
    assert all(o.balanced for o in report.outcomes)
    assert all(r.remainder == 0 for r in report.roll_forward)
    assert {r.entity: r.corrected for r in report.roll_forward}["establishment"] == {
        "DUPLICATE_SIRET": 1,
        "SIREN_CORRECTED": 1,
    }
    assert all(c.failed == 0 and c.checked == 5 for c in report.account_checks)
    assert len(report.exception_register) == len(DEFECTS_REGISTER)  # the latest run's register only
    assert not report.missing_unexplained
    assert not report.extra_in_target


def test_clean_migration_is_reconciled(engine: Engine, target_url: str, tmp_path: Path) -> None:
    migrate_clean(engine)
    report = reconcile_tables(clean_tables(), engine, target_url, tmp_path)
    assert report.verdict == RECONCILED, report.verdict_reasons
    assert not report.exception_register
    apps = by_app(report)
    assert apps["EDOF"].legacy_control_hash == apps["EDOF"].target_control_hash
    assert (apps["EDOF"].legacy_access, apps["EDOF"].target_access, apps["EDOF"].matched) == (1, 1, 1)
    # The native account and its access are outside the reconciliation.
    assert apps["MAF"].target_access == 0


def test_tampered_target_is_not_reconciled_and_every_change_is_named(
    engine: Engine, target_url: str, tmp_path: Path
) -> None:
    migrate_defects(engine)
    tamper(engine)
    report = reconcile_tables(defects_tables(), engine, target_url, tmp_path)

    assert report.verdict == NOT_RECONCILED
    missing = {(d.legacy_user_id, d.application_code, d.siret, d.role): d for d in report.missing_unexplained}
    extra = {(d.legacy_user_id, d.application_code, d.siret, d.role): d for d in report.extra_in_target}
    assert set(missing) == {(1, "MAF", A, "UTILISATEUR"), (8, "MAF", A, "UTILISATEUR")}
    assert missing[(1, "MAF", A, "UTILISATEUR")].legacy_habilitation_ids == (103,)
    assert set(extra) == {(3, "EDOF", None, "LECTEUR_EDOF"), (8, "MAF", A, HOSTILE)}
    assert extra[(3, "EDOF", None, "LECTEUR_EDOF")].entitlement_ids == (90,)
    assert extra[(8, "MAF", A, HOSTILE)].legacy_habilitation_ids == (120,)
    checks = {c.name: c for c in report.account_checks}
    assert checks["must_reset_password"].failing_legacy_user_ids == (2,)
    assert checks["no_password_hash"].failing_legacy_user_ids == (8,)
    assert all(c.failed == 0 for name, c in checks.items() if name not in ("must_reset_password", "no_password_hash"))
    habilitations = {o.entity: o for o in report.outcomes}["habilitation"]
    assert not habilitations.balanced  # 103 is neither migrated nor in the register any more

    data = json.loads(render_json(report))
    assert data["verdict"] == NOT_RECONCILED
    named_missing = {
        (d["legacy_user_id"], d["application_code"], d["siret"], d["role"])
        for d in data["unexplained_differences"]["missing_from_target"]
    }
    named_extra = {
        (d["legacy_user_id"], d["application_code"], d["siret"], d["role"])
        for d in data["unexplained_differences"]["extra_in_target"]
    }
    assert named_missing == set(missing)
    assert named_extra == set(extra)
    failing = {c["name"]: c["failing_legacy_user_ids"] for c in data["account_checks"]}
    assert failing["must_reset_password"] == [2]
    assert failing["no_password_hash"] == [8]
    assert "SECRETHASH" not in render_json(report)

    html = render_html(report)
    section = html[html.index('id="differences"') : html.index('id="account-checks"')]
    for user, app, siret, role in (*missing, *extra):
        row = re.search(
            rf"<tr><td class=\"num\">{user}</td><td class=\"mono\">{app}</td>"
            rf"<td class=\"mono\">{siret or 'NULL'}</td><td class=\"mono\">"
            rf"{re.escape(role.replace('<', '&lt;').replace('>', '&gt;'))}</td>",
            section,
        )
        assert row, (user, app, siret, role)
    checks_section = html[html.index('id="account-checks"') : html.index('id="register"')]
    assert re.search(r"must_reset_password</span>.*?<td class=\"mono\">2 \(", checks_section, re.S)


def test_default_register_is_the_latest_qualifying_run_and_run_can_be_chosen(
    engine: Engine, target_url: str, tmp_path: Path
) -> None:
    migrate_defects(engine)
    old = reconcile_tables(defects_tables(), engine, target_url, tmp_path, run_id=OLD_RUN_ID)
    assert old.run_id == OLD_RUN_ID
    assert len(old.exception_register) == 1
    assert old.verdict == NOT_RECONCILED  # the old register explains none of today's differences
    with engine.begin() as conn:
        conn.execute(insert(migration_runs), [_run("20241120T000000-failed", datetime(2024, 11, 20), "failed")])
    assert reconcile_tables(defects_tables(), engine, target_url, tmp_path).run_id == RUN_ID


def test_target_side_keeps_the_run_register_alone(engine: Engine, target_url: str, tmp_path: Path) -> None:
    """Of the exceptions only the chosen run's register rows are kept, in the columns read from
    then on; every run's rows and the whole entitlements are let go of once used."""
    import weakref

    from reports.reconciliation import _REGISTER_ROW_COLUMNS, target_side
    from reports.target_reader import read_target

    migrate_defects(engine)
    tables = read_target(engine)
    every_run, entitlements = weakref.ref(tables["migration_exceptions"]), weakref.ref(tables["entitlements"])
    side = target_side(tables, config(target_url, tmp_path), evidence=())
    assert "migration_exceptions" not in tables
    assert every_run() is None
    assert entitlements() is None
    assert list(side.register.columns) == list(_REGISTER_ROW_COLUMNS)
    assert list(side.tables["entitlements"].columns) == ["legacy_habilitation_id"]
    assert len(side.register) == len(reconcile_tables(defects_tables(), engine, target_url, tmp_path).exception_register)
    assert len(side.register)


def test_target_without_any_run_uses_an_empty_register(engine: Engine, target_url: str, tmp_path: Path) -> None:
    migrate_defects(engine)
    with engine.begin() as conn:
        conn.execute(delete(migration_exceptions))
        conn.execute(delete(migration_runs))
    report = reconcile_tables(defects_tables(), engine, target_url, tmp_path)
    assert report.run_id is None
    assert not report.exception_register
    assert report.verdict == NOT_RECONCILED
    # The 7 losses the register explained, and user 7's access: without the register nothing
    # says 7 was merged into 6, so it counts under 7, who has no account.
    assert report.totals()["missing_unexplained"] == 8


def test_personal_data_only_on_request(engine: Engine, target_url: str, tmp_path: Path) -> None:
    migrate_defects(engine)
    tamper(engine)
    hidden = reconcile_tables(defects_tables(), engine, target_url, tmp_path)
    shown = reconcile_tables(defects_tables(), engine, target_url, tmp_path, show_personal_data=True)
    for text in (render_json(hidden), render_html(hidden), render_csv(hidden)):
        assert "alice.martin@example.fr" not in text.lower()
        assert "Alice" not in text
    holders = {d.legacy_user_id: d.holder for d in shown.missing_unexplained}
    assert holders[1] == "Alice Martin <Alice.Martin@Example.FR>"
    assert "Alice Martin" in render_html(shown)


# --- the views ------------------------------------------------------------------------------------


def test_json_has_the_contract_shape(engine: Engine, target_url: str, tmp_path: Path) -> None:
    migrate_defects(engine)
    data = json.loads(render_json(reconcile_tables(defects_tables(), engine, target_url, tmp_path)))
    assert list(data)[:5] == ["run_id", "as_of", "verdict", "applications", "outcomes"]
    assert data["as_of"] == "2024-11-14T00:00:00"
    for app in data["applications"]:
        assert {"application_code", "legacy_access", "target_access", "explained", "unexplained"} <= set(app)
    assert set(data["outcomes"]) == {"user", "establishment", "application", "habilitation"}
    for counts in data["outcomes"].values():
        assert set(counts) == {"source", "migrated", "excluded", "rejected", "merged"}
    assert data["header"]["tool_version"]
    legacy_columns = {c for e in data["evidence"]["legacy"] for c in e["columns"]}
    assert "mot_de_passe_hash" not in legacy_columns
    accounts_evidence = next(e for e in data["evidence"]["target"] if e["table"] == "accounts")
    assert accounts_evidence["redacted_columns"] == ["password_hash"]


def test_golden_json_and_csv(engine: Engine, target_url: str, tmp_path: Path) -> None:
    """Same golden files on both engines: the evidence does not depend on the database."""
    migrate_defects(engine)
    report = reconcile_tables(defects_tables(), engine, target_url, tmp_path)
    normalised = json.dumps(normalised_json(render_json(report)), indent=2, ensure_ascii=False) + "\n"
    check_golden("reconciliation_defects.json", normalised)
    check_golden("reconciliation_defects_by_application.csv", render_csv(report))


def test_two_reconciliations_give_identical_reports(engine: Engine, target_url: str, tmp_path: Path) -> None:
    migrate_defects(engine)
    first = reconcile_tables(defects_tables(), engine, target_url, tmp_path, started_at=None, ended_at=None)
    # Same data, rows in another order: nothing in the reports may depend on it.
    shuffled = {name: list(reversed(rows)) for name, rows in defects_tables().items()}
    second = reconcile_tables(shuffled, engine, target_url, tmp_path, started_at=None, ended_at=None)
    first_json, second_json = normalised_json(render_json(first)), normalised_json(render_json(second))
    assert first_json["evidence"]["target"] == second_json["evidence"]["target"]
    # The legacy evidence hashes each table ordered by its key; etablissements has none and is
    # ordered by content, so reversing rows leaves every hash unchanged too.
    assert first_json == second_json
    assert render_csv(first) == render_csv(second)


def test_control_hash_ignores_order_and_sees_every_field() -> None:

    rows = pd.DataFrame(
        {
            "legacy_user_id": [2, 10, 1],
            "application_code": ["EDOF"] * 3,
            "siret": [A, None, A],
            "role": ["R", "R", "R\tX"],
        }
    )
    reversed_rows = rows.iloc[::-1].reset_index(drop=True)
    assert control_hashes(rows) == control_hashes(reversed_rows)
    changed = rows.assign(siret=[A, "", A])  # NULL and "" are different values
    assert control_hashes(rows) != control_hashes(changed)
    import hashlib

    expected = f"1\tEDOF\t{A}\tR\\tX\n2\tEDOF\t{A}\tR\n10\tEDOF\t\\N\tR\n"
    assert control_hashes(rows)["EDOF"] == hashlib.sha256(expected.encode()).hexdigest()


def test_html_is_self_contained_and_escapes_data(engine: Engine, target_url: str, tmp_path: Path) -> None:
    migrate_defects(engine)
    tamper(engine)
    html = render_html(reconcile_tables(defects_tables(), engine, target_url, tmp_path))
    assert html.startswith("<!DOCTYPE html>")
    assert "<script" not in html.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert not re.search(r"(?i)(src|href)\s*=", html)
    assert "http://" not in html
    assert "https://" not in html
    assert "@import" not in html
    assert "url(" not in html
    assert "@page { size: A4" in html
    assert "@media print" in html
    for heading in ("Préparé par", "Revu par", "Approuvé par"):
        assert heading in html
    for section in (
        'id="header"',
        'id="evidence"',
        'id="outcomes"',
        'id="applications"',
        'id="differences"',
        'id="account-checks"',
        'id="register"',
        'id="sign-off"',
    ):
        assert section in html
    # Every register row is there.
    register = html[html.index('id="register"') : html.index('id="sign-off"')]
    assert register.count("<tr><td>") == len(DEFECTS_REGISTER)
    _assert_well_formed(html)


def _assert_well_formed(html: str) -> None:
    """Every element that needs closing is closed, in order (a stack over the tags)."""
    from html.parser import HTMLParser

    void = {"meta", "br", "link", "img", "input", "hr", "col"}

    class Checker(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.stack: list[str] = []

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            if tag not in void:
                self.stack.append(tag)

        def handle_endtag(self, tag: str) -> None:
            assert self.stack, tag
            assert self.stack[-1] == tag, (tag, self.stack[-5:])
            self.stack.pop()

    checker = Checker()
    checker.feed(html)
    checker.close()
    assert checker.stack == []


def test_csv_is_spreadsheet_safe(engine: Engine, target_url: str, tmp_path: Path) -> None:
    tables = clean_tables()
    tables["applications"].append({"code_application": "=HYPERLINK(1)", "libelle": "x", "actif": False})
    migrate_clean(engine)
    text = render_csv(reconcile_tables(tables, engine, target_url, tmp_path))
    assert text.splitlines()[0].startswith("application_code,legacy_codes,legacy_access,target_access")
    assert "\n'=HYPERLINK(1)," in text


# --- manifest -------------------------------------------------------------------------------------


def test_manifest_detects_a_changed_artefact(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    (run_dir / "sub").mkdir(parents=True)
    (run_dir / "a.txt").write_text("one", encoding="utf-8")
    (run_dir / "sub" / "b.txt").write_text("two", encoding="utf-8")
    path = write_manifest(run_dir, {"legacy/utilisateurs.csv": "f" * 64})
    manifest = json.loads(path.read_text(encoding="utf-8"))
    assert set(manifest["files"]) == {"a.txt", "sub/b.txt"}
    assert manifest["inputs"] == {"legacy/utilisateurs.csv": "f" * 64}
    assert verify_manifest(run_dir).intact

    (run_dir / "a.txt").write_text("one!", encoding="utf-8")
    (run_dir / "sub" / "b.txt").unlink()
    (run_dir / "c.txt").write_text("new", encoding="utf-8")
    result = verify_manifest(run_dir)
    assert not result.intact
    assert (result.changed, result.missing, result.added) == (("a.txt",), ("sub/b.txt",), ("c.txt",))


# --- the commands ---------------------------------------------------------------------------------


@pytest.fixture
def fake_extract(monkeypatch: pytest.MonkeyPatch) -> Callable[[dict[str, list[dict[str, Any]]]], None]:
    """Makes `reconcile` read the given tables whatever its --source (the readers have tests of their own)."""

    def install(tables: dict[str, list[dict[str, Any]]]) -> None:
        def fake(source: str) -> LegacySource:
            return LegacySource(
                frames=to_frames(tables),
                inputs=LegacyInputs(source_display=source, file_checksums={"x.csv": "1" * 64}),
            )

        monkeypatch.setattr("reports.reconciliation.extract_legacy", fake)

    return install


def _failure(result: Any) -> str:
    """What a CliRunner result printed, and the traceback of what it raised, for assertion messages."""
    import traceback

    raised = "".join(traceback.format_exception(*result.exc_info)) if result.exc_info else ""
    return f"{result.output}\n{raised}"


def _reconcile_cli(target_url: str, out_dir: Path, *extra: str) -> Any:
    return CliRunner().invoke(
        main,
        [
            "reconcile",
            "--source",
            "legacy-fixture",
            "--target",
            target_url,
            "--as-of",
            "2024-11-14T00:00:00",
            "--out",
            str(out_dir),
            *extra,
        ],
    )


def test_cli_reconcile_exit_status_and_artefacts(
    engine: Engine, target_url: str, tmp_path: Path, fake_extract: Callable[..., None]
) -> None:
    fake_extract(defects_tables())
    migrate_defects(engine)
    out_dir = tmp_path / "out"
    result = _reconcile_cli(target_url, out_dir)
    assert result.exit_code == 0, _failure(result)
    summary = json.loads(result.stdout)
    assert summary["verdict"] == RECONCILED_WITH_EXCEPTIONS
    for name in (JSON_NAME, CSV_NAME, HTML_NAME, "manifest.json"):
        assert (out_dir / name).is_file()
    manifest = json.loads((out_dir / "manifest.json").read_text(encoding="utf-8"))
    assert set(manifest["files"]) == {JSON_NAME, CSV_NAME, HTML_NAME, DIFFERENCES_NAME, REGISTER_NAME}
    assert "legacy/x.csv" in manifest["inputs"]
    assert all(name.startswith("mappings/") for name in manifest["inputs"] if not name.startswith("legacy"))

    verified = CliRunner().invoke(main, ["verify", str(out_dir)])
    assert verified.exit_code == 0, verified.output
    (out_dir / HTML_NAME).write_text((out_dir / HTML_NAME).read_text(encoding="utf-8") + " ", encoding="utf-8")
    altered = CliRunner().invoke(main, ["verify", str(out_dir)])
    assert altered.exit_code == 1
    assert HTML_NAME in altered.output


def test_cli_reconcile_tampered_target_exits_1(
    engine: Engine, target_url: str, tmp_path: Path, fake_extract: Callable[..., None]
) -> None:
    fake_extract(defects_tables())
    migrate_defects(engine)
    tamper(engine)
    out_dir = tmp_path / "out"
    result = _reconcile_cli(target_url, out_dir, "--run", RUN_ID)
    assert result.exit_code == 1, result.output
    data = json.loads((out_dir / JSON_NAME).read_text(encoding="utf-8"))
    assert data["verdict"] == NOT_RECONCILED
    assert len(data["unexplained_differences"]["missing_from_target"]) == 2
    assert len(data["unexplained_differences"]["extra_in_target"]) == 2
    html = (out_dir / HTML_NAME).read_text(encoding="utf-8")
    assert "NOT_RECONCILED" in html
    assert "&lt;script&gt;" in html
    assert "<script" not in html
    differences = (out_dir / DIFFERENCES_NAME).read_text(encoding="utf-8").splitlines()
    assert differences == [
        "kind,legacy_user_id,application_code,siret,role,legacy_habilitation_ids,entitlement_ids",
        f"missing,1,MAF,{A},UTILISATEUR,103,",
        f"missing,8,MAF,{A},UTILISATEUR,120,",
        "extra,3,EDOF,,LECTEUR_EDOF,,90",
        f"extra,8,MAF,{A},{HOSTILE},120,6",
    ]


def test_long_lists_are_cut_in_json_and_html_but_complete_in_the_differences_csv(
    engine: Engine, target_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import reports.reconciliation
    import reports.render

    monkeypatch.setattr(reports.reconciliation, "JSON_LIST_LIMIT", 1)
    monkeypatch.setattr(reports.render, "HTML_DIFFERENCE_LIMIT", 1)
    migrate_defects(engine)
    tamper(engine)
    report = reconcile_tables(defects_tables(), engine, target_url, tmp_path)
    data = json.loads(render_json(report))["unexplained_differences"]
    assert (len(data["missing_from_target"]), data["missing_from_target_total"], data["truncated"]) == (1, 2, True)
    html = render_html(report)
    assert "First 1 of 2" in html
    artefacts = reports.render.write_reports(report, tmp_path / "out")
    assert len(artefacts.differences_path.read_text(encoding="utf-8").splitlines()) == 1 + 4
    # The exception register too: its first rows in the JSON and the HTML, all of them in its CSV.
    register = json.loads(render_json(report))["exception_register"]
    assert (len(register["rows"]), register["row_count"], register["truncated"]) == (1, len(DEFECTS_REGISTER), True)
    assert register["complete_list"] == "reconciliation_register.csv"
    assert f"First 1 of {len(DEFECTS_REGISTER)}; the complete register is in reconciliation_register.csv" in html
    with artefacts.register_path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(DEFECTS_REGISTER)
    assert {(r["entity"], r["legacy_key"], r["reason_code"]) for r in rows} == {
        (r.entity, r.legacy_key, r.reason_code) for r in report.exception_register}


def test_cli_reconcile_rejects_bad_arguments(tmp_path: Path, new_database_url: Callable[[str], str]) -> None:
    url = new_database_url("sqlite")
    out = str(tmp_path / "o")
    bad_as_of = CliRunner().invoke(
        main, ["reconcile", "--source", "x", "--target", url, "--as-of", "yesterday", "--out", out]
    )
    assert bad_as_of.exit_code == 2
    assert "yesterday" in bad_as_of.output
    no_schema = CliRunner().invoke(
        main, ["reconcile", "--source", str(tmp_path), "--target", url, "--as-of", "2024-11-14", "--out", out]
    )
    assert no_schema.exit_code == 2
    assert "no EFP Connect schema" in no_schema.output
    engine = create_engine(url)
    init_target(engine)
    engine.dispose()
    no_extract = CliRunner().invoke(
        main, ["reconcile", "--source", str(tmp_path), "--target", url, "--as-of", "2024-11-14", "--out", out]
    )
    assert no_extract.exit_code == 2
    assert "utilisateurs" in no_extract.output
    not_a_run_folder = CliRunner().invoke(main, ["verify", str(tmp_path)])
    assert not_a_run_folder.exit_code == 2
    assert "manifest" in not_a_run_folder.output


def test_cli_reconcile_unknown_run(
    engine: Engine, target_url: str, tmp_path: Path, fake_extract: Callable[..., None]
) -> None:
    fake_extract(defects_tables())
    migrate_defects(engine)
    result = _reconcile_cli(target_url, tmp_path / "out", "--run", "nope")
    assert result.exit_code == 2
    assert "nope" in result.output


@pytest.mark.sqlite
def test_reconcile_reads_a_real_csv_extract(tmp_path: Path, new_database_url: Callable[[str], str]) -> None:
    """End to end through the real extract: a CSV folder in, the reports and the manifest out."""
    source = write_csv_folder(defects_tables(), tmp_path / "legacy")
    url = new_database_url("sqlite")
    engine = create_engine(url)
    try:
        migrate_defects(engine)
    finally:
        engine.dispose()
    out_dir = tmp_path / "out"
    result = CliRunner().invoke(
        main,
        [
            "reconcile",
            "--source",
            str(source),
            "--target",
            url,
            "--as-of",
            "2024-11-13T23:00:00Z",
            "--out",
            str(out_dir),
        ],
    )
    assert result.exit_code == 0, _failure(result)
    data = json.loads((out_dir / JSON_NAME).read_text(encoding="utf-8"))
    assert data["verdict"] == RECONCILED_WITH_EXCEPTIONS
    assert data["as_of"] == "2024-11-14T00:00:00"  # 23:00 UTC is midnight in Paris in November
    assert set(data["header"]["input_checksums"]) == {
        "utilisateurs.csv",
        "etablissements.csv",
        "applications.csv",
        "habilitations.csv",
    }
    assert "SECRETHASH" not in (out_dir / JSON_NAME).read_text(encoding="utf-8")


def test_empty_extract_and_empty_target_are_reconciled(engine: Engine, target_url: str, tmp_path: Path) -> None:
    init_target(engine)
    report = reconcile_tables(build_tables([], [], [], []), engine, target_url, tmp_path)
    assert report.verdict == RECONCILED, report.verdict_reasons
    assert report.applications == ()
    assert all(o.source == 0 for o in report.outcomes)
    assert "<!DOCTYPE html>" in render_html(report)


def test_an_aware_as_of_is_read_as_paris_time(engine: Engine, target_url: str, tmp_path: Path) -> None:
    from datetime import UTC

    migrate_defects(engine)
    aware = datetime(2024, 11, 13, 23, 0, tzinfo=UTC)
    report = reconcile_tables(defects_tables(), engine, target_url, tmp_path, as_of=aware)
    assert report.header.as_of == AS_OF
    assert report.verdict == RECONCILED_WITH_EXCEPTIONS


def test_canonical_fields() -> None:

    from reports.evidence import canonical_column

    text = pd.Series(["a,b", "", None, 'say "hi"', "line\nbreak", "plain"], dtype="string")
    assert canonical_column(text, "text").tolist() == ['"a,b"', '""', "", '"say ""hi"""', '"line\nbreak"', "plain"]
    assert canonical_column(pd.Series(["x", None], dtype=object), "text").tolist() == ["x", ""]
    stamps = pd.Series(pd.to_datetime(["2024-01-01 10:00:00", "2024-01-01 10:00:00.5", None], format="ISO8601"))
    assert canonical_column(stamps, "datetime").tolist() == ["2024-01-01T10:00:00", "2024-01-01T10:00:00.500000", ""]
    assert canonical_column(stamps, "date").tolist() == ["2024-01-01", "2024-01-01", ""]
    assert canonical_column(pd.Series([1, None], dtype="Int64"), "int").tolist() == ["1", ""]
    assert canonical_column(pd.Series([True, False, None], dtype="boolean"), "bool").tolist() == ["true", "false", ""]
    assert canonical_column(pd.Series(["$2b$secret", None], dtype=object), "redacted").tolist() == ["***", ""]


# --- the as-of instant ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-11-14", datetime(2024, 11, 14)),
        ("2024-11-14T08:30:00", datetime(2024, 11, 14, 8, 30)),
        ("2024-11-14 08:30", datetime(2024, 11, 14, 8, 30)),
        ("2024-11-14T07:30:00Z", datetime(2024, 11, 14, 8, 30)),  # winter: UTC+1
        ("2024-07-01T06:00:00+00:00", datetime(2024, 7, 1, 8, 0)),  # summer: UTC+2
        ("2024-07-01T10:00:00+04:00", datetime(2024, 7, 1, 8, 0)),
    ],
)
def test_parse_as_of(text: str, expected: datetime) -> None:
    assert parse_as_of(text) == expected
    assert parse_as_of(text).tzinfo is None


def test_parse_as_of_rejects_non_iso() -> None:
    with pytest.raises(ValueError, match="14/11/2024"):
        parse_as_of("14/11/2024")


@pytest.mark.parametrize("batch_rows", [None, 2], ids=["default-batches", "batches-of-2"])
def test_target_read_through_adbc_equals_the_driver_read(engine: Engine, batch_rows: int | None,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    # The fast way (ADBC, columnar) and the driver's way give the same typed frames, NULLs,
    # redacted hash and timestamps included; the fast way is really taken (ADBC is a dependency).
    # In batches of 2 rows, SQLite's driver meets columns NULL in a whole first batch then text,
    # which it refuses: those tables are read again in one batch.
    from reports import target_reader
    from reports.target_reader import read_target_arrow, read_target_driver

    if batch_rows is not None:
        monkeypatch.setattr(target_reader, "TARGET_BATCH_ROWS", batch_rows)
    migrate_defects(engine)
    with engine.begin() as conn:  # a fractional second and a set hash, which the fixture lacks
        conn.execute(accounts.update().where(accounts.c.legacy_user_id == 2).values(
            password_hash="$2b$never-read", created_at=datetime(2024, 3, 1, 8, 30, 15, 250000)))
    with caplog.at_level("INFO", logger="reports.target_reader"):
        fast = read_target_arrow(engine)
    assert fast is not None
    read_again = [r.getMessage() for r in caplog.records if "read again in one batch" in r.getMessage()]
    assert bool(read_again) == (batch_rows is not None and engine.dialect.name == "sqlite")
    slow = read_target_driver(engine)
    assert list(fast) == list(slow)
    for name, frame in slow.items():
        pd.testing.assert_frame_equal(fast[name], frame, obj=name)
    hashes = fast["accounts"]["password_hash"]
    assert set(hashes.dropna()) == {"***"}
    assert hashes.notna().sum() == 1
    assert (fast["accounts"]["created_at"] == pd.Timestamp("2024-03-01 08:30:15.250000")).sum() == 1


def test_the_target_is_hashed_whole_then_kept_cut_to_the_columns_used(engine: Engine, tmp_path: Path) -> None:
    """Each target table's evidence is that of the whole table as read (the same as hashing all
    the tables at the end), and only the columns the reconciliation uses are kept afterwards: at a
    million users the whole target weighed 0.8 GB beside the legacy extract."""
    from pipelines.target_schema import TARGET_TABLES
    from reports.reconciliation import TARGET_COLUMNS_USED, read_target_side, target_table_evidence
    from reports.target_reader import read_target

    migrate_defects(engine)
    side = read_target_side(engine, config(str(engine.url), tmp_path))
    whole = read_target(engine)
    assert side.evidence == tuple(target_table_evidence(table.name, whole[table.name]) for table in TARGET_TABLES)
    assert [e.row_count for e in side.evidence] == [len(whole[e.table]) for e in side.evidence]
    for name, frame in side.tables.items():
        kept = ("legacy_habilitation_id",) if name == "entitlements" else TARGET_COLUMNS_USED.get(name)
        assert list(frame.columns) == list(kept or whole[name].columns), name
        assert len(frame) == len(whole[name]), name
    assert len(side.access) > 0


@pytest.mark.parametrize("batch_rows", [None, 2], ids=["default-batches", "batches-of-2"])
def test_the_large_target_tables_are_hashed_batch_by_batch_as_they_are_read(
        engine: Engine, tmp_path: Path, batch_rows: int | None, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """The tables keyed by an integer come in key order and are hashed batch by batch, never held
    whole: their evidence is still that of the whole table, and only the columns used are kept.
    (In batches of 2, SQLite's driver refuses some tables' later batches: those are read whole.)"""
    from pipelines.target_schema import TARGET_TABLES
    from reports import reconciliation, target_reader
    from reports.evidence import KeyOrderedDigest
    from reports.reconciliation import TARGET_COLUMNS_USED, read_target_side, target_table_evidence
    from reports.target_reader import read_target

    if batch_rows is not None:
        monkeypatch.setattr(target_reader, "TARGET_BATCH_ROWS", batch_rows)
        monkeypatch.setattr(target_reader, "STREAMED_BATCH_ROWS", batch_rows)
    batches: dict[str, list[int]] = {}

    class Counted(KeyOrderedDigest):
        def update(self, rows: pd.DataFrame) -> None:
            super().update(rows)
            batches.setdefault(self._order_key, []).append(len(rows))

    monkeypatch.setattr(reconciliation, "KeyOrderedDigest", Counted)
    migrate_defects(engine)
    with caplog.at_level("INFO", logger="reports.target_reader"):
        side = read_target_side(engine, config(str(engine.url), tmp_path))
    whole = read_target(engine)
    assert side.evidence == tuple(target_table_evidence(table.name, whole[table.name]) for table in TARGET_TABLES)
    read_whole = [r.getMessage() for r in caplog.records if "read whole" in r.getMessage()]
    streamed = {key for key, sizes in batches.items() if sum(sizes) > 0}
    if batch_rows is None or engine.dialect.name != "sqlite":  # (the batch size is SQLite's driver's)
        # Every table cut to some columns and keyed by an integer, in one or more batches; none
        # read whole. (The register, kept whole, gains nothing by it.)
        assert streamed == {"account_id", "entitlement_id", "request_id"}
        assert not read_whole
    else:
        assert any(len([n for n in sizes if n]) > 1 for sizes in batches.values())  # several batches
        assert max(max(sizes) for sizes in batches.values()) <= 2
    for name, frame in side.tables.items():
        kept = ("legacy_habilitation_id",) if name == "entitlements" else TARGET_COLUMNS_USED.get(name)
        assert list(frame.columns) == list(kept or whole[name].columns), name
        pd.testing.assert_frame_equal(frame, whole[name][list(frame.columns)], obj=name)


@pytest.mark.parametrize("batch_rows", [None, 2], ids=["default-batches", "batches-of-2"])
def test_a_table_its_sink_refuses_is_read_whole_and_made_by_the_table_hook(
        engine: Engine, batch_rows: int | None, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """Refused at its first batch, or half-way (batches of 2 on SQLite): the table is read again,
    whole, every row of it. (A refusal by the driver itself, half-way, is in the test above.)"""
    from reports import target_reader
    from reports.target_reader import NotStreamableError, read_target

    if batch_rows is not None:
        monkeypatch.setattr(target_reader, "TARGET_BATCH_ROWS", batch_rows)
        monkeypatch.setattr(target_reader, "STREAMED_BATCH_ROWS", batch_rows)
    migrate_defects(engine)
    whole = read_target(engine)
    seen: list[str] = []

    class Refusing:
        kept = ("entitlement_id",)
        taken = 0

        def add(self, rows: pd.DataFrame) -> None:
            Refusing.taken += 1
            if Refusing.taken > (1 if batch_rows and engine.dialect.name == "sqlite" else 0):
                raise NotStreamableError("rows out of order")

        def close(self, frame: pd.DataFrame) -> pd.DataFrame:
            raise AssertionError("never closed once refused")

    def hook(name: str, frame: pd.DataFrame) -> pd.DataFrame:
        seen.append(name)
        return frame

    with caplog.at_level("INFO", logger="reports.target_reader"):
        frames = read_target(engine, hook, lambda name: Refusing() if name == "entitlements" else None)
    assert any("entitlements: read whole (rows out of order)" in r.getMessage() for r in caplog.records)
    assert seen.count("entitlements") == 1
    pd.testing.assert_frame_equal(frames["entitlements"], whole["entitlements"])


def test_an_error_of_a_sink_is_its_own_not_a_reason_to_read_the_other_way(
        engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    from reports.target_reader import read_target

    migrate_defects(engine)

    class Failing:
        kept = ("account_id",)

        def add(self, rows: pd.DataFrame) -> None:
            raise ZeroDivisionError("the sink's own bug")

        def close(self, frame: pd.DataFrame) -> pd.DataFrame:
            return frame

    with caplog.at_level("INFO", logger="reports.target_reader"), pytest.raises(ZeroDivisionError, match="own bug"):
        read_target(engine, None, lambda name: Failing() if name == "accounts" else None)
    assert not any("SQLAlchemy's driver" in r.getMessage() or "read whole" in r.getMessage()
                   for r in caplog.records)


def test_an_error_of_the_table_hook_is_its_own_not_a_reason_to_read_the_other_way(
        engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    from reports.target_reader import read_target

    migrate_defects(engine)
    seen: list[str] = []

    def hook(name: str, frame: pd.DataFrame) -> pd.DataFrame:
        seen.append(name)
        if name == "entitlements":
            raise ZeroDivisionError("the hook's own bug")
        return frame

    with caplog.at_level("INFO", logger="reports.target_reader"), pytest.raises(ZeroDivisionError, match="own bug"):
        read_target(engine, hook)
    assert seen.count("entitlements") == 1  # not read again through the driver
    assert not any("SQLAlchemy's driver" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("show_personal_data", [False, True])
def test_the_legacy_tables_are_hashed_whole_and_compared_cut_to_the_columns_used(
        engine: Engine, tmp_path: Path, show_personal_data: bool) -> None:
    """reconcile() keeps of the legacy extract only the columns the comparison reads, while the
    evidence is that of the whole tables: the report is the one made from the whole frames. Each
    column kept is needed (without it the comparison fails, never quietly)."""
    from concurrent.futures import Future
    from dataclasses import replace

    from pipelines.frames import LEGACY_FRAME_COLUMNS, LegacyFrames
    from reports.reconciliation import (
        HOLDER_COLUMNS,
        LEGACY_COLUMNS_USED,
        extract_legacy,
        legacy_columns_used,
        legacy_evidence,
        read_target_side,
        reconcile,
    )

    migrate_defects(engine)
    write_csv_folder(defects_tables(), tmp_path / "legacy")
    settings = config(str(engine.url), tmp_path / "out", source=str(tmp_path / "legacy"),
                      show_personal_data=show_personal_data)
    cut = reconcile(settings)
    legacy = extract_legacy(settings.source)
    whole = reconcile_frames(legacy.frames, engine, settings, inputs=legacy.inputs)

    assert normalised_json(render_json(cut)) == normalised_json(render_json(whole))
    assert cut.evidence[:4] == legacy_evidence(legacy.frames)
    assert cut.missing_unexplained or cut.extra_in_target or cut.applications  # a report with content

    side = read_target_side(engine, settings)
    hashed: Future[Any] = Future()
    hashed.set_result(())
    kept = legacy_columns_used(legacy.frames, show_personal_data)
    for name, columns in LEGACY_COLUMNS_USED.items():
        holders = HOLDER_COLUMNS if name == "utilisateurs" and show_personal_data else ()
        assert list(kept.table(name).columns) == [*columns, *holders]
        for column in (*columns, *holders):
            frames = LegacyFrames(**{other: kept.table(other) for other in LEGACY_FRAME_COLUMNS})
            frames = replace(frames, **{name: kept.table(name).drop(columns=[column])})
            with pytest.raises(KeyError):
                reconcile_frames(frames, engine, settings, inputs=legacy.inputs, target=side, legacy_hashing=hashed)
