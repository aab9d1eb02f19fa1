"""The extract stage: legacy readers for CSV folders and SQL databases.

Every fixture is written by the test itself into tmp_path; its docstring (or the comment above
it) lists what it contains. Broken inputs are checked with their exact message, since the
message is what an operator acts on.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator, Mapping
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from hypothesis import example, given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import make_url

from pipelines.db import mask_url
from pipelines.errors import InputError
from pipelines.extract import TEXT_DTYPE, ExtractConfig, ExtractResult, extract, normalise_table
from pipelines.frames import LEGACY_FRAME_COLUMNS, LegacyFrames
from pipelines.legacy_schema import ENUM_COLUMNS, LEGACY_TABLES, legacy_metadata

HASHES = ("$2b$12$SECRETHASH0001", "$2b$12$SECRETHASH0002")

# --- the baseline extract, as the fields of each file -----------------------------------------
# utilisateurs: rows out of id order; an email with spaces and capitals (kept raw); curly
# apostrophe and accents; an enum written " agent " / "actif"; empty telephone and siret;
# three date styles; a password hash on every row; an extra column "commentaire".
UTILISATEURS = [
    [
        "id_utilisateur",
        "courriel",
        "nom",
        "prenom",
        "telephone",
        "type_compte",
        "statut",
        "date_creation",
        "date_derniere_connexion",
        "mot_de_passe_hash",
        "siret_rattachement",
        "commentaire",
    ],
    [
        "2",
        "  Jean.Martin@Exemple.FR ",
        "O’Brien",
        "Zoé",
        "01 23 45 67 89",
        " agent ",
        "actif",
        "05/04/2023 10:20",
        "",
        HASHES[1],
        "",
        "migré",
    ],
    [
        "1",
        "elodie@exemple.fr",
        "Lefèvre",
        "Élodie",
        "",
        "PRO",
        "SUPPRIME",
        "2023-04-05T10:20:00",
        "2024-01-02 08:00:00",
        HASHES[0],
        "12345678901234",
        "",
    ],
]
# etablissements: a SIRET with spaces; a name with a delimiter and doubled quotes; a closing date.
ETABLISSEMENTS = [
    ["siret", "siren", "raison_sociale", "adresse", "code_postal", "commune", "date_fermeture"],
    [
        "123 456 789 01234",
        "123456789",
        'Boulangerie "Chez Paul"; Fils, SA',
        "1 rue de la Paix",
        "75001",
        "Paris",
        "",
    ],
    ["98765432109876", "", "ACME", "", "", "Lyon", "31/12/2022"],
]
# applications: a code with surrounding spaces (trimmed); O / N booleans.
APPLICATIONS = [
    ["code_application", "libelle", "actif"],
    ["EDOF", "Espace des Organismes de Formation", "O"],
    [" ECR ", "Mes collectes formation", "N"],
]
# habilitations: rows out of id order; NULL siret and role; oui / non; a lower-case statut;
# a delegation; date, datetime and French datetime.
HABILITATIONS = [
    [
        "id_habilitation",
        "id_utilisateur",
        "code_application",
        "siret",
        "role",
        "responsable_acces",
        "statut",
        "date_debut",
        "date_fin",
        "date_relance",
        "id_delegant",
    ],
    [
        "11",
        "1",
        "EDOF",
        "12345678901234",
        "Gestionnaire EDOF",
        "oui",
        "ACTIVE",
        "2023-04-05 10:20:00",
        "",
        "",
        "",
    ],
    [
        "10",
        "2",
        "ECR",
        "",
        "",
        "non",
        "en_attente",
        "2023-04-05",
        "2024-04-05 00:00:00",
        "05/05/2023 09:00:00",
        "1",
    ],
]
BASELINE = {
    "utilisateurs": UTILISATEURS,
    "etablissements": ETABLISSEMENTS,
    "applications": APPLICATIONS,
    "habilitations": HABILITATIONS,
}


def render(rows: list[list[str]], delimiter: str = ";", terminator: str = "\n") -> str:
    """CSV text as real exports write it: quotes only when needed, doubled inside."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator=terminator, quoting=csv.QUOTE_MINIMAL)
    writer.writerows(rows)
    return buffer.getvalue()


def write_folder(
    folder: Path,
    overrides: Mapping[str, bytes | str] | None = None,
    *,
    encoding: str = "utf-8",
    delimiter: str = ";",
    terminator: str = "\n",
) -> Path:
    """The baseline extract as four CSV files; `overrides` replaces a file's content (or removes it: b"-")."""
    folder.mkdir(parents=True, exist_ok=True)
    for table, rows in BASELINE.items():
        content = (overrides or {}).get(table, render(rows, delimiter, terminator))
        if content == b"-":
            continue
        data = content if isinstance(content, bytes) else content.encode(encoding)
        (folder / f"{table}.csv").write_bytes(data)
    return folder


def text(values: list[str | None]) -> pd.Series:
    return pd.Series(values, dtype=TEXT_DTYPE)


def enumeration(table: str, column: str, values: list[str | None]) -> pd.Series:
    """A column of one of the reader's enumerations: a categorical of its allowed values."""
    return pd.Series(pd.Categorical(values, categories=list(ENUM_COLUMNS[table][column])))


def few_valued(values: list[str | None]) -> pd.Series:
    """A text column the extract hands on as a categorical of the values it holds (sorted)."""
    return text(values).astype("category")


def stamps(values: list[str | None]) -> pd.Series:
    return pd.Series(pd.to_datetime(pd.Series(values, dtype=object)), dtype="datetime64[ns]")


