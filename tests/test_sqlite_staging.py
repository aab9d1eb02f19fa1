"""The load's SQLite staging through ADBC: the same stored values as SQLAlchemy writes, and a
side file nobody else can find and nothing leaves behind."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import BigInteger, Boolean, Column, Date, DateTime, MetaData, Table, Text, create_engine, insert

from pipelines import sqlite_staging
from pipelines.db import make_engine
from pipelines.load import LoadConfig, load

from .test_load import _KILL_SCRIPT, _assert_converged, _wave_one, _wave_two

_SQLALCHEMY_TYPES = {"int": BigInteger, "bool": Boolean, "text": Text, "timestamp": DateTime, "date": Date}
_DECLARED = {"int": "BIGINT", "bool": "BOOLEAN", "text": "TEXT", "timestamp": "DATETIME", "date": "DATE"}


def _stored(path: Path, table: str) -> list[tuple[Any, ...]]:
    """Every value as SQLite holds it, with its storage class."""
    with sqlite3.connect(path) as conn:
        columns = [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]
        selected = ", ".join(f"{c}, typeof({c})" for c in columns)
        return conn.execute(f"SELECT {selected} FROM {table} ORDER BY rowid").fetchall()


def _through_adbc(tmp: Path, frame: pd.DataFrame, kinds: dict[str, str], batch_rows: int) -> list[tuple[Any, ...]]:
    path = tmp / "adbc.sqlite"
    columns_sql = ", ".join(f"{c} {_DECLARED[k]}" for c, k in kinds.items())
    reported: list[int] = []
    sqlite_staging.write_side_database(
        str(path), {"t": (columns_sql, lambda: sqlite_staging.arrow_table(frame, kinds))}, batch_rows,
        lambda _table, done: reported.append(done))
    assert reported == sorted(reported)
    assert (reported[-1] if reported else 0) == len(frame)
    return _stored(path, "t")


def _through_sqlalchemy(tmp: Path, records: list[dict[str, Any]], kinds: dict[str, str]) -> list[tuple[Any, ...]]:
    """The reference: what SQLAlchemy's own types store (and read back) on SQLite."""
    path = tmp / "sqlalchemy.sqlite"
    table = Table("t", MetaData(), *(Column(c, _SQLALCHEMY_TYPES[k]) for c, k in kinds.items()))
    engine = create_engine(f"sqlite:///{path}")
    try:
        table.metadata.create_all(engine)
        if records:
            with engine.begin() as conn:
                conn.execute(insert(table), records)
    finally:
        engine.dispose()
    return _stored(path, "t")


_datetimes = st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 12, 31))
_texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)


@st.composite
def _columns(draw: st.DrawFn) -> tuple[pd.DataFrame, list[dict[str, Any]], dict[str, str]]:
    """A frame of every kind, in the storages the transform hands over (numpy, nullable,
    Arrow-backed, categorical, object), and the same rows as Python values for SQLAlchemy."""
    rows = draw(st.integers(min_value=0, max_value=12))
    ints = draw(st.lists(st.one_of(st.none(), st.integers(-2**63, 2**63 - 1)), min_size=rows, max_size=rows))
    plain_ints = draw(st.lists(st.integers(-2**40, 2**40), min_size=rows, max_size=rows))
    bools = draw(st.lists(st.one_of(st.none(), st.booleans()), min_size=rows, max_size=rows))
    plain_bools = draw(st.lists(st.booleans(), min_size=rows, max_size=rows))
    texts = draw(st.lists(st.one_of(st.none(), _texts), min_size=rows, max_size=rows))
    codes = draw(st.lists(st.one_of(st.none(), st.sampled_from(["EDOF", "MAF", "CERES", "é\tü"])),
                          min_size=rows, max_size=rows))
    numbers_as_text = draw(st.lists(st.one_of(st.none(), st.integers(0, 99_999)), min_size=rows, max_size=rows))
    stamps = draw(st.lists(st.one_of(st.none(), _datetimes), min_size=rows, max_size=rows))
    days = draw(st.lists(st.one_of(st.none(), _datetimes.map(lambda d: datetime.combine(d.date(), d.time().min))),
                         min_size=rows, max_size=rows))
    frame = pd.DataFrame({
        "i": pd.array(ints, dtype="Int64"),
        "i_plain": np.array(plain_ints, dtype=np.int64),
        "b": pd.array(bools, dtype="boolean"),
        "b_plain": np.array(plain_bools, dtype=np.bool_),
        "s": pd.array(texts, dtype="string[pyarrow]"),
        "s_object": pd.Series(texts, dtype=object),
        "c": pd.Categorical(codes),
        "n": pd.Series(numbers_as_text, dtype=object),
        "ts": pd.to_datetime(pd.Series(stamps, dtype=object)),
        "d": pd.to_datetime(pd.Series(days, dtype=object)),
    })
    kinds = {"i": "int", "i_plain": "int", "b": "bool", "b_plain": "bool", "s": "text", "s_object": "text",
             "c": "text", "n": "text", "ts": "timestamp", "d": "date"}
    records = [{
        "i": ints[r], "i_plain": plain_ints[r], "b": bools[r], "b_plain": plain_bools[r], "s": texts[r],
        "s_object": texts[r], "c": codes[r], "n": None if numbers_as_text[r] is None else str(numbers_as_text[r]),
        "ts": stamps[r], "d": None if days[r] is None else days[r].date(),
    } for r in range(rows)]
    return frame, records, kinds


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=_columns(), batch_rows=st.integers(min_value=1, max_value=5))
@example(data=(pd.DataFrame({"ts": pd.to_datetime(pd.Series([datetime(2024, 11, 14), datetime(2024, 1, 2, 3, 4, 5, 6),
                                                               None], dtype=object))}),
               [{"ts": datetime(2024, 11, 14)}, {"ts": datetime(2024, 1, 2, 3, 4, 5, 6)}, {"ts": None}],
               {"ts": "timestamp"}), batch_rows=2)
