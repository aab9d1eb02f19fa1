"""PostgreSQL: a large insert's constraints checked set-based, inside the load's transaction.

Row by row, every inserted row fires one trigger per foreign key (a look-up and a lock of the
referenced row) and adds one entry to every index of its table, at a random place in indexes
larger than the server's buffers, each change written to the WAL. For a first wave of a million
accounts and two million entitlements that was most of the load. The way PostgreSQL's own
documentation gives for populating a table ("Populating a Database": remove indexes and
foreign-key constraints, load, recreate them) is done here inside the load's transaction:

- a foreign key dropped and added back is checked by one anti-join over the whole table, and
  fails with the same error a trigger would have raised;
- an index dropped and created again is built by one sort, and a unique one then fails on the
  first duplicate with the key it found, as a row's insert would have.

A failure rolls the constraints back with everything else, and nobody ever sees a table without
them: dropping one takes an ACCESS EXCLUSIVE lock on the table (for a foreign key, on the table
it references too), held until the load commits. That waiting is the price, which is why the
load only goes this way for large inserts (LoadConfig.fk_checks).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import Connection, text


@dataclass(frozen=True)
class _Dropped:
    """One constraint or index, with what puts it back as it was (same name, same definition)."""

    drop: str
    put_back: str


@contextlib.contextmanager
def foreign_keys_dropped(conn: Connection, table: str) -> Iterator[tuple[str, ...]]:
    """`table`'s foreign keys, dropped for the body and added back (checked) after it.

    Yields their names."""
    constraints = conn.execute(
        text(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = CAST(:table AS regclass) AND contype = 'f' ORDER BY conname"
        ),
        {"table": table},
    ).all()
    dropped = [_constraint(conn, table, name, definition) for name, definition in constraints]
    with _dropped(conn, dropped):
        yield tuple(name for name, _ in constraints)


@contextlib.contextmanager
def indexes_dropped(conn: Connection, table: str) -> Iterator[tuple[str, ...]]:
    """`table`'s indexes, dropped for the body and built again after it; yields their names.

    Kept: the primary key, which the rows' ids fill in order (cheap row by row, and what other
    tables' foreign keys usually need), any index a foreign key depends on (it cannot be dropped
    without that key), and an index not valid (building it again would change its state).
    A unique constraint is dropped and added back as a constraint, a unique index as an index.
    """
    indexes = conn.execute(
        text(
            "SELECT ic.relname, c.conname, pg_get_indexdef(i.indexrelid), pg_get_constraintdef(c.oid) "
            "FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid "
            "LEFT JOIN pg_constraint c ON c.conindid = i.indexrelid AND c.conrelid = i.indrelid "
            "AND c.contype IN ('u', 'x') "
            "WHERE i.indrelid = CAST(:table AS regclass) AND NOT i.indisprimary AND i.indisvalid "
            "AND NOT EXISTS (SELECT 1 FROM pg_constraint f WHERE f.contype = 'f' AND f.conindid = i.indexrelid) "
            "ORDER BY ic.relname"
        ),
        {"table": table},
    ).all()
    quote = conn.dialect.identifier_preparer.quote
    dropped = [
        _constraint(conn, table, constraint, constraint_definition)
        if constraint is not None
        else _Dropped(drop=f"DROP INDEX {quote(index)}", put_back=index_definition)
        for index, constraint, index_definition, constraint_definition in indexes
    ]
    with _dropped(conn, dropped):
        yield tuple(index for index, *_ in indexes)


def _constraint(conn: Connection, table: str, name: str, definition: str) -> _Dropped:
    """A constraint of `table`, put back by name with its definition from the catalogue."""
    quote = conn.dialect.identifier_preparer.quote
    return _Dropped(
        drop=f"ALTER TABLE {table} DROP CONSTRAINT {quote(name)}",
        put_back=f"ALTER TABLE {table} ADD CONSTRAINT {quote(name)} {definition}",
    )


@contextlib.contextmanager
def _dropped(conn: Connection, dropped: list[_Dropped]) -> Iterator[None]:
    # exec_driver_sql: the definitions are DDL text from the catalogue, not statements with binds.
    for each in dropped:
        conn.exec_driver_sql(each.drop)
    yield
    # Not in a finally: after a failure the transaction is rolled back, constraints included.
    for each in dropped:
        conn.exec_driver_sql(each.put_back)
