"""The load's staging tables on SQLite: written by ADBC from Arrow into a side database file,
which the load's connection then attaches.

Through the sqlite3 module every staged value was a Python object, bound one by one: at a
million users the staging took 20 s of the load's 49 s, all of it on one core under the GIL.
ADBC's SQLite driver binds Arrow columns in C (the columns are converted to Arrow by Arrow:
timestamps turned into SQLAlchemy's text by an Arrow cast, not pandas' per-value strftime).

The side file holds personal data: it lives in a private temporary folder (mode 0700), and is
unlinked as soon as the load's connection has it open, so that it is gone with the connection,
even when the process is killed. A process killed while it writes the file leaves it, in a
folder named after the process: the next load removes it. It only holds copies of the frames:
the target is written, in one transaction as before, by the set-based SQL reading from it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.arrow_text import arrow_array, categorical_strings

STAGING_SCHEMA = "efp_stage"


def arrow_column(series: pd.Series, kind: str) -> pa.Array:
    """One frame column as the Arrow array whose values SQLite stores as the load's staging
    always has: integers, booleans as 0/1, text, timestamps and dates as SQLAlchemy's text."""
    if kind == "int":
        values = series if isinstance(series.dtype, np.dtype) and series.dtype.kind in "iu" else series.astype("Int64")
        return pa.array(values, type=pa.int64(), from_pandas=True)
    if kind == "bool":
        values = series if series.dtype == np.bool_ else series.astype("boolean")
        return pa.array(values, type=pa.bool_(), from_pandas=True)
    if kind == "text":
        strings = arrow_array(series)
        if strings is None and isinstance(series.dtype, pd.CategoricalDtype):
            strings = categorical_strings(series)
        if strings is None:
            strings = pa.array(_texts(series), type=pa.string())
        return strings
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        raise ValueError(f"column {series.name}: timestamps must be naive (Europe/Paris wall time)")
    if not pd.api.types.is_datetime64_dtype(series.dtype):
        series = pd.to_datetime(series)
    # Arrow's own text of a timestamp[us] is SQLAlchemy's "%Y-%m-%d %H:%M:%S.%f", and of a date32
    # its "%Y-%m-%d" (ten times faster than strftime, Arrow's or pandas'); truncated to the
    # microsecond, or to the day, as strftime was.
    instants = pa.array(series, from_pandas=True)
    return pc.cast(pc.cast(instants, pa.timestamp("us") if kind == "timestamp" else pa.date32(), safe=False),
                   pa.string())


def _texts(series: pd.Series) -> list[Any]:
    """Text of any other storage: str() of every value that is not text already, NA as None."""
    values = series.to_numpy(dtype=object)
    missing = pd.isna(values)
    return [None if absent else (value if isinstance(value, str) else str(value))
            for value, absent in zip(values.tolist(), missing.tolist(), strict=True)]


def arrow_table(frame: pd.DataFrame, kinds: Mapping[str, str]) -> pa.Table:
    return pa.table({column: arrow_column(frame[column], kind) for column, kind in kinds.items()})


_FOLDER_PREFIX = "efp-load-staging-"


@contextlib.contextmanager
def side_database() -> Iterator[str]:
    """A path for the side file, in a private temporary folder removed afterwards. The folder
    is named after this process, so that a later load removes it if the process was killed."""
    remove_abandoned()
    folder = tempfile.mkdtemp(prefix=f"{_FOLDER_PREFIX}{os.getpid()}-")  # mode 0700
    try:
        yield str(Path(folder) / "staging.sqlite")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def remove_abandoned() -> list[Path]:
    """Removes the staging folders of this user's loads whose process is gone (killed while it
    wrote the side file, that file is still there: copies of personal data); returns them."""
    removed = []
    for folder in Path(tempfile.gettempdir()).glob(f"{_FOLDER_PREFIX}*"):
        pid = folder.name.removeprefix(_FOLDER_PREFIX).split("-", 1)[0]
        with contextlib.suppress(OSError):
            if pid.isdigit() and folder.stat().st_uid == os.getuid() and not _alive(int(pid)):
                shutil.rmtree(folder)
                removed.append(folder)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def write_side_database(path: str, tables: Mapping[str, tuple[str, Callable[[], pa.Table]]],
                        batch_rows: int, report: Callable[[str, int], None]) -> None:
    """Creates each staging table (name: (columns SQL, its Arrow table, made when its turn comes))
    in the side file and ingests its rows, `batch_rows` at a time, `report(name, rows so far)`
    after each batch."""
    import adbc_driver_sqlite.dbapi as adbc_sqlite

    # Autocommit, as the PRAGMAs are refused inside a transaction. A scratch file, deleted
    # whatever happens, needs no journal nor waiting on the disk: each batch's commit costs nothing.
    with adbc_sqlite.connect(path, autocommit=True) as connection, connection.cursor() as cursor:
        cursor.execute("PRAGMA journal_mode=OFF")
        cursor.execute("PRAGMA synchronous=OFF")
        for name, (columns_sql, make) in tables.items():
            cursor.execute(f"CREATE TABLE {name} ({columns_sql})")
            table = make()
            for start in range(0, table.num_rows, batch_rows):
                cursor.adbc_ingest(name, table.slice(start, batch_rows), mode="append")
                report(name, min(start + batch_rows, table.num_rows))
            del table


def attach(raw: Any, path: str) -> None:
    """The side file attached to the load's sqlite3 connection (outside any transaction), then
    unlinked: the connection keeps it open, nothing else can find it."""
    raw.execute(f"ATTACH DATABASE ? AS {STAGING_SCHEMA}", (path,))
    Path(path).unlink()


def detach(raw: Any) -> None:
    with contextlib.suppress(Exception):  # already gone with a failed connection
        raw.execute(f"DETACH DATABASE {STAGING_SCHEMA}")
