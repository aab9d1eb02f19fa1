"""Views of a ReconciliationReport: reconciliation.json, reconciliation_by_application.csv, a
self-contained, printable reconciliation.html, reconciliation_differences.csv (every unexplained
access tuple, however many) and reconciliation_register.csv (every row of the exception register).
The report is data; these only present it. The JSON and the HTML stop long lists (saying so):
a register of a million users has hundreds of thousands of rows, which a browser cannot show."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from pipelines.arrow_text import arrow_strings
from reports.reconciliation import DIFFERENCES_FILE, REGISTER_FILE, ReconciliationReport, RegisterRow, RegisterRows
from reports.spreadsheet_safety import neutralise_arrow, neutralise_cell

JSON_NAME = "reconciliation.json"
CSV_NAME = "reconciliation_by_application.csv"
HTML_NAME = "reconciliation.html"
DIFFERENCES_NAME = DIFFERENCES_FILE
REGISTER_NAME = REGISTER_FILE
REGISTER_COLUMNS = ("entity", "legacy_key", "outcome", "reason_code", "detail", "merged_into")
DIFFERENCES_COLUMNS = ("kind", "legacy_user_id", "application_code", "siret", "role", "legacy_habilitation_ids",
                       "entitlement_ids")
# The contract's keys first, in its order; every other key follows in alphabetical order.
CONTRACT_KEYS = ("run_id", "as_of", "verdict", "applications", "outcomes")
CSV_COLUMNS = (
    "application_code", "legacy_codes", "legacy_access", "target_access", "matched", "explained",
    "unexplained", "missing_explained", "missing_unexplained", "extra_in_target",
    "missing_explained_by_reason", "legacy_control_hash", "target_control_hash",
)
# A printed report cannot hold millions of lines; beyond this the HTML says so (the differences CSV has all).
HTML_DIFFERENCE_LIMIT = 20_000


@dataclass(frozen=True)
class ReportArtefacts:
    json_path: Path
    csv_path: Path
    html_path: Path
    differences_path: Path
    register_path: Path

    def to_dict(self) -> dict[str, str]:
        return {"json": str(self.json_path), "csv": str(self.csv_path), "html": str(self.html_path),
                "differences": str(self.differences_path), "register": str(self.register_path)}


def _sorted_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _sorted_keys(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted_keys(v) for v in value]
    return value


def render_json(report: ReconciliationReport) -> str:
    """The contract's shape at top level, sorted keys inside every section, one trailing newline."""
    data = report.to_dict()
    ordered = {key: _sorted_keys(data[key]) for key in CONTRACT_KEYS}
    ordered.update({key: _sorted_keys(data[key]) for key in sorted(data) if key not in CONTRACT_KEYS})
    return json.dumps(ordered, indent=2, ensure_ascii=False) + "\n"


def render_csv(report: ReconciliationReport) -> str:
    """One row per application (UTF-8, comma, header row, LF line ends)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for app in report.applications:
        writer.writerow([
            neutralise_cell(app.application_code),
            neutralise_cell("|".join(app.legacy_codes)),
            app.legacy_access, app.target_access, app.matched, app.explained, app.unexplained,
            app.missing_explained, app.missing_unexplained, app.extra_in_target,
            ";".join(f"{reason}={count}" for reason, count in app.missing_explained_by_reason.items()),
            app.legacy_control_hash, app.target_control_hash,
        ])
    return buffer.getvalue()


def write_differences_csv(report: ReconciliationReport, path: Path) -> Path:
    """Every unexplained tuple, missing then extra (UTF-8, comma, header row, LF line ends); the
    holder's name and email only when the report shows personal data."""
    personal = bool(report.header.configuration.get("show_personal_data"))
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow((*DIFFERENCES_COLUMNS, "holder") if personal else DIFFERENCES_COLUMNS)
        for difference in (*report.missing_unexplained, *report.extra_in_target):
            row = [
                difference.kind, difference.legacy_user_id, neutralise_cell(difference.application_code),
                "" if difference.siret is None else neutralise_cell(difference.siret),
                "" if difference.role is None else neutralise_cell(difference.role),
                " ".join(map(str, difference.legacy_habilitation_ids)),
                " ".join(map(str, difference.entitlement_ids)),
            ]
            if personal:
                row.append(neutralise_cell(difference.holder or ""))
            writer.writerow(row)
    return path


