"""Pure normalisation functions legacy -> EFP Connect, vectorised over pandas Series.

Each check that needs a library (email-validator, python-stdnum, phonenumbers) has a scalar
form (`is_valid_email`, `is_valid_siret`, `phone_e164`: the library itself, cached per value)
and a column form (`valid_emails`, `valid_sirets`, `phones_e164`). The column forms decide the
common shapes with one vectorised pass (a conservative regular expression, the Luhn sums with
numpy, libphonenumber's own FR patterns) and hand every other value, once per distinct value,
to the library: they never give a verdict the library would not give
(tests/test_normalize_fast_paths.py proves it property by property).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa

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
    """Trimmed, Unicode NFC, control characters removed, inner whitespace collapsed; NA stays NA.

    Computed once per distinct name: a million users share a few thousand surnames.
    """
    codes, uniques = pd.factorize(names, use_na_sentinel=True)
    distinct = pd.Series(uniques, dtype=names.dtype)
    folded = distinct.str.normalize("NFC").str.replace(_WHITESPACE_RUN, " ", regex=True)
    without_controls = folded.str.replace(_CONTROL, "", regex=True)
    cleaned = without_controls.str.replace(_WHITESPACE_RUN, " ", regex=True).str.strip()
    return pd.Series(cleaned.array.take(codes, allow_fill=True), index=names.index, name=names.name)


def siret_digits(siret: pd.Series) -> pd.Series:
    """SIRET with spaces removed (the contract's normalised form)."""
    if not _may_hold_whitespace(siret):
        return siret.copy()  # what the replacement gives when there is nothing to replace
    return siret.str.replace(_WHITESPACE_RUN, "", regex=True)


# What Python's \s matches in ASCII text (str.isspace(): the file, group, record and unit
# separators too). Outside ASCII it matches more (NO-BREAK SPACE...): such text is not looked at.
_ASCII_WHITESPACE = r"[ \t\n\r\f\v\x1c-\x1f]"


def _may_hold_whitespace(values: pd.Series) -> bool:
    """False when every value is ASCII text without whitespace, found by Arrow (in C): pandas
    replaces Python's \\s (Unicode) through Python's re, a call a row (0.8 s of the reconciliation's
    comparison at a million users, for SIRETs that never hold a space)."""
    import pyarrow.compute as pc

    from pipelines.arrow_text import text_array

    text = text_array(values)
    if text is None:  # not only text, or a lone surrogate
        return True
    spaced = pc.any(pc.match_substring_regex(text, _ASCII_WHITESPACE)).as_py()
    return bool(spaced) or not pc.all(pc.string_is_ascii(text)).as_py()


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
    """E.164 when libphonenumber deems the number valid (read as French unless it has a country code).

    The everyday French forms are decided by libphonenumber's own FR patterns (see `phones_e164`),
    any other value by phonenumbers.parse and is_valid_number.
    """
    rules = _french_phone_rules()
    if rules is not None and re.fullmatch(_FRENCH_PHONE, value):
        national = re.sub(r"[^0-9]", "", value)[-9:]
        general, typed = rules
        return f"+33{national}" if re.fullmatch(general, national) and re.fullmatch(typed, national) else None
    return _library_phone_e164(value)


def _library_phone_e164(value: str) -> str | None:
    import phonenumbers

    try:
        number = phonenumbers.parse(value, "FR")
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


# --- column forms: vectorised fast paths, the library for everything else ------------------

# RFC 5322 atext, as email-validator's DOT_ATOM_TEXT has it (ASCII only).
_ATEXT = r"A-Za-z0-9!#$%&'*+/=?^_`{|}~-"
_LOCAL_PART = rf"[{_ATEXT}]+(?:\.[{_ATEXT}]+)*"
_HOST_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"


@lru_cache(maxsize=8)
def _email_fast_pattern(special_use_domains: tuple[str, ...]) -> str:
    """Addresses email-validator certainly accepts (default options, no DNS), and nothing else.

    Plain ASCII only, so that no Unicode normalisation, IDNA or quoting is involved:
    - the whole address at most 254 characters (validate_email_length), the local part at most
      64 (only checked in strict mode: being stricter here merely sends more to the library);
    - the local part an ASCII dot-atom (DOT_ATOM_TEXT): no leading, trailing or double dot;
    - the domain: labels of letters, digits and inner hyphens of at most 63 characters, at least
      one dot, a top-level domain of at least two letters (globally deliverable), no "--"
      anywhere (neither R-LDH labels nor Punycode "xn--" ones, which need IDNA), and no
      special-use domain (`email_validator.SPECIAL_USE_DOMAIN_NAMES`) nor a subdomain of one.
    """
    special = "|".join(re.escape(domain) for domain in special_use_domains) or r"(?!)"
    return (
        r"(?=[^@]{1,64}@)(?=.{1,254}\Z)"
        + _LOCAL_PART
        + r"@(?![^@]*--)"
        + rf"(?!(?:[^@]*\.)?(?i:{special})\Z)"
        + rf"(?:{_HOST_LABEL}\.)+[A-Za-z]{{2,63}}"
    )


@lru_cache(maxsize=8)
def _email_fast_parts(special_use_domains: tuple[str, ...]) -> tuple[str, str, str]:
    """_email_fast_pattern without its lookarounds, which Arrow's regular expressions (RE2) lack:
    the address's shape, then what must not be found after its one "@": a "--", a special-use
    domain. The lengths are counted apart (ASCII only: a character is a byte)."""
    special = "|".join(re.escape(domain) for domain in special_use_domains) or r"[^\s\S]"
    shape = rf"^{_LOCAL_PART}@(?:{_HOST_LABEL}\.)+[A-Za-z]{{2,63}}$"
    return shape, r"@[^@]*--", rf"@(?:[^@]*\.)?(?i:{special})$"


def _email_fast(values: pd.Series, special_use_domains: tuple[str, ...]) -> npt.NDArray[np.bool_]:
    """Where _email_fast_pattern fully matches, worked out by Arrow (RE2, in C): through Python's
    re, a call a row, 1.3 s of the validation at a million users. Text Arrow cannot hold (a lone
    surrogate) goes through Python's re, as before."""
    import pyarrow.compute as pc

    from pipelines.arrow_text import text_array

    text = text_array(values)
    if text is None:
        pattern = _email_fast_pattern(special_use_domains)
        matched: npt.NDArray[np.bool_] = values.str.fullmatch(pattern).fillna(False).to_numpy(dtype=bool)
        return matched
    shape, dashes, special = _email_fast_parts(special_use_domains)
    fast = pc.and_kleene(pc.match_substring_regex(text, shape), pc.less_equal(pc.binary_length(text), 254))
    fast = pc.and_kleene(fast, pc.less_equal(pc.find_substring(text, "@"), 64))
    fast = pc.and_kleene(fast, pc.invert(pc.match_substring_regex(text, dashes)))
    fast = pc.and_kleene(fast, pc.invert(pc.match_substring_regex(text, special)))
    found: npt.NDArray[np.bool_] = pc.fill_null(fast, False).to_numpy(zero_copy_only=False)
    return found


def valid_emails(emails: pd.Series) -> pd.Series:
    """Boolean Series: `is_valid_email` of every value (NA is not a valid email)."""
    import email_validator

    values = _as_strings(emails)
    fast = _email_fast(values, tuple(email_validator.SPECIAL_USE_DOMAIN_NAMES))
    decided = pd.Series(fast, index=emails.index, dtype=bool)
    rest = ~fast & values.notna().to_numpy()
    if rest.any():
        slow = per_distinct(values[rest], is_valid_email).astype(bool)
        decided[rest] = slow.to_numpy()
    return decided


def valid_sirets(sirets: pd.Series) -> pd.Series:
    """Boolean Series: `is_valid_siret` of every value (NA is not a valid SIRET).

    Values of 14 ASCII digits are checked with numpy exactly as `stdnum.fr.siret.validate` does:
    the Luhn sum of the SIRET, except La Poste's establishments (SIREN 356000000, other than its
    head office 35600000000048) whose digits must add up to a multiple of 5, and the Luhn sum of
    the SIREN. Any other value (Unicode digits, separators...) goes to the library.
    """
    values = _as_strings(sirets)
    fast = values.str.fullmatch(r"[0-9]{14}").fillna(False).astype(bool).to_numpy()
    decided = pd.Series(False, index=sirets.index, dtype=bool)
    if fast.any():
        chosen = values[fast]
        digits = (np.frombuffer("".join(chosen.tolist()).encode("ascii"), dtype=np.uint8)
                  .reshape(-1, 14).astype(np.int64) - ord("0"))
        la_poste = (chosen.str.startswith("356000000") & chosen.ne("35600000000048")).to_numpy()
        siret_ok = np.where(la_poste, digits.sum(axis=1) % 5 == 0, _luhn_ok(digits))
        decided[fast] = siret_ok & _luhn_ok(digits[:, :9])
    rest = ~fast & values.notna().to_numpy()
    if rest.any():
        decided[rest] = per_distinct(values[rest], is_valid_siret).astype(bool).to_numpy()
    return decided


def _luhn_ok(digits: np.ndarray) -> np.ndarray:
    """Rows of decimal digits whose Luhn checksum is 0 (python-stdnum's `luhn.checksum`)."""
    from_right = digits[:, ::-1]
    doubled = from_right[:, 1::2] * 2
    total = from_right[:, 0::2].sum(axis=1) + (doubled // 10 + doubled % 10).sum(axis=1)
    result: np.ndarray = total % 10 == 0
    return result


@lru_cache(maxsize=1)
def _french_phone_rules() -> tuple[str, str] | None:
    """libphonenumber's FR patterns (general, and any number type), or None when the FR metadata
    no longer has the shape the fast path relies on (then every number goes to the library).

    `is_valid_number` deems a national significant number valid when it matches the general
    description and one of the type descriptions (premium rate, toll free, shared cost, VoIP,
    personal, pager, UAN, voicemail, fixed line, mobile), each only if its possible lengths
    allow the number's length (phonenumberutil._number_type_helper).
    """
    import phonenumbers
    from phonenumbers.phonenumberutil import COUNTRY_CODE_TO_REGION_CODE

    metadata = phonenumbers.PhoneMetadata.metadata_for_region("FR")
    if (metadata is None or metadata.country_code != 33 or COUNTRY_CODE_TO_REGION_CODE.get(33) != ("FR",)
            or metadata.national_prefix_for_parsing != "0" or metadata.national_prefix_transform_rule
            or metadata.international_prefix != "00" or metadata.general_desc is None
            or tuple(metadata.general_desc.possible_length) != (9,)
            or not metadata.general_desc.national_number_pattern):
        return None
    types = (metadata.premium_rate, metadata.toll_free, metadata.shared_cost, metadata.voip,
             metadata.personal_number, metadata.pager, metadata.uan, metadata.voicemail,
             metadata.fixed_line, metadata.mobile)
    patterns = [f"(?:{desc.national_number_pattern})" for desc in types
                if desc is not None and desc.national_number_pattern
                and (not desc.possible_length or 9 in desc.possible_length)]
    if not patterns:
        return None
    return f"(?:{metadata.general_desc.national_number_pattern})", "|".join(patterns)


# The French forms written every day: 01 23 45 67 89, 01.23.45.67.89, 0123456789,
# +33 1 23 45 67 89, +33123456789, 0033 1 23 45 67 89 (single spaces, dots or hyphens).
_FRENCH_PHONE = r"(?:\+33|0033|0)[ .-]?[1-9](?:[ .-]?[0-9]){8}"


def phones_e164(telephones: pd.Series) -> pd.Series:
    """`phone_e164` of every value, as a string Series: E.164 when libphonenumber deems the number
    valid, NA otherwise (and for NA)."""
    values = _as_strings(telephones)
    fast = np.zeros(len(values), dtype=bool)
    # The answers of the fast path, then the library's, each as text; `source` gives each row's
    # answer in them (-1: none). Kept as text throughout: through an array of Python strings, the
    # phones took 60 MB more at a million users, at the transform's high-water mark.
    answers: list[pd.Series] = []
    source = np.full(len(values), -1, dtype=np.int64)
    rules = _french_phone_rules()
    if rules is not None:
        general, typed = rules
        fast = values.str.fullmatch(_FRENCH_PHONE).fillna(False).astype(bool).to_numpy()
        if fast.any():
            national = values[fast].str.replace(r"[^0-9]", "", regex=True).str.slice(-9)
            valid = (national.str.fullmatch(general) & national.str.fullmatch(typed)).to_numpy()
            answers.append(("+33" + national).astype("str").where(valid))
            source[fast] = np.arange(len(national))
    rest = ~fast & values.notna().to_numpy()
    if rest.any():
        answers.append(per_distinct(values[rest], _library_phone_e164).astype("str"))
        source[rest] = np.arange(int(rest.sum())) + sum(len(answer) for answer in answers[:-1])
    texts = pa.chunked_array([pa.array(answer.array, type=pa.large_string()) for answer in answers],
                             type=pa.large_string())
    taken = texts.take(pa.array(source, mask=source < 0)) if len(texts) else pa.nulls(len(source), pa.large_string())
    return pd.Series(taken, index=telephones.index, dtype="str")


def _as_strings(series: pd.Series) -> pd.Series:
    """The values as strings; any non-string value (which the scalar forms cannot take) becomes NA."""
    if isinstance(series.dtype, pd.StringDtype) or pd.api.types.infer_dtype(series, skipna=True) in ("string", "empty"):
        return series
    is_text = series.map(lambda value: isinstance(value, str), na_action="ignore").fillna(False).astype(bool)
    return series.where(is_text)
