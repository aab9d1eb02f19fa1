"""The reconciliation's fast ways give what their definitions say: tuple components coded
through Arrow or pandas stand for the very values, control hashes follow their definition in
plain Python, and the one-key sort orders rows as np.lexsort does."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pipelines.arrow_text import factorized
from pipelines.frames import TEXT_DTYPE
from tests.test_evidence_hashing import reference_control_hashes

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


_TUPLE_TEXTS = st.lists(st.one_of(st.none(), st.sampled_from(["EDOF", "a\\b", "tab\tx", "l\nf", "c\rr", ""]),
                                  st.text(max_size=4)), max_size=30)


@SETTINGS
@given(_TUPLE_TEXTS, _TUPLE_TEXTS, st.sampled_from([TEXT_DTYPE, object, "category"]))
def test_text_codes_of_arrow_and_object_parts_stand_for_the_values(
    first: list[str | None], second: list[str | None], first_dtype: object
) -> None:
    from reports.reconciliation import _escape_tuple_text, _TextCodes

    parts = [pd.Series(first, dtype=first_dtype), pd.Series(second, dtype=object)]
    if first_dtype == "category":  # as after a filter: a category no row holds
        parts[0] = parts[0].cat.add_categories(["held by no row"])
    codes = _TextCodes.of(parts)

    assert codes.raw[codes.codes].tolist() == [None if v is None else v for v in [*first, *second]]
    assert codes.text.tolist() == [_escape_tuple_text(v) for v in codes.raw]
    assert sorted(codes.text.tolist()) == codes.text[np.argsort(codes.rank)].tolist()
    assert len(set(codes.raw[1:].tolist())) == len(codes.raw) - 1  # each distinct value once
    for part in parts:
        part_codes, uniques = factorized(part)
        assert [None if c < 0 else uniques[c] for c in part_codes] == part.astype(object).where(part.notna(), None).tolist()
        assert sorted(uniques.tolist()) == sorted(set(part.dropna().tolist()))  # each value used, once


@SETTINGS
@given(st.lists(_TUPLE_TEXTS, max_size=5))
def test_factorized_reads_a_column_of_several_chunks_as_one(pieces: list[list[str | None]]) -> None:
    """A column read in batches (the target's) is several Arrow chunks, some empty: encoded chunk
    by chunk, its codes still number the distinct values of the whole column."""
    column = pd.concat([pd.Series([], dtype=TEXT_DTYPE), *(pd.Series(piece, dtype=TEXT_DTYPE) for piece in pieces)],
                       ignore_index=True)
    assert column.array.__arrow_array__().num_chunks == len(pieces) + 1  # not combined by pandas
    codes, uniques = factorized(column)
    values = [value for piece in pieces for value in piece]
    assert codes.dtype == np.int64
    assert [None if c < 0 else uniques[c] for c in codes] == values
    assert sorted(uniques.tolist()) == sorted({v for v in values if v is not None})  # each value once


_TUPLES = st.lists(st.tuples(st.integers(0, 2**62), st.sampled_from(["EDOF", "MAF", "SOFFI"]),
                             st.one_of(st.none(), st.sampled_from(["12345678901234", "", "a\tb", "Z"])),
                             st.one_of(st.none(), st.sampled_from(["R", "R\\X", "é", "A"]))), max_size=25)


@SETTINGS
@given(_TUPLES, st.booleans(), st.sampled_from([None, 1, 2, 3]))
@example([(1, "EDOF", "Z", "R"), (2, "EDOF", "Z", "A"), (3, "EDOF", None, "R"), (1, "MAF", "", "é")], False, 2)
def test_control_hashes_follow_their_definition(rows: list[tuple[int, str, str | None, str | None]],
                                                 lexsort: bool, chunk_rows: int | None) -> None:
    """Also with the lines hashed a few at a time."""
    from reports import reconciliation

    frame = pd.DataFrame(rows or None, columns=["legacy_user_id", "application_code", "siret", "role"])
    frame["legacy_user_id"] = frame["legacy_user_id"].astype("int64")
    with pytest.MonkeyPatch.context() as patch:
        if lexsort:  # as when the keys' sizes multiply beyond 63 bits
            patch.setattr(reconciliation, "_order_by", lambda keys: np.lexsort(tuple(c for c, _ in reversed(keys))))
        if chunk_rows is not None:
            patch.setattr(reconciliation, "CONTROL_HASH_CHUNK_ROWS", chunk_rows)
        assert reconciliation.control_hashes(frame) == reference_control_hashes(rows)


def test_order_by_combines_codes_or_falls_back_to_lexsort() -> None:
    from reports.reconciliation import _order_by

    first, second = np.array([1, 0, 1, 0]), np.array([0, 2, 1, 1])
    expected = np.lexsort((second, first)).tolist()
    assert _order_by([(first, 2), (second, 3)]).tolist() == expected == [3, 1, 0, 2]
    assert _order_by([(first, 2**40), (second, 2**40)]).tolist() == expected  # beyond 63 bits


def test_register_rows_are_made_when_read_and_equal_the_whole_tuple(monkeypatch: pytest.MonkeyPatch) -> None:
    from reports.reconciliation import RegisterRows, _register_rows

    register = pd.DataFrame({
        "exception_id": range(7), "entity": ["user", "habilitation"] * 3 + ["user"],
        "legacy_key": [str(i) for i in range(7)], "outcome": "rejected", "reason_code": "X",
        "detail": ["a", None, "c", "=1+1", "e", "f", "g"], "merged_into": [None, "3", None, None, None, None, "1"],
    }).astype({"detail": "str", "merged_into": "str", "legacy_key": "str"})
    whole = _register_rows(register)
    monkeypatch.setattr(RegisterRows, "_CHUNK_ROWS", 3)  # iterated over several chunks
    rows = RegisterRows(register)
    assert len(rows) == 7
    assert tuple(rows) == whole
    assert rows == whole
    assert list(rows) == list(whole)
    assert rows[0] == whole[0]
    assert rows[-1] == whole[-1]
    assert rows[2:5] == whole[2:5]
    assert rows[:0] == ()
    assert rows[1].detail == ""
    assert rows[1].merged_into == "3"
    assert rows[0].merged_into is None
    with pytest.raises(IndexError):
        rows[7]
    assert not RegisterRows(register.iloc[0:0])
    assert RegisterRows(register.iloc[0:0]) == ()


_REGISTER_TEXTS = st.one_of(st.sampled_from(["=1+1", "+33", "-", "@x", "\tz", "\rz", "＝1", "a,b", 'q"q', "l\nf", "", "12"]),
                            st.text(max_size=5))


@SETTINGS
@given(st.lists(st.tuples(_REGISTER_TEXTS, _REGISTER_TEXTS, st.one_of(st.none(), _REGISTER_TEXTS),
                          st.one_of(st.none(), _REGISTER_TEXTS)), max_size=12),
       st.sampled_from(["str", "string[python]", "string[pyarrow]"]), st.sampled_from([2, 5, 65_536]))
def test_register_csv_by_arrow_is_the_row_ways_text(rows: list[tuple[str, str, str | None, str | None]],
                                                    dtype: str, slice_rows: int) -> None:
    """Cells neutralised, NULLs empty, quoting by the CSV writer, over several slices; a frame with
    a column that is not Arrow-backed text goes the row way, to the same text."""
    import csv
    import io

    from reports import render
    from reports.reconciliation import RegisterRows

    register = pd.DataFrame({
        "entity": "user", "legacy_key": [r[0] for r in rows], "outcome": "rejected",
        "reason_code": [r[1] for r in rows], "detail": [r[2] for r in rows], "merged_into": [r[3] for r in rows],
    }, columns=list(render.REGISTER_COLUMNS)).astype(dtype)

    def written(register_rows: object) -> str:
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        for cells in render._register_cells(register_rows):  # type: ignore[arg-type]
            writer.writerows(cells)
        return text.getvalue()

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(render, "REGISTER_SLICE_ROWS", slice_rows)
        # The Arrow way is taken for Arrow-backed text (what the target reader gives).
        assert (render._register_text(register) is not None) == (dtype != "string[python]")
        by_arrow = written(RegisterRows(register))
    by_row = written(tuple(RegisterRows(register)))
    assert by_arrow == by_row
    assert by_arrow.count("\n") >= len(rows)
    if any(r[0].startswith(("=", "+", "-", "@")) for r in rows):
        assert "'" in by_arrow
    assert render._register_text(register.astype({"legacy_key": object})) is None


_HABILITATIONS = st.lists(st.tuples(
    st.sampled_from([1, 2, 3, 4]),  # id_utilisateur: 3 is deleted, 4 merged into 1
    st.one_of(st.none(), st.sampled_from(["EDOF", "OLD_EDOF", "MAF", "RETIRED"])),
    st.one_of(st.none(), st.sampled_from(["12345678901234", "123 456 789 01234", "", "  ", "98765432109876"])),
    st.one_of(st.none(), st.sampled_from(["Gestionnaire", "gestionnaire", "zzz", ""])),
    st.sampled_from(["ACTIVE", "EN_ATTENTE", "REVOQUEE"]),
    st.sampled_from([None, "2020-01-01", "2030-01-01"]),  # date_fin
), max_size=30)


@SETTINGS
@given(_HABILITATIONS)
@example([(4, "OLD_EDOF", "123 456 789 01234", "gestionnaire", "ACTIVE", None),
          (1, "EDOF", "  ", None, "ACTIVE", "2030-01-01"), (2, None, None, "zzz", "ACTIVE", None)])
def test_legacy_access_is_each_effective_habilitation_as_its_definition_says(
    rows: list[tuple[int, str | None, str | None, str | None, str, str | None]],
) -> None:
    """legacy_access works on the codes of whole columns; row by row, in plain Python, the same
    rows and values come out."""
    from dataclasses import replace
    from datetime import datetime

    from mappings.mapping import load_mapping
    from pipelines.frames import LegacyFrames
    from reports.reconciliation import legacy_access

    mapping = load_mapping(None)
    mapping = replace(mapping, application_codes={**mapping.application_codes, "OLD_EDOF": "EDOF"})
    as_of = datetime(2025, 6, 1)
    habs = pd.DataFrame({
        "id_habilitation": pd.Series(range(10, 10 + len(rows)), dtype="int64"),
        "id_utilisateur": pd.Series([r[0] for r in rows], dtype="int64"),
        "code_application": pd.Series([r[1] for r in rows], dtype=TEXT_DTYPE),
        "siret": pd.Series([r[2] for r in rows], dtype=TEXT_DTYPE),
        "role": pd.Series([r[3] for r in rows], dtype=TEXT_DTYPE),
        "statut": pd.Series([r[4] for r in rows], dtype=TEXT_DTYPE),
        "date_debut": pd.Series([datetime(2024, 1, 1)] * len(rows), dtype="datetime64[ns]"),
        "date_fin": pd.to_datetime(pd.Series([r[5] for r in rows], dtype=object)).astype("datetime64[ns]"),
    })
    users = pd.DataFrame({"id_utilisateur": pd.Series([1, 2, 3, 4], dtype="int64"),
                          "statut": pd.Series(["ACTIF", "ACTIF", "SUPPRIME", "ACTIF"], dtype=TEXT_DTYPE)})
    apps = pd.DataFrame({"code_application": pd.Series(["EDOF", "OLD_EDOF", "MAF", "RETIRED"], dtype=TEXT_DTYPE),
                         "actif": [True, True, True, False]})
    frames = LegacyFrames(utilisateurs=users, etablissements=pd.DataFrame(), applications=apps, habilitations=habs)
    merged_into = pd.Series([1], index=[4], dtype="int64")

    made = legacy_access(frames, mapping, merged_into, as_of)

    expected = []
    for number, (user, code, siret, label, state, end) in enumerate(rows):
        if (state != "ACTIVE" or user == 3 or code not in ("EDOF", "OLD_EDOF", "MAF")
                or (end is not None and datetime.fromisoformat(end) <= as_of)):
            continue
        application = mapping.application_codes.get(code, code)
        digits = None if siret is None else "".join(siret.split())
        role = mapping.canonical_role(application, label)
        expected.append((10 + number, user, 1 if user == 4 else user, application, digits or None,
                         role if role is not None else label))
    assert list(made.astype(object).where(made.notna(), None).itertuples(index=False, name=None)) == expected


@SETTINGS
@given(st.lists(st.tuples(
    st.sampled_from([1, 2, 3, 9]),  # account_id: 2 has no legacy_user_id, 9 is no account
    st.one_of(st.none(), st.sampled_from(["EDOF", "MAF"])),
    st.one_of(st.none(), st.sampled_from(["12345678901234", "98765432109876"])),
    st.one_of(st.none(), st.sampled_from(["GESTIONNAIRE", "LECTEUR"])),
    st.sampled_from(["2024-01-01", "2026-01-01"]),  # valid_from: the second is after the as-of instant
    st.sampled_from([None, "2025-01-01", "2030-01-01"]),  # valid_until
), max_size=30))
def test_target_access_is_each_effective_entitlement_as_its_definition_says(
    rows: list[tuple[int, str | None, str | None, str | None, str, str | None]],
) -> None:
    """target_access works on the codes of whole columns and keeps the text as categoricals;
    row by row, in plain Python, the same rows and values come out."""
    from datetime import datetime

    from reports.reconciliation import target_access

    as_of = datetime(2025, 6, 1)
    entitlements = pd.DataFrame({
        "entitlement_id": pd.Series(range(100, 100 + len(rows)), dtype="Int64"),
        "account_id": pd.Series([r[0] for r in rows], dtype="Int64"),
        "application_code": pd.Series([r[1] for r in rows], dtype=TEXT_DTYPE),
        "siret": pd.Series([r[2] for r in rows], dtype=TEXT_DTYPE),
        "role": pd.Series([r[3] for r in rows], dtype=TEXT_DTYPE),
        "valid_from": pd.to_datetime(pd.Series([r[4] for r in rows], dtype=object)).astype("datetime64[ns]"),
        "valid_until": pd.to_datetime(pd.Series([r[5] for r in rows], dtype=object)).astype("datetime64[ns]"),
        "legacy_habilitation_id": pd.Series([None if i % 4 == 3 else 1000 + i for i in range(len(rows))],
                                            dtype="Int64"),
    })
    accounts = pd.DataFrame({"account_id": pd.Series([1, 2, 3], dtype="Int64"),
                             "legacy_user_id": pd.Series([11, None, 33], dtype="Int64")})

    made = target_access(entitlements, accounts, as_of)

    legacy_user = {1: 11, 3: 33}
    expected = []
    for number, (account, code, siret, role, start, end) in enumerate(rows):
        if (account not in legacy_user or datetime.fromisoformat(start) > as_of
                or (end is not None and datetime.fromisoformat(end) <= as_of)):
            continue
        expected.append((100 + number, None if number % 4 == 3 else 1000 + number, legacy_user[account],
                         code, siret, role))
    assert list(made.columns) == ["entitlement_id", "legacy_habilitation_id", "legacy_user_id",
                                  "application_code", "siret", "role"]
    assert list(made.astype(object).where(made.notna(), None).itertuples(index=False, name=None)) == expected
    for column in ("application_code", "siret", "role"):
        assert isinstance(made[column].dtype, pd.CategoricalDtype), column


def test_the_tuple_space_holds_its_row_codes_in_32_bits_and_says_when_they_would_not_fit() -> None:
    from reports.reconciliation import _row_codes, _TupleSpace

    frame = pd.DataFrame({"legacy_user_id": pd.Series([1, 2, 1], dtype="int64"),
                          "application_code": pd.Series(["EDOF", "MAF", "EDOF"], dtype=TEXT_DTYPE),
                          "siret": pd.Series(["12345678901234", None, "12345678901234"], dtype=TEXT_DTYPE),
                          "role": pd.Series([None, "LECTEUR", None], dtype=TEXT_DTYPE)})
    space = _TupleSpace(frame, frame.iloc[:1])
    assert {space.ids.dtype, space.app.codes.dtype, space.siret.codes.dtype, space.role.codes.dtype} == {
        np.dtype(np.int32)}
    assert space.part(0).tolist() == [0, 1, 0]
    assert space.part(1).tolist() == [0]
    assert _row_codes(np.array([0, 2**31 - 1])).tolist() == [0, 2**31 - 1]
    with pytest.raises(OverflowError):
        _row_codes(np.array([2**31]))


@SETTINGS
@given(st.lists(st.one_of(st.integers(min_value=-3, max_value=5), st.integers(min_value=-2**63, max_value=2**63 - 1)),
                max_size=60))
@example([])
@example([5])
@example([2**63 - 1, -2**63, 2**63 - 1, 0, -2**63])
def test_dense_ids_are_pandas_factorize_codes_in_32_bits(values: list[int]) -> None:
    """The tuple space numbers its tuples by sorting; the numbers are factorize's (first appearance)."""
    from reports.reconciliation import _dense_ids

    array = np.array(values, dtype=np.int64)
    codes, uniques = pd.factorize(array)
    ids, count = _dense_ids(array)
    assert ids.dtype == np.int32
    assert ids.tolist() == codes.tolist()
    assert count == len(uniques)


def test_dense_ids_of_many_values_are_pandas_factorize_codes() -> None:
    """Hundreds of thousands of values, a quarter repeated: hashing and sorting meet them in other orders."""
    from reports.reconciliation import _dense_ids

    many = np.random.default_rng(3).integers(-2**40, 2**40, 200_000)
    many[::4] = many[1::4][:len(many[::4])]
    ids, count = _dense_ids(many)
    codes, uniques = pd.factorize(many)
    assert ids.tolist() == codes.tolist()
    assert count == len(uniques) == 150_000


_ACCOUNTS = st.lists(st.tuples(
    st.sampled_from([1, 2, 3, 7]),  # legacy_user_id: 7 is no legacy user
    st.sampled_from(["MIGRATION", "NATIVE"]),
    st.sampled_from(["a@x.fr", "b@x.fr", "A@X.FR"]),  # login
    st.one_of(st.none(), st.booleans()),  # must_reset_password
    st.one_of(st.none(), st.just("***")),  # password_hash, as read
    st.one_of(st.none(), st.sampled_from(["ACTIVE", "PENDING", "LOCKED"])),  # status
), max_size=12, unique_by=lambda r: r[0])


@SETTINGS
@given(_ACCOUNTS, st.booleans())
@example([(1, "MIGRATION", "a@x.fr", True, None, "ACTIVE"), (2, "MIGRATION", "b@x.fr", None, "***", None),
          (3, "MIGRATION", "a@x.fr", False, None, "LOCKED"), (7, "MIGRATION", "a@x.fr", True, None, "ACTIVE")],
         True)
def test_account_checks_are_each_accounts_checks_as_their_definition_says(
    rows: list[tuple[int, str, str, bool | None, str | None, str | None]], show_personal_data: bool,
) -> None:
    """account_checks compares whole text columns (no Python string a row); row by row, in plain
    Python, the same accounts fail the same checks, described the same."""
    from reports.reconciliation import account_checks

    users = pd.DataFrame({"id_utilisateur": pd.Series([1, 2, 3], dtype="int64"),
                          "courriel": pd.Series([" A@x.fr ", None, "c@x.fr"], dtype=TEXT_DTYPE),
                          "statut": pd.Series(["ACTIF", "SUPPRIME", None], dtype=TEXT_DTYPE)})
    legacy = {1: ("a@x.fr", "ACTIF"), 2: (None, "SUPPRIME"), 3: ("c@x.fr", None)}
    status_of = {"ACTIF": "ACTIVE", "EN_ATTENTE": "PENDING", "VERROUILLE": "LOCKED"}
    accounts = pd.DataFrame({
        "account_id": pd.Series(range(len(rows)), dtype="Int64"),
        "legacy_user_id": pd.Series([r[0] for r in rows], dtype="Int64"),
        "origin": pd.Series([r[1] for r in rows], dtype=TEXT_DTYPE),
        "login": pd.Series([r[2] for r in rows], dtype=TEXT_DTYPE),
        "must_reset_password": pd.Series([r[3] for r in rows], dtype="boolean"),
        "password_hash": pd.Series([r[4] for r in rows], dtype=TEXT_DTYPE),
        "status": pd.Series([r[5] for r in rows], dtype=TEXT_DTYPE),
    })

    checks = {c.name: c for c in account_checks(accounts, users, show_personal_data=show_personal_data)}

    expected: dict[str, list[tuple[int, str | None, str | None]]] = {name: [] for name in checks}
    migrated = sorted((r for r in rows if r[1] == "MIGRATION"), key=lambda r: r[0])
    for user, _, login, reset, password_hash, status in migrated:
        exists = user in legacy
        expected_login, legacy_status = legacy.get(user, (None, None))
        if not exists:
            expected["legacy_user_exists"].append((user, "id_utilisateur present in the extract", "absent"))
        if not (exists and login == expected_login):
            expected["login_kept"].append((user, expected_login, login) if show_personal_data else (user, None, None))
        if reset is not True:
            expected["must_reset_password"].append((user, "true", "NULL" if reset is None else "false"))
        if password_hash is not None:
            expected["no_password_hash"].append((user, "NULL", "***"))
        mapped = status_of.get(legacy_status) if legacy_status is not None else None
        if not (exists and mapped is not None and status == mapped):
            wanted = (f"no EFP Connect status for legacy {legacy_status}" if mapped is None
                      else f"{mapped} (legacy {legacy_status})")
            expected["status_mapped"].append((user, wanted, status))
    for name, check in checks.items():
        assert check.checked == len(migrated), name
        assert [(f.legacy_user_id, f.expected, f.found) for f in check.failures] == expected[name], name


@SETTINGS
@given(st.lists(st.one_of(st.none(), st.sampled_from(["", " ", "123 456 789 00012", "12345678900012", " 1 ", "é"]),
                          st.text(alphabet=" 0123456789\t", max_size=6)), max_size=20))
def test_normalised_sirets_are_the_digits_or_none(sirets: list[str | None]) -> None:
    """Each SIRET without its whitespace, and None where nothing (or nothing but whitespace) is left."""
    import re

    from reports.reconciliation import _normalised_sirets

    expected = [None if s is None or re.sub(r"\s+", "", s) == "" else re.sub(r"\s+", "", s) for s in sirets]
    got = _normalised_sirets(np.array(sirets, dtype=object))
    assert got.dtype == object
    assert got.tolist() == expected
    assert all(type(v) is str for v in got.tolist() if v is not None)
