"""Named crash points, for the tests that kill a run at an exact place and rerun it.

`EFP_KILL_AT=<point>` makes the process SIGKILL itself the first time it reaches that point,
`EFP_KILL_AT=<point>#<n>` the n-th time (e.g. `load:batch#3`, the third staged batch): no
cleanup, no exception handler, no atexit, exactly like an operator's `kill -9` or an OOM kill.
Unset (always, in production) a checkpoint costs one environment lookup.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

KILL_ENV = "EFP_KILL_AT"
_reached: Counter[str] = Counter()


def checkpoint(point: str) -> None:
    wanted = os.environ.get(KILL_ENV)
    if not wanted:
        return
    _reached[point] += 1
    if wanted in (point, f"{point}#{_reached[point]}"):
        os.kill(os.getpid(), signal.SIGKILL)
