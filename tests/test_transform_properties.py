"""Property-based: for arbitrary legacy records, every record gets exactly one outcome, the
counts balance, and the rows handed to the load never break the target's constraints."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mappings.mapping import load_mapping
from pipelines.transform import transform
from pipelines.validate import ValidateConfig, validate
from tests.legacy_builders import build_tables, default_applications, to_frames
from validation import facts as fact_builders
from validation.outcomes import MIGRATED

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
    login_of = fact_builders.user_facts(frames.utilisateurs).set_index("id_utilisateur")["login"]
    chosen, logins = [], set()
    for candidate in survivor_candidates:
        if candidate in eligible.index and login_of[candidate] not in logins:
            chosen.append(candidate)
            logins.add(login_of[candidate])
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


def _reference_access(legacy: pd.DataFrame, decided: pd.DataFrame, kind: str) -> pd.DataFrame:
    """The plain way of `_access`: every survivor's group aggregated by one group-by over all members."""
    kept = decided["outcome"].eq(MIGRATED) | decided["reason_code"].eq("DUPLICATE_ACCESS")
    members = decided[kept & decided["kind"].eq(kind)]
    group = members["merged_into"].fillna(members.index.to_series()).astype("int64").to_numpy()
    source = legacy.loc[members.index]
    no_end = source["date_fin"].isna().groupby(group).any()
    grouped = pd.DataFrame({
        "is_access_manager": source["responsable_acces"].astype(bool).groupby(group).any(),
        "valid_from": source["date_debut"].groupby(group).min(),
        "valid_until": source["date_fin"].groupby(group).max().mask(no_end),
        "last_reminder_at": source["date_relance"].groupby(group).max(),
    })
    survivors = members[members["outcome"].eq(MIGRATED)]
    merged = grouped.loc[survivors.index]
    return pd.DataFrame({
        "legacy_habilitation_id": survivors.index.to_numpy(dtype="int64"),
        "is_access_manager": merged["is_access_manager"].to_numpy(),
        "valid_from": merged["valid_from"].to_numpy(),
        "valid_until": merged["valid_until"].to_numpy(),
        "delegated_by_legacy_user_id": legacy.loc[survivors.index, "id_delegant"].astype("Int64").to_numpy(),
        "requested_at": merged["valid_from"].to_numpy(),
        "last_reminder_at": merged["last_reminder_at"].to_numpy(),
    })


STAMPS = [None, "2019-05-01", "2020-01-01 08:00", "2024-12-31 23:59:59", "2031-01-01"]
access_rows = st.lists(st.fixed_dictionaries({
    "fate": st.sampled_from(["migrated", "migrated", "merged", "rejected"]),
    "into": st.integers(0, 30), "kind": st.sampled_from(["ACTIVE", "EN_ATTENTE"]),
    "manager": st.booleans(), "delegant": st.sampled_from([None, 7, 9]),
    "start": st.sampled_from(STAMPS), "end": st.sampled_from(STAMPS), "reminder": st.sampled_from(STAMPS),
}), min_size=1, max_size=30)


