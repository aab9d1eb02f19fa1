"""Rolling back a run: remove the rows it created, refusing when its accounts have been used."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import Engine, and_, func, or_, select

from pipelines.errors import ConfigurationError, MigrationError
from pipelines.target_schema import (
    ORIGIN_MIGRATION,
    access_requests,
    accounts,
    applications,
    entitlements,
    establishments,
    migration_exceptions,
    migration_runs,
)


@dataclass(frozen=True)
class RollbackResult:
    run_id: str
    deleted: dict[str, int]
    forced: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def rollback(engine: Engine, run_id: str, *, force: bool = False) -> RollbackResult:
    """Deletes, in one transaction, what `run_id` created. Rows it only updated keep their values:
    re-running the previous snapshot restores them."""
    with engine.begin() as conn:
        if conn.execute(select(migration_runs.c.run_id).where(migration_runs.c.run_id == run_id)).first() is None:
            raise ConfigurationError(f"--run: no run {run_id!r} in the target's ledger (see `efp-migrate status`)")
        created = and_(accounts.c.created_by_run == run_id, accounts.c.origin == ORIGIN_MIGRATION)
        # An account someone has logged into since (password set, reset flag cleared) is in use.
        used = conn.execute(select(func.count()).select_from(accounts).where(
            created, or_(accounts.c.password_hash.is_not(None), accounts.c.must_reset_password.is_(False))
        )).scalar_one()
        if used and not force:
            raise MigrationError(
                f"run {run_id}: {used} account(s) it created have been used since (password set); "
                "rolling back would lock those people out. Use --force to roll back anyway."
            )
        deleted: dict[str, int] = {}
        account_ids = select(accounts.c.account_id).where(created)
        for table in (entitlements, access_requests):
            result = conn.execute(table.delete().where(or_(
                and_(table.c.created_by_run == run_id, table.c.origin == ORIGIN_MIGRATION),
                table.c.account_id.in_(account_ids),
            )))
            deleted[table.name] = result.rowcount
        deleted["accounts"] = conn.execute(accounts.delete().where(created)).rowcount
        for table, key in ((establishments, establishments.c.siret), (applications, applications.c.code)):
            referenced = select(entitlements.c.siret if table is establishments else entitlements.c.application_code)
            requested = select(access_requests.c.siret if table is establishments
                               else access_requests.c.application_code)
            deleted[table.name] = conn.execute(table.delete().where(
                table.c.created_by_run == run_id, table.c.origin == ORIGIN_MIGRATION,
                key.not_in(referenced.where(referenced.selected_columns[0].is_not(None))),
                key.not_in(requested.where(requested.selected_columns[0].is_not(None))),
            )).rowcount
        deleted["migration_exceptions"] = conn.execute(
            migration_exceptions.delete().where(migration_exceptions.c.run_id == run_id)).rowcount
        conn.execute(migration_runs.update().where(migration_runs.c.run_id == run_id).values(status="rolled_back"))
    return RollbackResult(run_id=run_id, deleted=deleted, forced=force)
