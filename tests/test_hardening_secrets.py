"""Secrets and personal data: what `efp-migrate run` writes never holds them.

- A database password in the target or source URL (PostgreSQL role `efp_user`, password
  `s3cr3t-pw`) is in no byte the command prints (success and failures), nor in the run folder,
  nor in any table of the target (ledger and stage results included). On the throwaway
  embedded server the test session makes the server *require* that password (scram) for this
  role, so that runs prove it is really used; on a server given by EFP_TEST_POSTGRES_URL the
  password is simply present in the URL.
- Credentials and locations may come from the environment: EFP_DB_PASSWORD (put into a URL
  without one), EFP_TARGET_URL, EFP_SOURCE.
- The legacy password hash (`$2b$12$SECRETHASHSECRETHASH` on every user row, CSV and database
  variants) is in no byte the run wrote: run folder, every table of the target, the SQLite
  file itself, the output.
- The run folder is its owner's only; the run log names legacy records by id, never by email
  or name.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url

from pipelines.cli import main
from pipelines.db import PASSWORD_ENV, make_engine, mask_text, mask_url, parse_url
from tests.legacy_builders import write_csv_folder, write_database
from tests.test_hardening_inputs import dump_target
from tests.test_outcomes import _tables

AS_OF = "2025-01-01T00:00:00"
PASSWORD = "s3cr3t-pw"
ROLE = "efp_user"
HASH_MARK = b"SECRETHASH"  # any part of "$2b$12$SECRETHASHSECRETHASH"


def run(source: str | Path, target: str, out: Path, *extra: str, verbose: bool = False) -> Result:
    return CliRunner().invoke(main, [*(["-vv"] if verbose else []), "run", "--source", str(source), "--target", target,
                                     "--out", str(out), "--as-of", AS_OF, *extra])


def every_file_byte(folder: Path) -> Iterator[tuple[Path, bytes]]:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            yield path, path.read_bytes()


def assert_nowhere(secret: bytes, *, output: str | bytes = b"", folders: tuple[Path, ...] = (),
                   targets: tuple[str, ...] = ()) -> None:
    printed = output.encode() if isinstance(output, str) else output
    assert secret not in printed, printed
    for folder in folders:
        for path, content in every_file_byte(folder):
            assert secret not in content, path
    for url in targets:
        for table, rows in dump_target(url).items():
            assert not any(secret.decode() in row for row in rows), table
        if url.startswith("sqlite:///"):
            assert secret not in Path(url.removeprefix("sqlite:///")).read_bytes()


# --- a PostgreSQL role with a password -----------------------------------------------------------


@dataclass(frozen=True)
class Role:
    server_url: str
    enforced: bool  # the server refuses this role without its password

    def database(self, *, password: str | None = PASSWORD) -> str:
        """A new database owned by the role, and the URL to it as the role."""
        from tests.conftest import _create_postgres_database

        url = make_url(_create_postgres_database(self.server_url))
        admin = create_engine(self.server_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{url.database}" OWNER TO {ROLE}'))
        admin.dispose()
        return URL.create(url.drivername, username=ROLE, password=password, host=url.host, port=url.port,
                          database=url.database, query=url.query).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def role(postgres_server_url: str) -> Iterator[Role]:
    admin = create_engine(postgres_server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        if not conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": ROLE}).first():
            conn.execute(text(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{PASSWORD}'"))
        hba = Path(conn.execute(text("SHOW hba_file")).scalar_one())
        original = hba.read_text() if os.access(hba, os.W_OK) else None
        if original is not None:  # our own throwaway server: this role must give its password
            hba.write_text(f"local all {ROLE} scram-sha-256\nhost all {ROLE} all scram-sha-256\n{original}")
            conn.execute(text("SELECT pg_reload_conf()"))
    admin.dispose()
    try:
        yield Role(postgres_server_url, enforced=original is not None)
    finally:
        if original is not None:
            hba.write_text(original)
            admin = create_engine(postgres_server_url, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text("SELECT pg_reload_conf()"))
            admin.dispose()


# --- database passwords ------------------------------------------------------------------------------


@pytest.mark.postgres
def test_database_passwords_are_never_printed_logged_reported_or_stored(role: Role, tmp_path: Path) -> None:
    """Source and target are PostgreSQL databases reached with the password in their URLs; a
    successful run, then failing ones (a broken source, an unreachable target, a wrong
    password for either), and `efp-migrate status`."""
    source, target = role.database(), role.database()
    write_database(_tables(), source)
    secret = PASSWORD.encode()
    assert secret in target.encode()

    success = run(source, target, tmp_path / "ok", verbose=True)
    assert success.exit_code == 0, success.output
    status = CliRunner().invoke(main, ["status", "--target", target])
    assert status.exit_code == 0, status.output
    # Non-vacuous: the URLs are recorded and shown, masked.
    assert f"{ROLE}:***@" in status.output
    assert any(f"{ROLE}:***@" in row for row in dump_target(target)['"public"."migration_runs"'])
    report = (tmp_path / "ok" / "reconciliation.json").read_text(encoding="utf-8")
    assert report.count(f"{ROLE}:***@") >= 2  # source and target in the report's header

    engine = create_engine(source)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE etablissements"))
    engine.dispose()
    bad_source = run(source, target, tmp_path / "bad-source")
    unreachable = make_url(target).set(host="127.0.0.1", port=1, query={}).render_as_string(hide_password=False)
    bad_target = run(tmp_path, unreachable, tmp_path / "bad-target")
    failures = [bad_source, bad_target]
    if role.enforced:
        wrong = make_url(target).set(password="wr0ng-pw").render_as_string(hide_password=False)
        failures.append(run(tmp_path, wrong, tmp_path / "wrong-password"))
        wrong_source = make_url(source).set(password="wr0ng-pw").render_as_string(hide_password=False)
        failures.append(run(wrong_source, target, tmp_path / "wrong-source-password"))
    for failure in failures:
        assert failure.exit_code == 2, failure.output
        assert failure.stderr.startswith("error: "), failure.stderr
        assert "***" in failure.stderr, failure.stderr  # the URL is named, masked
        assert b"wr0ng-pw" not in failure.output.encode()
    # The same failure in a real process with --debug (tracebacks shown) still masks it.
    debug = subprocess.run([sys.executable, "-m", "pipelines", "--debug", "run", "--source", source, "--target",
                            unreachable, "--out", str(tmp_path / "debug"), "--as-of", AS_OF],
                           capture_output=True, timeout=120, check=False)
    assert debug.returncode != 0

    assert_nowhere(secret, output=success.output + status.output + "".join(f.output for f in failures),
                   folders=(tmp_path,), targets=(target,))
    assert secret not in debug.stdout + debug.stderr, debug.stderr.decode()[-2000:]


@pytest.mark.postgres
def test_credentials_and_locations_from_the_environment(role: Role, tmp_path: Path) -> None:
    """EFP_TARGET_URL without a password, EFP_DB_PASSWORD, EFP_SOURCE; no --source/--target."""
    target = role.database(password=None)
    assert make_url(target).password is None
    folder = write_csv_folder(_tables(), tmp_path / "legacy")
    env = {"EFP_TARGET_URL": target, "EFP_SOURCE": str(folder), PASSWORD_ENV: PASSWORD}
    arguments = ["run", "--out", str(tmp_path / "run"), "--as-of", AS_OF]

    result = CliRunner(env=env).invoke(main, arguments)

    assert result.exit_code == 0, result.output
    with_password = make_url(target).set(password=PASSWORD).render_as_string(hide_password=False)
    assert_nowhere(PASSWORD.encode(), output=result.output, folders=(tmp_path,), targets=(with_password,))
    if role.enforced:  # the password really came from the environment
        refused = CliRunner(env={**env, PASSWORD_ENV: None}).invoke(main, [*arguments[:2], str(tmp_path / "no-pw"),
                                                                           *arguments[3:]])
        assert refused.exit_code == 2, refused.output
        assert "no password supplied" in refused.stderr


def test_db_password_from_the_environment_fills_urls_without_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)

    filled = parse_url("postgresql://efp_user@db.example/efp", what="--target")
    own = parse_url("postgresql://efp_user:other@db.example/efp", what="--target")
    sqlite = parse_url("sqlite:////tmp/x.sqlite", what="--target")
    engine = make_engine("postgresql://efp_user@db.example/efp")

    assert filled.password == PASSWORD
    assert filled.drivername == "postgresql+psycopg"
    assert own.password == "other"  # the URL's own password wins
    assert sqlite.password is None
    assert PASSWORD not in str(engine.url)  # shown masked
    assert engine.url.password == PASSWORD
    engine.dispose()


# --- the legacy password hash ----------------------------------------------------------------------


@pytest.mark.parametrize("source_kind", ["csv", "database"])
def test_legacy_hash_is_in_no_byte_the_run_wrote(source_kind: str, target_url: str,
                                                 new_database_url: Callable[[str], str], tmp_path: Path) -> None:
    tables = _tables()
    if source_kind == "csv":
        source = str(write_csv_folder(tables, tmp_path / "legacy"))
        assert HASH_MARK in (tmp_path / "legacy" / "utilisateurs.csv").read_bytes()
    else:
        source = write_database(tables, new_database_url("sqlite"))
        assert HASH_MARK in Path(source.removeprefix("sqlite:///")).read_bytes()
    out = tmp_path / "run"

    result = run(source, target_url, out, "--show-personal-data")
    again = run(source, target_url, tmp_path / "rerun", verbose=True)  # a rerun (nothing to change) and more logging

    assert result.exit_code == 0, result.output
    assert again.exit_code == 0, again.output
    assert_nowhere(HASH_MARK, output=result.output + again.output, folders=(out, tmp_path / "rerun"),
                   targets=(target_url,))


# --- the run folder and its log ------------------------------------------------------------------------


def test_run_folder_is_private_and_the_log_names_no_one(tmp_path: Path) -> None:
    """A run folder that already exists, world-readable; a run that shows personal data in its
    reports (--show-personal-data) still logs none."""
    tables = _tables()
    folder = write_csv_folder(tables, tmp_path / "legacy")
    out = tmp_path / "run"
    out.mkdir(mode=0o755)
    out.chmod(0o755)

    result = run(folder, f"sqlite:///{tmp_path / 'target.sqlite'}", out, "--show-personal-data")

    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    assert out.stat().st_uid == os.getuid()
    assert stat.S_IMODE((out / "run.log.jsonl").stat().st_mode) == 0o600
    log = (out / "run.log.jsonl").read_text(encoding="utf-8")
    personal = {value.strip() for user in tables["utilisateurs"] for column in ("courriel", "nom", "prenom")
                if (value := user[column]) and value.strip()}
    personal |= {value.lower() for value in personal if "@" in value}
    assert "Martin" in personal
    assert "bob@example.fr" in personal
    for value in sorted(personal):
        assert value not in log, value
        assert value not in result.output, value


@pytest.mark.parametrize("url", [
    "postgresql://efp_user:s3cr3t-pw@db.example:5432/efp",
    "postgresql+psycopg://efp_user:s3cr3t%2Dpw@db.example/efp",  # percent-encoded
    "postgresql://efp_user:s3cr3t-pw@/efp?host=/run/postgresql",
    "postgresql://db.example/efp?user=efp_user&password=s3cr3t-pw",  # libpq's keyword, in the query
    "postgresql://efp_user@db.example/efp?sslmode=require&password=s3cr3t-pw&application_name=x",
    "postgresql://efp_user:s3cr3t-pw@db.example/efp?password=s3cr3t-pw",
])
def test_every_way_of_writing_a_password_in_a_url_is_masked(url: str) -> None:
    shown = {mask_url(url), mask_url(make_url(url)), mask_text(f"cannot read {url}: refused"),
             mask_url(parse_url(url, what="--target"))}

    for text_shown in shown:
        assert "s3cr3t" not in text_shown, text_shown
        assert "***" in text_shown, text_shown
        assert "/efp" in text_shown, text_shown  # the rest is still shown


@pytest.mark.postgres
def test_password_given_as_a_url_query_parameter_is_never_written(role: Role, tmp_path: Path) -> None:
    """libpq (and SQLAlchemy) accept `?password=...`: such a target URL is masked too."""
    url = make_url(role.database(password=None))
    target = url.update_query_dict({"password": PASSWORD}).render_as_string(hide_password=False)
    assert f"password={PASSWORD}" in target
    folder = write_csv_folder(_tables(), tmp_path / "legacy")

    result = run(folder, target, tmp_path / "run")

    assert result.exit_code == 0, result.output
    assert_nowhere(PASSWORD.encode(), output=result.output, folders=(tmp_path / "run",), targets=(target,))
