"""Reads the four legacy tables from a database, as the driver returns their values.

Only `SELECTABLE_COLUMNS` are selected (never `mot_de_passe_hash`), from a statement built with
SQLAlchemy so that every identifier is quoted by the dialect. The columns are selected without
SQLAlchemy types on purpose: typed results would be converted by SQLAlchemy's own processors
(on SQLite, a text 'N' in a boolean column would become True), whereas `pipelines.extract`
judges raw values with the same rules as for CSV.

Rows are streamed in chunks (server-side cursor where the driver has one), ordered by the key:
utilisateurs and habilitations by id, applications by code, etablissements by all columns.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from pipelines.db import make_engine, mask_text, mask_url
from pipelines.errors import InputError
from pipelines.legacy_schema import LEGACY_TABLES, SELECTABLE_COLUMNS, UNIQUE_KEYS

log = logging.getLogger(__name__)

CHUNK_ROWS = 50_000
ORDER_BY: dict[str, tuple[str, ...]] = {
    "utilisateurs": ("id_utilisateur",),
    "etablissements": SELECTABLE_COLUMNS["etablissements"],
    "applications": ("code_application",),
    "habilitations": ("id_habilitation",),
}


@dataclass(frozen=True)
class SqlLocator:
    """Names a row by its key ("id_utilisateur 42"), else by its rank in the ordered SELECT."""

    source: str
    key: str | None
    keys: tuple[object, ...]

    def row(self, index: int) -> str | None:
        if self.key is not None and self.keys[index] is not None:
            return f"{self.key} {self.keys[index]}"
        return f"row {index + 1}"

    def rows(self, first: int, second: int) -> str | None:
        return None  # a duplicate key is named in the message; rows of a SELECT have no line


@dataclass(frozen=True)
class SqlTable:
    frame: pd.DataFrame  # object columns of driver values, None for NULL and for ""
    locator: SqlLocator


@dataclass(frozen=True)
class SqlRead:
    tables: dict[str, SqlTable]
    display: str  # the URL with its password masked


def read_sql_tables(url: str) -> SqlRead:
    """Reads the four tables; a missing table or column, or a database error, is an InputError."""
    engine = make_engine(url, what="--source")
    display = mask_url(engine.url)
    try:
        _check_sqlite_file(engine, display)
        with engine.connect() as connection:
            _check_tables(connection, display)
            tables = {table: _read_table(connection, table) for table in LEGACY_TABLES}
    except SQLAlchemyError as exc:
        # The driver's own first line says what went wrong; the rest is SQLAlchemy boilerplate.
        lines = str(getattr(exc, "orig", None) or exc).strip().splitlines() or [type(exc).__name__]
        raise InputError(display, None, f"cannot be read: {mask_text(lines[0])}") from None
    finally:
        engine.dispose()
    return SqlRead(tables, display)


def _check_sqlite_file(engine: Engine, display: str) -> None:
    # Connecting to a missing SQLite file would silently create an empty database.
    database = engine.url.database
    if (
        engine.dialect.name == "sqlite"
        and database
        and database != ":memory:"
        and not Path(database).exists()
    ):
        raise InputError(display, None, "database file not found")


def _check_tables(connection: Connection, display: str) -> None:
    inspector = sa.inspect(connection)
    present = set(inspector.get_table_names())
    for table, columns in SELECTABLE_COLUMNS.items():
        if table not in present:
            raise InputError(f"table {table}", None, f"table not found in {display}")
        found = {column["name"] for column in inspector.get_columns(table)}
        missing = [column for column in columns if column not in found]
        if missing:
            raise InputError(f"table {table}", None, f"missing required column(s): {', '.join(missing)}")


def _read_table(connection: Connection, table: str) -> SqlTable:
    columns = SELECTABLE_COLUMNS[table]
    # Untyped columns: no SQLAlchemy result processing (see the module docstring).
    source = sa.table(table, *(sa.column(name) for name in columns))
    statement = sa.select(*(source.c[name] for name in columns)).order_by(
        *(source.c[name] for name in ORDER_BY[table])
    )
    values: list[list[object]] = [[] for _ in columns]
    result = connection.execution_options(stream_results=True, yield_per=CHUNK_ROWS).execute(statement)
    for chunk in result.partitions():
        for collected, column_values in zip(values, zip(*chunk, strict=True), strict=True):
            # An empty string is NULL, as an empty CSV field is.
            collected.extend(None if value == "" else value for value in column_values)
    frame = pd.DataFrame(
        {name: pd.Series(column, dtype=object) for name, column in zip(columns, values, strict=True)}
    )
    log.info("table %s: %d rows", table, len(frame))
    key = UNIQUE_KEYS.get(table)
    keys = tuple(frame[key]) if key else ()
    return SqlTable(frame, SqlLocator(f"table {table}", key, keys))
