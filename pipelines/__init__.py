"""efp-migration: the staged ETL from Mes Démarches Emploi et Formation to EFP Connect."""

__version__ = "0.1.0"
