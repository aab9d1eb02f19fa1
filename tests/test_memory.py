"""Between stages, freed memory goes back to the system instead of adding to the next stage's peak."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from pipelines import memory


def process_mib(field: str) -> float:
    """One size line of /proc/self/status (VmRSS, VmSize...), in MiB."""
    with Path("/proc/self/status").open(encoding="ascii") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} line")


@pytest.mark.skipif(not sys.platform.startswith("linux") or memory._LIBC is None, reason="glibc only")
def test_collect_between_stages_returns_freed_heap_memory_to_the_system() -> None:
    arrays = [np.ones(1_000) for _ in range(50_000)]  # 8 KB each: glibc's heap, not mmap
    pinned = np.ones(1_000)  # allocated last: the heap's top stays in use, so glibc keeps the rest
    del arrays
    before = process_mib("VmRSS")

    memory.collect_between_stages()

    assert process_mib("VmRSS") < before - 250, "the ~400 MB freed stayed in the process"
    assert pinned.sum() == 1_000