def expected_frames() -> LegacyFrames:
    """The baseline as the extract must hand it on (types of frames.py, rows by id)."""
    return LegacyFrames(
        utilisateurs=pd.DataFrame(
            {
                "id_utilisateur": np.array([1, 2], dtype=np.int64),
                "courriel": text(["elodie@exemple.fr", "  Jean.Martin@Exemple.FR "]),
                "nom": text(["Lefèvre", "O’Brien"]),
                "prenom": text(["Élodie", "Zoé"]),
                "telephone": text([None, "01 23 45 67 89"]),
                "type_compte": enumeration("utilisateurs", "type_compte", ["PRO", "AGENT"]),
                "statut": enumeration("utilisateurs", "statut", ["SUPPRIME", "ACTIF"]),
                "date_creation": stamps(["2023-04-05 10:20:00", "2023-04-05 10:20:00"]),
                "date_derniere_connexion": stamps(["2024-01-02 08:00:00", None]),
                "siret_rattachement": text(["12345678901234", None]),
            }
        ),
        etablissements=pd.DataFrame(
            {
                "siret": text(["123 456 789 01234", "98765432109876"]),
                "siren": text(["123456789", None]),
                "raison_sociale": text(['Boulangerie "Chez Paul"; Fils, SA', "ACME"]),
                "adresse": text(["1 rue de la Paix", None]),
                "code_postal": text(["75001", None]),
                "commune": text(["Paris", "Lyon"]),
                "date_fermeture": stamps([None, "2022-12-31"]),
            }
        ),
        applications=pd.DataFrame(
            {
                "code_application": text(["EDOF", "ECR"]),
                "libelle": text(["Espace des Organismes de Formation", "Mes collectes formation"]),
                "actif": np.array([True, False]),
            }
        ),
        habilitations=pd.DataFrame(
            {
                "id_habilitation": np.array([10, 11], dtype=np.int64),
                "id_utilisateur": np.array([2, 1], dtype=np.int64),
                "code_application": few_valued(["ECR", "EDOF"]),
                "siret": few_valued([None, "12345678901234"]),
                "role": few_valued([None, "Gestionnaire EDOF"]),
                "responsable_acces": np.array([False, True]),
                "statut": enumeration("habilitations", "statut", ["EN_ATTENTE", "ACTIVE"]),
                "date_debut": stamps(["2023-04-05 00:00:00", "2023-04-05 10:20:00"]),
                "date_fin": stamps(["2024-04-05 00:00:00", None]),
                "date_relance": stamps(["2023-05-05 09:00:00", None]),
                "id_delegant": pd.array([1, None], dtype="Int64"),
            }
        ),
    )


def assert_frames_equal(actual: LegacyFrames, expected: LegacyFrames, *, any_order: tuple[str, ...] = ()) -> None:
    for table, columns in LEGACY_FRAME_COLUMNS.items():
        left, right = actual.table(table), expected.table(table)
        assert list(left.columns) == list(columns)
        if table in any_order:
            left = left.sort_values(list(columns), ignore_index=True)
            right = right.sort_values(list(columns), ignore_index=True)
        pd.testing.assert_frame_equal(left, right, obj=table)


def all_cells(frames: LegacyFrames) -> Iterator[object]:
    for table in LEGACY_FRAME_COLUMNS:
        frame = frames.table(table)
        yield from frame.columns
        for column in frame.columns:
            yield from frame[column].tolist()


def read_error(folder: Path) -> InputError:
    with pytest.raises(InputError) as caught:
        extract(ExtractConfig(str(folder)))
    return caught.value


# --- CSV: what reads -------------------------------------------------------------------------


def test_baseline_folder_reads_into_typed_frames(tmp_path: Path) -> None:
    """Baseline extract (UTF-8, ';', LF): every normalisation rule at once."""
    folder = write_folder(tmp_path / "csv")

    result = extract(ExtractConfig(str(folder)))

    assert_frames_equal(result.frames, expected_frames())
    assert result.source_kind == "csv"
    assert result.source_display == str(folder)
    assert result.row_counts == {
        "utilisateurs": 2,
        "etablissements": 2,
        "applications": 2,
        "habilitations": 2,
    }
    assert sorted(result.file_checksums) == [f"{table}.csv" for table in sorted(BASELINE)]
    assert all(len(checksum) == 64 for checksum in result.file_checksums.values())
    assert len(result.input_fingerprint) == 64


def test_result_to_dict_has_everything_but_the_frames(tmp_path: Path) -> None:
    """Baseline extract."""
    result = extract(ExtractConfig(str(write_folder(tmp_path / "csv"))))

    as_dict = result.to_dict()

    assert set(as_dict) == {
        "source_kind",
        "source_display",
        "row_counts",
        "input_fingerprint",
        "file_checksums",
        "elapsed_seconds",
    }
    assert as_dict["row_counts"] == result.row_counts
    assert isinstance(as_dict["elapsed_seconds"], float)


def test_password_hash_is_never_in_the_frames(tmp_path: Path) -> None:
    """Baseline extract: utilisateurs.csv holds a mot_de_passe_hash on every row."""
    result = extract(ExtractConfig(str(write_folder(tmp_path / "csv"))))

    assert "mot_de_passe_hash" not in result.frames.utilisateurs.columns
    cells = [str(cell) for cell in all_cells(result.frames)]
    assert not any(secret in cell for cell in cells for secret in HASHES)


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "cp1252"])
@pytest.mark.parametrize("delimiter", [";", ","])
@pytest.mark.parametrize("terminator", ["\n", "\r\n"])
def test_every_encoding_and_delimiter_gives_the_same_frames(
    tmp_path: Path, encoding: str, delimiter: str, terminator: str
) -> None:
    """Baseline extract written in UTF-8, UTF-8 with BOM or Windows-1252 ("é", "É", "’" = 0x92),
    with ';' or ',' (fields holding the delimiter quoted), LF or CRLF line ends."""
    reference = extract(ExtractConfig(str(write_folder(tmp_path / "reference"))))
    folder = write_folder(tmp_path / "variant", encoding=encoding, delimiter=delimiter, terminator=terminator)
    if encoding == "cp1252":
        assert b"O\x92Brien" in (folder / "utilisateurs.csv").read_bytes()
    if encoding == "utf-8-sig":
        assert (folder / "utilisateurs.csv").read_bytes().startswith(b"\xef\xbb\xbf")

    result = extract(ExtractConfig(str(folder)))

    assert_frames_equal(result.frames, expected_frames())
    assert result.input_fingerprint == reference.input_fingerprint


