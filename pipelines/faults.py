"""Named crash points, for the tests that kill a run at an exact place and rerun it.

`EFP_KILL_AT=<point>` makes the process SIGKILL itself when it reaches that point: no
cleanup, no exception handler, no atexit, exactly like an operator's `kill -9` or an OOM
kill. Unset (always, in production) a checkpoint costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

KILL_ENV = "EFP_KILL_AT"


def checkpoint(point: str) -> None:
    if os.environ.get(KILL_ENV) == point:
        os.kill(os.getpid(), signal.SIGKILL)