@settings(max_examples=60, deadline=None)
@given(access_rows)
def test_access_groups_only_duplicates_and_agrees_with_grouping_everything(rows: list[dict[str, object]]) -> None:
    from pipelines.transform import _access

    ids = [1000 + 3 * i for i in range(len(rows))]
    survivors = {kind: [ids[i] for i, r in enumerate(rows) if r["fate"] == "migrated" and r["kind"] == kind]
                 for kind in ("ACTIVE", "EN_ATTENTE")}
    outcome, reason, into = [], [], []
    for row in rows:
        chosen = survivors[str(row["kind"])]
        if row["fate"] == "merged" and chosen:  # merged into a survivor of its kind
            outcome.append("merged"), reason.append("DUPLICATE_ACCESS")
            into.append(chosen[int(str(row["into"])) % len(chosen)])
        else:
            fate = "rejected" if row["fate"] != "migrated" else MIGRATED
            outcome.append(fate), reason.append(None if fate == MIGRATED else "HOLDER_REJECTED"), into.append(None)
    index = pd.Index(ids, name="id_habilitation")
    decided = pd.DataFrame({
        "outcome": outcome, "reason_code": reason,
        "merged_into": pd.array(into, dtype="Int64"), "kind": [r["kind"] for r in rows],
        "holder_id": [5] * len(rows), "application_code": "EDOF",
        "siret": [None if i % 3 else f"7328293200{i % 7:04d}" for i in range(len(rows))],
        "role_code": [("LECTEUR", "GESTIONNAIRE")[i % 2] for i in range(len(rows))],
    }, index=index)
    # The decided habilitations as validate gives them: codes, SIRETs and roles are categories,
    # of values of other rows too (here one that no row holds).
    coded = decided.assign(**{column: pd.Categorical(decided[column], categories=pd.Index(
        ["ZZZ", *decided[column].dropna().unique()], dtype="str")) for column in ("application_code", "siret",
                                                                               "role_code")})
    legacy = pd.DataFrame({
        "responsable_acces": [r["manager"] for r in rows],
        "date_debut": pd.to_datetime(pd.Series([r["start"] for r in rows], dtype=object), format="ISO8601"),
        "date_fin": pd.to_datetime(pd.Series([r["end"] for r in rows], dtype=object), format="ISO8601"),
        "date_relance": pd.to_datetime(pd.Series([r["reminder"] for r in rows], dtype=object), format="ISO8601"),
        "id_delegant": pd.array([r["delegant"] for r in rows], dtype="Int64"),
    }).set_index(index)

    for kind in ("ACTIVE", "EN_ATTENTE"):
        made = _access(legacy, decided, kind)
        expected = _reference_access(legacy, decided, kind)
        assert len(made) == len(survivors[kind])
        shared = [column for column in expected.columns if column in made.columns]
        assert len(shared) == (5 if kind == "ACTIVE" else 3)
        pd.testing.assert_frame_equal(made[shared].reset_index(drop=True), expected[shared], check_dtype=False)
        # From categories, the access rows keep categories, of the values their rows hold (not
        # text: 0.1 GB more at a million users), and are the rows made from text.
        from_categories = _access(legacy, coded, kind)
        for column in ("application_code", "siret", "role"):
            values = from_categories[column]
            assert isinstance(values.dtype, pd.CategoricalDtype), column
            assert set(values.cat.categories) == set(values.dropna()), column
            assert not isinstance(made[column].dtype, pd.CategoricalDtype), column
        as_text = {"application_code": object, "siret": object, "role": object}
        pd.testing.assert_frame_equal(from_categories.astype(as_text), made.astype(as_text))


def test_each_habilitation_exception_detail_is_made_from_its_own_row() -> None:
    """Each reason's text is made for the rows of that reason only, and each row gets its own."""
    from pipelines.exception_details import describe
    from pipelines.frames import TEXT_DTYPE

    reasons = ["NOT_GRANTED", "ORPHAN_USER", "USER_DELETED", "USER_REJECTED", "ORPHAN_APPLICATION",
               "APPLICATION_RETIRED", "APPLICATION_UNMAPPED", "MISSING_SIRET", "ORPHAN_ESTABLISHMENT",
               "ESTABLISHMENT_REJECTED", "ROLE_UNMAPPED", "EXPIRED", "DUPLICATE_ACCESS", "ORPHAN_ESTABLISHMENT",
               "ROLE_UNMAPPED"]
    n = len(reasons)
    decided = pd.DataFrame({
        "reason_code": pd.Categorical(reasons),
        "holder_id": pd.Series(range(500, 500 + n), dtype="int64"),
        "statut": pd.Series(["REFUSEE"] * n, dtype=TEXT_DTYPE),
        "siret": pd.Categorical(["12345678901234"] * (n - 2) + [None, "98765432109876"]),
        "role_label": pd.Series(["Chef"] * (n - 1) + [None], dtype=TEXT_DTYPE),
        "application_code": pd.Categorical(["EDOF"] * n),
        "date_fin": pd.Series([pd.Timestamp("2024-03-01")] * n, dtype="datetime64[ns]"),
        "merged_into": pd.array([None] * 12 + [41] + [None] * 2, dtype="Int64"),
    }).set_axis(pd.Index(range(900, 900 + n), name="id_habilitation"))

    detail = describe("habilitation", decided)

    assert detail.tolist() == [
        "statut REFUSEE", "id_utilisateur 501 absent de l'extraction", "id_utilisateur 502 supprimé",
        "id_utilisateur 503 rejeté", "application absente de l'extraction", "application retirée",
        "application sans correspondance", "usager PRO sans SIRET", "SIRET 12345678901234 absent des établissements",
        "SIRET 12345678901234 rejeté", "rôle 'Chef' inconnu pour EDOF",
        "accès échu à la date d'arrêté (date_fin 2024-03-01)", "doublon de id_habilitation 41",
        "SIRET NULL absent des établissements", "rôle 'NULL' inconnu pour EDOF",
    ]
    assert detail.index.equals(decided.index)
    # Made by Arrow, not a Python string a row (the transform's high-water mark at a million users).
    assert detail.dtype == TEXT_DTYPE


