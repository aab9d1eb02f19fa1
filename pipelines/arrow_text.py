"""Text columns read straight from their Arrow buffers, without a Python string per value.

pandas keeps TEXT_DTYPE columns in Arrow; these helpers hand their bytes to numpy and hashlib
as they are. Each caller keeps a reference way for what they cannot take, and a property test
proves the two agree.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc


def arrow_array(values: pd.Series) -> pa.Array | None:
    """An Arrow-backed text column as one Arrow string array, missing values null (no copy
    where it is one chunk already); None for any other column."""
    array = values.array
    if not isinstance(array, pd.arrays.ArrowStringArray):
        return None
    chunked: pa.ChunkedArray = array.__arrow_array__()
    return chunked.combine_chunks() if chunked.num_chunks != 1 else chunked.chunk(0)


def text_array(values: pd.Series) -> pa.Array | None:
    """A column of text as one Arrow string array, missing values null: an Arrow-backed one as it
    is held, any other through its objects; None when it holds other values than text, or text
    UTF-8 cannot hold (a lone surrogate)."""
    held = arrow_array(values)
    if held is not None:
        return held
    try:
        return pa.array(values.to_numpy(dtype=object), type=pa.large_string(), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeError):
        return None


def arrow_strings(values: pd.Series, *, nulls: str | None = None) -> pa.Array | None:
    """An Arrow-backed text column as one Arrow string array; None for any other column.

    `nulls=None` drops the missing values; a string stands in for each of them instead.
    """
    strings = arrow_array(values)
    if strings is not None and strings.null_count:
        strings = strings.drop_null() if nulls is None else pc.fill_null(strings, nulls)
    return strings


def categorical_strings(values: pd.Series) -> pa.Array | None:
    """A categorical of text as one Arrow string array (missing values null), decoded by Arrow
    from its codes: pandas' `astype` and `to_numpy` make a Python string a row (13.6 million for
    the fingerprint of a million users' export). None when its categories are not all text."""
    dictionary = category_texts(values)
    return None if dictionary is None else decoded(values.cat.codes.to_numpy(), dictionary)


def category_texts(values: pd.Series) -> pa.Array | None:
    """A categorical's categories as an Arrow string array; None when they are not all text."""
    try:
        return pa.array(values.cat.categories.to_numpy(dtype=object), type=pa.large_string())
    except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeError):  # not text, or not text UTF-8 holds
        return None


def decoded(codes: npt.NDArray[np.integer[Any]], dictionary: pa.Array) -> pa.Array:
    """The text of each code in `dictionary`, as an Arrow string array; code -1 null."""
    strings: pa.Array = pa.DictionaryArray.from_arrays(pa.array(codes, mask=codes < 0), dictionary).dictionary_decode()
    return strings


def held_categories(values: pd.Series) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.int32]]:
    """For a categorical column: which of its categories some row holds, and each row's code
    among those alone (-1: missing). Counted, not `remove_unused_categories`, which sorts every
    code (7 times as long, and 0.08 GB of temporaries for 2.3 million rows)."""
    codes = np.add(values.cat.codes.to_numpy(), 1, dtype=np.int32)  # a missing value (-1) at 0
    used = np.bincount(codes, minlength=len(values.cat.categories) + 1)[1:] > 0
    renumbered = np.full(len(used) + 1, -1, dtype=np.int32)  # the first one for a missing value
    renumbered[1:][used] = np.arange(int(used.sum()), dtype=np.int32)
    return used, renumbered[codes]


