"""Small legacy extracts built in code, written as a CSV folder or as LegacyFrames."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from pipelines.frames import LEGACY_FRAME_COLUMNS, LegacyFrames
from pipelines.legacy_schema import BOOLEAN_COLUMNS, DATE_COLUMNS, TIMESTAMP_COLUMNS

USER_DEFAULTS: dict[str, Any] = {
    "courriel": None, "nom": "Martin", "prenom": "Claire", "telephone": None, "type_compte": "PRO",
    "statut": "ACTIF", "date_creation": "2020-01-15 09:00:00", "date_derniere_connexion": None,
    "siret_rattachement": None,
}
HAB_DEFAULTS: dict[str, Any] = {
    "siret": None, "role": None, "responsable_acces": False, "statut": "ACTIVE",
    "date_debut": "2021-03-01 08:00:00", "date_fin": None, "date_relance": None, "id_delegant": None,
}
EST_DEFAULTS: dict[str, Any] = {
    "siren": None, "raison_sociale": "Formation Conseil SARL", "adresse": "1 rue de la Paix",
    "code_postal": "75002", "commune": "Paris", "date_fermeture": None,
}
CATALOGUE = ("CERES", "SOFFI", "MAF", "EDOF", "MSDC", "DECA", "AGECAP", "CELIA", "RUPCO", "REVIT",
             "EDEC", "DACCORD", "AGAPETH", "MDFSE", "POP", "PIC", "REACTEUR")


def default_applications() -> list[dict[str, Any]]:
    apps = [{"code_application": code, "libelle": f"Application {code}", "actif": True} for code in CATALOGUE]
    apps += [{"code_application": "ECR", "libelle": "Mes collectes formation", "actif": False},
             {"code_application": "REFSTRUCT", "libelle": "Référentiel structures", "actif": False}]
    return apps


def _rows(rows: Iterable[dict[str, Any]], defaults: dict[str, Any]) -> list[dict[str, Any]]:
    return [{**defaults, **row} for row in rows]


def build_tables(users: Iterable[dict[str, Any]], establishments: Iterable[dict[str, Any]],
                 habilitations: Iterable[dict[str, Any]],
                 applications: Iterable[dict[str, Any]] | None = None) -> dict[str, list[dict[str, Any]]]:
    return {
        "utilisateurs": _rows(users, USER_DEFAULTS),
        "etablissements": _rows(establishments, EST_DEFAULTS),
        "applications": list(applications) if applications is not None else default_applications(),
        "habilitations": _rows(habilitations, HAB_DEFAULTS),
    }


def write_csv_folder(tables: dict[str, list[dict[str, Any]]], folder: Path, *, delimiter: str = ";",
                     encoding: str = "utf-8") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, columns in LEGACY_FRAME_COLUMNS.items():
        header = list(columns) + (["mot_de_passe_hash"] if name == "utilisateurs" else [])
        with (folder / f"{name}.csv").open("w", encoding=encoding, newline="") as handle:
            writer = csv.writer(handle, delimiter=delimiter)
            writer.writerow(header)
            for row in tables[name]:
                values = []
                for column in header:
                    value = row.get(column, "$2b$12$SECRETHASHSECRETHASH" if column == "mot_de_passe_hash" else None)
                    if isinstance(value, bool):
                        value = "O" if value else "N"
                    values.append("" if value is None else value)
                writer.writerow(values)
    return folder


def to_frames(tables: dict[str, list[dict[str, Any]]]) -> LegacyFrames:
    """The frames exactly as the extract stage produces them (see pipelines/frames.py)."""
    built: dict[str, pd.DataFrame] = {}
    for name, columns in LEGACY_FRAME_COLUMNS.items():
        frame = pd.DataFrame(tables[name], columns=list(columns))
        for column in columns:
            if column in TIMESTAMP_COLUMNS.get(name, ()) or column in DATE_COLUMNS.get(name, ()):
                frame[column] = pd.to_datetime(frame[column], format="ISO8601").astype("datetime64[ns]")
            elif column in BOOLEAN_COLUMNS.get(name, ()):
                frame[column] = frame[column].astype(bool)
            elif column in ("id_utilisateur", "id_habilitation"):
                frame[column] = frame[column].astype("int64")
            elif column == "id_delegant":
                frame[column] = frame[column].astype("Int64")
            else:
                frame[column] = frame[column].astype("str")
        built[name] = frame
    return LegacyFrames(**built)


def write_database(tables: dict[str, list[dict[str, Any]]], url: str) -> str:
    """The same extract as a legacy database (with a password hash in every user row)."""
    from sqlalchemy import create_engine

    from pipelines.legacy_schema import legacy_metadata

    frames = to_frames(tables)
    engine = create_engine(url)
    legacy_metadata.drop_all(engine)
    legacy_metadata.create_all(engine)
    with engine.begin() as conn:
        for name, table in legacy_metadata.tables.items():
            frame = frames.table(name).astype(object).where(frames.table(name).notna(), None)
            rows = frame.to_dict("records")
            if name == "utilisateurs":
                rows = [{**row, "mot_de_passe_hash": "$2b$12$SECRETHASHSECRETHASH"} for row in rows]
            for row in rows:
                for key, value in row.items():
                    if isinstance(value, pd.Timestamp):
                        row[key] = value.to_pydatetime() if name != "etablissements" else value.date()
            if rows:
                conn.execute(table.insert(), rows)
    engine.dispose()
    return url
