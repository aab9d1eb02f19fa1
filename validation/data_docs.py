"""Great Expectations Data Docs of the validation, readable offline, with a French summary.

The pages are rendered from the validation results the `RuleEngine` already holds: the very
evaluation that decided every record's outcome. Nothing is evaluated again.

Written into `<run>/validation/`: one page per suite (`users.html`, `establishments.html`...),
`index.html` (the stewards' summary in French and links to the pages) and `static/` (the
scripts, styles and images the pages use). As shipped, GX pages load jQuery, Bootstrap, Font
Awesome, Vega and bootstrap-table from public CDNs and a logo from a remote host; here every
such reference is pointed at the run folder or removed (see validation/static/README.md),
so the pages open in a browser with no network.

The engine's results list the failing records by key only (validation/evaluate.py); each page
shows them as GX shows records listed with an ID/PK column, their values read back by key.
Three things are changed on a copy of each result before rendering, never on the result
itself: unexpected values that are personal data (phone, names) are masked unless
`show_personal_data`; value sets of logins (the native accounts' logins, people outside the
migration) and overlong value sets are summarised; and the plain-text cells of GX's tables
are HTML-escaped, because GX 1.x writes unexpected values into its tables unescaped and the
legacy data is not trusted.
"""

from __future__ import annotations

import copy
import functools
import html
import logging
import re
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from numbers import Number
from pathlib import Path
from typing import TYPE_CHECKING, Any

from validation.french import ENTITIES, ENTITY_TITLES, OUTCOME_LABELS
from validation.rules import SUITES, rules_for

if TYPE_CHECKING:
    import pandas as pd

    from validation.evaluate import RuleEngine
    from validation.gate import GateResult

log = logging.getLogger(__name__)

FOLDER = "validation"
INDEX = "index.html"
# Unexpected values of these columns are masked unless personal data is asked for.
PERSONAL_COLUMNS = frozenset({"telephone", "phone", "last_name", "first_name", "nom", "prenom"})
# The login identifies the record a steward must fix, so failing logins are shown; but a
# value set of logins lists other people (the native accounts): it is summarised.
LOGIN_COLUMNS = frozenset({"login", "email", "courriel"})
MASK = "(masqué)"
MAX_VALUE_SET = 50

# Local stand-ins for the CDN assets, matched on the URL's path; any other remote asset is dropped.
_STATIC = "static"
_LOCAL_ASSETS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"/jquery[-.\d]*(\.min)?\.js$"), f"{_STATIC}/jquery-3.7.1.min.js"),
    (re.compile(r"/bootstrap/[\d.]+/js/bootstrap(\.bundle)?(\.min)?\.js$"), f"{_STATIC}/bootstrap-4.6.2.bundle.min.js"),
    (re.compile(r"/bootstrap/[\d.]+/css/bootstrap(\.min)?\.css$"), f"{_STATIC}/bootstrap-4.6.2.min.css"),
    (re.compile(r"/font-?awesome.*\.css$"), f"{_STATIC}/gx-icons.css"),
    (re.compile(r"/logo-long\.png$"), f"{_STATIC}/images/logo-long.png"),
)
_GX_IMAGES = ("logo-long.png", "favicon.ico")
_REMOTE = r"(?:https?:)?//"
_SCRIPT = re.compile(rf"<script\b[^>]*?\bsrc\s*=\s*([\"'])(?P<url>{_REMOTE}.*?)\1[^>]*>\s*</script>", re.I | re.S)
_LINK = re.compile(rf"<link\b[^>]*?\bhref\s*=\s*([\"'])(?P<url>{_REMOTE}.*?)\1[^>]*?>", re.I | re.S)
_IMG = re.compile(rf"<img\b(?P<before>[^>]*?)\bsrc\s*=\s*([\"'])(?P<url>{_REMOTE}.*?)\2(?P<after>[^>]*)>",
                  re.I | re.S)