def factorized(values: pd.Series) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.object_]]:
    """pd.factorize(values, use_na_sentinel=True) as (codes, uniques), for an Arrow-backed column
    through Arrow's dictionary encoding (no Python string per row), for a categorical through its
    codes. Codes may be numbered in another order than pandas' (both number distinct values, -1
    for missing)."""
    if isinstance(values.dtype, pd.CategoricalDtype):  # its codes, renumbered over the categories it uses
        used, held_codes = held_categories(values)
        used_categories: npt.NDArray[np.object_] = values.cat.categories[used].to_numpy(dtype=object)
        return held_codes.astype(np.int64), used_categories
    if not isinstance(values.array, pd.arrays.ArrowStringArray):
        codes, uniques = pd.factorize(values.to_numpy(dtype=object), use_na_sentinel=True)
        return codes.astype(np.int64), np.asarray(uniques, dtype=object)
    # Chunk by chunk (Arrow numbers the distinct values of all chunks together): a column read in
    # batches, combined first, was a copy of its text (the target's entitlements' SIRETs, 45 MB at
    # a million users, at the reconciliation's high-water mark).
    encoded: pa.ChunkedArray = values.array.__arrow_array__().dictionary_encode()
    chunks = encoded.chunks
    if chunks and not all(chunk.dictionary.equals(chunks[0].dictionary) for chunk in chunks[1:]):
        chunks = encoded.unify_dictionaries().chunks
    codes = np.concatenate([np.empty(0, dtype=np.int32),
                            *(pc.fill_null(chunk.indices, -1).to_numpy(zero_copy_only=False) for chunk in chunks)])
    distinct = chunks[0].dictionary.to_pylist() if chunks else []
    return codes.astype(np.int64), np.array(distinct, dtype=object)


def shared_objects(values: pd.Series) -> npt.NDArray[np.object_]:
    """`values.to_numpy(dtype=object)` of an Arrow-backed text column, with one Python string per
    distinct value shared by every row that holds it (8 bytes a row instead of a string each:
    400 MB less for three columns of 2.4 million access rows). A categorical column too (its
    to_numpy makes a string a row). Any other column as it is."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        codes = values.cat.codes.to_numpy(dtype=np.int64)
        uniques = values.cat.categories.to_numpy(dtype=object)
        missing: object = np.nan  # as to_numpy gives
    elif arrow_array(values) is not None:
        codes, uniques = factorized(values)
        missing = values.array.dtype.na_value  # NaN for TEXT_DTYPE, as to_numpy gives
    else:
        return values.to_numpy(dtype=object)
    by_code = np.empty(len(uniques) + 1, dtype=np.object_)  # the last one for code -1: missing
    by_code[:-1] = uniques
    by_code[-1] = missing
    shared: npt.NDArray[np.object_] = by_code[codes]
    return shared


def _offsets(strings: pa.Array) -> npt.NDArray[np.int64]:
    offset_type = np.int64 if pa.types.is_large_string(strings.type) else np.int32
    buffer = strings.buffers()[1]
    if buffer is None:
        raise ValueError("a string array without offsets")
    return np.frombuffer(buffer, dtype=offset_type)[strings.offset : strings.offset + len(strings) + 1].astype(np.int64)


def data_bytes(strings: pa.Array) -> bytes:
    """The bytes of every value of `strings`, one after the other (a copy: `bytes.find` is memchr)."""
    start, end = (int(v) for v in _offsets(strings)[[0, -1]])
    data = strings.buffers()[2]
    return b"" if data is None else bytes(memoryview(data)[start:end])  # type: ignore[arg-type]


def fixed_width_matrix(strings: pa.Array, rows: npt.NDArray[np.intp], size: int) -> npt.NDArray[np.uint8]:
    """The bytes of `strings[rows]`, every one `size` bytes long, as a (size, len(rows)) matrix:
    row i holds the i-th byte of every string."""
    subset = strings if len(rows) == len(strings) else strings.take(pa.array(rows))
    start, end = (int(v) for v in _offsets(subset)[[0, -1]])
    if end - start != len(rows) * size:
        raise ValueError(f"strings are not all {size} bytes long")
    data = subset.buffers()[2]
    chars = np.frombuffer(data, dtype=np.uint8)[start:end] if data is not None else np.empty(0, np.uint8)
    return np.ascontiguousarray(chars.reshape(len(rows), size).T)


def terminated_bytes(strings: pa.Array, terminator: str) -> memoryview:
    """Every string followed by `terminator`, as the bytes of one Arrow buffer."""
    # value + terminator + "" for every value (the separator comes last, and of the same type)
    terminated = pc.binary_join_element_wise(strings, pa.scalar(terminator, strings.type), pa.scalar("", strings.type))
    offsets = _offsets(terminated)
    data = terminated.buffers()[2]
    if data is None:
        return memoryview(b"")
    return memoryview(data)[int(offsets[0]) : int(offsets[-1])]  # type: ignore[arg-type]
