"""Property-based: for arbitrary legacy records, every record gets exactly one outcome, the
counts balance, and the rows handed to the load never break the target's constraints."""

from __future__ import annotations

import datetime as dt

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mappings.mapping import load_mapping
from pipelines.transform import transform
from pipelines.validate import ValidateConfig, validate
from tests.legacy_builders import build_tables, default_applications, to_frames

AS_OF = dt.datetime(2025, 1, 1)
EMAILS = ["a@example.fr", " A@example.fr", "b@example.fr", "B@EXAMPLE.FR ", "c@example.fr", "pas-valide",
          "x y@example.fr", "", "d@example.fr", "native@example.fr"]
SIRETS = ["73282932000074", "732 829 320 00074", "35600000000048", "73282932000075", "40483304800022", "12"]
ROLES = [None, "Gestionnaire EDOF", "gestionnaire_edof", "LECTEUR EDOF", "Super admin", "Utilisateur"]
APPS = ["EDOF", "MAF", "ECR", "NOPE", "ZZZ"]
DATES = [None, "2020-01-01 00:00:00", "2025-01-01 00:00:00", "2030-06-01 12:00:00"]

users = st.lists(st.fixed_dictionaries({
    "courriel": st.sampled_from(EMAILS),
    "nom": st.sampled_from(["Martin", " ", "", "ÉLODIE\u0007 D’Arc", None]),
    "prenom": st.sampled_from(["Claire", "", "Jean  Pierre"]),
    "telephone": st.sampled_from([None, "01 23 45 67 89", "n/a", "+33 1 23 45 67 89", "0033123456789"]),
    "type_compte": st.sampled_from(["PRO", "AGENT"]),
    "statut": st.sampled_from(["ACTIF", "EN_ATTENTE", "VERROUILLE", "SUPPRIME"]),
}), min_size=1, max_size=12)
establishments = st.lists(st.fixed_dictionaries({
    "siret": st.sampled_from(SIRETS), "siren": st.sampled_from([None, "732829320", "356000000", "1"]),
}), max_size=6)
habilitations = st.lists(st.fixed_dictionaries({
    "user_index": st.integers(0, 14), "code_application": st.sampled_from(APPS),
    "siret": st.sampled_from([None, *SIRETS]), "role": st.sampled_from(ROLES),
    "responsable_acces": st.booleans(),
    "statut": st.sampled_from(["ACTIVE", "ACTIVE", "EN_ATTENTE", "REFUSEE", "REVOQUEE"]),
    "date_fin": st.sampled_from(DATES),
}), max_size=25)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(users, establishments, habilitations, st.lists(st.integers(1, 12), max_size=2, unique=True))
def test_every_record_has_one_outcome_and_rows_fit_the_target(user_rows, establishment_rows, habilitation_rows,
                                                                survivor_candidates) -> None:
    user_list = [{"id_utilisateur": i + 1, **row} for i, row in enumerate(user_rows)]
    habilitation_list = []
    for i, row in enumerate(habilitation_rows):
        fields = {k: v for k, v in row.items() if k != "user_index"}
        habilitation_list.append({"id_habilitation": 1000 + i, "id_utilisateur": row["user_index"] + 1, **fields})
    applications = [*default_applications(), {"code_application": "ZZZ", "libelle": "Inconnue", "actif": True}]
    frames = to_frames(build_tables(user_list, establishment_rows, habilitation_list, applications))
    mapping = load_mapping()
    config = ValidateConfig(as_of=AS_OF, mapping=mapping, native_logins=("native@example.fr",))
    result = validate(frames, config)
    # Stewards' survivors, where the candidate really is in a duplicate-login group.
    eligible = result.decisions.users[result.decisions.users["reason_code"].eq("DUPLICATE_LOGIN")]
    chosen, logins = [], set()
    for candidate in survivor_candidates:
        if candidate in eligible.index and eligible.at[candidate, "login"] not in logins:
            chosen.append(candidate)
            logins.add(eligible.at[candidate, "login"])
    if chosen:
        result = validate(frames, ValidateConfig(as_of=AS_OF, mapping=mapping, native_logins=("native@example.fr",),
                                                 survivors=tuple(chosen)))
    target = transform(frames, result).target

    # Exactly one outcome per record, and the counts add up.
    decisions = result.decisions
    for entity, frame in (("user", decisions.users), ("habilitation", decisions.habilitations),
                          ("establishment", decisions.establishments), ("application", decisions.applications)):
        assert frame.index.is_unique, entity
        assert set(frame["outcome"]) <= {"migrated", "excluded", "rejected", "merged"}
        counts = result.counts[entity]
        assert counts["source"] == counts["migrated"] + counts["excluded"] + counts["rejected"] + counts["merged"]
    assert len(decisions.users) == len(user_list)
    assert len(decisions.habilitations) == len(habilitation_list)
    register = target.exceptions
    final = register[register["outcome"] != "corrected"]
    assert not final.duplicated(["entity", "legacy_key"]).any()
    assert len(final[final["entity"] == "habilitation"]) + result.counts["habilitation"]["migrated"] == len(
        habilitation_list)
    assert (final["outcome"].eq("merged") == final["merged_into"].notna()).all()

    # The rows fit the target's keys and constraints.
    accounts = target.accounts
    assert accounts["legacy_user_id"].is_unique
    assert accounts["login"].is_unique
    assert accounts["last_name"].str.len().gt(0).all()
    assert accounts["first_name"].str.len().gt(0).all()
    assert set(accounts["status"]) <= {"ACTIVE", "PENDING", "LOCKED"}
    assert accounts["phone"].dropna().str.fullmatch(r"\+[1-9]\d{6,14}").all()
    assert target.establishments["siret"].is_unique
    assert target.establishments["siret"].str.fullmatch(r"\d{14}").all()
    assert target.applications["code"].is_unique
    for table in (target.entitlements, target.access_requests):
        assert table["legacy_habilitation_id"].is_unique
        assert table["legacy_user_id"].isin(accounts["legacy_user_id"]).all()
        assert table["application_code"].isin(target.applications["code"]).all()
        assert table["siret"].dropna().isin(target.establishments["siret"]).all()
        assert table["role"].notna().all()
        holders = table["legacy_user_id"].map(accounts.set_index("legacy_user_id")["account_type"])
        assert (table["siret"].notna() | holders.eq("AGENT")).all()
    access = target.entitlements.assign(siret=target.entitlements["siret"].fillna(""))
    assert not access.duplicated(["legacy_user_id", "application_code", "siret", "role"]).any()
    entitlements = target.entitlements
    assert (entitlements["valid_until"].isna() | (entitlements["valid_until"] > pd.Timestamp(AS_OF))).all()
