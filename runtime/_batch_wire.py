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

**The copy rule for received buffers.** A received buffer is never copied on arrival (only a
misaligned one is, which no transport we know produces). A writable buffer simply becomes the
column's memory. A read-only buffer (an object store's shared mapping, ``bytes``) is wrapped
as it is and its column is marked *borrowed*; then:

* the batch's own operations read borrowed columns freely and never write to them: ``len``,
  ``repr``, ``equals``, pickling again (a worker that returns its input forwards the store's
  bytes without a copy), and the operations that make fresh storage (``concat``,
  ``select_idxs``, ``repeat``, padding, ``deepcopy``), whose output is the one copy - so the
  driver's concatenation of the ranks' results copies each result buffer exactly once;
* views (``slice``, ``select``, ``rename``, ``chunk``, ``union``, ...) stay borrowed;
* user code never sees borrowed memory: the first read of :attr:`Batch.tensors`,
  :attr:`Batch.non_tensors` or a row copies that kind's borrowed columns into memory the
  batch owns (once), so in-place writes are always allowed and always private.

Why not hand out tensors over the read-only memory: torch has no read-only tensors. Over a
read-only buffer ``torch.from_numpy`` only warns, and an in-place op then writes straight into
the object store, so every later reader of that object sees the change (tested in
``tests/test_batch_transport.py``). Copying on first access instead of at receive time also
keeps the rule "each rank gets a private copy": ranks on one node may map the same stored
object, but a rank only writes after its own copy. Methods need no flag to mutate their
inputs. A borrowed column keeps its received buffer (and so the stored object) alive until
the column is copied or dropped.