_ANCHOR = re.compile(rf"<a\b[^>]*?\bhref\s*=\s*([\"'])(?P<url>{_REMOTE}.*?)\1[^>]*>(?P<text>.*?)</a>", re.I | re.S)
_SUITE_ANCHOR = re.compile(r"<a\b[^>]*?\bhref\s*=\s*([\"'])(?:\.\./)+expectations/[^\"']*\1[^>]*>(?P<text>.*?)</a>",
                           re.I | re.S)
_HOME = re.compile(r"([\"'])(?:\.\./)+index\.html\1")
_GX_STATIC_IMAGE = re.compile(r"([\"'])(?:\.\./)+static/images/")
_FOOTER = re.compile(r"<footer\b.*?</footer>", re.I | re.S)
_DARK_MEDIA = re.compile(r"@media\s*\(\s*prefers-color-scheme\s*:\s*dark\s*\)\s*\{", re.I)
_CSS_IMPORT = re.compile(rf"@import\s+(?:url\()?\s*[\"']?{_REMOTE}[^;]*;", re.I)
_CSS_URL = re.compile(rf"url\(\s*[\"']?\s*{_REMOTE}[^)]*\)", re.I)
# Stylesheets inside a page: <style> blocks and style="" attributes (never the escaped text).
_STYLE_BLOCK = re.compile(r"(<style\b[^>]*>)(.*?)(</style>)", re.I | re.S)
_STYLE_ATTRIBUTE = re.compile(r"(\bstyle\s*=\s*)([\"'])(.*?)\2", re.I | re.S)
_ATTRIBUTE = re.compile(rf"\b(?P<name>src|href|srcset|poster|data|action|formaction)\s*=\s*([\"'])\s*{_REMOTE}.*?\2",
                        re.I | re.S)


@dataclass(frozen=True)
class DataDocsResult:
    folder: Path
    index: Path
    pages: dict[str, Path] = field(default_factory=dict)  # suite name -> page

    def to_dict(self) -> dict[str, Any]:
        return {"folder": str(self.folder), "index": str(self.index),
                "pages": {suite: str(path) for suite, path in self.pages.items()}}


def write_data_docs(
    engine: RuleEngine,
    run_dir: Path,
    *,
    register: pd.DataFrame | None = None,
    counts: Mapping[str, Mapping[str, int]] | None = None,
    gate: GateResult | None = None,
    show_personal_data: bool = False,
) -> DataDocsResult:
    """Write the Data Docs of `engine`'s evaluation into `run_dir / "validation"`.

    `register` (the exception register), `counts` (`ValidateResult.counts`) and `gate` (the
    gate's verdict) complete the French summary of the index; without them it shows what the
    evaluation found, rule by rule.
    """
    results: dict[str, Any] = dict(engine.results)
    if not results:
        raise ValueError("the rule engine holds no validation results: run validate() with it first")
    folder = run_dir / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    _copy_static(folder / _STATIC)

    ordered = [name for name in SUITES.values() if name in results] + sorted(set(results) - set(SUITES.values()))
    pages: dict[str, Path] = {}
    for suite in ordered:
        if not re.fullmatch(r"[A-Za-z0-9_]+", suite):
            raise ValueError(f"unexpected suite name {suite!r}")
        page = folder / f"{suite}.html"
        page.write_text(render_suite_page(results[suite], show_personal_data=show_personal_data,
                                          records=_records_of(engine.results, suite)), encoding="utf-8")
        pages[suite] = page

    index = folder / INDEX
    index.write_text(
        _render_index(results, ordered, register=register, counts=counts, gate=gate), encoding="utf-8"
    )
    log.info("data docs written: %s (%d pages)", index, len(pages))
    return DataDocsResult(folder=folder, index=index, pages=pages)


