"""The batch wire format: how a :class:`~runtime.Batch` is pickled and rebuilt.

Pickling is self-describing and cheap. ``Batch.__reduce_ex__`` emits a small versioned
payload (:func:`encode_payload`: ``{"format": "runtime.batch/1", ...}``) that records every
column's dtype and shape. With pickle protocol 5 each tensor, and each numpy array without
Python objects, travels as one out-of-band :class:`pickle.PickleBuffer` over its raw bytes
(bfloat16, bool, complex and every other dtype alike: the bytes are shipped as ``uint8`` and
re-viewed with the recorded dtype), so a transport that supports out-of-band buffers (Ray,
shared memory) never copies tensor data into the pickle stream. With protocol < 5 the same
bytes travel in-band. Only a tensor's own elements are shipped, never the rest of the storage
it is a view of. Object arrays and ``meta`` are pickled normally. The receiver decodes from
the payload alone (never from its own environment): tensors arrive detached and on the CPU.
A received buffer is used without a copy when it is writable and aligned; a read-only buffer
(for example an object-store mapping) is copied once, because torch tensors over read-only
memory are unsafe (and ``torch.from_numpy`` warns about them).
"""

from __future__ import annotations

import math
import operator
import pickle
from collections.abc import Mapping
from typing import Any, SupportsIndex

import numpy as np
import numpy.typing as npt
import torch

from runtime import _batch_jagged as jagged
from runtime.errors import BatchError

__all__ = ["WIRE_FORMAT", "decode_payload", "encode_payload"]

_Array = npt.NDArray[Any]

WIRE_FORMAT = "runtime.batch/2"
"""The format this runtime writes. It reads it and ``runtime.batch/1`` (the same payload
without jagged columns)."""

_READABLE = frozenset({"runtime.batch/1", WIRE_FORMAT})


def encode_payload(
    tensors: Mapping[str, torch.Tensor],
    non_tensors: Mapping[str, _Array],
    meta: Mapping[str, object],
    protocol: SupportsIndex,
) -> dict[str, object]:
    """The versioned payload for one batch's columns and meta (see the module docstring)."""
    out_of_band = operator.index(protocol) >= 5
    return {
        "format": WIRE_FORMAT,
        "tensors": [_encode_tensor(k, t, out_of_band) for k, t in tensors.items()],
        "non_tensors": [_encode_array(k, a, out_of_band) for k, a in non_tensors.items()],
        "meta": meta,
    }


def decode_payload(
    payload: Mapping[str, Any],
) -> tuple[dict[str, torch.Tensor], dict[str, _Array], dict[str, object]]:
    """``(tensors, non_tensors, meta)`` decoded from a payload made by :func:`encode_payload`;
    depends on the payload alone."""
    fmt = payload.get("format") if isinstance(payload, Mapping) else None
    if fmt not in _READABLE:
        raise BatchError(
            f"unknown batch wire format {fmt!r}; this runtime reads {sorted(_READABLE)!r}. The "
            "sender runs a different runtime version: install the same version on both sides"
        )
    tensors = {entry["name"]: _decode_tensor(entry) for entry in payload["tensors"]}
    arrays = {entry["name"]: _decode_array(entry) for entry in payload["non_tensors"]}
    meta: dict[str, object] = payload["meta"]
    return tensors, arrays, meta


def _encode_tensor(name: str, t: torch.Tensor, out_of_band: bool) -> dict[str, object]:
    entry: dict[str, object] = {"name": name, "dtype": str(t.dtype).removeprefix("torch.")}
    if jagged.is_jagged(t):
        values, offsets = jagged.parts(t)
        entry["layout"] = "jagged"
        entry["rows"] = int(offsets.numel()) - 1
        entry["offsets"] = _wrap_bytes(_tensor_bytes(offsets.to(torch.int64)), out_of_band)
        t = values
    entry["shape"] = tuple(int(s) for s in t.shape)
    entry["data"] = _wrap_bytes(_tensor_bytes(t), out_of_band)
    return entry


