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
