"""Deep, NaN-aware equality for batch columns and meta values (:meth:`runtime.Batch.equals`)."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch

from runtime import _batch_jagged as jagged

__all__ = ["deep_equal"]


def deep_equal(a: object, b: object) -> bool:
    """Structural equality: tensors and arrays by dtype, shape and values (NaN equals NaN at
    the same place), dicts by keys and values, lists and tuples element-wise, floats with NaN
    equal to NaN, anything else by ``==`` (an ambiguous or failing ``==`` counts as unequal)."""
    if a is b:
        return True
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
            return False
        return _tensors_equal(a, b)
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return _arrays_equal(a, b)
    if isinstance(a, float | np.floating) and isinstance(b, float | np.floating):
        return bool(a == b) or (math.isnan(a) and math.isnan(b))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        if set(a) != set(b):
            return False
        return all(deep_equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        if type(a) is not type(b) or len(a) != len(b):
            return False
        return all(deep_equal(x, y) for x, y in zip(a, b, strict=True))
    try:
        return bool(a == b)
    except (TypeError, ValueError, RuntimeError):
        return False


def _tensors_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Dense tensors by dtype, shape, device and NaN-aware values; jagged ones by dtype,
    device, row lengths and values; a dense and a jagged tensor are never equal."""
    if jagged.is_jagged(a) or jagged.is_jagged(b):
        if not (jagged.is_jagged(a) and jagged.is_jagged(b)):
            return False
        values = jagged.equal_structure(a, b)
        return values is not None and _tensors_equal(*values)
    if a.dtype != b.dtype or a.shape != b.shape or a.device != b.device:
        return False
    if torch.equal(a, b):
        return True
    if a.is_floating_point() or a.is_complex():
        same = (a == b) | (torch.isnan(a) & torch.isnan(b))
        return bool(same.all())
    return False


def _arrays_equal(a: object, b: object) -> bool:
    if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)):
        return False
    if a.shape != b.shape:
        return False
    if a.dtype.hasobject or b.dtype.hasobject:
        if a.dtype != b.dtype:
            return False
        return all(deep_equal(x, y) for x, y in zip(a.reshape(-1), b.reshape(-1), strict=True))
    if a.dtype != b.dtype:
        return False
    return bool(np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))
