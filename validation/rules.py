"""Every record-level rule of the migration, declared once as data.

A rule names its entity, reason code, outcome, its rank in the contract's order of checks,
whether it blocks, and the Great Expectations expectation(s) that find the records breaking
it. The expectations run on the entity's *facts* frame (validation/facts.py): the legacy
columns normalised, plus lookups of the other entities' outcomes. Kwarg values written
"$name" are run parameters (the as-of instant, the mapped codes, the native logins...).

`blocking` marks a rule whose every failure stops the run at the validation gate by default
(before anything is loaded); the thresholds themselves live in the gate configuration.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

Entity = Literal["user", "establishment", "application", "habilitation"]
Outcome = Literal["excluded", "rejected", "merged", "corrected"]

# Facts frames have one row per record and name the record's legacy key in this column.
KEY_COLUMNS: dict[str, str] = {
    "user": "id_utilisateur",
    "establishment": "row_number",
    "application": "code_application",
    "habilitation": "id_habilitation",
    "habilitation_duplicate": "id_habilitation",
}
# The Great Expectations suite that evaluates each entity's rules (one Data Docs page each).
SUITES: dict[str, str] = {
    "user": "users",
    "establishment": "establishments",
    "application": "applications",
    "habilitation": "habilitations",
    "habilitation_duplicate": "habilitation_duplicates",
}


@dataclass(frozen=True)
class Check:
    """One expectation: its class name and its kwargs."""

    expectation: str
    kwargs: MappingProxyType[str, Any]


def check(expectation: str, **kwargs: Any) -> Check:
    return Check(expectation, MappingProxyType(kwargs))


@dataclass(frozen=True)
class Rule:
    entity: Entity
    reason_code: str
    outcome: Outcome
    order: int
    checks: tuple[Check, ...]
    explanation_fr: str
    action_fr: str
    blocking: bool = False
    # Which suite evaluates it; duplicates of access are judged among the records still in play.
    suite_entity: str = field(default="")

    @property
    def suite(self) -> str:
        return SUITES[self.suite_entity or self.entity]


_NOT_IN = "ExpectColumnValuesToNotBeInSet"
_NOT_NULL = "ExpectColumnValuesToNotBeNull"

RULES: tuple[Rule, ...] = (
    # --- users: checked in this order, the first that matches gives the outcome -------------
    Rule("user", "USER_DELETED", "excluded", 1,
         (check(_NOT_IN, column="statut", value_set=["SUPPRIME"]),),
         "Compte supprimé dans le portail : il n'est pas repris.",
         "Aucune action."),
    Rule("user", "INVALID_EMAIL", "rejected", 2,
         (check(_NOT_NULL, column="email"), check("ExpectColumnValuesToBeValidEmail", column="email")),
         "Le courriel n'est pas une adresse valide : il ne peut pas servir d'identifiant.",
         "Corriger le courriel dans le portail ou l'extraction, puis relancer."),
    Rule("user", "MISSING_NAME", "rejected", 3,
         (check(_NOT_NULL, column="last_name"), check(_NOT_NULL, column="first_name")),
         "Nom ou prénom vide.",
         "Compléter le nom et le prénom, puis relancer."),
    Rule("user", "DUPLICATE_LOGIN", "rejected", 4,
         (check("ExpectColumnValuesToBeUnique", column="login",
                row_condition='statut != "SUPPRIME"', condition_parser="pandas"),),
         "Plusieurs comptes partagent le même courriel : un seul peut le garder comme identifiant.",
         "Désigner le compte qui survit dans le fichier de résolutions (--resolutions) ; "
         "les autres y seront fusionnés avec leurs habilitations."),
    Rule("user", "LOGIN_TAKEN", "rejected", 5,
         (check(_NOT_IN, column="login", value_set="$native_logins"),),
         "Un compte EFP Connect créé directement utilise déjà ce courriel.",
         "Vérifier s'il s'agit de la même personne et rapprocher les comptes dans EFP Connect."),
    Rule("user", "PHONE_DROPPED", "corrected", 6,
         (check("ExpectColumnValuesToBeValidPhoneNumber", column="telephone"),),
         "Le téléphone n'est pas un numéro valide : le compte est repris sans téléphone.",
         "Aucune action obligatoire ; l'usager pourra le saisir dans « mon compte »."),
    # --- establishments (counted per distinct normalised SIRET) --------------------------------
    Rule("establishment", "INVALID_SIRET", "rejected", 1,
         (check(_NOT_NULL, column="siret_digits"),
          check("ExpectColumnValuesToBeValidSiret", column="siret_digits")),
         "SIRET invalide (pas 14 chiffres ou clé de contrôle fausse).",
         "Corriger le SIRET dans le portail ou l'extraction ; les habilitations liées sont rejetées."),
    Rule("establishment", "SIREN_CORRECTED", "corrected", 2,
         (check("ExpectColumnPairValuesToBeEqual", column_A="siren_digits", column_B="siren_of_siret",
                ignore_row_if="both_values_are_missing"),),
         "SIREN absent ou différent des 9 premiers chiffres du SIRET : il est recalculé.",
         "Aucune action."),
    Rule("establishment", "DUPLICATE_SIRET", "corrected", 3,
         (check("ExpectColumnValuesToBeUnique", column="siret_digits"),),
         "Plusieurs lignes pour le même SIRET : un seul établissement est repris.",
         "Vérifier la raison sociale et l'adresse retenues."),
    # --- applications -------------------------------------------------------------------------
    Rule("application", "APPLICATION_RETIRED", "excluded", 1,
         (check("ExpectColumnValuesToBeInSet", column="actif", value_set=[True]),),
         "Application retirée : elle n'existe plus dans EFP Connect.",
         "Aucune action."),
    Rule("application", "APPLICATION_UNMAPPED", "rejected", 2,
         (check("ExpectColumnValuesToBeInSet", column="code_application", value_set="$mapped_applications"),),
         "Application active sans code EFP Connect dans la table de correspondance.",
         "Ajouter l'application à mappings/applications.csv, puis relancer.",
         blocking=True),
    # --- habilitations: the contract's order, first match wins ---------------------------------
    Rule("habilitation", "NOT_GRANTED", "excluded", 1,
         (check(_NOT_IN, column="statut", value_set=["REFUSEE", "REVOQUEE"]),),
         "Accès refusé ou révoqué : il n'est pas repris.", "Aucune action."),
    Rule("habilitation", "ORPHAN_USER", "rejected", 2,
         (check(_NOT_IN, column="holder_state", value_set=["missing"]),),
         "Le titulaire n'existe pas dans l'extraction.",
         "Retrouver le compte du titulaire ou confirmer l'abandon de l'accès."),
    Rule("habilitation", "USER_DELETED", "excluded", 3,
         (check(_NOT_IN, column="holder_state", value_set=["deleted"]),),
         "Le titulaire a été supprimé.", "Aucune action."),
    Rule("habilitation", "USER_REJECTED", "rejected", 4,
         (check(_NOT_IN, column="holder_state", value_set=["rejected"]),),
         "Le compte du titulaire est rejeté : l'accès suit son sort.",
         "Traiter d'abord le rejet du compte ; l'accès sera repris à la relance."),
    Rule("habilitation", "ORPHAN_APPLICATION", "rejected", 5,
         (check(_NOT_IN, column="application_state", value_set=["missing"]),),
         "L'application n'existe pas dans l'extraction.",
         "Vérifier le code application dans l'extraction."),
    Rule("habilitation", "APPLICATION_RETIRED", "excluded", 6,
         (check(_NOT_IN, column="application_state", value_set=["retired"]),),
         "Application retirée.", "Aucune action."),
    Rule("habilitation", "APPLICATION_UNMAPPED", "rejected", 7,
         (check(_NOT_IN, column="application_state", value_set=["unmapped"]),),
         "Application sans correspondance EFP Connect.",
         "Ajouter l'application à la table de correspondance, puis relancer."),
    Rule("habilitation", "MISSING_SIRET", "rejected", 8,
         (check(_NOT_IN, column="establishment_state", value_set=["missing_for_pro"]),),
         "Accès d'un usager professionnel sans SIRET.",
         "Renseigner le SIRET de l'établissement concerné."),
    Rule("habilitation", "ORPHAN_ESTABLISHMENT", "rejected", 9,
         (check(_NOT_IN, column="establishment_state", value_set=["unknown"]),),
         "Aucun établissement de l'extraction n'a ce SIRET.",
         "Ajouter l'établissement ou corriger le SIRET de l'accès."),
    Rule("habilitation", "ESTABLISHMENT_REJECTED", "rejected", 10,
         (check(_NOT_IN, column="establishment_state", value_set=["rejected"]),),
         "L'établissement est rejeté (SIRET invalide).",
         "Corriger le SIRET de l'établissement, puis relancer."),
    Rule("habilitation", "ROLE_UNMAPPED", "rejected", 11,
         (check(_NOT_NULL, column="role_code"),),
         "Le libellé de rôle ne correspond à aucun rôle de l'application.",
         "Ajouter le libellé à mappings/role_aliases.csv, puis relancer."),
    Rule("habilitation", "EXPIRED", "excluded", 12,
         (check("ExpectColumnValuesToBeBetween", column="date_fin", min_value="$as_of", strict_min=True,
                row_condition='statut == "ACTIVE"', condition_parser="pandas"),),
         "Accès actif mais échu à la date d'arrêté.", "Aucune action."),
    Rule("habilitation", "DUPLICATE_ACCESS", "merged", 13,
         (check("ExpectCompoundColumnsToBeUniqueBySorting",
                column_list=["holder_id", "application_code", "siret_key", "role_code", "kind"]),),
         "Le même accès figure plusieurs fois : il est repris une fois (plus petit identifiant).",
         "Aucune action.",
         suite_entity="habilitation_duplicate"),
)


def rules_for(entity: str) -> tuple[Rule, ...]:
    return tuple(sorted((r for r in RULES if r.entity == entity), key=lambda r: r.order))


def rule(entity: str, reason_code: str) -> Rule:
    for candidate in RULES:
        if candidate.entity == entity and candidate.reason_code == reason_code:
            return candidate
    raise KeyError((entity, reason_code))
