"""`efp-migrate demo`: a whole migration on generated data, into an embedded SQLite target."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from pipelines.run import RunConfig, RunResult, run_migration
from pipelines.timeutil import paris_now

CUT_OVER = datetime(2024, 11, 14)  # EFP Connect replaced the portal on 14 November 2024


def run_demo(folder: Path, users: int) -> RunResult:
    from pipelines.generator import GenerateConfig, generate_legacy

    folder.mkdir(parents=True, exist_ok=True)
    legacy = folder / "legacy.sqlite"
    target = folder / "target.sqlite"
    for stale in (legacy, target):
        stale.unlink(missing_ok=True)
    generate_legacy(GenerateConfig(users=users, seed=2024, out=f"sqlite:///{legacy}"))
    started = paris_now()
    # The generated export is dated around the cut-over; judging access at the cut-over keeps
    # the demo's outcomes the same whatever day it runs.
    return run_migration(RunConfig(source=f"sqlite:///{legacy}", target_url=f"sqlite:///{target}",
                                   out_dir=folder / f"run-{started:%Y%m%dT%H%M%S}", as_of=CUT_OVER))
