"""Rows that repeat another row, found by sorting rather than hashing (see `duplicated_rows`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd


def duplicated_rows(frame: pd.DataFrame) -> npt.NDArray[np.bool_]:
    """`frame.duplicated(keep=False)`: every row whose values, column by column, are those of another
    row (missing equal to missing), found by sorting the rows rather than hashing them.

    pandas factorizes each column into a table sized for every row, then hashes the combined codes
    again: at a million users (2.4 million access rows, 5 columns) 177 MB above the frame, the
    validation's high-water mark. Sorting reads a categorical's codes and an integer column as they
    are: 56 MB, in the same time. Used for the duplicate-access rule (validation/expectations.py) and
    the transform's duplicate groups."""
    keys = [_sort_key(frame[column]) for column in frame.columns]
    if len(frame) < 2:
        return np.zeros(len(frame), dtype=bool)
    order = np.lexsort(keys[::-1])
    same_as_next = np.ones(len(order) - 1, dtype=bool)
    for key in keys:
        in_order = key[order]
        same_as_next &= in_order[1:] == in_order[:-1]
        del in_order
    duplicated = np.zeros(len(order), dtype=bool)
    duplicated[1:] = same_as_next
    duplicated[:-1] |= same_as_next
    in_rows = np.empty(len(order), dtype=bool)
    in_rows[order] = duplicated
    return in_rows


def _sort_key(column: pd.Series) -> npt.NDArray[Any]:
    """Integers that are equal exactly where the column's values are (missing ones equal)."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        return np.asarray(column.cat.codes)  # -1 for a missing value
    if isinstance(column.dtype, np.dtype) and column.dtype.kind in "iub":  # numpy's: never missing
        return column.to_numpy()
    codes, _distinct = pd.factorize(column, use_na_sentinel=True)
    return codes
