"""The in-memory shapes that pass between stages, as typed, frozen containers of DataFrames.

Conventions every stage relies on:
- text columns are strings; a missing value is NA (`pd.isna` is true), never "" (readers turn
  an empty field into NA). Some may be categoricals of such text, and every stage takes both:
  the extract gives `type_compte` and both `statut` as categoricals of their allowed values,
  and the habilitations' `code_application`, `siret` and `role` as categoricals of the values
  they hold (a code a row instead of a string: the frames weigh 318 MiB at a million users,
  against 485 as text); the accounts' account_type and status, and the access frames'
  application_code, siret and role, stay so;
- timestamps are `datetime64[ns]`, naive, in Europe/Paris wall time (legacy's own clock, kept
  as is so that `valid_from` equals `date_debut` to the second); dates are `datetime64[ns]` at
  midnight;
- booleans are `bool`; nullable integers (`id_delegant`) are `Int64`, other ids `int64`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

# pandas' own string dtype (NA is NaN): what `pd.Series(["a"])` infers, so that later stages and
# their tests build frames of the same dtype without naming it. Arrow-backed when pyarrow is
# installed (a project dependency): a few bytes a value instead of a Python object each.
TEXT_DTYPE = pd.StringDtype(na_value=np.nan)

LEGACY_FRAME_COLUMNS: dict[str, tuple[str, ...]] = {
    "utilisateurs": (
        "id_utilisateur",
        "courriel",
        "nom",
        "prenom",
        "telephone",
        "type_compte",
        "statut",
        "date_creation",
        "date_derniere_connexion",
        "siret_rattachement",
    ),
    "etablissements": (
        "siret",
        "siren",
        "raison_sociale",
        "adresse",
        "code_postal",
        "commune",
        "date_fermeture",
    ),
    "applications": ("code_application", "libelle", "actif"),
    "habilitations": (
        "id_habilitation",
        "id_utilisateur",
        "code_application",
        "siret",
        "role",
        "responsable_acces",
        "statut",
        "date_debut",
        "date_fin",
        "date_relance",
        "id_delegant",
    ),
}


@dataclass(frozen=True)
class LegacyFrames:
    """The four legacy tables as read, with exactly the columns of LEGACY_FRAME_COLUMNS.

    `type_compte` and both `statut` columns are trimmed and upper-cased by the reader;
    `code_application` is trimmed. Everything else is as found in the extract.
    """

    utilisateurs: pd.DataFrame
    etablissements: pd.DataFrame
    applications: pd.DataFrame
    habilitations: pd.DataFrame

    def table(self, name: str) -> pd.DataFrame:
        frame: pd.DataFrame = getattr(self, name)
        return frame

    def row_counts(self) -> dict[str, int]:
        return {name: len(self.table(name)) for name in LEGACY_FRAME_COLUMNS}


TARGET_FRAME_COLUMNS: dict[str, tuple[str, ...]] = {
    # Written by the migration; must_reset_password/password_hash/origin are set by the loader.
    "accounts": (
        "legacy_user_id",
        "login",
        "email",
        "last_name",
        "first_name",
        "phone",
        "account_type",
        "status",
        "created_at",
        "last_login_at",
    ),
    "establishments": ("siret", "siren", "name", "address", "postal_code", "city", "closed_on"),
    "applications": ("code", "name", "legacy_code"),
    # account_id is resolved by the loader from legacy_user_id, in SQL.
    "entitlements": (
        "legacy_habilitation_id",
        "legacy_user_id",
        "application_code",
        "siret",
        "role",
        "is_access_manager",
        "valid_from",
        "valid_until",
        "delegated_by_legacy_user_id",
    ),
    "access_requests": (
        "legacy_habilitation_id",
        "legacy_user_id",
        "application_code",
        "siret",
        "role",
        "requested_at",
        "last_reminder_at",
    ),
    "exceptions": ("entity", "legacy_key", "outcome", "reason_code", "detail", "merged_into"),
}


@dataclass(frozen=True)
class TargetFrames:
    """What the transform hands to the load: the complete desired state of migrated rows."""

    accounts: pd.DataFrame
    establishments: pd.DataFrame
    applications: pd.DataFrame
    entitlements: pd.DataFrame
    access_requests: pd.DataFrame
    exceptions: pd.DataFrame

    def table(self, name: str) -> pd.DataFrame:
        frame: pd.DataFrame = getattr(self, name)
        return frame

    def row_counts(self) -> dict[str, int]:
        return {name: len(self.table(name)) for name in TARGET_FRAME_COLUMNS}
