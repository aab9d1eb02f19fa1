"""The legacy export of Mes Démarches Emploi et Formation, as SQLAlchemy tables.

This is the contract of `legacy-export.md` written as code: the four tables, their required
columns and types. `mot_de_passe_hash` is declared so that a generated export looks like a
real one, but `SELECTABLE_COLUMNS` never lists it: no reader may select it.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, Date, DateTime, MetaData, Table, Text

legacy_metadata = MetaData()

utilisateurs = Table(
    "utilisateurs",
    legacy_metadata,
    Column("id_utilisateur", BigInteger, primary_key=True, autoincrement=False),
    Column("courriel", Text, nullable=True),
    Column("nom", Text),
    Column("prenom", Text),
    Column("telephone", Text),
    Column("type_compte", Text, nullable=False),
    Column("statut", Text, nullable=False),
    Column("date_creation", DateTime, nullable=False),
    Column("date_derniere_connexion", DateTime),
    Column("mot_de_passe_hash", Text),
    Column("siret_rattachement", Text),
)

etablissements = Table(
    "etablissements",
    legacy_metadata,
    # No primary key: real extracts hold several rows for one SIRET (defect 8).
    Column("siret", Text, nullable=True),
    Column("siren", Text),
    Column("raison_sociale", Text),
    Column("adresse", Text),
    Column("code_postal", Text),
    Column("commune", Text),
    Column("date_fermeture", Date),
)

applications = Table(
    "applications",
    legacy_metadata,
    Column("code_application", Text, nullable=False),
    Column("libelle", Text, nullable=False),
    Column("actif", Boolean, nullable=False),
)

habilitations = Table(
    "habilitations",
    legacy_metadata,
    Column("id_habilitation", BigInteger, primary_key=True, autoincrement=False),
    Column("id_utilisateur", BigInteger, nullable=False),
    Column("code_application", Text, nullable=False),
    Column("siret", Text),
    Column("role", Text),
    Column("responsable_acces", Boolean, nullable=False),
    Column("statut", Text, nullable=False),
    Column("date_debut", DateTime, nullable=False),
    Column("date_fin", DateTime),
    Column("date_relance", DateTime),
    Column("id_delegant", BigInteger),
)

LEGACY_TABLES: dict[str, Table] = {
    "utilisateurs": utilisateurs,
    "etablissements": etablissements,
    "applications": applications,
    "habilitations": habilitations,
}

# The password hash is never read, copied, logged or written: readers select these only.
NEVER_SELECTED = frozenset({"mot_de_passe_hash"})

SELECTABLE_COLUMNS: dict[str, tuple[str, ...]] = {
    name: tuple(c.name for c in table.columns if c.name not in NEVER_SELECTED)
    for name, table in LEGACY_TABLES.items()
}

# Column kinds, shared by the CSV reader, the SQL reader and the generator.
INTEGER_COLUMNS: dict[str, tuple[str, ...]] = {
    "utilisateurs": ("id_utilisateur",),
    "habilitations": ("id_habilitation", "id_utilisateur", "id_delegant"),
}
TIMESTAMP_COLUMNS: dict[str, tuple[str, ...]] = {
    "utilisateurs": ("date_creation", "date_derniere_connexion"),
    "habilitations": ("date_debut", "date_fin", "date_relance"),
}
DATE_COLUMNS: dict[str, tuple[str, ...]] = {"etablissements": ("date_fermeture",)}
BOOLEAN_COLUMNS: dict[str, tuple[str, ...]] = {
    "applications": ("actif",),
    "habilitations": ("responsable_acces",),
}
# Columns that must hold a value on every row (a NULL there is an input error, not a defect).
NOT_NULL_COLUMNS: dict[str, tuple[str, ...]] = {
    "utilisateurs": ("id_utilisateur", "type_compte", "statut", "date_creation"),
    "etablissements": (),
    "applications": ("code_application", "actif"),
    "habilitations": (
        "id_habilitation",
        "id_utilisateur",
        "code_application",
        "responsable_acces",
        "statut",
        "date_debut",
    ),
}
# Enumerations: a value outside these (after trimming, any case) is an input error.
ENUM_COLUMNS: dict[str, dict[str, tuple[str, ...]]] = {
    "utilisateurs": {
        "type_compte": ("PRO", "AGENT"),
        "statut": ("ACTIF", "EN_ATTENTE", "VERROUILLE", "SUPPRIME"),
    },
    "habilitations": {"statut": ("ACTIVE", "EN_ATTENTE", "REFUSEE", "REVOQUEE")},
}
# Keys that must be unique in a readable extract.
UNIQUE_KEYS: dict[str, str] = {"utilisateurs": "id_utilisateur", "habilitations": "id_habilitation"}