def render_suite_page(result: Any, *, show_personal_data: bool = False,
                      records: Callable[[Any], pd.DataFrame | None] | None = None) -> str:
    """The HTML of one suite's validation result page, offline and with every value escaped.

    `records` gives the failing records of an expectation result (`validation.evaluate.failing_records`)
    when the result lists only their keys: the page shows them as GX shows its ID/PK columns.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from great_expectations.render.renderer import ValidationResultsPageRenderer
        from great_expectations.render.view import DefaultJinjaPageView

    import pandas as pd

    shown = _display_copy(result, show_personal_data, records)
    # GX tabulates every failing record as pandas "string" cells; Python-backed strings make
    # that a quarter faster than Arrow-backed ones, for the same text.
    with pd.option_context("mode.string_storage", "python"):
        document = ValidationResultsPageRenderer().render(shown)
    _add_reason_codes(document, shown)
    _escape_plain_cells(document)
    return localise(_page_view(DefaultJinjaPageView).render(document))


@functools.cache
def _page_view(view_class: type) -> Any:
    """One GX page view per process: each new one compiles GX's Jinja templates again."""
    return view_class()


# --- what is shown ------------------------------------------------------------------------------


def _display_copy(result: Any, show_personal_data: bool,
                  records: Callable[[Any], pd.DataFrame | None] | None = None) -> Any:
    """What the page shows: a copy of the parts that change, the rest shared with `result`
    (a deep copy of every unexpected list cost seconds at scale)."""
    shown = copy.copy(result)
    shown.meta = copy.deepcopy(result.meta)  # small; GX's renderer must not touch the original's
    shown.results = []
    for original in result.results:
        expectation_result = copy.copy(original)
        config = expectation_result.expectation_config
        column = config.kwargs.get("column")
        masked = not show_personal_data and column in PERSONAL_COLUMNS
        if masked and expectation_result.result:
            expectation_result.result = _masked(expectation_result.result, column)
        if expectation_result.result:
            expectation_result.result = _with_records(expectation_result.result, records, original,
                                                      column if masked else None)
        value_set = config.kwargs.get("value_set")
        if isinstance(value_set, list | tuple | set | frozenset):
            config = expectation_result.expectation_config = copy.copy(config)
            config.kwargs = {**config.kwargs,
                             "value_set": _shown_value_set(list(value_set), column, show_personal_data)}
        shown.results.append(expectation_result)
    return shown


def _records_of(results: Mapping[str, Any], suite: str) -> Callable[[Any], pd.DataFrame | None]:
    from validation.evaluate import failing_records

    return lambda expectation_result: failing_records(results, suite, expectation_result)


def _with_records(result: dict[str, Any], records: Callable[[Any], pd.DataFrame | None] | None,
                  expectation_result: Any, masked_column: str | None) -> dict[str, Any]:
    """`result` with its failing keys listed as GX lists records when asked for an ID/PK column,
    {column: value, key column: key}: its unexpected-values table groups and counts them."""
    keys = result.get("unexpected_index_list")
    if records is None or not keys or isinstance(keys[0], dict):
        return result
    frame = records(expectation_result)
    if frame is None:
        return result
    names = list(frame.columns)
    columns = []
    for name in names:
        values = frame[name]
        if name == masked_column:  # as _mask does, one value at a time
            values = values.where(values.isna() | values.eq("").fillna(False), MASK)
        columns.append(values.tolist())
    if len(names) == 2:
        value_name, key_name = names
        listed = [{value_name: value, key_name: key} for value, key in zip(*columns, strict=True)]
    else:
        listed = [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]
    return {**result, "unexpected_index_column_names": [names[-1]], "unexpected_index_list": listed,
            "partial_unexpected_index_list": listed[: len(result.get("partial_unexpected_index_list") or [])]}


_TABLE_LEVEL = "Table-Level Expectations"  # GX's section for expectations without a `column`
_RESULT_HEADER = ["Status", "Expectation", "Observed Value"]


