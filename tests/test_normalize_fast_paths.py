"""The column forms of mappings/normalize.py (and the scalar phone_e164, which shares the phone
fast path) give, on every value, the verdict of the library itself: email-validator,
python-stdnum and phonenumbers, called directly here, on generated near-valid and weird values
and on explicit edge cases."""

from __future__ import annotations

import re

import pandas as pd
import phonenumbers
import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from stdnum.fr import siret as stdnum_siret

from mappings.normalize import (
    _email_fast,
    _email_fast_pattern,
    _french_phone_rules,
    phone_e164,
    phones_e164,
    siret_digits,
    valid_emails,
    valid_sirets,
)

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def library_email(value: str) -> bool:
    try:
        validate_email(value, check_deliverability=False)
    except EmailNotValidError:
        return False
    return True


def library_siret(value: str) -> bool:
    return len(value) == 14 and value.isdigit() and bool(stdnum_siret.is_valid(value))


def library_phone(value: str) -> str | None:
    try:
        number = phonenumbers.parse(value, "FR")
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def assert_same_emails(values: list[str]) -> None:
    got = valid_emails(pd.Series(values, dtype=object)).tolist()
    assert got == [library_email(v) for v in values], list(zip(values, got, strict=True))


def assert_same_sirets(values: list[str]) -> None:
    got = valid_sirets(pd.Series(values, dtype=object)).tolist()
    assert got == [library_siret(v) for v in values], list(zip(values, got, strict=True))


def assert_same_phones(values: list[str]) -> None:
    result = phones_e164(pd.Series(values, dtype=object))
    got = [None if pd.isna(v) else v for v in result.tolist()]
    expected = [library_phone(v) for v in values]
    assert got == expected, list(zip(values, got, strict=True))
    assert [phone_e164(v) for v in values] == expected


# --- emails ---------------------------------------------------------------------------------