def write_register_csv(report: ReconciliationReport, path: Path) -> Path:
    """Every row of the exception register the reconciliation read (UTF-8, comma, header, LF)."""
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(REGISTER_COLUMNS)
        for rows in _register_cells(report.exception_register):
            writer.writerows(rows)
    return path


# Register rows whose cells are Python strings at a time, on the way from Arrow to the CSV writer.
REGISTER_SLICE_ROWS = 65_536
# The register's columns a spreadsheet could take for a formula: the others hold codes of ours.
_NEUTRALISED = frozenset({"legacy_key", "detail", "merged_into"})
_MAY_BE_NULL = frozenset({"detail", "merged_into"})  # written as an empty cell


def _register_cells(register: Sequence[RegisterRow]) -> Iterator[Iterable[Sequence[str]]]:
    """The register's CSV rows, a slice at a time: from the frame of a RegisterRows by Arrow,
    column by column (a RegisterRow, then its six cells made a row at a time, were 4.4 s of the
    reconciliation at a million users); row by row from anything else, or from a frame whose
    columns are not all text."""
    columns = _register_text(register.frame) if isinstance(register, RegisterRows) else None
    if columns is None:
        yield ((row.entity, neutralise_cell(row.legacy_key), row.outcome, row.reason_code,
                neutralise_cell(row.detail), "" if row.merged_into is None else neutralise_cell(row.merged_into))
               for row in register)
        return
    for start in range(0, len(register), REGISTER_SLICE_ROWS):
        yield zip(*(column.slice(start, REGISTER_SLICE_ROWS).to_pylist() for column in columns), strict=True)


def _register_text(frame: pd.DataFrame) -> list[pa.Array] | None:
    """The cells of REGISTER_COLUMNS as Arrow text arrays without nulls, neutralised as the row
    way does; None when a column is not Arrow-backed text (as the target reader gives it), or a
    key, outcome or reason code is missing (the row way writes those as Python does)."""
    columns: list[pa.Array] = []
    for name in REGISTER_COLUMNS:
        series = frame[name]
        if name not in _MAY_BE_NULL and series.hasnans:
            return None
        texts = arrow_strings(series, nulls="")
        if texts is None:
            return None
        columns.append(neutralise_arrow(texts) if name in _NEUTRALISED else texts)
    return columns


def _environment() -> Any:
    from jinja2 import Environment, PackageLoader, StrictUndefined

    # Autoescape on every template whatever its name: every value is data and must stay inert.
    return Environment(loader=PackageLoader("reports", "templates"), autoescape=True,
                       undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                       keep_trailing_newline=True)


def _when(value: Any) -> str:
    return "" if value is None else value.isoformat(sep=" ")


def render_html(report: ReconciliationReport) -> str:
    """One self-contained page (inline CSS, no script, no external resource), printable on A4."""
    template = _environment().get_template("reconciliation.html.j2")
    return str(template.render(
        report=report,
        header=report.header,
        totals=report.totals(),
        explained_by_reason=report.explained_by_reason(),
        show_personal_data=bool(report.header.configuration.get("show_personal_data")),
        missing=report.missing_unexplained[:HTML_DIFFERENCE_LIMIT],
        extra=report.extra_in_target[:HTML_DIFFERENCE_LIMIT],
        register=report.exception_register[:HTML_DIFFERENCE_LIMIT],
        limit=HTML_DIFFERENCE_LIMIT,
        legacy_evidence=[e for e in report.evidence if e.side == "legacy"],
        target_evidence=[e for e in report.evidence if e.side == "target"],
        when=_when,
    ))


def write_reports(report: ReconciliationReport, out_dir: Path) -> ReportArtefacts:
    """Writes the views into `out_dir` (created, readable by its owner only, if missing)."""
    out_dir = Path(out_dir)
    if not out_dir.exists():
        out_dir.mkdir(parents=True, mode=0o700)
    artefacts = ReportArtefacts(json_path=out_dir / JSON_NAME, csv_path=out_dir / CSV_NAME,
                                html_path=out_dir / HTML_NAME, differences_path=out_dir / DIFFERENCES_NAME,
                                register_path=out_dir / REGISTER_NAME)
    for path, text in ((artefacts.json_path, render_json(report)), (artefacts.csv_path, render_csv(report)),
                       (artefacts.html_path, render_html(report))):
        with path.open("w", encoding="utf-8", newline="") as handle:
            handle.write(text)
    write_differences_csv(report, artefacts.differences_path)
    write_register_csv(report, artefacts.register_path)
    return artefacts