def test_fingerprint_ignores_file_order_but_not_content(tmp_path: Path) -> None:
    """Baseline, then the same rows in another order (etablissements, habilitations reversed),
    then one value changed (a nom)."""
    reference = extract(ExtractConfig(str(write_folder(tmp_path / "a"))))
    reordered = {
        "etablissements": render([ETABLISSEMENTS[0], *ETABLISSEMENTS[:0:-1]]),
        "habilitations": render([HABILITATIONS[0], *HABILITATIONS[:0:-1]]),
    }
    changed_rows = [row.copy() for row in UTILISATEURS]
    changed_rows[1][2] = "O'Brien"

    same = extract(ExtractConfig(str(write_folder(tmp_path / "b", reordered))))
    changed = extract(ExtractConfig(str(write_folder(tmp_path / "c", {"utilisateurs": render(changed_rows)}))))

    assert same.input_fingerprint == reference.input_fingerprint
    assert same.file_checksums != reference.file_checksums
    assert changed.input_fingerprint != reference.input_fingerprint


DATE_FORMATS = [
    ("2023-04-05", "2023-04-05 00:00:00"),
    ("2023-04-05T10:20:00", "2023-04-05 10:20:00"),
    ("2023-04-05 10:20:00", "2023-04-05 10:20:00"),
    ("05/04/2023", "2023-04-05 00:00:00"),
    ("05/04/2023 10:20", "2023-04-05 10:20:00"),
    ("05/04/2023 10:20:07", "2023-04-05 10:20:07"),
    (" 05/04/2023 ", "2023-04-05 00:00:00"),
    ("2024-02-29 23:59:59", "2024-02-29 23:59:59"),
    ("2023-04-05 10:20:00.250000", "2023-04-05 10:20:00.25"),  # as databases write them
]


@pytest.mark.parametrize(("written", "expected"), DATE_FORMATS)
def test_every_date_format(tmp_path: Path, written: str, expected: str) -> None:
    """Baseline, with habilitation 11's date_debut written in one accepted format."""
    rows = [row.copy() for row in HABILITATIONS]
    rows[1][7] = written

    result = extract(ExtractConfig(str(write_folder(tmp_path, {"habilitations": render(rows)}))))

    assert result.frames.habilitations.set_index("id_habilitation").at[11, "date_debut"] == pd.Timestamp(expected)


def test_date_formats_mixed_in_one_file(tmp_path: Path) -> None:
    """habilitations.csv with six rows whose date_debut uses six different formats, plus
    date_fermeture written with a time (kept as the date)."""
    rows = [HABILITATIONS[0]]
    for index, (written, _) in enumerate(DATE_FORMATS[:6]):
        rows.append([str(20 + index), "1", "EDOF", "", "", "N", "ACTIVE", written, "", "", ""])
    etablissements = [row.copy() for row in ETABLISSEMENTS]
    etablissements[1][6] = "2022-12-31 18:30:00"

    result = extract(
        ExtractConfig(
            str(write_folder(tmp_path, {"habilitations": render(rows), "etablissements": render(etablissements)}))
        )
    )

    assert list(result.frames.habilitations["date_debut"]) == [
        pd.Timestamp(expected) for _, expected in DATE_FORMATS[:6]
    ]
    assert result.frames.etablissements["date_fermeture"].iloc[0] == pd.Timestamp("2022-12-31")


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("O", True),
        ("N", False),
        ("o", True),
        ("oui", True),
        ("NON", False),
        (" Oui ", True),
        ("1", True),
        ("0", False),
        ("true", True),
        ("FALSE", False),
        ("True", True),
    ],
)
def test_every_boolean_spelling(tmp_path: Path, written: str, expected: bool) -> None:
    """Baseline, with application EDOF's actif written one accepted way."""
    rows = [row.copy() for row in APPLICATIONS]
    rows[1][2] = written

    result = extract(ExtractConfig(str(write_folder(tmp_path, {"applications": render(rows)}))))

    assert result.frames.applications["actif"].tolist() == [expected, False]
    assert result.frames.applications["actif"].dtype == np.dtype(bool)


def test_columns_in_another_order_with_extra_columns_and_header_case(tmp_path: Path) -> None:
    """applications.csv with columns reordered, an upper-case header name, and two extra columns
    (one of them empty-named) that are ignored."""
    content = (
        "Actif;remarque;libelle;code_application;\n"
        "O;x;Espace des Organismes de Formation;EDOF;\n"
        "N;;Mes collectes formation; ECR ;\n"
    )

    result = extract(ExtractConfig(str(write_folder(tmp_path, {"applications": content}))))

    pd.testing.assert_frame_equal(result.frames.applications, expected_frames().applications)


def test_quoted_multiline_field_blank_lines_and_line_numbers(tmp_path: Path) -> None:
    """applications.csv: a libelle spanning three physical lines, a blank line and a line of
    spaces (both skipped), then a bad boolean on physical line 7 (the 3rd record)."""
    content = (
        'code_application;libelle;actif\nEDOF;"Espace\ndes Organismes\nde Formation";O\n'
        "\n   \nECR;Mes collectes;peut-être\n"
    )

    error = read_error(write_folder(tmp_path, {"applications": content}))

    assert str(error) == (
        "applications.csv, line 7: actif: 'peut-être' is not a boolean (accepted: O/N, oui/non, 1/0, true/false)"
    )


