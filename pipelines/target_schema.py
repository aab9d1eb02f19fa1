"""The EFP Connect store (target), as SQLAlchemy tables, plus the migration's own bookkeeping.

The required tables and columns are those of `efp-connect-target.md`. The migration adds
bookkeeping columns (`origin` everywhere, `created_by_run`/`written_by_run`) so that it can
tell its own rows from native ones: it never alters or deletes a row it did not write.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
)

target_metadata = MetaData()

ORIGIN_MIGRATION = "MIGRATION"
ORIGIN_NATIVE = "NATIVE"
_origin_check = f"origin IN ('{ORIGIN_MIGRATION}', '{ORIGIN_NATIVE}')"

accounts = Table(
    "accounts",
    target_metadata,
    Column("account_id", Integer, primary_key=True, autoincrement=True),
    Column("legacy_user_id", BigInteger, unique=True, nullable=True),
    Column("login", Text, nullable=False, unique=True),
    Column("email", Text, nullable=False),
    Column("last_name", Text, nullable=False),
    Column("first_name", Text, nullable=False),
    Column("phone", Text),
    Column("account_type", String(8), nullable=False),
    Column("status", String(16), nullable=False),
    Column("must_reset_password", Boolean, nullable=False),
    Column("password_hash", Text),
    Column("created_at", DateTime, nullable=False),
    Column("last_login_at", DateTime),
    Column("origin", String(16), nullable=False),
    Column("created_by_run", Text),
    Column("written_by_run", Text),
    CheckConstraint("account_type IN ('PRO', 'AGENT')", name="ck_accounts_type"),
    CheckConstraint("status IN ('ACTIVE', 'PENDING', 'LOCKED')", name="ck_accounts_status"),
    CheckConstraint(_origin_check, name="ck_accounts_origin"),
)

establishments = Table(
    "establishments",
    target_metadata,
    Column("siret", String(14), primary_key=True),
    Column("siren", String(9), nullable=False),
    Column("name", Text),
    Column("address", Text),
    Column("postal_code", Text),
    Column("city", Text),
    Column("closed_on", Date),
    Column("origin", String(16), nullable=False, server_default=ORIGIN_NATIVE),
    Column("created_by_run", Text),
    Column("written_by_run", Text),
    CheckConstraint(_origin_check, name="ck_establishments_origin"),
)

applications = Table(
    "applications",
    target_metadata,
    Column("code", String(32), primary_key=True),
    Column("name", Text, nullable=False),
    Column("legacy_code", Text),
    Column("origin", String(16), nullable=False, server_default=ORIGIN_NATIVE),
    Column("created_by_run", Text),
    Column("written_by_run", Text),
    CheckConstraint(_origin_check, name="ck_applications_origin"),
)

entitlements = Table(
    "entitlements",
    target_metadata,
    Column("entitlement_id", Integer, primary_key=True, autoincrement=True),
    Column("account_id", Integer, ForeignKey("accounts.account_id"), nullable=False),
    Column("application_code", String(32), ForeignKey("applications.code"), nullable=False),
    Column("siret", String(14), ForeignKey("establishments.siret"), nullable=True),
    Column("role", Text, nullable=False),
    Column("is_access_manager", Boolean, nullable=False),
    Column("valid_from", DateTime, nullable=False),
    Column("valid_until", DateTime),
    Column("delegated_by_legacy_user_id", BigInteger),
    Column("legacy_habilitation_id", BigInteger, unique=True, nullable=True),
    Column("origin", String(16), nullable=False, server_default=ORIGIN_NATIVE),
    Column("created_by_run", Text),
    Column("written_by_run", Text),
    CheckConstraint(_origin_check, name="ck_entitlements_origin"),
)
# One row per (account, application, SIRET, role): SIRET is NULL for agents' access, and NULLs
# are distinct in a plain unique constraint on both engines, hence the expression.
Index(
    "uq_entitlements_access",
    entitlements.c.account_id,
    entitlements.c.application_code,
    func.coalesce(entitlements.c.siret, ""),
    entitlements.c.role,
    unique=True,
)

access_requests = Table(
    "access_requests",
    target_metadata,
    Column("request_id", Integer, primary_key=True, autoincrement=True),
    Column("account_id", Integer, ForeignKey("accounts.account_id"), nullable=False),
    Column("application_code", String(32), ForeignKey("applications.code"), nullable=False),
    Column("siret", String(14), ForeignKey("establishments.siret"), nullable=True),
    Column("role", Text),
    Column("requested_at", DateTime, nullable=False),
    Column("last_reminder_at", DateTime),
    Column("legacy_habilitation_id", BigInteger, unique=True, nullable=True),
    Column("origin", String(16), nullable=False, server_default=ORIGIN_NATIVE),
    Column("created_by_run", Text),
    Column("written_by_run", Text),
    CheckConstraint(_origin_check, name="ck_access_requests_origin"),
)

migration_exceptions = Table(
    "migration_exceptions",
    target_metadata,
    Column("exception_id", Integer, primary_key=True, autoincrement=True),
    # No index of its own: the unique constraint's index below leads with run_id.
    Column("run_id", Text, nullable=False),
    Column("entity", String(16), nullable=False),
    Column("legacy_key", Text, nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("reason_code", String(64), nullable=False),
    Column("detail", Text, nullable=False),
    Column("merged_into", Text),
    CheckConstraint(
        "entity IN ('user', 'establishment', 'application', 'habilitation')",
        name="ck_exceptions_entity",
    ),
    CheckConstraint(
        "outcome IN ('excluded', 'rejected', 'merged', 'corrected')", name="ck_exceptions_outcome"
    ),
    UniqueConstraint("run_id", "entity", "legacy_key", "reason_code", name="uq_exceptions_record_reason"),
)

# --- the migration's own bookkeeping -------------------------------------------------------

migration_runs = Table(
    "migration_runs",
    target_metadata,
    Column("run_id", Text, primary_key=True),
    Column("as_of", DateTime, nullable=False),
    Column("source", Text, nullable=False),  # masked: never a password
    Column("input_fingerprint", Text),
    Column("options", Text, nullable=False),  # JSON
    Column("status", String(16), nullable=False),
    Column("started_at", DateTime, nullable=False),
    Column("ended_at", DateTime),
    Column("out_dir", Text),
)

migration_run_stages = Table(
    "migration_run_stages",
    target_metadata,
    Column("run_id", Text, ForeignKey("migration_runs.run_id"), primary_key=True),
    Column("stage", String(16), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("started_at", DateTime, nullable=False),
    Column("ended_at", DateTime),
    Column("input_fingerprint", Text),
    Column("result", Text),  # JSON of the stage's frozen result
)

# One row per target while a run writes it: who holds it, from which process and session.
migration_lock = Table(
    "migration_lock",
    target_metadata,
    Column("lock_name", String(32), primary_key=True),
    Column("run_id", Text, nullable=False),
    Column("hostname", Text, nullable=False),
    Column("pid", Integer, nullable=False),
    Column("backend_pid", Integer),
    Column("acquired_at", DateTime, nullable=False),
)

TARGET_TABLES: tuple[Table, ...] = (
    accounts,
    establishments,
    applications,
    entitlements,
    access_requests,
    migration_exceptions,
)
LEDGER_TABLES: tuple[Table, ...] = (migration_runs, migration_run_stages, migration_lock)
