"""Evaluating the declared rules with Great Expectations: one suite per entity, one run each.

The per-record outcomes come from this one evaluation: for every rule, the legacy keys of
the records that break it are read from Great Expectations' `unexpected_index_list`.

The facts are handed to Great Expectations with the legacy key as their (unnamed) row index,
and the result format asks for no ID/PK columns: Great Expectations then lists the failing
keys themselves, at the cost of one list per expectation. (Asked for `id_*` columns, it reads
every failing row's cells one by one; that took most of the stage at a million users.) The
values of a failing record, which Data Docs and the exceptions workbook show, are read back
by key from the facts the suite ran on (`failing_records`).
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import warnings
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from validation.rules import KEY_COLUMNS, SUITES, Rule

log = logging.getLogger(__name__)

RESULT_FORMAT: dict[str, Any] = {
    "result_format": "COMPLETE",  # every failing key, not a sample
    "return_unexpected_index_query": False,
    "partial_unexpected_count": 20,
}


@dataclass(frozen=True)
class SuiteEvaluation:
    """What one suite found: the failing keys of each rule, and the raw result for Data Docs."""

    suite: str
    failures: dict[str, frozenset[Any]]  # reason_code -> keys of the records that break it
    evaluated_records: int
    raw_result: Any = field(repr=False, compare=False)


class SuiteResults(dict[str, Any]):
    """`RuleEngine.results`: suite name -> Great Expectations' ExpectationSuiteValidationResult.

    It also keeps, per suite, the facts the suite ran on (indexed by legacy key) and the name
    of the key column, so that a failing record's values can be read back (`failing_records`).
    """

    def __init__(self) -> None:
        super().__init__()
        self.facts: dict[str, pd.DataFrame] = {}
        self.key_columns: dict[str, str] = {}


class RuleEngine:
    """An ephemeral Great Expectations context holding one suite per entity."""

    def __init__(self) -> None:
        # Imported here: Great Expectations takes seconds to import and the CLI must stay quick.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import great_expectations as gx
            from great_expectations.data_context.types.base import ProgressBarsConfig

            import validation.expectations  # noqa: F401  (registers the custom expectations)

        self._gx = gx
        self.context = gx.get_context(mode="ephemeral")
        # No "Calculating Metrics" bars: the CLI has its own progress display.
        self.context.variables.progress_bars = ProgressBarsConfig(globally=False)
        self.results: SuiteResults = SuiteResults()

    def evaluate(
        self, suite_entity: str, facts: pd.DataFrame, rules: tuple[Rule, ...], parameters: dict[str, Any]
    ) -> SuiteEvaluation:
        gx = self._gx
        import great_expectations.expectations as gxe

        import validation.expectations as custom

        suite_name = SUITES[suite_entity]
        key_column = KEY_COLUMNS[suite_entity]
        # Only the columns the rules read: GX filters (row_condition) and fingerprints the whole frame.
        keyed = facts[_columns_read(rules, facts.columns)].set_axis(pd.Index(facts[key_column].to_numpy()))
        if not keyed.index.is_unique:
            raise ValueError(f"suite {suite_name}: {key_column} is not unique in the facts")
        suite = self.context.suites.add(gx.ExpectationSuite(name=suite_name))
        for rule in rules:
            for check in rule.checks:
                cls = getattr(gxe, check.expectation, None) or getattr(custom, check.expectation)
                kwargs = {k: _resolve(v, parameters) for k, v in check.kwargs.items()}
                suite.add_expectation(
                    cls(**kwargs, meta={"reason_code": rule.reason_code, "outcome": rule.outcome,
                                        "entity": rule.entity, "order": rule.order, "blocking": rule.blocking})
                )
        # One data source per suite, deleted once its suite has run: its execution engine caches
        # the batch (the facts) and every metric it resolved, and the context outlives this
        # engine (Great Expectations keeps it as its global project), so they would stay in
        # memory until the process ends; at a million users, about 800 MB through the load and
        # the reconciliation. The facts stay here, for as long as this engine, in `results`.
        datasource = self.context.data_sources.add_pandas(f"legacy_extract-{suite_name}")
        asset = datasource.add_dataframe_asset(suite_name)
        batch_definition = asset.add_batch_definition_whole_dataframe(suite_name)
        definition = self.context.validation_definitions.add(
            gx.ValidationDefinition(name=suite_name, data=batch_definition, suite=suite)
        )
        try:
            result = _run(definition, keyed)
        finally:
            self.context.validation_definitions.delete(suite_name)
            self.context.data_sources.delete(datasource.name)
            del datasource, asset, batch_definition, definition
        self.results[suite_name] = result
        self.results.key_columns[suite_name] = key_column
        failures: dict[str, set[Any]] = {rule.reason_code: set() for rule in rules}
        for expectation_result in result.results:
            configuration = expectation_result.expectation_config
            meta = configuration.meta
            if expectation_result.exception_info.get("raised_exception"):
                raise RuntimeError(
                    f"suite {suite_name}: {configuration.type} failed to evaluate: "
                    f"{expectation_result.exception_info.get('exception_message')}"
                )
            outcome = expectation_result.result or {}
            unexpected = outcome.get("unexpected_index_list") or []
            # A failing record must never go unnoticed: GX lists every failing row or none.
            if len(unexpected) != (outcome.get("unexpected_count") or 0):
                raise RuntimeError(
                    f"suite {suite_name}: {configuration.type} reported {outcome.get('unexpected_count')} "
                    f"failing records but listed {len(unexpected)}"
                )
            failures[meta["reason_code"]].update(unexpected)
        # Only the failing records' facts are kept (for `failing_records`): a tenth of them at scale.
        failing = set().union(*failures.values())
        self.results.facts[suite_name] = keyed[keyed.index.isin(list(failing))]
        log.info("suite %s: %d records, %s", suite_name, len(facts),
                 {k: len(v) for k, v in failures.items() if v})
        return SuiteEvaluation(
            suite=suite_name,
            failures={k: frozenset(v) for k, v in failures.items()},
            evaluated_records=len(facts),
            raw_result=result,
        )


def _run(definition: Any, keyed: pd.DataFrame) -> Any:
    """`ValidationDefinition.run` without its results store, which serialised every result to
    JSON (over half of the stage at scale) for an ephemeral context that never reads it back."""
    from great_expectations.constants import DATAFRAME_REPLACEMENT_STR
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.validator.v1_validator import Validator

    validator = Validator(batch_definition=definition.batch_definition,
                          batch_parameters={"dataframe": keyed}, result_format=dict(RESULT_FORMAT))
    with _no_batch_fingerprint():
        result = validator.validate_expectation_suite(definition.suite)
    run_id = RunIdentifier(run_time=dt.datetime.now(dt.UTC))
    # The same metadata as ValidationDefinition.run: the Data Docs pages show it.
    result.meta["validation_id"] = definition.id
    result.meta["checkpoint_id"] = None
    result.meta["run_id"] = run_id
    result.meta["validation_time"] = run_id.run_time
    result.meta["batch_parameters"] = {"dataframe": DATAFRAME_REPLACEMENT_STR}
    return result


@contextmanager
def _no_batch_fingerprint() -> Iterator[None]:
    """Great Expectations skips the MD5 of a batch's frame it shows among the batch markers of Data
    Docs (`pandas_data_fingerprint`) for a frame of 1 GB or more (its HASH_THRESHOLD); here for
    every frame. Hashing the facts row by row took 2.4 s of the validation at a million users, on
    the run's critical path, for a marker nothing reads and no one could recompute; the run's input
    fingerprint (SHA-256 of the legacy tables, in the ledger and the manifest) is the one to check.
    The threshold is module state: set only while a suite runs (validation runs in one thread)."""
    from great_expectations.execution_engine import pandas_execution_engine as engine

    if not hasattr(engine, "HASH_THRESHOLD"):  # another version of Great Expectations: left as it is
        yield
        return
    threshold = engine.HASH_THRESHOLD
    engine.HASH_THRESHOLD = 0
    try:
        yield
    finally:
        engine.HASH_THRESHOLD = threshold


def _columns_read(rules: tuple[Rule, ...], available: Iterable[str]) -> list[str]:
    """The facts columns the rules' expectations read, row conditions included, in the facts' order."""
    named: set[str] = set()
    conditions: list[str] = []
    for rule in rules:
        for check in rule.checks:
            named.update(domain_columns(check))
            if isinstance(check.kwargs.get("row_condition"), str):
                conditions.append(check.kwargs["row_condition"])
    return [column for column in available if column in named
            or any(re.search(rf"(?<!\w){re.escape(column)}(?!\w)", condition) for condition in conditions)]


def domain_columns(configuration: Any) -> list[str]:
    """The columns an expectation reads, as Great Expectations names them in its per-record lists."""
    kwargs = configuration.kwargs
    if "column" in kwargs:
        return [kwargs["column"]]
    if "column_A" in kwargs and "column_B" in kwargs:
        return [kwargs["column_A"], kwargs["column_B"]]
    return list(kwargs.get("column_list") or [])


def failing_records(results: Mapping[str, Any], suite: str, expectation_result: Any) -> pd.DataFrame | None:
    """The records one expectation found failing: its columns, then the key column (last), one row
    each, in Great Expectations' order; None when the result lists none.

    The keys are Great Expectations' `unexpected_index_list`; the column values are read from the
    facts the suite ran on (`SuiteResults`). A result that already lists records (a result format
    with `unexpected_index_column_names`) is read as it is.
    """
    outcome = expectation_result.result or {}
    unexpected = outcome.get("unexpected_index_list")
    if not unexpected:
        return None
    columns = domain_columns(expectation_result.expectation_config)
    if isinstance(unexpected[0], dict):
        key_columns = outcome.get("unexpected_index_column_names") or []
        if not key_columns:
            return None
        listed = pd.DataFrame(unexpected, dtype=object)
        return listed[[column for column in columns if column in listed.columns and column != key_columns[0]]
                      + [key_columns[0]]]
    facts: pd.DataFrame | None = getattr(results, "facts", {}).get(suite)
    key_column: str | None = getattr(results, "key_columns", {}).get(suite)
    if facts is None or key_column is None:  # e.g. dict(engine.results): the facts were left behind
        raise ValueError(f"suite {suite}: its failing records are listed by key; pass RuleEngine.results itself")
    rows = facts.index.get_indexer(pd.Index(unexpected))
    if (rows < 0).any():
        raise KeyError(f"suite {suite}: failing keys missing from the facts")
    frame = facts[[column for column in columns if column != key_column]].take(rows).reset_index(drop=True)
    frame[key_column] = pd.Series(unexpected, dtype=object)
    return frame


def _resolve(value: Any, parameters: dict[str, Any]) -> Any:
    if isinstance(value, str) and value.startswith("$"):
        return parameters[value[1:]]
    return value