def test_multiline_field_is_kept_whole(tmp_path: Path) -> None:
    """applications.csv: a libelle spanning two lines (CRLF inside the quotes) and a blank line."""
    content = 'code_application;libelle;actif\r\nEDOF;"Espace\r\ndes Organismes";O\r\n\r\nECR;x;N\r\n'

    result = extract(ExtractConfig(str(write_folder(tmp_path, {"applications": content}))))

    assert result.frames.applications["libelle"].tolist() == ["Espace\r\ndes Organismes", "x"]


def test_one_megabyte_field_reads_fine(tmp_path: Path) -> None:
    """etablissements.csv whose raison_sociale is 1 MB long (quoted, with delimiters and quotes)."""
    huge = ('a;b "c" ' * 131_072)[: 1 << 20]
    rows = [row.copy() for row in ETABLISSEMENTS]
    rows[1][2] = huge

    result = extract(ExtractConfig(str(write_folder(tmp_path, {"etablissements": render(rows)}))))

    assert result.frames.etablissements["raison_sociale"].iloc[0] == huge


def test_bare_quotes_inside_fields_use_the_careful_scan(tmp_path: Path) -> None:
    """etablissements.csv with quotes inside unquoted fields (`12 "bis" rue`, `ab"c`), which the
    fast layout scan cannot follow; then a short row on line 4."""
    good = 'siret;siren;raison_sociale;adresse;code_postal;commune;date_fermeture\n1;2;ab"c;12 "bis" rue;3;4;\n'
    bad = good + '5;6;"x";y;7;8;\n9;10;z\n'

    result = extract(ExtractConfig(str(write_folder(tmp_path / "good", {"etablissements": good}))))
    error = read_error(write_folder(tmp_path / "bad", {"etablissements": bad}))

    assert result.frames.etablissements["adresse"].tolist() == ['12 "bis" rue']
    assert result.frames.etablissements["raison_sociale"].tolist() == ['ab"c']
    assert str(error) == "etablissements.csv, line 4: expected 7 fields, found 3"


@pytest.mark.parametrize("bare_quote", [False, True])
def test_identifiers_and_dates_read_alike_by_both_scans(tmp_path: Path, bare_quote: bool) -> None:
    """habilitations.csv, CRLF, with quoted identifiers and dates ("11", "2023-04-05 10:20:00"),
    an id_delegant " 7 " (spaces) in the last column; with `bare_quote`, role is written
    Gestionnaire "EDOF" without quoting the field, which sends the file to the careful scan."""
    role = 'Gestionnaire "EDOF"' if bare_quote else "Gestionnaire EDOF"
    content = (
        ";".join(HABILITATIONS[0]) + "\r\n"
        f'"11";1;EDOF;12345678901234;{role};oui;ACTIVE;"2023-04-05 10:20:00";;;\r\n'
        '10;"2";ECR;;;non;en_attente;2023-04-05;2024-04-05 00:00:00;"05/05/2023 09:00:00"; 7 \r\n'
    )

    result = extract(ExtractConfig(str(write_folder(tmp_path, {"habilitations": content}))))

    expected = expected_frames().habilitations.assign(
        role=few_valued([None, role]), id_delegant=pd.array([7, None], dtype="Int64")
    )
    pd.testing.assert_frame_equal(result.frames.habilitations, expected)


@pytest.mark.parametrize("bare_quote", [False, True])
def test_bad_date_reported_alike_by_both_scans(tmp_path: Path, bare_quote: bool) -> None:
    """habilitations.csv whose date_fin on line 3 is written "2023""04" (a quoted field holding
    a doubled quote); with `bare_quote`, a bare quote in a role on line 2 too."""
    role = 'Gestionnaire "EDOF"' if bare_quote else "Gestionnaire EDOF"
    content = (
        ";".join(HABILITATIONS[0]) + "\n"
        f"11;1;EDOF;12345678901234;{role};oui;ACTIVE;2023-04-05 10:20:00;;;\n"
        '10;2;ECR;;;non;EN_ATTENTE;2023-04-05;"2023""04";;\n'
    )

    error = read_error(write_folder(tmp_path, {"habilitations": content}))

    assert str(error).startswith("habilitations.csv, line 3: date_fin: '2023\"04' is not a valid date (accepted: ")


def test_header_only_files_are_empty_tables(tmp_path: Path) -> None:
    """Every file holds its header row only."""
    folder = write_folder(tmp_path, {table: render(rows[:1]) for table, rows in BASELINE.items()})

    result = extract(ExtractConfig(str(folder)))

    assert result.row_counts == dict.fromkeys(BASELINE, 0)
    empty = expected_frames()
    for table in LEGACY_FRAME_COLUMNS:
        frame = result.frames.table(table)
        assert list(frame.columns) == list(LEGACY_FRAME_COLUMNS[table])
        assert kinds(frame) == kinds(empty.table(table)), table
        for column in frame:  # an enumeration's categories are its allowed values, others those held
            if isinstance(frame[column].dtype, pd.CategoricalDtype):
                allowed = list(ENUM_COLUMNS.get(table, {}).get(column, ()))
                assert list(frame[column].cat.categories) == allowed, (table, column)


class _Lines:
    """Rows numbered as lines of a CSV file under its header."""

    source = "habilitations.csv"

    def row(self, index: int) -> str:
        return f"line {index + 2}"

    def rows(self, first: int, second: int) -> str:
        return f"lines {first + 2} and {second + 2}"


def typed_habilitations(raw: pd.DataFrame) -> pd.DataFrame | str:
    try:
        return normalise_table("habilitations", raw, _Lines())
    except InputError as exc:
        return str(exc)