@settings(max_examples=80, deadline=None)
@given(st.lists(st.sampled_from([None, "rejected", "merged", "EXPIRED", "DUPLICATE_ACCESS", "é ß"]), max_size=12),
       st.sampled_from(["categorical", "text", "object", "keys"]))
def test_register_text_is_what_the_frame_infers_from_the_objects(values: list[str | None], kind: str) -> None:
    """The register's text columns made in Arrow (no Python string a row: 0.1 GB less at a million
    users) are those the frame inferred from the objects, dtype included, empty and missing alike."""
    from pipelines.frames import TEXT_DTYPE
    from pipelines.transform import _register_text

    if kind == "categorical":  # as the decided habilitations hold them: with a category of no row
        series = pd.Series(pd.Categorical(values, categories=pd.Index(["ZZZ", *dict.fromkeys(
            v for v in values if v is not None)], dtype="str")), index=range(5, 5 + len(values)))
    elif kind == "keys":  # legacy keys, as _register makes them text
        series = pd.Series(range(-3, len(values) - 3), dtype="int64").astype(str)
    else:
        series = pd.Series(values, dtype=TEXT_DTYPE if kind == "text" else object)
    made = pd.DataFrame({"x": _register_text(series)})
    pd.testing.assert_frame_equal(made, pd.DataFrame({"x": series.to_numpy()}))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(-5, 60), unique=True, max_size=30), st.lists(st.integers(-5, 60), max_size=30),
       st.booleans())
@example([3, 1, 2, 40], [2, 3, 3, 40, 1], True)
@example([], [], True)
@example([5], [4], True)
def test_the_access_rows_positions_are_the_index_lookup(ids: list[int], wanted: list[int], in_order: bool) -> None:
    """`_positions` (a binary search over the sorted ids) finds what `Index.get_indexer` finds,
    and refuses an id that is not there, as it did."""
    import numpy as np
    import pytest

    from pipelines.transform import _positions

    keys = pd.Index(sorted(ids) if in_order else ids, dtype="int64")
    targets = pd.Index(wanted, dtype="int64")
    expected = keys.get_indexer(targets)
    if (expected < 0).any():
        with pytest.raises(ValueError, match="not among the legacy habilitations"):
            _positions(keys, targets)
    else:
        assert np.array_equal(_positions(keys, targets), expected)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["ACTIF", "EN_ATTENTE", "VERROUILLE", "SUPPRIME", None]), max_size=30),
       st.permutations(["ACTIF", "EN_ATTENTE", "VERROUILLE", "SUPPRIME"]))
@example([None, "SUPPRIME", "ACTIF"], ["SUPPRIME", "ACTIF", "EN_ATTENTE", "VERROUILLE"])
def test_an_enumeration_mapped_stays_a_categorical_of_the_mapped_texts(
        values: list[str | None], categories: list[str]) -> None:
    """`_mapped` gives the text `Series.map` gives (NaN where missing or unmapped), as a
    categorical when given one: the accounts' status from the extract's enumeration."""
    from pipelines.frames import TEXT_DTYPE
    from pipelines.transform import ACCOUNT_STATUS, _mapped

    as_text = pd.Series(values, dtype=TEXT_DTYPE, index=range(10, 10 + len(values)))
    expected = as_text.map(ACCOUNT_STATUS)
    mapped = _mapped(as_text.astype(pd.CategoricalDtype(categories)), ACCOUNT_STATUS)
    assert isinstance(mapped.dtype, pd.CategoricalDtype)
    assert not set(mapped.cat.categories) - set(ACCOUNT_STATUS.values())
    pd.testing.assert_series_equal(mapped.astype(object), expected.astype(object))
    pd.testing.assert_series_equal(_mapped(as_text, ACCOUNT_STATUS), expected)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["ZZZ", "EDOF", "é", "", "a b"]), min_size=1, max_size=5, unique=True),
       st.lists(st.integers(min_value=-1, max_value=4), max_size=30))
def test_held_categories_are_pandas_removal_of_the_unused_ones(categories: list[str], picks: list[int]) -> None:
    """The access frames' categories, found by counting codes, are exactly pandas' own removal's:
    same categories in the same order, same codes (missing values kept)."""
    from pipelines.transform import _held_categories

    codes = np.array([pick if pick < len(categories) else -1 for pick in picks], dtype=np.int8)
    values = pd.Series(pd.Categorical.from_codes(codes, categories=pd.Index(categories, dtype="str")))
    held, expected = _held_categories(values), values.cat.remove_unused_categories().array
    assert held.dtype == expected.dtype
    assert held.codes.tolist() == expected.codes.tolist()
