"""`efp-migrate run`: extract -> validate -> transform -> load -> reconcile, with a ledger,
a lock, a run folder, resume after a crash and one exit status."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, inspect, select

from pipelines import ledger
from pipelines.db import check_connection, make_engine, mask_url
from pipelines.errors import EXIT_NOT_RECONCILED, EXIT_RECONCILED
from pipelines.faults import checkpoint
from pipelines.memory import collect_between_stages, gc_paused
from pipelines.runlog import JsonLinesHandler, StageProgress, run_log
from pipelines.target_schema import ORIGIN_MIGRATION, accounts
from pipelines.timeutil import paris_now

if TYPE_CHECKING:
    from pipelines.frames import TargetFrames
    from pipelines.load import Handover

log = logging.getLogger(__name__)
STAGES = ("extract", "validate", "transform", "load", "reconcile")
RECONCILED_VERDICTS = ("RECONCILED", "RECONCILED_WITH_EXCEPTIONS")


def new_run_id(started_at: datetime) -> str:
    return f"{started_at:%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"


@dataclass(frozen=True)
class RunConfig:
    source: str
    target_url: str
    out_dir: Path
    as_of: datetime | None = None
    mappings_dir: str | None = None
    resolutions: str | None = None
    show_personal_data: bool = False
    gate_file: str | None = None
    no_gate: bool = False
    progress: bool | None = None
    fk_checks: str = "auto"
    """How PostgreSQL checks the loaded habilitations' foreign keys (pipelines.load.LoadConfig)."""


@dataclass(frozen=True)
class RunResult:
    run_id: str
    as_of: datetime
    resumed: bool
    verdict: str
    exit_code: int
    out_dir: str
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    elapsed_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["as_of"] = self.as_of.isoformat()
        return data


def native_logins(engine: Engine) -> tuple[str, ...]:
    """Logins of accounts the migration did not write (read only; an empty target has none)."""
    if "accounts" not in inspect(engine).get_table_names():
        return ()
    with engine.connect() as conn:
        rows = conn.execute(select(accounts.c.login).where(accounts.c.origin != ORIGIN_MIGRATION))
        return tuple(sorted(r[0] for r in rows))


def run_options(config: RunConfig, mapping_checksums: dict[str, str], survivors: tuple[int, ...]) -> dict[str, Any]:
    """What, besides the input, makes two runs the same run (used to resume an unfinished one)."""
    return {
        "no_gate": config.no_gate,
        "as_of": config.as_of.isoformat() if config.as_of else None,
        "mappings": mapping_checksums,
        "resolutions": hashlib.sha256(json.dumps(survivors).encode()).hexdigest() if survivors else None,
    }


def run_migration(config: RunConfig) -> RunResult:
    # Configuration is checked before any data is read or any database touched.
    from mappings.mapping import load_mapping
    from validation.gate import load_gate_config
    from validation.resolutions import read_resolutions

    mapping = load_mapping(config.mappings_dir)
    survivors = read_resolutions(config.resolutions) if config.resolutions else ()
    gate_config = load_gate_config(Path(config.gate_file) if config.gate_file else None)
    engine = make_engine(config.target_url, what="--target")
    check_connection(engine, what="--target")
    started_at = paris_now()
    clock = time.perf_counter()
    out_dir = config.out_dir
    out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    out_dir.chmod(0o700)
    provisional_id = new_run_id(started_at)
    stages: dict[str, dict[str, Any]] = {}
    progress = StageProgress(STAGES, enabled=config.progress)
    # Everything the run writes holds personal data: owner-only files, not just an owner-only folder.
    previous_umask = os.umask(0o077)
    try:
        with run_log(out_dir, provisional_id) as log_handler, gc_paused():
            result, inputs = _run(config, engine, mapping, survivors, gate_config, started_at, clock,
                                  provisional_id, stages, progress, log_handler)
        # Last, once the log is closed: the SHA-256 of every artefact of the run and of its inputs.
        from reports.manifest import write_manifest

        write_manifest(out_dir, inputs)
        return result
    finally:
        os.umask(previous_umask)
        progress.close()
        engine.dispose()