def test_adbc_staging_stores_what_sqlalchemy_stores(
        data: tuple[pd.DataFrame, list[dict[str, Any]], dict[str, str]], batch_rows: int) -> None:
    frame, records, kinds = data
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        assert _through_adbc(tmp, frame, kinds, batch_rows) == _through_sqlalchemy(tmp, records, kinds)


def test_timestamps_keep_their_microseconds_and_dates_drop_the_time() -> None:
    frame = pd.DataFrame({"ts": pd.to_datetime(["2024-01-02T03:04:05.123456789", None], format="ISO8601"),
                          "d": pd.to_datetime(["2024-02-29T23:59:59", "1969-12-31T23:59:59.5"], format="ISO8601")})
    assert sqlite_staging.arrow_column(frame["ts"], "timestamp").to_pylist() == ["2024-01-02 03:04:05.123456", None]
    assert sqlite_staging.arrow_column(frame["d"], "date").to_pylist() == ["2024-02-29", "1969-12-31"]
    assert sqlite_staging.arrow_column(pd.Series([date(2024, 3, 1)]), "date").to_pylist() == ["2024-03-01"]
    with pytest.raises(ValueError, match="naive"):
        sqlite_staging.arrow_column(frame["ts"].dt.tz_localize("Europe/Paris"), "timestamp")


def _staging_folders(tmp: Path) -> list[Path]:
    return sorted(tmp.glob("efp-load-staging-*"))


def test_the_side_file_is_unlinked_while_the_load_runs_and_its_folder_gone_after(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    engine = make_engine(f"sqlite:///{tmp_path / 'target.sqlite'}")
    try:
        seen: list[list[Path]] = []

        def after_staging() -> None:
            folders = _staging_folders(scratch)
            seen.append(folders)
            # The connection holds the file open; nothing else can find it (a killed process leaves none).
            assert len(folders) == 1
            assert list(folders[0].iterdir()) == []

        load(engine, _wave_one(), LoadConfig(run_id="w1", batch_rows=2), after_staging=after_staging)
        assert len(seen) == 1
        assert _staging_folders(scratch) == []

        def refused(step: str, rows: int) -> None:
            if step == "staging entitlements":
                raise RuntimeError("stopped during the staging")

        with pytest.raises(RuntimeError, match="during the staging"):
            load(engine, _wave_two(), LoadConfig(run_id="w2", batch_rows=2), progress=refused)
        assert _staging_folders(scratch) == []
        # The connection the load used works on without the staging schema.
        frames = _wave_two()
        load(engine, frames, LoadConfig(run_id="w2", batch_rows=2))
        _assert_converged(engine, frames, native_keys={})
        with engine.connect() as conn:
            attached = [row[1] for row in conn.exec_driver_sql("PRAGMA database_list")]
        assert sqlite_staging.STAGING_SCHEMA not in attached
    finally:
        engine.dispose()


@pytest.mark.parametrize(("killed_at", "file_left"), [("staging accounts", True), ("upsert entitlements", False)])
def test_a_load_killed_while_staging_leaves_its_folder_to_the_next_load_which_removes_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, killed_at: str, file_left: bool) -> None:
    """Killed while ADBC writes the side file, the process leaves that file (personal data);
    killed once it is attached, an empty folder. The next load removes either."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    url = f"sqlite:///{tmp_path / 'target.sqlite'}"
    engine = make_engine(url)
    try:
        load(engine, _wave_one(), LoadConfig(run_id="w1", batch_rows=2))
        killed = subprocess.Popen(
            [sys.executable, "-c", _KILL_SCRIPT, url, killed_at], cwd=Path(__file__).resolve().parents[1],
            env={**os.environ, "TMPDIR": str(scratch)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _, stderr = killed.communicate(timeout=120)
        assert killed.returncode == -signal.SIGKILL, stderr
        left = _staging_folders(scratch)
        assert [_pid_of(folder) for folder in left] == [killed.pid]  # named after the process
        assert [p.name for p in left[0].iterdir()] == (["staging.sqlite"] if file_left else [])

        # A folder of a live process (this one) is not another load's to remove.
        own = Path(tempfile.mkdtemp(prefix=f"efp-load-staging-{os.getpid()}-", dir=scratch))
        monkeypatch.setattr(tempfile, "tempdir", str(scratch))
        frames = _wave_two()
        load(engine, frames, LoadConfig(run_id="w2", batch_rows=2))
        assert _staging_folders(scratch) == [own]
        _assert_converged(engine, frames, native_keys={})
    finally:
        engine.dispose()


def _pid_of(folder: Path) -> int:
    return int(folder.name.removeprefix("efp-load-staging-").split("-", 1)[0])
