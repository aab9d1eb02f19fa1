"""The Arrow fast paths of the extract (timestamps parsed from Arrow's buffer, the fingerprint
of text columns fed from it) give exactly what the reference ways give: same instants, same
statuses, same first problem and message, same digest bytes."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pipelines import extract
from pipelines.arrow_text import arrow_strings, fixed_width_matrix, terminated_bytes
from pipelines.errors import InputError
from pipelines.frames import TEXT_DTYPE

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class _Locator:
    source = "table habilitations"

    def row(self, index: int) -> str:
        return f"row {index + 1}"

    def rows(self, first: int, second: int) -> str:
        return f"rows {first + 1} and {second + 1}"


def _digits(count: int) -> st.SearchStrategy[str]:
    return st.text(alphabet="0123456789", min_size=count, max_size=count)


@st.composite
def _near_dates(draw: st.DrawFn) -> str:
    """Texts in or near the accepted layouts: any digits (31/02, month 13, year 9999), any
    fraction length, spaces around, a stray letter or a non-ASCII character instead of one."""
    layout = draw(st.sampled_from((*extract.DATE_TEMPLATES, "YYYY-MM-DDThh:mm", "DD/MM/YY")))
    text = "".join(draw(_digits(1)) if symbol in "YMDhmsf" else symbol for symbol in layout)
    if draw(st.booleans()):
        text = draw(st.sampled_from(["2024", "1677", "2262", "9999", "0000", "1970"])) + text[4:] \
            if layout.startswith("Y") else text
    edit = draw(st.sampled_from(["none", "none", "pad", "letter", "accent", "nbsp", "truncate"]))
    position = draw(st.integers(min_value=0, max_value=max(len(text) - 1, 0)))
    if edit == "pad":
        text = draw(st.sampled_from([" ", "  ", "\t"])) + text + draw(st.sampled_from(["", " "]))
    elif edit == "letter":
        text = text[:position] + "x" + text[position + 1:]
    elif edit == "accent":
        text = text[:position] + "é" + text[position + 1:]
    elif edit == "nbsp":
        text = "\u00a0" + text
    elif edit == "truncate":
        text = text[:position]
    return text


_VALUES = st.lists(st.one_of(_near_dates(), st.none(), st.text(max_size=12)), max_size=40)


def _reference_timestamps(values: list[str | None]) -> tuple[np.ndarray, str | None]:
    series = pd.Series(values, dtype=object)
    problems = extract._Problems(_Locator())
    stamps = extract._timestamps_from_text("valid_from", series, problems)
    return stamps, _first_problem(problems)


def _first_problem(problems: extract._Problems) -> str | None:
    try:
        problems.raise_first()
    except InputError as error:
        return str(error)
    return None


@SETTINGS
@given(_VALUES)
@example(["2024-02-29 10:00:00", "2023-02-29 10:00:00", None, " 2024-01-01", "9999-12-31"])
@example(["\u00a02024-01-01", "2024-01-01é", "01/02/2024 10:20", "2024-01-01T10:20:30.123456789"])
@example([])
def test_arrow_timestamps_are_the_reference_timestamps(values: list[str | None]) -> None:
    reference, reference_problem = _reference_timestamps(values)
    series = pd.Series(values, dtype=TEXT_DTYPE)
    assert arrow_strings(series) is not None  # the fast path is the one taken
    problems = extract._Problems(_Locator())

    stamps = extract._timestamps_from_text("valid_from", series, problems)

    np.testing.assert_array_equal(stamps, reference)
    assert _first_problem(problems) == reference_problem


@SETTINGS
@given(st.lists(st.one_of(_near_dates(), st.text(max_size=12)), max_size=40), st.one_of(st.none(), st.integers(1, 7)))
@example(["2024-01-01", "2023-05-05", "x", "05/04/2022 10:20", "1500-01-01", "", "2022-02-02"], 2)
def test_parse_arrow_timestamps_gives_the_reference_statuses(texts: list[str], chunk_rows: int | None) -> None:
    """Whole or a few rows at a time (each chunk an offset slice of the Arrow array)."""
    objects = np.array(texts, dtype=object)
    reference_stamps, reference_status = extract.parse_timestamp_texts(objects)

    stamps, status = extract.parse_arrow_timestamps(pa.array(texts, pa.string()), chunk_rows)

    np.testing.assert_array_equal(stamps, reference_stamps)
    np.testing.assert_array_equal(status, reference_status)


def _column_digest(series: pd.Series, *, fast: bool) -> str:
    digest = hashlib.sha256()
    extract._update_with_column(digest, series, fast=fast)
    return digest.hexdigest()


@SETTINGS
@given(st.lists(st.one_of(st.none(), st.text(min_size=1, max_size=8)), max_size=30),
       st.sampled_from([1, 2, 3, 1_000_000]))
@example(["a\x00b", None, "c"], 1_000_000)  # a value holding NUL: the reference's length prefixes
@example([None, None], 1)
@example([], 2)
def test_arrow_text_fingerprint_is_the_reference_fingerprint(values: list[str | None], chunk_rows: int) -> None:
    series = pd.Series(values, dtype=TEXT_DTYPE)
    with pytest.MonkeyPatch.context() as patch:  # small chunks: the separators across chunk ends
        patch.setattr(extract, "_FINGERPRINT_CHUNK_ROWS", chunk_rows)
        fast = _column_digest(series, fast=True)
        # The extract's few-valued columns are categoricals: hashed as their text, whatever the
        # categories' order or unused ones, so the fingerprint is that of the text.
        categories = sorted({value for value in values if value is not None} | {"zz-unused"}, reverse=True)
        categorical = _column_digest(series.astype(pd.CategoricalDtype(categories)), fast=True)

    assert fast == _column_digest(series, fast=False)
    assert categorical == fast


def test_the_fast_ways_are_taken_only_for_arrow_backed_text() -> None:
    assert arrow_strings(pd.Series(["a", None], dtype=object)) is None
    strings = arrow_strings(pd.Series(["ab", None, "cd"], dtype=TEXT_DTYPE))
    assert strings is not None
    assert strings.to_pylist() == ["ab", "cd"]
    filled = arrow_strings(pd.Series(["ab", None], dtype=TEXT_DTYPE), nulls="")
    assert filled is not None
    assert filled.to_pylist() == ["ab", ""]
    digest = hashlib.sha256()
    assert not extract._update_with_arrow_text(digest, pd.Series(["a\x00b"], dtype=TEXT_DTYPE))
    assert digest.hexdigest() == hashlib.sha256().hexdigest()  # nothing fed: the reference takes it


def test_fixed_width_matrix_and_terminated_bytes() -> None:
    strings = pa.array(["abc", "de", "fgh", "ijk"]).slice(1)  # an offset into the buffers
    matrix = fixed_width_matrix(strings, np.array([1, 2]), 3)
    assert matrix.shape == (3, 2)
    assert bytes(matrix[:, 0]) == b"fgh"
    assert bytes(matrix[:, 1]) == b"ijk"
    with pytest.raises(ValueError, match="not all 3 bytes long"):
        fixed_width_matrix(strings, np.array([0, 1]), 3)
    assert bytes(terminated_bytes(strings, "\n")) == b"de\nfgh\nijk\n"
    assert bytes(terminated_bytes(pa.array([], pa.string()), "\n")) == b""


@pytest.mark.parametrize("dtype", [TEXT_DTYPE, "category"])
@SETTINGS
@given(values=st.lists(st.one_of(st.none(), st.sampled_from(["EDOF", "MAF", "", "é\u0301", "a\\tb"]),
                                 st.text(max_size=4)), max_size=40))
def test_shared_objects_equal_to_numpy_with_one_string_per_distinct_value(values: list[str | None],
                                                                          dtype: object) -> None:
    from pipelines.arrow_text import shared_objects

    column = pd.Series(values, dtype=TEXT_DTYPE).astype(dtype)  # categories of text, as validate makes
    shared = shared_objects(column)
    reference = column.to_numpy(dtype=object)
    assert shared.dtype == object
    assert len(shared) == len(reference)
    assert [v if isinstance(v, str) else "<missing>" for v in shared] == \
        [v if isinstance(v, str) else "<missing>" for v in reference]
    assert all(isinstance(v, float) and np.isnan(v) for v in shared[column.isna().to_numpy()])  # NaN, as numpy's
    texts = [v for v in shared if isinstance(v, str)]
    assert len({id(v) for v in texts}) == len(set(texts))  # one object per distinct value
    plain = pd.Series(values, dtype=object)
    assert shared_objects(plain) is not None
    assert list(shared_objects(plain)) == list(plain)
