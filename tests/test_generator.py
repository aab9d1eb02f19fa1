"""The legacy data generator: defects present in the data, determinism, CSV/database parity."""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import phonenumbers
import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, select
from stdnum import luhn
from stdnum.fr import siren as stdnum_siren
from stdnum.fr import siret as stdnum_siret

from pipelines.cli import main
from pipelines.errors import ConfigurationError
from pipelines.generator import (
    DEFECT_CATEGORIES,
    REFERENCE_DATE,
    CsvDelimiter,
    CsvEncoding,
    DateStyle,
    DefectRates,
    GenerateConfig,
    GenerateResult,
    build_legacy_export,
    build_legacy_frames,
    generate_legacy,
)
from pipelines.legacy_schema import (
    BOOLEAN_COLUMNS,
    DATE_COLUMNS,
    INTEGER_COLUMNS,
    LEGACY_TABLES,
    SELECTABLE_COLUMNS,
    TIMESTAMP_COLUMNS,
)

USERS = 1000
TABLES = tuple(LEGACY_TABLES)
CSV_FILES = tuple(f"{table}.csv" for table in TABLES)
TIMESTAMP_FORMATS = {"iso": "%Y-%m-%d %H:%M:%S", "french": "%d/%m/%Y %H:%M:%S"}
DATE_FORMATS = {"iso": "%Y-%m-%d", "french": "%d/%m/%Y"}
BOOLEANS = {"true": True, "false": False, "O": True, "N": False}
EDOF_ROLES = {
    "gestionnaire edof",
    "gestionnaire catalogue",
    "gestionnaire administratif",
    "gestionnaire financier",
    "lecteur edof",
}


# ----------------------------------------------------------------------------------------------
# A small reader of the generated CSV files, independent of the project's own reader


def read_csv_folder(
    folder: Path, *, encoding: str, delimiter: str, date_style: str
) -> dict[str, pd.DataFrame]:
    frames = {}
    for table in TABLES:
        raw = pd.read_csv(
            folder / f"{table}.csv",
            sep=delimiter,
            encoding=encoding,
            dtype=str,
            keep_default_na=False,
            na_values=[""],
        )
        assert list(raw.columns) == [c.name for c in LEGACY_TABLES[table].columns]
        for column in INTEGER_COLUMNS.get(table, ()):
            raw[column] = pd.to_numeric(raw[column]).astype("Int64")
        for column in TIMESTAMP_COLUMNS.get(table, ()):
            raw[column] = pd.to_datetime(raw[column], format=TIMESTAMP_FORMATS[date_style])
        for column in DATE_COLUMNS.get(table, ()):
            raw[column] = pd.to_datetime(raw[column], format=DATE_FORMATS[date_style])
        for column in BOOLEAN_COLUMNS.get(table, ()):
            assert set(raw[column]) <= set(BOOLEANS)
            raw[column] = raw[column].map(BOOLEANS).astype(bool)
        frames[table] = raw
    return frames


def read_database(url: str) -> dict[str, pd.DataFrame]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return {
                table: pd.read_sql(
                    select(*(LEGACY_TABLES[table].c[c] for c in SELECTABLE_COLUMNS[table])), conn
                )
                for table in TABLES
            }
    finally:
        engine.dispose()


def _cell(value: Any) -> Any:
    if value is None or value is pd.NA or (isinstance(value, float) and pd.isna(value)) or value is pd.NaT:
        return None
    if hasattr(value, "isoformat"):
        return pd.Timestamp(value).isoformat()
    if isinstance(value, bool | int | str):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value.item() if hasattr(value, "item") else value


def canonical_rows(frame: pd.DataFrame, table: str) -> list[tuple[Any, ...]]:
    """Rows as comparable Python values, the password hash left out, in a stable order."""
    columns = SELECTABLE_COLUMNS[table]
    rows = [tuple(_cell(v) for v in row) for row in frame[list(columns)].itertuples(index=False, name=None)]
    return sorted(rows, key=repr)


# ----------------------------------------------------------------------------------------------
# One export of 1,000 users, read back from its CSV files


