"""Custom Great Expectations for what no built-in expectation knows: email syntax, SIRET check
digits and telephone numbers, each delegating to the library made for it; and the built-in
compound-uniqueness check computed by sorting (`ExpectCompoundColumnsToBeUniqueBySorting`).

Each is a real column-map expectation: Great Expectations computes which rows fail, reports
them (unexpected_index_list) and renders them in Data Docs like any built-in one. The
conditions use the column forms of mappings/normalize.py (a vectorised pass for the common
shapes, the library itself for every other distinct value); Great Expectations drops the null
values before calling them.
"""

from __future__ import annotations

from typing import Any, ClassVar

import pandas as pd
from great_expectations.execution_engine import PandasExecutionEngine
from great_expectations.expectations.core.expect_compound_columns_to_be_unique import (
    ExpectCompoundColumnsToBeUnique,
)
from great_expectations.expectations.expectation import ColumnMapExpectation
from great_expectations.expectations.metrics import ColumnMapMetricProvider, column_condition_partial
from great_expectations.expectations.metrics.map_metric_provider import MulticolumnMapMetricProvider
from great_expectations.expectations.metrics.map_metric_provider.multicolumn_condition_partial import (
    multicolumn_condition_partial,
)

from mappings.normalize import phones_e164, valid_emails, valid_sirets
from pipelines.duplicates import duplicated_rows


class ColumnValuesAreValidEmail(ColumnMapMetricProvider):
    condition_metric_name = "column_values.efp_valid_email"

    @column_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column: pd.Series, **_kwargs: Any) -> pd.Series:  # noqa: N805 (GX's decorator makes it a classmethod)
        return valid_emails(column)


class ColumnValuesAreValidSiret(ColumnMapMetricProvider):
    condition_metric_name = "column_values.efp_valid_siret"

    @column_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column: pd.Series, **_kwargs: Any) -> pd.Series:  # noqa: N805 (GX's decorator makes it a classmethod)
        return valid_sirets(column)


class ColumnValuesAreValidPhoneNumber(ColumnMapMetricProvider):
    condition_metric_name = "column_values.efp_valid_phone_number"

    @column_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column: pd.Series, **_kwargs: Any) -> pd.Series:  # noqa: N805 (GX's decorator makes it a classmethod)
        return phones_e164(column).notna()


class CompoundColumnsUniqueBySorting(MulticolumnMapMetricProvider):
    condition_metric_name = "compound_columns.efp_unique_by_sorting"
    condition_domain_keys = ("batch_id", "table", "column_list", "row_condition", "condition_parser", "ignore_row_if")

    @multicolumn_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column_list: pd.DataFrame, **_kwargs: Any) -> pd.Series:  # noqa: N805 (GX's decorator makes it a classmethod)
        return pd.Series(~duplicated_rows(column_list), index=column_list.index)


class ExpectCompoundColumnsToBeUniqueBySorting(ExpectCompoundColumnsToBeUnique):
    """Great Expectations' compound uniqueness (same rows fail, same report and rendering), its pandas
    condition computed by `duplicated_rows` instead of `DataFrame.duplicated`."""

    map_metric = "compound_columns.efp_unique_by_sorting"


class ExpectColumnValuesToBeValidEmail(ColumnMapExpectation):
    """Values are syntactically valid email addresses (email-validator, no DNS lookup)."""

    map_metric = "column_values.efp_valid_email"
    success_keys: ClassVar[tuple[str, ...]] = ("mostly",)


class ExpectColumnValuesToBeValidSiret(ColumnMapExpectation):
    """Values are SIRETs of 14 digits with a correct check digit (python-stdnum, La Poste included)."""

    map_metric = "column_values.efp_valid_siret"
    success_keys: ClassVar[tuple[str, ...]] = ("mostly",)


class ExpectColumnValuesToBeValidPhoneNumber(ColumnMapExpectation):
    """Values are valid phone numbers by libphonenumber's rules, read as French by default."""

    map_metric = "column_values.efp_valid_phone_number"
    success_keys: ClassVar[tuple[str, ...]] = ("mostly",)
