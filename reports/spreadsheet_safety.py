"""Cells that a spreadsheet would run as a formula, made inert (CSV/formula injection).

Excel and LibreOffice evaluate a cell that begins with `=`, `+`, `-` or `@` as a formula, and
a leading tab or carriage return can hide such a start; legacy data is not trusted. Every
CSV the project writes for people to open passes its cells through `neutralise_cell` (or a
whole frame through `neutralise_frame`): such a cell gets a leading single quote, which the
spreadsheet shows as text. Non-text values (numbers, dates, missing values) are left as they
are: a number is not a formula.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any, TypeVar

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

# OWASP's list, plus the full-width forms of the four signs, which some spreadsheets fold into them.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "＝", "＋", "－", "＠")
QUOTE = "'"

T = TypeVar("T")


def is_dangerous(value: object) -> bool:
    return isinstance(value, str) and value.startswith(FORMULA_STARTS)


def neutralise_cell(value: T) -> T | str:
    """`value` with a single quote in front when it is text a spreadsheet would run as a formula."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return QUOTE + value
    return value


def neutralise_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of `frame` whose text cells (and column names) are neutralised; other cells unchanged."""
    safe = frame.copy()
    for column in safe.columns:
        if safe[column].dtype == object or isinstance(safe[column].dtype, pd.StringDtype):
            safe[column] = safe[column].map(neutralise_cell, na_action="ignore")
    safe.columns = pd.Index([neutralise_cell(name) for name in safe.columns])
    return safe


def neutralise_row(row: list[Any]) -> list[Any]:
    return [neutralise_cell(value) for value in row]


def neutralise_values(values: Iterable[Any]) -> list[Any]:
    """`neutralise_cell` over a whole column (the exceptions workbook has hundreds of thousands of rows)."""
    starts, quote = FORMULA_STARTS, QUOTE
    return [quote + value if isinstance(value, str) and value.startswith(starts) else value for value in values]


def neutralise_arrow(texts: pa.Array) -> pa.Array:
    """`neutralise_cell` over an Arrow text array without nulls, by Arrow (no Python string a cell)."""
    dangerous = functools.reduce(pc.or_, (pc.starts_with(texts, start) for start in FORMULA_STARTS))
    if not pc.any(dangerous).as_py():
        return texts
    quoted = pc.binary_join_element_wise(pa.scalar(QUOTE, texts.type), texts, pa.scalar("", texts.type))
    return pc.if_else(dangerous, quoted, texts)
