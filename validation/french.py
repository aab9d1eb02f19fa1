"""French words for the documents data stewards read (Data Docs summary, exceptions workbook).

The explanations and actions of each rule live with the rule, in validation/rules.py.
"""

from __future__ import annotations

# The contract's order: fix accounts first, their access follows.
ENTITIES: tuple[str, ...] = ("user", "establishment", "application", "habilitation")

ENTITY_LABELS: dict[str, str] = {
    "user": "utilisateur",
    "establishment": "établissement",
    "application": "application",
    "habilitation": "habilitation",
}
ENTITY_TITLES: dict[str, str] = {
    "user": "Comptes usagers",
    "establishment": "Établissements",
    "application": "Applications",
    "habilitation": "Habilitations",
}
OUTCOME_LABELS: dict[str, str] = {
    "migrated": "migré",
    "excluded": "exclu",
    "rejected": "rejeté",
    "merged": "fusionné",
    "corrected": "corrigé",
}
