"""Human-readable details of the exception register: what was found, never personal data or
password material (people are named by legacy id only)."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from pipelines.frames import LegacyFrames

_USER_DETAILS = {
    "USER_DELETED": "compte au statut SUPPRIME",
    "INVALID_EMAIL": "courriel absent ou syntaxiquement invalide",
    "MISSING_NAME": "nom ou prénom vide",
    "DUPLICATE_LOGIN": "courriel partagé avec un autre compte non supprimé",
    "LOGIN_TAKEN": "courriel déjà utilisé par un compte EFP Connect natif",
}


def _text(values: pd.Series) -> pd.Series:
    return values.astype("string").fillna("NULL")


def describe(kind: str, decided: pd.DataFrame, frames: LegacyFrames) -> pd.Series:
    """One detail per row of `decided` (a decisions frame, or a slice of one)."""
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
        rows = frames.etablissements.iloc[decided["survivor_row"].to_numpy()]
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
    # Each reason's text is made for its own rows only: made for every row of the register and
    # then picked, the eight texts weighed 0.25 GB at a million users.
    def holder(rows: pd.DataFrame) -> pd.Series:
        return "id_utilisateur " + _text(rows["holder_id"])

    templates: dict[str, Callable[[pd.DataFrame], pd.Series] | str] = {
        "NOT_GRANTED": lambda rows: "statut " + _text(rows["statut"]),
        "ORPHAN_USER": lambda rows: holder(rows) + " absent de l'extraction",
        "USER_DELETED": lambda rows: holder(rows) + " supprimé",
        "USER_REJECTED": lambda rows: holder(rows) + " rejeté",
        "ORPHAN_APPLICATION": "application absente de l'extraction",
        "APPLICATION_RETIRED": "application retirée",
        "APPLICATION_UNMAPPED": "application sans correspondance",
        "MISSING_SIRET": "usager PRO sans SIRET",
        "ORPHAN_ESTABLISHMENT": lambda rows: "SIRET " + _text(rows["siret"]) + " absent des établissements",
        "ESTABLISHMENT_REJECTED": lambda rows: "SIRET " + _text(rows["siret"]) + " rejeté",
        "ROLE_UNMAPPED": lambda rows: "rôle '" + _text(rows["role_label"]) + "' inconnu pour "
        + _text(rows["application_code"]),
        "EXPIRED": lambda rows: "accès échu à la date d'arrêté (date_fin " + _text(rows["date_fin"].astype(str)) + ")",
        "DUPLICATE_ACCESS": lambda rows: "doublon de id_habilitation " + _text(rows["merged_into"]),
    }
    reason = decided["reason_code"]
    detail = pd.Series("", index=decided.index, dtype=object)
    for code, text in templates.items():
        mask = reason.eq(code).to_numpy(dtype=bool, na_value=False)
        if mask.any():
            detail[mask] = text if isinstance(text, str) else text(decided[mask]).to_numpy(dtype=object)
    return detail