def _add_reason_codes(document: Any, result: Any) -> None:
    """Add a column naming the rule (reason code, outcome) of each expectation to GX's results tables.

    GX renders a column's expectations in the order of the results, one row each (its own
    `meta_properties_to_render` hook fails on GX 1.x expectations); a table whose row count
    does not match is left as it is.
    """
    from great_expectations.render import RenderedTableContent

    by_section: dict[str, list[Mapping[str, Any]]] = {}
    for expectation_result in result.results:
        config = expectation_result.expectation_config
        by_section.setdefault(str(config.kwargs.get("column", _TABLE_LEVEL)), []).append(config.meta or {})
    for section in getattr(document, "sections", None) or []:
        metas = by_section.get(str(getattr(section, "section_name", "")))
        for block in getattr(section, "content_blocks", None) or []:
            if not (metas and isinstance(block, RenderedTableContent) and block.table
                    and list(block.header_row or [])[:3] == _RESULT_HEADER and len(block.table) == len(metas)):
                continue
            block.header_row = [*block.header_row, "Code motif"]
            block.table = [[*row, _reason_label(meta)] for row, meta in zip(block.table, metas, strict=True)]


def _reason_label(meta: Mapping[str, Any]) -> str:
    if "reason_code" not in meta:
        return ""
    outcome = str(meta.get("outcome", ""))
    return f"{meta['reason_code']} ({OUTCOME_LABELS.get(outcome, outcome)})"


def _shown_value_set(values: list[Any], column: str | None, show_personal_data: bool) -> list[Any]:
    if not show_personal_data and (column in LOGIN_COLUMNS or column in PERSONAL_COLUMNS):
        plural = "s" if len(values) > 1 else ""
        return [f"({len(values)} valeur{plural} non affichée{plural} : données personnelles)"] if values else []
    if len(values) > MAX_VALUE_SET:
        return [*values[:MAX_VALUE_SET], f"… ({len(values) - MAX_VALUE_SET} de plus)"]
    return values


def _is_missing(value: Any) -> bool:
    import pandas as pd

    return value is None or (pd.api.types.is_scalar(value) and bool(pd.isna(value)))


def _mask(value: Any) -> Any:
    # Whether a value is missing or empty is not personal, and it is what the steward must know.
    return value if _is_missing(value) or value == "" else MASK


def _masked(result: dict[str, Any], column: str) -> dict[str, Any]:
    masked = dict(result)
    for key in ("partial_unexpected_list", "unexpected_list"):
        if isinstance(masked.get(key), list):
            masked[key] = [_mask(value) for value in masked[key]]
    for key in ("partial_unexpected_index_list", "unexpected_index_list"):
        if isinstance(masked.get(key), list):
            masked[key] = [{**item, column: _mask(item[column])} if isinstance(item, dict) and column in item
                           else item for item in masked[key]]
    if isinstance(masked.get("partial_unexpected_counts"), list):
        merged: dict[Any, int] = {}
        for item in masked["partial_unexpected_counts"]:
            value = _mask(item.get("value"))
            key = "\0missing" if _is_missing(value) else value
            merged[key] = merged.get(key, 0) + int(item.get("count", 0))
        masked["partial_unexpected_counts"] = [
            {"value": None if key == "\0missing" else key, "count": count} for key, count in merged.items()
        ]
    return masked


def _escape_plain_cells(document: Any) -> None:
    """HTML-escape the plain values GX would write raw: table cells and headers, text items."""
    from great_expectations.render import RenderedContent, RenderedTableContent

    seen: set[int] = set()

    def cell(value: Any) -> Any:
        if isinstance(value, RenderedContent | Number) or value is None:
            return value
        if isinstance(value, dict) and "content_block_type" in value:
            return value
        if isinstance(value, list):  # a cell holding several blocks
            return [cell(item) for item in value]
        return html.escape(str(value), quote=True)

    def walk(node: Any) -> None:
        if id(node) in seen:
            return
        seen.add(id(node))
        if isinstance(node, RenderedContent):
            if isinstance(node, RenderedTableContent):
                node.table = [[cell(value) for value in row] if isinstance(row, list) else cell(row)
                              for row in (node.table or [])]
                if node.header_row:
                    node.header_row = [cell(value) for value in node.header_row]
            for name in ("text", "bullet_list"):
                items = getattr(node, name, None)
                if isinstance(items, list):
                    setattr(node, name, [cell(item) for item in items])
            for name in ("header", "subheader"):
                if isinstance(getattr(node, name, None), str):
                    setattr(node, name, cell(getattr(node, name)))
            for value in vars(node).values():
                walk(value)
        elif isinstance(node, list | tuple):
            for value in node:
                walk(value)
        elif isinstance(node, dict):
            for value in node.values():
                walk(value)

    walk(document)