def _encode_array(name: str, a: _Array, out_of_band: bool) -> dict[str, object]:
    if a.dtype.hasobject or a.dtype.itemsize == 0:
        return {"name": name, "encoding": "pickle", "array": a}
    raw = np.ascontiguousarray(a).reshape(-1).view(np.uint8)
    return {
        "name": name,
        "encoding": "raw",
        "dtype": a.dtype,
        "shape": a.shape,
        "data": _wrap_bytes(raw, out_of_band),
    }


def _decode_tensor(entry: Mapping[str, Any]) -> torch.Tensor:
    name = entry["name"]
    values = _decode_dense(
        entry["data"],
        _torch_dtype(entry["dtype"]),
        tuple(entry["shape"]),
        f"tensor column {name!r}",
    )
    layout = entry.get("layout", "strided")
    if layout == "strided":
        return values
    if layout != "jagged":
        raise BatchError(f"corrupt batch payload: tensor column {name!r} has layout {layout!r}")
    rows = int(entry["rows"])
    offsets = _decode_dense(entry["offsets"], torch.int64, (rows + 1,), f"offsets of {name!r}")
    if rows < 0 or int(offsets[0]) != 0 or int(offsets[-1]) != values.shape[0]:
        raise BatchError(
            f"corrupt batch payload: jagged column {name!r} has offsets that do not span its "
            f"{values.shape[0]} values"
        )
    return jagged.build(values, offsets)


def _decode_dense(
    data: object, dtype: torch.dtype, shape: tuple[int, ...], what: str
) -> torch.Tensor:
    itemsize = torch.empty((), dtype=dtype).element_size()
    nbytes = math.prod(shape) * itemsize
    raw = _receive_bytes(data, nbytes, itemsize, what)
    if nbytes == 0:
        return torch.empty(shape, dtype=dtype)
    return torch.from_numpy(raw).view(dtype).reshape(shape)


def _decode_array(entry: Mapping[str, Any]) -> _Array:
    name = entry["name"]
    if entry["encoding"] == "pickle":
        pickled: _Array = entry["array"]
        return pickled
    np_dtype = np.dtype(entry["dtype"])
    shape = tuple(entry["shape"])
    nbytes = math.prod(shape) * np_dtype.itemsize
    raw = _receive_bytes(entry["data"], nbytes, np_dtype.alignment, f"non-tensor {name!r}")
    array: _Array = raw.view(np_dtype).reshape(shape)
    return array


def _tensor_bytes(t: torch.Tensor) -> _Array:
    """The tensor's own elements as a flat uint8 array (no copy for contiguous CPU tensors)."""
    flat = t.detach().cpu().resolve_conj().resolve_neg().contiguous().reshape(-1)
    raw: _Array = flat.view(torch.uint8).numpy()
    return raw


def _wrap_bytes(raw: _Array, out_of_band: bool) -> pickle.PickleBuffer | bytes:
    return pickle.PickleBuffer(raw.data) if out_of_band else raw.tobytes()


def _receive_bytes(data: Any, nbytes: int, alignment: int, what: str) -> _Array:
    """A writable, aligned uint8 array over ``data`` (any object with the buffer protocol);
    copies only when the buffer is read-only or misaligned (torch must not wrap read-only
    memory)."""
    try:
        view = memoryview(data).cast("B")
    except (TypeError, ValueError) as exc:
        raise BatchError(
            f"corrupt batch payload: {what} data is not a contiguous buffer ({type(data).__name__})"
        ) from exc
    raw = np.frombuffer(view, dtype=np.uint8)
    if raw.size != nbytes:
        raise BatchError(f"corrupt batch payload: {what} has {raw.size} bytes, expected {nbytes}")
    if not raw.flags.writeable or raw.ctypes.data % max(alignment, 1) != 0:
        raw = raw.copy()
    return raw


def _torch_dtype(name: object) -> torch.dtype:
    dtype = getattr(torch, name, None) if isinstance(name, str) else None
    if not isinstance(dtype, torch.dtype):
        raise BatchError(f"batch payload names an unknown torch dtype {name!r}")
    return dtype
