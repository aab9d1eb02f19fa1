"""The evidence manifest of a run folder: the SHA-256 of every file in it, and of the inputs.

`write_manifest` records them in `manifest.json`; `verify_manifest` recomputes them and lists
what changed, disappeared or appeared since. The manifest cannot vouch for itself: its own
SHA-256 is given to whoever signs the report off, so that they can record it.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pipelines
from pipelines.errors import ConfigurationError

MANIFEST_NAME = "manifest.json"
ALGORITHM = "sha256"
_CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _artefacts(run_dir: Path) -> dict[str, str]:
    """relative POSIX path -> SHA-256 of every file under run_dir, but the manifest itself."""
    found: dict[str, str] = {}
    for folder, subfolders, files in os.walk(run_dir):
        subfolders.sort()
        for name in sorted(files):
            path = Path(folder) / name
            relative = path.relative_to(run_dir).as_posix()
            if relative == MANIFEST_NAME or relative.startswith(f"{MANIFEST_NAME}.") or not path.is_file():
                continue
            found[relative] = file_sha256(path)
    return dict(sorted(found.items()))


def write_manifest(run_dir: Path, inputs: dict[str, str]) -> Path:
    """Writes run_dir/manifest.json: every file's SHA-256 and the checksums of the inputs."""
    run_dir = Path(run_dir)
    manifest = {
        "algorithm": ALGORITHM,
        "files": _artefacts(run_dir),
        "inputs": dict(sorted(inputs.items())),
        "tool_version": pipelines.__version__,
    }
    path = run_dir / MANIFEST_NAME
    partial = run_dir / f"{MANIFEST_NAME}.partial"
    text = json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)
    return path


@dataclass(frozen=True)
class VerifyResult:
    run_dir: str
    checked: int
    changed: tuple[str, ...]
    missing: tuple[str, ...]
    added: tuple[str, ...]
    manifest_sha256: str

    @property
    def intact(self) -> bool:
        return not (self.changed or self.missing or self.added)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_dir": self.run_dir,
            "intact": self.intact,
            "checked": self.checked,
            "changed": list(self.changed),
            "missing": list(self.missing),
            "added": list(self.added),
            "manifest_sha256": self.manifest_sha256,
        }


def read_manifest(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / MANIFEST_NAME
    if not path.is_file():
        raise ConfigurationError(f"{path}: no manifest in this folder (is it a run folder?)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigurationError(f"{path}: not a readable manifest ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("algorithm") != ALGORITHM \
            or not isinstance(manifest.get("files"), dict):
        raise ConfigurationError(f"{path}: not a manifest written by efp-migrate (no sha256 file list)")
    checked: dict[str, Any] = manifest
    return checked


def verify_manifest(run_dir: Path) -> VerifyResult:
    """Recomputes every file's SHA-256 and compares with manifest.json."""
    run_dir = Path(run_dir)
    recorded: dict[str, str] = {str(k): str(v) for k, v in read_manifest(run_dir)["files"].items()}
    current = _artefacts(run_dir)
    common = recorded.keys() & current.keys()
    return VerifyResult(
        run_dir=str(run_dir),
        checked=len(recorded),
        changed=tuple(sorted(name for name in common if recorded[name] != current[name])),
        missing=tuple(sorted(recorded.keys() - current.keys())),
        added=tuple(sorted(current.keys() - recorded.keys())),
        manifest_sha256=file_sha256(run_dir / MANIFEST_NAME),
    )