def _run(config: RunConfig, engine: Engine, mapping: Any, survivors: tuple[int, ...], gate_config: Any,
         started_at: datetime,
         clock: float, provisional_id: str, stages: dict[str, dict[str, Any]], progress: StageProgress,
         log_handler: JsonLinesHandler) -> tuple[RunResult, dict[str, str]]:
    from pipelines.extract import ExtractConfig, extract
    from pipelines.load import Handover
    from pipelines.transform import Handover as TransformHandover
    from pipelines.transform import transform
    from pipelines.validate import ValidateConfig, validate
    from validation.evaluate import RuleEngine
    from validation.gate import evaluate_gate

    timings: dict[str, tuple[datetime, datetime]] = {}
    clocks: dict[str, float] = {}

    def begin(stage: str) -> datetime:
        checkpoint(f"{stage}:start")
        clocks[stage] = time.perf_counter()
        progress.start(stage)
        log.info("stage %s started", stage, extra={"stage": stage})
        return paris_now()

    def end(stage: str, began: datetime, result: Any) -> None:
        checkpoint(f"{stage}:done")
        collect_between_stages()  # the collector is paused inside the stages (pipelines/memory.py)
        stages[stage] = {"elapsed_seconds": round(time.perf_counter() - clocks[stage], 3), **result.to_dict()}
        timings[stage] = (began, paris_now())
        log.info("stage %s done: %s", stage, json.dumps(stages[stage], default=str), extra={"stage": stage})
        progress.done()

    began = begin("extract")
    extracted = extract(ExtractConfig(source=config.source))
    end("extract", began, extracted)

    options = run_options(config, mapping.file_checksums, survivors)
    resumable = None
    if "migration_runs" in inspect(engine).get_table_names():
        resumable = ledger.find_resumable_run(engine, extracted.input_fingerprint, options)
    run_id, as_of = provisional_id, config.as_of or started_at
    if resumable:
        run_id, as_of = resumable[0], resumable[1]
        log.warning("resuming unfinished run %s (same input and options)", run_id)
        log_handler.run_id = run_id

    with ledger.target_lock(engine, run_id):
        began = begin("validate")
        rule_engine = RuleEngine()
        validated = validate(extracted.frames, ValidateConfig(
            as_of=as_of, mapping=mapping, native_logins=native_logins(engine), survivors=survivors),
            engine=rule_engine)
        end("validate", began, validated)

        began = begin("transform")
        # The transform takes the extract's frames and the decisions over, and lets each go once
        # used (0.55 GB at a million users); the rest of the run needs only the input's fingerprint
        # and the counts (the reports read the rule engine's results).
        counts, fingerprint = validated.counts, extracted.input_fingerprint
        handed_over = TransformHandover(extracted.frames, validated.decisions)
        del extracted, validated
        transformed = transform(handed_over)
        del handed_over
        end("transform", began, transformed)

        # The stewards' reports come from the one evaluation, and exist even when the gate stops the run.
        register = transformed.target.exceptions
        gate = evaluate_gate(counts, register, gate_config)
        stages["gate"] = {**gate.to_dict(), "overridden": config.no_gate}
        reports_inputs = (config, rule_engine, register, counts, gate)
        if not gate.passed and not config.no_gate:
            _write_stewards_reports(*reports_inputs)
            log.error("validation gate: %s", gate.message())
            gate.raise_if_failed()
        if not gate.passed:
            log.warning("validation gate overridden with --no-gate: %s", gate.message())

        # From here on the target is written: schema, ledger, then the load in one transaction. The
        # stewards' reports are written meanwhile in a second thread, from when the frames are
        # staged: the set-based SQL then mostly waits on the database, while the staging's Python
        # would have shared the interpreter lock with them (at a million users into PostgreSQL, the
        # database worked alone for 48 s while the reports and the staging took 20 s together).
        # The load commits only once they are written, so nothing is loaded without them.
        # The same thread then reads the legacy source afresh for the reconciliation (it depends on
        # nothing the run writes), on the core the database leaves: at a million users into
        # PostgreSQL the reconciliation took 24 s instead of 33.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="beside-the-load") as beside:
            reports = _Started(partial(beside.submit, _write_stewards_reports, *reports_inputs))
            legacy = _Started(partial(beside.submit, _read_legacy_side, config))
            # The reports' inputs are the job's alone now: they go once the reports are written.
            del register, rule_engine, reports_inputs

            def after_staging() -> None:
                reports.start()
                legacy.start()  # queued behind the reports

            # The load lets go of the frames once staged: the reports and the re-read then have their memory.
            handover = Handover(transformed.target)
            del transformed
            began = begin("load")
            try:
                loaded = load_with_ledger(
                    engine, handover, run_id=run_id, as_of=as_of, source=_display_source(config.source),
                    fingerprint=fingerprint, options=options, started_at=started_at,
                    out_dir=str(config.out_dir),
                    earlier_stages={stage: (*timings[stage], stages[stage]) for stage in timings},
                    gate=stages["gate"], fk_checks=config.fk_checks, after_staging=after_staging,
                    before_commit=reports.result,
                )
            except BaseException:
                legacy.cancel()  # no reconciliation follows: its reading, if not begun, is not needed
                raise
            finally:
                reports.start()  # a load that failed before its staging was done: the stewards still get them
            end("load", began, loaded)

            del handover, loaded
            collect_between_stages()

            began = begin("reconcile")
            report = _reconcile(config, run_id, as_of, started_at, legacy.start())
            verdict = str(report.verdict)
            end("reconcile", began, _Verdict(verdict))
            ledger.record_stage(engine, run_id=run_id, stage="reconcile", status="succeeded", started_at=began,
                                ended_at=timings["reconcile"][1], fingerprint=fingerprint,
                                result=stages["reconcile"])
            ledger.finish_run(engine, run_id, "succeeded", paris_now())

    exit_code = EXIT_RECONCILED if verdict in RECONCILED_VERDICTS else EXIT_NOT_RECONCILED
    result = RunResult(run_id=run_id, as_of=as_of, resumed=resumable is not None, verdict=verdict,
                       exit_code=exit_code, out_dir=str(config.out_dir), stages=stages,
                       elapsed_seconds=round(time.perf_counter() - clock, 3))
    return result, report.input_checksums()


