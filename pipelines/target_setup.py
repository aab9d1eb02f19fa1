"""Creating the EFP Connect schema in a target database (idempotent)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import Engine, inspect

from pipelines.target_schema import LEDGER_TABLES, TARGET_TABLES, target_metadata


@dataclass(frozen=True)
class InitTargetResult:
    created_tables: tuple[str, ...]
    existing_tables: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def init_target(engine: Engine) -> InitTargetResult:
    """Creates whatever table or index of the target schema is missing; touches nothing else."""
    wanted = [t.name for t in (*TARGET_TABLES, *LEDGER_TABLES)]
    before = set(inspect(engine).get_table_names())
    target_metadata.create_all(engine, checkfirst=True)
    return InitTargetResult(
        created_tables=tuple(name for name in wanted if name not in before),
        existing_tables=tuple(name for name in wanted if name in before),
    )


def ledger_exists(engine: Engine) -> bool:
    return "migration_runs" in inspect(engine).get_table_names()
