"""Human-readable details of the exception register: what was found, never personal data or
password material (people are named by legacy id only)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.frames import TEXT_DTYPE

_USER_DETAILS = {
    "USER_DELETED": "compte au statut SUPPRIME",
    "INVALID_EMAIL": "courriel absent ou syntaxiquement invalide",
    "MISSING_NAME": "nom ou prénom vide",
    "DUPLICATE_LOGIN": "courriel partagé avec un autre compte non supprimé",
    "LOGIN_TAKEN": "courriel déjà utilisé par un compte EFP Connect natif",
}


def _text(values: pd.Series) -> pd.Series:
    return values.astype("string").fillna("NULL")


def describe(kind: str, decided: pd.DataFrame, etablissements: pd.DataFrame | None = None) -> pd.Series:
    """One detail per row of `decided` (a decisions frame, or a slice of one); `etablissements`,
    the extract's establishments, for SIREN_CORRECTED (the SIREN given)."""
    if decided.empty:
        return pd.Series([], index=decided.index, dtype=object)
    if kind == "user":
        detail = decided["reason_code"].map(_USER_DETAILS).astype(object)
        merged = decided["outcome"].eq("merged")
        detail[merged] = "fusionné dans id_utilisateur " + _text(decided.loc[merged, "merged_into"])
        return detail
    if kind == "user_phone":
        return pd.Series("téléphone non valide, non repris", index=decided.index, dtype=object)
    if kind == "establishment":
        return pd.Series("SIRET '", index=decided.index, dtype=object) + decided.index.to_series().astype(str) \
            + "' : pas 14 chiffres ou clé de contrôle fausse"
    if kind == "SIREN_CORRECTED":
        if etablissements is None:
            raise ValueError("SIREN_CORRECTED details need the extract's establishments")
        rows = etablissements.iloc[decided["survivor_row"].to_numpy()]
        given = _text(rows["siren"]).to_numpy()
        return "siren '" + pd.Series(given, index=decided.index) + "' remplacé par '" \
            + decided.index.to_series().str.slice(0, 9) + "'"
    if kind == "DUPLICATE_SIRET":
        return decided["duplicate_rows"].astype(str) + " lignes pour ce SIRET ; ligne retenue : " \
            + (decided["survivor_row"] + 2).astype(str)
    if kind == "application":
        return decided["reason_code"].map(
            {"APPLICATION_RETIRED": "application inactive (actif = faux)",
             "APPLICATION_UNMAPPED": "aucun code EFP Connect dans la table de correspondance"}
        ).astype(object)
    if kind == "habilitation":
        return _habilitation_details(decided)
    raise ValueError(kind)


def _habilitation_details(decided: pd.DataFrame) -> pd.Series:
    """The details of habilitations, as Arrow-backed text (TEXT_DTYPE): made by Arrow from each
    reason's own rows, without a Python string a row. Through Python strings, the details of the
    half a million habilitations of a million users' register (two thirds of them NOT_GRANTED)
    were the transform's high-water mark: a string a row, then their Arrow copy in the register."""

    def holder(rows: pd.DataFrame) -> list[pa.Array | str]:
        return ["id_utilisateur ", _arrow_text(rows["holder_id"])]

    # Each template: its text, or the pieces its rows' texts are joined from.
    templates: dict[str, Callable[[pd.DataFrame], list[pa.Array | str]] | str] = {
        "NOT_GRANTED": lambda rows: ["statut ", _arrow_text(rows["statut"])],
        "ORPHAN_USER": lambda rows: [*holder(rows), " absent de l'extraction"],
        "USER_DELETED": lambda rows: [*holder(rows), " supprimé"],
        "USER_REJECTED": lambda rows: [*holder(rows), " rejeté"],
        "ORPHAN_APPLICATION": "application absente de l'extraction",
        "APPLICATION_RETIRED": "application retirée",
        "APPLICATION_UNMAPPED": "application sans correspondance",
        "MISSING_SIRET": "usager PRO sans SIRET",
        "ORPHAN_ESTABLISHMENT": lambda rows: ["SIRET ", _arrow_text(rows["siret"]), " absent des établissements"],
        "ESTABLISHMENT_REJECTED": lambda rows: ["SIRET ", _arrow_text(rows["siret"]), " rejeté"],
        "ROLE_UNMAPPED": lambda rows: ["rôle '", _arrow_text(rows["role_label"]), "' inconnu pour ",
                                       _arrow_text(rows["application_code"])],
        # pandas writes the dates (its text depends on the whole column: a time only when one has it).
        "EXPIRED": lambda rows: ["accès échu à la date d'arrêté (date_fin ",
                                 _arrow_text(rows["date_fin"].astype(str)), ")"],
        "DUPLICATE_ACCESS": lambda rows: ["doublon de id_habilitation ", _arrow_text(rows["merged_into"])],
    }
    reason = decided["reason_code"]
    at: list[np.ndarray] = []
    texts: list[pa.Array] = []
    for code, template in templates.items():
        rows = np.flatnonzero(reason.eq(code).to_numpy(dtype=bool, na_value=False))
        if not len(rows):
            continue
        at.append(rows)
        if isinstance(template, str):
            texts.append(pa.repeat(pa.scalar(template, pa.large_string()), len(rows)))
        else:
            pieces = [pa.scalar(piece, pa.large_string()) if isinstance(piece, str) else piece
                      for piece in template(decided.iloc[rows])]
            texts.append(pc.binary_join_element_wise(*pieces, pa.scalar("", pa.large_string())))
    # A row of no template gets an empty detail, as a row of an unknown reason always has.
    described = np.concatenate(at) if at else np.empty(0, dtype=np.int64)
    others = np.setdiff1d(np.arange(len(decided)), described, assume_unique=True)
    texts.append(pa.repeat(pa.scalar("", pa.large_string()), len(others)))
    order = np.argsort(np.concatenate([described, others]), kind="stable")  # back to the rows' order
    detail = pa.concat_arrays(texts).take(pa.array(order))
    return pd.Series(pd.array(detail, dtype=TEXT_DTYPE), index=decided.index)


def _arrow_text(values: pd.Series) -> pa.Array:
    """_text's strings as an Arrow array: each value's text, NULL where missing."""
    array = pa.array(values.array if isinstance(values.dtype, pd.CategoricalDtype) else values)
    return pc.fill_null(pc.cast(array, pa.large_string()), pa.scalar("NULL", pa.large_string()))
