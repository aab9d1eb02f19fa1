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

from pipelines.errors import MigrationError

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

    return wrapper  # type: ignore[return-value]


def echo_result(result: Any) -> None:
    click.echo(json.dumps(result.to_dict(), indent=2, ensure_ascii=False, default=str))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
@click.option("-v", "--verbose", count=True, help="More log output on stderr.")
@click.version_option(package_name="efp-migration")
def main(debug: bool, verbose: int) -> None:
    """Migrate Mes Démarches Emploi et Formation users and habilitations into EFP Connect."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")


@main.command("init-target")
@click.option("--target", "target_url", required=True, envvar="EFP_TARGET_URL", help="Target SQLAlchemy URL.")
@handle_errors
def init_target_command(target_url: str) -> None:
    """Create the EFP Connect schema in the target (idempotent)."""
    from pipelines.db import make_engine
    from pipelines.target_setup import init_target

    engine = make_engine(target_url, what="--target")
    echo_result(init_target(engine))
from pipelines import cli_run as _cli_run  # noqa: E402,F401  (registers run, status, rollback, demo)