@dataclass(frozen=True)
class Export:
    frames: dict[str, pd.DataFrame]
    result: GenerateResult

    @property
    def users(self) -> pd.DataFrame:
        return self.frames["utilisateurs"]

    @property
    def sites(self) -> pd.DataFrame:
        return self.frames["etablissements"]

    @property
    def habs(self) -> pd.DataFrame:
        return self.frames["habilitations"]

    def holders(self) -> pd.DataFrame:
        """Habilitations joined to their (existing) holder's type_compte and statut."""
        holders = self.users.set_index("id_utilisateur")[["type_compte", "statut"]]
        return self.habs.join(holders.rename(columns={"statut": "statut_utilisateur"}), on="id_utilisateur")


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Export:
    folder = tmp_path_factory.mktemp("export")
    result = generate_legacy(GenerateConfig(users=USERS, seed=7, out=str(folder)))
    return Export(read_csv_folder(folder, encoding="utf-8", delimiter=";", date_style="iso"), result)


def _compact(values: pd.Series) -> pd.Series:
    return values.str.replace(" ", "", regex=False)


def _text_columns(export: Export) -> list[pd.Series]:
    return [
        export.users["nom"],
        export.users["prenom"],
        export.sites["raison_sociale"],
        export.sites["adresse"],
        export.sites["commune"],
    ]


_VALID_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _courriel_spaces_case(e: Export) -> int:
    courriel = e.users["courriel"].dropna()
    spaces = courriel != courriel.str.strip()
    mixed = courriel.str.strip() != courriel.str.strip().str.lower()
    assert spaces.any()
    assert mixed.any()
    return int((spaces | mixed).sum())


def _courriel_duplicate(e: Export) -> int:
    courriel = e.users["courriel"].dropna()
    login = courriel.str.strip().str.lower()
    groups = courriel.groupby(login).agg(["size", "nunique"])
    shared = groups[groups["size"] > 1]
    assert (shared["nunique"] > 1).any(), "some logins collide only once trimmed and case-folded"
    assert (shared["size"] >= 3).any(), "some logins are shared by three accounts"
    return int(shared["size"].sum())


def _courriel_invalid(e: Export) -> int:
    courriel = e.users["courriel"]
    stripped = courriel.str.strip()
    invalid = courriel.isna() | ~stripped.str.match(_VALID_EMAIL.pattern).fillna(False).astype(bool)
    bad = stripped[invalid].dropna()
    assert courriel.isna().any()
    assert (~bad.str.contains("@")).any()
    assert bad.str.contains(" ").any()
    assert bad.str.contains("@@").any()
    assert (~bad.str.split("@").str[-1].str.contains(".", regex=False)).any()
    return int(invalid.sum())


def _blank_name(e: Export) -> int:
    blank = [(e.users[c].isna() | (e.users[c].str.strip() == "")) for c in ("nom", "prenom")]
    assert all((b & e.users[c].notna()).any() for b, c in zip(blank, ("nom", "prenom"), strict=True))
    return int((blank[0] | blank[1]).sum())


def _telephone_format(e: Export) -> int:
    phone = e.users["telephone"].dropna()
    layouts = [r"^0\d( \d\d){4}$", r"^0\d(\.\d\d){4}$", r"^\+33 \d( \d\d){4}$", r"^0033\d{9}$"]
    counts = [int(phone.str.match(p).sum()) for p in layouts]
    garbage = int((phone.str.count(r"\d") < 9).sum())
    assert min(counts) > 0, counts
    assert garbage > 0
    assert phone.str.match(r"^0\d{9}$").any()
    return sum(counts) + garbage


def _name_typography(e: Export) -> int:
    names = pd.concat([e.users["nom"], e.users["prenom"]]).dropna()
    names = names[names.str.strip() != ""]
    nfd = names != names.map(lambda s: unicodedata.normalize("NFC", s))
    curly = names.str.contains("’")
    capitals = names.map(lambda s: s.isupper() and len(s) > 2 and s.isalpha())
    spaces = (names != names.str.strip()) | names.str.contains("  ")
    assert nfd.any()
    assert curly.any()
    assert capitals.any()
    assert spaces.any()
    return int((nfd | curly | capitals | spaces).sum())


