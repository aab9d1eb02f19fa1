"""Every reason code of the contract, and the precedence between them, on a tiny extract.

The extract (built in code) contains, by id:
users  1 clean PRO with a valid phone        2,3 same login up to case/spaces (DUPLICATE_LOGIN)
       4 courriel without @ (INVALID_EMAIL)  5 deleted (USER_DELETED) with an invalid courriel too
       6 blank nom (MISSING_NAME)            7 invalid courriel AND blank nom (INVALID_EMAIL first)
       8 phone 'n/a' (PHONE_DROPPED)         9 login of a native account (LOGIN_TAKEN)
      10 AGENT                               11 deleted, same login as 12 (not a duplicate then)
      12 clean                               13/14 duplicate login, 14 with blank prénom
establishments: S1 twice (one written with spaces, DUPLICATE_SIRET), S2 La Poste with siren
       disagreeing (SIREN_CORRECTED), BAD with a wrong check digit (INVALID_SIRET)
applications: the catalogue, ECR retired, ZZZ active but unmapped
habilitations: one per habilitation reason code, plus precedence cases (see the table below).
"""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from mappings.mapping import load_mapping
from pipelines.errors import ConfigurationError
from pipelines.transform import transform
from pipelines.validate import ValidateConfig, validate
from tests.legacy_builders import build_tables, default_applications, to_frames

S1, S2, BAD = "73282932000074", "35600000000048", "73282932000075"
AS_OF = dt.datetime(2025, 1, 1)

USERS = [
    {"id_utilisateur": 1, "courriel": " Alice.Martin@Example.fr ", "telephone": "01 23 45 67 89"},
    {"id_utilisateur": 2, "courriel": "bob@example.fr"},
    {"id_utilisateur": 3, "courriel": " BOB@example.fr"},
    {"id_utilisateur": 4, "courriel": "pas-une-adresse"},
    {"id_utilisateur": 5, "courriel": "nope", "statut": "SUPPRIME"},
    {"id_utilisateur": 6, "courriel": "f@example.fr", "nom": "  "},
    {"id_utilisateur": 7, "courriel": "a b@example.fr", "nom": None},
    {"id_utilisateur": 8, "courriel": "h@example.fr", "telephone": "n/a"},
    {"id_utilisateur": 9, "courriel": "Native@Example.fr"},
    {"id_utilisateur": 10, "courriel": "agent@travail.gouv.fr", "type_compte": "AGENT"},
    {"id_utilisateur": 11, "courriel": "carol@example.fr", "statut": "SUPPRIME"},
    {"id_utilisateur": 12, "courriel": "CAROL@example.fr"},
    {"id_utilisateur": 13, "courriel": "dan@example.fr"},
    {"id_utilisateur": 14, "courriel": "dan@example.fr", "prenom": ""},
]
ESTABLISHMENTS = [
    {"siret": S1, "siren": "732829320"},
    {"siret": "732 829 320 00074", "siren": "732829320", "date_fermeture": "2020-01-01"},
    {"siret": S2, "siren": "999999999"},
    {"siret": BAD},
]
APPLICATIONS = [*default_applications(), {"code_application": "ZZZ", "libelle": "Inconnue", "actif": True}]

