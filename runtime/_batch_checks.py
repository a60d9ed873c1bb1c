"""Argument and column checks shared by the :class:`~runtime.Batch` operations.

Each helper either returns a normalised value or raises the error the batch contract names:
:class:`~runtime.errors.BatchError` for inconsistent data, ``IndexError`` for bad index values,
``TypeError`` for arguments of the wrong type.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from runtime import _batch_jagged as jagged
from runtime.errors import BatchError

__all__ = [
    "as_column_array",
    "check_columns",
    "check_keys",
    "check_same_columns",
    "describe_tensor",
    "normalize_index",
]

_Array = npt.NDArray[Any]


def check_columns(
    tensors: Mapping[Any, object],
    non_tensors: Mapping[Any, object],
    meta: Mapping[Any, object],
) -> None:
    """Raise :class:`BatchError` unless every column is well formed and all share one length,
    no name is both a tensor and a non-tensor column, and every meta key is a str."""
    lengths: dict[str, int] = {}
    for name, value in tensors.items():
        lengths[_column_name(name, "tensor")] = _tensor_length(name, value)
    for name, array in non_tensors.items():
        if name in tensors:
            raise BatchError(
                f"column name {name!r} is used by both a tensor and a non-tensor column; "
                "rename one of them"
            )
        lengths[_column_name(name, "non-tensor")] = _array_length(name, array)
    _check_lengths(lengths, tensors)
    for key in meta:
        if not isinstance(key, str):
            raise BatchError(f"meta keys must be str, got {key!r}")


def _column_name(name: object, kind: str) -> str:
    if not isinstance(name, str):
        raise BatchError(f"{kind} column names must be str, got {name!r}")
    return name


def _tensor_length(name: object, value: object) -> int:
    if not isinstance(value, torch.Tensor):
        raise BatchError(
            f"tensor column {name!r} must be a torch.Tensor, got "
            f"{type(value).__name__}; put numpy arrays and lists in non_tensors "
            "(Batch.from_dict converts lists)"
        )
    if value.layout == torch.jagged:
        jagged.check_column(str(name), value)
    elif value.layout != torch.strided:
        raise BatchError(
            f"tensor column {name!r} has layout {value.layout}; only dense (strided) and "
            "jagged nested tensors are supported, convert it with .to_dense()"
        )
    if value.ndim < 1:
        raise BatchError(
            f"tensor column {name!r} is 0-dimensional (value {value!r}); columns need a "
            "leading batch dimension: put scalars in meta or use value.reshape(1)"
        )
    return int(value.shape[0])


def _array_length(name: object, array: object) -> int:
    if not isinstance(array, np.ndarray):
        raise BatchError(
            f"non-tensor column {name!r} must be a numpy.ndarray, got "
            f"{type(array).__name__}; use Batch.from_dict, which converts lists to object "
            "arrays, or put tensors in tensors"
        )
    if array.ndim < 1:
        raise BatchError(
            f"non-tensor column {name!r} is 0-dimensional (value {array!r}); columns need "
            "a leading batch dimension: put scalars in meta"
        )
    return int(array.shape[0])


def _check_lengths(lengths: Mapping[str, int], tensors: Mapping[Any, object]) -> None:
    first, expected = next(iter(lengths.items()), ("", 0))
    for name, length in lengths.items():
        if length != expected:
            kind = "tensor" if name in tensors else "non-tensor"
            raise BatchError(
                f"{kind} column {name!r} has length {length} but the batch has length "
                f"{expected} (from column {first!r}); every column must share the leading "
                "dimension"
            )


def describe_tensor(t: torch.Tensor) -> str:
    """A short description, e.g. ``float32[4, 8]`` or ``int64[4, jagged]@cuda:0``."""
    return jagged.describe(t)


def as_column_array(name: str, value: object) -> _Array:
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, list | tuple):
        array = np.empty(len(value), dtype=object)
        for i, item in enumerate(value):
            array[i] = item
        return array
    raise BatchError(
        f"non-tensor column {name!r} must be a numpy.ndarray, list or tuple, got "
        f"{type(value).__name__}"
    )


def check_keys(
    keys: Sequence[str], available: Mapping[str, object], what: str, arg: str
) -> list[str]:
    if isinstance(keys, str):
        raise TypeError(
            f"{arg} must be a sequence of names, got the string {keys!r}; use [{keys!r}]"
        )
    out = list(dict.fromkeys(keys))
    for key in out:
        if key not in available:
            raise BatchError(f"unknown {what} {key!r}; available: {list(available)!r}")
    return out


def check_same_columns(
    what: str, first: Mapping[str, object], other: Mapping[str, object], part: int
) -> None:
    if set(first) != set(other):
        missing = sorted(set(first) - set(other))
        extra = sorted(set(other) - set(first))
        raise BatchError(
            f"cannot concat: part {part} has {what} columns {sorted(other)!r} but part 0 has "
            f"{sorted(first)!r} (missing: {missing!r}, extra: {extra!r}); select or pop the "
            "same columns in every part"
        )


def normalize_index(idx: object, length: int) -> torch.Tensor:
    """Turn a list / ndarray / tensor of ints or bools into a 1-D CPU int64 index tensor."""
    if isinstance(idx, torch.Tensor):
        index = idx.detach().cpu()
        if index.is_floating_point() or index.is_complex():
            raise TypeError(f"index tensors must be integer or bool, got dtype {index.dtype}")
    elif isinstance(idx, np.ndarray | list | tuple):
        array = np.asarray(idx)
        if array.size == 0:
            array = array.astype(np.int64).reshape(array.shape)
        if array.dtype.kind not in "biu":
            raise TypeError(f"index arrays must hold ints or bools, got dtype {array.dtype}")
        index = torch.from_numpy(array.astype(np.bool_ if array.dtype.kind == "b" else np.int64))
    else:
        raise TypeError(
            f"cannot select rows with {type(idx).__name__}; use a list of ints, a bool mask, an "
            "ndarray or a tensor"
        )
    if index.ndim != 1:
        raise IndexError(f"a row index must be 1-D, got shape {tuple(index.shape)}")
    if index.dtype == torch.bool:
        if index.numel() != length:
            raise IndexError(
                f"bool mask has length {index.numel()} but the batch has length {length}"
            )
        return index.nonzero().reshape(-1)
    index = index.to(torch.int64)
    if index.numel():
        bad = (index < -length) | (index >= length)
        if bool(bad.any()):
            value = int(index[bad][0])
            raise IndexError(f"row index {value} is out of range for a batch of length {length}")
    return torch.where(index < 0, index + length, index)