def _siret_defects(e: Export) -> int:
    siret, siren = e.sites["siret"], e.sites["siren"]
    compact = _compact(siret)
    spaced = siret.str.contains(" ")
    invalid = ~compact.map(stdnum_siret.is_valid)
    la_poste = compact.str.startswith("356000000") & compact.map(stdnum_siret.is_valid)
    siren_off = siren.isna() | (siren != compact.str[:9])
    assert spaced.any()
    assert invalid.any()
    assert la_poste.any()
    assert siren.isna().any()
    assert (siren.notna() & siren_off).any()
    return int((spaced | invalid | la_poste | siren_off).sum())


def _etablissement_duplicate(e: Export) -> int:
    return int(_compact(e.sites["siret"]).duplicated().sum())


def _habilitation_orphan(e: Export) -> int:
    no_user = ~e.habs["id_utilisateur"].isin(e.users["id_utilisateur"])
    no_app = ~e.habs["code_application"].isin(e.frames["applications"]["code_application"])
    siret = _compact(e.habs["siret"])
    no_site = siret.notna() & ~siret.isin(set(_compact(e.sites["siret"])))
    assert no_user.any()
    assert no_app.any()
    assert no_site.any()
    return int((no_user | no_app | no_site).sum())


def _retired_application(e: Export) -> int:
    apps = e.frames["applications"]
    retired = apps.loc[~apps["actif"], "code_application"]
    return int(e.habs["code_application"].isin(retired).sum())


def _duplicate_access(e: Export) -> int:
    active = e.habs[e.habs["statut"] == "ACTIVE"]
    key = ["id_utilisateur", "code_application", "siret", "role"]
    return int(active.duplicated(subset=key, keep="first").sum())


def _role_spelling(e: Export) -> int:
    roles = e.habs.loc[e.habs["code_application"] == "EDOF", "role"].dropna()
    normal = roles.str.lower().str.replace(r"[_\-\s]+", " ", regex=True).str.strip()
    spellings = set(roles[normal == "gestionnaire edof"])
    assert {"Gestionnaire EDOF", "GESTIONNAIRE_EDOF", "gestionnaire edof"} <= spellings, spellings
    unmappable = ~normal.isin(EDOF_ROLES)
    assert unmappable.any()
    return int(((normal == "gestionnaire edof") & (roles != "Gestionnaire EDOF")).sum() + unmappable.sum())


def _active_out_of_period(e: Export) -> int:
    active = e.habs[e.habs["statut"] == "ACTIVE"]
    expired = active["date_fin"].notna() & (active["date_fin"] <= REFERENCE_DATE)
    future = active["date_debut"] > REFERENCE_DATE
    assert expired.any()
    assert future.any()
    return int((expired | future).sum())


def _deleted_user_active(e: Export) -> int:
    habs = e.holders()
    return int(((habs["statut_utilisateur"] == "SUPPRIME") & (habs["statut"] == "ACTIVE")).sum())


def _pro_without_siret(e: Export) -> int:
    habs = e.holders()
    return int(((habs["type_compte"] == "PRO") & habs["siret"].isna()).sum())


def _dangerous_text(e: Export) -> int:
    text = pd.concat(_text_columns(e)).dropna()
    formulas = {prefix: text.str.startswith(prefix) for prefix in ("=", "+", "-", "@")}
    markup = text.str.contains("<script>", regex=False)
    control = text.str.contains(_CONTROL.pattern)
    long_value = text.str.len() > 2000
    assert all(f.any() for f in formulas.values()), {k: int(v.sum()) for k, v in formulas.items()}
    assert markup.any()
    assert control.any()
    assert long_value.any()
    assert text.str.contains("\n").any()
    return int(
        (formulas["="] | formulas["+"] | formulas["-"] | formulas["@"] | markup | control | long_value).sum()
    )


def _agent_without_siret(e: Export) -> int:
    habs = e.holders()
    return int(((habs["type_compte"] == "AGENT") & habs["siret"].isna()).sum())