def _write_stewards_reports(config: RunConfig, rule_engine: Any, register: Any, counts: Any, gate: Any) -> None:
    """Data Docs and the exceptions workbook, logged as the run's "reports" stage."""
    from reports.exceptions_workbook import offending_values_from, write_exceptions_workbook
    from validation.data_docs import write_data_docs

    log.info("stage reports started", extra={"stage": "reports"})
    clock = time.perf_counter()
    write_data_docs(rule_engine, config.out_dir, register=register, counts=counts, gate=gate,
                    show_personal_data=config.show_personal_data)
    write_exceptions_workbook(register, config.out_dir, offending_values=offending_values_from(rule_engine.results))
    log.info("stage reports done: %.3f s", time.perf_counter() - clock, extra={"stage": "reports"})


class _Started:
    """A job submitted the first time it is started or its result asked for, once only."""

    def __init__(self, submit: Callable[[], Future[Any]]) -> None:
        self._submit: Callable[[], Future[Any]] | None = submit
        self._future: Future[Any] | None = None

    def start(self) -> Future[Any]:
        if self._future is None and self._submit is not None:
            self._future, self._submit = self._submit(), None  # nor the job's arguments, once it has run
        assert self._future is not None  # noqa: S101 (one of the two is always set)
        return self._future

    def result(self) -> Any:
        return self.start().result()

    def cancel(self) -> None:
        """Never started from now on; dropped if waiting for its turn."""
        self._submit = None
        if self._future is not None:
            self._future.cancel()


