"""The independent reconciliation: legacy access against EFP Connect access, application by application.

It reads both sides afresh, the legacy source through the extract and the target with SQL, and
never the pipeline's intermediate data or counters; it shares with the pipeline only the
mapping (application codes, role vocabulary), which is configuration, not a result.

Definitions (efp-connect-target.md, "Reconciliation"):
- legacy *effective access* at the as-of instant: a habilitation `ACTIVE` with
  `date_debut` <= as-of < `date_fin` (or no `date_fin`), whose holder exists and is not
  `SUPPRIME`, to an application that exists and is active. Its tuple is (holder, application,
  normalised SIRET or NULL, canonical role, or the legacy label where it maps to no role);
  the holder of a user merged into a survivor (register row `merged`) is the survivor; the
  application is its EFP Connect code where the mapping has one, else the legacy code;
- target access: an entitlement with `valid_from` <= as-of < `valid_until` (or none) of an
  account carrying a `legacy_user_id`, as (legacy_user_id, application, SIRET, role);
- a legacy tuple missing from the target is *explained* when the exception register of the
  run holds an `excluded` or `rejected` row for one of the habilitations giving it, or an
  `excluded`, `rejected` or `merged` row for its holder; a target tuple without legacy
  counterpart is always unexplained (a privilege gain).

Everything is computed on whole columns: tuples become integer ids (one factorisation per
component), sets are compared with `np.isin`, and text is produced once per distinct value.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import (
    Engine,
)

import pipelines
from mappings.mapping import Mapping, load_mapping
from mappings.normalize import siret_digits
from pipelines.arrow_text import factorized
from pipelines.db import make_engine, mask_text, mask_url
from pipelines.errors import ConfigurationError
from pipelines.frames import LEGACY_FRAME_COLUMNS, TEXT_DTYPE, LegacyFrames
from pipelines.legacy_schema import BOOLEAN_COLUMNS, DATE_COLUMNS, INTEGER_COLUMNS, TIMESTAMP_COLUMNS
from pipelines.memory import gc_paused, release_freed_memory
from pipelines.target_schema import ORIGIN_MIGRATION, TARGET_TABLES
from pipelines.timeutil import PARIS, paris_now
from reports.evidence import (
    ARROW_REFUSALS,
    REDACTED,
    REDACTED_COLUMNS,
    KeyOrderedDigest,
    NotInKeyOrderError,
    canonical_digest,
    text_bytes,
)
from reports.target_reader import NotStreamableError, column_kind, read_target, require_target_schema

log = logging.getLogger(__name__)

RECONCILED = "RECONCILED"
RECONCILED_WITH_EXCEPTIONS = "RECONCILED_WITH_EXCEPTIONS"
NOT_RECONCILED = "NOT_RECONCILED"
PASSING_VERDICTS = (RECONCILED, RECONCILED_WITH_EXCEPTIONS)

ENTITIES = ("user", "establishment", "application", "habilitation")
COUNTED_OUTCOMES = ("excluded", "rejected", "merged")
# The contract's status mapping, restated here rather than imported from the transform: the
# reconciliation must not share the code it checks.
ACCOUNT_STATUS = {"ACTIF": "ACTIVE", "EN_ATTENTE": "PENDING", "VERROUILLE": "LOCKED"}
NULL_TEXT = "\\N"  # NULL in canonical text (as PostgreSQL's COPY writes it); a real backslash is doubled
# Beyond this many lines a list in reconciliation.json stops (saying so); DIFFERENCES_FILE has them all.
JSON_LIST_LIMIT = 10_000
DIFFERENCES_FILE = "reconciliation_differences.csv"
# Every row of the exception register the reconciliation read (reconciliation.json keeps the first ones).
REGISTER_FILE = "reconciliation_register.csv"

# How the rows of each table are ordered before hashing: by a unique key when it has one.
LEGACY_ORDER_KEYS: dict[str, str] = {"utilisateurs": "id_utilisateur", "habilitations": "id_habilitation",
                                     "applications": "code_application"}

_TUPLE_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


# --- configuration and inputs ------------------------------------------------------------------


@dataclass(frozen=True)
class ReconcileConfig:
    source: str
    target_url: str
    as_of: datetime  # naive, Europe/Paris wall time: the clock of the legacy timestamps
    out_dir: Path
    run_id: str | None = None  # whose exception register explains differences (default: latest run)
    mappings_dir: str | None = None
    show_personal_data: bool = False
    started_at: datetime | None = None
    ended_at: datetime | None = None


@dataclass(frozen=True)
class LegacyInputs:
    """What the extract says about its input: shown in the header and written to the manifest."""

    source_display: str
    file_checksums: dict[str, str] = field(default_factory=dict)
    input_fingerprint: str | None = None


@dataclass(frozen=True)
class LegacySource:
    frames: LegacyFrames
    inputs: LegacyInputs


def extract_legacy(source: str) -> LegacySource:
    """Reads the legacy source through the extract stage (CSV folder or SQL URL)."""
    from pipelines.extract import ExtractConfig, extract

    extracted = extract(ExtractConfig(source=source))
    return LegacySource(
        frames=extracted.frames,
        inputs=LegacyInputs(
            source_display=str(extracted.source_display),
            file_checksums=dict(extracted.file_checksums),
            input_fingerprint=str(extracted.input_fingerprint),
        ),
    )


# --- the report ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunInfo:
    """The migration run whose exception register is used."""

    run_id: str
    status: str | None
    as_of: datetime | None
    started_at: datetime | None
    ended_at: datetime | None


@dataclass(frozen=True)
class ReportHeader:
    run_id: str | None
    as_of: datetime
    started_at: datetime
    ended_at: datetime
    tool_version: str
    configuration: dict[str, Any]
    mapping_checksums: dict[str, str]
    input_checksums: dict[str, str]
    input_fingerprint: str | None
    register_run: RunInfo | None


@dataclass(frozen=True)
class TableEvidence:
    side: str  # "legacy" or "target"
    table: str
    row_count: int
    sha256: str
    columns: tuple[str, ...]
    order: str  # how rows were ordered before hashing
    redacted_columns: tuple[str, ...] = ()


@dataclass(frozen=True)
class OutcomeCounts:
    entity: str
    source: int
    migrated: int
    excluded: int
    rejected: int
    merged: int

    @property
    def accounted(self) -> int:
        return self.migrated + self.excluded + self.rejected + self.merged

    @property
    def balanced(self) -> bool:
        return self.source == self.accounted


@dataclass(frozen=True)
class RollForwardLine:
    outcome: str
    reason_code: str | None
    count: int


@dataclass(frozen=True)
class EntityRollForward:
    """source, less each outcome by reason: what remains must be zero."""

    entity: str
    source: int
    lines: tuple[RollForwardLine, ...]
    corrected: dict[str, int]  # memo: corrections sit beside migrated records, outside the sum
    remainder: int


@dataclass(frozen=True)
class ApplicationReconciliation:
    application_code: str
    legacy_codes: tuple[str, ...]
    legacy_access: int
    target_access: int
    matched: int
    missing_explained: int
    missing_explained_by_reason: dict[str, int]
    missing_unexplained: int
    extra_in_target: int
    legacy_control_hash: str
    target_control_hash: str

    @property
    def explained(self) -> int:
        return self.missing_explained

    @property
    def unexplained(self) -> int:
        return self.missing_unexplained + self.extra_in_target


@dataclass(frozen=True)
class AccessDifference:
    """One unexplained access tuple: missing from the target, or present there only."""

    kind: str  # "missing" or "extra"
    legacy_user_id: int
    application_code: str
    siret: str | None
    role: str | None
    legacy_habilitation_ids: tuple[int, ...]  # habilitations giving it (missing) / behind it (extra)
    entitlement_ids: tuple[int, ...]  # the target rows giving it (extra only)
    holder: str | None = None  # name and email, only with show_personal_data


@dataclass(frozen=True)
class AccountCheckFailure:
    legacy_user_id: int
    expected: str | None
    found: str | None


@dataclass(frozen=True)
class AccountCheck:
    name: str
    description_fr: str
    description_en: str
    checked: int
    passed: int
    failures: tuple[AccountCheckFailure, ...]

    @property
    def failed(self) -> int:
        return len(self.failures)

    @property
    def failing_legacy_user_ids(self) -> tuple[int, ...]:
        return tuple(f.legacy_user_id for f in self.failures)


@dataclass(frozen=True)
class RegisterRow:
    entity: str
    legacy_key: str
    outcome: str
    reason_code: str
    detail: str
    merged_into: str | None


@dataclass(frozen=True)
class ReconciliationReport:
    header: ReportHeader
    evidence: tuple[TableEvidence, ...]
    outcomes: tuple[OutcomeCounts, ...]
    roll_forward: tuple[EntityRollForward, ...]
    applications: tuple[ApplicationReconciliation, ...]
    missing_unexplained: tuple[AccessDifference, ...]
    extra_in_target: tuple[AccessDifference, ...]
    account_checks: tuple[AccountCheck, ...]
    exception_register: Sequence[RegisterRow]
    verdict: str
    verdict_reasons: tuple[str, ...]

    @property
    def run_id(self) -> str | None:
        return self.header.run_id

    @property
    def passed(self) -> bool:
        return self.verdict in PASSING_VERDICTS

    def totals(self) -> dict[str, int]:
        apps = self.applications
        return {
            "legacy_access": sum(a.legacy_access for a in apps),
            "target_access": sum(a.target_access for a in apps),
            "matched": sum(a.matched for a in apps),
            "missing_explained": sum(a.missing_explained for a in apps),
            "missing_unexplained": sum(a.missing_unexplained for a in apps),
            "extra_in_target": sum(a.extra_in_target for a in apps),
            "explained": sum(a.explained for a in apps),
            "unexplained": sum(a.unexplained for a in apps),
            "account_check_failures": sum(c.failed for c in self.account_checks),
            "register_rows": len(self.exception_register),
        }

    def explained_by_reason(self) -> dict[str, int]:
        merged: dict[str, int] = {}
        for app in self.applications:
            for reason, count in app.missing_explained_by_reason.items():
                merged[reason] = merged.get(reason, 0) + count
        return dict(sorted(merged.items()))

    def input_checksums(self) -> dict[str, str]:
        """Checksums of what went in (legacy files, mapping files), for the evidence manifest."""
        inputs = {f"legacy/{name}": digest for name, digest in self.header.input_checksums.items()}
        inputs.update({f"mappings/{name}": digest for name, digest in self.header.mapping_checksums.items()})
        if self.header.input_fingerprint:
            inputs["legacy_input_fingerprint"] = self.header.input_fingerprint
        return dict(sorted(inputs.items()))

    def to_dict(self) -> dict[str, Any]:
        """The contract's reconciliation.json at top level, the rest of the report beside it."""
        return {
            "run_id": self.header.run_id,
            "as_of": _iso(self.header.as_of),
            "verdict": self.verdict,
            "applications": [_application_dict(a) for a in self.applications],
            "outcomes": {o.entity: {"source": o.source, "migrated": o.migrated, "excluded": o.excluded,
                                    "rejected": o.rejected, "merged": o.merged} for o in self.outcomes},
            "verdict_reasons": list(self.verdict_reasons),
            "totals": self.totals(),
            "explained_by_reason": self.explained_by_reason(),
            "header": _jsonable(self.header),
            "evidence": {
                side: [_jsonable(e) for e in self.evidence if e.side == side] for side in ("legacy", "target")
            },
            "roll_forward": {r.entity: _jsonable(r) for r in self.roll_forward},
            "outcome_balance": {o.entity: {"accounted": o.accounted, "balanced": o.balanced}
                                for o in self.outcomes},
            "unexplained_differences": {
                "missing_from_target": [_jsonable(d) for d in self.missing_unexplained[:JSON_LIST_LIMIT]],
                "missing_from_target_total": len(self.missing_unexplained),
                "extra_in_target": [_jsonable(d) for d in self.extra_in_target[:JSON_LIST_LIMIT]],
                "extra_in_target_total": len(self.extra_in_target),
                "truncated": max(len(self.missing_unexplained), len(self.extra_in_target)) > JSON_LIST_LIMIT,
                "complete_list": DIFFERENCES_FILE,
            },
            "account_checks": [
                {
                    "name": c.name, "description_fr": c.description_fr, "description_en": c.description_en,
                    "checked": c.checked, "passed": c.passed, "failed": c.failed,
                    "failing_legacy_user_ids": list(c.failing_legacy_user_ids),
                    "failures": [_jsonable(f) for f in c.failures[:JSON_LIST_LIMIT]],
                    "failures_truncated": c.failed > JSON_LIST_LIMIT,
                }
                for c in self.account_checks
            ],
            "exception_register": {
                "run_id": self.header.register_run.run_id if self.header.register_run else None,
                "row_count": len(self.exception_register),
                "rows": [_jsonable(r) for r in self.exception_register[:JSON_LIST_LIMIT]],
                "truncated": len(self.exception_register) > JSON_LIST_LIMIT,
                "complete_list": REGISTER_FILE,
            },
        }


