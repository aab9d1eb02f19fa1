"""Broken legacy inputs through `efp-migrate run`, on SQLite and PostgreSQL targets.

tests/test_extract.py checks the extract stage's exact messages; here the same kinds of
breakage go through the whole command: exit status 2, one line `error: <file>, <line>:
<problem>` on stderr (never a traceback, nothing on stdout), and a target that is not
touched at all: an empty target stays without a single table, a target holding a previous
run's data keeps every row of every table (ledger included), byte for byte.

The extract is the one of tests/test_outcomes.py written as a CSV folder (line n+1 of
utilisateurs.csv is user n, line k of habilitations.csv is habilitation 98+k, line 2 and 3 of
etablissements.csv are SIRET 73282932000074 and its spaced duplicate, line 4 is La Poste's
35600000000048), broken in one place per case.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from pipelines.cli import main
from pipelines.db import mask_url
from tests.conftest import _create_postgres_database
from tests.legacy_builders import write_csv_folder, write_database
from tests.test_outcomes import _tables

AS_OF = "2025-01-01T00:00:00"
DATE_FORMATS = "(accepted: 2023-04-05, 2023-04-05 10:20:00, 2023-04-05T10:20:00, 05/04/2023, 05/04/2023 10:20[:00])"


def run(source: str | Path, target: str, out: Path, *extra: str) -> Result:
    return CliRunner().invoke(main, ["run", "--source", str(source), "--target", target, "--out", str(out),
                                     "--as-of", AS_OF, *extra])


# --- every byte of a target ------------------------------------------------------------------


def dump_target(url: str) -> dict[str, list[str]]:
    """Every row of every table of every non-system schema, as text, in a stable order."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                names = [(None, row[0]) for row in conn.execute(text(
                    "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"))]
            else:
                names = [(row[0], row[1]) for row in conn.execute(text(
                    "SELECT table_schema, table_name FROM information_schema.tables "
                    "WHERE table_schema NOT IN ('pg_catalog', 'information_schema') AND table_type = 'BASE TABLE' "
                    "ORDER BY 1, 2"))]
            dump: dict[str, list[str]] = {}
            for schema, name in names:
                qualified = f'"{schema}"."{name}"' if schema else f'"{name}"'
                rows = conn.execute(text(f"SELECT * FROM {qualified}")).all()
                dump[qualified] = sorted(repr(tuple(row)) for row in rows)
    finally:
        engine.dispose()
    return dump


def sqlite_bytes(url: str) -> bytes | None:
    path = Path(url.removeprefix("sqlite:///"))
    return path.read_bytes() if path.exists() else None


# --- the targets: one empty, one holding a previous run, per engine --------------------------


@dataclass
class Targets:
    kind: str
    empty: str
    populated: str

    def snapshot(self) -> tuple[dict[str, list[str]], dict[str, list[str]], bytes | None]:
        raw = sqlite_bytes(self.populated) if self.kind == "sqlite" else None
        return dump_target(self.empty), dump_target(self.populated), raw


@pytest.fixture(scope="module", params=[pytest.param("sqlite", marks=pytest.mark.sqlite),
                                        pytest.param("postgres", marks=pytest.mark.postgres)])