# id -> (habilitation fields, expected outcome, expected reason code or None for migrated)
HABILITATIONS: dict[int, tuple[dict, str, str | None]] = {
    100: ({"id_utilisateur": 1, "code_application": "EDOF", "siret": S1, "role": "Gestionnaire EDOF"}, "migrated", None),
    101: ({"id_utilisateur": 1, "code_application": "EDOF", "siret": S1, "role": "GESTIONNAIRE_EDOF",
           "responsable_acces": True, "date_fin": "2026-01-01"}, "merged", "DUPLICATE_ACCESS"),
    102: ({"id_utilisateur": 1, "code_application": "EDOF", "siret": S1, "role": "Super admin"}, "rejected", "ROLE_UNMAPPED"),
    103: ({"id_utilisateur": 1, "code_application": "MAF", "siret": S1, "statut": "REFUSEE"}, "excluded", "NOT_GRANTED"),
    104: ({"id_utilisateur": 999, "code_application": "MAF", "siret": S1}, "rejected", "ORPHAN_USER"),
    105: ({"id_utilisateur": 5, "code_application": "MAF", "siret": S1}, "excluded", "USER_DELETED"),
    106: ({"id_utilisateur": 4, "code_application": "MAF", "siret": S1}, "rejected", "USER_REJECTED"),
    107: ({"id_utilisateur": 1, "code_application": "NOPE", "siret": S1}, "rejected", "ORPHAN_APPLICATION"),
    108: ({"id_utilisateur": 1, "code_application": "ECR", "siret": S1}, "excluded", "APPLICATION_RETIRED"),
    109: ({"id_utilisateur": 1, "code_application": "ZZZ", "siret": S1}, "rejected", "APPLICATION_UNMAPPED"),
    110: ({"id_utilisateur": 1, "code_application": "MAF", "siret": None}, "rejected", "MISSING_SIRET"),
    111: ({"id_utilisateur": 1, "code_application": "MAF", "siret": "40483304800022"}, "rejected", "ORPHAN_ESTABLISHMENT"),
    112: ({"id_utilisateur": 1, "code_application": "MAF", "siret": BAD}, "rejected", "ESTABLISHMENT_REJECTED"),
    113: ({"id_utilisateur": 1, "code_application": "MAF", "siret": S2, "date_fin": "2024-12-31 23:59:59"},
          "excluded", "EXPIRED"),
    114: ({"id_utilisateur": 1, "code_application": "MAF", "siret": S2, "date_fin": "2025-01-01 00:00:00"},
          "excluded", "EXPIRED"),  # date_fin is exclusive: ending at the as-of instant is expired
    115: ({"id_utilisateur": 10, "code_application": "CERES", "siret": None}, "migrated", None),  # agent, no SIRET
    116: ({"id_utilisateur": 1, "code_application": "MAF", "siret": S2, "date_debut": "2026-06-01"}, "migrated", None),
    117: ({"id_utilisateur": 1, "code_application": "MAF", "siret": S2, "statut": "EN_ATTENTE",
           "date_relance": "2024-10-01"}, "migrated", None),
    118: ({"id_utilisateur": 1, "code_application": "MAF", "siret": S2, "statut": "EN_ATTENTE"}, "merged",
          "DUPLICATE_ACCESS"),
    # precedence: the first rule in the contract's order wins
    119: ({"id_utilisateur": 999, "code_application": "NOPE", "statut": "REVOQUEE"}, "excluded", "NOT_GRANTED"),
    120: ({"id_utilisateur": 999, "code_application": "ECR"}, "rejected", "ORPHAN_USER"),
    121: ({"id_utilisateur": 5, "code_application": "NOPE"}, "excluded", "USER_DELETED"),
    122: ({"id_utilisateur": 1, "code_application": "ECR", "siret": None}, "excluded", "APPLICATION_RETIRED"),
    123: ({"id_utilisateur": 1, "code_application": "EDOF", "siret": BAD, "role": "Super admin"}, "rejected",
          "ESTABLISHMENT_REJECTED"),
    124: ({"id_utilisateur": 1, "code_application": "EDOF", "siret": S2, "role": "Super admin",
           "date_fin": "2020-01-01"}, "rejected", "ROLE_UNMAPPED"),
    # an expired duplicate does not absorb the live one
    125: ({"id_utilisateur": 1, "code_application": "SOFFI", "siret": S1, "date_fin": "2020-01-01"}, "excluded", "EXPIRED"),
    126: ({"id_utilisateur": 1, "code_application": "SOFFI", "siret": S1}, "migrated", None),
    127: ({"id_utilisateur": 13, "code_application": "MAF", "siret": S1}, "rejected", "USER_REJECTED"),
}


def _tables() -> dict:
    habilitations = [{"id_habilitation": hid, **fields} for hid, (fields, _o, _r) in HABILITATIONS.items()]
    return build_tables(USERS, ESTABLISHMENTS, habilitations, APPLICATIONS)


def _validate(survivors: tuple[int, ...] = ()) -> tuple:
    frames = to_frames(_tables())
    result = validate(frames, ValidateConfig(as_of=AS_OF, mapping=load_mapping(),
                                             native_logins=("native@example.fr",), survivors=survivors))
    return frames, result


@pytest.fixture(scope="module")
def validated() -> tuple:
    return _validate()


EXPECTED_USERS = {
    1: ("migrated", None), 2: ("rejected", "DUPLICATE_LOGIN"), 3: ("rejected", "DUPLICATE_LOGIN"),
    4: ("rejected", "INVALID_EMAIL"), 5: ("excluded", "USER_DELETED"), 6: ("rejected", "MISSING_NAME"),
    7: ("rejected", "INVALID_EMAIL"), 8: ("migrated", None), 9: ("rejected", "LOGIN_TAKEN"),
    10: ("migrated", None), 11: ("excluded", "USER_DELETED"), 12: ("migrated", None),
    13: ("rejected", "DUPLICATE_LOGIN"), 14: ("rejected", "MISSING_NAME"),
}


@pytest.mark.parametrize(("user_id", "expected"), EXPECTED_USERS.items())
def test_user_outcome(validated: tuple, user_id: int, expected: tuple[str, str | None]) -> None:
    users = validated[1].decisions.users
    reason = users.at[user_id, "reason_code"]
    assert (users.at[user_id, "outcome"], None if pd.isna(reason) else reason) == expected