def _application_dict(app: ApplicationReconciliation) -> dict[str, Any]:
    return {**_jsonable(app), "explained": app.explained, "unexplained": app.unexplained}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "__dataclass_fields__"):
        return {name: _jsonable(getattr(value, name)) for name in value.__dataclass_fields__}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


# --- entry points --------------------------------------------------------------------------------


@dataclass(frozen=True)
class LegacySide:
    """What the reconciliation draws from the legacy source alone, read afresh through the extract."""

    frames: LegacyFrames  # cut to LEGACY_COLUMNS_USED
    inputs: LegacyInputs
    evidence: tuple[TableEvidence, ...]  # of each whole table, in LEGACY_FRAME_COLUMNS order


def read_legacy_side(source: str, show_personal_data: bool) -> LegacySide:
    """The legacy source extracted and its evidence hashed, each whole table let go once hashed.

    Depends on nothing the pipeline writes: `efp-migrate run` reads it while the load waits on
    the database, then hands it to `reconcile`."""
    clock = time.perf_counter()
    inputs, tables, frames = _extracted_legacy(source, show_personal_data)
    with gc_paused():
        evidence = _legacy_evidence_letting_go(tables)
    log.info("legacy source read and hashed in %.1f s", time.perf_counter() - clock)
    return LegacySide(frames=frames, inputs=inputs, evidence=evidence)


def _extracted_legacy(source: str, show_personal_data: bool
                      ) -> tuple[LegacyInputs, dict[str, pd.DataFrame], LegacyFrames]:
    """The legacy source through the extract: its inputs, its whole tables (for the evidence) and
    its frames cut to LEGACY_COLUMNS_USED (no data copied)."""
    legacy = extract_legacy(source)
    tables = {name: legacy.frames.table(name) for name in LEGACY_FRAME_COLUMNS}
    return legacy.inputs, tables, legacy_columns_used(legacy.frames, show_personal_data)


def reconcile(config: ReconcileConfig, legacy: Future[LegacySide] | None = None) -> ReconciliationReport:
    """Extracts the legacy source, then reconciles it with the target.

    `legacy`: the legacy side being read elsewhere (read_legacy_side of this very source, with this
    show_personal_data), waited for here while the target is read; else read here."""
    started_at = config.started_at or paris_now()
    mapping = load_mapping(config.mappings_dir)  # a bad mapping stops before any data is read
    engine = make_engine(config.target_url, what="--target")
    try:
        require_target_schema(engine)  # a wrong --target stops before the extract, which takes a while
        if legacy is not None:
            return _reconcile_with(legacy, engine, replace(config, started_at=started_at), mapping)
        # The target is read while the legacy source is extracted: the ADBC drivers read with
        # the GIL released, so on two cores the two readings overlap (the extract's own
        # error, if any, is the one raised; the read is waited for either way).
        # Then the same thread works out what depends on the target alone (its register, its
        # access tuples).
        config = _naive_as_of(replace(config, started_at=started_at))
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="efp-target-read") as pool:
            reading = pool.submit(read_target_side, engine, config)
            inputs, tables, frames = _extracted_legacy(config.source, config.show_personal_data)
            # The legacy evidence is hashed in the same thread once the target side is done
            # (queued behind it), while this one compares; the whole tables are that thread's
            # alone, each let go once hashed, so the columns only the evidence reads go early.
            hashing = pool.submit(_legacy_evidence_letting_go, tables)
            del tables
            side = reading.result()
            return reconcile_frames(frames, engine, config, inputs=inputs, mapping=mapping, target=side,
                                    legacy_hashing=hashing)
    finally:
        engine.dispose()


def _reconcile_with(legacy: Future[LegacySide], engine: Engine, config: ReconcileConfig,
                    mapping: Mapping) -> ReconciliationReport:
    config = _naive_as_of(config)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="efp-target-read") as pool:
        reading = pool.submit(read_target_side, engine, config)
        side = legacy.result()
        hashed: Future[tuple[TableEvidence, ...]] = Future()
        hashed.set_result(side.evidence)
        return reconcile_frames(side.frames, engine, config, inputs=side.inputs, mapping=mapping,
                                target=reading.result(), legacy_hashing=hashed)


def reconcile_frames(
    frames: LegacyFrames,
    engine: Engine,
    config: ReconcileConfig,
    *,
    inputs: LegacyInputs | None = None,
    mapping: Mapping | None = None,
    target: TargetSide | None = None,
    legacy_hashing: Future[tuple[TableEvidence, ...]] | None = None,
) -> ReconciliationReport:
    """Reconciles legacy frames (as the extract gives them) with the target as it now stands
    (`target`: as _read_target_side gave it for this very configuration, else read here).
    `legacy_hashing`: the evidence of the whole legacy tables, being hashed elsewhere; then
    `frames` need only hold LEGACY_COLUMNS_USED."""
    started_at = config.started_at or paris_now()
    mapping = mapping if mapping is not None else load_mapping(config.mappings_dir)
    inputs = inputs if inputs is not None else LegacyInputs(source_display=_display(config.source))
    config = _naive_as_of(config)
    with gc_paused():
        return _reconcile(frames, engine, config, inputs, mapping, started_at, target, legacy_hashing)


def _naive_as_of(config: ReconcileConfig) -> ReconcileConfig:
    if config.as_of.tzinfo is None:
        return config
    # The legacy clock is naive Europe/Paris wall time.
    return replace(config, as_of=config.as_of.astimezone(PARIS).replace(tzinfo=None))


