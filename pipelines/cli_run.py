"""The commands that move data: run, status, rollback, demo (registered on the `efp-migrate` group)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from pipelines.cli import AsOf, echo_result, handle_errors, main

_FK_CHECKS = click.option(
    "--fk-checks", type=click.Choice(["auto", "per-row", "set"]), default="auto", show_default=True,
    help="PostgreSQL: check the habilitations' foreign keys per row (readers never wait) or in one "
         "set-based query, and in a first wave build a table's indexes after its insert (faster; readers "
         "of accounts and habilitations wait until the load commits); auto = set from 100,000 new rows "
         "in a table.")


def _summary_table(result: dict[str, object]) -> str:
    lines = [f"run {result['run_id']}  as-of {result['as_of']}  verdict {result['verdict']}",
             f"{'stage':<10} {'seconds':>8}  result"]
    stages = result.get("stages")
    for stage, info in (stages.items() if isinstance(stages, dict) else ()):
        details = info if isinstance(info, dict) else {}
        seconds = details.get("elapsed_seconds", "")
        outcome = ""
        if stage == "gate":
            outcome = "passed" if details.get("passed") else ("overridden (--no-gate)" if details.get("overridden")
                                                              else "failed")
        elif stage == "validate":
            counts = details.get("counts", {})
            outcome = ", ".join(f"{entity} {c.get('migrated')}/{c.get('source')} migrated"
                                for entity, c in counts.items())
        elif stage == "reconcile":
            outcome = str(details.get("verdict", ""))
        lines.append(f"{stage:<10} {seconds!s:>8}  {outcome}")
    out_dir = Path(str(result["out_dir"]))
    lines.append(f"reports in {out_dir}:")
    for name, what in (("reconciliation.html", "auditors' reconciliation"),
                       ("validation/index.html", "stewards' validation summary and Data Docs"),
                       ("exceptions.csv", "exception workbook (Excel/LibreOffice)"),
                       ("manifest.json", "evidence manifest (efp-migrate verify)")):
        lines.append(f"  {out_dir / name}  ({what})")
    return "\n".join(lines)


@main.command("run")
@click.option("--source", required=True, envvar="EFP_SOURCE", help="Legacy SQLAlchemy URL or CSV folder.")
@click.option("--target", "target_url", required=True, envvar="EFP_TARGET_URL", help="Target SQLAlchemy URL.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Run folder: reports, log, manifest.")
@click.option("--as-of", "as_of", type=AsOf(), default=None, help="Instant at which access is judged (default: now).")
@click.option("--mappings", "mappings_dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="Mapping folder (default: the shipped one).")
@click.option("--resolutions", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Stewards' decisions (CSV): survivors of duplicate-login groups.")
@click.option("--gate", "gate_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Validation thresholds (TOML) overriding the shipped defaults.")
@click.option("--no-gate", is_flag=True, help="Load even if a validation threshold is exceeded (recorded).")
@click.option("--show-personal-data", is_flag=True, help="Show emails and names in the reports.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON instead of a table.")
@_FK_CHECKS
@handle_errors
def run_command(source: str, target_url: str, out_dir: Path, as_of: object, mappings_dir: str | None,
                resolutions: str | None, gate_file: str | None, no_gate: bool, show_personal_data: bool,
                as_json: bool, fk_checks: str) -> None:
    """Run every stage: extract, validate, transform, load, reconcile.

    Exit status: 0 reconciled (with or without exceptions), 1 not reconciled, 2 bad usage,
    configuration or input, 3 a validation gate stopped the run before anything was loaded.
    """
    from pipelines.run import RunConfig, run_migration

    result = run_migration(RunConfig(source=source, target_url=target_url, out_dir=out_dir,
                                     as_of=as_of,  # type: ignore[arg-type]
                                     mappings_dir=mappings_dir, resolutions=resolutions,
                                     gate_file=gate_file, no_gate=no_gate,
                                     show_personal_data=show_personal_data, fk_checks=fk_checks))
    if as_json:
        echo_result(result)
    else:
        click.echo(_summary_table(result.to_dict()))
    click.get_current_context().exit(result.exit_code)


@main.command("status")
@click.option("--target", "target_url", required=True, envvar="EFP_TARGET_URL")
@handle_errors
def status_command(target_url: str) -> None:
    """List the runs recorded in the target's ledger and their stages."""
    from pipelines.db import make_engine
    from pipelines.ledger import list_runs
    from pipelines.target_setup import ledger_exists

    engine = make_engine(target_url, what="--target")
    try:
        runs = list_runs(engine) if ledger_exists(engine) else []
    finally:
        engine.dispose()
    click.echo(json.dumps(runs, indent=2, default=str, ensure_ascii=False))