:func:`receive_stats` counts received buffers, borrowed ones and copies of received data, per
process, for tests and benchmarks.
"""

from __future__ import annotations

import math
import operator
import pickle
import threading
from collections.abc import Mapping
from typing import Any, NamedTuple, SupportsIndex

import numpy as np
import numpy.typing as npt
import torch

from runtime import _batch_jagged as jagged
from runtime.errors import BatchError

__all__ = [
    "WIRE_FORMAT",
    "Decoded",
    "copy_borrowed",
    "copy_borrowed_array",
    "decode_payload",
    "encode_payload",
    "receive_stats",
]

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


class Decoded(NamedTuple):
    """A decoded batch: its columns, its meta, and the names of the columns that are views of
    read-only received memory (the caller must copy those before anyone may write to them)."""

    tensors: dict[str, torch.Tensor]
    non_tensors: dict[str, _Array]
    meta: dict[str, object]
    borrowed: frozenset[str]


def decode_payload(payload: Mapping[str, Any]) -> Decoded:
    """The batch encoded in ``payload`` (made by :func:`encode_payload`); depends on the
    payload alone. Read-only buffers are wrapped, not copied (see the module docstring)."""
    fmt = payload.get("format") if isinstance(payload, Mapping) else None
    if fmt not in _READABLE:
        raise BatchError(
            f"unknown batch wire format {fmt!r}; this runtime reads {sorted(_READABLE)!r}. The "
            "sender runs a different runtime version: install the same version on both sides"
        )
    borrowed: set[str] = set()
    tensors = {entry["name"]: _decode_tensor(entry, borrowed) for entry in payload["tensors"]}
    arrays = {entry["name"]: _decode_array(entry, borrowed) for entry in payload["non_tensors"]}
    meta: dict[str, object] = payload["meta"]
    return Decoded(tensors, arrays, meta, frozenset(borrowed))


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


def _decode_tensor(entry: Mapping[str, Any], borrowed: set[str]) -> torch.Tensor:
    name = entry["name"]
    values = _decode_dense(
        entry["data"],
        _torch_dtype(entry["dtype"]),
        tuple(entry["shape"]),
        f"tensor column {name!r}",
        name,
        borrowed,
    )
    layout = entry.get("layout", "strided")
    if layout == "strided":
        return values
    if layout != "jagged":
        raise BatchError(f"corrupt batch payload: tensor column {name!r} has layout {layout!r}")
    rows = int(entry["rows"])
    offsets = _decode_dense(
        entry["offsets"], torch.int64, (rows + 1,), f"offsets of {name!r}", name, borrowed
    )
    if rows < 0 or int(offsets[0]) != 0 or int(offsets[-1]) != values.shape[0]:
        raise BatchError(
            f"corrupt batch payload: jagged column {name!r} has offsets that do not span its "
            f"{values.shape[0]} values"
        )
    return jagged.build(values, offsets)


def _decode_dense(
    data: object,
    dtype: torch.dtype,
    shape: tuple[int, ...],
    what: str,
    name: str,
    borrowed: set[str],
) -> torch.Tensor:
    itemsize = torch.empty((), dtype=dtype).element_size()
    nbytes = math.prod(shape) * itemsize
    raw = _receive_bytes(data, nbytes, itemsize, what)
    if nbytes == 0:
        return torch.empty(shape, dtype=dtype)
    if raw.flags.writeable:
        flat = torch.from_numpy(raw)
    else:
        borrowed.add(name)
        flat = _wrap_read_only(raw)
    return flat.view(dtype).reshape(shape)


def _decode_array(entry: Mapping[str, Any], borrowed: set[str]) -> _Array:
    name = entry["name"]
    if entry["encoding"] == "pickle":
        pickled: _Array = entry["array"]
        return pickled
    np_dtype = np.dtype(entry["dtype"])
    shape = tuple(entry["shape"])
    nbytes = math.prod(shape) * np_dtype.itemsize
    raw = _receive_bytes(entry["data"], nbytes, np_dtype.alignment, f"non-tensor {name!r}")
    if not raw.flags.writeable:
        borrowed.add(name)
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
    """An aligned uint8 array over ``data`` (any object with the buffer protocol), read-only
    when ``data`` is; copies only a misaligned buffer."""
    try:
        view = memoryview(data).cast("B")
    except (TypeError, ValueError) as exc:
        raise BatchError(
            f"corrupt batch payload: {what} data is not a contiguous buffer ({type(data).__name__})"
        ) from exc
    raw = np.frombuffer(view, dtype=np.uint8)
    if raw.size != nbytes:
        raise BatchError(f"corrupt batch payload: {what} has {raw.size} bytes, expected {nbytes}")
    _count("buffers")
    if raw.ctypes.data % max(alignment, 1) != 0:
        _count("copies", raw.nbytes)
        return raw.copy()
    if not raw.flags.writeable:
        _count("borrowed")
    return raw


def _wrap_read_only(raw: _Array) -> torch.Tensor:
    """A uint8 tensor over read-only memory, without a copy and without torch's warning.

    torch has no read-only tensors (``torch.from_numpy`` only warns that writing is undefined
    behaviour), so this is safe only because of the rule in the module docstring: the tensor
    stays inside the batch, which no operation writes to, until the batch copies it
    (:func:`copy_borrowed`) before handing it to user code.
    """
    return torch.from_numpy(np.asarray(_Window(raw)))


class _Window:
    """``raw``'s memory presented to numpy as writable; holds ``raw`` (and so the received
    buffer) alive for as long as any array or tensor over it lives."""

    def __init__(self, raw: _Array) -> None:
        self.owner = raw
        self.__array_interface__ = {
            "shape": (raw.nbytes,),
            "typestr": "|u1",
            "data": (raw.ctypes.data, False),
            "version": 3,
        }


def copy_borrowed(value: torch.Tensor) -> torch.Tensor:
    """A copy of a tensor column over borrowed memory (dense or jagged), counted."""
    if jagged.is_jagged(value):
        values, offsets = jagged.parts(value)
        _count("copies", _nbytes(values) + _nbytes(offsets))
        return jagged.build(values.clone(), offsets.clone())
    _count("copies", _nbytes(value))
    return value.clone()


def copy_borrowed_array(value: _Array) -> _Array:
    """A writable copy of a non-tensor column over borrowed memory, counted."""
    _count("copies", value.nbytes)
    return value.copy()


_stats_lock = threading.Lock()
_stats = {"buffers": 0, "borrowed": 0, "copies": 0, "copied_bytes": 0}


def _count(key: str, nbytes: int = 0) -> None:
    with _stats_lock:
        _stats[key] += 1
        _stats["copied_bytes"] += nbytes


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def receive_stats() -> dict[str, int]:
    """Counters of this process since it started (read two snapshots and subtract):
    ``buffers`` received, ``borrowed`` (read-only, wrapped without a copy), ``copies`` made
    of received data (a misaligned buffer at receive time, or a borrowed column copied before
    user code may write to it) and the ``copied_bytes`` of those copies. A concatenation of
    received parts is not counted here: it is the operation's own output."""
    with _stats_lock:
        return dict(_stats)


def _torch_dtype(name: object) -> torch.dtype:
    dtype = getattr(torch, name, None) if isinstance(name, str) else None
    if not isinstance(dtype, torch.dtype):
        raise BatchError(f"batch payload names an unknown torch dtype {name!r}")
    return dtype