def _reconcile(frames: LegacyFrames, engine: Engine, config: ReconcileConfig, inputs: LegacyInputs,
               mapping: Mapping, started_at: datetime, target: TargetSide | None,
               legacy_hashing: Future[tuple[TableEvidence, ...]] | None) -> ReconciliationReport:
    side = target if target is not None else read_target_side(engine, config)
    # The legacy evidence is hashed in a second thread while this one compares (the target's was
    # hashed as it was read), unless the caller has it hashed already. The frames are only read,
    # that thread through its own shallow copies (no data copied): pandas may reorganise a frame's
    # blocks in place, which must not happen under another thread's feet.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="efp-evidence") as pool:
        if legacy_hashing is None:
            legacy_hashing = pool.submit(_legacy_evidence_letting_go, {
                name: frames.table(name).copy(deep=False) for name in LEGACY_FRAME_COLUMNS})
        report = _compare_and_report(frames, config, inputs, mapping, started_at, side)
        evidence = legacy_hashing.result() + side.evidence
    ended_at = config.ended_at or paris_now()  # once the evidence, the last part, is done
    return replace(report, evidence=evidence, header=replace(report.header, ended_at=ended_at))


@dataclass(frozen=True)
class TargetSide:
    """What the reconciliation draws from the target alone."""

    tables: dict[str, pd.DataFrame]  # cut to TARGET_COLUMNS_USED
    run: RunInfo | None  # whose register explains differences
    register: pd.DataFrame  # that run's exception rows, sorted, of _REGISTER_ROW_COLUMNS
    register_rows: Sequence[RegisterRow]
    access: pd.DataFrame  # target_access at the as-of instant
    evidence: tuple[TableEvidence, ...]  # of each whole table, in TARGET_TABLES order


# The columns the reconciliation uses of each target table once the table's evidence is hashed
# (a table not named is kept whole). At a million users the whole target weighed 0.8 GB, held
# beside the legacy extract.
TARGET_COLUMNS_USED: dict[str, tuple[str, ...]] = {
    "accounts": ("account_id", "legacy_user_id", "login", "status", "must_reset_password", "password_hash",
                 "origin"),
    "establishments": ("siret",),
    "entitlements": ("entitlement_id", "account_id", "application_code", "siret", "role", "valid_from",
                     "valid_until", "legacy_habilitation_id"),
    "access_requests": ("legacy_habilitation_id",),
}


def read_target_side(engine: Engine, config: ReconcileConfig) -> TargetSide:
    """The target read, each table hashed as it is read (batch by batch where its rows come in
    key order), then cut to the columns used."""
    hashed: dict[str, TableEvidence] = {}

    def hash_then_cut(name: str, frame: pd.DataFrame) -> pd.DataFrame:
        if name in _TARGET_TABLE_NAMES:
            hashed[name] = target_table_evidence(name, frame)
        used = TARGET_COLUMNS_USED.get(name)
        return frame if used is None else frame[list(used)]

    clock = time.perf_counter()
    with gc_paused():
        tables = read_target(engine, hash_then_cut, lambda name: _hashing_sink(name, hashed))
        side = target_side(tables, config, tuple(hashed[table.name] for table in TARGET_TABLES))
    # What the access tuples were worked out from goes back to the system before the comparison
    # starts, not within Arrow's pool's second: it would add to the comparison's own peak.
    release_freed_memory()
    log.info("target read, hashed and its access worked out in %.1f s", time.perf_counter() - clock)
    return side


def target_side(tables: dict[str, pd.DataFrame], config: ReconcileConfig,
                evidence: tuple[TableEvidence, ...]) -> TargetSide:
    """What the reconciliation draws from the target's tables (as read_target gives them). Takes
    the exceptions and the entitlements out of `tables`: of the exceptions only the run's register
    is kept (every run's rows, each with its text, were held through the access tuples' making),
    of the entitlements, once the access tuples are made, the identifiers the counts need."""
    all_exceptions = tables.pop("migration_exceptions")
    run = select_run(tables["migration_runs"], all_exceptions, config.run_id)
    register = (all_exceptions[all_exceptions["run_id"].eq(run.run_id).to_numpy(dtype=bool)]
                if run is not None else all_exceptions.iloc[0:0])
    del all_exceptions
    # Sorted, then only the columns read from here on (the run's id on every row, and the
    # exception ids that break ties in the order, were 24 MB at a million users).
    register = _sorted_register(register)[list(_REGISTER_ROW_COLUMNS)]
    entitlements = tables.pop("entitlements")
    access = target_access(entitlements, tables["accounts"], config.as_of)
    tables["entitlements"] = entitlements[["legacy_habilitation_id"]]
    del entitlements
    return TargetSide(tables=dict(tables), run=run, register=register, register_rows=RegisterRows(register),
                      access=access, evidence=evidence)


def _compare_and_report(frames: LegacyFrames, config: ReconcileConfig, inputs: LegacyInputs, mapping: Mapping,
                        started_at: datetime, side: TargetSide) -> ReconciliationReport:
    """The report without its evidence (filled in by the caller)."""
    as_of, target, run, register = config.as_of, side.tables, side.run, side.register
    legacy_rows = legacy_access(frames, mapping, _merged_users(register), as_of)
    comparison = _compare(legacy_rows, side.access, register)

    users = frames.utilisateurs
    holders = _holders(users) if config.show_personal_data else None
    missing = _differences("missing", comparison.missing_unexplained, holders)
    extra = _differences("extra", comparison.extra, holders)
    apps = _applications(frames, mapping, target["applications"], comparison)
    checks = account_checks(target["accounts"], users, show_personal_data=config.show_personal_data)
    outcomes = outcome_counts(frames, mapping, target, register)
    roll_forward = tuple(_roll_forward(o, register) for o in outcomes)

    verdict, reasons = decide_verdict(apps, checks, outcomes, register_rows=len(register))
    header = ReportHeader(
        run_id=run.run_id if run is not None else None,
        as_of=as_of,
        started_at=started_at,
        ended_at=config.ended_at or paris_now(),
        tool_version=pipelines.__version__,
        configuration={
            "source": inputs.source_display,
            "target": mask_url(config.target_url),
            "run": config.run_id,
            "mappings": config.mappings_dir if config.mappings_dir is not None else "(default)",
            "show_personal_data": config.show_personal_data,
            "out_dir": str(config.out_dir),
        },
        mapping_checksums=dict(sorted(mapping.file_checksums.items())),
        input_checksums=dict(sorted(inputs.file_checksums.items())),
        input_fingerprint=inputs.input_fingerprint,
        register_run=run,
    )
    log.info("reconciliation at %s: %s", as_of.isoformat(), verdict)
    return ReconciliationReport(
        header=header,
        evidence=(),
        outcomes=outcomes,
        roll_forward=roll_forward,
        applications=apps,
        missing_unexplained=missing,
        extra_in_target=extra,
        account_checks=checks,
        exception_register=side.register_rows,
        verdict=verdict,
        verdict_reasons=reasons,
    )


def _display(source: str) -> str:
    return mask_url(source) if "://" in source else mask_text(source)


def select_run(runs: pd.DataFrame, exceptions: pd.DataFrame, requested: str | None) -> RunInfo | None:
    """The run whose register explains: the requested one, else the latest that has a register or
    succeeded; None (an empty register) when the target records no such run."""
    # The distinct run ids (by Arrow, from about a million register rows), then a set of a few.
    with_register = set(exceptions["run_id"].dropna().astype(str).unique())
    if requested is not None:
        known = runs[runs["run_id"].eq(requested).to_numpy(dtype=bool)]
        if not known.empty:
            return _run_info(known.iloc[0])
        if requested in with_register:
            return RunInfo(run_id=requested, status=None, as_of=None, started_at=None, ended_at=None)
        listed = ", ".join(sorted(set(runs["run_id"].astype(str)))[-5:]) or "none"
        raise ConfigurationError(f"--run: no run {requested!r} in the target (latest runs: {listed})")
    qualifies = runs["status"].eq("succeeded") | runs["run_id"].isin(with_register)
    qualifying = runs[qualifies.to_numpy(dtype=bool)]
    if qualifying.empty:
        return None
    latest = qualifying.sort_values(["started_at", "run_id"], kind="stable").iloc[-1]
    return _run_info(latest)


def _run_info(row: pd.Series) -> RunInfo:
    def when(value: Any) -> datetime | None:
        return None if pd.isna(value) else pd.Timestamp(value).to_pydatetime()

    return RunInfo(run_id=str(row["run_id"]), status=None if pd.isna(row["status"]) else str(row["status"]),
                   as_of=when(row["as_of"]), started_at=when(row["started_at"]),
                   ended_at=when(row["ended_at"]))


def _sorted_register(register: pd.DataFrame) -> pd.DataFrame:
    """Register rows in a reading order: entity, then legacy key (numerically when it is a number)."""
    if register.empty:
        return register
    rank = register["entity"].map({e: i for i, e in enumerate(ENTITIES)}).fillna(len(ENTITIES))
    numeric = pd.to_numeric(register["legacy_key"], errors="coerce")
    ordered = register.assign(_rank=rank.to_numpy(), _numeric=numeric.to_numpy())
    ordered = ordered.sort_values(
        ["_rank", "_numeric", "legacy_key", "outcome", "reason_code", "exception_id"],
        na_position="last", kind="stable")
    return ordered.drop(columns=["_rank", "_numeric"]).reset_index(drop=True)


_REGISTER_ROW_COLUMNS = ("entity", "legacy_key", "outcome", "reason_code", "detail", "merged_into")