ATEXT = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+/=?^_`{|}~-"
WEIRD = ".@ \t\"<>()[]\\,;:éÉ€ßǅ\u0301\u200b\u00a0＠﹫。．-"
SPECIAL_TLDS = ["arpa", "invalid", "local", "localhost", "onion", "test", "ARPA", "Test", "LOCAL"]
TLDS = ["fr", "com", "gouv.fr", "FR", "Fr", "c", "c0", "1", "x1y", "museum", "co.uk", "example", *SPECIAL_TLDS]

near_local = st.lists(st.text(ATEXT, min_size=0, max_size=12), min_size=1, max_size=4).map(".".join)
weird_local = st.text(ATEXT + WEIRD, min_size=0, max_size=20)
label = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-", min_size=0, max_size=10)
long_label = st.integers(55, 70).map(lambda n: "a" * n)
near_domain = st.builds(
    lambda labels, tld: ".".join([*labels, tld]),
    st.lists(st.one_of(label, long_label, st.just("xn--bcher-kva"), st.just("ab--cd")), min_size=0, max_size=4),
    st.sampled_from(TLDS),
)
weird_domain = st.text("abcXYZ019-." + WEIRD, min_size=0, max_size=20)
emails = st.one_of(
    st.builds(lambda lp, d: f"{lp}@{d}", near_local, near_domain),
    st.builds(lambda lp, d: f"{lp}@{d}", st.one_of(near_local, weird_local), st.one_of(near_domain, weird_domain)),
    # long addresses, around every length limit
    st.builds(lambda n, m, tld: f"{'a' * n}@{'b' * m}.{tld}", st.integers(1, 130), st.integers(1, 250),
              st.sampled_from(["fr", "com"])),
    st.builds(lambda k, tld: "x@" + ".".join(["a" * 62] * k) + "." + tld, st.integers(1, 5), st.sampled_from(["fr", "c"])),
    st.text(max_size=30),
)


@SETTINGS
@given(st.lists(emails, min_size=1, max_size=40))
@example(["a@b.fr", "A.B@Example.FR", "a@b.c", "a@localhost", "a@b.local", "a@b.LOCAL", "a@test.fr", "a@b.test"])
def test_valid_emails_is_email_validators_verdict(values: list[str]) -> None:
    assert_same_emails(values)


EDGE_EMAILS = [
    "a@b.fr", "prenom.nom@emploi.gouv.fr", "Emmanuel.Marion@Simon-Hamel.Fr", "o'neil+tag@x-y.fr",
    "a@b.c", "a@b.c1", "a@1.fr", "a@b.123",                         # TLD shapes
    ".a@b.fr", "a.@b.fr", "a..b@b.fr", "a@b..fr", "a@.b.fr", "a@b.fr.",  # dots
    "a@-b.fr", "a@b-.fr", "a@b.-fr", "a@ab--cd.fr", "a@xn--bcher-kva.ch", "a@xn--zz.fr",  # hyphens, Punycode
    "a@b.arpa", "a@b.invalid", "a@b.local", "a@localhost.fr", "a@b.localhost", "a@b.onion", "a@b.test",
    "a@b.TEST", "a@test.fr", "a@mytest.fr", "a@b.example",          # special-use domains
    "a@b", "a", "@b.fr", "a@", "a@@b.fr", "a b@c.fr", " a@b.fr", "a@b.fr ", "\"a\"@b.fr", "a<b@c.fr",
    "Jean <a@b.fr>", "a@[1.2.3.4]", "é@b.fr", "a@é.fr", "a＠b.fr", "a@b。fr", "a@b\u200b.fr", "\u0301a@b.fr",
    "a" * 64 + "@b.fr", "a" * 65 + "@b.fr",                          # local part length (strict only)
    "a@" + "b" * 63 + ".fr", "a@" + "b" * 64 + ".fr",                # label length
    "a" * 100 + "@" + ".".join(["b" * 49] * 3) + ".fr",               # 254 vs 255 in total
    "a" * 101 + "@" + ".".join(["b" * 49] * 3) + ".fr",
    "a@" + ".".join(["b" * 62] * 4) + ".fr", "x@" + ".".join(["b" * 61] * 4) + ".fr",  # domain length 253/254
    "info@b.fr", "POSTMASTER@b.fr",
]


@pytest.mark.parametrize("value", EDGE_EMAILS)
def test_email_edge_cases(value: str) -> None:
    assert_same_emails([value])


@SETTINGS
@given(st.lists(emails, min_size=1, max_size=40), st.sampled_from(["str", "object"]))
def test_arrow_takes_exactly_what_the_fast_pattern_takes(values: list[str], dtype: str) -> None:
    """The fast path worked out by Arrow (RE2 has no lookarounds: the shape, the lengths, no "--"
    and no special-use domain apart) is Python's full match of _email_fast_pattern, value by value."""
    import email_validator

    special = tuple(email_validator.SPECIAL_USE_DOMAIN_NAMES)
    pattern = re.compile(_email_fast_pattern(special))
    values = [*values, *EDGE_EMAILS]
    got = _email_fast(pd.Series(values, dtype=dtype), special).tolist()
    assert got == [pattern.fullmatch(v) is not None for v in values], [
        (v, g) for v, g in zip(values, got, strict=True) if g != (pattern.fullmatch(v) is not None)]


def test_text_arrow_cannot_hold_goes_through_python_s_re() -> None:
    import email_validator

    values = pd.Series(["a@b.fr", "a\udc80@b.fr", None, "x@b.test"], dtype=object)
    assert _email_fast(values, tuple(email_validator.SPECIAL_USE_DOMAIN_NAMES)).tolist() == [True, False, False, False]


def test_email_fast_path_names_the_special_use_domains() -> None:
    import email_validator

    pattern = _email_fast_pattern(tuple(email_validator.SPECIAL_USE_DOMAIN_NAMES))
    for domain in email_validator.SPECIAL_USE_DOMAIN_NAMES:
        assert domain in pattern


def test_emails_null_and_empty() -> None:
    result = valid_emails(pd.Series(["a@b.fr", None, "", "x"], dtype=object))
    assert result.tolist() == [True, False, False, False]
    assert valid_emails(pd.Series([], dtype=object)).tolist() == []
    assert valid_emails(pd.Series(["a@b.fr", None], dtype="str")).tolist() == [True, False]


# --- SIRET ----------------------------------------------------------------------------------

def _luhn_complete(prefix: str) -> str:
    from stdnum import luhn

    return prefix + luhn.calc_check_digit(prefix)


digits = st.text("0123456789", min_size=14, max_size=14)
luhn_valid = st.text("0123456789", min_size=13, max_size=13).map(_luhn_complete)
siren_valid = st.text("0123456789", min_size=8, max_size=8).map(_luhn_complete)
siret_like = st.one_of(
    digits, luhn_valid,
    st.builds(lambda siren, rest: _luhn_complete(siren + rest), siren_valid, st.text("0123456789", min_size=4, max_size=4)),
    st.builds(lambda rest: "356000000" + rest, st.text("0123456789", min_size=5, max_size=5)),  # La Poste
    st.builds(lambda siren, rest: siren + rest, siren_valid, st.text("0123456789", min_size=5, max_size=5)),
    st.text("0123456789 .-A\n١２", min_size=12, max_size=16),
    st.text(max_size=16),
)


@SETTINGS
@given(st.lists(siret_like, min_size=1, max_size=40))
def test_valid_sirets_is_stdnums_verdict(values: list[str]) -> None:
    assert_same_sirets(values)


@pytest.mark.parametrize("value", [
    "73282932000074", "73282932000075", "35600000000048", "35600000000049", "35600000000050",
    "35600000012345", "35600000012346", "35600000100012", "00000000000000", "99999999999999",
    "7328293200007", "732829320000744", "732 829 320 00074", "73282932000074\n", "7328293200007A",
    "７３２８２９３２０００７４", "３５６００００００００４８", "١٢٣٤٥٦٧٨٩٠١٢٣٤", "", "40483304800022",
])
def test_siret_edge_cases(value: str) -> None:
    assert_same_sirets([value])


@SETTINGS
@given(st.lists(st.one_of(st.none(), st.text("0123456789 \t\n\x1c\x1f\x0b\x0c\xa0\u2009\u3000é-", max_size=18)),
                max_size=20), st.sampled_from(["str", "string", "object"]))
@example(["73282932000074", "732 829 320 00074", None], "str")
@example(["73282932000074", "7328293200\u00a00074"], "str")
@example(["73282932000074", "7328293200\x1f0074"], "object")
def test_siret_digits_is_the_whitespace_removed_by_python_s_re(values: list[str | None], dtype: str) -> None:
    """Looked at by Arrow first (nothing to remove: the values as they are), the SIRETs are what
    Python's \\s+ leaves of them, dtype, index and missing values included."""
    series = pd.Series(values, dtype=dtype, index=range(3, 3 + len(values)), name="siret")
    got = siret_digits(series)
    expected = series.str.replace(r"\s+", "", regex=True)
    pd.testing.assert_series_equal(got, expected)
    assert [None if pd.isna(v) else v for v in got] == [None if v is None else re.sub(r"\s+", "", v) for v in values]


def test_sirets_null() -> None:
    assert valid_sirets(pd.Series(["73282932000074", None], dtype=object)).tolist() == [True, False]
    assert valid_sirets(pd.Series([], dtype="str")).tolist() == []


# --- phones ---------------------------------------------------------------------------------

separator = st.sampled_from(["", "", " ", ".", "-", "  ", " - ", "/", "(", ")"])
prefix = st.sampled_from(["0", "+33", "0033", "+33 ", "0033 ", "+33 0", "+330", "00 33 ", "+ 33", "33", "", "+32",
                          "0044", "+", "00"])
nine = st.text("0123456789", min_size=7, max_size=11)


def _group(number: str, seps: list[str]) -> str:
    pairs = [number[i:i + 2] for i in range(0, len(number), 2)]
    out = pairs[0] if pairs else ""
    for i, pair in enumerate(pairs[1:]):
        out += seps[i % len(seps)] + pair
    return out


phone_like = st.one_of(
    st.builds(lambda p, n: p + n, prefix, nine),
    st.builds(lambda p, s, n, seps: p + s + _group(n, seps), prefix, separator, nine, st.lists(separator, min_size=1, max_size=3)),
    st.builds(lambda p, n, seps: p + _group(n, seps), st.sampled_from(["0", "+33 ", "0033"]),
              st.sampled_from(["123456789", "612345678", "712345678", "800123456", "891123456", "912345678",
                               "623456789", "836012345", "269123456", "599123456", "590123456", "102345678"]),
              st.lists(st.sampled_from([" ", ".", "-"]), min_size=1, max_size=4)),
    st.text("0123456789 .-+()/x#ext", max_size=20),
    st.text(max_size=20),
)


@SETTINGS
@given(st.lists(phone_like, min_size=1, max_size=40))
def test_phones_e164_is_phonenumbers_verdict(values: list[str]) -> None:
    assert_same_phones(values)


@pytest.mark.parametrize("value", [
    "01 23 45 67 89", "01.23.45.67.89", "0123456789", "01-23-45-67-89", "+33 1 23 45 67 89", "+33123456789",
    "0033123456789", "0033 1 23 45 67 89", "+33 6 12 34 56 78", "07 12 34 56 78", "0800123456", "0891123456",
    "0912345678", "0590123456", "0269123456", "0102345678", "0012345678", "0023456789",
    "+33 0 1 23 45 67 89", "+330123456789", "+33 (0)1 23 45 67 89", "(01) 23 45 67 89", "01  23 45 67 89",
    "01 23 45 67 8", "01 23 45 67 890", "1 23 45 67 89", "33123456789", "+32 2 123 45 67", "+44 20 7946 0958",
    "n/a", "N/A", "?", "inconnu", "néant", "pas de téléphone", "", "12", "1234", "٠١٢٣٤٥٦٧٨٩", "０１２３４５６７８９",
    "01 23 45 67 89 ext 12", "01 23 45 67 89#1", "tel: 01 23 45 67 89", "01.23.45.67.89.", "-0123456789",
])
def test_phone_edge_cases(value: str) -> None:
    assert_same_phones([value])


def test_phones_fast_path_is_active_and_null() -> None:
    assert _french_phone_rules() is not None, "the FR metadata no longer has the shape the fast path expects"
    result = phones_e164(pd.Series(["01 23 45 67 89", None, "n/a"], dtype=object))
    assert result.iloc[0] == "+33123456789"
    assert result.iloc[1:].isna().all()
    assert phones_e164(pd.Series([], dtype="str")).tolist() == []


def one_name(value: str) -> str:
    """clean_name's definition, on one value, with the standard library only."""
    import re
    import unicodedata

    folded = re.sub(r"\s+", " ", unicodedata.normalize("NFC", value))
    return re.sub(r"\s+", " ", re.sub(r"[\x00-\x1f\x7f-\x9f]", "", folded)).strip()


@SETTINGS
@given(st.lists(st.one_of(st.none(), st.sampled_from([" Zoé ", "Ma\x07rie", "A\u0301ngel", "  "]),
                          st.text(max_size=12)), max_size=40))
def test_clean_name_per_distinct_value_equals_the_definition_on_each_value(names: list[str | None]) -> None:
    from mappings.normalize import clean_name

    series = pd.Series(names, dtype="str", index=range(100, 100 + len(names)))
    cleaned = clean_name(series)
    assert list(cleaned.index) == list(series.index)
    assert [None if pd.isna(v) else v for v in cleaned] == [None if v is None else one_name(v) for v in names]
