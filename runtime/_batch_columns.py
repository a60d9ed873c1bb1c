"""Row operations on one tensor column, dense (strided) or jagged (:mod:`runtime._batch_jagged`).

Each function takes and returns tensors whose dimension 0 is the batch dimension; the
:class:`~runtime.Batch` operations apply them column by column. Dense tensors use the plain
torch operation; jagged ones go through their ``(values, offsets)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from runtime import _batch_jagged as jagged
from runtime.errors import BatchError

__all__ = [
    "cat_rows",
    "clone",
    "move",
    "own",
    "repeat_rows",
    "row",
    "slice_rows",
    "take_rows",
    "trailing_shape",
]


def row(t: torch.Tensor, i: int) -> torch.Tensor:
    """Row ``i`` (``0 <= i < len``): a view."""
    return jagged.row(t, i) if jagged.is_jagged(t) else t[i]


def slice_rows(t: torch.Tensor, lo: int, hi: int, step: int) -> torch.Tensor:
    """Rows ``lo:hi:step`` (bounds already normalised by ``slice.indices``, ``step > 0``):
    views for dense columns and for jagged columns with ``step == 1``."""
    if not jagged.is_jagged(t):
        return t[lo:hi:step]
    if step == 1:
        return jagged.slice_rows(t, lo, hi)
    return jagged.select_rows(t, torch.arange(lo, max(lo, hi), step))


def take_rows(t: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows picked by a 1-D int64 CPU ``index`` of valid non-negative rows; fresh storage."""
    if jagged.is_jagged(t):
        return jagged.select_rows(t, index)
    return t.index_select(0, index.to(t.device))


def repeat_rows(t: torch.Tensor, n: int, interleave: bool) -> torch.Tensor:
    """Each row ``n`` times: ``a a b b`` when ``interleave``, else ``a b a b``."""
    if jagged.is_jagged(t):
        rows = torch.arange(int(t.shape[0]))
        index = rows.repeat_interleave(n) if interleave else rows.repeat(n)
        return jagged.select_rows(t, index)
    if interleave:
        return t.repeat_interleave(n, dim=0)
    return t.repeat(n, *([1] * (t.ndim - 1)))


def own(t: torch.Tensor) -> torch.Tensor:
    """``t`` if it owns exactly its storage, else a compact clone."""
    if jagged.is_jagged(t):
        return jagged.own(t)
    if (
        t.is_contiguous()
        and t.storage_offset() == 0
        and t.untyped_storage().nbytes() == t.numel() * t.element_size()
    ):
        return t
    return t.clone(memory_format=torch.contiguous_format)


def clone(t: torch.Tensor) -> torch.Tensor:
    """A copy in fresh storage."""
    if jagged.is_jagged(t):
        values, offsets = jagged.parts(t)
        return jagged.build(values.clone(), offsets.clone())
    return t.clone()


def move(t: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """``t`` on ``device`` (``t`` itself when already there)."""
    return jagged.to_device(t, device) if jagged.is_jagged(t) else t.to(device)


def trailing_shape(t: torch.Tensor) -> tuple[int | str, ...]:
    """The shape after the batch dimension; ``"jagged"`` stands for a ragged dimension."""
    if jagged.is_jagged(t):
        values, _ = jagged.parts(t)
        return ("jagged", *(int(s) for s in values.shape[1:]))
    return tuple(int(s) for s in t.shape[1:])


def cat_rows(name: str, pieces: Sequence[torch.Tensor]) -> torch.Tensor:
    """Row-wise concatenation of one column's parts after checking that they agree in
    layout, dtype, device and trailing shape."""
    first = pieces[0]
    for i, t in enumerate(pieces):
        if (
            t.dtype != first.dtype
            or t.device != first.device
            or trailing_shape(t) != trailing_shape(first)
        ):
            raise BatchError(
                f"cannot concat tensor column {name!r}: part 0 is {jagged.describe(first)} but "
                f"part {i} is {jagged.describe(t)}; layout, dtype, device and trailing shape "
                "must match"
            )
    if jagged.is_jagged(first):
        return jagged.concat(name, pieces)
    return torch.cat(list(pieces), dim=0)
