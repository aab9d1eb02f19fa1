"""The validation gate: thresholds that stop a run before anything is loaded.

The thresholds are data, in a TOML file (`validation/gate_defaults.toml` by default; a file of
one's own overrides it key by key): the largest share of rejected records per entity, the
largest number of exceptions per entity and reason code, and whether a rule marked `blocking`
in validation/rules.py stops the run on its own. `evaluate_gate` compares them with what the
validation found and says, in plain words, which threshold failed, what was observed and by
how much; `GateResult.raise_if_failed()` turns a failure into `GateError` (exit status 3).
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from pipelines.errors import ConfigurationError, GateError
from validation.french import ENTITIES
from validation.rules import RULES, rules_for

if TYPE_CHECKING:
    import pandas as pd

DEFAULTS_NAME = "gate_defaults.toml"
_KEYS = ("stop_on_blocking_rules", "min_records_for_shares", "max_rejected_share", "max_reason_count")


@dataclass(frozen=True)
class GateConfig:
    source: str  # where the thresholds come from, for messages
    max_rejected_share: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    max_reason_count: Mapping[tuple[str, str], int] = field(default_factory=lambda: MappingProxyType({}))
    stop_on_blocking_rules: bool = False
    min_records_for_shares: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "stop_on_blocking_rules": self.stop_on_blocking_rules,
            "min_records_for_shares": self.min_records_for_shares,
            "max_rejected_share": dict(self.max_rejected_share),
            "max_reason_count": {f"{entity}.{reason}": limit
                                 for (entity, reason), limit in self.max_reason_count.items()},
        }


@dataclass(frozen=True)
class GateBreach:
    threshold: str  # the key in the gate file, e.g. "max_rejected_share.user"
    limit: float
    observed: float
    excess: float  # observed - limit, in the threshold's unit
    description: str

    def to_dict(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "limit": self.limit, "observed": self.observed,
                "excess": self.excess, "description": self.description}


@dataclass(frozen=True)
class GateResult:
    passed: bool
    breaches: tuple[GateBreach, ...]
    source: str

    def message(self) -> str:
        if self.passed:
            return f"validation gate passed (thresholds: {self.source})"
        lines = [f"validation gate stopped the run before loading (thresholds: {self.source}):"]
        lines += [f"  - {breach.description}" for breach in self.breaches]
        return "\n".join(lines)

    def raise_if_failed(self) -> None:
        if not self.passed:
            raise GateError(self.message())

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "source": self.source,
                "breaches": [breach.to_dict() for breach in self.breaches]}


# --- configuration ------------------------------------------------------------------------------


def load_gate_config(path: Path | None = None) -> GateConfig:
    """The shipped defaults, overridden key by key by the file at `path` when given."""
    defaults_text = resources.files("validation").joinpath(DEFAULTS_NAME).read_text(encoding="utf-8")
    config = _apply(_parse(defaults_text, f"validation/{DEFAULTS_NAME}"), f"validation/{DEFAULTS_NAME}",
                    GateConfig(source=f"defaults (validation/{DEFAULTS_NAME})"))
    if path is None:
        return config
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigurationError(f"gate file {path}: cannot be read ({error})") from error
    return _apply(_parse(text, str(path)), str(path), GateConfig(
        source=f"{path} over the defaults", max_rejected_share=config.max_rejected_share,
        max_reason_count=config.max_reason_count, stop_on_blocking_rules=config.stop_on_blocking_rules,
        min_records_for_shares=config.min_records_for_shares,
    ))


def _parse(text: str, where: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigurationError(f"gate file {where}: not valid TOML ({error})") from error


def _accepted(values: Any) -> str:
    return ", ".join(values)


def _apply(data: dict[str, Any], where: str, base: GateConfig) -> GateConfig:
    for key in data:
        if key not in _KEYS:
            raise ConfigurationError(f"gate file {where}: unknown key '{key}' (accepted: {_accepted(_KEYS)})")

    stop = base.stop_on_blocking_rules
    if "stop_on_blocking_rules" in data:
        stop = data["stop_on_blocking_rules"]
        if not isinstance(stop, bool):
            raise ConfigurationError(
                f"gate file {where}: stop_on_blocking_rules = {stop!r}: expected true or false")

    minimum = base.min_records_for_shares
    if "min_records_for_shares" in data:
        minimum = data["min_records_for_shares"]
        if isinstance(minimum, bool) or not isinstance(minimum, int) or minimum < 0:
            raise ConfigurationError(
                f"gate file {where}: min_records_for_shares = {minimum!r}: expected a whole number, 0 or more")

    shares = dict(base.max_rejected_share)
    for entity, limit in _table(data, "max_rejected_share", where).items():
        key = f"max_rejected_share.{entity}"
        if entity not in ENTITIES:
            raise ConfigurationError(f"gate file {where}: unknown key '{key}' (accepted entities: "
                                     f"{_accepted(ENTITIES)})")
        if isinstance(limit, bool) or not isinstance(limit, int | float) or not 0 <= limit <= 1 \
                or math.isnan(limit):
            raise ConfigurationError(
                f"gate file {where}: {key} = {limit!r}: expected a share between 0 and 1 (0.5 = 50 %)")
        shares[entity] = float(limit)

    counts = dict(base.max_reason_count)
    for entity, reasons in _table(data, "max_reason_count", where).items():
        if entity not in ENTITIES:
            raise ConfigurationError(f"gate file {where}: unknown key 'max_reason_count.{entity}' "
                                     f"(accepted entities: {_accepted(ENTITIES)})")
        if not isinstance(reasons, dict):
            raise ConfigurationError(f"gate file {where}: max_reason_count.{entity} must be a table "
                                     f"of reason codes, e.g. [max_reason_count.{entity}]")
        known = [rule.reason_code for rule in rules_for(entity)]
        for reason, limit in reasons.items():
            key = f"max_reason_count.{entity}.{reason}"
            if reason not in known:
                raise ConfigurationError(f"gate file {where}: unknown key '{key}' (reason codes of "
                                         f"{entity}: {_accepted(known)})")
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
                raise ConfigurationError(f"gate file {where}: {key} = {limit!r}: expected a whole "
                                         "number of records, 0 or more")
            counts[(entity, reason)] = limit

    return GateConfig(source=base.source, max_rejected_share=MappingProxyType(shares),
                      max_reason_count=MappingProxyType(counts), stop_on_blocking_rules=stop,
                      min_records_for_shares=minimum)


def _table(data: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    table = data.get(key, {})
    if not isinstance(table, dict):
        raise ConfigurationError(f"gate file {where}: {key} must be a table, e.g. [{key}]")
    return table


# --- evaluation ---------------------------------------------------------------------------------


def evaluate_gate(counts: Mapping[str, Mapping[str, int]], register: pd.DataFrame, config: GateConfig) -> GateResult:
    """Compare the validation's counts and exception register with the thresholds of `config`."""
    breaches: list[GateBreach] = []
    for entity, limit in config.max_rejected_share.items():
        source = int(counts.get(entity, {}).get("source", 0))
        rejected = int(counts.get(entity, {}).get("rejected", 0))
        share = rejected / source if source else 0.0
        # On a handful of records a share says nothing about the extract as a whole.
        if share > limit and source >= config.min_records_for_shares:
            allowed = math.floor(limit * source)
            breaches.append(GateBreach(
                threshold=f"max_rejected_share.{entity}", limit=limit, observed=share, excess=share - limit,
                description=(
                    f"max_rejected_share.{entity}: {rejected} of {source} {entity} records rejected "
                    f"({_percent(share)}), above the limit of {_percent(limit)} by "
                    f"{(share - limit) * 100:.1f} percentage points ({rejected - allowed} records too many)"
                ),
            ))

    per_reason = register_counts(register)
    for (entity, reason), limit in config.max_reason_count.items():
        observed = per_reason.get((entity, reason), 0)
        if observed > limit:
            breaches.append(GateBreach(
                threshold=f"max_reason_count.{entity}.{reason}", limit=limit, observed=observed,
                excess=observed - limit,
                description=(f"max_reason_count.{entity}.{reason}: {observed} {entity} records with reason "
                             f"{reason}, above the limit of {limit} by {observed - limit}"),
            ))

    if config.stop_on_blocking_rules:
        for rule in RULES:
            observed = per_reason.get((rule.entity, rule.reason_code), 0)
            if rule.blocking and observed:
                breaches.append(GateBreach(
                    threshold="stop_on_blocking_rules", limit=0, observed=observed, excess=observed,
                    description=(f"stop_on_blocking_rules: {observed} {rule.entity} records with reason "
                                 f"{rule.reason_code}, a blocking rule, where none is allowed"),
                ))
    return GateResult(passed=not breaches, breaches=tuple(breaches), source=config.source)


def register_counts(register: pd.DataFrame) -> dict[tuple[str, str], int]:
    """(entity, reason code) -> rows of the exception register."""
    if register.empty:
        return {}
    grouped = register.groupby(["entity", "reason_code"], dropna=True).size()
    entities, reasons = grouped.index.get_level_values(0), grouped.index.get_level_values(1)
    return {(str(entity), str(reason)): int(count)
            for entity, reason, count in zip(entities, reasons, grouped.to_numpy(), strict=True)}


def _percent(share: float) -> str:
    return f"{share * 100:.1f} %"