FOUND_IN_DATA: dict[str, Callable[[Export], int]] = {
    "courriel_spaces_case": _courriel_spaces_case,
    "courriel_duplicate": _courriel_duplicate,
    "courriel_invalid": _courriel_invalid,
    "blank_name": _blank_name,
    "telephone_format": _telephone_format,
    "name_typography": _name_typography,
    "siret_defects": _siret_defects,
    "etablissement_duplicate": _etablissement_duplicate,
    "habilitation_orphan": _habilitation_orphan,
    "retired_application": _retired_application,
    "duplicate_access": _duplicate_access,
    "role_spelling": _role_spelling,
    "active_out_of_period": _active_out_of_period,
    "deleted_user_active": _deleted_user_active,
    "pro_without_siret": _pro_without_siret,
    "dangerous_text": _dangerous_text,
    "agent_without_siret": _agent_without_siret,
}


def test_every_category_has_a_data_check() -> None:
    assert tuple(FOUND_IN_DATA) == DEFECT_CATEGORIES


@pytest.mark.parametrize("category", DEFECT_CATEGORIES)
def test_defect_category_is_present_in_the_data(export: Export, category: str) -> None:
    assert FOUND_IN_DATA[category](export) > 0
    assert export.result.record.counts[category] > 0


# Categories whose count in the data is exactly what was planted: the baseline is clean.
EXACT = (
    "courriel_invalid",
    "blank_name",
    "etablissement_duplicate",
    "habilitation_orphan",
    "retired_application",
    "duplicate_access",
    "active_out_of_period",
    "deleted_user_active",
    "pro_without_siret",
    "agent_without_siret",
    "courriel_duplicate",
)


@pytest.mark.parametrize("category", EXACT)
def test_planted_count_equals_what_the_data_shows(export: Export, category: str) -> None:
    assert FOUND_IN_DATA[category](export) == export.result.record.counts[category]


def test_defects_json_is_written_next_to_the_csv_files(export: Export) -> None:
    written = json.loads((Path(export.result.output) / "defects.json").read_text(encoding="utf-8"))
    assert written["defects"] == export.result.record.counts
    assert written["reference_date"] == "2024-11-01 00:00:00"
    assert set(written["defect_variants"]) == set(DEFECT_CATEGORIES)
    assert "elapsed_seconds" not in written


def test_sirets_are_valid_except_the_planted_wrong_check_digits(export: Export) -> None:
    sirets = pd.concat(
        [_compact(export.sites["siret"]), export.habs["siret"], export.users["siret_rattachement"]]
    ).dropna()
    distinct = pd.Series(sorted(set(sirets)))
    assert distinct.str.fullmatch(r"\d{14}").all()
    invalid = distinct[~distinct.map(stdnum_siret.is_valid)]
    planted = export.result.record.variants["siret_defects"]["wrong_check_digit"]
    assert len(invalid) == planted
    la_poste = distinct[distinct.str.startswith("356000000")]
    assert len(la_poste) > 0
    assert la_poste.map(stdnum_siret.is_valid).all()
    # Without stdnum's La Poste exception they would fail: they do not follow Luhn.
    assert not la_poste.map(luhn.is_valid).all()
    agreeing = export.sites[export.sites["siren"] == _compact(export.sites["siret"]).str[:9]]
    assert agreeing["siren"].map(stdnum_siren.is_valid).all()


def test_phones_outside_the_garbage_are_valid_french_numbers(export: Export) -> None:
    phones = export.users["telephone"].dropna()
    numbers = phones[phones.str.count(r"\d") >= 9]
    assert numbers.map(lambda p: phonenumbers.is_valid_number(phonenumbers.parse(p, "FR"))).all()


def test_shape_of_the_export(export: Export) -> None:
    users, habs = export.users, export.habs
    assert users["id_utilisateur"].is_unique
    assert habs["id_habilitation"].is_unique
    assert 2.5 * USERS < len(habs) < 3.5 * USERS
    assert 0.85 < (users["type_compte"] == "PRO").mean() < 0.95
    assert set(users["statut"]) == {"ACTIF", "EN_ATTENTE", "VERROUILLE", "SUPPRIME"}
    assert set(habs["statut"]) == {"ACTIVE", "EN_ATTENTE", "REFUSEE", "REVOQUEE"}
    assert habs["date_relance"].notna().any()
    assert habs["id_delegant"].notna().any()
    assert habs["responsable_acces"].any()
    assert habs["id_delegant"].dropna().isin(users["id_utilisateur"]).all()
    assert users["mot_de_passe_hash"].dropna().str.match(r"^\$2[ab]\$1[02]\$[./A-Za-z0-9]{53}$").all()
    for column in ("date_creation", "date_derniere_connexion"):
        assert (users[column].dropna().dt.microsecond == 0).all()
    apps = export.frames["applications"]
    assert set(apps.loc[~apps["actif"], "code_application"]) == {"ECR", "REFSTRUCT"}
    assert apps["actif"].sum() == 17


