"""`efp-migrate run`: extract -> validate -> transform -> load -> reconcile, with a ledger,
a lock, a run folder, resume after a crash and one exit status."""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, inspect, select

from pipelines import ledger
from pipelines.db import make_engine, mask_url
from pipelines.errors import EXIT_NOT_RECONCILED, EXIT_RECONCILED
from pipelines.runlog import StageProgress, run_log
from pipelines.target_schema import ORIGIN_MIGRATION, accounts

log = logging.getLogger(__name__)
PARIS = ZoneInfo("Europe/Paris")
STAGES = ("extract", "validate", "transform", "load", "reconcile")
RECONCILED_VERDICTS = ("RECONCILED", "RECONCILED_WITH_EXCEPTIONS")


def paris_now() -> datetime:
    """Now, as naive Europe/Paris wall time: the clock of the legacy data and of the target."""
    return datetime.now(PARIS).replace(tzinfo=None, microsecond=0)


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
    progress: bool | None = None


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
        "as_of": config.as_of.isoformat() if config.as_of else None,
        "mappings": mapping_checksums,
        "resolutions": hashlib.sha256(json.dumps(survivors).encode()).hexdigest() if survivors else None,
    }


def run_migration(config: RunConfig) -> RunResult:
    # Configuration is checked before any data is read or any database touched.
    from mappings.mapping import load_mapping
    from validation.resolutions import read_resolutions

    mapping = load_mapping(config.mappings_dir)
    survivors = read_resolutions(config.resolutions) if config.resolutions else ()
    engine = make_engine(config.target_url, what="--target")
    started_at = paris_now()
    clock = time.perf_counter()
    out_dir = config.out_dir
    out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    out_dir.chmod(0o700)
    provisional_id = new_run_id(started_at)
    stages: dict[str, dict[str, Any]] = {}
    progress = StageProgress(STAGES, enabled=config.progress)
    try:
        with run_log(out_dir, provisional_id):
            return _run(config, engine, mapping, survivors, started_at, clock, provisional_id, stages, progress)
    finally:
        progress.close()
        engine.dispose()


def _run(config: RunConfig, engine: Engine, mapping: Any, survivors: tuple[int, ...], started_at: datetime,
         clock: float, provisional_id: str, stages: dict[str, dict[str, Any]], progress: StageProgress) -> RunResult:
    from pipelines.extract import ExtractConfig, extract
    from pipelines.load import LoadConfig, load
    from pipelines.target_setup import init_target
    from pipelines.transform import transform
    from pipelines.validate import ValidateConfig, validate

    timings: dict[str, tuple[datetime, datetime]] = {}

    def begin(stage: str) -> datetime:
        progress.start(stage)
        log.info("stage %s started", stage, extra={"stage": stage})
        return paris_now()

    def end(stage: str, began: datetime, result: Any) -> None:
        stages[stage] = result.to_dict()
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

    with ledger.target_lock(engine, run_id):
        began = begin("validate")
        validated = validate(extracted.frames, ValidateConfig(
            as_of=as_of, mapping=mapping, native_logins=native_logins(engine), survivors=survivors))
        end("validate", began, validated)

        began = begin("transform")
        transformed = transform(extracted.frames, validated)
        end("transform", began, transformed)

        # From here on the target is written: schema, ledger, then the load in one transaction.
        init_target(engine)
        with engine.begin() as conn:
            ledger.record_run(conn, run_id=run_id, as_of=as_of, source=_display_source(config.source),
                              fingerprint=extracted.input_fingerprint, options=options, started_at=started_at,
                              out_dir=str(config.out_dir))
            for stage, (stage_began, stage_ended) in timings.items():
                ledger.record_stage(conn, run_id=run_id, stage=stage, status="succeeded", started_at=stage_began,
                                    ended_at=stage_ended, fingerprint=extracted.input_fingerprint,
                                    result=stages[stage])
        began = begin("load")
        ledger.record_stage(engine, run_id=run_id, stage="load", status="running", started_at=began,
                            ended_at=None, fingerprint=extracted.input_fingerprint, result=None)
        try:
            loaded = load(engine, transformed.target, LoadConfig(run_id=run_id))
        except BaseException:
            ledger.record_stage(engine, run_id=run_id, stage="load", status="failed", started_at=began,
                                ended_at=paris_now(), fingerprint=extracted.input_fingerprint, result=None)
            ledger.finish_run(engine, run_id, "failed", paris_now())
            raise
        end("load", began, loaded)
        ledger.record_stage(engine, run_id=run_id, stage="load", status="succeeded", started_at=began,
                            ended_at=timings["load"][1], fingerprint=extracted.input_fingerprint,
                            result=stages["load"])

        began = begin("reconcile")
        verdict = _reconcile(config, run_id, as_of, started_at)
        end("reconcile", began, _Verdict(verdict))
        ledger.record_stage(engine, run_id=run_id, stage="reconcile", status="succeeded", started_at=began,
                            ended_at=timings["reconcile"][1], fingerprint=extracted.input_fingerprint,
                            result=stages["reconcile"])
        ledger.finish_run(engine, run_id, "succeeded", paris_now())

    exit_code = EXIT_RECONCILED if verdict in RECONCILED_VERDICTS else EXIT_NOT_RECONCILED
    return RunResult(run_id=run_id, as_of=as_of, resumed=resumable is not None, verdict=verdict,
                     exit_code=exit_code, out_dir=str(config.out_dir), stages=stages,
                     elapsed_seconds=round(time.perf_counter() - clock, 3))


@dataclass(frozen=True)
class _Verdict:
    verdict: str

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict}


def _display_source(source: str) -> str:
    return mask_url(source) if "://" in source else source


def _reconcile(config: RunConfig, run_id: str, as_of: datetime, started_at: datetime) -> str:
    """The independent reconciliation: reads the legacy source and the target afresh."""
    from reports.reconciliation import ReconcileConfig, reconcile
    from reports.render import write_reports

    report = reconcile(ReconcileConfig(
        source=config.source, target_url=config.target_url, as_of=as_of, out_dir=config.out_dir,
        run_id=run_id, mappings_dir=config.mappings_dir, show_personal_data=config.show_personal_data,
        started_at=started_at, ended_at=paris_now(),
    ))
    write_reports(report, config.out_dir)
    return str(report.verdict)
