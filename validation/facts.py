"""Facts frames: each entity's legacy columns normalised, plus lookups of other entities' outcomes.

The rules of validation/rules.py are evaluated on these frames. Building a fact is
normalising or looking up, never deciding: every decision comes from the rule evaluation.
"""

from __future__ import annotations

import pandas as pd

from mappings.mapping import Mapping
from mappings.normalize import clean_name, email_of, login_of, siret_digits

MIGRATED = "migrated"


def _blank_to_na(series: pd.Series) -> pd.Series:
    return series.mask(series.str.len() == 0)


def user_facts(utilisateurs: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id_utilisateur": utilisateurs["id_utilisateur"].to_numpy(),
            "statut": utilisateurs["statut"].to_numpy(),
            "type_compte": utilisateurs["type_compte"].to_numpy(),
            "email": _blank_to_na(email_of(utilisateurs["courriel"])).to_numpy(),
            "login": login_of(utilisateurs["courriel"]).to_numpy(),
            "last_name": _blank_to_na(clean_name(utilisateurs["nom"])).to_numpy(),
            "first_name": _blank_to_na(clean_name(utilisateurs["prenom"])).to_numpy(),
            "telephone": _blank_to_na(utilisateurs["telephone"].str.strip()).to_numpy(),
        }
    )


def establishment_facts(etablissements: pd.DataFrame) -> pd.DataFrame:
    digits = _blank_to_na(siret_digits(etablissements["siret"]))
    return pd.DataFrame(
        {
            "row_number": range(len(etablissements)),
            "siret_digits": digits.to_numpy(),
            "siren_digits": _blank_to_na(siret_digits(etablissements["siren"])).to_numpy(),
            "siren_of_siret": digits.str.slice(0, 9).to_numpy(),
            "is_closed": etablissements["date_fermeture"].notna().to_numpy(),
        }
    )


def application_facts(applications: pd.DataFrame) -> pd.DataFrame:
    # One record per legacy code: a code listed twice is one application (the first row wins).
    unique = applications.drop_duplicates("code_application", keep="first")
    return pd.DataFrame(
        {
            "code_application": unique["code_application"].to_numpy(),
            "actif": unique["actif"].astype(bool).to_numpy(),
        }
    )


def habilitation_facts(
    habilitations: pd.DataFrame,
    user_decisions: pd.DataFrame,
    user_types: pd.Series,
    application_decisions: pd.DataFrame,
    establishment_decisions: pd.DataFrame,
    mapping: Mapping,
) -> pd.DataFrame:
    """One row per habilitation, with the state of its holder, application and establishment.

    `user_decisions` is indexed by id_utilisateur with columns outcome, merged_into;
    `application_decisions` by legacy code with outcome, reason_code, efp_code;
    `establishment_decisions` by normalised SIRET with outcome.
    """
    holder = habilitations["id_utilisateur"]
    merged_into = holder.map(user_decisions["merged_into"])
    holder_id = merged_into.fillna(holder).astype("int64")
    effective_outcome = holder_id.map(user_decisions["outcome"])
    original_outcome = holder.map(user_decisions["outcome"])
    holder_state = pd.Series("ok", index=habilitations.index, dtype=object)
    holder_state[effective_outcome.ne(MIGRATED) & effective_outcome.notna()] = "rejected"
    holder_state[original_outcome.eq("excluded")] = "deleted"
    holder_state[original_outcome.isna()] = "missing"

    code = habilitations["code_application"]
    app_outcome = code.map(application_decisions["reason_code"])
    application_state = pd.Series("ok", index=habilitations.index, dtype=object)
    application_state[app_outcome.eq("APPLICATION_RETIRED")] = "retired"
    application_state[app_outcome.eq("APPLICATION_UNMAPPED")] = "unmapped"
    application_state[~code.isin(application_decisions.index)] = "missing"
    efp_code = code.map(application_decisions["efp_code"])

    siret = _blank_to_na(siret_digits(habilitations["siret"]))
    holder_type = holder_id.map(user_types)
    establishment_outcome = siret.map(establishment_decisions["outcome"])
    establishment_state = pd.Series("ok", index=habilitations.index, dtype=object)
    establishment_state[establishment_outcome.ne(MIGRATED) & establishment_outcome.notna()] = "rejected"
    establishment_state[siret.notna() & establishment_outcome.isna()] = "unknown"
    establishment_state[siret.isna()] = "not_required"
    establishment_state[siret.isna() & holder_type.eq("PRO")] = "missing_for_pro"

    role_code = _canonical_roles(efp_code, habilitations["role"], mapping)

    return pd.DataFrame(
        {
            "id_habilitation": habilitations["id_habilitation"].to_numpy(),
            "statut": habilitations["statut"].to_numpy(),
            "holder_id": holder_id.to_numpy(),
            "holder_state": holder_state.to_numpy(),
            "application_state": application_state.to_numpy(),
            "application_code": efp_code.to_numpy(),
            "establishment_state": establishment_state.to_numpy(),
            "siret": siret.to_numpy(),
            # Agents' access has no SIRET; the key still has to group such rows together.
            "siret_key": siret.fillna("").to_numpy(),
            "role_label": habilitations["role"].to_numpy(),
            "role_code": role_code.to_numpy(),
            "date_fin": habilitations["date_fin"].to_numpy(),
            "kind": habilitations["statut"].to_numpy(),
        }
    )


def _canonical_roles(efp_code: pd.Series, label: pd.Series, mapping: Mapping) -> pd.Series:
    """Canonical role per habilitation, asking the mapping once per distinct (application, label)."""
    no_label = "\x00no-label"  # a NULL label means the default role; NaN cannot be a join key
    pairs = pd.DataFrame({"app": efp_code.to_numpy(), "label": label.fillna(no_label).to_numpy()})
    distinct = pairs.dropna(subset=["app"]).drop_duplicates().reset_index(drop=True)
    distinct["role_code"] = [
        mapping.canonical_role(str(app), None if lab == no_label else str(lab))
        for app, lab in zip(distinct["app"], distinct["label"], strict=True)
    ]
    merged = pairs.merge(distinct, on=["app", "label"], how="left")
    return pd.Series(merged["role_code"].to_numpy(), index=label.index, dtype=object)
