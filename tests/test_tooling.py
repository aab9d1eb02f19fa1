"""The house rules as tests: ruff and mypy (strict on the packages) are clean, so CI enforces them."""

from __future__ import annotations

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
