"""Realistic legacy extracts for rehearsals and tests (`efp-migrate generate-legacy`).

Builds the four tables of the legacy export contract with French data and plants every defect
listed under "What real extracts contain" at configurable rates, then writes them as a CSV
folder or into a database.

Design choices:
- Faker is slow per call, so it only fills small pools (names, companies, streets, towns) once;
  rows are sampled from the pools with a seeded numpy Generator and every string is built with
  vectorised operations (object-array `+`, byte matrices, pandas `.str` on small subsets).
- Deterministic: each section draws from its own named random stream derived from the seed,
  dates are relative to `GenerateConfig.reference_date` (never the clock), and nothing depends
  on `hash()` or set order. Same config, byte-identical files.
- Defects are planted on disjoint rows (one defect per planted row) and baseline rows are clean,
  so for most categories the record of what was planted is exactly what a reader finds. The
  exceptions are by nature: a duplicate login typed in capitals also shows under category 1, a
  planted row may belong to an agent without SIRET (category 17 is legitimate baseline data,
  counted from the data), and La Poste SIRETs are valid.
- Windows-1252 output: every generated character is encodable in cp1252. Faker pools are
  filtered to cp1252, and control characters (U+0007, U+001B, tab, line feed) are plain ASCII
  bytes there. The one planted form cp1252 cannot carry is NFD (combining accents, U+0301...),
  which a Windows export could not contain either: with `csv_encoding="cp1252"` those rows get
  the `extra_spaces` variant instead, and the record says so.
- Dates: naive Europe/Paris wall time in whole seconds, never inside the spring-forward gap.
  Baseline fixed-term access ends 3 to 10 years after the reference date and planted future
  starts are 3 to 6 years after it, so a run with `--as-of` anywhere near the reference date
  (or today) sees exactly the planted expired and future rows.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import re
import time
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import pandas as pd
from sqlalchemy import Connection, Engine, Table

from pipelines.db import looks_like_url, make_engine, mask_url
from pipelines.errors import ConfigurationError
from pipelines.legacy_schema import (
    BOOLEAN_COLUMNS,
    DATE_COLUMNS,
    INTEGER_COLUMNS,
    LEGACY_TABLES,
    TIMESTAMP_COLUMNS,
    legacy_metadata,
)
from pipelines.timeutil import civil_dates

log = logging.getLogger(__name__)

CsvEncoding = Literal["utf-8", "utf-8-sig", "cp1252"]
CsvDelimiter = Literal[";", ","]
DateStyle = Literal["iso", "french"]
CSV_ENCODINGS: tuple[str, ...] = ("utf-8", "utf-8-sig", "cp1252")
CSV_DELIMITERS: tuple[str, ...] = (";", ",")
DATE_STYLES: tuple[str, ...] = ("iso", "french")

# Rehearsals should run the migration with `--as-of` this instant: expiry is judged against it.
REFERENCE_DATE = datetime(2024, 11, 1)

# The 17 categories of "What real extracts contain", in the contract's order.
DEFECT_CATEGORIES: tuple[str, ...] = (
    "courriel_spaces_case",  # 1
    "courriel_duplicate",  # 2
    "courriel_invalid",  # 3
    "blank_name",  # 4
    "telephone_format",  # 5
    "name_typography",  # 6
    "siret_defects",  # 7
    "etablissement_duplicate",  # 8
    "habilitation_orphan",  # 9
    "retired_application",  # 10
    "duplicate_access",  # 11
    "role_spelling",  # 12
    "active_out_of_period",  # 13
    "deleted_user_active",  # 14
    "pro_without_siret",  # 15
    "dangerous_text",  # 16
    "agent_without_siret",  # 17
)


@dataclass(frozen=True)
class DefectRates:
    """Share of the affected population planted with each defect category.

    The population is the table the defect lives in (users, establishments or habilitations),
    except where noted. A rate of 0 disables a category; any positive rate plants at least one
    row of each of the category's variants when the data allows it.
    """

    courriel_spaces_case: float = 0.02
    courriel_duplicate: float = 0.01  # users given the login of another user
    courriel_invalid: float = 0.01
    blank_name: float = 0.01
    telephone_format: float = 0.25  # of the users that have a phone: other layouts and garbage
    name_typography: float = 0.04
    siret_defects: float = 0.03  # of establishments (spaces, check digit, siren)
    la_poste: float = 0.005  # of establishments: La Poste sites (category 7, valid by their rule)
    etablissement_duplicate: float = 0.01
    habilitation_orphan: float = 0.005
    retired_application: float = 0.005
    duplicate_access: float = 0.005
    role_spelling: float = 0.05  # of EDOF habilitations
    active_out_of_period: float = 0.01
    deleted_user_active: float = 0.25  # of the habilitations of deleted users
    pro_without_siret: float = 0.005
    dangerous_text: float = 0.002  # of users and of establishments
    agent_without_siret: float = 0.8  # of AGENT habilitations: legitimate, hence the high rate

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if not isinstance(value, int | float) or not 0 <= value <= 1:
                raise ConfigurationError(f"defect rate {item.name} must be between 0 and 1, got {value!r}")


@dataclass(frozen=True)
class GenerateConfig:
    """What to generate and where. `out` is a SQLAlchemy URL or a folder path.

    `csv_encoding` also shapes the data (no NFD text for cp1252, see the module docstring), so
    that a database and a CSV folder generated with one config hold the same rows.
    """

    users: int
    seed: int
    out: str
    csv_encoding: CsvEncoding = "utf-8"
    csv_delimiter: CsvDelimiter = ";"
    date_style: DateStyle = "iso"
    defect_rates: DefectRates = field(default_factory=DefectRates)
    reference_date: datetime = REFERENCE_DATE

    def __post_init__(self) -> None:
        if isinstance(self.users, bool) or not isinstance(self.users, int) or self.users < 1:
            raise ConfigurationError(f"--users must be a positive integer, got {self.users!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigurationError(f"--seed must be a non-negative integer, got {self.seed!r}")
        if not self.out:
            raise ConfigurationError("--out must name a folder or a database URL")
        _check_choice("--csv-encoding", self.csv_encoding, CSV_ENCODINGS)
        _check_choice("--csv-delimiter", self.csv_delimiter, CSV_DELIMITERS)
        _check_choice("--date-style", self.date_style, DATE_STYLES)
        if self.reference_date.tzinfo is not None or self.reference_date.microsecond:
            raise ConfigurationError("reference_date must be naive, in whole seconds")


def _check_choice(option: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigurationError(f"{option} must be one of {', '.join(allowed)}, got {value!r}")


@dataclass(frozen=True)
class DefectRecord:
    """What was planted: rows per category and per variant, and a few keys of each variant.

    Keys read `table:key` (id_utilisateur, id_habilitation, or siret as written).
    """

    variants: Mapping[str, Mapping[str, int]]
    samples: Mapping[str, Sequence[str]]

    @property
    def counts(self) -> dict[str, int]:
        return {category: sum(self.variants[category].values()) for category in DEFECT_CATEGORIES}

    def to_dict(self) -> dict[str, Any]:
        return {
            "defects": self.counts,
            "defect_variants": {c: dict(self.variants[c]) for c in DEFECT_CATEGORIES},
            "defect_samples": {c: list(self.samples[c]) for c in DEFECT_CATEGORIES},
        }


@dataclass(frozen=True)
class LegacyExport:
    """The four tables (columns of `legacy_schema`, mot_de_passe_hash included) and the record."""

    frames: Mapping[str, pd.DataFrame]
    record: DefectRecord


@dataclass(frozen=True)
class GenerateResult:
    output: str
    output_kind: Literal["csv", "database"]
    seed: int
    users: int
    reference_date: str
    row_counts: Mapping[str, int]
    record: DefectRecord
    elapsed_seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "output": self.output,
            "output_kind": self.output_kind,
            "seed": self.seed,
            "users": self.users,
            "reference_date": self.reference_date,
            "row_counts": dict(self.row_counts),
            **self.record.to_dict(),
            "elapsed_seconds": round(self.elapsed_seconds, 2),
        }


# --------------------------------------------------------------------------------------------
# Entry point


def generate_legacy(config: GenerateConfig) -> GenerateResult:
    """Builds a legacy export and writes it to `config.out` (database URL or CSV folder)."""
    started = time.perf_counter()
    # Check the destination before spending a minute building a large export.
    engine = make_engine(config.out, what="--out") if looks_like_url(config.out) else None
    folder = Path(config.out)
    if engine is None and folder.exists() and not folder.is_dir():
        raise ConfigurationError(f"--out: {folder} exists and is not a folder")
    try:
        export = build_legacy_export(config)
        log.info("built %s in %.1fs", _row_counts(export.frames), time.perf_counter() - started)
        if engine is not None:
            write_database(export.frames, engine)
        else:
            write_csv_folder(
                export.frames,
                folder,
                encoding=config.csv_encoding,
                delimiter=config.csv_delimiter,
                date_style=config.date_style,
            )
            _write_defects_json(folder / "defects.json", config, export)
    finally:
        if engine is not None:
            engine.dispose()
    return GenerateResult(
        output=str(folder) if engine is None else mask_url(config.out),
        output_kind="csv" if engine is None else "database",
        seed=config.seed,
        users=config.users,
        reference_date=config.reference_date.isoformat(sep=" "),
        row_counts=_row_counts(export.frames),
        record=export.record,
        elapsed_seconds=time.perf_counter() - started,
    )


def build_legacy_frames(config: GenerateConfig) -> dict[str, pd.DataFrame]:
    """The four legacy tables, with every column of `legacy_schema` (password hash included)."""
    return dict(build_legacy_export(config).frames)


def build_legacy_export(config: GenerateConfig) -> LegacyExport:
    pools = _draw_pools(config.seed)
    record = _Recorder()
    establishments = _build_establishments(config, pools, record)
    users = _build_users(config, pools, establishments, record)
    habilitations = _build_habilitations(config, users, establishments, record)
    frames = {
        "utilisateurs": users.frame,
        "etablissements": establishments.frame,
        "applications": _applications_frame(),
        "habilitations": habilitations,
    }
    return LegacyExport(frames=frames, record=record.freeze())


def _row_counts(frames: Mapping[str, pd.DataFrame]) -> dict[str, int]:
    return {name: len(frames[name]) for name in LEGACY_TABLES}


def _write_defects_json(path: Path, config: GenerateConfig, export: LegacyExport) -> None:
    # Only deterministic content: no elapsed time, no absolute path.
    payload = {
        "seed": config.seed,
        "users": config.users,
        "reference_date": config.reference_date.isoformat(sep=" "),
        "csv_encoding": config.csv_encoding,
        "csv_delimiter": config.csv_delimiter,
        "date_style": config.date_style,
        "row_counts": _row_counts(export.frames),
        **export.record.to_dict(),
    }
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------------------------
# Randomness, quotas and the record


def _rng(seed: int, stream: str) -> np.random.Generator:
    # One independent stream per section: changing one section does not reshuffle the others.
    key = int.from_bytes(hashlib.sha256(stream.encode()).digest()[:8], "big")
    return np.random.default_rng([seed, key])


def _quota(rate: float, population: int, minimum: int = 1) -> int:
    if rate <= 0 or population <= 0:
        return 0
    return min(population, max(minimum, round(rate * population)))


def _variants(rng: np.random.Generator, k: int, weights: Sequence[float]) -> np.ndarray:
    """A variant index for each of k planted rows: one of each first, the rest by weight."""
    head = np.arange(min(k, len(weights)))
    p = np.asarray(weights, dtype=float)
    tail = rng.choice(len(weights), size=max(0, k - len(weights)), p=p / p.sum())
    out = np.concatenate([head, tail]).astype(np.int64)
    rng.shuffle(out)
    return out


class _Picker:
    """Draws disjoint random rows, so that every planted row carries exactly one defect."""

    def __init__(self, rng: np.random.Generator, n: int) -> None:
        self._order = rng.permutation(n)
        self._used = np.zeros(n, dtype=bool)

    def take(self, k: int, eligible: np.ndarray | None = None) -> np.ndarray:
        if k <= 0:
            return np.empty(0, dtype=np.int64)
        free = ~self._used[self._order]
        if eligible is not None:
            free &= eligible[self._order]
        chosen = np.sort(self._order[free][:k])
        self._used[chosen] = True
        return chosen

    def take_variants(
        self, rng: np.random.Generator, k: int, weights: Sequence[float], eligible: np.ndarray | None = None
    ) -> list[np.ndarray]:
        """k rows split over len(weights) variants; variant v gets the rows of list item v."""
        rows = self.take(k, eligible)
        labels = _variants(rng, rows.size, weights)
        return [rows[labels == v] for v in range(len(weights))]


class _Recorder:
    _SAMPLES_PER_VARIANT = 3

    def __init__(self) -> None:
        self._variants: dict[str, dict[str, int]] = {c: {} for c in DEFECT_CATEGORIES}
        self._samples: dict[str, list[str]] = {c: [] for c in DEFECT_CATEGORIES}

    def add(self, category: str, variant: str, table: str, keys: np.ndarray | Sequence[Any]) -> None:
        count = len(keys)
        if count == 0:
            return
        self._variants[category][variant] = self._variants[category].get(variant, 0) + count
        self._samples[category].extend(f"{table}:{key}" for key in list(keys[: self._SAMPLES_PER_VARIANT]))

    def freeze(self) -> DefectRecord:
        return DefectRecord(
            variants={c: dict(self._variants[c]) for c in DEFECT_CATEGORIES},
            samples={c: tuple(self._samples[c]) for c in DEFECT_CATEGORIES},
        )


# --------------------------------------------------------------------------------------------
# Vectorised text: digits and characters as byte matrices


def _ascii_strings(matrix: np.ndarray, chunk_rows: int = 131_072) -> np.ndarray:
    """Rows of an (n, w) uint8 ASCII matrix as an object array of str."""
    n, width = matrix.shape
    out = np.empty(n, dtype=object)
    if width == 0:
        out[:] = ""
        return out
    # Chunked: the fixed-width unicode intermediate takes 4 bytes a character.
    for start in range(0, n, chunk_rows):
        block = np.ascontiguousarray(matrix[start : start + chunk_rows], dtype=np.uint8)
        out[start : start + chunk_rows] = block.view(f"S{width}").ravel().astype(f"U{width}")
    return out


def _layout(matrix: np.ndarray, pattern: Sequence[int | str]) -> np.ndarray:
    """Strings made of columns of `matrix` (ints) and literal characters (str), per row."""
    out = np.empty((matrix.shape[0], len(pattern)), dtype=np.uint8)
    for j, part in enumerate(pattern):
        out[:, j] = matrix[:, part] if isinstance(part, int) else ord(part)
    return _ascii_strings(out)


def _digits(values: np.ndarray, width: int, chunk_rows: int = 262_144) -> np.ndarray:
    """(n, width) uint8 matrix of the decimal digits of each value, zero-padded on the left."""
    values = np.asarray(values, dtype=np.int64).reshape(-1)
    powers = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    out = np.empty((values.size, width), dtype=np.uint8)
    for start in range(0, values.size, chunk_rows):  # the int64 intermediate is 8x the result
        block = values[start : start + chunk_rows, None]
        out[start : start + chunk_rows] = (block // powers) % 10
    return out


def _digit_text(digits: np.ndarray) -> np.ndarray:
    return _ascii_strings(digits + ord("0"))


_LUHN_DOUBLED = np.array([0, 2, 4, 6, 8, 1, 3, 5, 7, 9], dtype=np.int64)


def _luhn_check_digit(digits: np.ndarray) -> np.ndarray:
    """The digit to append to each row of `digits` so that the whole passes the Luhn check."""
    width = digits.shape[1]
    # Counting from the appended digit (not doubled), every second digit is doubled.
    doubled = (width - 1 - np.arange(width)) % 2 == 0
    total = np.where(doubled, _LUHN_DOUBLED[digits], digits).sum(axis=1)
    check: np.ndarray = ((10 - total % 10) % 10).astype(np.int64)
    return check


# --------------------------------------------------------------------------------------------
# Time: naive Europe/Paris wall time, whole seconds, as int64 seconds since 1970-01-01

_DAY = 86_400
_YEAR = 365 * _DAY
_NULL = np.iinfo(np.int64).min


def _seconds(moment: datetime) -> int:
    return int((moment - datetime(1970, 1, 1)).total_seconds())


def _spring_forward_days() -> np.ndarray:
    # Last Sunday of March, when Paris clocks jump from 02:00 to 03:00: that hour never exists.
    days = []
    for year in range(1971, 2101):
        march_31 = (datetime(year, 3, 31) - datetime(1970, 1, 1)).days
        weekday = (march_31 + 3) % 7  # 1970-01-01 was a Thursday; Monday is 0
        days.append(march_31 - (weekday - 6) % 7)
    return np.array(days, dtype=np.int64)


_SPRING_FORWARD = _spring_forward_days()


def _wall_times(
    rng: np.random.Generator, start: Any, end: Any, n: int, chunk_rows: int = 1 << 20
) -> np.ndarray:
    """n instants in [start, end), mostly in office hours, never inside the spring-forward gap."""
    lo = np.broadcast_to(np.asarray(start, dtype=np.int64), (n,))
    hi = np.broadcast_to(np.asarray(end, dtype=np.int64), (n,))
    out = np.empty(n, dtype=np.int64)
    for first in range(0, n, chunk_rows):  # chunked: a dozen temporaries per row otherwise
        block = slice(first, first + chunk_rows)
        out[block] = _wall_times_block(rng, lo[block], hi[block])
    return out


def _wall_times_block(rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    n = lo.size
    raw = lo + (rng.random(n) * np.maximum(hi - lo, 1)).astype(np.int64)
    office = rng.random(n) < 0.85
    second_of_day = np.where(office, rng.integers(8 * 3600, 19 * 3600, n), rng.integers(0, _DAY, n))
    snapped = raw - raw % _DAY + second_of_day
    moments = np.where((snapped >= lo) & (snapped < hi), snapped, raw)
    hour = moments % _DAY // 3600
    in_gap = (hour == 2) & np.isin(moments // _DAY, _SPRING_FORWARD)
    shifted: np.ndarray = np.where(in_gap, moments + 3600, moments)
    return shifted


def _civil_digits(seconds: np.ndarray) -> np.ndarray:
    """(n, 14) ASCII matrix YYYYMMDDHHMMSS."""
    days = seconds // _DAY
    second_of_day = seconds - days * _DAY
    year, month, day = civil_dates(days)
    packed = (
        year * 10_000_000_000
        + month * 100_000_000
        + day * 1_000_000
        + (second_of_day // 3600) * 10_000
        + (second_of_day % 3600 // 60) * 100
        + second_of_day % 60
    )
    return _digits(packed, 14) + ord("0")


_DATE_FIELDS = {"Y": (0, 1, 2, 3), "M": (4, 5), "D": (6, 7), "h": (8, 9), "m": (10, 11), "s": (12, 13)}


def _date_pattern(template: str) -> tuple[int | str, ...]:
    """'DD/MM/YYYY hh:mm:ss' as columns of the YYYYMMDDhhmmss matrix and literal characters."""
    used: dict[str, int] = {}
    parts: list[int | str] = []
    for char in template:
        if char in _DATE_FIELDS:
            parts.append(_DATE_FIELDS[char][used.get(char, 0)])
            used[char] = used.get(char, 0) + 1
        else:
            parts.append(char)
    return tuple(parts)


_ISO_TIMESTAMP = _date_pattern("YYYY-MM-DD hh:mm:ss")
_FRENCH_TIMESTAMP = _date_pattern("DD/MM/YYYY hh:mm:ss")
_ISO_DATE = _date_pattern("YYYY-MM-DD")
_FRENCH_DATE = _date_pattern("DD/MM/YYYY")
# SQLAlchemy's own storage format for DateTime on SQLite, so readers see what an ORM would write.
_SQLITE_TIMESTAMP = _date_pattern("YYYY-MM-DD hh:mm:ss.000000")


def _format_moments(values: pd.Series, pattern: Sequence[int | str]) -> np.ndarray:
    """Datetime column as text in `pattern`; NaT becomes None."""
    raw = values.to_numpy(dtype="datetime64[s]")
    missing = np.isnat(raw)
    seconds = np.where(missing, 0, raw.astype(np.int64))
    text = _layout(_civil_digits(seconds), pattern)
    text[missing] = None
    return text


def _moments(seconds: np.ndarray) -> np.ndarray:
    values = seconds.astype("datetime64[s]")
    values[seconds == _NULL] = np.datetime64("NaT")
    return values.astype("datetime64[ns]")


# --------------------------------------------------------------------------------------------
# Pools: Faker is called a few thousand times in all, never per row


COMPOUND_FIRST_NAMES = (
    "Jean-Pierre",
    "Jean-Luc",
    "Jean-François",
    "Jean-Marc",
    "Marie-Claire",
    "Marie-Hélène",
    "Marie-Christine",
    "Anne-Sophie",
    "Anne-Laure",
    "Pierre-Yves",
)
APOSTROPHE_LAST_NAMES = (
    "N'Diaye",
    "D'Almeida",
    "D'Amico",
    "L'Hôte",
    "N'Guessan",
    "D'Aubigné",
    "O'Connor",
    "Dell'Aquila",
)
WEBMAIL_DOMAINS = np.array(
    ["orange.fr", "wanadoo.fr", "free.fr", "sfr.fr", "laposte.net", "gmail.com", "hotmail.fr", "yahoo.fr"],
    dtype=object,
)
WEBMAIL_WEIGHTS = np.array([0.22, 0.12, 0.14, 0.08, 0.08, 0.22, 0.08, 0.06])
AGENT_DOMAINS = np.array(
    ["emploi.gouv.fr", "travail.gouv.fr", "dreets.gouv.fr", "francetravail.fr", "sg.social.gouv.fr"],
    dtype=object,
)
_LEGAL_FORMS = re.compile(r"\s+(S\.A\.R\.L\.|S\.A\.S\.|S\.A\.|SARL|SAS|SA)$")


@dataclass(frozen=True)
class _Pools:
    first_names: np.ndarray
    first_folded: np.ndarray
    first_initials: np.ndarray
    last_names: np.ndarray
    last_folded: np.ndarray
    companies: np.ndarray
    company_slugs: np.ndarray
    streets: np.ndarray
    postcodes: np.ndarray
    cities: np.ndarray


def _fold(text: str) -> str:
    """Lower-case ASCII, as typed in an email local part: accents, spaces and apostrophes dropped."""
    lowered = text.lower().replace("œ", "oe").replace("æ", "ae")
    bare = "".join(c for c in unicodedata.normalize("NFKD", lowered) if not unicodedata.combining(c))
    return re.sub(r"[^a-z0-9-]", "", bare)


def _slug(company: str) -> str:
    bare = _fold(_LEGAL_FORMS.sub("", company).replace(" ", "-").replace(",", "-")).strip("-")
    return re.sub(r"-{2,}", "-", bare) or "entreprise"


def _cp1252_only(values: Sequence[str]) -> list[str]:
    # Distinct, in first-seen order (determinism), and writable in every CSV encoding offered.
    kept = []
    for value in dict.fromkeys(values):
        try:
            value.encode("cp1252")
        except UnicodeEncodeError:
            continue
        kept.append(value)
    return kept


def _draw_pools(seed: int) -> _Pools:
    from faker import Faker

    fake = Faker("fr_FR")
    fake.seed_instance(seed)
    first = _cp1252_only([fake.first_name() for _ in range(3000)] + list(COMPOUND_FIRST_NAMES))
    last = _cp1252_only([fake.last_name() for _ in range(3000)] + list(APOSTROPHE_LAST_NAMES))
    companies = _cp1252_only([fake.company() for _ in range(4000)])
    # A few names that need CSV quoting whatever the delimiter: quotes, commas, semicolons.
    companies += [f'Association "{name}"' for name in last[:12]]
    companies += [f"{a}, {b} et Associés" for a, b in zip(last[12:20], last[20:28], strict=True)]
    companies += [f"{name}; conseil & formation" for name in last[28:34]]
    streets = _cp1252_only([fake.street_address() for _ in range(4000)])
    postcodes = _cp1252_only([fake.postcode() for _ in range(3000)])
    cities = _cp1252_only([fake.city() for _ in range(3000)])
    first_folded = [_fold(name) for name in first]

    def arr(values: Sequence[str]) -> np.ndarray:
        return np.array(values, dtype=object)

    return _Pools(
        first_names=arr(first),
        first_folded=arr(first_folded),
        first_initials=arr([name[:1] for name in first_folded]),
        last_names=arr(last),
        last_folded=arr([_fold(name) for name in last]),
        companies=arr(companies),
        company_slugs=arr([_slug(name) for name in companies]),
        streets=arr(streets),
        postcodes=arr(postcodes),
        cities=arr(cities),
    )


def _decomposable(values: np.ndarray) -> np.ndarray:
    return np.array([unicodedata.normalize("NFD", value) != value for value in values], dtype=bool)


def _with_apostrophe(values: np.ndarray) -> np.ndarray:
    return np.array(["'" in value for value in values], dtype=bool)


# --------------------------------------------------------------------------------------------
# Applications


APPLICATIONS: tuple[tuple[str, str, bool], ...] = (
    ("CERES", "Certification Emploi", True),
    ("SOFFI", "Suivi Opérateurs, Formation et Financement", True),
    ("MAF", "Mon Activité Formation", True),
    ("EDOF", "Espace des Organismes de Formation", True),
    ("MSDC", "Mon Suivi du Contrôle", True),
    ("DECA", "Dépôt des Contrats d'Alternance", True),
    ("AGECAP", "Gestion des Contrats d'Alternance Publics", True),
    ("CELIA", "Contrats d'apprentissage pour les employeurs publics", True),
    ("RUPCO", "Ruptures Collectives de Contrats de Travail", True),
    ("REVIT", "Revitalisation", True),
    ("EDEC", "Engagement Déploiement et Compétence", True),
    ("DACCORD", "Accords collectifs d'entreprise", True),
    ("AGAPETH", "AGAPE'TH", True),
    ("MDFSE", "Ma Démarche FSE 21-27", True),
    ("POP", "POP", True),
    ("PIC", "Collecteur de flux PIC / Qualiopi", True),
    ("REACTEUR", "REACTEUR", True),
    ("ECR", "Mes collectes formation", False),
    ("REFSTRUCT", "Référentiel structures", False),
)
APP_CODES = np.array([code for code, _, _ in APPLICATIONS], dtype=object)
ACTIVE_APPS = np.array([i for i, (_, _, active) in enumerate(APPLICATIONS) if active], dtype=np.int64)
RETIRED_CODES = np.array([code for code, _, active in APPLICATIONS if not active], dtype=object)
EDOF = int(np.flatnonzero(APP_CODES == "EDOF")[0])
# How often professionals and agents hold each active application (same order as ACTIVE_APPS).
PRO_APP_WEIGHTS = (5, 6, 12, 30, 4, 10, 3, 3, 2, 1, 2, 6, 2, 3, 3, 3, 2)
AGENT_APP_WEIGHTS = (6, 10, 4, 6, 8, 4, 4, 3, 8, 6, 6, 8, 3, 5, 4, 3, 3)
EDOF_ROLES = np.array(
    [
        None,
        "Gestionnaire EDOF",
        "Gestionnaire catalogue",
        "Gestionnaire administratif",
        "Gestionnaire financier",
        "Lecteur EDOF",
    ],
    dtype=object,
)
EDOF_ROLE_WEIGHTS = (0.35, 0.25, 0.15, 0.1, 0.1, 0.05)
UNKNOWN_APP_CODES = np.array(["SIAM", "EXTRANET", "EDOF_TEST", "SOLIS", "MAF2"], dtype=object)
UNMAPPABLE_ROLES = np.array(["Super admin", "Administrateur local"], dtype=object)


def _applications_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "code_application": pd.Series([a[0] for a in APPLICATIONS], dtype="str"),
            "libelle": pd.Series([a[1] for a in APPLICATIONS], dtype="str"),
            "actif": np.array([a[2] for a in APPLICATIONS], dtype=bool),
        }
    )


# --------------------------------------------------------------------------------------------
# Establishments

_LA_POSTE_SIREN = 356_000_000
LONG_TEXT = "Ancienne dénomination reprise du registre, conservée pour mémoire. " * 64  # ~4.3 KB
CONTROL_CHARACTERS = np.array(["\x07", "\x1b", "\t"], dtype=object)


@dataclass(frozen=True)
class _Establishments:
    frame: pd.DataFrame
    siret: np.ndarray  # per site, as referenced by users and habilitations (no spaces)
    sirens: np.ndarray  # every SIREN drawn, to draw SIRETs that exist nowhere
    domain: np.ndarray  # mail domain of the company
    count: int


def _draw_sirens(rng: np.random.Generator, n: int, exclude: np.ndarray | None = None) -> np.ndarray:
    """n distinct valid SIRENs (Luhn), none of them La Poste's nor in `exclude`."""
    drawn = rng.choice(90_000_000, size=min(90_000_000, n + 64 + n // 8), replace=False) + 10_000_000
    sirens = drawn * 10 + _luhn_check_digit(_digits(drawn, 8))
    keep = sirens != _LA_POSTE_SIREN
    if exclude is not None:
        keep &= ~np.isin(sirens, exclude)
    kept: np.ndarray = sirens[keep][:n]
    return kept


def _sirets(sirens: np.ndarray, nic4: np.ndarray) -> np.ndarray:
    payload = sirens * 10_000 + nic4
    return _digits(payload * 10 + _luhn_check_digit(_digits(payload, 13)), 14)


def _la_poste_sirets(rng: np.random.Generator, n: int) -> np.ndarray:
    # La Poste's sites share SIREN 356000000; their SIRET is valid when its digits sum to a
    # multiple of 5 (python-stdnum's rule), so the last digit is one of two values.
    nic4 = rng.choice(np.arange(1, 10_000), size=min(n, 9_999), replace=False)
    payload = _digits(np.int64(_LA_POSTE_SIREN) * 10_000 + nic4, 13)
    last = (-payload.sum(axis=1, dtype=np.int64)) % 5 + 5 * rng.integers(0, 2, nic4.size)
    return np.concatenate([payload, last[:, None].astype(np.uint8)], axis=1)


def _build_establishments(config: GenerateConfig, pools: _Pools, record: _Recorder) -> _Establishments:
    rng = _rng(config.seed, "etablissements")
    rates = config.defect_rates
    regular = max(2, config.users // 4)
    # Most companies have one site; the others add secondary sites (same SIREN, next NIC).
    n_siren = max(1, int(regular * 0.85))
    sirens = _draw_sirens(rng, n_siren)
    owner = np.concatenate([np.arange(n_siren), rng.integers(0, n_siren, regular - n_siren)])
    occurrence = pd.Series(owner).groupby(owner).cumcount().to_numpy()
    nic4 = rng.integers(1, 40, n_siren)[owner] + occurrence
    digits = np.concatenate(
        [_sirets(sirens[owner], nic4), _la_poste_sirets(rng, _quota(rates.la_poste, regular))]
    )
    count = int(digits.shape[0])
    poste = np.zeros(count, dtype=bool)
    poste[regular:] = True

    company = rng.integers(0, pools.companies.size, n_siren)[owner]
    name = np.concatenate([pools.companies[company], np.full(count - regular, "LA POSTE", dtype=object)])
    domain = np.concatenate(
        [pools.company_slugs[company] + ".fr", np.full(count - regular, "laposte.fr", dtype=object)]
    )
    address = _sample_nullable(rng, pools.streets, count, 0.03)
    postcode = _sample_nullable(rng, pools.postcodes, count, 0.03)
    city = _sample_nullable(rng, pools.cities, count, 0.02)
    closed = np.full(count, _NULL, dtype=np.int64)
    is_closed = rng.random(count) < 0.04
    closed_days = rng.integers(
        _seconds(datetime(2015, 1, 1)) // _DAY, _seconds(config.reference_date) // _DAY, int(is_closed.sum())
    )
    closed[is_closed] = closed_days * _DAY

    picker = _Picker(rng, count)
    # Category 7: SIRET written with spaces, wrong check digit, siren disagreeing or missing.
    spaced, wrong, mismatch, no_siren = picker.take_variants(
        rng, _quota(rates.siret_defects, regular, 4), (0.4, 0.25, 0.2, 0.15), eligible=~poste
    )
    digits[wrong, 13] = (digits[wrong, 13] + rng.integers(1, 10, wrong.size)) % 10
    siret = _digit_text(digits)
    written = siret.copy()
    layouts: tuple[tuple[int | str, ...], ...] = (
        (0, 1, 2, " ", 3, 4, 5, " ", 6, 7, 8, " ", 9, 10, 11, 12, 13),
        (0, 1, 2, 3, 4, 5, 6, 7, 8, " ", 9, 10, 11, 12, 13),
        (*range(14), " "),
    )
    layout_of = rng.integers(0, len(layouts), spaced.size)
    for i, pattern in enumerate(layouts):
        rows = spaced[layout_of == i]
        written[rows] = _layout(digits[rows] + ord("0"), pattern)
    siren_digits = digits[:, :9].copy()
    position = rng.integers(0, 9, mismatch.size)
    siren_digits[mismatch, position] = (
        siren_digits[mismatch, position] + rng.integers(1, 10, mismatch.size)
    ) % 10
    siren = _digit_text(siren_digits)
    siren[no_siren] = None
    for variant, rows in (
        ("spaces", spaced),
        ("wrong_check_digit", wrong),
        ("siren_mismatch", mismatch),
        ("siren_null", no_siren),
        ("la_poste", np.flatnonzero(poste)),
    ):
        record.add("siret_defects", variant, "etablissements", written[rows])

    # Category 16: spreadsheet formulas, markup, control characters, very long values.
    dangerous = picker.take_variants(rng, _quota(rates.dangerous_text, count, 5), (1, 1, 1, 1, 1))
    formula, markup, long_name, control, multiline = dangerous
    name[formula] = np.array(["=", "+", "-", "@"], dtype=object)[np.arange(formula.size) % 4] + name[formula]
    name[markup] = "<b>" + name[markup] + "</b><script>alert(1)</script>"
    name[long_name] = name[long_name] + " - " + LONG_TEXT
    city[control] = np.where(pd.isna(city[control]), "Paris", city[control]) + rng.choice(
        CONTROL_CHARACTERS, control.size
    )
    address[multiline] = np.where(pd.isna(address[multiline]), "1, rue de la Paix", address[multiline]) + (
        "\nBâtiment B, 2e étage"
    )
    for variant, rows in (
        ("raison_sociale_formula", formula),
        ("raison_sociale_html", markup),
        ("raison_sociale_long", long_name),
        ("commune_control_character", control),
        ("adresse_line_break", multiline),
    ):
        record.add("dangerous_text", f"etablissements.{variant}", "etablissements", written[rows])

    columns: dict[str, np.ndarray] = {
        "siret": written,
        "siren": siren,
        "raison_sociale": name,
        "adresse": address,
        "code_postal": postcode,
        "commune": city,
        "date_fermeture": closed,
    }
    k = _quota(rates.etablissement_duplicate, count, 3)
    columns = _duplicate_sites(rng, picker, columns, k=k, record=record, config=config)
    frame = pd.DataFrame(
        {
            **{
                key: pd.Series(values, dtype="str")
                for key, values in columns.items()
                if key != "date_fermeture"
            },
            "date_fermeture": _moments(columns["date_fermeture"]),
        }
    )
    return _Establishments(frame=frame, siret=siret, sirens=sirens, domain=domain, count=count)


def _duplicate_sites(
    rng: np.random.Generator,
    picker: _Picker,
    columns: dict[str, np.ndarray],
    *,
    k: int,
    record: _Recorder,
    config: GenerateConfig,
) -> dict[str, np.ndarray]:
    """Category 8: extra rows for SIRETs already present (identical, renamed or closed copy)."""
    same, renamed, closed = picker.take_variants(rng, k, (0.4, 0.4, 0.2))
    sources = np.concatenate([same, renamed, closed])
    copies = {key: values[sources].copy() for key, values in columns.items()}
    head, tail = same.size, same.size + renamed.size
    # Renamed as the national register writes names (capitals), or flagged when already so.
    former = copies["raison_sociale"][head:tail]
    upper = pd.Series(former, dtype="str").str.upper().to_numpy(dtype=object)
    copies["raison_sociale"][head:tail] = np.where(upper == former, former + " (ANCIEN NOM)", upper)
    closing_day = rng.integers(
        _seconds(datetime(2016, 1, 1)) // _DAY, _seconds(config.reference_date) // _DAY, closed.size
    )
    copies["date_fermeture"][tail:] = closing_day * _DAY
    for variant, rows in (("identical_copy", same), ("renamed_copy", renamed), ("closed_copy", closed)):
        record.add("etablissement_duplicate", variant, "etablissements", columns["siret"][rows])
    return {key: np.concatenate([values, copies[key]]) for key, values in columns.items()}


def _nullify(values: np.ndarray, missing: np.ndarray) -> np.ndarray:
    out = values.astype(object)
    out[missing] = None
    return out


def _sample_nullable(rng: np.random.Generator, pool: np.ndarray, n: int, null_rate: float) -> np.ndarray:
    values = pool[rng.integers(0, pool.size, n)]
    values[rng.random(n) < null_rate] = None
    return values


# --------------------------------------------------------------------------------------------
# Users

USER_STATUSES = np.array(["ACTIF", "EN_ATTENTE", "VERROUILLE", "SUPPRIME"], dtype=object)
U_ACTIF, U_EN_ATTENTE, U_VERROUILLE, U_SUPPRIME = range(4)
PHONE_GARBAGE = np.array(
    ["n/a", "N/A", "néant", "inconnu", "0000", "?", "pas de téléphone", "12"], dtype=object
)
_BCRYPT_ALPHABET = np.frombuffer(
    b"./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", dtype=np.uint8
)


@dataclass(frozen=True)
class _Users:
    frame: pd.DataFrame
    ids: np.ndarray
    is_agent: np.ndarray
    status: np.ndarray
    created: np.ndarray
    site: np.ndarray  # establishment position, -1 for agents


def _build_users(config: GenerateConfig, pools: _Pools, sites: _Establishments, record: _Recorder) -> _Users:
    rng = _rng(config.seed, "utilisateurs")
    n = config.users
    reference = _seconds(config.reference_date)
    # Ids grow with creation time and have gaps: purged accounts left holes.
    ids = 10_000 + np.cumsum(rng.geometric(0.85, n)).astype(np.int64)
    is_agent = rng.random(n) < 0.10
    status = rng.choice(4, n, p=[0.88, 0.05, 0.03, 0.04])
    created = np.sort(_wall_times(rng, _seconds(datetime(2012, 1, 1)), reference - _DAY, n))
    # A few large establishments hold many accounts, most hold one to a handful.
    site = rng.permutation(sites.count)[(sites.count * rng.random(n) ** 2).astype(np.int64)]
    site[is_agent] = -1

    first = rng.integers(0, pools.first_names.size, n)
    last = rng.integers(0, pools.last_names.size, n)
    local, domain = _email_parts(
        rng, pools, first=first, last=last, company_domain=sites.domain[site], is_agent=is_agent
    )
    email = _unique_emails(local, domain)
    picker = _Picker(rng, n)
    email = _plant_email_defects(
        rng,
        picker,
        email,
        ids=ids,
        status=status,
        first=first,
        last=last,
        rates=config.defect_rates,
        record=record,
    )
    prenom = pools.first_names[first]
    nom = pools.last_names[last]
    _plant_name_defects(
        rng, pools, prenom=prenom, nom=nom, first=first, last=last, ids=ids, config=config, record=record
    )

    last_login = np.full(n, _NULL, dtype=np.int64)
    logged_in = (status != U_EN_ATTENTE) & (rng.random(n) >= 0.06)
    last_login[logged_in] = _wall_times(rng, created[logged_in], reference, int(logged_in.sum()))
    rattachement = _nullify(sites.siret[site], is_agent)
    rattachement[rng.random(n) < 0.03] = None

    frame = pd.DataFrame(
        {
            "id_utilisateur": ids,
            "courriel": pd.Series(email, dtype="str"),
            "nom": pd.Series(nom, dtype="str"),
            "prenom": pd.Series(prenom, dtype="str"),
            "telephone": pd.Series(_phones(rng, n, ids, config.defect_rates, record), dtype="str"),
            "type_compte": pd.Series(np.where(is_agent, "AGENT", "PRO"), dtype="str"),
            "statut": pd.Series(USER_STATUSES[status], dtype="str"),
            "date_creation": _moments(created),
            "date_derniere_connexion": _moments(last_login),
            "mot_de_passe_hash": pd.Series(_password_hashes(rng, created, status), dtype="str"),
            "siret_rattachement": pd.Series(rattachement, dtype="str"),
        }
    )
    return _Users(frame=frame, ids=ids, is_agent=is_agent, status=status, created=created, site=site)


def _email_parts(
    rng: np.random.Generator,
    pools: _Pools,
    *,
    first: np.ndarray,
    last: np.ndarray,
    company_domain: np.ndarray,
    is_agent: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    n = first.size
    given, family, initial = pools.first_folded[first], pools.last_folded[last], pools.first_initials[first]
    style = rng.choice(4, n, p=[0.7, 0.14, 0.08, 0.08])
    local = given + "." + family
    # Local part styles: prenom.nom (most), p.nom, nom.prenom, prenomnom.
    initial_dot, reversed_order, glued = style == 1, style == 2, style == 3
    local[initial_dot] = initial[initial_dot] + "." + family[initial_dot]
    local[reversed_order] = family[reversed_order] + "." + given[reversed_order]
    local[glued] = given[glued] + family[glued]
    domain = company_domain.copy()
    webmail = ~is_agent & (rng.random(n) < 0.35)
    domain[webmail] = rng.choice(WEBMAIL_DOMAINS, int(webmail.sum()), p=WEBMAIL_WEIGHTS)
    domain[is_agent] = rng.choice(AGENT_DOMAINS, int(is_agent.sum()))
    return local, domain


def _unique_emails(local: np.ndarray, domain: np.ndarray) -> np.ndarray:
    """Namesakes on one domain get a number, as mail systems do (jean.martin2@...)."""
    email = local + "@" + domain
    series = pd.Series(email, dtype=object)
    rank = series.groupby(series, sort=False).cumcount().to_numpy()
    taken = rank > 0
    email[taken] = local[taken] + (rank[taken] + 1).astype(str).astype(object) + "@" + domain[taken]
    unique: np.ndarray = email
    return unique


def _case_variants(values: np.ndarray, kind: np.ndarray) -> np.ndarray:
    """0: upper, 1: capitalised words, 2: surrounding spaces, 3: spaces and upper."""
    series = pd.Series(values, dtype="str")
    out = values.copy()
    out[kind == 0] = series[kind == 0].str.upper().to_numpy(dtype=object)
    out[kind == 1] = series[kind == 1].str.title().to_numpy(dtype=object)
    out[kind == 2] = " " + values[kind == 2] + "  "
    out[kind == 3] = " " + series[kind == 3].str.upper().to_numpy(dtype=object)
    return out


def _plant_email_defects(
    rng: np.random.Generator,
    picker: _Picker,
    email: np.ndarray,
    *,
    ids: np.ndarray,
    status: np.ndarray,
    first: np.ndarray,
    last: np.ndarray,
    rates: DefectRates,
    record: _Recorder,
) -> np.ndarray:
    n = email.size
    # Category 1: surrounding spaces or mixed case.
    rows = picker.take(_quota(rates.courriel_spaces_case, n, 4))
    kind = _variants(rng, rows.size, (0.3, 0.3, 0.25, 0.15))
    email[rows] = _case_variants(email[rows], kind)
    for i, variant in enumerate(("upper_case", "capitalised", "surrounding_spaces", "spaces_and_upper")):
        record.add("courriel_spaces_case", variant, "utilisateurs", ids[rows[kind == i]])

    # Category 3: not an email address at all.
    no_at, space, no_dot, double_at, blank = picker.take_variants(
        rng, _quota(rates.courriel_invalid, n, 5), (0.3, 0.25, 0.2, 0.15, 0.1)
    )
    series = pd.Series(email, dtype=object)
    email[no_at] = series[no_at].str.replace("@", ".", regex=False).to_numpy(dtype=object)
    email[space] = series[space].str.replace("@", " @", regex=False).to_numpy(dtype=object)
    email[no_dot] = series[no_dot].str.replace(r"\.[a-z]+$", "", regex=True).to_numpy(dtype=object)
    email[double_at] = series[double_at].str.replace("@", "@@", regex=False).to_numpy(dtype=object)
    email[blank] = None
    for variant, rows in (
        ("no_at_sign", no_at),
        ("space_inside", space),
        ("no_domain_dot", no_dot),
        ("double_at_sign", double_at),
        ("blank", blank),
    ):
        record.add("courriel_invalid", variant, "utilisateurs", ids[rows])

    # Category 2: the same person registered twice or three times, the login typed differently.
    # Only live users: the contract's DUPLICATE_LOGIN rule ignores deleted accounts.
    copies = picker.take(_quota(rates.courriel_duplicate, n), eligible=status != U_SUPPRIME)
    originals = picker.take(max(1, math.ceil(copies.size * 0.7)) if copies.size else 0, status != U_SUPPRIME)
    if originals.size:
        copies = copies[: 2 * originals.size]
        source = originals[np.arange(copies.size) % originals.size]
        first[copies], last[copies] = first[source], last[source]
        kind = _variants(rng, copies.size, (0.3, 0.25, 0.25, 0.2)) - 1  # -1: typed identically
        email[copies] = np.where(kind < 0, email[source], _case_variants(email[source], kind))
        record.add("courriel_duplicate", "original", "utilisateurs", ids[np.unique(source)])
        for i, variant in enumerate(("copy_identical", "copy_upper_case", "copy_capitalised", "copy_spaces")):
            record.add("courriel_duplicate", variant, "utilisateurs", ids[copies[kind == i - 1]])
    return email


def _plant_name_defects(
    rng: np.random.Generator,
    pools: _Pools,
    *,
    prenom: np.ndarray,
    nom: np.ndarray,
    first: np.ndarray,
    last: np.ndarray,
    ids: np.ndarray,
    config: GenerateConfig,
    record: _Recorder,
) -> None:
    n = prenom.size
    rates = config.defect_rates
    picker = _Picker(rng, n)
    # Category 4: blank last or first name (NULL or whitespace only).
    nom_null, prenom_null, nom_spaces, prenom_spaces = picker.take_variants(
        rng, _quota(rates.blank_name, n, 4), (0.35, 0.35, 0.15, 0.15)
    )
    nom[nom_null], prenom[prenom_null], nom[nom_spaces], prenom[prenom_spaces] = None, None, "  ", " "
    for variant, rows in (
        ("nom_null", nom_null),
        ("prenom_null", prenom_null),
        ("nom_whitespace", nom_spaces),
        ("prenom_whitespace", prenom_spaces),
    ):
        record.add("blank_name", variant, "utilisateurs", ids[rows])

    # Category 6: decomposed accents, curly apostrophes, all capitals, extra spaces.
    k = _quota(rates.name_typography, n, 4)
    share = np.bincount(_variants(rng, k, (0.25, 0.2, 0.3, 0.25)), minlength=4)
    if config.csv_encoding == "cp1252":  # cp1252 cannot carry combining accents
        share = np.array([0, share[1], share[2], share[3] + share[0]])
    accented = _decomposable(pools.first_names)[first] | _decomposable(pools.last_names)[last]
    nfd = _take_or_force(picker, int(share[0]), accented, nom, "Hélène")
    with_apostrophe = _with_apostrophe(pools.last_names)[last]
    curly = _take_or_force(picker, int(share[1]), with_apostrophe, nom, "N'Diaye")
    caps, spaces = picker.take(int(share[2])), picker.take(int(share[3]))
    prenom[nfd] = pd.Series(prenom[nfd], dtype="str").str.normalize("NFD").to_numpy(dtype=object)
    nom[nfd] = pd.Series(nom[nfd], dtype="str").str.normalize("NFD").to_numpy(dtype=object)
    nom[curly] = pd.Series(nom[curly], dtype="str").str.replace("'", "’", regex=False).to_numpy(dtype=object)
    nom[caps] = pd.Series(nom[caps], dtype="str").str.upper().to_numpy(dtype=object)
    prenom[spaces] = "  " + prenom[spaces] + " "
    nom[spaces] = (
        pd.Series(nom[spaces], dtype="str").str.replace(r"^(\S+)", r"\1 ", regex=True).to_numpy(dtype=object)
    )
    for variant, rows in (
        ("nfd_accents", nfd),
        ("curly_apostrophe", curly),
        ("all_capitals", caps),
        ("extra_spaces", spaces),
    ):
        record.add("name_typography", variant, "utilisateurs", ids[rows])

    # Category 16 in names: formulas, markup, control characters, very long values.
    eq, plus, minus, at, markup, control, long_value = picker.take_variants(
        rng, _quota(rates.dangerous_text, n, 7), (1, 1, 1, 1, 1, 1, 1)
    )
    nom[eq] = '=HYPERLINK("http://exemple.invalid/?"&A1;"Cliquez")'
    prenom[plus] = "+" + prenom[plus]
    nom[minus] = "-" + nom[minus]
    prenom[at] = "@" + prenom[at]
    nom[markup] = "<script>alert(1)</script>"
    prenom[control] = prenom[control] + rng.choice(CONTROL_CHARACTERS, control.size)
    nom[long_value] = nom[long_value] + " " + LONG_TEXT
    for variant, rows in (
        ("nom_formula_equals", eq),
        ("prenom_formula_plus", plus),
        ("nom_formula_minus", minus),
        ("prenom_formula_at", at),
        ("nom_html", markup),
        ("prenom_control_character", control),
        ("nom_long", long_value),
    ):
        record.add("dangerous_text", f"utilisateurs.{variant}", "utilisateurs", ids[rows])


def _take_or_force(
    picker: _Picker,
    k: int,
    eligible: np.ndarray,
    nom: np.ndarray,
    fallback: str,
) -> np.ndarray:
    """k rows whose names can show the defect; with too few, some get a name that can."""
    rows = picker.take(k, eligible)
    if rows.size < k:
        forced = picker.take(k - rows.size)
        nom[forced] = fallback
        rows = np.sort(np.concatenate([rows, forced]))
    return rows


def _phone_prefixes() -> tuple[np.ndarray, np.ndarray]:
    """4-digit prefixes of valid French numbers (libphonenumber), and how common each is."""
    invalid = {"0262", "0590", "0594", "0639", "0690", "0691", "0692", "0693", "0694", "0696", "0697"}
    invalid |= {f"040{d}" for d in range(10)} | {f"07{d:02d}" for d in range(30)}
    weight_of = {"1": 0.12, "2": 0.08, "3": 0.07, "4": 0.08, "5": 0.06, "6": 0.38, "7": 0.13, "9": 0.08}
    prefixes = [f"0{a}{b:02d}" for a in "12345679" for b in range(100) if f"0{a}{b:02d}" not in invalid]
    weights = np.array([weight_of[p[1]] for p in prefixes])
    return np.array([int(p) for p in prefixes], dtype=np.int64), weights / weights.sum()


def _phones(
    rng: np.random.Generator, n: int, ids: np.ndarray, rates: DefectRates, record: _Recorder
) -> np.ndarray:
    prefixes, weights = _phone_prefixes()
    number = rng.choice(prefixes, n, p=weights) * 1_000_000 + rng.integers(0, 1_000_000, n)
    digits = _digits(number, 10) + ord("0")
    phone = _ascii_strings(digits)
    has_phone = rng.random(n) >= 0.25
    phone[~has_phone] = None
    # Category 5: the same numbers in the other layouts people type, and garbage.
    picker = _Picker(rng, n)
    k = _quota(rates.telephone_format, int(has_phone.sum()), 5)
    spaced, dotted, plus33, zero033, garbage = picker.take_variants(
        rng, k, (0.4, 0.2, 0.15, 0.15, 0.1), has_phone
    )
    pairs = (0, 1, " ", 2, 3, " ", 4, 5, " ", 6, 7, " ", 8, 9)
    phone[spaced] = _layout(digits[spaced], pairs)
    phone[dotted] = _layout(digits[dotted], tuple("." if p == " " else p for p in pairs))
    phone[plus33] = _layout(
        digits[plus33], ("+", "3", "3", " ", 1, " ", 2, 3, " ", 4, 5, " ", 6, 7, " ", 8, 9)
    )
    phone[zero033] = _layout(digits[zero033], ("0", "0", "3", "3", *range(1, 10)))
    phone[garbage] = rng.choice(PHONE_GARBAGE, garbage.size)
    for variant, rows in (
        ("spaced_pairs", spaced),
        ("dotted_pairs", dotted),
        ("plus33_spaced", plus33),
        ("international_0033", zero033),
        ("garbage", garbage),
    ):
        record.add("telephone_format", variant, "utilisateurs", ids[rows])
    return phone


def _password_hashes(rng: np.random.Generator, created: np.ndarray, status: np.ndarray) -> np.ndarray:
    """bcrypt-looking strings (random, no password behind them); NULL for never-activated accounts."""
    n = created.size
    body = _BCRYPT_ALPHABET[rng.integers(0, 64, (n, 53), dtype=np.uint8)]
    old = created < _seconds(datetime(2016, 1, 1))  # older accounts kept a weaker cost factor
    prefix = np.where(old[:, None], np.frombuffer(b"$2a$10$", np.uint8), np.frombuffer(b"$2b$12$", np.uint8))
    hashes = _ascii_strings(np.concatenate([prefix, body], axis=1))
    hashes[status == U_EN_ATTENTE] = None
    return hashes


# --------------------------------------------------------------------------------------------
# Habilitations

HAB_STATUSES = np.array(["ACTIVE", "EN_ATTENTE", "REFUSEE", "REVOQUEE"], dtype=object)
H_ACTIVE, H_EN_ATTENTE, H_REFUSEE, H_REVOQUEE = range(4)
_MAX_APPS_PER_USER = 8
_ORDERINGS = 4096


def _weighted_orderings(rng: np.random.Generator, weights: Sequence[float]) -> np.ndarray:
    """A few thousand weighted draws without replacement of the active applications.

    Each holder follows one ordering, so a holder never gets the same application twice by
    chance: every duplicate access in the output is a planted one.
    """
    keys = rng.random((_ORDERINGS, len(weights))) ** (1.0 / np.asarray(weights, dtype=float))
    order = np.argsort(-keys, axis=1, kind="stable")[:, :_MAX_APPS_PER_USER]
    return ACTIVE_APPS[order].astype(np.int8)


@dataclass
class _HabColumns:
    """Mutable working arrays of the habilitations table while defects are planted."""

    ids: np.ndarray
    holder: np.ndarray  # id_utilisateur
    code: np.ndarray
    siret: np.ndarray
    role: np.ndarray
    manager: np.ndarray
    status: np.ndarray
    start: np.ndarray
    end: np.ndarray
    reminder: np.ndarray
    delegant: np.ndarray  # id_utilisateur of the delegant, -1 for none

    def append_copies(self, rows: np.ndarray, new_ids: np.ndarray) -> None:
        for name, values in list(vars(self).items()):
            setattr(self, name, np.concatenate([values, new_ids if name == "ids" else values[rows]]))


def _build_habilitations(
    config: GenerateConfig, users: _Users, sites: _Establishments, record: _Recorder
) -> pd.DataFrame:
    rng = _rng(config.seed, "habilitations")
    rates = config.defect_rates
    reference = _seconds(config.reference_date)
    n_users = users.ids.size
    per_user = np.minimum(rng.poisson(2.0, n_users) + 1, _MAX_APPS_PER_USER)
    never_active = users.status == U_EN_ATTENTE
    per_user[never_active] = np.minimum(rng.poisson(0.7, int(never_active.sum())), _MAX_APPS_PER_USER)
    # Compact dtypes and early `del`s: at 1M users these arrays have ~3M rows each.
    owner = np.repeat(np.arange(n_users, dtype=np.int32), per_user)  # position of the holder in users
    h = owner.size
    rank = (np.arange(h) - (np.cumsum(per_user) - per_user)[owner]).astype(np.int8)  # k-th access of holder
    agent = users.is_agent[owner]
    ordering = rng.integers(0, _ORDERINGS, n_users)[owner]
    pro_orders = _weighted_orderings(rng, PRO_APP_WEIGHTS)
    agent_orders = _weighted_orderings(rng, AGENT_APP_WEIGHTS)
    app = np.where(agent, agent_orders[ordering, rank], pro_orders[ordering, rank])
    del ordering

    site, delegant = _habilitation_sites(
        rng, users, sites, owner=owner, rank=rank, agent=agent, agent_without_siret=rates.agent_without_siret
    )
    role = np.full(h, None, dtype=object)
    edof = app == EDOF
    role[edof] = rng.choice(EDOF_ROLES, int(edof.sum()), p=EDOF_ROLE_WEIGHTS)
    role[~edof & (rng.random(h) < 0.3)] = "Utilisateur"

    status = rng.choice(4, h, p=[0.85, 0.06, 0.03, 0.06]).astype(np.int8)
    holder_status = users.status[owner]
    status[holder_status == U_EN_ATTENTE] = H_EN_ATTENTE
    deleted = holder_status == U_SUPPRIME  # access of deleted accounts was closed with them
    del holder_status
    status[deleted & (status == H_ACTIVE)] = H_REVOQUEE
    status[deleted & (status == H_EN_ATTENTE)] = H_REFUSEE
    start, end, reminder = _habilitation_dates(rng, users.created[owner], status, reference)
    manager = (status == H_ACTIVE) & (site >= 0) & (delegant < 0) & ~agent & (rng.random(h) < 0.06)

    cols = _HabColumns(
        ids=1_000_000 + np.cumsum(rng.geometric(0.9, h)).astype(np.int64),
        holder=users.ids[owner],
        code=APP_CODES[app],
        siret=_nullify(sites.siret[site], site < 0),
        role=role,
        manager=manager,
        status=status,
        start=start,
        end=end,
        reminder=reminder,
        delegant=np.where(delegant >= 0, users.ids[delegant], -1),
    )
    del owner, app, site, delegant, role, manager, status, start, end, reminder
    holder_exists = np.ones(h, dtype=bool)
    _plant_habilitation_defects(
        rng,
        cols,
        rank=rank,
        agent=agent,
        holder_exists=holder_exists,
        deleted=deleted,
        edof=edof,
        users=users,
        sites=sites,
        config=config,
        record=record,
    )
    return _habilitations_frame(cols)


def _habilitations_frame(cols: _HabColumns) -> pd.DataFrame:
    # Column by column, releasing each working array as soon as its column exists.
    work = vars(cols)
    delegant = work.pop("delegant")
    series: dict[str, Any] = {
        "id_habilitation": work.pop("ids"),
        "id_utilisateur": work.pop("holder"),
        "code_application": pd.Series(work.pop("code"), dtype="str"),
        "siret": pd.Series(work.pop("siret"), dtype="str"),
        "role": pd.Series(work.pop("role"), dtype="str"),
        "responsable_acces": work.pop("manager"),
        "statut": pd.Series(HAB_STATUSES[work.pop("status")], dtype="str"),
        "date_debut": _moments(work.pop("start")),
        "date_fin": _moments(work.pop("end")),
        "date_relance": _moments(work.pop("reminder")),
        "id_delegant": pd.arrays.IntegerArray(delegant.astype(np.int64), delegant < 0),
    }
    return pd.DataFrame(series)


def _habilitation_sites(
    rng: np.random.Generator,
    users: _Users,
    sites: _Establishments,
    *,
    owner: np.ndarray,
    rank: np.ndarray,
    agent: np.ndarray,
    agent_without_siret: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Establishment position per habilitation (-1: no SIRET) and delegant position (-1: none)."""
    h = owner.size
    site = users.site[owner].copy()
    # Some professionals also act for another site; agents mostly act for no site at all.
    elsewhere = (~agent & (rank > 0) & (rng.random(h) < 0.08)) | (
        agent & (rng.random(h) >= agent_without_siret)
    )
    site[elsewhere] = rng.integers(0, sites.count, int(elsewhere.sum()))
    delegant = np.full(h, -1, dtype=np.int64)
    professionals = np.flatnonzero(~users.is_agent)
    if professionals.size > 1:
        # A delegation: a user of another establishment lets the holder act for it.
        delegated = ~agent & (rng.random(h) < 0.03)
        giver = professionals[rng.integers(0, professionals.size, int(delegated.sum()))]
        same = giver == owner[delegated]
        giver[same] = professionals[(np.searchsorted(professionals, giver[same]) + 1) % professionals.size]
        delegant[delegated] = giver
        site[delegated] = users.site[giver]
    return site, delegant


def _habilitation_dates(
    rng: np.random.Generator, created: np.ndarray, status: np.ndarray, reference: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    h = created.size
    start = _wall_times(rng, created, reference, h)
    pending = status == H_EN_ATTENTE
    recent = np.maximum(created[pending], reference - 180 * _DAY)  # requests wait weeks, not years
    start[pending] = _wall_times(rng, recent, reference, int(pending.sum()))
    end = np.full(h, _NULL, dtype=np.int64)
    revoked = status == H_REVOQUEE
    end[revoked] = _wall_times(rng, start[revoked] + 1, reference, int(revoked.sum()))
    # Fixed-term access ends years after the reference date, so that it stays unexpired for any
    # plausible --as-of; expired ACTIVE rows are planted only (category 13).
    fixed_term = (status == H_ACTIVE) & (rng.random(h) < 0.08)
    end[fixed_term] = _wall_times(rng, reference + 3 * _YEAR, reference + 10 * _YEAR, int(fixed_term.sum()))
    reminder = np.full(h, _NULL, dtype=np.int64)
    reminded = pending & (rng.random(h) < 0.4)
    reminder[reminded] = _wall_times(rng, start[reminded] + 1, reference, int(reminded.sum()))
    return start, end, reminder


def _plant_habilitation_defects(
    rng: np.random.Generator,
    cols: _HabColumns,
    *,
    rank: np.ndarray,
    agent: np.ndarray,
    holder_exists: np.ndarray,
    deleted: np.ndarray,
    edof: np.ndarray,
    users: _Users,
    sites: _Establishments,
    config: GenerateConfig,
    record: _Recorder,
) -> None:
    rates = config.defect_rates
    reference = _seconds(config.reference_date)
    h = cols.ids.size
    picker = _Picker(rng, h)
    first_of_holder = rank == 0  # a holder has one such row: rewritten codes never collide
    has_siret = pd.notna(cols.siret)

    # Category 9: the user, the application or the establishment does not exist.
    no_user, no_app, no_site = picker.take_variants(
        rng, _quota(rates.habilitation_orphan, h, 3), (0.4, 0.3, 0.3), eligible=first_of_holder
    )
    cols.holder[no_user] = users.ids.max() + 1 + 7 * np.arange(no_user.size)
    holder_exists[no_user] = False
    cols.code[no_app] = rng.choice(UNKNOWN_APP_CODES, no_app.size)
    cols.role[no_app] = None
    nowhere = _draw_sirens(rng, no_site.size, exclude=sites.sirens)
    cols.siret[no_site] = _digit_text(_sirets(nowhere, rng.integers(1, 40, nowhere.size)))
    for variant, rows in (
        ("missing_user", no_user),
        ("missing_application", no_app),
        ("missing_siret", no_site),
    ):
        record.add("habilitation_orphan", variant, "habilitations", cols.ids[rows])

    # Category 10: access to retired applications.
    retired = picker.take(_quota(rates.retired_application, h), first_of_holder)
    cols.code[retired] = RETIRED_CODES[np.arange(retired.size) % RETIRED_CODES.size]
    cols.role[retired] = None
    record.add("retired_application", "retired_application", "habilitations", cols.ids[retired])

    # Category 12: EDOF role labels spelled several ways, and one that maps to nothing.
    upper, lower, hyphen, unmappable = picker.take_variants(
        rng, _quota(rates.role_spelling, int(edof.sum()), 4), (0.35, 0.35, 0.2, 0.1), eligible=edof
    )
    label = pd.Series(np.where(pd.isna(cols.role), "Gestionnaire EDOF", cols.role), dtype="str")
    cols.role[upper] = label.iloc[upper].str.upper().str.replace(" ", "_", regex=False).to_numpy(dtype=object)
    cols.role[lower] = label.iloc[lower].str.lower().to_numpy(dtype=object)
    cols.role[hyphen] = label.iloc[hyphen].str.replace(" ", "-", regex=False).to_numpy(dtype=object)
    cols.role[unmappable] = UNMAPPABLE_ROLES[np.arange(unmappable.size) % UNMAPPABLE_ROLES.size]
    for variant, rows in (
        ("upper_underscore", upper),
        ("lower_case", lower),
        ("hyphenated", hyphen),
        ("unmappable", unmappable),
    ):
        record.add("role_spelling", variant, "habilitations", cols.ids[rows])

    # Category 13: ACTIVE but already expired, or starting after the reference date.
    live = (cols.status == H_ACTIVE) & ~deleted
    expired, future = picker.take_variants(rng, _quota(rates.active_out_of_period, h, 2), (0.6, 0.4), live)
    cols.end[expired] = _wall_times(rng, cols.start[expired] + 1, reference, expired.size)
    cols.start[future] = _wall_times(rng, reference + 3 * _YEAR, reference + 6 * _YEAR, future.size)
    cols.end[future] = _NULL
    record.add("active_out_of_period", "expired", "habilitations", cols.ids[expired])
    record.add("active_out_of_period", "starts_in_future", "habilitations", cols.ids[future])

    # Category 14: deleted users still holding ACTIVE access.
    kept = picker.take(_quota(rates.deleted_user_active, int(deleted.sum())), deleted)
    cols.status[kept], cols.end[kept], cols.reminder[kept] = H_ACTIVE, _NULL, _NULL
    record.add("deleted_user_active", "active_access_of_deleted_user", "habilitations", cols.ids[kept])

    # Category 15: professionals' access without a SIRET.
    pro_rows = ~agent & holder_exists & has_siret & (cols.delegant < 0)
    bare = picker.take(_quota(rates.pro_without_siret, h), pro_rows)
    cols.siret[bare], cols.manager[bare] = None, False
    record.add("pro_without_siret", "pro_access_without_siret", "habilitations", cols.ids[bare])

    # Category 17 (legitimate): agents' access not tied to a SIRET. Counted from the data.
    agent_rows = agent & holder_exists
    if rates.agent_without_siret > 0 and not (agent_rows & pd.isna(cols.siret)).any():
        cols.siret[picker.take(1, agent_rows)] = None
    tied_to_nothing = np.flatnonzero(agent_rows & pd.isna(cols.siret))
    record.add(
        "agent_without_siret", "agent_access_without_siret", "habilitations", cols.ids[tied_to_nothing]
    )

    # Category 11 last, on rows no other defect touched: the same access recorded twice.
    sources = picker.take(
        _quota(rates.duplicate_access, h, 2), (cols.status == H_ACTIVE) & ~deleted & pd.notna(cols.siret)
    )
    later = _variants(rng, sources.size, (0.5, 0.5)) == 1
    copy_ids = (cols.ids.max() if h else 1_000_000) + 1 + np.arange(sources.size, dtype=np.int64)
    cols.append_copies(sources, copy_ids)
    tail = np.arange(h, h + sources.size)[later]
    cols.start[tail] = _wall_times(rng, cols.start[tail] + 1, reference, tail.size)
    record.add("duplicate_access", "identical_copy", "habilitations", copy_ids[~later])
    record.add("duplicate_access", "later_copy", "habilitations", copy_ids[later])


# --------------------------------------------------------------------------------------------
# Writing: CSV folder


@dataclass(frozen=True)
class _TextStyle:
    timestamp: tuple[int | str, ...]
    date: tuple[int | str, ...]
    true: str
    false: str


_STYLES = {
    "iso": _TextStyle(_ISO_TIMESTAMP, _ISO_DATE, "true", "false"),
    "french": _TextStyle(_FRENCH_TIMESTAMP, _FRENCH_DATE, "O", "N"),
}
_CHUNK_ROWS = 200_000


def _chunks(frame: pd.DataFrame, rows: int) -> Iterator[pd.DataFrame]:
    for start in range(0, len(frame), rows):
        yield frame.iloc[start : start + rows]


def _table_columns(table: str) -> list[str]:
    return [column.name for column in LEGACY_TABLES[table].columns]


def _render(chunk: pd.DataFrame, table: str, style: _TextStyle) -> pd.DataFrame:
    """Dates and booleans as text in the chosen style; other columns as they are."""
    out: dict[str, Any] = {}
    for column in chunk.columns:
        values = chunk[column]
        if column in TIMESTAMP_COLUMNS.get(table, ()):
            out[column] = _format_moments(values, style.timestamp)
        elif column in DATE_COLUMNS.get(table, ()):
            out[column] = _format_moments(values, style.date)
        elif column in BOOLEAN_COLUMNS.get(table, ()):
            out[column] = np.where(values.to_numpy(dtype=bool), style.true, style.false).astype(object)
        else:
            out[column] = values.array
    return pd.DataFrame(out)


def write_csv_folder(
    frames: Mapping[str, pd.DataFrame],
    folder: Path,
    *,
    encoding: CsvEncoding = "utf-8",
    delimiter: CsvDelimiter = ";",
    date_style: DateStyle = "iso",
    chunk_rows: int = _CHUNK_ROWS,
) -> None:
    """The four tables as `<table>.csv` files in `folder`, written in chunks (bounded memory).

    Header row; fields quoted with `"` only when needed (delimiter, quote, line break), quotes
    doubled; NULL as an empty field; lines end with CRLF for the Windows-flavoured encodings
    (cp1252, UTF-8 with BOM) and LF for plain UTF-8. Each file is written under a temporary name
    and renamed, so an interrupted run leaves no half-written extract behind.
    """
    if folder.exists() and not folder.is_dir():
        raise ConfigurationError(f"--out: {folder} exists and is not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    style = _STYLES[date_style]
    terminator = "\n" if encoding == "utf-8" else "\r\n"
    for table in LEGACY_TABLES:
        started = time.perf_counter()
        columns = _table_columns(table)
        path = folder / f"{table}.csv"
        partial = path.with_name(path.name + ".partial")
        with partial.open("w", encoding=encoding, newline="") as handle:
            handle.write(delimiter.join(columns) + terminator)
            for chunk in _chunks(frames[table][columns], chunk_rows):
                _render(chunk, table, style).to_csv(
                    handle,
                    sep=delimiter,
                    header=False,
                    index=False,
                    lineterminator=terminator,
                    quoting=csv.QUOTE_MINIMAL,
                    doublequote=True,
                    na_rep="",
                )
        partial.replace(path)
        log.info("wrote %s (%d rows) in %.1fs", path, len(frames[table]), time.perf_counter() - started)


# --------------------------------------------------------------------------------------------
# Writing: database


def write_database(
    frames: Mapping[str, pd.DataFrame], engine: Engine, *, chunk_rows: int = _CHUNK_ROWS
) -> None:
    """(Re)creates the four legacy tables and bulk-loads them, in one transaction.

    PostgreSQL (psycopg 3): COPY in CSV format, fed with CSV text blocks. SQLite: the driver's
    `executemany`. Other databases: SQLAlchemy executemany inserts.
    """
    tables = list(LEGACY_TABLES.values())
    with engine.begin() as conn:
        legacy_metadata.drop_all(conn, tables=tables, checkfirst=True)
        legacy_metadata.create_all(conn, tables=tables)
        for name, table in LEGACY_TABLES.items():
            started = time.perf_counter()
            frame = frames[name][_table_columns(name)]
            if conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg":
                _copy_postgres(conn, table, frame, chunk_rows)
            elif conn.dialect.name == "sqlite":
                _insert_sqlite(conn, table, frame, chunk_rows)
            else:
                _insert_generic(conn, table, frame, chunk_rows)
            log.info("loaded %s (%d rows) in %.1fs", name, len(frame), time.perf_counter() - started)


def _copy_postgres(conn: Connection, table: Table, frame: pd.DataFrame, chunk_rows: int) -> None:
    preparer = conn.dialect.identifier_preparer
    columns = ", ".join(preparer.quote(column) for column in frame.columns)
    statement = f"COPY {preparer.format_table(table)} ({columns}) FROM STDIN WITH (FORMAT csv)"
    # In CSV format an unquoted empty field is NULL; the data never holds empty strings.
    driver_connection: Any = conn.connection.driver_connection
    with driver_connection.cursor() as cursor, cursor.copy(statement) as copy:
        for chunk in _chunks(frame, chunk_rows):
            text = _render(chunk, table.name, _STYLES["iso"]).to_csv(
                None, header=False, index=False, lineterminator="\n", quoting=csv.QUOTE_MINIMAL, na_rep=""
            )
            copy.write(text)


def _sqlite_values(chunk: pd.DataFrame, table: str) -> list[list[Any]]:
    """Column-wise Python values, stored as SQLAlchemy itself stores them on SQLite."""
    values: list[list[Any]] = []
    for column in chunk.columns:
        series = chunk[column]
        if column in TIMESTAMP_COLUMNS.get(table, ()):
            values.append(_format_moments(series, _SQLITE_TIMESTAMP).tolist())
        elif column in DATE_COLUMNS.get(table, ()):
            values.append(_format_moments(series, _ISO_DATE).tolist())
        elif column in BOOLEAN_COLUMNS.get(table, ()):
            values.append(series.to_numpy(dtype=np.int64).tolist())
        elif column in INTEGER_COLUMNS.get(table, ()):
            values.append(_objects(series))
        else:
            values.append(_objects(series))
    return values


def _objects(series: pd.Series) -> list[Any]:
    values = series.to_numpy(dtype=object)
    values[pd.isna(values)] = None
    return list(values.tolist())


def _insert_sqlite(conn: Connection, table: Table, frame: pd.DataFrame, chunk_rows: int) -> None:
    columns = ", ".join(f'"{column}"' for column in frame.columns)
    statement = f'INSERT INTO "{table.name}" ({columns}) VALUES ({", ".join("?" * len(frame.columns))})'
    driver_connection: Any = conn.connection.driver_connection
    cursor = driver_connection.cursor()
    try:
        for chunk in _chunks(frame, chunk_rows):
            cursor.executemany(statement, zip(*_sqlite_values(chunk, table.name), strict=True))
    finally:
        cursor.close()


def _insert_generic(conn: Connection, table: Table, frame: pd.DataFrame, chunk_rows: int) -> None:
    for chunk in _chunks(frame, chunk_rows):
        prepared = chunk.astype(object)
        for column in DATE_COLUMNS.get(table.name, ()):
            prepared[column] = chunk[column].dt.date.astype(object)
        records = prepared.where(chunk.notna(), None).to_dict(orient="records")
        conn.execute(table.insert(), cast("list[dict[str, Any]]", records))


__all__ = [
    "DEFECT_CATEGORIES",
    "REFERENCE_DATE",
    "DefectRates",
    "DefectRecord",
    "GenerateConfig",
    "GenerateResult",
    "LegacyExport",
    "build_legacy_export",
    "build_legacy_frames",
    "generate_legacy",
    "write_csv_folder",
    "write_database",
]