def targets(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Targets:
    kind: str = request.param
    folder = tmp_path_factory.mktemp(f"broken-{kind}")
    if kind == "sqlite":
        empty, populated = f"sqlite:///{folder / 'empty.sqlite'}", f"sqlite:///{folder / 'populated.sqlite'}"
    else:
        server: str = request.getfixturevalue("postgres_server_url")
        empty, populated = _create_postgres_database(server), _create_postgres_database(server)
    previous = run(write_csv_folder(_tables(), folder / "legacy"), populated, folder / "previous")
    assert previous.exit_code == 0, previous.output
    targets = Targets(kind, empty, populated)
    empty_dump, populated_dump, _raw = targets.snapshot()
    assert empty_dump == {}
    assert len(populated_dump['"accounts"' if kind == "sqlite" else '"public"."accounts"']) == 5
    return targets


# --- the broken folders ------------------------------------------------------------------------


def _lines(folder: Path, name: str) -> list[bytes]:
    return (folder / f"{name}.csv").read_bytes().split(b"\r\n")


def _write_lines(folder: Path, name: str, lines: list[bytes]) -> None:
    (folder / f"{name}.csv").write_bytes(b"\r\n".join(lines))


def _edit_field(folder: Path, name: str, line: int, field: int, value: bytes) -> None:
    lines = _lines(folder, name)
    fields = lines[line - 1].split(b";")
    fields[field] = value
    lines[line - 1] = b";".join(fields)
    _write_lines(folder, name, lines)


def missing_file(folder: Path) -> str:
    (folder / "habilitations.csv").unlink()
    return f"habilitations.csv: file not found in {folder}"


def missing_column(folder: Path) -> str:
    lines = _lines(folder, "utilisateurs")
    statut = lines[0].split(b";").index(b"statut")
    _write_lines(folder, "utilisateurs", [b";".join(f for i, f in enumerate(line.split(b";")) if i != statut)
                                          if line else line for line in lines])
    return ("utilisateurs.csv, line 1: missing required column(s): statut "
            "(the header must name them, separated by ';' or ',')")


def tab_delimited(folder: Path) -> str:
    _write_lines(folder, "applications", [line.replace(b";", b"\t") for line in _lines(folder, "applications")])
    return ("applications.csv, line 1: missing required column(s): code_application, libelle, actif "
            "(the header must name them, separated by ';' or ',')")


def undecodable_byte(folder: Path) -> str:
    _edit_field(folder, "applications", 4, 1, b"Mes collectes \x81")
    return "applications.csv, line 4: byte 0x81 cannot be decoded (the file is neither UTF-8 nor Windows-1252)"


def ragged_row(folder: Path) -> str:
    lines = _lines(folder, "habilitations")
    lines[4] += b";surplus"
    _write_lines(folder, "habilitations", lines)
    return "habilitations.csv, line 5: expected 11 fields, found 12"


def unterminated_quote(folder: Path) -> str:
    _edit_field(folder, "etablissements", 3, 2, b'"Formation Conseil SARL')
    return "etablissements.csv, line 3: unterminated quote: the quoted field starting here never ends"


def empty_file(folder: Path) -> str:
    (folder / "utilisateurs.csv").write_bytes(b"")
    return "utilisateurs.csv: empty file"


def nul_byte(folder: Path) -> str:
    _edit_field(folder, "utilisateurs", 6, 2, b"Mar\x00tin")
    return "utilisateurs.csv, line 6: NUL byte in the data (expected UTF-8 or Windows-1252 text)"


def impossible_date(folder: Path) -> str:
    _edit_field(folder, "habilitations", 7, 7, b"31/02/2023")
    return f"habilitations.csv, line 7: date_debut: '31/02/2023' is not a valid date {DATE_FORMATS}"


def negative_id(folder: Path) -> str:
    _edit_field(folder, "utilisateurs", 4, 0, b"-3")
    return "utilisateurs.csv, line 4: id_utilisateur: '-3' is not a non-negative integer"


def duplicate_id_habilitation(folder: Path) -> str:
    _edit_field(folder, "habilitations", 10, 0, b"103")  # 108 becomes a second 103 (line 5)
    return "habilitations.csv, lines 5 and 10: duplicate id_habilitation 103"


BROKEN: dict[str, Callable[[Path], str]] = {
    case.__name__: case for case in (
        missing_file, missing_column, tab_delimited, undecodable_byte, ragged_row, unterminated_quote,
        empty_file, nul_byte, impossible_date, negative_id, duplicate_id_habilitation,
    )
}


def assert_one_line_error(result: Result, expected: str) -> None:
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # handled, not a crash
    assert result.stdout == ""
    assert result.stderr == f"error: {expected}\n"
    assert "Traceback" not in result.output


@pytest.mark.parametrize("case", BROKEN)
def test_broken_csv_stops_the_run_and_touches_no_target(case: str, targets: Targets, tmp_path: Path) -> None:
    folder = write_csv_folder(_tables(), tmp_path / "legacy")
    expected = BROKEN[case](folder)
    before = targets.snapshot()

    into_empty = run(folder, targets.empty, tmp_path / "out-empty")
    into_populated = run(folder, targets.populated, tmp_path / "out-populated")

    assert_one_line_error(into_empty, expected)
    assert_one_line_error(into_populated, expected)
    after = targets.snapshot()
    assert after[0] == {}, "a table appeared in the empty target"
    assert after[1] == before[1], "the previous run's rows changed"
    assert after[2] == before[2], "the SQLite target file changed"
    # Nothing but the run's log lands in the run folder of a run that stopped on its input.
    assert sorted(p.name for p in (tmp_path / "out-populated").iterdir()) == ["run.log.jsonl"]


def test_broken_csv_in_a_real_process_prints_one_line_and_no_traceback(tmp_path: Path) -> None:
    folder = write_csv_folder(_tables(), tmp_path / "legacy")
    expected = nul_byte(folder)
    target = tmp_path / "target.sqlite"

    done = subprocess.run([sys.executable, "-m", "pipelines", "run", "--source", str(folder),
                           "--target", f"sqlite:///{target}", "--out", str(tmp_path / "out"), "--as-of", AS_OF],
                          capture_output=True, timeout=120, check=False)

    assert done.returncode == 2
    assert done.stderr.decode() == f"error: {expected}\n"
    assert done.stdout == b""
    assert not target.exists() or dump_target(f"sqlite:///{target}") == {}


def test_one_megabyte_fields_are_accepted_and_arrive_whole(target_url: str, tmp_path: Path) -> None:
    """A 1 MB raison_sociale (La Poste's establishment, migrated) and a 1 MB nom (user 8, migrated)."""
    huge_name, huge_company = "Nom" * 350_000, "Société " * 131_072
    tables = _tables()
    for user in tables["utilisateurs"]:
        if user["id_utilisateur"] == 8:
            user["nom"] = huge_name
    for establishment in tables["etablissements"]:
        if establishment["siret"] == "35600000000048":
            establishment["raison_sociale"] = huge_company
    folder = write_csv_folder(tables, tmp_path / "legacy")
    assert (folder / "etablissements.csv").stat().st_size > 1_000_000

    result = run(folder, target_url, tmp_path / "out")

    assert result.exit_code == 0, result.output
    engine = create_engine(target_url)
    try:
        with engine.connect() as conn:
            name = conn.execute(text("SELECT last_name FROM accounts WHERE legacy_user_id = 8")).scalar_one()
            company = conn.execute(text("SELECT name FROM establishments WHERE siret = '35600000000048'")).scalar_one()
    finally:
        engine.dispose()
    assert name == huge_name
    assert company == huge_company.strip()


# --- SQL sources ------------------------------------------------------------------------------


@pytest.mark.parametrize(("statement", "expected"), [
    ("DROP TABLE etablissements", "table etablissements: table not found in {source}"),
    ("ALTER TABLE utilisateurs DROP COLUMN statut", "table utilisateurs: missing required column(s): statut"),
])
def test_broken_sql_source_stops_the_run_and_touches_no_target(
    statement: str, expected: str, targets: Targets, new_database_url: Callable[[str], str], tmp_path: Path
) -> None:
    source = write_database(_tables(), new_database_url(targets.kind))
    engine = create_engine(source)
    with engine.begin() as conn:
        conn.execute(text(statement))
    engine.dispose()
    before = targets.snapshot()

    into_empty = run(source, targets.empty, tmp_path / "out-empty")
    into_populated = run(source, targets.populated, tmp_path / "out-populated")

    message = expected.format(source=mask_url(make_url(source)))
    assert_one_line_error(into_empty, message)
    assert_one_line_error(into_populated, message)
    after = targets.snapshot()
    assert after[0] == {}
    assert after[1] == before[1]
    assert after[2] == before[2]