FEW_VALUED_TEXT = st.one_of(st.none(), st.sampled_from(["EDOF", " EDOF ", "edof", "MAF\t", "  ", "", "Zoé",
                                                        "Gestionnaire", "gestionnaire ", "Z"]))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(FEW_VALUED_TEXT, FEW_VALUED_TEXT), max_size=10),
       st.lists(st.sampled_from(["UNUSED", " A ", "zz"]), max_size=2, unique=True))
@example([(" EDOF ", "Gestionnaire"), ("EDOF", None), ("MAF\t", "gestionnaire ")], ["UNUSED"])
def test_few_valued_text_parsed_as_categories_gives_the_frame_of_the_same_text(
        pairs: list[tuple[str | None, str | None]], unused: list[str]) -> None:
    """The CSV reader parses code_application and role as categoricals, the SQL reader as text:
    both give the same typed frame (trimmed, the categories those held, sorted) or the same error,
    whatever the reader's categories' order and whether some go unused."""
    apps, roles = [app for app, _ in pairs], [role for _, role in pairs]
    constant = {"id_utilisateur": "7", "siret": "12345678900011", "responsable_acces": "non", "statut": "ACTIVE",
                "date_debut": "2024-01-02", "date_fin": None, "date_relance": None, "id_delegant": None}

    def raw(column: Callable[[list[str | None]], pd.Series]) -> pd.DataFrame:
        return pd.DataFrame({"id_habilitation": text([str(n) for n in range(1, len(pairs) + 1)]),
                             "code_application": column(apps), "role": column(roles),
                             **{name: text([value] * len(pairs)) for name, value in constant.items()}})

    def categories(values: list[str | None]) -> pd.Series:
        held = {value for value in values if value is not None} | set(unused)
        return pd.Series(pd.Categorical(values, categories=sorted(held, reverse=True)))

    from_text, from_categories = typed_habilitations(raw(text)), typed_habilitations(raw(categories))

    if isinstance(from_text, str):
        assert from_categories == from_text
    else:
        assert isinstance(from_categories, pd.DataFrame)
        assert isinstance(from_text["role"].dtype, pd.CategoricalDtype)
        pd.testing.assert_frame_equal(from_categories, from_text)


def kinds(frame: pd.DataFrame) -> dict[str, object]:
    """Each column's dtype, a categorical's as the dtype of its categories (these depend on the rows)."""
    return {column: ("category", dtype.categories.dtype) if isinstance(dtype, pd.CategoricalDtype) else dtype
            for column, dtype in frame.dtypes.items()}


# --- CSV: what stops the run -------------------------------------------------------------------


def test_missing_folder(tmp_path: Path) -> None:
    """No folder at all."""
    error = read_error(tmp_path / "nowhere")

    assert str(error) == f"{tmp_path / 'nowhere'}: folder not found (expected a folder of CSV files or a database URL)"


def test_missing_file(tmp_path: Path) -> None:
    """Baseline without habilitations.csv."""
    folder = write_folder(tmp_path, {"habilitations": b"-"})

    error = read_error(folder)

    assert (error.source, error.location) == ("habilitations.csv", None)
    assert str(error) == f"habilitations.csv: file not found in {folder}"


def test_missing_required_column(tmp_path: Path) -> None:
    """utilisateurs.csv without the statut column."""
    rows = [[field for index, field in enumerate(row) if index != 6] for row in UTILISATEURS]

    error = read_error(write_folder(tmp_path, {"utilisateurs": render(rows)}))

    assert str(error) == (
        "utilisateurs.csv, line 1: missing required column(s): statut "
        "(the header must name them, separated by ';' or ',')"
    )


def test_tab_delimited_file(tmp_path: Path) -> None:
    """applications.csv delimited by tabs."""
    error = read_error(write_folder(tmp_path, {"applications": render(APPLICATIONS, "\t")}))

    assert str(error) == (
        "applications.csv, line 1: missing required column(s): code_application, libelle, actif "
        "(the header must name them, separated by ';' or ',')"
    )


def test_undecodable_byte(tmp_path: Path) -> None:
    """applications.csv in Windows-1252 ("é" = 0xE9 on line 2) with byte 0x81, undefined in
    Windows-1252 and invalid in UTF-8, on line 3."""
    content = b"code_application;libelle;actif\nEDOF;Activit\xe9;O\nECR;Mes collectes \x81;N\n"

    error = read_error(write_folder(tmp_path, {"applications": content}))

    assert str(error) == (
        "applications.csv, line 3: byte 0x81 cannot be decoded (the file is neither UTF-8 nor Windows-1252)"
    )


def test_invalid_byte_in_a_utf8_file(tmp_path: Path) -> None:
    """applications.csv in UTF-8 ("Á" = C3 81 on line 2) with a stray 0x81 on line 3: the line
    named is the stray byte's, not the "Á" that Windows-1252 cannot decode either."""
    content = "code_application;libelle;actif\nEDOF;Á;O\n".encode() + b"ECR;x\x81;N\n"

    error = read_error(write_folder(tmp_path, {"applications": content}))

    assert str(error) == (
        "applications.csv, line 3: byte 0x81 cannot be decoded (the file is neither UTF-8 nor Windows-1252)"
    )


@pytest.mark.parametrize(
    ("line", "found"),
    [("EDOF;Espace", 2), ("EDOF;Espace;O;extra", 4), ("EDOF", 1)],
)
def test_row_with_the_wrong_number_of_fields(tmp_path: Path, line: str, found: int) -> None:
    """applications.csv whose second data row (line 3) has too few or too many fields."""
    content = f"code_application;libelle;actif\nMAF;Mon Activité;O\n{line}\nECR;x;N\n"

    error = read_error(write_folder(tmp_path, {"applications": content}))

    assert str(error) == f"applications.csv, line 3: expected 3 fields, found {found}"


