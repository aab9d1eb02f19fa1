"""Stage outputs kept in the run folder, so that each stage can also run as its own command.

Pickles, because the frames carry dtypes a CSV would lose; they are only ever read back from a
run folder this tool wrote, which is readable by its owner only.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

from pipelines.errors import ConfigurationError

STAGE_DIR = "stages"
CONTEXT_FILE = "context.json"
_PREVIOUS = {"validate": "extract", "transform": "validate", "load": "transform"}


def _path(out_dir: Path, stage: str) -> Path:
    return out_dir / STAGE_DIR / f"{stage}.pkl"


def save_stage(out_dir: Path, stage: str, result: Any) -> Path:
    path = _path(out_dir, stage)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_suffix(".tmp")
    with temporary.open("wb") as handle:
        pickle.dump(result, handle, protocol=pickle.HIGHEST_PROTOCOL)
    temporary.chmod(0o600)
    temporary.replace(path)  # never a half-written stage output
    return path


def load_stage(out_dir: Path, stage: str, *, for_stage: str) -> Any:
    path = _path(out_dir, stage)
    if not path.is_file():
        raise ConfigurationError(
            f"{out_dir}: no output of the {stage} stage; run `efp-migrate {stage} --out {out_dir}` "
            f"before `efp-migrate {for_stage}`"
        )
    with path.open("rb") as handle:
        return pickle.load(handle)  # noqa: S301 (our own owner-only run folder)


def save_context(out_dir: Path, context: dict[str, Any]) -> None:
    (out_dir / STAGE_DIR).mkdir(parents=True, exist_ok=True, mode=0o700)
    (out_dir / STAGE_DIR / CONTEXT_FILE).write_text(json.dumps(context, sort_keys=True, default=str))


def load_context(out_dir: Path) -> dict[str, Any]:
    path = out_dir / STAGE_DIR / CONTEXT_FILE
    if not path.is_file():
        raise ConfigurationError(f"{out_dir}: no validate context; run `efp-migrate validate --out {out_dir}` first")
    data: dict[str, Any] = json.loads(path.read_text())
    return data
