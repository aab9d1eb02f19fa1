"""Data Docs of the validation: one page per suite from the same evaluation, offline, escaped.

The extract is tests/steward_extract.py (its docstring lists its defects). The browser tests
open the pages in a real headless Chromium with networking disabled (tests/browser.py).
"""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest

from tests import browser
from tests.steward_extract import HOSTILE_EMAIL, HOSTILE_PHONE, NATIVE_LOGIN, StewardRun, steward_run
from validation.data_docs import DataDocsResult, localise, remote_references, write_data_docs
from validation.gate import GateBreach, GateResult, evaluate_gate, load_gate_config
from validation.rules import RULES, SUITES

# Anything a page would load or link from elsewhere: attributes, CSS url() and @import.
REMOTE = re.compile(
    r"""(?:\b(?:src|href|srcset|poster|action)\s*=\s*["']?\s*(?:https?:)?//)"""
    r"""|(?:url\(\s*["']?\s*(?:https?:)?//)|(?:@import\s+["']?\s*(?:url\()?\s*["']?\s*(?:https?:)?//)""",
    re.IGNORECASE,
)
LOCAL_REFERENCE = re.compile(r"""\b(?:src|href)\s*=\s*["']([^"'#][^"']*)["']""", re.IGNORECASE)


@pytest.fixture(scope="module")
def steward() -> StewardRun:
    return steward_run()


@pytest.fixture(scope="module")
def docs(steward: StewardRun, tmp_path_factory: pytest.TempPathFactory) -> DataDocsResult:
    run_dir = tmp_path_factory.mktemp("run")
    gate = evaluate_gate(steward.validated.counts, steward.register, load_gate_config(None))
    return write_data_docs(steward.engine, run_dir, register=steward.register, counts=steward.validated.counts,
                           gate=gate)


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def test_one_page_per_suite_and_an_index(docs: DataDocsResult) -> None:
    assert set(docs.pages) == set(SUITES.values())
    for suite, page in docs.pages.items():
        assert page == docs.folder / f"{suite}.html"
        assert page.is_file()
        assert f"Expectation Suite:</span> {suite}" in _text(page)
    assert docs.index == docs.folder / "index.html"
    assert docs.folder.name == "validation"
    index = _text(docs.index)
    for suite in SUITES.values():
        assert f'href="{suite}.html"' in index


def test_nothing_is_loaded_or_linked_from_the_network(docs: DataDocsResult) -> None:
    written = [path for path in docs.folder.rglob("*") if path.suffix in {".html", ".css"}]
    assert len(written) >= len(SUITES) + 2  # the pages, the index, the stylesheets
    for path in written:
        text = _text(path)
        assert not REMOTE.findall(text), (path.name, REMOTE.findall(text)[:5])
        assert remote_references(text, stylesheet=path.suffix == ".css") == [], path.name


def test_localise_rewrites_or_drops_every_remote_reference() -> None:
    page = """<html><head>
<script src="https://code.jquery.com/jquery-3.7.1.min.js"></script>
<script src="https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js" integrity="x"></script>
<script src="https://cdn.jsdelivr.net/npm/vega@5"></script>
<link rel="stylesheet" href="https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css"/>
<link rel="stylesheet" href="//cdnjs.cloudflare.com/ajax/libs/font-awesome/6.6.0/css/all.min.css">
<link rel="stylesheet" href="https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.css">
<style>@import url("https://fonts.example/x.css"); .a { background: url('https://x.example/a.png') }
@media (prefers-color-scheme: dark) { .b { color: white; } .c { background: url(http://x/b.png) } }</style>
</head><body><img class="NO-CACHE" src="https://s3.example/logo-long.png?d=1" alt="GX"/>
<img src="https://tracker.example/pixel.gif"><iframe src="https://evil.example/"></iframe>
<div style="background-image: url(https://x.example/c.png)">shown: url(http://kept.example) and
@media (prefers-color-scheme: dark) { kept }</div>
<a href="https://greatexpectations.io">Great Expectations</a>
<a href="../../../../index.html">Home</a><a href="../../../../expectations/users.html">users</a>
<footer><p>newsletter <a href="https://greatexpectations.io/newsletter">Subscribe</a></p></footer>
</body></html>"""
    offline = localise(page)
    assert remote_references(offline) == []
    assert REMOTE.findall(offline) == ["url(http://"]  # only the text below, which is no reference
    assert '<script src="static/jquery-3.7.1.min.js"></script>' in offline
    assert '<script src="static/bootstrap-4.6.2.bundle.min.js"></script>' in offline
    assert 'href="static/bootstrap-4.6.2.min.css"' in offline
    assert 'href="static/gx-icons.css"' in offline
    assert 'src="static/images/logo-long.png"' in offline
    assert "vega" not in offline
    assert "bootstrap-table" not in offline
    assert "pixel.gif" not in offline
    assert "newsletter" not in offline
    assert ">Great Expectations<" not in offline
    assert "Great Expectations" in offline  # the link's text stays
    assert 'href="index.html"' in offline
    assert "expectations/users.html" not in offline
    assert "color: white" not in offline  # the dark theme is not shipped
    # text shown on the page is data, not a reference: it is left alone
    assert "shown: url(http://kept.example) and\n@media (prefers-color-scheme: dark) { kept }" in offline


