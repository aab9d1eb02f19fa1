"""A small, normal extract for the data stewards' documents (Data Docs, exceptions.csv, the gate).

"Normal": it has the contract's usual defects, each with its defined outcome, and the default
validation gate lets it through. By id:
users  1 clean PRO with a valid phone      2 clean AGENT
       3 courriel carrying HTML markup (INVALID_EMAIL; must be shown escaped)
       4, 5 same login up to case (DUPLICATE_LOGIN)
       6 phone that is HTML markup, not a number (PHONE_DROPPED; personal data, masked)
       7 clean                             8 login of a native EFP Connect account (LOGIN_TAKEN)
       9 clean                             -> 4 of 9 users rejected (44 %)
establishments: S1 and S2 valid, BAD with a wrong check digit (INVALID_SIRET) -> 1 of 3 rejected
applications: the catalogue, ECR and REFSTRUCT retired, ZZZ active but unmapped (APPLICATION_UNMAPPED)
habilitations: 100, 101, 102, 105, 107, 109 migrated; 103 on ZZZ (APPLICATION_UNMAPPED);
       104 held by user 3 and 108 by user 8 (USER_REJECTED); 106 on BAD (ESTABLISHMENT_REJECTED)
       -> 4 of 10 rejected (40 %)
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import pandas as pd

from mappings.mapping import load_mapping
from pipelines.frames import LegacyFrames
from pipelines.transform import transform
from pipelines.validate import ValidateConfig, ValidateResult, validate
from tests.legacy_builders import build_tables, default_applications, to_frames
from validation.evaluate import RuleEngine

S1, S2, BAD = "73282932000074", "35600000000048", "73282932000075"
AS_OF = dt.datetime(2025, 1, 1)
HOSTILE_EMAIL = "<script>alert(1)</script>@example.fr"
HOSTILE_PHONE = "<img src=x onerror=alert(2)>"
NATIVE_LOGIN = "native.account@example.fr"

USERS: list[dict[str, Any]] = [
    {"id_utilisateur": 1, "courriel": "alice@example.fr", "telephone": "01 23 45 67 89"},
    {"id_utilisateur": 2, "courriel": "agent@travail.gouv.fr", "type_compte": "AGENT"},
    {"id_utilisateur": 3, "courriel": HOSTILE_EMAIL},
    {"id_utilisateur": 4, "courriel": "dup@example.fr"},
    {"id_utilisateur": 5, "courriel": "DUP@example.fr"},
    {"id_utilisateur": 6, "courriel": "fanny@example.fr", "telephone": HOSTILE_PHONE},
    {"id_utilisateur": 7, "courriel": "gaston@example.fr"},
    {"id_utilisateur": 8, "courriel": "Native.Account@example.fr"},
    {"id_utilisateur": 9, "courriel": "ines@example.fr"},
]
ESTABLISHMENTS: list[dict[str, Any]] = [{"siret": S1, "siren": "732829320"}, {"siret": S2}, {"siret": BAD}]
APPLICATIONS = [*default_applications(), {"code_application": "ZZZ", "libelle": "Inconnue", "actif": True}]
HABILITATIONS: list[dict[str, Any]] = [
    {"id_habilitation": 100, "id_utilisateur": 1, "code_application": "EDOF", "siret": S1,
     "role": "Gestionnaire EDOF"},
    {"id_habilitation": 101, "id_utilisateur": 1, "code_application": "MAF", "siret": S1},
    {"id_habilitation": 102, "id_utilisateur": 2, "code_application": "CERES"},
    {"id_habilitation": 103, "id_utilisateur": 1, "code_application": "ZZZ", "siret": S1},
    {"id_habilitation": 104, "id_utilisateur": 3, "code_application": "MAF", "siret": S1},
    {"id_habilitation": 105, "id_utilisateur": 7, "code_application": "MAF", "siret": S2},
    {"id_habilitation": 106, "id_utilisateur": 1, "code_application": "MAF", "siret": BAD},
    {"id_habilitation": 107, "id_utilisateur": 6, "code_application": "MAF", "siret": S1},
    {"id_habilitation": 108, "id_utilisateur": 8, "code_application": "DECA", "siret": S2},
    {"id_habilitation": 109, "id_utilisateur": 9, "code_application": "SOFFI", "siret": S1},
]


@dataclass(frozen=True)
class StewardRun:
    frames: LegacyFrames
    engine: RuleEngine
    validated: ValidateResult
    register: pd.DataFrame


def steward_run() -> StewardRun:
    """Validate and transform the extract, keeping the engine that holds the GX results."""
    frames = to_frames(build_tables(USERS, ESTABLISHMENTS, HABILITATIONS, APPLICATIONS))
    engine = RuleEngine()
    validated = validate(frames, ValidateConfig(as_of=AS_OF, mapping=load_mapping(),
                                                native_logins=(NATIVE_LOGIN,)), engine=engine)
    return StewardRun(frames=frames, engine=engine, validated=validated,
                      register=transform(frames, validated).target.exceptions)
