"""A real headless Chromium, with networking disabled, for tests that must see a page as a person would.

Chromium runs with its background services off and a proxy on a closed local port, so any
http(s) request a page makes fails instead of reaching the network. Chromium's own net log is
read back to list the requests the page attempted, and its console to catch script errors.

Debian's `chromium` package provides the browser (`apt-get install chromium`). When it is
missing the browser tests skip with the reason, except when EFP_REQUIRE_CHROMIUM=1, where they
fail: CI must never skip them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

ARTIFACTS = Path(__file__).parent / "artifacts"  # screenshots; gitignored
CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser")
TIMEOUT_SECONDS = 90


def chromium_path() -> str | None:
    for candidate in CANDIDATES:
        found = candidate if Path(candidate).is_file() and os.access(candidate, os.X_OK) else shutil.which(candidate)
        if found:
            return found
    return None


def require_chromium() -> str:
    """The browser's path; skips the test when there is none, or fails it under EFP_REQUIRE_CHROMIUM=1."""
    found = chromium_path()
    if found is None:
        reason = "no Chromium: install Debian's `chromium` package (apt-get install chromium)"
        if os.environ.get("EFP_REQUIRE_CHROMIUM") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return found


def offline_flags(profile: Path) -> list[str]:
    return [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
        "--no-first-run", "--no-default-browser-check", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-extensions", "--hide-scrollbars",
        f"--user-data-dir={profile}",
        # Every request goes to a proxy on a closed port: networking is effectively off.
        "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>",
    ]


@dataclass(frozen=True)
class PageLoad:
    dom: str  # the DOM after the page's scripts ran
    console: tuple[str, ...]  # console messages, uncaught script errors included
    network_requests: tuple[str, ...]  # URLs the page tried to fetch over the network


def _run(arguments: list[str]) -> subprocess.CompletedProcess[str]:
    completed = subprocess.run(arguments, capture_output=True, text=True, timeout=TIMEOUT_SECONDS, check=False)
    if completed.returncode != 0:
        raise AssertionError(f"chromium exited with {completed.returncode}: {completed.stderr[-2000:]}")
    return completed


def load_page(path: Path) -> PageLoad:
    """Open a local file in the offline browser: its DOM, console and attempted network requests."""
    chromium = require_chromium()
    with tempfile.TemporaryDirectory(prefix="efp-chromium-") as scratch:
        net_log = Path(scratch) / "net-log.json"
        completed = _run([chromium, *offline_flags(Path(scratch) / "profile"), f"--log-net-log={net_log}",
                          "--enable-logging=stderr", "--v=0", "--dump-dom", path.resolve().as_uri()])
        requests = _page_requests(net_log)
    console = tuple(line for line in completed.stderr.splitlines() if ":CONSOLE" in line)
    return PageLoad(dom=completed.stdout, console=console, network_requests=requests)


def render_dom(path: Path) -> str:
    """The DOM of a local page after its scripts ran, in the offline browser."""
    return load_page(path).dom


def screenshot(path: Path, png_path: Path, *, width: int = 1280, height: int = 1800) -> Path:
    """A PNG of a local page as the offline browser draws it."""
    chromium = require_chromium()
    png_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="efp-chromium-") as scratch:
        _run([chromium, *offline_flags(Path(scratch) / "profile"), f"--window-size={width},{height}",
              f"--screenshot={png_path.resolve()}", path.resolve().as_uri()])
    if not png_path.is_file() or png_path.stat().st_size == 0:
        raise AssertionError(f"chromium wrote no screenshot at {png_path}")
    return png_path


def _page_requests(net_log: Path) -> tuple[str, ...]:
    """URLs requested on behalf of a file:// page (Chromium's own background calls are left out)."""
    log = json.loads(net_log.read_text(encoding="utf-8"))
    start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    urls = []
    for event in log.get("events", []):
        params = event.get("params") or {}
        url = str(params.get("url", ""))
        if (event.get("type") == start_job and str(params.get("network_isolation_key", "")).startswith("file://")
                and not url.startswith(("file:", "data:", "blob:"))):
            urls.append(url)
    return tuple(dict.fromkeys(urls))