@pytest.mark.parametrize(("habilitation_id", "case"), HABILITATIONS.items())
def test_habilitation_outcome(validated: tuple, habilitation_id: int, case: tuple) -> None:
    habilitations = validated[1].decisions.habilitations
    reason = habilitations.at[habilitation_id, "reason_code"]
    assert (habilitations.at[habilitation_id, "outcome"], None if pd.isna(reason) else reason) == case[1:]


def test_establishment_and_application_outcomes(validated: tuple) -> None:
    decisions = validated[1].decisions
    assert decisions.establishments.loc[BAD, ["outcome", "reason_code"]].tolist() == ["rejected", "INVALID_SIRET"]
    assert decisions.establishments.at[S1, "duplicate_rows"] == 2
    assert bool(decisions.establishments.at[S2, "siren_corrected"])
    assert not bool(decisions.establishments.at[S1, "siren_corrected"])
    assert decisions.applications.loc["ECR", "reason_code"] == "APPLICATION_RETIRED"
    assert decisions.applications.loc["ZZZ", "reason_code"] == "APPLICATION_UNMAPPED"


def test_counts_add_up_and_register_matches(validated: tuple) -> None:
    frames, result = validated
    for entity, counts in result.counts.items():
        assert counts["source"] == counts["migrated"] + counts["excluded"] + counts["rejected"] + counts["merged"], entity
    assert result.counts["establishment"]["source"] == 3  # distinct normalised SIRETs
    register = transform(frames, result).target.exceptions
    assert not register.duplicated(["entity", "legacy_key", "reason_code"]).any()
    not_migrated = register[register["outcome"] != "corrected"]
    assert not not_migrated.duplicated(["entity", "legacy_key"]).any()  # exactly one outcome per record
    for entity, counts in result.counts.items():
        rows = not_migrated[not_migrated["entity"] == entity]
        assert len(rows) == counts["excluded"] + counts["rejected"] + counts["merged"], entity
    corrected = set(map(tuple, register[register["outcome"] == "corrected"][["legacy_key", "reason_code"]].values))
    assert corrected == {("8", "PHONE_DROPPED"), (S1, "DUPLICATE_SIRET"), (S2, "SIREN_CORRECTED")}


def test_target_rows(validated: tuple) -> None:
    frames, result = validated
    target = transform(frames, result).target
    accounts = target.accounts.set_index("legacy_user_id")
    assert sorted(accounts.index) == [1, 8, 10, 12]
    assert accounts.at[1, "login"] == "alice.martin@example.fr"
    assert accounts.at[1, "email"] == "Alice.Martin@Example.fr"
    assert accounts.at[1, "phone"] == "+33123456789"
    assert pd.isna(accounts.at[8, "phone"])
    entitlements = target.entitlements.set_index("legacy_habilitation_id")
    # The survivor of 100/101 is 100: access manager if any was, earliest start, latest end (none wins).
    assert bool(entitlements.at[100, "is_access_manager"])
    assert pd.isna(entitlements.at[100, "valid_until"])
    assert entitlements.at[100, "role"] == "GESTIONNAIRE_EDOF"
    assert pd.isna(entitlements.at[115, "siret"])
    assert entitlements.at[115, "role"] == "UTILISATEUR"
    assert 116 in entitlements.index  # starting in the future is still migrated
    requests = target.access_requests.set_index("legacy_habilitation_id")
    assert list(requests.index) == [117]
    assert requests.at[117, "last_reminder_at"] == pd.Timestamp("2024-10-01")
    establishments = target.establishments.set_index("siret")
    assert establishments.at[S2, "siren"] == "356000000"
    assert pd.isna(establishments.at[S1, "closed_on"])  # the open row wins over the closed duplicate


def test_resolution_merges_duplicate_group_and_moves_habilitations() -> None:
    _frames, result = _validate(survivors=(3,))
    users = result.decisions.users
    assert users.loc[3, "outcome"] == "migrated"
    assert users.loc[2, ["outcome", "reason_code"]].tolist() == ["merged", "DUPLICATE_LOGIN"]
    assert users.loc[2, "merged_into"] == 3


def test_resolution_habilitations_follow_the_survivor() -> None:
    tables = _tables()
    tables["habilitations"].append({**tables["habilitations"][0], "id_habilitation": 500, "id_utilisateur": 2,
                                    "code_application": "DECA", "siret": S1, "role": None})
    frames = to_frames(tables)
    result = validate(frames, ValidateConfig(as_of=AS_OF, mapping=load_mapping(), survivors=(3,)))
    entitlements = transform(frames, result).target.entitlements.set_index("legacy_habilitation_id")
    assert entitlements.at[500, "legacy_user_id"] == 3


@pytest.mark.parametrize(("survivor", "message"), [
    (4242, "does not exist"),
    (1, "is not in a DUPLICATE_LOGIN group"),
    (14, "is not in a DUPLICATE_LOGIN group"),
])
def test_bad_resolutions_are_refused(survivor: int, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        _validate(survivors=(survivor,))