def test_unterminated_quote(tmp_path: Path) -> None:
    """habilitations.csv whose role on line 3 opens a quote that is never closed."""
    content = (
        render(HABILITATIONS[:2])
        + '12;1;EDOF;;"Gestionnaire;O;ACTIVE;2023-04-05;;;\n13;1;EDOF;;;O;ACTIVE;2023-04-05;;;\n'
    )

    error = read_error(write_folder(tmp_path, {"habilitations": content}))

    assert str(error) == "habilitations.csv, line 3: unterminated quote: the quoted field starting here never ends"


def test_unterminated_quote_after_bare_quotes(tmp_path: Path) -> None:
    """applications.csv with a bare quote on line 2 (careful scan) and an unterminated quote
    opened on line 3."""
    content = 'code_application;libelle;actif\nMAF;12 "bis";O\nEDOF;"Espace;O\nECR;x;N\n'

    error = read_error(write_folder(tmp_path, {"applications": content}))

    assert str(error) == "applications.csv, line 3: unterminated quote: the quoted field starting here never ends"


def test_empty_file(tmp_path: Path) -> None:
    """etablissements.csv of 0 bytes."""
    error = read_error(write_folder(tmp_path, {"etablissements": b""}))

    assert str(error) == "etablissements.csv: empty file"


def test_nul_byte(tmp_path: Path) -> None:
    """applications.csv with a NUL byte on line 3."""
    content = b"code_application;libelle;actif\nEDOF;x;O\nECR;a\x00b;N\n"

    error = read_error(write_folder(tmp_path, {"applications": content}))

    assert str(error) == "applications.csv, line 3: NUL byte in the data (expected UTF-8 or Windows-1252 text)"


@pytest.mark.parametrize(
    ("written", "problem"),
    [
        ("31/02/2023", "is not a valid date"),
        ("2023-02-29", "is not a valid date"),
        ("2023-04-05 25:00:00", "is not a valid date"),
        ("demain", "is not a valid date"),
        ("05-04-2023", "is not a valid date"),
    ],
)
def test_impossible_or_garbage_date(tmp_path: Path, written: str, problem: str) -> None:
    """habilitations.csv whose date_debut on line 3 is not a real date in an accepted format."""
    rows = [row.copy() for row in HABILITATIONS]
    rows[2][7] = written

    error = read_error(write_folder(tmp_path, {"habilitations": render(rows)}))

    assert str(error) == (
        f"habilitations.csv, line 3: date_debut: '{written}' {problem} (accepted: 2023-04-05, "
        "2023-04-05 10:20:00, 2023-04-05T10:20:00, 05/04/2023, 05/04/2023 10:20[:00])"
    )


def test_date_outside_the_supported_range(tmp_path: Path) -> None:
    """habilitations.csv whose date_fin on line 2 is 9999-12-31 (an "open end" sentinel)."""
    rows = [row.copy() for row in HABILITATIONS]
    rows[1][8] = "9999-12-31"

    error = read_error(write_folder(tmp_path, {"habilitations": render(rows)}))

    assert str(error) == (
        "habilitations.csv, line 2: date_fin: '9999-12-31' is outside the supported range (years 1678 to 2261)"
    )


@pytest.mark.parametrize("written", ["12a", "-3", "1.5", "1e3", "²", "", " "])
def test_bad_identifier(tmp_path: Path, written: str) -> None:
    """utilisateurs.csv whose id_utilisateur on line 3 is not a non-negative integer (or empty)."""
    rows = [row.copy() for row in UTILISATEURS]
    rows[2][0] = written

    error = read_error(write_folder(tmp_path, {"utilisateurs": render(rows)}))

    if written:
        expected = f"id_utilisateur: '{written}' is not a non-negative integer"
    else:
        expected = "id_utilisateur: empty, but a value is required"
    assert str(error) == f"utilisateurs.csv, line 3: {expected}"


def test_identifier_with_spaces_and_too_large(tmp_path: Path) -> None:
    """habilitations.csv: id_delegant " 7 " on line 2 (accepted), id_habilitation beyond int64 on line 3."""
    rows = [row.copy() for row in HABILITATIONS]
    rows[1][10] = " 7 "
    good = write_folder(tmp_path / "good", {"habilitations": render(rows)})
    rows[2][0] = "99999999999999999999"

    result = extract(ExtractConfig(str(good)))
    error = read_error(write_folder(tmp_path / "bad", {"habilitations": render(rows)}))

    assert result.frames.habilitations["id_delegant"].tolist() == [1, 7]
    assert str(error) == "habilitations.csv, line 3: id_habilitation: '99999999999999999999' is too large"


def test_duplicate_id_utilisateur(tmp_path: Path) -> None:
    """utilisateurs.csv where id_utilisateur 2 appears on lines 2 and 4."""
    rows = [*UTILISATEURS, UTILISATEURS[1]]

    error = read_error(write_folder(tmp_path, {"utilisateurs": render(rows)}))

    assert (error.source, error.location) == ("utilisateurs.csv", "lines 2 and 4")
    assert str(error) == "utilisateurs.csv, lines 2 and 4: duplicate id_utilisateur 2"


def test_duplicate_id_habilitation(tmp_path: Path) -> None:
    """habilitations.csv where id_habilitation 10 appears on lines 3 and 5 (written "10" and " 10")."""
    twin = HABILITATIONS[2].copy()
    twin[0] = " 10"
    rows = [*HABILITATIONS, ["12", "1", "EDOF", "", "", "N", "ACTIVE", "2023-04-05", "", "", ""], twin]

    error = read_error(write_folder(tmp_path, {"habilitations": render(rows)}))

    assert str(error) == "habilitations.csv, lines 3 and 5: duplicate id_habilitation 10"