# --- offline ------------------------------------------------------------------------------------


def _local_asset(url: str) -> str | None:
    from urllib.parse import urlsplit

    path = urlsplit(url if not url.startswith("//") else "https:" + url).path
    for pattern, local in _LOCAL_ASSETS:
        if pattern.search(path):
            return local
    return None


def _without_dark_theme(css: str) -> str:
    """Drop GX's `prefers-color-scheme: dark` rules: their Bootstrap dark theme is not shipped."""
    while match := _DARK_MEDIA.search(css):
        depth, position = 1, match.end()
        while depth and position < len(css):
            depth += {"{": 1, "}": -1}.get(css[position], 0)
            position += 1
        css = css[: match.start()] + css[position:]
    return css


def localise(page: str) -> str:
    """Point a GX page's CDN assets at `static/`, drop the others and every remaining remote reference."""

    def script(match: re.Match[str]) -> str:
        local = _local_asset(match["url"])
        return f'<script src="{local}"></script>' if local and local.endswith(".js") else ""

    def link(match: re.Match[str]) -> str:
        local = _local_asset(match["url"])
        return f'<link rel="stylesheet" href="{local}"/>' if local and local.endswith(".css") else ""

    def image(match: re.Match[str]) -> str:
        local = _local_asset(match["url"])
        return f'<img{match["before"]}src="{local}"{match["after"]}>' if local else ""

    page = _SCRIPT.sub(script, page)
    page = _LINK.sub(link, page)
    page = _IMG.sub(image, page)
    page = _FOOTER.sub("", page)  # GX's newsletter footer
    page = _ANCHOR.sub(lambda match: match["text"], page)
    page = _SUITE_ANCHOR.sub(lambda match: match["text"], page)  # suite pages are not rendered
    page = _HOME.sub(lambda match: f"{match[1]}{INDEX}{match[1]}", page)
    page = _GX_STATIC_IMAGE.sub(lambda match: f"{match[1]}{_STATIC}/images/", page)
    page = _STYLE_BLOCK.sub(lambda match: match[1] + _offline_css(_without_dark_theme(match[2])) + match[3], page)
    page = _STYLE_ATTRIBUTE.sub(lambda match: f"{match[1]}{match[2]}{_offline_css(match[3])}{match[2]}", page)
    leftovers = remote_references(page)
    if leftovers:  # a GX upgrade added an asset: keep the page offline, say what was cut
        log.warning("data docs: removed remote references %s", leftovers)
        page = _ATTRIBUTE.sub(lambda match: f'{match["name"]}="data:,"', page)
    return page


def _offline_css(css: str) -> str:
    return _CSS_URL.sub("none", _CSS_IMPORT.sub("", css))


def remote_references(text: str, *, stylesheet: bool = False) -> list[str]:
    """Remote URLs an HTML page (or, with `stylesheet`, a CSS file) would load or link.

    In a page: src/href/... attributes, and url() or @import in its <style> blocks and style
    attributes; text shown on the page is not a reference.
    """
    if stylesheet:
        styles = [text]
        found: list[str] = []
    else:
        styles = [match[2] for match in _STYLE_BLOCK.finditer(text)]
        styles += [match[3] for match in _STYLE_ATTRIBUTE.finditer(text)]
        found = [match[0] for match in _ATTRIBUTE.finditer(text)]
    for css in styles:
        found += [match[0] for match in _CSS_URL.finditer(css)]
        found += [match[0] for match in _CSS_IMPORT.finditer(css)]
    return found


def _copy_static(target: Path) -> None:
    (target / "images").mkdir(parents=True, exist_ok=True)
    for item in resources.files("validation").joinpath("static").iterdir():
        if item.is_file() and item.name != "README.md":
            (target / item.name).write_bytes(item.read_bytes())
    gx_images = resources.files("great_expectations").joinpath("render", "view", "static", "images")
    for name in _GX_IMAGES:
        (target / "images" / name).write_bytes(gx_images.joinpath(name).read_bytes())


