"""A SQLite legacy source read through ADBC gives the extract exactly what the driver's way
gives, odd values included (integers in text columns, flags spelt as text, "" and NULL-only
columns, dates in every accepted layout); a table ADBC would type differently (a REAL, a BLOB,
integers and text in one numeric, date or flag column) is read the driver's way."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import create_engine

from pipelines import sql_reader
from pipelines.db import make_engine
from pipelines.errors import InputError
from pipelines.extract import ExtractConfig, extract, normalise_read_columns, normalise_table
from pipelines.frames import TEXT_DTYPE
from pipelines.legacy_schema import LEGACY_TABLES, legacy_metadata
from pipelines.sql_reader import _read_table, _read_table_arrow
from pipelines.target_setup import init_target
from tests.test_memory import process_mib

USERS = [
    # id, courriel, nom, prenom, telephone, type_compte, statut, date_creation, derniere_connexion, siret
    (1, "a@x.fr", "Martin", "Zoé", 612345678, "PRO", "ACTIF", "2020-01-15 09:00:00", None, "73282932000074"),
    (2, "b@x.fr", "", "  Éric ", "06 12 34 56 78", "PRO", "ACTIF", "2020-01-15T09:00:00", None, ""),
    (3, "c@x.fr", "O'Neil, \"Jr\"", "日本", None, "AGENT", "SUPPRIME", "15/01/2020", None, None),
    (4, "", "Dupont", "Line\nBreak", "+33612345678", "PRO", "VERROUILLE", "2020-01-15", None, "732 829 320 00074"),
]
HABS = [
    # id, user, app, siret, role, responsable, statut, debut, fin, relance, delegant
    (10, 1, "EDOF", "73282932000074", "ADMIN", "O", "ACTIVE", "2021-03-01 08:00:00", None, None, None),
    (11, 2, " maf ", None, "", "non", "ACTIVE", "01/03/2021 08:00", "2030-01-01", None, None),
    (12, 4, "EDOF", "732 829 320 00074", "Gestionnaire", "oui", "REVOQUEE", "2021-03-01", None, None, None),
]


def legacy_file(tmp_path: Path, *, users: list[tuple[Any, ...]] = USERS,
                habilitations: list[tuple[Any, ...]] = HABS) -> Path:
    path = tmp_path / "legacy.sqlite"
    engine = create_engine(f"sqlite:///{path}")
    legacy_metadata.create_all(engine)
    engine.dispose()
    with sqlite3.connect(path) as conn:  # raw values, as a real extract holds them: no type conversion
        conn.executemany("INSERT INTO utilisateurs (id_utilisateur, courriel, nom, prenom, telephone, type_compte,"
                         " statut, date_creation, date_derniere_connexion, siret_rattachement, mot_de_passe_hash)"
                         " VALUES (?,?,?,?,?,?,?,?,?,?,'$2b$secret')", users)
        conn.executemany("INSERT INTO etablissements VALUES (?,?,?,?,?,?,?)", [
            ("73282932000074", "732829320", "Formation SARL", "1 rue X", "75002", "Paris", None),
            ("73282932000074", None, "Formation SARL", "1 rue X", 75002, "Paris", "2019-12-31"),
        ])
        conn.executemany("INSERT INTO applications VALUES (?,?,?)",
                         [("EDOF", "Mon Compte Formation", 1), ("MAF", "Mes aides", 1), ("ECR", "", 0)])
        conn.executemany("INSERT INTO habilitations VALUES (?,?,?,?,?,?,?,?,?,?,?)", habilitations)
    return path


def both_ways(path: Path, table: str) -> tuple[Any, Any]:
    engine = make_engine(f"sqlite:///{path}")
    try:
        fast = _read_table_arrow(engine, table)
        with engine.connect() as conn:
            slow = _read_table(conn, table)
    finally:
        engine.dispose()
    return fast, slow


# Batches of 1 and 2 rows: columns NULL through whole batches between integers or text, an
# integer first and text later in a text column, each batch's pieces joined.
BATCHES = [None, 1, 2]


@pytest.fixture(params=BATCHES, ids=lambda rows: f"batches of {rows or 'default'}")
def legacy_batch_rows(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    if request.param is not None:
        monkeypatch.setattr(sql_reader, "LEGACY_BATCH_ROWS", request.param)
    return int(sql_reader.LEGACY_BATCH_ROWS)


# A delegating user on the last row only (NULL in whole batches before it, integers after).
HABS_DELEGATED = [*HABS, (13, 1, "MAF", "73282932000074", "ADMIN", "N", "ACTIVE", "2021-03-01", None, None, 4)]


@pytest.mark.parametrize("table", list(LEGACY_TABLES))
def test_adbc_read_gives_the_extract_what_the_driver_gives(tmp_path: Path, table: str,
                                                           legacy_batch_rows: int) -> None:
    path = legacy_file(tmp_path, habilitations=HABS_DELEGATED)
    fast, slow = both_ways(path, table)
    assert fast is not None  # these values are ones ADBC takes: the fast way is really used
    assert fast.locator == slow.locator
    assert [fast.locator.row(i) for i in range(len(slow.frame))] == [slow.locator.row(i) for i in range(len(slow.frame))]
    for column in slow.frame.columns:  # same raw values (a date column as text either way)
        left, right = fast.frame[column], slow.frame[column]
        assert [None if pd.isna(v) else v for v in left] == [None if pd.isna(v) else v for v in right], column
        assert [type(v) for v in left.dropna()] == [type(v) for v in right.dropna()], column
        # Python values as the driver gives them, NULL as None, except identifiers without NULL
        # (int64) and text (a date column's too) in pandas' text dtype.
        assert left.dtype in (right.dtype, np.int64, TEXT_DTYPE), column
        if left.dtype == object:
            assert all(v is None for v in left[left.isna()]), column
    fast_typed, slow_typed = normalised(table, fast), normalised(table, slow)
    assert isinstance(slow_typed, pd.DataFrame)
    assert isinstance(fast_typed, pd.DataFrame)
    pd.testing.assert_frame_equal(fast_typed, slow_typed)
    # The extract's way: each raw column given up as soon as it is typed, to the same frame.
    given_up = dict(fast.columns)
    pd.testing.assert_frame_equal(normalise_read_columns(table, given_up, fast.locator), slow_typed)
    assert given_up == {}


@pytest.mark.parametrize(("users", "habilitations"), [
    ([(*USERS[0][:7], "2020-13-45 09:00:00", *USERS[0][8:])], HABS[:1]),  # an impossible date
    ([(*USERS[0][:7], "2020-01-15 25:00:00", *USERS[0][8:])], HABS[:1]),  # an impossible hour
    (USERS[:1], [(*HABS[0][:5], "peut-être", *HABS[0][6:])]),  # a flag that is no flag
    (USERS[:1], [(*HABS[0][:10], "douze")]),  # an identifier that is no number
    (USERS[:1], [(-10, *HABS[0][1:])]),  # a negative identifier
])
def test_bad_values_are_named_alike_either_way(tmp_path: Path, users: list[tuple[Any, ...]],
                                               habilitations: list[tuple[Any, ...]], legacy_batch_rows: int) -> None:
    path = legacy_file(tmp_path, users=users, habilitations=habilitations)
    errors = []
    for table in ("utilisateurs", "habilitations"):
        fast, slow = both_ways(path, table)
        assert fast is not None
        fast_typed, slow_typed = normalised(table, fast), normalised(table, slow)
        if isinstance(slow_typed, str):
            assert fast_typed == slow_typed  # the same file, row and problem
            errors.append(slow_typed)
        else:
            assert isinstance(fast_typed, pd.DataFrame)
            pd.testing.assert_frame_equal(fast_typed, slow_typed)
    assert errors  # each case is a real input error


def normalised(table: str, read: Any) -> pd.DataFrame | str:
    """The typed frame, or the input error the extract names (file, row and problem)."""
    try:
        return normalise_table(table, read.frame, read.locator, {})
    except InputError as exc:
        return str(exc)


@pytest.mark.parametrize(("change", "table"), [
    ({"habilitations": [(*HABS[0][:10], 6.5)]}, "habilitations"),  # a REAL (TEXT affinity would make it text)
    ({"users": [(*USERS[0][:2], b"\x00blob", *USERS[0][3:])]}, "utilisateurs"),  # a BLOB
    ({"habilitations": [HABS[0], (*HABS[1][:5], 1, *HABS[1][6:])]}, "habilitations"),  # 'O' and 1 in a flag
    ({"habilitations": [(*HABS[0][:10], 5), (*HABS[1][:10], "douze")]}, "habilitations"),  # 5 and 'douze' in an id
])
def test_values_adbc_would_type_otherwise_are_read_the_drivers_way(tmp_path: Path, change: dict[str, Any],
                                                                   table: str) -> None:
    path = legacy_file(tmp_path, **change)
    fast, slow = both_ways(path, table)
    assert fast is None
    assert len(slow.frame) > 0


def test_extract_of_a_sqlite_file_is_the_same_either_way(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = f"sqlite:///{legacy_file(tmp_path)}"
    fast = extract(ExtractConfig(source=source))
    monkeypatch.setattr("pipelines.sql_reader._read_table_arrow", lambda engine, table: None)
    slow = extract(ExtractConfig(source=source))
    assert fast.input_fingerprint == slow.input_fingerprint
    for table in LEGACY_TABLES:
        pd.testing.assert_frame_equal(fast.frames.table(table), slow.frames.table(table))


@pytest.mark.parametrize("stored", [20200115, 1579078800, 43845.5])
def test_a_number_in_a_timestamp_column_is_an_input_error(tmp_path: Path, stored: object) -> None:
    # pandas would take 20200115 for nanoseconds after 1970 and the run would go on with it.
    path = legacy_file(tmp_path, users=[(*USERS[0][:7], stored, *USERS[0][8:])], habilitations=HABS[:1])
    with pytest.raises(InputError) as caught:
        extract(ExtractConfig(source=f"sqlite:///{path}"))
    message = str(caught.value)
    assert "table utilisateurs" in message
    assert "id_utilisateur 1" in message
    assert f"date_creation: '{stored}' is a number, not a date" in message


def test_the_fallback_says_why_in_one_line_without_the_password(caplog: pytest.LogCaptureFixture) -> None:
    from reports.target_reader import read_target_arrow

    engine = make_engine("postgresql+psycopg://efp:s3cret-pass@127.0.0.1:1/nowhere")  # nothing listens there
    try:
        with caplog.at_level("INFO", logger="reports.target_reader"):
            assert read_target_arrow(engine) is None
    finally:
        engine.dispose()
    lines = [r.getMessage() for r in caplog.records]
    assert any(line.startswith("target read through SQLAlchemy's driver (ADBC: ") for line in lines)
    assert not any("s3cret-pass" in line or "\n" in line for line in lines)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")
def test_adbc_reads_reserve_no_more_than_their_tables(tmp_path: Path, new_database_url: Any) -> None:
    """The SQLite driver reserves its buffers for a whole batch, and the frames built on them keep
    them: batches sized for 100 million rows held 50 GB of address space here, after which forking
    a subprocess (a database server, a browser) failed with ENOMEM. Batches are sized to the table."""
    from reports.target_reader import read_target_arrow
    from tests.test_load import _seed_natives

    path = legacy_file(tmp_path)
    target = make_engine(new_database_url("sqlite"))
    init_target(target)
    _seed_natives(target)
    import adbc_driver_sqlite.dbapi as adbc_sqlite

    with adbc_sqlite.connect(str(path)) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT 1")  # the driver loaded, with its own reservations
        cursor.fetchall()
    before = process_mib("VmSize")
    kept = [both_ways(path, table)[0] for table in LEGACY_TABLES]  # text columns keep Arrow's buffers
    kept.append(read_target_arrow(target))
    target.dispose()

    assert all(read is not None for read in kept)  # read through ADBC
    assert process_mib("VmSize") - before < 512


def test_identifiers_without_null_come_as_int64_not_python_objects(tmp_path: Path) -> None:
    """A Python int per identifier weighed 270 MB at a million users; numpy's int64 gives the same
    values (read one by one, they are the same Python ints, as the previous test checks)."""
    fast, slow = both_ways(legacy_file(tmp_path), "habilitations")
    assert fast is not None
    assert fast.frame["id_habilitation"].dtype == np.int64
    assert fast.frame["id_utilisateur"].dtype == np.int64
    assert slow.frame["id_habilitation"].dtype == object  # the driver's way: its own Python values
    assert fast.frame["id_delegant"].isna().any()  # NULLs: the driver's values, as before
    assert fast.frame["id_delegant"].dtype == object


def test_a_column_null_through_the_first_batch_then_text_is_read_again_in_one_batch(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The driver types a column from its first batch: NULL all through it is an integer, and the
    text of a later batch is refused. The table is then read in one batch, as the driver's way."""
    monkeypatch.setattr(sql_reader, "LEGACY_BATCH_ROWS", 2)
    ends_later = [(*HABS[0][:8], None, *HABS[0][9:]), (*HABS[1][:8], None, *HABS[1][9:]), HABS[2],
                  (13, 1, "MAF", None, "ADMIN", "N", "ACTIVE", "2021-03-01", "2031-12-31", None, None)]
    path = legacy_file(tmp_path, habilitations=ends_later)
    with caplog.at_level("INFO", logger="pipelines.sql_reader"):
        fast, slow = both_ways(path, "habilitations")
    assert fast is not None
    assert any(r.getMessage().startswith("table habilitations: read again in one batch (ADBC: ")
               for r in caplog.records)
    assert [None if pd.isna(v) else v for v in fast.frame["date_fin"]] == [None, None, None, "2031-12-31"]
    fast_typed, slow_typed = normalised("habilitations", fast), normalised("habilitations", slow)
    assert isinstance(fast_typed, pd.DataFrame)
    assert isinstance(slow_typed, pd.DataFrame)
    pd.testing.assert_frame_equal(fast_typed, slow_typed)

    caplog.clear()  # read in batches when no column is NULL through a whole first batch
    monkeypatch.setattr(sql_reader, "LEGACY_BATCH_ROWS", 4)
    with caplog.at_level("INFO", logger="pipelines.sql_reader"):
        assert _read_table_arrow(make_engine(f"sqlite:///{path}"), "habilitations") is not None
    assert not any("read again" in r.getMessage() for r in caplog.records)