def load_with_ledger(
    engine: Engine, target: TargetFrames | Handover, *, run_id: str, as_of: datetime, source: str, fingerprint: str,
    options: dict[str, Any], started_at: datetime, out_dir: str,
    earlier_stages: dict[str, tuple[datetime, datetime, dict[str, Any]]], gate: dict[str, Any] | None = None,
    fk_checks: str = "auto", after_staging: Callable[[], object] | None = None,
    before_commit: Callable[[], object] | None = None,
) -> Any:
    """Creates the schema if needed, records the run and its earlier stages, then loads.

    The ledger rows are committed before the load starts, so that a run killed during the
    load is found unfinished (and resumed) by the next run of the same input.
    """
    from pipelines.load import LoadConfig, load
    from pipelines.target_setup import init_target

    init_target(engine)
    with engine.begin() as conn:
        ledger.record_run(conn, run_id=run_id, as_of=as_of, source=source, fingerprint=fingerprint,
                          options=options, started_at=started_at, out_dir=out_dir)
        for stage, (stage_began, stage_ended, result) in earlier_stages.items():
            ledger.record_stage(conn, run_id=run_id, stage=stage, status="succeeded", started_at=stage_began,
                                ended_at=stage_ended, fingerprint=fingerprint, result=result)
        if gate is not None:  # the gate's verdict, and whether --no-gate overrode it
            ledger.record_stage(conn, run_id=run_id, stage="gate", status="passed" if gate.get("passed") else
                                ("overridden" if gate.get("overridden") else "failed"), started_at=started_at,
                                ended_at=started_at, fingerprint=fingerprint, result=gate)
    began = paris_now()
    ledger.record_stage(engine, run_id=run_id, stage="load", status="running", started_at=began,
                        ended_at=None, fingerprint=fingerprint, result=None)
    try:
        loaded = load(engine, target, LoadConfig(run_id=run_id, fk_checks=fk_checks), after_staging=after_staging,
                      before_commit=before_commit)
    except BaseException:
        ledger.record_stage(engine, run_id=run_id, stage="load", status="failed", started_at=began,
                            ended_at=paris_now(), fingerprint=fingerprint, result=None)
        ledger.finish_run(engine, run_id, "failed", paris_now())
        raise
    ledger.record_stage(engine, run_id=run_id, stage="load", status="succeeded", started_at=began,
                        ended_at=paris_now(), fingerprint=fingerprint, result=loaded.to_dict())
    return loaded


def load_stage_into_target(target_url: str, out_dir: Path, fk_checks: str = "auto") -> Any:
    """`efp-migrate load`: the transform output of a run folder into the target."""
    from pipelines.stage_store import load_context, load_stage

    context = load_context(out_dir)
    transformed = load_stage(out_dir, "transform", for_stage="load")
    engine = make_engine(target_url, what="--target")
    started_at = paris_now()
    run_id = context.get("run_id") or new_run_id(started_at)
    try:
        with ledger.target_lock(engine, run_id):
            return load_with_ledger(
                engine, transformed.target, run_id=run_id, as_of=datetime.fromisoformat(context["as_of"]),
                source=context["source"], fingerprint=context["fingerprint"],
                options={"stage_commands": True, "mappings_dir": context.get("mappings_dir")},
                started_at=started_at, out_dir=str(out_dir), earlier_stages={}, fk_checks=fk_checks,
            )
    finally:
        engine.dispose()


@dataclass(frozen=True)
class _Verdict:
    verdict: str

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict}


def _display_source(source: str) -> str:
    return mask_url(source) if "://" in source else source


def _read_legacy_side(config: RunConfig) -> Any:
    """The reconciliation's own reading of the legacy source (not the extract's frames)."""
    from reports.reconciliation import read_legacy_side

    # It follows the stewards' reports in their thread: the rule engine's results they have just
    # let go of hold cycles, which the run's paused collector would keep until the load's end,
    # under this reading's peak (at 500,000 users 1.7 million blocks, 116 MB of the process).
    collect_between_stages()
    return read_legacy_side(config.source, config.show_personal_data)


def _reconcile(config: RunConfig, run_id: str, as_of: datetime, started_at: datetime,
               legacy: Future[Any] | None = None) -> Any:
    """The independent reconciliation: reads the legacy source and the target afresh."""
    from reports.reconciliation import ReconcileConfig, reconcile
    from reports.render import write_reports

    report = reconcile(ReconcileConfig(
        source=config.source, target_url=config.target_url, as_of=as_of, out_dir=config.out_dir,
        run_id=run_id, mappings_dir=config.mappings_dir, show_personal_data=config.show_personal_data,
        started_at=started_at, ended_at=paris_now(),
    ), legacy)
    write_reports(report, config.out_dir)
    return report