# --- the stewards' summary ----------------------------------------------------------------------


def _failing_records(results: Mapping[str, Any]) -> dict[tuple[str, str], int]:
    """(entity, reason code) -> records that break the rule in the evaluation (one may break several)."""
    keys: dict[tuple[str, str], set[Any]] = {}
    for result in results.values():
        for expectation_result in result.results:
            meta = expectation_result.expectation_config.meta or {}
            if "entity" not in meta or "reason_code" not in meta:
                continue
            outcome = expectation_result.result or {}
            key_columns = outcome.get("unexpected_index_column_names") or []
            failing = keys.setdefault((meta["entity"], meta["reason_code"]), set())
            listed = outcome.get("unexpected_index_list") or []
            if listed and not isinstance(listed[0], dict):  # the keys themselves (validation/evaluate.py)
                failing.update(listed)
                continue
            for item in listed:
                failing.add(tuple(item.get(column) for column in key_columns) if isinstance(item, dict) else item)
    return {key: len(value) for key, value in keys.items()}


def _register_counts(register: pd.DataFrame | None) -> dict[tuple[str, str], int] | None:
    from validation.gate import register_counts

    return None if register is None else register_counts(register)


def _summary_rows(failing: dict[tuple[str, str], int],
                  retained: dict[tuple[str, str], int] | None) -> list[dict[str, Any]]:
    sections = []
    for entity in ENTITIES:
        rows = []
        for rule in rules_for(entity):
            key = (entity, rule.reason_code)
            rows.append({
                "reason_code": rule.reason_code,
                "outcome": OUTCOME_LABELS[rule.outcome],
                "retained": None if retained is None else retained.get(key, 0),
                "failing": failing.get(key, 0),
                "explanation": rule.explanation_fr,
                "action": rule.action_fr,
            })
        sections.append({"entity": entity, "title": ENTITY_TITLES[entity], "rules": rows})
    return sections


def _suite_rows(results: Mapping[str, Any], ordered: Iterable[str]) -> list[dict[str, Any]]:
    rows = []
    for suite in ordered:
        statistics = results[suite].statistics or {}
        rows.append({
            "suite": suite,
            "page": f"{suite}.html",
            "success": bool(results[suite].success),
            "evaluated": statistics.get("evaluated_expectations", 0),
            "unsuccessful": statistics.get("unsuccessful_expectations", 0),
            "success_percent": statistics.get("success_percent"),
        })
    return rows


def _gate_view(gate: GateResult | None) -> dict[str, Any] | None:
    if gate is None:
        return None

    def shown(threshold: str, value: float) -> str:
        return f"{value * 100:.1f} %" if threshold.startswith("max_rejected_share") else f"{value:g}"

    return {
        "passed": gate.passed,
        "source": gate.source,
        "breaches": [{"threshold": breach.threshold, "limit": shown(breach.threshold, breach.limit),
                      "observed": shown(breach.threshold, breach.observed),
                      "excess": (f"{breach.excess * 100:.1f} points" if breach.threshold.startswith("max_rejected")
                                 else f"{breach.excess:g}")}
                     for breach in gate.breaches],
    }


def _render_index(results: Mapping[str, Any], ordered: list[str], *, register: pd.DataFrame | None,
                  counts: Mapping[str, Mapping[str, int]] | None, gate: GateResult | None) -> str:
    import jinja2
    from great_expectations import __version__ as gx_version

    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("validation", "templates"), autoescape=True,
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
    )
    template = environment.get_template("data_docs_index.html.j2")
    return template.render(
        sections=_summary_rows(_failing_records(results), _register_counts(register)),
        suites=_suite_rows(results, ordered),
        counts=[{"title": ENTITY_TITLES[entity], **counts[entity]} for entity in ENTITIES if entity in counts]
        if counts else None,
        with_register=register is not None,
        gate=_gate_view(gate),
        gx_version=gx_version,
        static=_STATIC,
    )
