"""Hostile legacy values travel through `efp-migrate run` as data and stay inert.

The extract of tests/test_outcomes.py with spreadsheet formulas, HTML markup, SQL
metacharacters and control characters planted in courriel, nom, prenom, raison_sociale,
commune, role, code_application and libelle (category 16 of the legacy contract). Then:
every CSV the run wrote has no cell a spreadsheet would run as a formula; every HTML page it
wrote holds the markup escaped, never live; the SQL metacharacters arrive in the target
verbatim (names cleaned as every name is: control characters removed, whitespace folded) and
every table is still there; the outcomes are exactly those of the clean extract.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import create_engine, inspect, text

from pipelines.cli import main
from tests.legacy_builders import write_csv_folder
from tests.test_outcomes import _tables

AS_OF = "2025-01-01T00:00:00"
FORMULA = '=HYPERLINK("http://x")'
SCRIPT = "<script>alert(1)</script>"
ESCAPED_SCRIPT = "&lt;script&gt;alert(1)&lt;/script&gt;"
DROP_ACCOUNTS = "'; DROP TABLE accounts; --"
BOBBY = 'Robert"); DROP TABLE'
CONTROLS = "Zo\x07é\x1b[31m\x7f\x85"
SPREADSHEET_STARTS = ("=", "+", "-", "@", "\t", "\r")

# legacy_user_id -> (nom, prenom) as planted, and as the target must hold them.
NAMES: dict[int, tuple[tuple[str, str], tuple[str, str]]] = {
    1: ((DROP_ACCOUNTS, BOBBY), (DROP_ACCOUNTS, BOBBY)),
    8: ((FORMULA, SCRIPT), (FORMULA, SCRIPT)),
    10: (("+1", "-2"), ("+1", "-2")),
    12: (("@SUM(A1)", CONTROLS), ("@SUM(A1)", "Zoé[31m")),
    9: (("\t=TAB()", "\r\n@CR"), ("=TAB()", "@CR")),
}
# siret -> (raison_sociale, commune)
ESTABLISHMENTS = {
    "73282932000074": (FORMULA, SCRIPT),
    "35600000000048": ("'; DROP TABLE establishments; --", "@SUM(A1)"),
    "73282932000075": ("-2", "+1"),  # rejected: INVALID_SIRET
}
EMAILS = {4: FORMULA, 7: SCRIPT}  # both were invalid emails already
ROLES = {102: FORMULA, 124: SCRIPT, 123: "@SUM(A1)"}  # ROLE_UNMAPPED, ROLE_UNMAPPED, ESTABLISHMENT_REJECTED
CODES = {107: FORMULA, 121: SCRIPT, 119: "-2", 109: "@SUM(A1)"}  # 109: the unmapped application ZZZ, renamed


def hostile_tables() -> dict[str, list[dict[str, Any]]]:
    tables = {name: [dict(row) for row in rows] for name, rows in _tables().items()}  # never the shared rows
    for user in tables["utilisateurs"]:
        uid = user["id_utilisateur"]
        if uid in NAMES:
            user["nom"], user["prenom"] = NAMES[uid][0]
        if uid in EMAILS:
            user["courriel"] = EMAILS[uid]
    for establishment in tables["etablissements"]:
        siret = establishment["siret"].replace(" ", "")
        establishment["raison_sociale"], establishment["commune"] = ESTABLISHMENTS[siret]
    for application in tables["applications"]:
        if application["code_application"] == "ZZZ":
            application["code_application"], application["libelle"] = CODES[109], SCRIPT
    for habilitation in tables["habilitations"]:
        hid = habilitation["id_habilitation"]
        if hid in ROLES:
            habilitation["role"] = ROLES[hid]
        if hid in CODES:
            habilitation["code_application"] = CODES[hid]
    return tables


def run(source: Path, target: str, out: Path, *extra: str) -> Result:
    return CliRunner().invoke(main, ["run", "--source", str(source), "--target", target, "--out", str(out),
                                     "--as-of", AS_OF, *extra])


def csv_cells(path: Path) -> list[list[str]]:
    content = path.read_text(encoding="utf-8-sig")
    dialect = csv.Sniffer().sniff(content.splitlines()[0], delimiters=";,")
    return list(csv.reader(content.splitlines(keepends=True), delimiter=dialect.delimiter))


@pytest.mark.parametrize("show_personal_data", [False, True], ids=["masked", "personal-data-shown"])
def test_hostile_values_stay_inert(target_url: str, tmp_path: Path, show_personal_data: bool) -> None:
    folder = write_csv_folder(hostile_tables(), tmp_path / "legacy")
    out = tmp_path / "run"

    result = run(folder, target_url, out, *(["--show-personal-data"] if show_personal_data else []))

    assert result.exit_code == 0, result.output
    report = json.loads((out / "reconciliation.json").read_text(encoding="utf-8"))
    assert report["verdict"] == "RECONCILED_WITH_EXCEPTIONS"
    assert report["outcomes"]["user"] == {"source": 14, "migrated": 5, "excluded": 2, "rejected": 7, "merged": 0}
    assert report["outcomes"]["habilitation"] == {"source": 28, "migrated": 5, "excluded": 9, "rejected": 12,
                                                  "merged": 2}

    # CSV: no cell a spreadsheet would run; the hostile values are there, neutralised.
    written_csvs = sorted(out.rglob("*.csv"))
    assert {"exceptions.csv", "reconciliation_by_application.csv"} <= {p.name for p in written_csvs}
    all_cells: list[str] = []
    for path in written_csvs:
        for line_number, row in enumerate(csv_cells(path), start=1):
            for cell in row:
                assert not cell.startswith(SPREADSHEET_STARTS), f"{path.name}, line {line_number}: {cell!r}"
            all_cells.extend(row)
    # Non-vacuous: the unmapped application's code and a formula planted as email or code are shown.
    assert "'" + CODES[109] in all_cells
    assert "'" + FORMULA in all_cells

    # HTML: the markup is escaped wherever it is shown, never live.
    pages = sorted(out.rglob("*.html"))
    assert {"reconciliation.html", "index.html", "users.html"} <= {p.name for p in pages}
    shown_escaped = []
    for page in pages:
        content = page.read_text(encoding="utf-8")
        assert SCRIPT not in content, page
        assert "<script>alert" not in content.replace(" ", "").lower(), page
        if ESCAPED_SCRIPT in content:
            shown_escaped.append(page.name)
    assert shown_escaped, "the planted markup should be shown (escaped) somewhere"

    # The target: every table still there, the metacharacters stored verbatim.
    engine = create_engine(target_url)
    try:
        assert {"accounts", "establishments", "applications", "entitlements", "access_requests",
                "migration_exceptions", "migration_runs", "migration_run_stages"} <= set(
                    inspect(engine).get_table_names())
        with engine.connect() as conn:
            names = {row[0]: (row[1], row[2]) for row in conn.execute(text(
                "SELECT legacy_user_id, last_name, first_name FROM accounts"))}
            establishments = {row[0]: (row[1], row[2]) for row in conn.execute(text(
                "SELECT siret, name, city FROM establishments"))}
            counts = {table: conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
                      for table in ("accounts", "establishments", "entitlements", "migration_exceptions")}
    finally:
        engine.dispose()
    assert names == {uid: cleaned for uid, (_planted, cleaned) in NAMES.items()}
    assert establishments == {siret: values for siret, values in ESTABLISHMENTS.items()
                              if siret != "73282932000075"}
    assert counts["accounts"] == 5
    assert counts["entitlements"] == 4
