"""The validate stage: evaluate every rule with Great Expectations and decide each record's outcome."""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from mappings.mapping import Mapping
from pipelines.errors import ConfigurationError
from pipelines.frames import LegacyFrames
from validation import facts as fact_builders
from validation.evaluate import RuleEngine, SuiteEvaluation
from validation.outcomes import MIGRATED, breaks, first_failure, first_failure_codes
from validation.rules import rules_for


@dataclass(frozen=True)
class ValidateConfig:
    as_of: datetime
    mapping: Mapping
    native_logins: tuple[str, ...] = ()
    survivors: tuple[int, ...] = ()  # stewards' DUPLICATE_LOGIN resolutions


@dataclass(frozen=True)
class Decisions:
    """One frame per entity, indexed by legacy key, with `outcome`, `reason_code` and more."""

    users: pd.DataFrame  # + merged_into (Int64), phone_dropped (bool)
    establishments: pd.DataFrame  # index: normalised SIRET; + survivor_row, siren_corrected, duplicate_rows
    applications: pd.DataFrame  # index: legacy code; + efp_code
    habilitations: pd.DataFrame  # index: id_habilitation; + merged_into (Int64), DECIDED_HABILITATION_COLUMNS


@dataclass(frozen=True)
class ValidateResult:
    decisions: Decisions
    counts: dict[str, dict[str, int]]
    suites: tuple[str, ...]
    elapsed_seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {"counts": self.counts, "suites": list(self.suites),
                "elapsed_seconds": round(self.elapsed_seconds, 3)}


def validate(frames: LegacyFrames, config: ValidateConfig, engine: RuleEngine | None = None) -> ValidateResult:
    started = time.perf_counter()
    engine = engine or RuleEngine()
    suites: list[str] = []
    # Each suite's failing keys go as soon as its decisions are made: a set per rule, they weighed
    # 56 MB at a million users, and were held through the transform, which never reads them (the
    # reports read Great Expectations' own results, kept by the engine).
    app_facts = fact_builders.application_facts(frames.applications)
    evaluation = engine.evaluate(
        "application", app_facts, rules_for("application"),
        {"mapped_applications": sorted(config.mapping.application_codes)},
    )
    applications = _application_decisions(app_facts, evaluation, config.mapping)
    suites.append(evaluation.suite)

    est_facts = fact_builders.establishment_facts(frames.etablissements)
    evaluation = engine.evaluate("establishment", est_facts, rules_for("establishment"), {})
    establishments = _establishment_decisions(est_facts, evaluation)
    suites.append(evaluation.suite)

    usr_facts = fact_builders.user_facts(frames.utilisateurs)
    evaluation = engine.evaluate(
        "user", usr_facts, rules_for("user"), {"native_logins": sorted(config.native_logins)}
    )
    users = _user_decisions(usr_facts, evaluation, config.survivors)
    suites.append(evaluation.suite)
    user_types = usr_facts.set_index("id_utilisateur")["type_compte"]
    # The users' facts (their texts normalised: 0.1 GB at a million users) are done with; the
    # habilitations' part, the stage's peak, runs without them. Great Expectations' validator
    # holds them in reference cycles, which the paused collector (pipelines/memory.py) would
    # leave to the end of the stage: one collection (a third of a second at a million users).
    del usr_facts, evaluation
    gc.collect()

    hab_facts = fact_builders.habilitation_facts(
        frames.habilitations,
        users,
        user_types,
        applications,
        establishments,
        config.mapping,
    )
    del user_types
    evaluation = engine.evaluate(
        "habilitation", hab_facts, rules_for("habilitation")[:-1], {"as_of": config.as_of}
    )
    suites.append(evaluation.suite)
    # The suite's validator, in reference cycles as the users' above, goes before the outcomes
    # and the duplicate facts are made: it held 0.12 GB at a million users, under both.
    gc.collect()
    # Codes of every outcome and reason a habilitation can be given, the duplicates' below
    # included (written in place): as text, with the object columns they came from, they weighed
    # 0.1 GB at a million users, held through the duplicate suite.
    outcome, reason = first_failure_codes(
        hab_facts["id_habilitation"], rules_for("habilitation"), evaluation.failures,
        HABILITATION_OUTCOMES, HABILITATION_REASON_CODES,
    )
    del evaluation
    hab_facts["outcome"] = fact_builders._coded(outcome, HABILITATION_OUTCOMES)
    hab_facts["reason_code"] = fact_builders._coded(reason, HABILITATION_REASON_CODES)
    del outcome, reason
    # Categories too (sorted, as the decisions keep it): as text, the duplicate suite's copy of it
    # weighed 30 MB at a million users.
    kind_codes, kinds = pd.factorize(hab_facts["kind"], sort=True, use_na_sentinel=True)
    hab_facts["kind"] = fact_builders._coded(kind_codes, kinds)
    del kind_codes

    # Duplicates of access are judged among the habilitations that are still to be migrated.
    duplicate_facts = hab_facts.loc[hab_facts["outcome"].eq(MIGRATED),
                                    ["id_habilitation", "holder_id", "application_code", "siret_key", "role_code",
                                     "kind"]].reset_index(drop=True)
    evaluation = engine.evaluate(
        "habilitation_duplicate", duplicate_facts, rules_for("habilitation")[-1:], {}
    )
    suites.append(evaluation.suite)
    gc.collect()  # this suite's validator, in cycles too
    # Made once the duplicate suite has run (not under its high-water mark): 26 MB at a million users.
    hab_facts["merged_into"] = _no_integers(len(hab_facts))
    _apply_duplicate_access(hab_facts, duplicate_facts, evaluation)
    del duplicate_facts, evaluation
    habilitations = _few_valued_as_categories(_decided_habilitations(hab_facts))
    del hab_facts

    decisions = Decisions(users=users, establishments=establishments, applications=applications,
                          habilitations=habilitations)
    return ValidateResult(
        decisions=decisions,
        counts=_counts(decisions),
        suites=tuple(suites),
        elapsed_seconds=time.perf_counter() - started,
    )