@main.command("rollback")
@click.option("--target", "target_url", required=True, envvar="EFP_TARGET_URL")
@click.option("--run", "run_id", required=True, help="The run whose writes are removed.")
@click.option("--force", is_flag=True, help="Roll back even if accounts of the run have since been used.")
@handle_errors
def rollback_command(target_url: str, run_id: str, force: bool) -> None:
    """Remove what a run created (rows created by it, its exception register)."""
    from pipelines.db import make_engine
    from pipelines.rollback import rollback

    engine = make_engine(target_url, what="--target")
    try:
        echo_result(rollback(engine, run_id, force=force))
    finally:
        engine.dispose()


@main.command("demo")
@click.option("--users", default=10_000, show_default=True, help="Size of the generated legacy export.")
@click.option("--folder", type=click.Path(file_okay=False, path_type=Path), default=Path("demo"),
              show_default=True)
@handle_errors
def demo_command(users: int, folder: Path) -> None:
    """Generate a legacy export and migrate it into an embedded SQLite target under ./demo."""
    from pipelines.demo import run_demo

    result = run_demo(folder, users)
    click.echo(_summary_table(result.to_dict()))
    click.echo(f"legacy source: {folder / 'legacy.sqlite'}\ntarget: {folder / 'target.sqlite'}")
    click.get_current_context().exit(result.exit_code)


# --- each stage as its own command, over one run folder ---------------------------------------

_OUT = click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
                    help="Run folder holding the stages' outputs.")


@main.command("extract")
@click.option("--source", required=True, envvar="EFP_SOURCE", help="Legacy SQLAlchemy URL or CSV folder.")
@_OUT
@handle_errors
def extract_command(source: str, out_dir: Path) -> None:
    """Stage 1: read the legacy extract (never the password hash)."""
    from pipelines.extract import ExtractConfig, extract
    from pipelines.stage_store import save_stage

    result = extract(ExtractConfig(source=source))
    out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    save_stage(out_dir, "extract", result)
    echo_result(result)


@main.command("validate")
@_OUT
@click.option("--as-of", "as_of", type=AsOf(), default=None, help="Instant at which access is judged (default: now).")
@click.option("--mappings", "mappings_dir", type=click.Path(exists=True, file_okay=False), default=None)
@click.option("--resolutions", type=click.Path(exists=True, dir_okay=False), default=None)
@click.option("--target", "target_url", default=None, envvar="EFP_TARGET_URL",
              help="Target to read native logins from (LOGIN_TAKEN); read only.")
@handle_errors
def validate_command(out_dir: Path, as_of: object, mappings_dir: str | None, resolutions: str | None,
                     target_url: str | None) -> None:
    """Stage 2: evaluate every rule with Great Expectations and decide each record's outcome."""
    from datetime import datetime

    from mappings.mapping import load_mapping
    from pipelines.db import make_engine
    from pipelines.run import native_logins
    from pipelines.stage_store import load_stage, save_context, save_stage
    from pipelines.timeutil import paris_now
    from pipelines.validate import ValidateConfig, validate
    from validation.resolutions import read_resolutions

    mapping = load_mapping(mappings_dir)
    survivors = read_resolutions(resolutions) if resolutions else ()
    extracted = load_stage(out_dir, "extract", for_stage="validate")
    logins: tuple[str, ...] = ()
    if target_url:
        engine = make_engine(target_url, what="--target")
        try:
            logins = native_logins(engine)
        finally:
            engine.dispose()
    instant = as_of if isinstance(as_of, datetime) else paris_now()
    result = validate(extracted.frames, ValidateConfig(as_of=instant, mapping=mapping, native_logins=logins,
                                                       survivors=survivors))
    save_context(out_dir, {"as_of": instant.isoformat(), "mappings_dir": mappings_dir, "resolutions": resolutions,
                           "fingerprint": extracted.input_fingerprint, "source": extracted.source_display})
    save_stage(out_dir, "validate", result)
    echo_result(result)


@main.command("transform")
@_OUT
@handle_errors
def transform_command(out_dir: Path) -> None:
    """Stage 3: turn the decided outcomes into EFP Connect rows and the exception register."""
    from pipelines.stage_store import load_stage, save_stage
    from pipelines.transform import transform

    extracted = load_stage(out_dir, "extract", for_stage="transform")
    validated = load_stage(out_dir, "validate", for_stage="transform")
    result = transform(extracted.frames, validated)
    save_stage(out_dir, "transform", result)
    echo_result(result)


@main.command("load")
@click.option("--target", "target_url", required=True, envvar="EFP_TARGET_URL", help="Target SQLAlchemy URL.")
@_OUT
@_FK_CHECKS
@handle_errors
def load_command(target_url: str, out_dir: Path, fk_checks: str) -> None:
    """Stage 4: keyed upserts into the target, in one transaction, recorded in the ledger."""
    from pipelines.run import load_stage_into_target

    echo_result(load_stage_into_target(target_url, out_dir, fk_checks))
