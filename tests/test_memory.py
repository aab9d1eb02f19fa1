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


@pytest.mark.parametrize(("asked", "backend"), [(None, "jemalloc"), ("mimalloc", "mimalloc"), ("system", "system")])
def test_the_command_line_allocates_arrow_memory_through_a_pool_that_gives_it_back(asked: str | None,
                                                                                   backend: str) -> None:
    """jemalloc hands freed pages back to the system as it goes; pyarrow's default mimalloc kept
    them, 80 to 190 MB more at each stage's peak at a million users. A pool named in
    ARROW_DEFAULT_MEMORY_POOL is left as asked."""
    import os
    import subprocess

    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    if asked is not None:
        env["ARROW_DEFAULT_MEMORY_POOL"] = asked
    script = ("import pyarrow as pa\n"
              "from pipelines.cli import main\n"
              "assert pa.default_memory_pool().backend_name != 'jemalloc' or 'jemalloc' == " + repr(asked) + "\n"
              "main(['status', '--help'], standalone_mode=False)\n"
              "print(pa.default_memory_pool().backend_name)\n")
    shown = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True,
                           cwd=Path(__file__).resolve().parents[1])
    assert shown.stdout.strip().splitlines()[-1] == backend


# After the command line has set things up: a block of 8 MiB is allocated and freed (by default
# glibc then serves blocks up to 8 MiB from its heap), then one of 3 MiB; how much of it glibc
# mapped on its own says whether it will go back to the system when freed.
_MAPPED_PROBE = """
import ctypes
from pipelines import memory
from pipelines.cli import main
main(['status', '--help'], standalone_mode=False)
class Mallinfo(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                'arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost'.split()]
libc = memory._LIBC
libc.mallinfo2.restype = Mallinfo
libc.malloc.restype, libc.malloc.argtypes, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_size_t], [ctypes.c_void_p]
libc.free(libc.malloc(8 << 20))
before = libc.mallinfo2().hblkhd
block = libc.malloc(3 << 20)
print('MAPPED', libc.mallinfo2().hblkhd - before)
libc.free(block)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or memory._LIBC is None
                    or not hasattr(memory._LIBC, "mallinfo2"), reason="glibc 2.33 or later only")
@pytest.mark.parametrize(("threshold", "mapped"), [(None, True), (str(32 << 20), False)])
def test_the_command_line_has_glibc_give_large_freed_blocks_back(threshold: str | None, mapped: bool) -> None:
    """A large block is its own mapping whatever was freed before (glibc's default raises the bar
    to each large block freed, and the heap it then serves them from kept 0.3 GB at a million
    users); MALLOC_MMAP_THRESHOLD_ in the environment is left as asked."""
    import os
    import subprocess

    env = {k: v for k, v in os.environ.items() if k != "MALLOC_MMAP_THRESHOLD_"}
    if threshold is not None:
        env["MALLOC_MMAP_THRESHOLD_"] = threshold
    shown = subprocess.run([sys.executable, "-c", _MAPPED_PROBE], env=env, capture_output=True, text=True,
                           check=True, cwd=Path(__file__).resolve().parents[1])
    grew = int(shown.stdout.strip().splitlines()[-1].removeprefix("MAPPED "))
    assert (grew >= 3 << 20) is mapped, f"mapped {grew} bytes of a 3 MiB block"