# What the transform and the exception register read of the decided habilitations, besides
# outcome, reason_code and merged_into. The facts only the rules read (the holder's,
# application's and establishment's states, the duplicate key) and the copies of legacy columns
# the transform reads from the extract (the id, which is the index, and date_fin) are not kept:
# 0.1 GB at a million users, held through the transform.
DECIDED_HABILITATION_COLUMNS = ("statut", "holder_id", "application_code", "siret", "role_label", "role_code",
                                "kind")


def _decided_habilitations(hab_facts: pd.DataFrame) -> pd.DataFrame:
    return hab_facts.set_index("id_habilitation")[
        [*DECIDED_HABILITATION_COLUMNS, "outcome", "reason_code", "merged_into"]]


# Text columns of the decided habilitations with a handful of distinct values (states, codes,
# roles, outcomes): kept as categories, one byte a row. As text they weighed 340 MB at a million
# users, held from here to the end of the transform. The same values, compared and read the same.
FEW_VALUED_HABILITATION_COLUMNS = ("statut", "application_code", "role_label", "role_code", "kind", "outcome",
                                   "reason_code")


# Every outcome and reason code `validate` may give a habilitation, sorted (as `astype("category")`
# sorts the values it finds): the categories of the decided columns while they are written.
HABILITATION_OUTCOMES = tuple(sorted({MIGRATED, "merged", *(r.outcome for r in rules_for("habilitation"))}))
HABILITATION_REASON_CODES = tuple(sorted({"DUPLICATE_ACCESS", *(r.reason_code for r in rules_for("habilitation"))}))


def _few_valued_as_categories(habilitations: pd.DataFrame) -> pd.DataFrame:
    for column in FEW_VALUED_HABILITATION_COLUMNS:
        values = habilitations[column]
        if column in ("outcome", "reason_code") and isinstance(values.dtype, pd.CategoricalDtype):
            # Those the rows hold, as from their text: nothing downstream sees a category of no row.
            habilitations[column] = values.cat.remove_unused_categories()
        else:
            habilitations[column] = values.astype("category")
    return habilitations


def _no_integers(length: int) -> pd.api.extensions.ExtensionArray:
    """`length` missing values of pandas' nullable integer (Int64), built without a list of NA."""
    return pd.arrays.IntegerArray(np.zeros(length, dtype=np.int64), np.ones(length, dtype=bool))


def _application_decisions(app_facts: pd.DataFrame, evaluation: SuiteEvaluation, mapping: Mapping) -> pd.DataFrame:
    keys = app_facts["code_application"]
    outcome, reason = first_failure(keys, rules_for("application"), evaluation.failures)
    return pd.DataFrame(
        {
            "outcome": outcome.to_numpy(),
            "reason_code": reason.to_numpy(),
            "efp_code": keys.map(mapping.application_codes).where(outcome.eq(MIGRATED)).to_numpy(),
        },
        index=pd.Index(keys.to_numpy(), name="code_application"),
    )


def _establishment_decisions(est_facts: pd.DataFrame, evaluation: SuiteEvaluation) -> pd.DataFrame:
    rows = est_facts.assign(
        key=est_facts["siret_digits"].fillna(""),
        invalid=breaks(est_facts["row_number"], evaluation.failures, "INVALID_SIRET"),
        siren_differs=breaks(est_facts["row_number"], evaluation.failures, "SIREN_CORRECTED"),
        duplicated=breaks(est_facts["row_number"], evaluation.failures, "DUPLICATE_SIRET"),
    )
    # The establishment written for a SIRET: an open row before a closed one, then extract order.
    survivors = rows.sort_values(["key", "is_closed", "row_number"], kind="stable").drop_duplicates("key")
    per_key = rows.groupby("key", sort=True).agg(
        invalid=("invalid", "any"), duplicated=("duplicated", "any"), row_count=("row_number", "size")
    )
    survivors = survivors.set_index("key").loc[per_key.index]
    outcome = pd.Series(MIGRATED, index=per_key.index, dtype=object)
    outcome[per_key["invalid"]] = "rejected"
    reason = pd.Series(None, index=per_key.index, dtype=object)
    reason[per_key["invalid"]] = "INVALID_SIRET"
    migrated = outcome.eq(MIGRATED)
    return pd.DataFrame(
        {
            "outcome": outcome,
            "reason_code": reason,
            "survivor_row": survivors["row_number"].astype("int64"),
            "siren_corrected": survivors["siren_differs"].astype(bool) & migrated,
            "duplicate_rows": per_key["row_count"].where(per_key["duplicated"] & migrated, 0).astype("int64"),
        }
    ).rename_axis("siret")


