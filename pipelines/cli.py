"""`efp-migrate`: a thin command line. Commands parse, check their arguments, call a stage
function and print its result. Heavy imports (pandas, Great Expectations) happen inside the
commands so that `efp-migrate --help` stays instant."""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from pipelines.errors import EXIT_BAD_INPUT, MigrationError
from pipelines.memory import use_returning_arrow_pool, use_returning_malloc

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger(__name__)


def handle_errors(func: F) -> F:
    """Maps the tool's own errors to their exit status and a one-line message; --debug re-raises."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        try:
            return func(*args, **kwargs)
        except MigrationError as exc:
            if ctx.find_root().params.get("debug"):
                raise
            from pipelines.db import mask_text

            click.echo(f"error: {mask_text(str(exc))}", err=True)
            ctx.exit(exc.exit_code)
        except Exception as exc:
            # A database that goes away mid-run: one masked line, not a traceback (--debug shows it).
            from sqlalchemy.exc import OperationalError

            if not isinstance(exc, OperationalError) or ctx.find_root().params.get("debug"):
                raise
            from pipelines.db import mask_text

            first_line = str(exc.orig or exc).strip().splitlines()[0]
            click.echo(f"error: database unavailable: {mask_text(first_line)} (nothing was committed "
                       "by the failed step; rerun to resume)", err=True)
            ctx.exit(EXIT_BAD_INPUT)

    return wrapper  # type: ignore[return-value]


def echo_result(result: Any) -> None:
    click.echo(json.dumps(result.to_dict(), indent=2, ensure_ascii=False, default=str))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
@click.option("-v", "--verbose", count=True, help="More log output on stderr.")
@click.version_option(package_name="efp-migration")
def main(debug: bool, verbose: int) -> None:
    """Migrate Mes Démarches Emploi et Formation users and habilitations into EFP Connect."""
    use_returning_arrow_pool()
    use_returning_malloc()
    level = logging.WARNING - 10 * min(verbose, 2)
    root = logging.getLogger()
    handler = next((h for h in root.handlers if isinstance(h, _StderrHandler)), None)
    if handler is None:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    # A run raises the root logger to INFO for its JSON-lines log; the terminal keeps this level.
    handler.setLevel(level)
    if root.level == logging.NOTSET or root.level > level:
        root.setLevel(level)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is at the time (click's test runner swaps it per call)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        from pipelines.db import mask_text

        record.msg = mask_text(str(record.msg))
        super().emit(record)


@main.command("init-target")
@click.option("--target", "target_url", required=True, envvar="EFP_TARGET_URL", help="Target SQLAlchemy URL.")
@handle_errors
def init_target_command(target_url: str) -> None:
    """Create the EFP Connect schema in the target (idempotent)."""
    from pipelines.db import make_engine
    from pipelines.target_setup import init_target

    engine = make_engine(target_url, what="--target")
    echo_result(init_target(engine))


@main.command("generate-legacy")
@click.option("--users", type=click.IntRange(min=1), required=True, help="Number of legacy users.")
@click.option("--seed", type=click.IntRange(min=0), required=True, help="Random seed: same seed, same files.")
@click.option("--out", required=True, help="A SQLAlchemy URL (tables replaced) or a folder for CSV files.")
@click.option("--csv-encoding", type=click.Choice(["utf-8", "utf-8-sig", "cp1252"]), default="utf-8",
              show_default=True, help="Encoding of the CSV files.")
@click.option("--csv-delimiter", type=click.Choice([";", ","]), default=";", show_default=True,
              help="Field delimiter of the CSV files.")
@click.option("--date-style", type=click.Choice(["iso", "french"]), default="iso", show_default=True,
              help="iso: 2023-04-05 10:20:00 and true/false; french: 05/04/2023 10:20:00 and O/N.")
@handle_errors
def generate_legacy_command(*, users: int, seed: int, out: str, csv_encoding: str, csv_delimiter: str,
                            date_style: str) -> None:
    """Generate a realistic legacy export, with every known defect planted, into a database or CSV folder."""
    from pipelines.generator import GenerateConfig, generate_legacy

    config = GenerateConfig(users=users, seed=seed, out=out, csv_encoding=csv_encoding,  # type: ignore[arg-type]
                            csv_delimiter=csv_delimiter, date_style=date_style)  # type: ignore[arg-type]
    echo_result(generate_legacy(config))


class AsOf(click.ParamType):
    """An ISO-8601 instant; without an offset it is Europe/Paris wall time (the legacy's clock)."""

    name = "ISO-8601"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> object:
        from datetime import datetime

        if isinstance(value, datetime):
            return value
        from pipelines.timeutil import parse_as_of

        try:
            return parse_as_of(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


@main.command("reconcile")
@click.option("--source", required=True, envvar="EFP_SOURCE", help="Legacy SQLAlchemy URL or CSV folder.")
@click.option("--target", "target_url", required=True, envvar="EFP_TARGET_URL", help="Target SQLAlchemy URL.")
@click.option("--as-of", "as_of", required=True, type=AsOf(),
              help="Instant at which access is judged: ISO-8601; without an offset, Europe/Paris time.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder for reconciliation.json/.html/_by_application.csv and manifest.json.")
@click.option("--run", "run_id", default=None,
              help="Run whose exception register explains differences (default: the latest run).")
@click.option("--mappings", "mappings_dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="Mapping folder (default: the shipped one).")
@click.option("--show-personal-data", is_flag=True, help="Show emails and names in the reports.")
@handle_errors
def reconcile_command(*, source: str, target_url: str, as_of: Any, out_dir: str, run_id: str | None,
                      mappings_dir: str | None, show_personal_data: bool) -> None:
    """Reconcile legacy access with EFP Connect access, reading both afresh.

    Exit status: 0 RECONCILED or RECONCILED_WITH_EXCEPTIONS, 1 NOT_RECONCILED, 2 bad usage,
    configuration or input.
    """
    from pathlib import Path

    from pipelines.errors import EXIT_NOT_RECONCILED, EXIT_RECONCILED
    from pipelines.timeutil import paris_now
    from reports.manifest import file_sha256, write_manifest
    from reports.reconciliation import ReconcileConfig, reconcile
    from reports.render import write_reports

    folder = Path(out_dir)
    report = reconcile(ReconcileConfig(source=source, target_url=target_url, as_of=as_of, out_dir=folder,
                                       run_id=run_id, mappings_dir=mappings_dir,
                                       show_personal_data=show_personal_data, started_at=paris_now()))
    artefacts = write_reports(report, folder)
    manifest = write_manifest(folder, report.input_checksums())
    click.echo(json.dumps({
        "verdict": report.verdict,
        "verdict_reasons": list(report.verdict_reasons),
        "run_id": report.run_id,
        "as_of": report.header.as_of.isoformat(),
        "totals": report.totals(),
        "artefacts": {**artefacts.to_dict(), "manifest": str(manifest)},
        "manifest_sha256": file_sha256(manifest),
    }, indent=2, ensure_ascii=False))
    click.get_current_context().exit(EXIT_RECONCILED if report.passed else EXIT_NOT_RECONCILED)


@main.command("verify")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@handle_errors
def verify_command(run_dir: str) -> None:
    """Recompute the SHA-256 of every file of a run folder against its manifest.json.

    Exit status: 0 intact, 1 a file changed, disappeared or appeared, 2 no readable manifest.
    """
    from pathlib import Path

    from reports.manifest import verify_manifest

    result = verify_manifest(Path(run_dir))
    echo_result(result)
    for label, names in (("changed", result.changed), ("missing", result.missing), ("added", result.added)):
        for name in names:
            click.echo(f"{label}: {name}", err=True)
    click.get_current_context().exit(0 if result.intact else 1)


from pipelines import cli_run as _cli_run  # noqa: E402,F401  (registers run, the stage commands, status, rollback, demo)
