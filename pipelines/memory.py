"""Keeping the cyclic garbage collector out of the way of bulk work.

A stage builds millions of rows, tuples and strings that are not cycles: every automatic
collection walks all the live container objects again, so a run of a million users spent about
half of its extract in the collector. Reference counting still frees everything at once; the
collector runs once, between stages, where the last stage's frames have just been released.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


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
    """One full collection, for the cycles the stage that just ended left behind."""
    gc.collect()