def test_a_read_of_fewer_rows_than_the_table_holds_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever the driver does, a table is never typed from part of its rows: the count of the
    census must be met, else the table is read the driver's way."""
    path = legacy_file(tmp_path)
    batched = sql_reader._batched_values
    monkeypatch.setattr(sql_reader, "_batched_values", lambda *args: {
        name: values.iloc[:-1] for name, values in batched(*args).items()})
    fast, slow = both_ways(path, "utilisateurs")
    assert fast is None
    assert len(slow.frame) == len(USERS)


def test_nulls_of_a_batch_in_a_column_of_integers_stay_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A date column holding a number (an input error) and, in a batch of its own, only NULLs:
    the whole column, as the driver gives it, is Python ints and None, not text and NaN."""
    monkeypatch.setattr(sql_reader, "LEGACY_BATCH_ROWS", 1)
    users = [USERS[0], (*USERS[1][:8], 1579078800, *USERS[1][9:])]
    fast, slow = both_ways(legacy_file(tmp_path, users=users, habilitations=HABS[:1]), "utilisateurs")
    assert fast is not None
    left, right = fast.frame["date_derniere_connexion"], slow.frame["date_derniere_connexion"]
    assert left.dtype == right.dtype == object
    assert list(left) == list(right) == [None, 1579078800]
    assert normalised("utilisateurs", fast) == normalised("utilisateurs", slow)  # the same input error