def _register_rows(register: pd.DataFrame) -> tuple[RegisterRow, ...]:
    columns = [register[c].tolist() for c in _REGISTER_ROW_COLUMNS]
    return tuple(
        RegisterRow(entity=str(e), legacy_key=str(k), outcome=str(o), reason_code=str(r),
                    detail=_optional_text(d) or "", merged_into=_optional_text(m))
        for e, k, o, r, d, m in zip(*columns, strict=True)
    )


class RegisterRows(Sequence[RegisterRow]):
    """The register's rows as RegisterRow, each made when it is read (a tuple of them all, for the
    644,585 rows of a million users, held 0.3 GB through the whole reconciliation)."""

    _CHUNK_ROWS = 50_000

    def __init__(self, register: pd.DataFrame) -> None:
        self._frame = register[list(_REGISTER_ROW_COLUMNS)]

    @property
    def frame(self) -> pd.DataFrame:
        """The rows as a frame of _REGISTER_ROW_COLUMNS, in the register's order."""
        return self._frame

    def __len__(self) -> int:
        return len(self._frame)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return _register_rows(self._frame.iloc[index])
        position = range(len(self))[index]  # an IndexError beyond the end, as a tuple's
        return _register_rows(self._frame.iloc[position:position + 1])[0]

    def __iter__(self) -> Iterator[RegisterRow]:
        for start in range(0, len(self), self._CHUNK_ROWS):
            yield from _register_rows(self._frame.iloc[start:start + self._CHUNK_ROWS])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and len(other) == len(self) and tuple(self) == tuple(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"RegisterRows({len(self)} rows)"


def _register_ids(register: pd.DataFrame, entity: str, outcomes: Iterable[str], column: str) -> pd.DataFrame:
    """Register rows of one entity and some outcomes whose legacy key is an integer id: that id
    (`legacy_id`) and `column`. Only the column read is taken: the rows' details (text) were copied
    too, under the reconciliation's high-water mark."""
    chosen = register["entity"].eq(entity) & register["outcome"].isin(list(outcomes))
    rows = register.loc[chosen.to_numpy(dtype=bool), ["legacy_key", column]]
    ids = pd.to_numeric(rows["legacy_key"], errors="coerce")
    rows = rows.assign(legacy_id=ids.to_numpy())
    rows = rows[rows["legacy_id"].notna().to_numpy()]
    return rows.assign(legacy_id=rows["legacy_id"].astype("int64"))


def _merged_users(register: pd.DataFrame) -> pd.Series:
    """legacy user id -> the survivor its access counts under (chains of merges followed)."""
    rows = _register_ids(register, "user", ("merged",), "merged_into")
    survivors = pd.to_numeric(rows["merged_into"], errors="coerce")
    rows = rows.assign(survivor=survivors.to_numpy())[survivors.notna().to_numpy()]
    into = pd.Series(rows["survivor"].astype("int64").to_numpy(), index=rows["legacy_id"].to_numpy())
    into = into[~into.index.duplicated(keep="first")]
    for _ in range(16):  # a survivor merged in turn; a cycle stops after a few rounds
        onward = into.map(into)
        if onward.isna().all():
            break
        into = onward.fillna(into).astype("int64")
    return into


# --- the two sets of access tuples ----------------------------------------------------------------


def _flag(series: pd.Series) -> npt.NDArray[np.bool_]:
    return series.fillna(False).to_numpy(dtype=bool)


def legacy_access(frames: LegacyFrames, mapping: Mapping, merged_into: pd.Series,
                  as_of: datetime) -> pd.DataFrame:
    """One row per habilitation giving effective access at `as_of`, with its access tuple."""
    habs = frames.habilitations
    users = frames.utilisateurs
    apps = frames.applications.drop_duplicates("code_application", keep="first")
    live_users = users.loc[~_flag(users["statut"].eq("SUPPRIME")), "id_utilisateur"]
    active_codes = apps.loc[_flag(apps["actif"].astype("boolean")), "code_application"]
    start, end = habs["date_debut"], habs["date_fin"]
    effective = (
        _flag(habs["statut"].eq("ACTIVE"))
        & _flag(start <= as_of)
        & (end.isna().to_numpy() | _flag(end > as_of))
        & habs["id_utilisateur"].isin(live_users).to_numpy()
        & habs["code_application"].isin(active_codes).to_numpy()
    )
    # Each text column is worked on as codes of its distinct values, taken whole then filtered,
    # and kept as a categorical: a filtered copy of the text, a Python string a row for the
    # application and a 2-D copy of the columns weighed 0.6 GB at a million users, the three
    # columns as text 0.13 GB.
    user_id = habs["id_utilisateur"].to_numpy(dtype=np.int64)[effective]
    holder = user_id.copy()
    if len(merged_into):
        position = merged_into.index.get_indexer(pd.Index(user_id))
        found = position >= 0
        holder[found] = merged_into.to_numpy(dtype=np.int64)[position[found]]
    app_codes, legacy_codes = factorized(habs["code_application"])
    # The EFP code of each distinct legacy code; the last one stands for a NULL code.
    efp_codes = np.array([*(mapping.application_codes.get(code, code) for code in legacy_codes.tolist()), None],
                         dtype=object)
    app_codes = app_codes[effective]
    app_codes[app_codes < 0] = len(efp_codes) - 1
    siret_codes, sirets = factorized(habs["siret"])
    role_codes, labels = factorized(habs["role"])
    roles, role_of_row = _canonical_roles(app_codes, efp_codes, role_codes[effective], labels, mapping)
    return pd.DataFrame(
        {
            "id_habilitation": habs["id_habilitation"].to_numpy(dtype=np.int64)[effective],
            "original_user_id": user_id,
            "legacy_user_id": holder,
            "application_code": _categorical(efp_codes, app_codes),
            "siret": _categorical(_normalised_sirets(sirets), siret_codes[effective]),
            "role": _categorical(roles, role_of_row),
        },
        copy=False,  # each column its own block: no 2-D copy of the arrays just made
    )


def _categorical(values: npt.NDArray[np.object_], codes: npt.NDArray[np.signedinteger[Any]]) -> pd.Categorical:
    """values[code] for each code (-1: missing) as a categorical; values may repeat or be None."""
    number, distinct = pd.factorize(np.append(values, [None]))  # the last one for code -1
    # Codes as narrow as the categorical keeps them, not int64 a row first.
    width: type[np.signedinteger[Any]] = next(
        t for t in (np.int8, np.int16, np.int32, np.int64) if len(distinct) < np.iinfo(t).max)
    return pd.Categorical.from_codes(number.astype(width)[codes], categories=pd.Index(distinct, dtype=object))


def _normalised_sirets(sirets: npt.NDArray[np.object_]) -> npt.NDArray[np.object_]:
    """Distinct SIRETs with spaces removed, blank as None."""
    digits = siret_digits(pd.Series(sirets, dtype="string"))
    blank = (digits.isna() | digits.eq("")).fillna(True).to_numpy(dtype=bool)
    normalised: npt.NDArray[np.object_] = np.array(digits.astype(object), dtype=object)  # a copy of its own
    normalised[blank] = None
    return normalised


def _canonical_roles(app_codes: npt.NDArray[np.int64], applications: npt.NDArray[np.object_],
                     label_codes: npt.NDArray[np.int64], labels: npt.NDArray[np.object_],
                     mapping: Mapping) -> tuple[npt.NDArray[np.object_], npt.NDArray[np.int64]]:
    """The canonical role of each row, or its label itself where it maps to none, as (roles, the
    row's position in them); the mapping is asked once per distinct (application, label) pair. A
    row's application is applications[app_code] (codes >= 0), its label labels[label_code] (None
    for -1)."""
    if not len(app_codes):
        return np.array([], dtype=object), np.array([], dtype=np.int64)
    width = len(labels) + 1
    pair = app_codes * width + (label_codes + 1)  # label code 0 is a NULL label
    inverse, distinct = pd.factorize(pair)  # hashing: no sort of millions of pairs
    answers: list[str | None] = []
    for key in distinct.tolist():
        app = applications[key // width]
        label_code = key % width
        text = None if label_code == 0 else str(labels[label_code - 1])
        role = None if app is None else mapping.canonical_role(str(app), text)
        answers.append(role if role is not None else text)
    return np.array(answers, dtype=object), inverse.reshape(-1).astype(np.int64)


def target_access(entitlement_frame: pd.DataFrame, account_frame: pd.DataFrame,
                  as_of: datetime) -> pd.DataFrame:
    """One row per entitlement giving access at `as_of` to an account that has a legacy_user_id."""
    # The two columns used, filtered: a filtered copy of the accounts' frame (their logins and the
    # rest) weighed 0.08 GB at a million users, at the reconciliation's high-water mark.
    has_legacy = account_frame["legacy_user_id"].notna().to_numpy()
    by_account = pd.Series(account_frame["legacy_user_id"][has_legacy].to_numpy(dtype=np.int64),
                           index=pd.Index(account_frame["account_id"].to_numpy(dtype=np.int64)[has_legacy]))
    ent = entitlement_frame
    until = ent["valid_until"]
    effective = _flag(ent["valid_from"] <= as_of) & (until.isna().to_numpy() | _flag(until > as_of))
    position = by_account.index.get_indexer(pd.Index(ent["account_id"].to_numpy(dtype=np.int64)))
    chosen = effective & (position >= 0)
    # Each column taken on its own and filtered: a filtered copy of the text columns, a Python
    # int a row for the habilitation ids and a 2-D copy of the columns weighed 0.2 GB at a
    # million users. The text columns are categoricals, as in legacy_access: as text (even one
    # Python string per distinct value, which pandas turns back into Arrow text in a frame) they
    # weighed 0.1 GB.
    def coded(column: str) -> pd.Categorical:
        codes, values = factorized(ent[column])
        return _categorical(values, codes[chosen])

    return pd.DataFrame(
        {
            "entitlement_id": ent["entitlement_id"].to_numpy(dtype=np.int64)[chosen],
            "legacy_habilitation_id": ent["legacy_habilitation_id"].astype("Int64").array[chosen],
            "legacy_user_id": by_account.to_numpy(dtype=np.int64)[position[chosen]],
            "application_code": coded("application_code"),
            "siret": coded("siret"),
            "role": coded("role"),
        },
        copy=False,  # each column its own block
    )


TUPLE_COLUMNS = ("legacy_user_id", "application_code", "siret", "role")
EMPTY_SET_HASH = hashlib.sha256(b"").hexdigest()


def _missing(value: object) -> bool:
    if isinstance(value, float):
        return math.isnan(value)
    return value is None or value is pd.NA or value is pd.NaT


def _optional_text(value: object) -> str | None:
    return None if _missing(value) else str(value)


def _escape_tuple_text(value: object) -> str:
    return NULL_TEXT if _missing(value) else str(value).translate(_TUPLE_ESCAPES)


# The dtype of the tuple space's per-row codes: a few distinct values per text column, and fewer
# tuples than rows. In int64, the codes of the 4.4 million legacy and target access rows of a
# million users weighed 0.07 GB more, held through the comparison (its peak).
_ROW_CODE = np.int32
_ROW_LIMITS = np.iinfo(_ROW_CODE)


def _row_codes(codes: npt.NDArray[np.signedinteger[Any]]) -> npt.NDArray[np.int32]:
    if len(codes) and int(codes.max()) > _ROW_LIMITS.max:
        raise OverflowError("more access tuples than the tuple space's codes hold")
    return codes.astype(_ROW_CODE)


def _dense_ids(values: npt.NDArray[np.int64]) -> tuple[npt.NDArray[np.int32], int]:
    """`pd.factorize(values)` (codes numbered in order of first appearance) in the tuple space's
    code dtype, and the number of distinct values; found by sorting the values rather than
    hashing them: at a million users (5.3 million rows) the hash table, its int64 codes and
    uniques were 0.18 GB, the reconciliation's high-water mark; this takes 0.13 GB."""
    if not len(values):
        return np.array([], dtype=_ROW_CODE), 0
    order = np.argsort(values)
    in_order = values[order]
    starts = np.empty(len(values), dtype=bool)
    starts[0] = True
    np.not_equal(in_order[1:], in_order[:-1], out=starts[1:])
    del in_order
    count = int(np.count_nonzero(starts))
    if count - 1 > _ROW_LIMITS.max:
        raise OverflowError("more access tuples than the tuple space's codes hold")
    run_starts = np.flatnonzero(starts)
    rank = np.cumsum(starts, dtype=_ROW_CODE)
    rank -= 1  # each sorted row's value, numbered in value order
    del starts
    # The row where each value first appears (the sort is not stable: the least row of its run).
    first_row = np.minimum.reduceat(order, run_starts)
    del run_starts
    ids = np.empty(len(values), dtype=_ROW_CODE)
    ids[order] = rank
    del order, rank
    by_appearance = np.empty(count, dtype=_ROW_CODE)
    by_appearance[np.argsort(first_row)] = np.arange(count, dtype=_ROW_CODE)
    del first_row
    np.take(by_appearance, ids, out=ids)
    return ids, count


@dataclass(frozen=True)
class _TextCodes:
    """A text column as integer codes (0 is NULL), with each code's raw value, canonical text and rank."""

    codes: npt.NDArray[np.int32]
    raw: npt.NDArray[np.object_]  # by code; raw[0] is None
    text: npt.NDArray[np.object_]  # by code: escaped text, \N for NULL
    rank: npt.NDArray[np.int64]  # by code: position of its text in code-point order

    @classmethod
    def of(cls, parts: Sequence[pd.Series]) -> _TextCodes:
        """The codes of the parts put end to end (each part factorised on its own, in Arrow when
        it is Arrow-backed, then the few distinct values of all parts numbered together)."""
        each = [factorized(part) for part in parts]
        numbered, uniques = pd.factorize(np.concatenate([np.array([], dtype=object), *(u for _, u in each)]))
        starts = np.cumsum([0, *(len(u) for _, u in each)]).tolist()
        # Per part: its own code -> the shared code (0 for NULL, which a part's code -1 picks last).
        codes = [_row_codes(np.append(numbered[start:start + len(u)] + 1, 0))[c]
                 for (c, u), start in zip(each, starts, strict=False)]
        raw = np.array([None, *uniques], dtype=object)
        text = _escaped_texts(raw)
        rank = np.empty(len(text), dtype=np.int64)
        rank[np.argsort(text, kind="stable")] = np.arange(len(text))
        return cls(codes=np.concatenate([np.array([], dtype=_ROW_CODE), *codes]), raw=raw, text=text, rank=rank)


def _escaped_texts(raw: npt.NDArray[np.object_]) -> npt.NDArray[np.object_]:
    """_escape_tuple_text of every value; only values holding a character to escape are looked at."""
    present = raw[1:]
    try:
        joined = "".join(present)
    except TypeError:  # not only strings
        return np.array([_escape_tuple_text(v) for v in raw], dtype=object)
    if any(character in joined for character in "\\\t\n\r"):
        return np.array([_escape_tuple_text(v) for v in raw], dtype=object)
    return np.array([NULL_TEXT, *present], dtype=object)


class _TupleSpace:
    """The access tuples of several frames, each row given a dense tuple id shared by all frames."""

    def __init__(self, *frames: pd.DataFrame) -> None:
        self.sizes = [len(f) for f in frames]
        users = [f["legacy_user_id"].to_numpy(dtype=np.int64) for f in frames]
        # In 32 bits when every id fits (their text and order are the same): 21 MB less at a
        # million users, held through the comparison.
        narrow = all(not len(u) or (int(u.min()) >= _ROW_LIMITS.min and int(u.max()) <= _ROW_LIMITS.max)
                     for u in users)
        self.users: npt.NDArray[np.signedinteger[Any]] = np.concatenate(
            users, dtype=_ROW_CODE if narrow else np.int64, casting="same_kind")
        del users
        columns = {c: _TextCodes.of([f[c] for f in frames]) for c in TUPLE_COLUMNS[1:]}
        self.app, self.siret, self.role = columns["application_code"], columns["siret"], columns["role"]
        # The ids themselves where they are codes already (never negative, as legacy ids are): their
        # factorisation was 42 MB more at a million users, held under the reconciliation's peak.
        user_codes: npt.NDArray[np.signedinteger[Any]] = (
            self.users if not len(self.users) or int(self.users.min()) >= 0
            else pd.factorize(self.users)[0].astype(np.int64))
        combined = _combine_codes([user_codes, self.app.codes, self.siret.codes, self.role.codes])
        del user_codes
        self.ids, self.size = _dense_ids(combined)
        del combined
        self.bounds = np.cumsum([0, *self.sizes])

    def part(self, index: int) -> npt.NDArray[np.int32]:
        return self.ids[self.bounds[index]:self.bounds[index + 1]]

    def members(self, index: int) -> npt.NDArray[np.bool_]:
        """Lookup table: tuple id -> whether frame `index` holds that tuple."""
        table = np.zeros(self.size, dtype=bool)
        table[self.part(index)] = True
        return table

    def first_rows(self, index: int) -> npt.NDArray[np.signedinteger[Any]]:
        """Positions (in the whole space) of the first row of each distinct tuple of frame `index`,
        in the row codes' 32 bits when the space's rows fit (39 MB less at a million users, held
        through the comparison)."""
        first = ~pd.Series(self.part(index)).duplicated(keep="first").to_numpy()
        positions = np.flatnonzero(first)
        positions += int(self.bounds[index])
        return positions.astype(_ROW_CODE) if int(self.bounds[-1]) <= _ROW_LIMITS.max else positions.astype(np.int64)

    def count_by_application(self, positions: npt.NDArray[np.signedinteger[Any]]) -> dict[str, int]:
        counts = np.bincount(self.app.codes[positions], minlength=len(self.app.raw))
        return {str(self.app.raw[code]): int(n) for code, n in enumerate(counts.tolist()) if n}

    def control_hashes(self, positions: npt.NDArray[np.signedinteger[Any]]) -> dict[str, str]:
        """Per application: SHA-256 of its distinct tuples (see `control_hashes`).

        One application at a time, in the code-point order of their codes: its rows' sort keys
        and lines are a fraction of all (the keys and reordered codes of every row at once were
        the reconciliation's high-water mark, 0.13 GB above what it holds at a million users)."""
        if not len(positions):
            return {}
        app = self.app.codes[positions]
        grouped = np.argsort(app, kind="stable")  # the positions of each application together
        bounds = np.r_[0, np.cumsum(np.bincount(app, minlength=len(self.app.raw)))]
        del app
        try:  # the lines joined in C (Arrow), a few seconds less at a million users
            texts: tuple[pa.Array, pa.Array, pa.Array] | None = (
                pa.array(self.app.text, pa.string()), pa.array(self.siret.text, pa.string()),
                pa.array(self.role.text, pa.string()))
        except ARROW_REFUSALS:  # a value Arrow cannot hold (a lone surrogate): one Python string per line
            texts = None
        digests: dict[str, str] = {}
        for code in np.argsort(self.app.rank, kind="stable").tolist():
            if bounds[code] < bounds[code + 1]:
                rows = positions[grouped[bounds[code]:bounds[code + 1]]]
                digests[str(self.app.raw[code])] = self._application_digest(code, rows, texts)
        return digests

    def _application_digest(self, code: int, rows: npt.NDArray[np.signedinteger[Any]],
                            texts: tuple[pa.Array, pa.Array, pa.Array] | None) -> str:
        """SHA-256 of the lines of `rows`, all of application `code`, in tuple order."""
        siret, role, users = self.siret.codes[rows], self.role.codes[rows], self.users[rows]
        user_rank, user_values = pd.factorize(users, sort=True)  # numeric order of the ids
        order = _order_by([(user_rank, len(user_values)), (self.siret.rank[siret], len(self.siret.rank)),
                           (self.role.rank[role], len(self.role.rank))])
        del user_rank, user_values
        siret, role, users = siret[order], role[order], users[order]
        if texts is not None:
            app_text, siret_text, role_text = texts
            digest = hashlib.sha256()
            # A slice of lines at a time: the lines of two million tuples weighed 0.2 GB.
            for first in range(0, len(users), CONTROL_HASH_CHUNK_ROWS):
                last = min(first + CONTROL_HASH_CHUNK_ROWS, len(users))
                digest.update(text_bytes(pc.binary_join_element_wise(
                    pc.cast(pa.array(users[first:last]), pa.string()), app_text[code],
                    siret_text.take(pa.array(siret[first:last])), role_text.take(pa.array(role[first:last])), "\t")))
            return digest.hexdigest()
        app_text = str(self.app.text[code])
        lines = map("\t".join, zip(map(str, users.tolist()), repeat(app_text, len(users)),
                                   self.siret.text[siret].tolist(), self.role.text[role].tolist(), strict=True))
        return _sha256_text("\n".join(lines) + "\n")


# Lines joined and hashed at a time in control_hashes (a digest is the same whatever the slices).
CONTROL_HASH_CHUNK_ROWS = 262_144


def _order_by(keys: Sequence[tuple[npt.NDArray[np.int64], int]]) -> npt.NDArray[np.intp]:
    """The order of rows by `keys`, most significant first, each a code in [0, size): one sort of
    the codes combined into one integer (several times faster than np.lexsort's one pass per
    key), or np.lexsort when the combination would not fit in 63 bits."""
    capacity = 1
    for _, size in keys:
        capacity *= max(size, 1)
    if capacity >= 2**63:
        return np.lexsort(tuple(codes for codes, _ in reversed(keys)))
    combined = np.zeros(len(keys[0][0]), dtype=np.int64)
    for codes, size in keys:
        combined = combined * max(size, 1) + codes
    return np.argsort(combined, kind="stable")


def _sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def control_hashes(tuples: pd.DataFrame) -> dict[str, str]:
    """Per application: SHA-256 of its distinct tuples as UTF-8 lines
    `legacy_user_id<TAB>application_code<TAB>siret<TAB>role<LF>`, sorted by legacy_user_id (as a
    number), then siret, then role (code-point order); NULL is written \\N, and backslash, tab and
    line breaks inside values as \\\\, \\t, \\n, \\r. Independent of the order rows come in."""
    space = _TupleSpace(tuples)
    return space.control_hashes(space.first_rows(0))


def _combine_codes(columns: Sequence[npt.NDArray[np.signedinteger[Any]]]) -> npt.NDArray[np.int64]:
    """One int64 per row, equal exactly when every column's code is equal (codes are >= 0)."""
    combined = np.zeros(len(columns[0]), dtype=np.int64)
    for codes in columns:
        base = int(codes.max()) + 1 if len(codes) else 1
        if len(combined) and int(combined.max()) >= (2**62) // base:
            combined = pd.factorize(combined)[0].astype(np.int64)  # below the row count: the product fits
        # In place: each step's two temporaries were 84 MB at a million users.
        combined *= base
        combined += codes
    return combined


@dataclass(frozen=True)
class _Comparison:
    legacy_access: dict[str, int]
    target_access: dict[str, int]
    matched: dict[str, int]
    legacy_hashes: dict[str, str]
    target_hashes: dict[str, str]
    missing_explained: pd.DataFrame  # TUPLE_COLUMNS + reason_code
    missing_unexplained: pd.DataFrame  # TUPLE_COLUMNS + legacy_habilitation_ids
    extra: pd.DataFrame  # TUPLE_COLUMNS + legacy_habilitation_ids, entitlement_ids


def _compare(legacy_rows: pd.DataFrame, target_rows: pd.DataFrame, register: pd.DataFrame) -> _Comparison:
    space = _TupleSpace(legacy_rows, target_rows)
    legacy_ids, target_ids = space.part(0), space.part(1)
    in_legacy, in_target = space.members(0), space.members(1)
    legacy_first, target_first = space.first_rows(0), space.first_rows(1)
    matched = legacy_first[in_target[space.ids[legacy_first]]]

    legacy_rows = legacy_rows.assign(tuple_id=legacy_ids)
    target_rows = target_rows.assign(tuple_id=target_ids)
    missing_rows = legacy_rows[~in_target[legacy_ids]]
    missing = missing_rows.drop_duplicates("tuple_id")[[*TUPLE_COLUMNS, "tuple_id"]]
    reasons = _explanations(missing_rows, register)
    explained = missing.merge(reasons, on="tuple_id", how="inner")
    unexplained = missing[~missing["tuple_id"].isin(reasons["tuple_id"]).to_numpy()]
    giving = missing_rows[missing_rows["tuple_id"].isin(unexplained["tuple_id"]).to_numpy()]
    unexplained = unexplained.merge(_id_lists(giving, "id_habilitation", "legacy_habilitation_ids"),
                                    on="tuple_id", how="left")
    behind = target_rows[~in_legacy[target_ids]]
    extra = behind.drop_duplicates("tuple_id")[[*TUPLE_COLUMNS, "tuple_id"]]
    extra = extra.merge(_id_lists(behind, "legacy_habilitation_id", "legacy_habilitation_ids"),
                        on="tuple_id", how="left")
    extra = extra.merge(_id_lists(behind, "entitlement_id", "entitlement_ids"), on="tuple_id", how="left")
    return _Comparison(
        legacy_access=space.count_by_application(legacy_first),
        target_access=space.count_by_application(target_first),
        matched=space.count_by_application(matched),
        legacy_hashes=space.control_hashes(legacy_first),
        target_hashes=space.control_hashes(target_first),
        missing_explained=explained,
        missing_unexplained=unexplained,
        extra=extra,
    )


def _id_lists(rows: pd.DataFrame, column: str, name: str) -> pd.DataFrame:
    """tuple_id -> sorted tuple of the ids in `column` (NULLs left out), for the rows given."""
    present = rows[rows[column].notna().to_numpy()]
    ids: dict[int, list[int]] = {}
    for tuple_id, value in zip(present["tuple_id"].tolist(), present[column].tolist(), strict=True):
        ids.setdefault(int(tuple_id), []).append(int(value))
    return pd.DataFrame({"tuple_id": np.array(list(ids), dtype=np.int64),
                         name: pd.Series([tuple(sorted(v)) for v in ids.values()], dtype=object)})


def _explanations(missing_rows: pd.DataFrame, register: pd.DataFrame) -> pd.DataFrame:
    """tuple_id -> reason_code for the missing tuples the register explains.

    A habilitation's own `excluded`/`rejected` row comes first (lowest id_habilitation, then
    reason), else a row of its holder. A `merged` habilitation row explains nothing: the access
    it carried lives on in its survivor, which is migrated by definition.
    """
    empty = pd.DataFrame({"tuple_id": np.array([], dtype=np.int64),
                          "reason_code": np.array([], dtype=object)})
    if missing_rows.empty or register.empty:
        return empty
    habs = _register_ids(register, "habilitation", ("excluded", "rejected"), "reason_code")
    users = _register_ids(register, "user", COUNTED_OUTCOMES, "reason_code")
    # Only the columns read below go through the merges, not the whole tuples (text and categories).
    missing_rows = missing_rows[["tuple_id", "id_habilitation", "legacy_user_id"]]
    by_hab = missing_rows.merge(habs[["legacy_id", "reason_code"]], left_on="id_habilitation",
                                right_on="legacy_id", how="inner").assign(priority=0)
    by_user = missing_rows.merge(users[["legacy_id", "reason_code"]], left_on="legacy_user_id",
                                 right_on="legacy_id", how="inner").assign(priority=1)
    candidates = pd.concat([by_hab, by_user], ignore_index=True)
    if candidates.empty:
        return empty
    candidates = candidates.sort_values(["tuple_id", "priority", "id_habilitation", "reason_code"],
                                        kind="stable")
    chosen = candidates.drop_duplicates("tuple_id", keep="first")
    return pd.DataFrame({"tuple_id": chosen["tuple_id"].to_numpy(dtype=np.int64),
                         "reason_code": chosen["reason_code"].astype(str).to_numpy(dtype=object)})


# --- per application ------------------------------------------------------------------------------


def _applications(frames: LegacyFrames, mapping: Mapping, target_apps: pd.DataFrame,
                  comparison: _Comparison) -> tuple[ApplicationReconciliation, ...]:
    legacy_codes: dict[str, set[str]] = {}
    for code in frames.applications["code_application"].dropna().astype(str).unique().tolist():
        legacy_codes.setdefault(mapping.application_codes.get(code, code), set()).add(code)
    codes = set(legacy_codes) | {str(c) for c in target_apps["code"].dropna()}
    codes |= set(comparison.legacy_access) | set(comparison.target_access)

    def counts(frame: pd.DataFrame) -> dict[str, int]:
        return {str(k): int(v) for k, v in frame["application_code"].value_counts().items()}

    unexplained, extra = counts(comparison.missing_unexplained), counts(comparison.extra)
    explained = counts(comparison.missing_explained)
    by_reason: dict[str, dict[str, int]] = {}
    explained_rows = comparison.missing_explained
    pairs = zip(explained_rows["application_code"].tolist(), explained_rows["reason_code"].tolist(),
                strict=True)
    for app, reason in pairs:
        reasons = by_reason.setdefault(str(app), {})
        reasons[str(reason)] = reasons.get(str(reason), 0) + 1
    return tuple(
        ApplicationReconciliation(
            application_code=code,
            legacy_codes=tuple(sorted(legacy_codes.get(code, ()))),
            legacy_access=comparison.legacy_access.get(code, 0),
            target_access=comparison.target_access.get(code, 0),
            matched=comparison.matched.get(code, 0),
            missing_explained=explained.get(code, 0),
            missing_explained_by_reason=dict(sorted(by_reason.get(code, {}).items())),
            missing_unexplained=unexplained.get(code, 0),
            extra_in_target=extra.get(code, 0),
            legacy_control_hash=comparison.legacy_hashes.get(code, EMPTY_SET_HASH),
            target_control_hash=comparison.target_hashes.get(code, EMPTY_SET_HASH),
        )
        for code in sorted(codes)
    )


def _holders(users: pd.DataFrame) -> pd.Series:
    """legacy user id -> "first last <email>", for reports that may show personal data."""
    def clean(column: str) -> pd.Series:
        return users[column].astype("string").fillna("").str.strip()

    text = (clean("prenom") + " " + clean("nom")).str.strip() + " <" + clean("courriel") + ">"
    return pd.Series(text.to_numpy(dtype=object), index=users["id_utilisateur"].to_numpy(dtype=np.int64))


def _differences(kind: str, frame: pd.DataFrame, holders: pd.Series | None) -> tuple[AccessDifference, ...]:
    if frame.empty:
        return ()
    ordered = frame.assign(
        _siret=frame["siret"].map(_escape_tuple_text), _role=frame["role"].map(_escape_tuple_text)
    ).sort_values(["application_code", "legacy_user_id", "_siret", "_role"], kind="stable")

    def ids(value: object) -> tuple[int, ...]:
        return value if isinstance(value, tuple) else ()

    entitlement_ids = ordered["entitlement_ids"] if "entitlement_ids" in ordered else pd.Series(
        [()] * len(ordered), index=ordered.index, dtype=object)
    return tuple(
        AccessDifference(
            kind=kind,
            legacy_user_id=int(user),
            application_code=str(app),
            siret=_optional_text(siret),
            role=_optional_text(role),
            legacy_habilitation_ids=ids(habs),
            entitlement_ids=ids(ents),
            holder=(None if holders is None else holders.get(int(user))),
        )
        for user, app, siret, role, habs, ents in zip(
            ordered["legacy_user_id"].tolist(), ordered["application_code"].tolist(),
            ordered["siret"].tolist(), ordered["role"].tolist(),
            ordered["legacy_habilitation_ids"].tolist(), entitlement_ids.tolist(),
            strict=True,
        )
    )


# --- account checks -------------------------------------------------------------------------------


def account_checks(account_frame: pd.DataFrame, users: pd.DataFrame, *,
                   show_personal_data: bool = False) -> tuple[AccountCheck, ...]:
    """Every migrated account (origin MIGRATION, legacy_user_id set) kept its identifiers, must reset
    its password, has no password hash, and carries its legacy status."""
    migrated = account_frame[(account_frame["origin"].eq(ORIGIN_MIGRATION).to_numpy(dtype=bool)
                              & account_frame["legacy_user_id"].notna().to_numpy())]
    # The text stays text (Arrow-backed) and is compared column against column; only a failing
    # row's values become Python strings. A Python string a row for logins and statuses weighed
    # 0.35 GB at a million users, at the reconciliation's peak.
    # (`.array`, not `.to_numpy()`: that made a Python string a row, which the frame turned back
    # into Arrow text, 0.1 GB of temporaries at a million users, the reconciliation's high-water mark.)
    legacy = pd.DataFrame({
        "legacy_user_id": users["id_utilisateur"].to_numpy(dtype=np.int64),
        "expected_login": users["courriel"].astype(TEXT_DTYPE).str.strip().str.lower().array,
        "legacy_status": users["statut"].astype(TEXT_DTYPE).array,
    }, copy=False)
    joined = migrated.assign(legacy_user_id=migrated["legacy_user_id"].astype("int64")).merge(
        legacy, on="legacy_user_id", how="left", indicator=True)
    joined = joined.sort_values("legacy_user_id", kind="stable").reset_index(drop=True)
    ids = joined["legacy_user_id"].to_numpy(dtype=np.int64)
    exists = joined["_merge"].eq("both").to_numpy()
    login, expected_login = joined["login"].astype(TEXT_DTYPE), joined["expected_login"].astype(TEXT_DTYPE)
    reset = joined["must_reset_password"].astype("boolean")
    hash_set = joined["password_hash"].notna().to_numpy()
    status = joined["status"].astype(TEXT_DTYPE)
    legacy_status = joined["legacy_status"].astype(TEXT_DTYPE)
    expected_status = legacy_status.map(ACCOUNT_STATUS).astype(TEXT_DTYPE)

    def check(name: str, fr: str, en: str, ok: npt.NDArray[np.bool_],
              describe: Any) -> AccountCheck:
        failing = np.flatnonzero(~ok).tolist()
        return AccountCheck(
            name=name, description_fr=fr, description_en=en, checked=len(joined),
            passed=len(joined) - len(failing),
            failures=tuple(AccountCheckFailure(int(ids[i]), *describe(i)) for i in failing),
        )

    return (
        check("legacy_user_exists", "legacy_user_id désigne un utilisateur de l'extraction",
              "legacy_user_id names a user of the legacy extract", exists,
              lambda i: ("id_utilisateur present in the extract", "absent")),
        check("login_kept", "login = courriel sans espaces, en minuscules",
              "login = courriel trimmed and lower-cased", exists & _same_text(login, expected_login),
              lambda i: ((_optional_text(expected_login.iloc[i]), _optional_text(login.iloc[i]))
                         if show_personal_data else (None, None))),
        check("must_reset_password", "réinitialisation du mot de passe exigée",
              "must_reset_password is true", _flag(reset),
              lambda i: ("true", "NULL" if pd.isna(reset.iloc[i]) else str(bool(reset.iloc[i])).lower())),
        check("no_password_hash", "aucun hachage de mot de passe repris",
              "password_hash is NULL", ~hash_set,
              lambda i: ("NULL", REDACTED)),
        check("status_mapped", "statut repris (ACTIF→ACTIVE, EN_ATTENTE→PENDING, VERROUILLE→LOCKED)",
              "status mapped (ACTIF→ACTIVE, EN_ATTENTE→PENDING, VERROUILLE→LOCKED)",
              exists & _same_text(status, expected_status) & expected_status.notna().to_numpy(),
              lambda i: (_status_expectation(expected_status.iloc[i], _optional_text(legacy_status.iloc[i])),
                         _optional_text(status.iloc[i]))),
    )


def _same_text(left: pd.Series, right: pd.Series) -> npt.NDArray[np.bool_]:
    """Row by row, whether two text columns hold the same value (both missing counts as the same)."""
    return _flag(left.eq(right)) | (left.isna() & right.isna()).to_numpy()


def _status_expectation(expected: object, legacy: object) -> str:
    if _missing(expected):
        return f"no EFP Connect status for legacy {legacy}"
    return f"{expected} (legacy {legacy})"


# --- outcome counts -------------------------------------------------------------------------------


def _register_count(register: pd.DataFrame, entity: str, outcome: str) -> int:
    return int((register["entity"].eq(entity) & register["outcome"].eq(outcome)).sum())


def outcome_counts(frames: LegacyFrames, mapping: Mapping, target: dict[str, pd.DataFrame],
                   register: pd.DataFrame) -> tuple[OutcomeCounts, ...]:
    """source from legacy, excluded/rejected/merged from the register, migrated from the target."""
    user_ids = frames.utilisateurs["id_utilisateur"]
    account_ids = target["accounts"]["legacy_user_id"].dropna().astype("int64")

    siret = siret_digits(frames.etablissements["siret"].astype("string")).fillna("")
    legacy_sirets = set(siret.unique().tolist())
    rejected_sirets = set(register.loc[(register["entity"].eq("establishment")
                                        & register["outcome"].eq("rejected")).to_numpy(dtype=bool),
                                       "legacy_key"].astype(str))
    target_sirets = set(target["establishments"]["siret"].dropna().astype(str))

    codes = set(frames.applications["code_application"].dropna().astype(str))
    target_codes = set(target["applications"]["code"].dropna().astype(str))
    migrated_apps = {c for c in codes if c in mapping.application_codes
                     and mapping.application_codes[c] in target_codes}

    hab_ids = frames.habilitations["id_habilitation"]
    written = pd.concat([target["entitlements"]["legacy_habilitation_id"],
                         target["access_requests"]["legacy_habilitation_id"]]).dropna().astype("int64")

    migrated = {
        "user": int(account_ids.isin(user_ids).sum()),
        "establishment": len((legacy_sirets & target_sirets) - rejected_sirets),
        "application": len(migrated_apps),
        "habilitation": int(hab_ids.isin(written).sum()),
    }
    source = {
        "user": int(user_ids.nunique()),
        "establishment": len(legacy_sirets),
        "application": len(codes),
        "habilitation": int(hab_ids.nunique()),
    }
    return tuple(
        OutcomeCounts(entity=entity, source=source[entity], migrated=migrated[entity],
                      **{o: _register_count(register, entity, o) for o in COUNTED_OUTCOMES})
        for entity in ENTITIES
    )


def _roll_forward(counts: OutcomeCounts, register: pd.DataFrame) -> EntityRollForward:
    rows = register[register["entity"].eq(counts.entity).to_numpy(dtype=bool)]
    lines = [RollForwardLine(outcome="migrated", reason_code=None, count=counts.migrated)]
    for outcome in COUNTED_OUTCOMES:
        by_reason = rows[rows["outcome"].eq(outcome).to_numpy(dtype=bool)].groupby("reason_code").size()
        lines += [RollForwardLine(outcome=outcome, reason_code=str(reason), count=int(count))
                  for reason, count in sorted(by_reason.items())]
    corrected = rows[rows["outcome"].eq("corrected").to_numpy(dtype=bool)].groupby("reason_code").size()
    return EntityRollForward(
        entity=counts.entity, source=counts.source, lines=tuple(lines),
        corrected={str(k): int(v) for k, v in sorted(corrected.items())},
        remainder=counts.source - sum(line.count for line in lines),
    )


# --- verdict --------------------------------------------------------------------------------------


def decide_verdict(apps: Sequence[ApplicationReconciliation], checks: Sequence[AccountCheck],
                   outcomes: Sequence[OutcomeCounts], *, register_rows: int) -> tuple[str, tuple[str, ...]]:
    reasons: list[str] = []
    missing = sum(a.missing_unexplained for a in apps)
    extra = sum(a.extra_in_target for a in apps)
    if missing:
        reasons.append(f"{missing} accès du portail absent(s) d'EFP Connect sans explication / "
                       f"{missing} legacy access tuple(s) missing from the target, unexplained")
    if extra:
        reasons.append(f"{extra} accès présent(s) dans EFP Connect seulement (gain de droits) / "
                       f"{extra} target access tuple(s) with no legacy counterpart (privilege gain)")
    for check in checks:
        if check.failed:
            reasons.append(f"contrôle de compte {check.name} : {check.failed} échec(s) / "
                           f"account check {check.name}: {check.failed} failure(s)")
    for counts in outcomes:
        if not counts.balanced:
            reasons.append(
                f"{counts.entity} : source {counts.source} ≠ {counts.accounted} "
                f"(migrés {counts.migrated} + exclus {counts.excluded} + rejetés {counts.rejected} "
                f"+ fusionnés {counts.merged}) / {counts.entity}: source {counts.source} "
                f"!= {counts.accounted} (migrated + excluded + rejected + merged)"
            )
    if reasons:
        return NOT_RECONCILED, tuple(reasons)
    explained = sum(a.missing_explained for a in apps)
    if explained == 0 and register_rows == 0:
        return RECONCILED, ()
    return RECONCILED_WITH_EXCEPTIONS, ()


# --- evidence: row counts and content hashes ------------------------------------------------------


def table_evidence(side: str, name: str, frame: pd.DataFrame, kinds: dict[str, str],
                   order_key: str | None) -> TableEvidence:
    """Row count and SHA-256 of a table's canonical CSV text: a header line, then one line per row,
    rows ordered by the table's unique key (else by their text), every line ending in LF."""
    sha256, how = canonical_digest(frame, kinds, order_key)
    return _evidence(side, name, kinds, len(frame), sha256, how)


def _evidence(side: str, name: str, kinds: dict[str, str], row_count: int, sha256: str, how: str) -> TableEvidence:
    columns = tuple(kinds)
    return TableEvidence(side=side, table=name, row_count=row_count, sha256=sha256, columns=columns, order=how,
                         redacted_columns=tuple(c for c in columns if kinds[c] == "redacted"))


def _legacy_kind(table: str, column: str) -> str:
    if column in REDACTED_COLUMNS:
        return "redacted"
    if column in BOOLEAN_COLUMNS.get(table, ()):
        return "bool"
    if column in INTEGER_COLUMNS.get(table, ()):
        return "int"
    if column in TIMESTAMP_COLUMNS.get(table, ()):
        return "datetime"
    if column in DATE_COLUMNS.get(table, ()):
        return "date"
    return "text"


def legacy_evidence(frames: LegacyFrames) -> tuple[TableEvidence, ...]:
    return tuple(_legacy_table_evidence(name, frames.table(name)) for name in LEGACY_FRAME_COLUMNS)


def _legacy_table_evidence(name: str, frame: pd.DataFrame) -> TableEvidence:
    return table_evidence("legacy", name, frame, {c: _legacy_kind(name, c) for c in LEGACY_FRAME_COLUMNS[name]},
                          LEGACY_ORDER_KEYS.get(name))


def _legacy_evidence_letting_go(tables: dict[str, pd.DataFrame]) -> tuple[TableEvidence, ...]:
    """legacy_evidence of the tables, each taken out of `tables` as it is hashed: where nothing
    else holds it, it goes then (the columns the comparison does not read)."""
    evidence = []
    for name in LEGACY_FRAME_COLUMNS:
        evidence.append(_legacy_table_evidence(name, tables.pop(name)))
    return tuple(evidence)


# The legacy columns the comparison reads; the others only the evidence (names and first names
# also show holders, with --show-personal-data). At a million users the others weigh 0.2 GB.
LEGACY_COLUMNS_USED: dict[str, tuple[str, ...]] = {
    "utilisateurs": ("id_utilisateur", "courriel", "statut"),
    "etablissements": ("siret",),
    "applications": ("code_application", "actif"),
    "habilitations": ("id_habilitation", "id_utilisateur", "code_application", "siret", "role", "statut",
                      "date_debut", "date_fin"),
}
HOLDER_COLUMNS = ("nom", "prenom")


def legacy_columns_used(frames: LegacyFrames, show_personal_data: bool) -> LegacyFrames:
    """The frames cut to LEGACY_COLUMNS_USED (no data copied)."""
    def used(name: str) -> list[str]:
        holders = HOLDER_COLUMNS if name == "utilisateurs" and show_personal_data else ()
        return [*LEGACY_COLUMNS_USED[name], *holders]

    return LegacyFrames(**{name: frames.table(name)[used(name)] for name in LEGACY_FRAME_COLUMNS})


def target_table_evidence(name: str, frame: pd.DataFrame) -> TableEvidence:
    kinds, order_key = _target_kinds(name)
    return table_evidence("target", name, frame, kinds, order_key)


def _target_kinds(name: str) -> tuple[dict[str, str], str | None]:
    """A target table's column kinds, and the key its evidence orders the rows by (None: by text)."""
    table = _TARGET_TABLE_NAMES[name]
    keys = [c.name for c in table.primary_key.columns]
    return {c.name: column_kind(table, c.name) for c in table.columns}, keys[0] if len(keys) == 1 else None


class _HashingSink:
    """A target table hashed batch by batch as it is read (in its key's order), keeping only the
    columns the reconciliation uses: its evidence is target_table_evidence of the whole table."""

    def __init__(self, name: str, kinds: dict[str, str], order_key: str,
                 hashed: dict[str, TableEvidence]) -> None:
        self._name, self._kinds, self._hashed = name, kinds, hashed
        self._digest = KeyOrderedDigest(kinds, order_key)
        self.kept = TARGET_COLUMNS_USED.get(name, tuple(kinds))

    def add(self, rows: pd.DataFrame) -> None:
        try:
            self._digest.update(rows)
        except NotInKeyOrderError as exc:
            raise NotStreamableError(str(exc)) from exc

    def close(self, frame: pd.DataFrame) -> pd.DataFrame:
        if self._digest.row_count != len(frame):  # the batches hashed are the rows kept
            raise RuntimeError(f"target {self._name}: {self._digest.row_count} rows hashed, {len(frame)} read")
        self._hashed[self._name] = _evidence("target", self._name, self._kinds, len(frame), *self._digest.result())
        return frame


def _hashing_sink(name: str, hashed: dict[str, TableEvidence]) -> _HashingSink | None:
    """The sink of a target table cut to some of its columns whose rows come in the order of an
    integer key (the large ones but the register, which is kept whole); None for the others,
    hashed whole."""
    if name not in _TARGET_TABLE_NAMES or name not in TARGET_COLUMNS_USED:
        return None
    kinds, order_key = _target_kinds(name)
    if order_key is None or kinds[order_key] != "int":
        return None
    return _HashingSink(name, kinds, order_key, hashed)


_TARGET_TABLE_NAMES = {table.name: table for table in TARGET_TABLES}
