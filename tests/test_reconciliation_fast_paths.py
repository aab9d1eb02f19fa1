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
@given(_TUPLE_TEXTS, _TUPLE_TEXTS, st.sampled_from([TEXT_DTYPE, object]))
def test_text_codes_of_arrow_and_object_parts_stand_for_the_values(
    first: list[str | None], second: list[str | None], first_dtype: object
) -> None:
    from reports.reconciliation import _escape_tuple_text, _TextCodes

    parts = [pd.Series(first, dtype=first_dtype), pd.Series(second, dtype=object)]
    codes = _TextCodes.of(parts)

    assert codes.raw[codes.codes].tolist() == [None if v is None else v for v in [*first, *second]]
    assert codes.text.tolist() == [_escape_tuple_text(v) for v in codes.raw]
    assert sorted(codes.text.tolist()) == codes.text[np.argsort(codes.rank)].tolist()
    assert len(set(codes.raw[1:].tolist())) == len(codes.raw) - 1  # each distinct value once
    for part in parts:
        part_codes, uniques = factorized(part)
        assert [None if c < 0 else uniques[c] for c in part_codes] == part.astype(object).where(part.notna(), None).tolist()


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