def test_value_outside_an_enumeration(tmp_path: Path) -> None:
    """utilisateurs.csv whose type_compte on line 3 is "client"."""
    rows = [row.copy() for row in UTILISATEURS]
    rows[2][5] = "client"

    error = read_error(write_folder(tmp_path, {"utilisateurs": render(rows)}))

    assert str(error) == "utilisateurs.csv, line 3: type_compte: 'client' is not one of PRO, AGENT"


def test_required_value_missing(tmp_path: Path) -> None:
    """habilitations.csv whose statut on line 3 is blank (spaces only) and code on line 2 empty:
    the earliest line is reported."""
    rows = [row.copy() for row in HABILITATIONS]
    rows[2][6] = "   "
    rows[1][2] = ""

    error = read_error(write_folder(tmp_path, {"habilitations": render(rows)}))

    assert str(error) == "habilitations.csv, line 2: code_application: empty, but a value is required"


def test_messages_never_quote_personal_data(tmp_path: Path) -> None:
    """utilisateurs.csv whose type_compte on line 2 is the user's email address."""
    rows = [row.copy() for row in UTILISATEURS]
    rows[1][5] = rows[1][1]

    error = read_error(write_folder(tmp_path, {"utilisateurs": render(rows)}))

    assert str(error) == "utilisateurs.csv, line 2: type_compte: (value not shown) is not one of PRO, AGENT"


# --- SQL ------------------------------------------------------------------------------------

# The baseline extract as typed database rows (same data as the CSV fixtures above), plus the
# password hashes that must never be read.
SQL_ROWS: dict[str, list[dict[str, Any]]] = {
    "utilisateurs": [
        {
            "id_utilisateur": 1,
            "courriel": "elodie@exemple.fr",
            "nom": "Lefèvre",
            "prenom": "Élodie",
            "telephone": None,
            "type_compte": "PRO",
            "statut": "SUPPRIME",
            "date_creation": datetime(2023, 4, 5, 10, 20),
            "date_derniere_connexion": datetime(2024, 1, 2, 8, 0),
            "mot_de_passe_hash": HASHES[0],
            "siret_rattachement": "12345678901234",
        },
        {
            "id_utilisateur": 2,
            "courriel": "  Jean.Martin@Exemple.FR ",
            "nom": "O’Brien",
            "prenom": "Zoé",
            "telephone": "01 23 45 67 89",
            "type_compte": " agent ",
            "statut": "actif",
            "date_creation": datetime(2023, 4, 5, 10, 20),
            "date_derniere_connexion": None,
            "mot_de_passe_hash": HASHES[1],
            "siret_rattachement": "",  # an empty string is NULL, as in CSV
        },
    ],
    "etablissements": [
        {
            "siret": "123 456 789 01234",
            "siren": "123456789",
            "raison_sociale": 'Boulangerie "Chez Paul"; Fils, SA',
            "adresse": "1 rue de la Paix",
            "code_postal": "75001",
            "commune": "Paris",
            "date_fermeture": None,
        },
        {
            "siret": "98765432109876",
            "siren": None,
            "raison_sociale": "ACME",
            "adresse": None,
            "code_postal": None,
            "commune": "Lyon",
            "date_fermeture": date(2022, 12, 31),
        },
    ],
    "applications": [
        {"code_application": "EDOF", "libelle": "Espace des Organismes de Formation", "actif": True},
        {"code_application": " ECR ", "libelle": "Mes collectes formation", "actif": False},
    ],
    "habilitations": [
        {
            "id_habilitation": 11,
            "id_utilisateur": 1,
            "code_application": "EDOF",
            "siret": "12345678901234",
            "role": "Gestionnaire EDOF",
            "responsable_acces": True,
            "statut": "ACTIVE",
            "date_debut": datetime(2023, 4, 5, 10, 20),
            "date_fin": None,
            "date_relance": None,
            "id_delegant": None,
        },
        {
            "id_habilitation": 10,
            "id_utilisateur": 2,
            "code_application": "ECR",
            "siret": None,
            "role": None,
            "responsable_acces": False,
            "statut": "en_attente",
            "date_debut": datetime(2023, 4, 5),
            "date_fin": datetime(2024, 4, 5),
            "date_relance": datetime(2023, 5, 5, 9, 0),
            "id_delegant": 1,
        },
    ],
}


@pytest.fixture
def legacy_url(engine_kind: str, new_database_url: Callable[[str], str]) -> str:
    """A legacy database on the engine of `engine_kind`, holding SQL_ROWS."""
    url = new_database_url(engine_kind)
    engine = sa.create_engine(url)
    try:
        with engine.begin() as connection:
            legacy_metadata.create_all(connection)
            for table, rows in SQL_ROWS.items():
                connection.execute(LEGACY_TABLES[table].insert(), rows)
    finally:
        engine.dispose()
    return url


def run_sql(url: str, *statements: str) -> None:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as connection:
            for statement in statements:
                connection.execute(sa.text(statement))
    finally:
        engine.dispose()


def test_database_gives_the_frames_and_fingerprint_of_the_csv_folder(legacy_url: str, tmp_path: Path) -> None:
    """SQL_ROWS in the database; the baseline CSV folder holds the same data."""
    from_csv = extract(ExtractConfig(str(write_folder(tmp_path / "csv"))))

    from_sql = extract(ExtractConfig(legacy_url))

    assert_frames_equal(from_sql.frames, from_csv.frames, any_order=("etablissements", "applications"))
    assert from_sql.input_fingerprint == from_csv.input_fingerprint
    assert from_sql.source_kind == "sql"
    assert from_sql.file_checksums == {}
    assert not any(secret in str(cell) for cell in all_cells(from_sql.frames) for secret in HASHES)


