"""Pure normalisation functions legacy -> EFP Connect, vectorised over pandas Series.

Each function that needs a library check (email-validator, python-stdnum, phonenumbers)
evaluates it once per distinct value, then maps back: extracts repeat values a lot, and the
libraries are per-value Python calls.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import pandas as pd

_WHITESPACE_RUN = r"\s+"
# C0 and C1 control characters and DEL; whitespace controls were already folded into spaces.
_CONTROL = r"[\x00-\x1f\x7f-\x9f]"
_ROLE_SEPARATORS = re.compile(r"[\s_\-]+")


def per_distinct(series: pd.Series, func: Callable[[str], Any]) -> pd.Series:
    """Applies `func` once per distinct non-null value and maps the answers back (NA stays NA)."""
    values = series.dropna()
    if values.empty:
        return pd.Series(pd.NA, index=series.index, dtype="object")
    distinct = pd.unique(values)
    answers = dict(zip(distinct, map(func, distinct), strict=True))
    return series.map(answers)


def login_of(courriel: pd.Series) -> pd.Series:
    """`courriel` trimmed and lower-cased: the EFP Connect login."""
    return courriel.str.strip().str.lower()


def email_of(courriel: pd.Series) -> pd.Series:
    """`courriel` trimmed, case kept."""
    return courriel.str.strip()


def clean_name(names: pd.Series) -> pd.Series:
    """Trimmed, Unicode NFC, control characters removed, inner whitespace collapsed; NA stays NA."""
    folded = names.str.normalize("NFC").str.replace(_WHITESPACE_RUN, " ", regex=True)
    without_controls = folded.str.replace(_CONTROL, "", regex=True)
    return without_controls.str.replace(_WHITESPACE_RUN, " ", regex=True).str.strip()


def siret_digits(siret: pd.Series) -> pd.Series:
    """SIRET with spaces removed (the contract's normalised form)."""
    return siret.str.replace(_WHITESPACE_RUN, "", regex=True)


def role_match_key(label: str) -> str:
    """Case-, accent- and separator-insensitive key of a role label."""
    return _role_match_key(label)


@lru_cache(maxsize=4096)
def _role_match_key(label: str) -> str:
    decomposed = unicodedata.normalize("NFKD", label.strip())
    without_accents = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return _ROLE_SEPARATORS.sub("_", without_accents.casefold()).strip("_")


# Great Expectations asks a condition several times per run (counts, then indexes) and the
# transform formats the phones it validated: each library verdict is computed once per value.
_VERDICT_CACHE = 4_000_000


@lru_cache(maxsize=_VERDICT_CACHE)
def is_valid_email(value: str) -> bool:
    """Syntactic validity by email-validator, without any DNS lookup."""
    from email_validator import EmailNotValidError, validate_email

    try:
        validate_email(value, check_deliverability=False)
    except EmailNotValidError:
        return False
    return True


@lru_cache(maxsize=_VERDICT_CACHE)
def is_valid_siret(value: str) -> bool:
    """14 digits and a correct check digit (Luhn; La Poste's own rule for SIREN 356000000)."""
    from stdnum.fr import siret

    return len(value) == 14 and value.isdigit() and bool(siret.is_valid(value))


@lru_cache(maxsize=_VERDICT_CACHE)
def phone_e164(value: str) -> str | None:
    """E.164 when libphonenumber deems the number valid (read as French unless it has a country code)."""
    import phonenumbers

    try:
        number = phonenumbers.parse(value, "FR")
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))
