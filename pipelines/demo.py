"""`efp-migrate demo`: a whole migration on generated data, into an embedded SQLite target."""

from __future__ import annotations

from pathlib import Path

from pipelines.run import RunConfig, RunResult, paris_now, run_migration


def run_demo(folder: Path, users: int) -> RunResult:
    from pipelines.generator import GenerateConfig, generate_legacy

    folder.mkdir(parents=True, exist_ok=True)
    legacy = folder / "legacy.sqlite"
    target = folder / "target.sqlite"
    for stale in (legacy, target):
        stale.unlink(missing_ok=True)
    generate_legacy(GenerateConfig(users=users, seed=2024, out=f"sqlite:///{legacy}"))
    started = paris_now()
    return run_migration(RunConfig(source=f"sqlite:///{legacy}", target_url=f"sqlite:///{target}",
                                   out_dir=folder / f"run-{started:%Y%m%dT%H%M%S}"))
