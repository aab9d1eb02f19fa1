"""Evaluating the declared rules with Great Expectations: one suite per entity, one run each.

The per-record outcomes come from this one evaluation: for every rule, the legacy keys of
the records that break it are read from Great Expectations' `unexpected_index_list`.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from validation.rules import KEY_COLUMNS, SUITES, Rule

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SuiteEvaluation:
    """What one suite found: the failing keys of each rule, and the raw result for Data Docs."""

    suite: str
    failures: dict[str, frozenset[Any]]  # reason_code -> keys of the records that break it
    evaluated_records: int
    raw_result: Any = field(repr=False, compare=False)


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
        self._datasource = self.context.data_sources.add_pandas("legacy_extract")
        self.results: dict[str, Any] = {}

    def evaluate(
        self, suite_entity: str, facts: pd.DataFrame, rules: tuple[Rule, ...], parameters: dict[str, Any]
    ) -> SuiteEvaluation:
        gx = self._gx
        import great_expectations.expectations as gxe

        import validation.expectations as custom

        suite_name = SUITES[suite_entity]
        key_column = KEY_COLUMNS[suite_entity]
        suite = self.context.suites.add(gx.ExpectationSuite(name=suite_name))
        for rule in rules:
            for check in rule.checks:
                cls = getattr(gxe, check.expectation, None) or getattr(custom, check.expectation)
                kwargs = {k: _resolve(v, parameters) for k, v in check.kwargs.items()}
                suite.add_expectation(
                    cls(**kwargs, meta={"reason_code": rule.reason_code, "outcome": rule.outcome,
                                        "entity": rule.entity, "order": rule.order, "blocking": rule.blocking})
                )
        asset = self._datasource.add_dataframe_asset(suite_name)
        batch_definition = asset.add_batch_definition_whole_dataframe(suite_name)
        definition = self.context.validation_definitions.add(
            gx.ValidationDefinition(name=suite_name, data=batch_definition, suite=suite)
        )
        result = definition.run(
            batch_parameters={"dataframe": facts},
            result_format={
                "result_format": "COMPLETE",
                "unexpected_index_column_names": [key_column],
                "return_unexpected_index_query": False,
                "partial_unexpected_count": 20,
            },
        )
        self.results[suite_name] = result
        failures: dict[str, set[Any]] = {rule.reason_code: set() for rule in rules}
        for expectation_result in result.results:
            configuration = expectation_result.expectation_config
            meta = configuration.meta
            if expectation_result.exception_info.get("raised_exception"):
                raise RuntimeError(
                    f"suite {suite_name}: {configuration.type} failed to evaluate: "
                    f"{expectation_result.exception_info.get('exception_message')}"
                )
            unexpected = expectation_result.result.get("unexpected_index_list") or []
            failures[meta["reason_code"]].update(item[key_column] for item in unexpected)
        log.info("suite %s: %d records, %s", suite_name, len(facts),
                 {k: len(v) for k, v in failures.items() if v})
        return SuiteEvaluation(
            suite=suite_name,
            failures={k: frozenset(v) for k, v in failures.items()},
            evaluated_records=len(facts),
            raw_result=result,
        )


def _resolve(value: Any, parameters: dict[str, Any]) -> Any:
    if isinstance(value, str) and value.startswith("$"):
        return parameters[value[1:]]
    return value
