"""The house rules as tests: ruff and mypy (strict on the packages) are clean, so CI enforces them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _tool(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: it is part of the test extra")
    return found


def test_ruff_is_clean() -> None:
    completed = subprocess.run([_tool("ruff"), "check", "--no-cache", "."], cwd=ROOT, capture_output=True,
                               text=True, check=False, timeout=300)
    assert completed.returncode == 0, completed.stdout + completed.stderr


@pytest.mark.slow
def test_mypy_is_clean() -> None:
    completed = subprocess.run([_tool("mypy"), "--no-incremental"], cwd=ROOT, capture_output=True, text=True,
                               check=False, timeout=900)
    assert completed.returncode == 0, completed.stdout + completed.stderr


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")
def test_the_benchmark_counts_the_memory_of_the_run_not_of_the_benchmark() -> None:
    """Linux counts in os.wait4's ru_maxrss the memory of the process that forked the child, up to
    its exec: a child using a few MB was reported at the benchmark's own 2.7 GB."""
    from tests.perf.bench import run_subprocess

    held = bytearray(600 * 2**20)  # held while the children run
    for page in range(0, len(held), 4096):
        held[page] = 1  # resident, not only reserved
    small = "import time; time.sleep(0.6)"
    large = "import time; b = bytearray(300 * 2**20)\nfor i in range(0, len(b), 4096): b[i] = 1\ntime.sleep(0.6)"
    peaks = []
    for code in (small, large):
        exit_code, _wall, peak, samples = run_subprocess([sys.executable, "-c", code], Path(os.devnull),
                                                         Path(os.devnull))
        assert exit_code == 0
        assert samples
        peaks.append(peak)
    assert peaks[0] < 100  # while this process holds 600 MB
    assert 300 <= peaks[1] < 450