def test_every_local_asset_the_pages_use_is_in_the_run_folder(docs: DataDocsResult) -> None:
    for page in [docs.index, *docs.pages.values()]:
        references = {ref.split("?")[0] for ref in LOCAL_REFERENCE.findall(_text(page))
                      if not ref.startswith(("data:", "javascript:"))}
        assert {"static/jquery-3.7.1.min.js", "static/bootstrap-4.6.2.min.css"} & references or page == docs.index
        for reference in references:
            assert (page.parent / reference).is_file(), (page.name, reference)
    static = docs.folder / "static"
    for licence in ("LICENSE-jquery.txt", "LICENSE-bootstrap.txt", "LICENSE-fontawesome.txt"):
        assert (static / licence).is_file()


def test_legacy_values_are_escaped(docs: DataDocsResult) -> None:
    users = _text(docs.pages["users"])
    assert "<script>alert(1)" not in users
    assert html.escape(HOSTILE_EMAIL) in users  # shown, as text


def test_personal_data_is_masked_but_the_failing_login_is_shown(docs: DataDocsResult) -> None:
    users = _text(docs.pages["users"])
    assert HOSTILE_PHONE not in users
    assert html.escape(HOSTILE_PHONE) not in users
    assert "(masqué)" in users
    # The native accounts' logins (people outside the migration) are not listed...
    assert NATIVE_LOGIN not in users.split("values must not belong to this set")[1].split("unexpected values")[0]
    assert "(1 valeur non affichée : données personnelles)" in users
    # ...but the login of the record the steward must fix is.
    assert "native.account@example.fr" in users
    assert "dup@example.fr" in users


def test_personal_data_on_request(steward: StewardRun, tmp_path: Path) -> None:
    docs = write_data_docs(steward.engine, tmp_path, show_personal_data=True)
    assert html.escape(HOSTILE_PHONE) in _text(docs.pages["users"])


def test_each_expectation_names_its_rule(docs: DataDocsResult) -> None:
    users = _text(docs.pages["users"])
    unique = users.index("then values must be unique")
    assert unique < users.index("DUPLICATE_LOGIN (rejeté)") < users.index("values must not belong to this set")
    assert users.index("values must not belong to this set: ") < users.index("LOGIN_TAKEN (rejeté)")
    habilitations = _text(docs.pages["habilitations"])
    for rule in RULES:
        if rule.suite == "habilitations":
            assert f"{rule.reason_code} (" in habilitations, rule.reason_code


def test_index_summarises_for_stewards_in_french(docs: DataDocsResult) -> None:
    index = _text(docs.index)
    text = html.unescape(index)
    for rule in RULES:
        assert rule.reason_code in index
        assert rule.explanation_fr in text
        assert rule.action_fr in text
    # counts per entity and reason code, from the register (issue retenue) and the evaluation
    row = re.search(r"<code>DUPLICATE_LOGIN</code></td><td>rejeté</td>\s*<td class=\"count\">(\d+)</td>\s*"
                    r"<td class=\"count\">(\d+)</td>", index)
    assert row is not None
    assert row.groups() == ("2", "2")
    row = re.search(r"<code>APPLICATION_UNMAPPED</code></td><td>rejeté</td>\s*<td class=\"count\">(\d+)</td>",
                    index)
    assert row is not None
    assert row.group(1) == "1"
    assert "Contrôle de validation franchi" in text
    assert re.search(r"<td>Comptes usagers</td><td class=\"count\">9</td>", index)


