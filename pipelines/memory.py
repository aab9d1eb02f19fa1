"""Keeping the cyclic garbage collector out of the way of bulk work.

A stage builds millions of rows, tuples and strings that are not cycles: every automatic
collection walks all the live container objects again, so a run of a million users spent about
half of its extract in the collector. Reference counting still frees everything at once; the
collector runs once, between stages, where the last stage's frames have just been released.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def gc_paused() -> Iterator[None]:
    """No automatic collection inside the block (nested blocks are fine); the caller's setting after."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def collect_between_stages() -> None:
    """One full collection, for the cycles the stage that just ended left behind; then what the
    allocators keep of the freed memory goes back to the system, so that the next stage's peak is
    its own and not the sum of every stage's leftovers."""
    gc.collect()
    release_freed_memory()


def release_freed_memory() -> None:
    """What the allocators keep of freed memory goes back to the system (no collection: safe and
    quick in a thread while another one works)."""
    import pyarrow as pa

    pa.default_memory_pool().release_unused()  # Arrow's mimalloc/jemalloc keep freed pages
    if _LIBC is not None:
        _LIBC.malloc_trim(0)  # glibc keeps freed heap memory, numpy's arrays included


def _libc() -> Any:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    except (OSError, AttributeError):  # not glibc: nothing to trim
        return None
    return libc


_LIBC = _libc()


def use_returning_arrow_pool() -> None:
    """Arrow allocates through jemalloc, which hands freed pages back to the system within a
    second, rather than pyarrow's default mimalloc, which keeps them until asked (`release_unused`,
    between stages only): at a million users every stage's peak was 80 to 190 MB lower. And at
    once, not after jemalloc's default decay of its dirty pages: with it, the users' suite left
    0.2 GB of freed pages in the process at a million users, under the habilitations' part (the
    validation alone, measured right after that suite: 1,093 against 873 MB). Unless
    ARROW_DEFAULT_MEMORY_POOL names a pool, or pyarrow was built without jemalloc."""
    import pyarrow as pa

    if os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        return
    try:
        pool = pa.jemalloc_memory_pool()
    except NotImplementedError:
        return
    pa.set_memory_pool(pool)
    pa.jemalloc_set_decay_ms(0)


# glibc's mallopt parameter for the size from which an allocation is its own mapping.
_M_MMAP_THRESHOLD = -3
# Blocks of 1 MiB and more (any array of more than 131,072 values) are mapped on their own and
# unmapped when freed. Smaller ones stay in glibc's heap, where they are cheap (measured at a
# million users: 256 KiB was as lean, and slower).
MMAP_THRESHOLD_BYTES = 1 << 20


def use_returning_malloc() -> None:
    """glibc gives a freed large block back to the system at once, whatever came before it.

    By default glibc raises its mmap threshold to the size of each large block freed (up to
    32 MiB), after which blocks of that size come from its heap, whose freed memory mostly stays
    in the process: at a million users the reconciliation's peak was 0.3 GB above what it held.
    Setting the threshold turns that adjustment off. Left as it is when MALLOC_MMAP_THRESHOLD_
    (glibc's own setting) is in the environment, or without glibc."""
    if _LIBC is None or os.environ.get("MALLOC_MMAP_THRESHOLD_"):
        return
    _LIBC.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