# ----------------------------------------------------------------------------------------------
# Determinism


def test_same_seed_gives_byte_identical_csv_files(tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        seed = 3 if name != "c" else 4
        generate_legacy(
            GenerateConfig(
                users=1200,
                seed=seed,
                out=str(tmp_path / name),
                csv_encoding="cp1252",
                csv_delimiter=",",
                date_style="french",
            )
        )
    for file in (*CSV_FILES, "defects.json"):
        assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes(), file
    assert (tmp_path / "a" / "utilisateurs.csv").read_bytes() != (
        tmp_path / "c" / "utilisateurs.csv"
    ).read_bytes()


def test_same_seed_gives_identical_sqlite_tables(new_database_url: Callable[[str], str]) -> None:
    urls = [new_database_url("sqlite") for _ in range(3)]
    for url, seed in zip(urls, (5, 5, 6), strict=True):
        generate_legacy(GenerateConfig(users=1000, seed=seed, out=url))
    engines = [create_engine(url) for url in urls]
    try:
        contents = []
        for engine in engines:
            with engine.connect() as conn:
                contents.append({t: conn.execute(select(LEGACY_TABLES[t])).all() for t in TABLES})
        assert contents[0] == contents[1]
        assert contents[0]["utilisateurs"] != contents[2]["utilisateurs"]
    finally:
        for engine in engines:
            engine.dispose()


# ----------------------------------------------------------------------------------------------
# CSV variants hold the rows of the database


CSV_VARIANTS: list[tuple[CsvEncoding, CsvDelimiter, DateStyle]] = [
    ("utf-8", ";", "iso"),
    ("utf-8-sig", ",", "french"),
    ("cp1252", ";", "french"),
    ("cp1252", ",", "iso"),
]


def test_csv_variants_hold_the_same_rows_as_the_database(
    engine_kind: str, new_database_url: Callable[[str], str], tmp_path: Path
) -> None:
    databases: dict[str, dict[str, pd.DataFrame]] = {}
    db_encodings: tuple[CsvEncoding, ...] = ("utf-8", "cp1252")
    for encoding in db_encodings:  # the encoding shapes the data (no NFD in cp1252)
        url = new_database_url(engine_kind)
        generate_legacy(GenerateConfig(users=USERS, seed=11, out=url, csv_encoding=encoding))
        databases[encoding] = read_database(url)
    for encoding, delimiter, style in CSV_VARIANTS:
        folder = tmp_path / f"{encoding}-{style}-{ord(delimiter)}"
        generate_legacy(
            GenerateConfig(
                users=USERS,
                seed=11,
                out=str(folder),
                csv_encoding=encoding,
                csv_delimiter=delimiter,
                date_style=style,
            )
        )
        csv_frames = read_csv_folder(folder, encoding=encoding, delimiter=delimiter, date_style=style)
        db_frames = databases["cp1252" if encoding == "cp1252" else "utf-8"]
        for table in TABLES:
            assert len(csv_frames[table]) == len(db_frames[table]), (encoding, style, table)
            assert canonical_rows(csv_frames[table], table) == canonical_rows(db_frames[table], table), (
                encoding,
                delimiter,
                style,
                table,
            )


def test_csv_files_follow_the_requested_format(tmp_path: Path) -> None:
    generate_legacy(
        GenerateConfig(
            users=1000,
            seed=2,
            out=str(tmp_path),
            csv_encoding="utf-8-sig",
            csv_delimiter=",",
            date_style="french",
        )
    )
    data = (tmp_path / "habilitations.csv").read_bytes()
    assert data.startswith(b"\xef\xbb\xbfid_habilitation,id_utilisateur,")
    assert b"\r\n" in data
    text = data.decode("utf-8-sig")
    assert re.search(r",[ON],(ACTIVE|EN_ATTENTE|REFUSEE|REVOQUEE),\d\d/\d\d/\d{4} \d\d:\d\d:\d\d,", text)
    sites = (tmp_path / "etablissements.csv").read_bytes().decode("utf-8-sig")
    assert re.search(r",\d\d/\d\d/\d{4}\r\n", sites), "date_fermeture is a date without time"
    assert '"Association ""' in sites, "quotes inside a field are doubled"


def test_cp1252_export_is_encodable_and_has_no_decomposed_text() -> None:
    frames = build_legacy_frames(GenerateConfig(users=1000, seed=1, out="unused", csv_encoding="cp1252"))
    for frame in frames.values():
        for column in frame.select_dtypes(include=["object", "string"]).columns:
            values = frame[column].dropna()
            assert values.map(lambda s: s.encode("cp1252") is not None).all()
            assert (values == values.map(lambda s: unicodedata.normalize("NFC", s))).all()


# ----------------------------------------------------------------------------------------------
# Edges, configuration and the command line


@pytest.mark.parametrize("users", [1, 2, 7, 40])
def test_tiny_exports_build(users: int) -> None:
    export = build_legacy_export(GenerateConfig(users=users, seed=1, out="unused"))
    assert len(export.frames["utilisateurs"]) == users
    assert export.frames["habilitations"]["id_habilitation"].is_unique


def test_zero_rates_plant_nothing() -> None:
    rates = DefectRates(**dict.fromkeys(DefectRates.__dataclass_fields__, 0.0))
    export = build_legacy_export(GenerateConfig(users=500, seed=1, out="unused", defect_rates=rates))
    assert sum(export.record.counts.values()) == 0
    users = export.frames["utilisateurs"]
    assert users["courriel"].str.match(_VALID_EMAIL.pattern).all()
    assert _compact(export.frames["etablissements"]["siret"]).map(stdnum_siret.is_valid).all()


@pytest.mark.parametrize(
    "changes",
    [{"users": 0}, {"seed": -1}, {"csv_encoding": "latin-1"}, {"csv_delimiter": "|"}, {"date_style": "us"}],
)
def test_bad_configuration_is_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        GenerateConfig(**{"users": 10, "seed": 1, "out": "x", **changes})
    with pytest.raises(ConfigurationError):
        DefectRates(blank_name=1.5)


def test_out_that_is_a_file_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "file.txt"
    target.write_text("x")
    with pytest.raises(ConfigurationError):
        generate_legacy(GenerateConfig(users=10, seed=1, out=str(target)))


def test_database_tables_are_replaced(new_database_url: Callable[[str], str]) -> None:
    url = new_database_url("sqlite")
    generate_legacy(GenerateConfig(users=300, seed=1, out=url))
    result = generate_legacy(GenerateConfig(users=100, seed=1, out=url))
    assert result.output_kind == "database"
    assert len(read_database(url)["utilisateurs"]) == 100
    assert "defects" in result.to_dict()


def test_cli_generate_legacy_writes_the_four_files(tmp_path: Path) -> None:
    out = tmp_path / "extract"
    runner = CliRunner()
    outcome = runner.invoke(
        main,
        [
            "generate-legacy",
            "--users",
            "60",
            "--seed",
            "9",
            "--out",
            str(out),
            "--csv-encoding",
            "cp1252",
            "--csv-delimiter",
            ",",
            "--date-style",
            "french",
        ],
    )
    assert outcome.exit_code == 0, outcome.output
    assert sorted(p.name for p in out.iterdir()) == sorted([*CSV_FILES, "defects.json"])
    printed = json.loads(outcome.stdout)
    assert printed["row_counts"]["utilisateurs"] == 60
    assert set(printed["defects"]) == set(DEFECT_CATEGORIES)


def test_cli_rejects_a_bad_option(tmp_path: Path) -> None:
    outcome = CliRunner().invoke(
        main, ["generate-legacy", "--users", "0", "--seed", "1", "--out", str(tmp_path)]
    )
    assert outcome.exit_code == 2