def test_index_escapes_what_it_shows(steward: StewardRun, tmp_path: Path) -> None:
    gate = GateResult(passed=False, source="<b>gate.toml</b>", breaches=(GateBreach(
        threshold="<i>max_reason_count</i>", limit=0, observed=1, excess=1, description="<script>x</script>"),))
    index = _text(write_data_docs(steward.engine, tmp_path, gate=gate).index)
    assert "<b>gate.toml" not in index
    assert "&lt;b&gt;gate.toml&lt;/b&gt;" in index
    assert "<i>max_reason_count" not in index
    assert "&lt;i&gt;max_reason_count" in index
    assert "registre non fourni" in index  # without a register only the evaluation's counts are shown


def test_pages_come_from_the_same_evaluation(steward: StewardRun, tmp_path: Path) -> None:
    store = steward.engine.context.validation_results_store
    before = sorted(str(key) for key in store.list_keys())
    results = dict(steward.engine.results)
    write_data_docs(steward.engine, tmp_path)
    assert sorted(str(key) for key in store.list_keys()) == before  # nothing was validated again
    assert all(steward.engine.results[name] is result for name, result in results.items())
    # and the results themselves were not altered by the masking and escaping
    users = steward.engine.results["users"]
    assert any(HOSTILE_PHONE in str(r.result.get("unexpected_list")) for r in users.results)


def test_no_progress_bars(capfd: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    run = steward_run()
    write_data_docs(run.engine, tmp_path)
    captured = capfd.readouterr()
    assert "Calculating Metrics" not in captured.out + captured.err


def test_an_engine_without_results_is_refused(tmp_path: Path) -> None:
    from validation.evaluate import RuleEngine

    with pytest.raises(ValueError, match="no validation results"):
        write_data_docs(RuleEngine(), tmp_path)


@pytest.mark.browser
def test_pages_render_offline_in_chromium(docs: DataDocsResult) -> None:
    page = browser.load_page(docs.pages["users"])
    assert page.network_requests == ()
    assert not [line for line in page.console if "Uncaught" in line or "Error" in line], page.console
    assert "values must never be null" in page.dom
    assert "Expectation Suite:" in page.dom
    assert "users" in page.dom
    assert "DUPLICATE_LOGIN (rejeté)" in page.dom
    assert "LOGIN_TAKEN (rejeté)" in page.dom
    assert html.escape(HOSTILE_EMAIL) in page.dom  # still text once the browser parsed it
    png = browser.screenshot(docs.pages["users"], browser.ARTIFACTS / "data_docs_users.png")
    assert png.stat().st_size > 10_000


@pytest.mark.browser
def test_index_renders_offline_in_chromium(docs: DataDocsResult) -> None:
    page = browser.load_page(docs.index)
    assert page.network_requests == ()
    assert not [line for line in page.console if "Uncaught" in line], page.console
    text = html.unescape(page.dom)
    for rule in RULES:
        assert rule.reason_code in text
    assert "Validation des données legacy" in text
    browser.screenshot(docs.index, browser.ARTIFACTS / "data_docs_index.png")


@pytest.mark.browser
def test_the_browser_harness_sees_network_use(steward: StewardRun, tmp_path: Path) -> None:
    """Control: the page as GX ships it asks CDNs for its scripts, and the harness catches it."""
    from great_expectations.render.renderer import ValidationResultsPageRenderer
    from great_expectations.render.view import DefaultJinjaPageView

    shipped = tmp_path / "shipped.html"
    shipped.write_text(DefaultJinjaPageView().render(
        ValidationResultsPageRenderer().render(steward.engine.results["applications"])), encoding="utf-8")
    page = browser.load_page(shipped)
    assert any("jquery" in url for url in page.network_requests), page.network_requests
    assert any("$ is not defined" in line for line in page.console), page.console