def _user_decisions(
    usr_facts: pd.DataFrame, evaluation: SuiteEvaluation, survivors: tuple[int, ...]
) -> pd.DataFrame:
    keys = usr_facts["id_utilisateur"]
    outcome, reason = first_failure(keys, rules_for("user"), evaluation.failures)
    decisions = pd.DataFrame(
        {
            # Copies: steward resolutions below rewrite these columns in place.
            "outcome": outcome.to_numpy(copy=True),
            "reason_code": reason.to_numpy(copy=True),
            "merged_into": _no_integers(len(keys)),
        },
        index=pd.Index(keys.to_numpy(), name="id_utilisateur"),
    )
    # Read by the resolutions only, so not a column of the decisions: the facts' text itself (34 MB
    # at a million users), which would be held to the end of the transform.
    logins = pd.Series(usr_facts["login"].array, index=decisions.index, copy=False)
    login_taken = set(evaluation.failures.get("LOGIN_TAKEN", ()))
    seen_groups: dict[str, int] = {}
    for survivor in survivors:  # a steward's file: a handful of lines, not millions
        if survivor not in decisions.index:
            raise ConfigurationError(f"--resolutions: id_utilisateur {survivor} does not exist in the extract")
        if decisions.at[survivor, "reason_code"] != "DUPLICATE_LOGIN":
            state = str(decisions.at[survivor, "reason_code"] or "migrated")
            raise ConfigurationError(
                f"--resolutions: id_utilisateur {survivor} is not in a DUPLICATE_LOGIN group ({state}): "
                "a survivor must be one of the users of a duplicate-login group"
            )
        login = str(logins.at[survivor])
        if login in seen_groups:
            raise ConfigurationError(
                f"--resolutions: ids {seen_groups[login]} and {survivor} both claim the same duplicate-login group"
            )
        seen_groups[login] = survivor
        group = logins.eq(login) & decisions["reason_code"].eq("DUPLICATE_LOGIN")
        others = group & (decisions.index != survivor)
        decisions.loc[others, "outcome"] = "merged"
        decisions.loc[others, "merged_into"] = survivor
        # The survivor passed DUPLICATE_LOGIN; the next check in order still applies to it.
        if survivor in login_taken:
            decisions.loc[survivor, ["outcome", "reason_code"]] = ["rejected", "LOGIN_TAKEN"]
        else:
            decisions.loc[survivor, ["outcome", "reason_code"]] = [MIGRATED, None]
    decisions["phone_dropped"] = (
        decisions["outcome"].eq(MIGRATED).to_numpy()
        & breaks(keys, evaluation.failures, "PHONE_DROPPED").to_numpy()
    )
    return decisions


def _apply_duplicate_access(
    hab_facts: pd.DataFrame, duplicate_facts: pd.DataFrame, evaluation: SuiteEvaluation
) -> None:
    """Within each duplicate group the lowest id_habilitation survives; the others merge into it."""
    failing = duplicate_facts[breaks(duplicate_facts["id_habilitation"], evaluation.failures, "DUPLICATE_ACCESS")]
    if failing.empty:
        return
    group_columns = ["holder_id", "application_code", "siret_key", "role_code", "kind"]
    survivor = failing.groupby(group_columns, dropna=False)["id_habilitation"].transform("min")
    merged = failing[failing["id_habilitation"] != survivor]
    into = dict(zip(merged["id_habilitation"], survivor[merged.index], strict=True))
    is_merged = hab_facts["id_habilitation"].isin(list(into))
    hab_facts.loc[is_merged, "outcome"] = "merged"
    hab_facts.loc[is_merged, "reason_code"] = "DUPLICATE_ACCESS"
    hab_facts.loc[is_merged, "merged_into"] = hab_facts.loc[is_merged, "id_habilitation"].map(into).astype("Int64")


def _counts(decisions: Decisions) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for entity, frame in (("user", decisions.users), ("establishment", decisions.establishments),
                          ("application", decisions.applications), ("habilitation", decisions.habilitations)):
        entity_counts = {"source": len(frame)}
        for outcome in (MIGRATED, "excluded", "rejected", "merged"):
            entity_counts[outcome] = int(frame["outcome"].eq(outcome).sum())
        counts[entity] = entity_counts
    return counts
