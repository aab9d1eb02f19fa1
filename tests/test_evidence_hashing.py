"""The evidence's fast hashing (Arrow arrays joined in C) gives, byte for byte, the canonical
text of the reference (one Python string per line), on generated tables of every column kind,
in key order and in line order, over several chunks; a value Arrow cannot hold goes the
reference way instead of failing or changing the digest."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
from collections.abc import Iterator
from datetime import datetime

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reports import evidence
from reports.evidence import _lines_arrow, _lines_reference, canonical_digest, text_bytes

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
KINDS = {"id": "int", "label": "text", "note": "text", "flag": "bool", "at": "datetime", "day": "date",
         "secret": "redacted", "ref": "int"}

texts = st.one_of(st.none(), st.sampled_from(["", "plain", "a,b", 'say "hi"', "line\nbreak", "cr\rx", "Zoé",
                                              "日本", "tab\tx", "back\\slash", "  "]),
                  st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=6))
# The whole range of datetime64[ns]: before 1970 the day and the second are floored, not truncated.
instants = st.one_of(st.none(), st.datetimes(min_value=datetime(1677, 9, 22), max_value=datetime(2262, 4, 10)),
                     st.sampled_from([datetime(1969, 12, 31, 23, 59, 59, 999999), datetime(1970, 1, 1),
                                      datetime(2000, 2, 29, 12), datetime(1900, 3, 1, 0, 0, 0, 1)]))
row = st.tuples(texts, texts, st.one_of(st.none(), st.booleans()), instants, instants,
                st.one_of(st.none(), st.text(max_size=3)), st.one_of(st.none(), st.integers(-2**40, 2**40)))


@contextlib.contextmanager
def small_chunks(rows: int) -> Iterator[None]:
    saved = evidence.CHUNK_ROWS
    evidence.CHUNK_ROWS = rows
    try:
        yield
    finally:
        evidence.CHUNK_ROWS = saved


def frame_of(rows: list[tuple[object, ...]], text_dtype: str | type) -> pd.DataFrame:
    label, note, flag, at, day, secret, ref = zip(*rows, strict=True) if rows else ([],) * 7
    return pd.DataFrame({
        "id": pd.Series(np.arange(len(rows))[::-1] * 3, dtype="Int64"),  # out of key order: reordered
        "label": pd.Series(label, dtype=text_dtype),
        "note": pd.Series(note, dtype=text_dtype),
        "flag": pd.Series(flag, dtype="boolean"),
        "at": pd.Series(at, dtype="datetime64[ns]"),
        "day": pd.Series(day, dtype="datetime64[ns]"),
        "secret": pd.Series(secret, dtype=object),
        "ref": pd.Series(ref, dtype="Int64"),
    })


@SETTINGS
@given(st.lists(row, max_size=25), st.sampled_from(["str", object, "category"]), st.integers(1, 7),
       st.sampled_from(["id", None]))
def test_fast_digest_equals_the_reference(rows: list[tuple[object, ...]], text_dtype: str | type, chunk: int,
                                          order_key: str | None) -> None:
    frame = frame_of(rows, text_dtype)
    with small_chunks(chunk):
        assert canonical_digest(frame, KINDS, order_key) == canonical_digest(frame, KINDS, order_key, fast=False)


@SETTINGS
@given(st.lists(row, min_size=1, max_size=25), st.sampled_from(["str", object, "category"]))
def test_fast_lines_are_the_reference_bytes(rows: list[tuple[object, ...]], text_dtype: str | type) -> None:
    # Directly, not through the fallback: a fast way that always fell back would pass the test above.
    frame = frame_of(rows, text_dtype)
    expected = ("\n".join(_lines_reference(frame, KINDS)) + "\n").encode("utf-8")
    assert bytes(text_bytes(_lines_arrow(frame, KINDS))) == expected


def test_known_digest_of_a_small_table() -> None:
    frame = pd.DataFrame({"id": pd.Series([2, 1], dtype="Int64"), "label": pd.Series(["b,c", None], dtype="str"),
                          "at": pd.Series([datetime(2024, 1, 1, 10, 0, 0, 500000), None], dtype="datetime64[ns]")})
    kinds = {"id": "int", "label": "text", "at": "datetime"}
    text = 'id,label,at\n1,,\n2,"b,c",2024-01-01T10:00:00.500000\n'
    assert canonical_digest(frame, kinds, "id") == (hashlib.sha256(text.encode()).hexdigest(), "by id")
    by_line = "id,label,at\n1,,\n2,\"b,c\",2024-01-01T10:00:00.500000\n"
    assert canonical_digest(frame, kinds, None) == (hashlib.sha256(by_line.encode()).hexdigest(),
                                                    "by canonical line (code-point order)")


@pytest.mark.parametrize("order_key", ["id", None])
def test_a_lone_surrogate_goes_the_reference_way(order_key: str | None) -> None:
    frame = pd.DataFrame({"id": pd.Series([1, 2, 3], dtype="Int64"),
                          "label": pd.Series(["ok", "bad\ud800", "ok,2"], dtype=object)})
    kinds = {"id": "int", "label": "text"}
    with pytest.raises((UnicodeError, ValueError)):
        _lines_arrow(frame, kinds)  # Arrow refuses it...
    # (in key order and in line order alike, the rows come out 1, 2, 3)
    text = 'id,label\n1,ok\n2,bad\ud800\n3,"ok,2"\n'.encode("utf-8", "surrogatepass")
    digest, _ = canonical_digest(frame, kinds, order_key)  # ...and the digest is the reference's
    assert digest == hashlib.sha256(text).hexdigest()


def test_line_order_is_code_point_order() -> None:
    # "é" (U+00E9) sorts after "z" in code points and in UTF-8 bytes, before it in most collations.
    frame = pd.DataFrame({"label": pd.Series(["é", "z", "a", "Z"], dtype="str")})
    text = "label\nZ\na\nz\né\n"
    assert canonical_digest(frame, {"label": "text"}, None)[0] == hashlib.sha256(text.encode()).hexdigest()


def reference_control_hashes(rows: list[tuple[int, str, str | None, str | None]]) -> dict[str, str]:
    """control_hashes as its docstring defines it, one Python string per distinct tuple."""
    def text(value: str | None) -> str:
        if value is None:
            return "\\N"
        return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")

    by_app: dict[str, set[tuple[int, str, str]]] = {}
    for user, app, siret, role in rows:
        by_app.setdefault(app, set()).add((user, text(siret), text(role)))
    return {
        app: hashlib.sha256("".join(f"{u}\t{text(app)}\t{s}\t{r}\n" for u, s, r in sorted(tuples))
                            .encode("utf-8", "surrogatepass")).hexdigest()
        for app, tuples in by_app.items()
    }


tuple_text = st.one_of(st.none(), st.sampled_from(["", "R", "R\tX", "a\\b", "é", "Z", "日本", "x\ny"]))


@SETTINGS
@given(st.lists(st.tuples(st.integers(1, 30), st.sampled_from(["EDOF", "MAF", "CERES"]), tuple_text, tuple_text),
                max_size=40))
def test_control_hashes_are_the_definition(rows: list[tuple[int, str, str | None, str | None]]) -> None:
    from reports.reconciliation import control_hashes

    frame = pd.DataFrame(rows, columns=["legacy_user_id", "application_code", "siret", "role"])
    if frame.empty:
        frame = frame.astype({"legacy_user_id": np.int64})
    assert control_hashes(frame) == reference_control_hashes(rows)


def test_control_hashes_with_a_lone_surrogate_are_the_definition() -> None:
    from reports.reconciliation import control_hashes

    rows = [(1, "EDOF", None, "bad\ud800"), (2, "EDOF", "x", "R")]
    frame = pd.DataFrame(rows, columns=["legacy_user_id", "application_code", "siret", "role"], dtype=object)
    assert control_hashes(frame) == reference_control_hashes(rows)


@pytest.mark.parametrize("kind", ["datetime", "date"])
def test_instants_far_from_today_are_written_as_numpy_writes_them(kind: str) -> None:
    """Sentinels such as 9999-12-31 are written by the fast way; a year of five digits falls back."""
    values = np.array(["9999-12-31T23:59:59", "0001-01-01T00:00:00.000001", "NaT", "12000-06-01T08:00:00"],
                      dtype="datetime64[us]")
    for chunk in (values[:3], values):
        series = pd.Series(chunk, dtype="datetime64[us]")
        assert evidence.arrow_column(series, kind).to_pylist() == list(evidence.canonical_column(series, kind))
    assert evidence._datetime_arrow(pd.Series(values[:3], dtype="datetime64[us]"), kind) is not None
    assert evidence._datetime_arrow(pd.Series(values, dtype="datetime64[us]"), kind) is None


@SETTINGS
@given(st.lists(row, max_size=25), st.sampled_from(["str", object, "category"]), st.lists(st.integers(0, 25), max_size=4),
       st.integers(1, 7))
def test_a_table_hashed_batch_by_batch_in_key_order_has_the_whole_tables_digest(
        rows: list[tuple[object, ...]], text_dtype: str | type, cuts: list[int], chunk: int) -> None:
    """KeyOrderedDigest, fed the rows in key order cut anywhere into batches (empty ones too),
    gives canonical_digest of the whole table: the reconciliation hashes the target as it reads it."""
    from reports.evidence import KeyOrderedDigest

    frame = frame_of(rows, text_dtype).iloc[::-1].reset_index(drop=True)  # ids now increase
    bounds = sorted({0, len(frame), *(min(c, len(frame)) for c in cuts)})
    with small_chunks(chunk):
        streamed = KeyOrderedDigest(KINDS, "id")
        for start, end in itertools.pairwise(bounds):
            streamed.update(frame.iloc[start:end])
        streamed.update(frame.iloc[0:0])
        assert streamed.result() == canonical_digest(frame, KINDS, "id")
    assert streamed.row_count == len(frame)


@pytest.mark.parametrize("batches", [
    [[1, 3], [2]],  # a later batch goes back
    [[1, 3], [3, 4]],  # a key repeated across batches
    [[2, 1]],  # within one batch
    [[1, 1]],
    [[1, None]],  # a missing key
], ids=["back", "repeated-across", "decreasing", "repeated", "missing"])
def test_rows_out_of_key_order_are_refused_not_hashed_in_the_wrong_order(batches: list[list[int | None]]) -> None:
    from reports.evidence import KeyOrderedDigest, NotInKeyOrderError

    streamed = KeyOrderedDigest({"id": "int"}, "id")
    frames = [pd.DataFrame({"id": pd.Series(batch, dtype="Int64")}) for batch in batches]
    for frame in frames[:-1]:
        streamed.update(frame)
    with pytest.raises(NotInKeyOrderError):
        streamed.update(frames[-1])


def test_only_an_integer_key_is_taken_in_the_reads_order() -> None:
    # A text key's SQL order (a collation) need not be code-point order.
    from reports.evidence import KeyOrderedDigest

    with pytest.raises(ValueError, match="integer key"):
        KeyOrderedDigest({"siret": "text"}, "siret")
