"""Data stewards' decisions fed back into a run: which user survives a DUPLICATE_LOGIN group.

The file is a CSV a steward writes by hand (UTF-8 or Windows-1252, `;` or `,`):
    id_utilisateur_survivant;commentaire
    1042;garde le compte le plus récent
One line per group: the survivor's login names the group; the group's other members are merged
into it and their habilitations move to it.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from pipelines.errors import ConfigurationError

SURVIVOR_COLUMN = "id_utilisateur_survivant"


def read_resolutions(path: str | Path) -> tuple[int, ...]:
    """The survivor ids named in a resolution file, each checked to be a whole number."""
    file = Path(path)
    if not file.is_file():
        raise ConfigurationError(f"--resolutions: {file} not found")
    raw = file.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("cp1252", errors="strict")
    first_line = text.splitlines()[0] if text.strip() else ""
    delimiter = ";" if first_line.count(";") >= first_line.count(",") else ","
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    header = [cell.strip().lower() for cell in next(reader, [])]
    if SURVIVOR_COLUMN not in header:
        raise ConfigurationError(f"{file.name}, line 1: the column {SURVIVOR_COLUMN!r} is missing")
    column = header.index(SURVIVOR_COLUMN)
    survivors: list[int] = []
    for line_number, row in enumerate(reader, start=2):
        if not any(cell.strip() for cell in row):
            continue
        value = row[column].strip() if column < len(row) else ""
        if not value.isdigit():
            raise ConfigurationError(f"{file.name}, line {line_number}: {value!r} is not an id_utilisateur")
        survivors.append(int(value))
    return tuple(survivors)
