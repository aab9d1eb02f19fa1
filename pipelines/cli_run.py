"""The commands that move data: run, status, rollback, demo (registered on the `efp-migrate` group)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from pipelines.cli import echo_result, handle_errors, main


class AsOf(click.ParamType):
    name = "ISO-8601"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> object:
        from datetime import datetime

        if isinstance(value, datetime):
            return value
        from pipelines.timeutil import parse_as_of

        try:
            return parse_as_of(str(value))
        except ValueError as exc:
            self.fail(f"{value!r} is not an ISO-8601 instant ({exc})", param, ctx)


def _summary_table(result: dict[str, object]) -> str:
    lines = [f"run {result['run_id']}  as-of {result['as_of']}  verdict {result['verdict']}",
             f"{'stage':<10} {'seconds':>8}"]
    stages = result.get("stages") or {}
    assert isinstance(stages, dict)
    for stage, info in stages.items():
        seconds = info.get("elapsed_seconds", "") if isinstance(info, dict) else ""
        lines.append(f"{stage:<10} {seconds!s:>8}")
    lines.append(f"reports in {result['out_dir']}")
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
@click.option("--show-personal-data", is_flag=True, help="Show emails and names in the reports.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON instead of a table.")
@handle_errors
def run_command(source: str, target_url: str, out_dir: Path, as_of: object, mappings_dir: str | None,
                resolutions: str | None, show_personal_data: bool, as_json: bool) -> None:
    """Run every stage: extract, validate, transform, load, reconcile.

    Exit status: 0 reconciled (with or without exceptions), 1 not reconciled, 2 bad usage,
    configuration or input, 3 a validation gate stopped the run before anything was loaded.
    """
    from pipelines.run import RunConfig, run_migration

    result = run_migration(RunConfig(source=source, target_url=target_url, out_dir=out_dir,
                                     as_of=as_of,  # type: ignore[arg-type]
                                     mappings_dir=mappings_dir, resolutions=resolutions,
                                     show_personal_data=show_personal_data))
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