@pytest.mark.postgres
def test_aware_database_timestamps_become_paris_wall_time(new_database_url: Callable[[str], str]) -> None:
    """SQL_ROWS, with habilitations.date_debut turned into `timestamptz` (SQLite has no such type)
    and the database's session time zone UTC: values come back aware and are read as Paris wall
    time again."""
    url = new_database_url("postgres")
    engine = sa.create_engine(url)
    try:
        with engine.begin() as connection:
            legacy_metadata.create_all(connection)
            for table, rows in SQL_ROWS.items():
                connection.execute(LEGACY_TABLES[table].insert(), rows)
            connection.execute(
                sa.text(
                    "ALTER TABLE habilitations ALTER COLUMN date_debut TYPE timestamptz "
                    "USING date_debut AT TIME ZONE 'Europe/Paris'"
                )
            )
            connection.execute(sa.text(f"ALTER DATABASE {engine.url.database} SET timezone TO 'UTC'"))
    finally:
        engine.dispose()

    result = extract(ExtractConfig(url))

    pd.testing.assert_series_equal(
        result.frames.habilitations["date_debut"], expected_frames().habilitations["date_debut"]
    )


def test_missing_table(legacy_url: str) -> None:
    """SQL_ROWS without the etablissements table."""
    run_sql(legacy_url, "DROP TABLE etablissements")

    with pytest.raises(InputError) as caught:
        extract(ExtractConfig(legacy_url))

    assert (caught.value.source, caught.value.location) == ("table etablissements", None)
    assert caught.value.problem == f"table not found in {mask_url(make_url(legacy_url))}"


def test_unreachable_database_message_masks_the_password() -> None:
    """A PostgreSQL URL with a password, to a port where nothing listens."""
    with pytest.raises(InputError) as caught:
        extract(ExtractConfig("postgresql://migration:s3cret@127.0.0.1:1/legacy"))

    assert caught.value.source == "postgresql+psycopg://migration:***@127.0.0.1:1/legacy"
    assert caught.value.problem.startswith("cannot be read: ")
    assert "s3cret" not in str(caught.value)


def test_missing_column(legacy_url: str) -> None:
    """SQL_ROWS with utilisateurs.statut dropped."""
    run_sql(legacy_url, "ALTER TABLE utilisateurs DROP COLUMN statut")

    with pytest.raises(InputError) as caught:
        extract(ExtractConfig(legacy_url))

    assert str(caught.value) == "table utilisateurs: missing required column(s): statut"


def test_duplicate_key_in_database(legacy_url: str) -> None:
    """SQL_ROWS whose utilisateurs table lost its primary key and holds id_utilisateur 2 twice."""
    run_sql(
        legacy_url,
        "CREATE TABLE copie AS SELECT * FROM utilisateurs",
        "DROP TABLE utilisateurs",
        "ALTER TABLE copie RENAME TO utilisateurs",
        "INSERT INTO utilisateurs SELECT * FROM utilisateurs WHERE id_utilisateur = 2",
    )

    with pytest.raises(InputError) as caught:
        extract(ExtractConfig(legacy_url))

    assert str(caught.value) == "table utilisateurs: duplicate id_utilisateur 2"


def test_bad_database_values_are_named_by_key(legacy_url: str) -> None:
    """SQL_ROWS with habilitation 11's statut set to 'PERDUE'."""
    run_sql(legacy_url, "UPDATE habilitations SET statut = 'PERDUE' WHERE id_habilitation = 11")

    with pytest.raises(InputError) as caught:
        extract(ExtractConfig(legacy_url))

    assert str(caught.value) == (
        "table habilitations, id_habilitation 11: statut: 'PERDUE' is not one of ACTIVE, EN_ATTENTE, REFUSEE, REVOQUEE"
    )


@pytest.mark.sqlite
def test_missing_sqlite_file_is_not_created(tmp_path: Path) -> None:
    """A SQLite URL to a file that does not exist."""
    path = tmp_path / "absent.sqlite"

    with pytest.raises(InputError) as caught:
        extract(ExtractConfig(f"sqlite:///{path}"))

    assert str(caught.value) == f"sqlite:///{path}: database file not found"
    assert not path.exists()


@pytest.mark.sqlite
def test_sqlite_text_booleans_and_foreign_date_text(tmp_path: Path) -> None:
    """A SQLite legacy database written by another tool: booleans stored as 'O'/'N' text and
    timestamps as French text; read with the CSV rules (SQLAlchemy's typed processors would
    have turned 'N' into True)."""
    url = f"sqlite:///{tmp_path / 'foreign.sqlite'}"
    engine = sa.create_engine(url)
    try:
        with engine.begin() as connection:
            legacy_metadata.create_all(connection)
            for table, rows in SQL_ROWS.items():
                connection.execute(LEGACY_TABLES[table].insert(), rows)
            connection.execute(sa.text("UPDATE applications SET actif = 'N' WHERE code_application = ' ECR '"))
            connection.execute(sa.text("UPDATE applications SET actif = 'O' WHERE code_application = 'EDOF'"))
            connection.execute(sa.text("UPDATE habilitations SET date_debut = '05/04/2023' WHERE id_habilitation = 10"))
    finally:
        engine.dispose()

    result = extract(ExtractConfig(url))

    assert result.frames.applications.set_index("code_application")["actif"].to_dict() == {
        "ECR": False,
        "EDOF": True,
    }
    assert result.frames.habilitations["date_debut"].iloc[0] == pd.Timestamp("2023-04-05")


def test_extract_result_is_frozen(tmp_path: Path) -> None:
    """Baseline extract."""
    result = extract(ExtractConfig(str(write_folder(tmp_path))))

    with pytest.raises(AttributeError):
        result.source_kind = "sql"  # type: ignore[misc]
    assert isinstance(result, ExtractResult)
