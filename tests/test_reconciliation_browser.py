"""The auditors' reconciliation.html, opened in a real headless Chromium with networking off:
it renders fully, makes no request, and shows every section an auditor signs."""

from __future__ import annotations

import html
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipelines.cli import main
from tests import browser
from tests.legacy_builders import write_csv_folder
from tests.test_outcomes import _tables

HOSTILE = "<script>alert('efp')</script>"


@pytest.mark.browser
@pytest.mark.sqlite
def test_reconciliation_html_renders_offline(tmp_path: Path) -> None:
    tables = _tables()
    tables["etablissements"][0]["raison_sociale"] = HOSTILE
    legacy = write_csv_folder(tables, tmp_path / "legacy")
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["run", "--source", str(legacy), "--target", f"sqlite:///{tmp_path / 't.db'}",
                                       "--out", str(out), "--as-of", "2025-01-01T00:00:00"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "reconciliation.json").read_text())
    page = browser.load_page(out / "reconciliation.html")
    assert page.network_requests == ()
    assert not [line for line in page.console if "Uncaught" in line], page.console
    text = html.unescape(page.dom)
    assert report["verdict"] in text
    for application in report["applications"]:
        assert application["application_code"] in text
    for reason in ("DUPLICATE_LOGIN", "ROLE_UNMAPPED", "EXPIRED", "DUPLICATE_ACCESS"):
        assert reason in text  # the full exception register is there
    assert HOSTILE not in page.dom  # escaped: shown as text, never run
    png = browser.screenshot(out / "reconciliation.html", browser.ARTIFACTS / "reconciliation.png", height=2400)
    assert png.stat().st_size > 10_000
