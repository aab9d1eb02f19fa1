"""`init-target` creates the EFP Connect schema, and running it twice leaves one schema."""

from __future__ import annotations

import warnings

from click.testing import CliRunner
from sqlalchemy import create_engine, exc, inspect, text

from pipelines.cli import main
from pipelines.target_schema import LEDGER_TABLES, TARGET_TABLES


def _schema_snapshot(url: str) -> dict[str, tuple]:
    engine = create_engine(url)
    inspector = inspect(engine)
    snapshot: dict[str, tuple] = {}
    # Expression indexes are not reflected by SQLAlchemy; read their names from the catalogue.
    index_sql = (
        "SELECT name FROM sqlite_master WHERE type = 'index'"
        if engine.dialect.name == "sqlite"
        else "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()"
    )
    with engine.connect() as conn:
        snapshot["__index_names__"] = tuple(sorted(r[0] for r in conn.execute(text(index_sql))))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", exc.SAWarning)
        for table in inspector.get_table_names():
            columns = tuple((c["name"], str(c["type"]), c["nullable"]) for c in inspector.get_columns(table))
            indexes = tuple(sorted((i["name"] or "", bool(i["unique"])) for i in inspector.get_indexes(table)))
            uniques = tuple(sorted(u["name"] or "" for u in inspector.get_unique_constraints(table)))
            snapshot[table] = (columns, indexes, uniques)
    engine.dispose()
    return snapshot


def test_init_target_twice_leaves_one_schema(target_url: str) -> None:
    runner = CliRunner()
    first = runner.invoke(main, ["init-target", "--target", target_url])
    assert first.exit_code == 0, first.output
    after_first = _schema_snapshot(target_url)
    second = runner.invoke(main, ["init-target", "--target", target_url])
    assert second.exit_code == 0, second.output
    assert '"created_tables": []' in second.output
    assert _schema_snapshot(target_url) == after_first
    expected = {t.name for t in (*TARGET_TABLES, *LEDGER_TABLES)} | {"__index_names__"}
    assert expected <= set(after_first)
    # The contract's required columns are all there.
    accounts_columns = {c[0] for c in after_first["accounts"][0]}
    assert {
        "account_id", "legacy_user_id", "login", "email", "last_name", "first_name", "phone",
        "account_type", "status", "must_reset_password", "password_hash", "created_at",
        "last_login_at", "origin",
    } <= accounts_columns
    assert "uq_entitlements_access" in after_first["__index_names__"]


def test_init_target_rejects_a_bad_url_with_status_2() -> None:
    result = CliRunner().invoke(main, ["init-target", "--target", "nonsense-without-scheme"])
    assert result.exit_code == 2
    assert "is not a database URL" in result.output
