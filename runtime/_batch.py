"""The batch type: named columns that share a leading batch dimension.

A :class:`Batch` is what flows between the controller and its workers. It is verl's
``DataProto`` without ``tensordict`` and without any backend:

* ``tensors``: ``dict[str, torch.Tensor]``, dense (strided) tensors with ``ndim >= 1``, or
  jagged nested tensors (``layout=torch.jagged``, ragged at dimension 1: one row of varying
  length per batch entry). Every operation below carries jagged columns (row ``i`` of one is
  a dense view of shape ``(length_i, ...)``); :mod:`runtime._batch_jagged` says how;
* ``non_tensors``: ``dict[str, numpy.ndarray]``, usually object arrays (uids, prompts, dicts),
  but any ndarray with ``ndim >= 1`` is allowed;
* ``meta``: ``dict[str, object]``, batch-level information (``"metrics"``, flags, temperatures).

**Contract.**

* Every tensor and every array has the same leading dimension, ``len(batch)``. This is checked
  at construction and a mismatch raises :class:`~runtime.errors.BatchError` naming the column,
  its length and the expected length. A column name is either a tensor or a non-tensor, never
  both. A batch without columns has length 0.
* Operations return **new** batches and never modify their input. The only exception is
  :meth:`Batch.pop`, which by definition removes columns from ``self``. (Unlike verl,
  :meth:`Batch.union` and :meth:`Batch.reorder` are not in place.) New batches share column
  objects with their source where that is free: :meth:`select`, :meth:`rename` and
  :meth:`to` share tensors, and :meth:`slice`/:meth:`split`/``batch[a:b]``/:meth:`unpad` return
  views, exactly like torch and numpy slicing. Index selection, :meth:`repeat`,
  :meth:`concat` and padding produce fresh storage. ``meta`` is always shallow-copied.
* :meth:`chunk` returns ``n`` equal chunks whose tensors and arrays **own exactly their
  storage** (a view of a larger buffer is cloned), so shipping a chunk never drags the rest
  of the batch along through any transport. ``chunk`` requires ``len % n == 0``; pad first
  with :meth:`pad_to_multiple` and drop the padding with :meth:`unpad` (the dispatcher does
  this for a method registered with ``pad=True`` or a group view from ``with_padding()``).
* :meth:`concat` gathers ``meta["metrics"]`` into a dict of lists; every other meta key must
  be equal in the parts that carry it. :meth:`union` requires conflicting keys to be equal.
  Equality is deep and NaN-aware (a NaN equals a NaN at the same place): tensors and arrays
  must agree in dtype, shape and values; dicts, lists and tuples are compared element-wise.
* Errors about inconsistent or conflicting data are :class:`~runtime.errors.BatchError`
  (a ``ValueError``); bad index values are ``IndexError``; arguments of the wrong type are
  ``TypeError``.

**Wire format.** Pickling goes through a small versioned payload with out-of-band buffers
for tensor and numeric array data; :mod:`runtime._batch_wire` states the format and the copy
rule for received buffers: read-only ones (an object store's memory) are not copied on
arrival; a column over one is copied once, by the first operation that makes fresh storage
from it (``concat``...) or on the first read of :attr:`Batch.tensors` / :attr:`Batch.non_tensors`
/ a row, whichever comes first. User code only ever sees memory the batch owns.

**No padding switch here.** Whether a group call pads is a setting of the method
(``@register(..., pad=True)``) or of the group view (``group.with_padding()``), never of the
data: a batch behaves the same wherever it goes.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence, Set
from typing import Any, SupportsIndex, TypeVar, overload

import numpy as np
import numpy.typing as npt
import torch

from runtime import _batch_columns as columns
from runtime._batch_checks import (
    as_column_array,
    check_columns,
    check_keys,
    check_same_columns,
    describe_tensor,
    normalize_index,
)
from runtime._batch_equal import deep_equal
from runtime._batch_wire import (
    copy_borrowed,
    copy_borrowed_array,
    decode_payload,
    encode_payload,
)
from runtime.errors import BatchError

__all__ = ["Batch"]

_Array = npt.NDArray[Any]
_Index = Sequence[int] | npt.NDArray[Any] | torch.Tensor
_V = TypeVar("_V")

_OWN_LOCK = threading.Lock()
"""Serialises copying borrowed columns (rare, and a copy is far slower than the lock)."""


class Batch:
    """Named tensors and numpy arrays sharing a leading batch dimension, plus a meta dict.

    See the module docstring for the full contract. Equality is identity; compare contents
    with :meth:`equals`.
    """

    __slots__ = ("_borrowed", "_non_tensors", "_tensors", "meta")

    _tensors: dict[str, torch.Tensor]
    _non_tensors: dict[str, _Array]
    _borrowed: frozenset[str]
    meta: dict[str, object]

    def __init__(
        self,
        tensors: Mapping[str, torch.Tensor] | None = None,
        non_tensors: Mapping[str, _Array] | None = None,
        meta: Mapping[str, object] | None = None,
    ) -> None:
        self._tensors = dict(tensors) if tensors is not None else {}
        self._non_tensors = dict(non_tensors) if non_tensors is not None else {}
        self.meta = dict(meta) if meta is not None else {}
        self._borrowed = frozenset()
        self.check_consistency()

    @property
    def tensors(self) -> dict[str, torch.Tensor]:
        """The tensor columns (a dict you may edit; call :meth:`check_consistency` after).

        A column that still views read-only received memory is copied here, on first access
        (see the copy rule in :mod:`runtime._batch_wire`), so every tensor you get is
        writable memory of this batch's own.
        """
        if self._borrowed:
            self._own_borrowed(tensors=True)
        return self._tensors

    @property
    def non_tensors(self) -> dict[str, _Array]:
        """The non-tensor columns (numpy arrays); received read-only ones are copied on first
        access, like :attr:`tensors`."""
        if self._borrowed:
            self._own_borrowed(tensors=False)
        return self._non_tensors

    def _own_borrowed(self, *, tensors: bool) -> None:
        """Copy the borrowed columns of one kind into memory of this batch's own (under a lock,
        so two threads reading the same batch get the same copy)."""
        with _OWN_LOCK:
            kind: dict[str, Any] = self._tensors if tensors else self._non_tensors
            done = {name for name in self._borrowed if name in kind}
            for name in done:
                if tensors:
                    self._tensors[name] = copy_borrowed(self._tensors[name])
                else:
                    self._non_tensors[name] = copy_borrowed_array(self._non_tensors[name])
            self._borrowed = self._borrowed - done

    def _derive(
        self,
        tensors: Mapping[str, torch.Tensor],
        non_tensors: Mapping[str, _Array],
        meta: Mapping[str, object],
        *,
        sources: Sequence[Batch] = (),
        renamed: tuple[str, str] | None = None,
        fresh: Set[str] = frozenset(),
    ) -> Batch:
        """A batch over columns shared with (or viewing) ``self`` and ``sources``: a name that
        was borrowed in any of them stays borrowed (after ``renamed = (old, new)``), unless
        the caller made that column in ``fresh`` storage."""
        out = Batch(tensors, non_tensors, meta)
        borrowed = set(self._borrowed).union(*(b._borrowed for b in sources))
        if renamed is not None and renamed[0] in borrowed:
            borrowed.add(renamed[1])
        names = out._tensors.keys() | out._non_tensors.keys()
        out._borrowed = frozenset((borrowed & names) - fresh)
        return out

    # ------------------------------------------------------------------ construction

    def check_consistency(self) -> None:
        """Raise :class:`BatchError` unless every column is well formed and equally long.

        Runs at construction. Call it again after editing the column dicts directly.
        """
        check_columns(self._tensors, self._non_tensors, self.meta)

    @classmethod
    def from_dict(
        cls,
        tensors: Mapping[str, torch.Tensor] | None = None,
        non_tensors: Mapping[str, _Array | Sequence[object]] | None = None,
        meta: Mapping[str, object] | None = None,
    ) -> Batch:
        """Build a batch, converting list or tuple non-tensor columns to 1-D object arrays.

        Each list element becomes one row, even when the elements are equal-length lists.
        """
        arrays = {k: as_column_array(k, v) for k, v in (non_tensors or {}).items()}
        return cls(tensors, arrays, dict(meta or {}))

    @classmethod
    def from_single_dict(
        cls,
        data: Mapping[str, torch.Tensor | _Array | Sequence[object]],
        meta: Mapping[str, object] | None = None,
    ) -> Batch:
        """Build a batch from one mixed dict: tensors go to ``tensors``, the rest to
        ``non_tensors`` (ndarrays as they are, lists and tuples as object arrays)."""
        tensors: dict[str, torch.Tensor] = {}
        others: dict[str, _Array | Sequence[object]] = {}
        for key, value in data.items():
            if isinstance(value, torch.Tensor):
                tensors[key] = value
            else:
                others[key] = value
        return cls.from_dict(tensors, others, meta)

    # ------------------------------------------------------------------ basic protocol

    def __len__(self) -> int:
        for tensor in self._tensors.values():
            return int(tensor.shape[0])
        for array in self._non_tensors.values():
            return int(array.shape[0])
        return 0

    @overload
    def __getitem__(self, item: int | np.integer[Any]) -> dict[str, object]: ...

    @overload
    def __getitem__(self, item: slice | _Index) -> Batch: ...

    def __getitem__(
        self, item: int | np.integer[Any] | slice | _Index
    ) -> dict[str, object] | Batch:
        """Index the batch.

        * ``batch[i]`` (an ``int``): a plain ``dict`` mapping every column name to row ``i``
          (``tensor[i]``, a view, and ``array[i]``, the element or numpy scalar). Not a batch.
        * ``batch[a:b:s]``: :meth:`slice` (views).
        * ``batch[idx]`` with a list of ints or bools, an int or bool ndarray, or an integer or
          bool tensor: :meth:`select_idxs` (copies).
        """
        if isinstance(item, slice):
            return self.slice(item.start, item.stop, item.step)
        if isinstance(item, bool | np.bool_):
            raise TypeError(
                f"cannot index a Batch with a bool ({item!r}); use an int row, a slice or a mask"
            )
        if isinstance(item, int | np.integer):
            return self._row(int(item))
        if isinstance(item, torch.Tensor | np.ndarray | list | tuple):
            return self.select_idxs(item)
        raise TypeError(
            f"cannot index a Batch with {type(item).__name__} ({item!r}); use an int, a slice, "
            "a list of ints, a bool mask, an ndarray or a tensor"
        )

    def __iter__(self) -> Iterator[dict[str, object]]:
        """Iterate over rows, each as the dict ``batch[i]`` returns."""
        for i in range(len(self)):
            yield self._row(i)

    def _row(self, i: int) -> dict[str, object]:
        n = len(self)
        j = i + n if i < 0 else i
        if not 0 <= j < n:
            raise IndexError(f"row {i} is out of range for a batch of length {n}")
        row: dict[str, object] = {k: columns.row(t, j) for k, t in self.tensors.items()}
        row.update({k: a[j] for k, a in self.non_tensors.items()})
        return row

    def __repr__(self) -> str:
        tensors = ", ".join(f"{k!r}: {describe_tensor(t)}" for k, t in self._tensors.items())
        arrays = ", ".join(f"{k!r}: {a.dtype}{list(a.shape)}" for k, a in self._non_tensors.items())
        return (
            f"Batch(len={len(self)}, tensors={{{tensors}}}, non_tensors={{{arrays}}}, "
            f"meta_keys={list(self.meta)!r})"
        )

    def equals(self, other: object) -> bool:
        """Deep, NaN-aware content equality: same column names, dtypes, shapes, devices and
        values, and equal meta. (``==`` stays identity.)"""
        if not isinstance(other, Batch):
            return False
        if set(self._tensors) != set(other._tensors):
            return False
        if set(self._non_tensors) != set(other._non_tensors):
            return False
        if set(self.meta) != set(other.meta):
            return False
        if not all(deep_equal(t, other._tensors[k]) for k, t in self._tensors.items()):
            return False
        if not all(deep_equal(a, other._non_tensors[k]) for k, a in self._non_tensors.items()):
            return False
        return all(deep_equal(v, other.meta[k]) for k, v in self.meta.items())

    def __copy__(self) -> Batch:
        return self._derive(self._tensors, self._non_tensors, self.meta)

    def __deepcopy__(self, memo: dict[int, object]) -> Batch:
        return Batch(
            {k: columns.clone(t) for k, t in self._tensors.items()},
            copy.deepcopy(self._non_tensors, memo),
            copy.deepcopy(self.meta, memo),
        )

    # ------------------------------------------------------------------ row selection

    def slice(
        self, start: int | None = None, stop: int | None = None, step: int | None = 1
    ) -> Batch:
        """Rows ``start:stop:step`` with Python slice semantics (negative bounds count from
        the end). A positive step returns views; a negative step returns copies."""
        length = len(self)
        if step == 0:
            raise BatchError("Batch.slice step must not be zero")
        lo, hi, st = slice(start, stop, step).indices(length)
        if st < 0:
            return self.select_idxs(list(range(lo, hi, st)))
        return self._derive(
            {k: columns.slice_rows(t, lo, hi, st) for k, t in self._tensors.items()},
            {k: a[lo:hi:st] for k, a in self._non_tensors.items()},
            self.meta,
        )

    def select_idxs(self, idx: _Index) -> Batch:
        """Rows picked by ``idx``: ints (negative allowed, repeats allowed) or a bool mask of
        length ``len(self)``, given as a list, an ndarray or a tensor. Returns copies."""
        index = normalize_index(idx, len(self))
        index_np = index.numpy()
        return Batch(
            {k: columns.take_rows(t, index) for k, t in self._tensors.items()},
            {k: a[index_np] for k, a in self._non_tensors.items()},
            self.meta,
        )

    def reorder(self, idx: _Index) -> Batch:
        """A new batch with rows permuted: row ``i`` of the result is row ``idx[i]`` of self.
        ``idx`` must be a permutation of ``range(len(self))``."""
        index = normalize_index(idx, len(self))
        if index.numel() != len(self) or not torch.equal(
            torch.sort(index).values, torch.arange(len(self))
        ):
            raise BatchError(
                f"Batch.reorder needs a permutation of range({len(self)}), got "
                f"{index.tolist()!r}; use select_idxs to pick or repeat rows"
            )
        return self.select_idxs(index)

    def chunk(self, n: int, *, copy: bool = True) -> list[Batch]:
        """Exactly ``n`` equal chunks, in order. Requires ``len(self) % n == 0``.

        By default every tensor and array in a chunk owns exactly its storage (views are
        cloned), so a chunk never carries or aliases the rest of the batch. ``copy=False``
        returns views instead (no copy); the wire format still ships only each view's own
        elements, which is what the dispatcher uses before handing chunks to a backend that
        serializes them. ``meta`` is shallow-copied per chunk.
        """
        if n < 1:
            raise BatchError(f"Batch.chunk needs n >= 1, got {n!r}")
        length = len(self)
        if length % n != 0:
            raise BatchError(
                f"cannot chunk a batch of length {length} into {n} equal chunks "
                f"({length} % {n} == {length % n}); pad first with "
                f"`padded, pad = batch.pad_to_multiple({n})` and drop the padding from the result "
                "with `.unpad(pad)`, or let a group call do it (@register(..., pad=True) on the "
                "method, or group.with_padding())"
            )
        size = length // n
        return [self._chunk_at(i * size, (i + 1) * size, copy) for i in range(n)]

    def _chunk_at(self, lo: int, hi: int, copy: bool) -> Batch:
        views = {k: columns.slice_rows(t, lo, hi, 1) for k, t in self._tensors.items()}
        arrays = {k: a[lo:hi] for k, a in self._non_tensors.items()}
        if not copy:
            return self._derive(views, arrays, self.meta)
        tensors = {k: columns.own(v) for k, v in views.items()}
        owned = {k: _own_array(a) for k, a in arrays.items()}
        fresh = {k for k, v in views.items() if tensors[k] is not v}
        fresh.update(k for k, a in arrays.items() if owned[k] is not a)
        return self._derive(tensors, owned, self.meta, fresh=fresh)

    def split(self, size: int) -> list[Batch]:
        """Consecutive pieces of ``size`` rows (views); the last one may be shorter. An empty
        batch gives an empty list."""
        if size < 1:
            raise BatchError(f"Batch.split needs size >= 1, got {size!r}")
        return [self.slice(i, i + size) for i in range(0, len(self), size)]

    # ------------------------------------------------------------------ columns

    def select(
        self,
        tensor_keys: Sequence[str] | None = None,
        non_tensor_keys: Sequence[str] | None = None,
        meta_keys: Sequence[str] | None = None,
    ) -> Batch:
        """A batch with only the named columns and meta keys (``None`` keeps all of a kind).
        Column objects are shared, not copied."""
        t_keys = (
            list(self._tensors)
            if tensor_keys is None
            else check_keys(tensor_keys, self._tensors, "tensor column", "tensor_keys")
        )
        n_keys = (
            list(self._non_tensors)
            if non_tensor_keys is None
            else check_keys(
                non_tensor_keys, self._non_tensors, "non-tensor column", "non_tensor_keys"
            )
        )
        m_keys = (
            list(self.meta)
            if meta_keys is None
            else check_keys(meta_keys, self.meta, "meta key", "meta_keys")
        )
        return self._derive(
            {k: self._tensors[k] for k in t_keys},
            {k: self._non_tensors[k] for k in n_keys},
            {k: self.meta[k] for k in m_keys},
        )

    def pop(
        self,
        tensor_keys: Sequence[str] = (),
        non_tensor_keys: Sequence[str] = (),
        meta_keys: Sequence[str] = (),
    ) -> Batch:
        """Remove the named columns and meta keys from ``self`` and return them as a batch.

        All keys are checked before anything is removed, so a failed pop changes nothing.
        """
        t_keys = check_keys(tensor_keys, self._tensors, "tensor column", "tensor_keys")
        n_keys = check_keys(
            non_tensor_keys, self._non_tensors, "non-tensor column", "non_tensor_keys"
        )
        m_keys = check_keys(meta_keys, self.meta, "meta key", "meta_keys")
        popped = self._derive(
            {k: self._tensors[k] for k in t_keys},
            {k: self._non_tensors[k] for k in n_keys},
            {k: self.meta[k] for k in m_keys},
        )
        for k in t_keys:
            del self._tensors[k]
        for k in n_keys:
            del self._non_tensors[k]
        for k in m_keys:
            del self.meta[k]
        self._borrowed = self._borrowed.difference(t_keys, n_keys)
        return popped

    def union(self, other: Batch) -> Batch:
        """A new batch with the columns and meta of both. Neither input changes.

        Lengths must match, unless one side has no columns at all (a meta-only batch). A key
        present on both sides must hold equal values (deep, NaN-aware); self's copy is kept.
        """
        if not isinstance(other, Batch):
            raise TypeError(f"Batch.union needs a Batch, got {type(other).__name__}")
        has_columns = bool(self._tensors or self._non_tensors)
        other_has_columns = bool(other._tensors or other._non_tensors)
        if has_columns and other_has_columns and len(self) != len(other):
            raise BatchError(
                f"cannot union batches of lengths {len(self)} and {len(other)}; select matching "
                "rows first"
            )
        tensors = _merged("tensor column", self._tensors, other._tensors, describe_tensor)
        arrays = _merged("non-tensor column", self._non_tensors, other._non_tensors, repr)
        meta = _merged("meta key", self.meta, other.meta, repr)
        for k in tensors.keys() & arrays.keys():
            kinds = ("tensor", "non-tensor") if k in self._tensors else ("non-tensor", "tensor")
            raise BatchError(
                f"cannot union: {k!r} is a {kinds[0]} column in self but a {kinds[1]} column in "
                "other; rename one of them"
            )
        return self._derive(tensors, arrays, meta, sources=[other])

    def rename(self, old: str, new: str) -> Batch:
        """A batch with column ``old`` (tensor or non-tensor) renamed to ``new``; column order
        is kept."""
        if old not in self._tensors and old not in self._non_tensors:
            raise BatchError(
                f"cannot rename {old!r}: no such column; available tensor columns: "
                f"{list(self._tensors)!r}, non-tensor columns: {list(self._non_tensors)!r}"
            )
        if new != old and (new in self._tensors or new in self._non_tensors):
            raise BatchError(
                f"cannot rename {old!r} to {new!r}: column {new!r} already exists; pop it first"
            )
        return self._derive(
            {(new if k == old else k): t for k, t in self._tensors.items()},
            {(new if k == old else k): a for k, a in self._non_tensors.items()},
            self.meta,
            renamed=(old, new),
        )

    def repeat(self, n: int, *, interleave: bool = True) -> Batch:
        """Each row ``n`` times: interleaved gives ``a a b b``, otherwise tiled ``a b a b``."""
        if n < 0:
            raise BatchError(f"Batch.repeat needs n >= 0, got {n!r}")
        tensors = {k: columns.repeat_rows(t, n, interleave) for k, t in self._tensors.items()}
        if interleave:
            arrays = {k: np.repeat(a, n, axis=0) for k, a in self._non_tensors.items()}
        else:
            arrays = {
                k: np.tile(a, (n,) + (1,) * (a.ndim - 1)) for k, a in self._non_tensors.items()
            }
        return Batch(tensors, arrays, self.meta)

    def to(self, device: torch.device | str) -> Batch:
        """A batch with every tensor moved to ``device`` (non-tensors are shared)."""
        moved = {k: columns.move(t, device) for k, t in self._tensors.items()}
        fresh = {k for k, t in moved.items() if t is not self._tensors[k]}
        return self._derive(moved, self._non_tensors, self.meta, fresh=fresh)

    @staticmethod
    def concat(batches: Sequence[Batch]) -> Batch:
        """Concatenate batches row-wise (``torch.cat`` / ``numpy.concatenate``).

        Every part must have the same tensor and non-tensor column names, and each column the
        same dtype, device and trailing shape. ``meta["metrics"]`` of the parts (a dict, or a
        list of dicts) is gathered into a dict of lists, ``{"loss": [part0, part1]}``. Every
        other meta key must be equal in all parts that carry it.
        """
        parts = list(batches)
        if not parts:
            raise BatchError("Batch.concat needs at least one batch, got an empty sequence")
        for i, part in enumerate(parts):
            if not isinstance(part, Batch):
                raise TypeError(f"Batch.concat: item {i} is a {type(part).__name__}, not a Batch")
        first = parts[0]
        for i, part in enumerate(parts[1:], start=1):
            check_same_columns("tensor", first._tensors, part._tensors, i)
            check_same_columns("non-tensor", first._non_tensors, part._non_tensors, i)
        tensors: dict[str, torch.Tensor] = {}
        for k in first._tensors:
            tensors[k] = columns.cat_rows(k, [p._tensors[k] for p in parts])
        arrays: dict[str, _Array] = {}
        for k, a0 in first._non_tensors.items():
            chunks = [p._non_tensors[k] for p in parts]
            for i, a in enumerate(chunks):
                if a.shape[1:] != a0.shape[1:]:
                    raise BatchError(
                        f"cannot concat non-tensor column {k!r}: part 0 has shape {a0.shape!r} "
                        f"but part {i} has shape {a.shape!r}; trailing shapes must match"
                    )
            arrays[k] = np.concatenate(chunks, axis=0)
        return Batch(tensors, arrays, _merge_meta(parts))

    # ------------------------------------------------------------------ padding

    def pad_to_multiple(self, n: int) -> tuple[Batch, int]:
        """``(padded, pad)``: a new batch whose length is the next multiple of ``n``, padded by
        repeating rows cyclically from the start (row ``len + j`` is row ``j % len``), and the
        number of rows added. ``pad`` may exceed ``len(self)``. Self is never changed."""
        if n < 1:
            raise BatchError(f"Batch.pad_to_multiple needs n >= 1, got {n!r}")
        length = len(self)
        if length == 0:
            raise BatchError(
                "cannot pad an empty batch: there are no rows to repeat; skip the call or send "
                "at least one row"
            )
        pad = -length % n
        if pad == 0:
            return self._derive(self._tensors, self._non_tensors, self.meta), 0
        index = torch.cat([torch.arange(length), torch.arange(pad) % length])
        return self.select_idxs(index), pad

    def unpad(self, k: int) -> Batch:
        """Drop the last ``k`` rows (views); ``k == 0`` returns self."""
        if k == 0:
            return self
        if not 0 < k <= len(self):
            raise BatchError(
                f"cannot unpad {k!r} rows from a batch of length {len(self)}; k must be in "
                f"[0, {len(self)}]"
            )
        return self.slice(0, len(self) - k)

    # ------------------------------------------------------------------ iteration

    def make_iterator(
        self,
        mini_batch_size: int,
        epochs: int,
        seed: int | None = None,
        shuffle: bool = True,
    ) -> Iterator[Batch]:
        """Mini-batches of ``mini_batch_size`` rows, ``epochs`` times over the batch.

        Each epoch visits every row exactly once (a fresh permutation per epoch when
        ``shuffle``). A given ``seed`` makes the sequence deterministic; ``None`` draws one.
        ``len(self)`` must be a multiple of ``mini_batch_size``. Arguments are checked here,
        not at the first ``next()``.
        """
        length = len(self)
        if mini_batch_size < 1:
            raise BatchError(f"make_iterator needs mini_batch_size >= 1, got {mini_batch_size!r}")
        if epochs < 0:
            raise BatchError(f"make_iterator needs epochs >= 0, got {epochs!r}")
        if length % mini_batch_size != 0:
            raise BatchError(
                f"batch length {length} is not a multiple of mini_batch_size {mini_batch_size}; "
                "pick a divisor, or pad with pad_to_multiple"
            )
        generator = torch.Generator()
        if seed is None:
            generator.seed()
        else:
            generator.manual_seed(seed)
        return self._iterate(mini_batch_size, epochs, generator, shuffle)

    def _iterate(
        self, size: int, epochs: int, generator: torch.Generator, shuffle: bool
    ) -> Iterator[Batch]:
        length = len(self)
        for _ in range(epochs):
            order = torch.randperm(length, generator=generator) if shuffle else torch.arange(length)
            for start in range(0, length, size):
                yield self.select_idxs(order[start : start + size])

    # ------------------------------------------------------------------ serialization

    def __reduce_ex__(self, protocol: SupportsIndex, /) -> tuple[object, ...]:
        """Pickle through the versioned wire format (see :mod:`runtime._batch_wire`)."""
        payload = encode_payload(self._tensors, self._non_tensors, self.meta, protocol)
        return (_rebuild_batch, (payload,))


# ---------------------------------------------------------------------- helpers


def _merged(
    what: str,
    mine: Mapping[str, _V],
    theirs: Mapping[str, _V],
    show: Callable[[_V], str],
) -> dict[str, _V]:
    """``mine`` plus the keys only ``theirs`` has; a shared key must hold equal values."""
    out = dict(mine)
    for k, v in theirs.items():
        if k in out and not deep_equal(out[k], v):
            raise BatchError(
                f"cannot union: {what} {k!r} differs between the batches "
                f"(self: {show(out[k])}, other: {show(v)}); rename or pop it in one of them"
            )
        out.setdefault(k, v)
    return out


def _merge_meta(parts: Sequence[Batch]) -> dict[str, object]:
    merged: dict[str, object] = {}
    source: dict[str, int] = {}
    metrics: dict[str, list[object]] = {}
    for i, part in enumerate(parts):
        for key, value in part.meta.items():
            if key == "metrics":
                merged.setdefault("metrics", metrics)
                _gather_metrics(metrics, value, i)
            elif key in merged:
                if not deep_equal(merged[key], value):
                    raise BatchError(
                        f"cannot concat: meta key {key!r} differs between parts: "
                        f"{merged[key]!r} (part {source[key]}) vs {value!r} (part {i}); only "
                        "'metrics' is merged, every other meta key must agree: make them equal "
                        "or pop the key from the parts"
                    )
            else:
                merged[key] = value
                source[key] = i
    return merged


def _gather_metrics(out: dict[str, list[object]], value: object, part: int) -> None:
    dicts: list[Mapping[Any, object]]
    if isinstance(value, Mapping):
        dicts = [value]
    elif isinstance(value, list | tuple) and all(isinstance(d, Mapping) for d in value):
        dicts = [d for d in value if isinstance(d, Mapping)]
    else:
        raise BatchError(
            f"cannot concat: meta['metrics'] of part {part} must be a dict of scalars or a list "
            f"of dicts, got {value!r}"
        )
    for d in dicts:
        for name, metric in d.items():
            out.setdefault(str(name), []).append(metric)


def _own_array(a: _Array) -> _Array:
    """``a`` if it owns its (C-contiguous) memory, else a compact copy."""
    if a.base is None and a.flags.c_contiguous:
        return a
    return a.copy(order="C")


def _rebuild_batch(payload: Mapping[str, Any]) -> Batch:
    """Decode a payload made by ``Batch.__reduce_ex__``; depends on the payload alone."""
    decoded = decode_payload(payload)
    batch = Batch(decoded.tensors, decoded.non_tensors, decoded.meta)
    batch._borrowed = decoded.borrowed
    return batch
