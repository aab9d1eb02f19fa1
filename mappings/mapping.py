"""The mapping legacy -> EFP Connect, loaded from editable CSV data (default: mappings/default/)."""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from mappings.normalize import role_match_key
from pipelines.errors import ConfigurationError

DEFAULT_MAPPINGS_DIR = Path(__file__).parent / "default"
WILDCARD_APPLICATION = "*"
MAPPING_FILES = ("applications.csv", "roles.csv", "role_aliases.csv")
_YES = {"yes", "oui", "o", "true", "1"}
_NO = {"no", "non", "n", "false", "0"}


@dataclass(frozen=True)
class Mapping:
    """Application codes and role vocabularies; `role_keys` maps (efp app, match key) -> role code."""

    directory: str
    application_codes: dict[str, str]  # legacy code -> EFP Connect code
    roles: dict[str, tuple[str, ...]]  # EFP app (or "*") -> its canonical role codes
    default_roles: dict[str, str]  # EFP app (or "*") -> default role code
    role_keys: dict[tuple[str, str], str]
    file_checksums: dict[str, str] = field(default_factory=dict)

    def roles_of(self, efp_code: str) -> tuple[str, ...]:
        return self.roles.get(efp_code, self.roles.get(WILDCARD_APPLICATION, ()))

    def default_role(self, efp_code: str) -> str | None:
        return self.default_roles.get(efp_code, self.default_roles.get(WILDCARD_APPLICATION))

    def canonical_role(self, efp_code: str, label: str | None) -> str | None:
        """The role code for a legacy label; the default role for a NULL/blank label; None if unmapped."""
        if label is None or not label.strip():
            return self.default_role(efp_code)
        key = role_match_key(label)
        app = efp_code if efp_code in self.roles else WILDCARD_APPLICATION
        return self.role_keys.get((app, key))


def _read_rows(path: Path, columns: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    if not path.is_file():
        raise ConfigurationError(f"{path}: mapping file not found")
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in columns if c not in (reader.fieldnames or [])]
            if missing:
                raise ConfigurationError(f"{path}, line 1: missing column(s) {', '.join(missing)}")
            return [
                (number, {k: (row.get(k) or "").strip() for k in columns})
                for number, row in enumerate(reader, start=2)
            ]
    except UnicodeDecodeError as exc:
        raise ConfigurationError(f"{path}: not UTF-8 ({exc.reason})") from None


def load_mapping(directory: str | Path | None = None) -> Mapping:
    """Reads and checks a mapping folder; every problem names the file and the line."""
    folder = Path(directory) if directory is not None else DEFAULT_MAPPINGS_DIR
    if not folder.is_dir():
        raise ConfigurationError(f"--mappings: {folder} is not a folder")
    checksums = {name: hashlib.sha256((folder / name).read_bytes()).hexdigest()
                 for name in MAPPING_FILES if (folder / name).is_file()}

    application_codes: dict[str, str] = {}
    apps_path = folder / "applications.csv"
    for line, row in _read_rows(apps_path, ("legacy_code", "efp_code")):
        if not row["legacy_code"] or not row["efp_code"]:
            raise ConfigurationError(f"{apps_path}, line {line}: legacy_code and efp_code are required")
        if row["legacy_code"] in application_codes:
            raise ConfigurationError(f"{apps_path}, line {line}: {row['legacy_code']!r} is mapped twice")
        application_codes[row["legacy_code"]] = row["efp_code"]

    roles: dict[str, list[str]] = {}
    default_roles: dict[str, str] = {}
    role_keys: dict[tuple[str, str], str] = {}
    roles_path = folder / "roles.csv"
    for line, row in _read_rows(roles_path, ("efp_application_code", "role_code", "is_default", "label")):
        app, role = row["efp_application_code"], row["role_code"]
        if not app or not role:
            raise ConfigurationError(f"{roles_path}, line {line}: efp_application_code and role_code are required")
        flag = row["is_default"].lower()
        if flag not in _YES | _NO:
            raise ConfigurationError(f"{roles_path}, line {line}: is_default must be yes or no, not {flag!r}")
        roles.setdefault(app, []).append(role)
        if flag in _YES:
            if app in default_roles:
                raise ConfigurationError(f"{roles_path}, line {line}: {app} has two default roles")
            default_roles[app] = role
        for spelling in (role, row["label"]):
            if spelling:
                _add_key(role_keys, app, spelling, role, f"{roles_path}, line {line}")
    for app in roles:
        if app not in default_roles:
            raise ConfigurationError(f"{roles_path}: {app} has no default role (is_default = yes)")

    aliases_path = folder / "role_aliases.csv"
    if aliases_path.is_file():
        for line, row in _read_rows(aliases_path, ("efp_application_code", "alias", "role_code")):
            app, alias, role = row["efp_application_code"], row["alias"], row["role_code"]
            if role not in roles.get(app, []):
                raise ConfigurationError(f"{aliases_path}, line {line}: {role!r} is not a role of {app!r} in roles.csv")
            _add_key(role_keys, app, alias, role, f"{aliases_path}, line {line}")

    return Mapping(
        directory=str(folder),
        application_codes=application_codes,
        roles={app: tuple(codes) for app, codes in roles.items()},
        default_roles=default_roles,
        role_keys=role_keys,
        file_checksums=checksums,
    )


def _add_key(keys: dict[tuple[str, str], str], app: str, spelling: str, role: str, where: str) -> None:
    key = (app, role_match_key(spelling))
    existing = keys.get(key)
    if existing is not None and existing != role:
        raise ConfigurationError(f"{where}: {spelling!r} would match both {existing} and {role}")
    keys[key] = role
