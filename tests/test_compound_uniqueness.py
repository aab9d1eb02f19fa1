"""The duplicate-access rule's expectation, compound uniqueness computed by sorting, finds exactly
the rows pandas' `DataFrame.duplicated(keep=False)` finds (which Great Expectations' own
ExpectCompoundColumnsToBeUnique uses), and Great Expectations reports them the same way."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pipelines.duplicates import duplicated_rows
from validation.evaluate import RuleEngine
from validation.rules import Rule, check

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Few distinct values, so that rows repeat: integers, categories and text, each with missing values
# but the integers (as the duplicate facts: holder ids never missing).
ROWS = st.lists(
    st.tuples(
        st.integers(min_value=-2, max_value=3),
        st.sampled_from([None, "ADMIN", "LECTEUR", "é ß"]),
        st.sampled_from([None, "", "12345678901234", "98765432109876"]),
        st.sampled_from([None, 1, 2]),
    ),
    max_size=40,
)


def _frame(rows: list[tuple[int, str | None, str | None, int | None]]) -> pd.DataFrame:
    columns = list(zip(*rows, strict=True)) if rows else [(), (), (), ()]
    return pd.DataFrame({
        "holder_id": np.array(columns[0], dtype=np.int64),
        "role_code": pd.Categorical(list(columns[1])),
        "siret_key": pd.array(list(columns[2]), dtype="str"),
        "delegate": pd.array(list(columns[3]), dtype="Int64"),
    })


@SETTINGS
@given(ROWS)
@example([])
@example([(1, None, None, None)])
@example([(1, None, None, None), (1, None, None, None)])
@example([(1, "ADMIN", "", 1), (1, "ADMIN", None, 1)])  # an empty text is not a missing one
def test_duplicated_rows_are_those_pandas_finds(rows: list[tuple[int, str | None, str | None, int | None]]) -> None:
    frame = _frame(rows)
    expected = frame.duplicated(keep=False).to_numpy()
    assert duplicated_rows(frame).tolist() == expected.tolist()
    for column in frame.columns:  # each column alone too
        assert duplicated_rows(frame[[column]]).tolist() == frame[[column]].duplicated(keep=False).tolist()


def _failing_keys(expectation: str, facts: pd.DataFrame) -> tuple[list[int], dict[str, object]]:
    rule = Rule("habilitation", "DUPLICATE_ACCESS", "merged", 13,
                (check(expectation, column_list=["holder_id", "role_code", "siret_key", "delegate"]),),
                "", "", suite_entity="habilitation_duplicate")
    engine = RuleEngine()
    evaluation = engine.evaluate("habilitation_duplicate", facts, (rule,), {})
    result = evaluation.raw_result.results[0].result
    return sorted(evaluation.failures["DUPLICATE_ACCESS"]), {
        key: result[key] for key in ("element_count", "unexpected_count", "unexpected_percent")}


def test_great_expectations_reports_the_same_failing_records_as_its_own_expectation() -> None:
    rng = np.random.default_rng(7)
    size = 5_000
    facts = _frame([(int(rng.integers(0, 400)), rng.choice(["ADMIN", "LECTEUR", None]),  # type: ignore[misc]
                     rng.choice(["12345678901234", "", None]), rng.choice([1, None]))  # type: ignore[misc]
                    for _ in range(size)])
    facts.insert(0, "id_habilitation", np.arange(100, 100 + size, dtype=np.int64))
    ours = _failing_keys("ExpectCompoundColumnsToBeUniqueBySorting", facts)
    theirs = _failing_keys("ExpectCompoundColumnsToBeUnique", facts)
    assert ours == theirs
    failing, counts = ours
    assert 0 < len(failing) < size
    assert counts["unexpected_count"] == len(failing)
