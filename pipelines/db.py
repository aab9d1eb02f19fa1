"""Engines and URLs: one place that opens databases and masks their passwords."""

from __future__ import annotations

import os
import re

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.pool import NullPool

from pipelines.errors import ConfigurationError

# Credentials may come from the environment instead of the command line.
PASSWORD_ENV = "EFP_DB_PASSWORD"  # noqa: S105 (the variable's name, not a password)
_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://[^:/@\s]*:)(?P<pw>[^@\s]*)(?P<at>@)", re.I)
# libpq (and so SQLAlchemy URLs) also take the password as a keyword: `?password=...` in a URL's
# query, `password=...` in a connection string.
_KEYWORD_PASSWORD = re.compile(r"(?P<key>(?<![\w-])password=)(?P<pw>[^&\s#'\"]*)", re.I)


def mask_url(url: str | URL) -> str:
    """The URL as it may be shown: any password replaced by ***."""
    if isinstance(url, URL):
        return mask_text(url.render_as_string(hide_password=True))
    return mask_text(url)


def mask_text(text: str) -> str:
    """Masks passwords of every URL inside a free text (error messages, logs)."""
    masked = _URL_PASSWORD.sub(lambda m: f"{m['scheme']}***{m['at']}", text)
    return _KEYWORD_PASSWORD.sub(lambda m: f"{m['key']}***", masked)


def looks_like_url(value: str) -> bool:
    return "://" in value


def parse_url(url: str, *, what: str) -> URL:
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigurationError(f"{what}: {mask_text(url)!r} is not a database URL ({exc})") from None
    env_password = os.environ.get(PASSWORD_ENV)
    if parsed.password is None and env_password and not parsed.drivername.startswith("sqlite"):
        parsed = parsed.set(password=env_password)
    if parsed.drivername in ("postgresql", "postgres"):
        # psycopg 3 is the driver the project ships with.
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def make_engine(url: str, *, what: str = "database") -> Engine:
    """An engine for a SQLAlchemy URL, with SQLite tuned for bulk work and FKs enforced."""
    parsed = parse_url(url, what=what)
    try:
        # No pool: a run opens few connections, and none must outlive the command that opened it.
        engine = create_engine(parsed, poolclass=NullPool)
    except Exception as exc:  # the driver may be missing or the URL malformed
        raise ConfigurationError(f"{what}: cannot open {mask_url(parsed)}: {mask_text(str(exc))}") from None
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_on_connect)
    return engine


def _sqlite_on_connect(dbapi_connection: object, _record: object) -> None:
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def check_connection(engine: Engine, *, what: str) -> None:
    """Fails fast, before any data is read, when a database cannot be reached (exit status 2)."""
    from sqlalchemy.exc import DBAPIError

    try:
        with engine.connect():
            pass
    except DBAPIError as exc:
        reason = mask_text(str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc))
        raise ConfigurationError(f"{what}: cannot connect to {mask_url(engine.url)}: {reason}") from None


def first_line(exc: BaseException) -> str:
    """An error's first line, passwords masked (for a log line that says why a fallback was taken)."""
    lines = mask_text(str(exc)).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
