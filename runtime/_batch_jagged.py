"""Jagged nested tensors as batch columns: row operations on ``(values, offsets)``.

A jagged column is ``torch.nested.nested_tensor(rows, layout=torch.jagged)`` (or
``torch.nested.nested_tensor_from_jagged(values, offsets)``): ``B`` rows whose first dimension
varies (the ragged dimension must be dimension 1, right after the batch dimension) and whose
other dimensions agree. torch implements few row operations on such tensors (no slicing,
``index_select`` or ``cat`` on dimension 0), so every :class:`~runtime.Batch` operation goes
through the two dense tensors that describe one: ``values`` (all rows' elements, concatenated
along dimension 0) and ``offsets`` (``B + 1`` int64 row boundaries starting at 0).

:func:`parts` reads them from any jagged tensor, including a non-contiguous one (with
``lengths()``, e.g. from ``torch.nested.narrow``), which it compacts. :func:`build` makes the
jagged tensor back. Slices with step 1 are views of ``values``; everything else makes fresh
storage.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, cast

import torch

from runtime.errors import BatchError

__all__ = [
    "build",
    "check_column",
    "concat",
    "describe",
    "equal_structure",
    "is_jagged",
    "own",
    "parts",
    "row",
    "select_rows",
    "slice_rows",
    "to_device",
]


class _JaggedLayout(Protocol):
    """The accessors torch's jagged tensors have (torch declares no types for them)."""

    def values(self) -> torch.Tensor: ...
    def offsets(self) -> torch.Tensor: ...
    def lengths(self) -> torch.Tensor | None: ...


def _layout(t: torch.Tensor) -> _JaggedLayout:
    return cast(_JaggedLayout, t)


def is_jagged(t: torch.Tensor) -> bool:
    """True for a nested tensor with the jagged layout."""
    return bool(t.is_nested) and t.layout == torch.jagged


def check_column(name: str, t: torch.Tensor) -> None:
    """Raise :class:`BatchError` unless ``t`` is a jagged tensor a batch can carry."""
    ragged = getattr(t, "_ragged_idx", None)
    if ragged != 1:
        raise BatchError(
            f"tensor column {name!r} is a jagged nested tensor whose ragged dimension is "
            f"{ragged!r}; a batch column needs it at dimension 1 (rows of varying length): "
            "transpose it, or store it dense"
        )


def parts(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(values, offsets)`` of a jagged tensor: compact values (no holes) and ``B + 1`` int64
    offsets starting at 0. No copy for a contiguous jagged tensor."""
    layout = _layout(t)
    values, offsets, lengths = layout.values(), layout.offsets(), layout.lengths()
    if lengths is None:
        first, last = int(offsets[0]), int(offsets[-1])
        if first == 0 and last == values.shape[0]:
            return values, offsets
        return values[first:last], offsets - first
    return _gather(values, offsets[:-1], lengths)


def build(values: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """The jagged tensor over ``values`` split at ``offsets`` (no copy)."""
    return torch.nested.nested_tensor_from_jagged(values, offsets)


def row(t: torch.Tensor, i: int) -> torch.Tensor:
    """Row ``i`` (``0 <= i < B``) as a dense view of shape ``(length_i, *rest)``."""
    values, offsets = parts(t)
    return values[int(offsets[i]) : int(offsets[i + 1])]


def slice_rows(t: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    """Rows ``lo:hi`` (``0 <= lo <= hi <= B``); the values are a view of ``t``'s."""
    values, offsets = parts(t)
    hi = max(lo, hi)
    start, stop = int(offsets[lo]), int(offsets[hi])
    return build(values[start:stop], offsets[lo : hi + 1] - start)


def select_rows(t: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows picked by a 1-D int64 ``index`` of valid, non-negative rows (repeats allowed);
    fresh storage."""
    values, offsets = parts(t)
    index = index.to(offsets.device)
    starts = offsets[:-1].index_select(0, index)
    lengths = offsets.diff().index_select(0, index)
    gathered, new_offsets = _gather(values, starts, lengths)
    return build(gathered, new_offsets)


def own(t: torch.Tensor) -> torch.Tensor:
    """``t`` if its values and offsets own exactly their storage, else a compact clone."""
    layout = _layout(t)
    values, offsets = layout.values(), layout.offsets()
    if (
        layout.lengths() is None
        and int(offsets[0]) == 0
        and int(offsets[-1]) == values.shape[0]
        and _owns_storage(values)
        and _owns_storage(offsets)
    ):
        return t
    values, offsets = parts(t)
    return build(values.clone(), offsets.clone())


def concat(name: str, pieces: Sequence[torch.Tensor]) -> torch.Tensor:
    """Row-wise concatenation of jagged tensors with the same dtype, device and trailing
    shape (checked by the caller); fresh storage."""
    all_values: list[torch.Tensor] = []
    all_offsets: list[torch.Tensor] = []
    total = 0
    for i, piece in enumerate(pieces):
        if not is_jagged(piece):
            raise BatchError(
                f"cannot concat tensor column {name!r}: part 0 is a jagged nested tensor but "
                f"part {i} is {describe(piece)}; make the column jagged in every part "
                "(torch.nested.nested_tensor(list(rows), layout=torch.jagged))"
            )
        values, offsets = parts(piece)
        all_values.append(values)
        all_offsets.append((offsets[1:] if i else offsets) + total)
        total += int(offsets[-1])
    return build(torch.cat(all_values), torch.cat(all_offsets))


def to_device(t: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """The jagged tensor moved to ``device`` (``t`` itself when already there)."""
    values, offsets = parts(t)
    moved = values.to(device)
    if moved is values:
        return t
    return build(moved, offsets.to(device))


def equal_structure(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(values_a, values_b)`` when ``a`` and ``b`` have the same dtype, device, row lengths and
    trailing shape (compare the values next), else ``None``."""
    if a.dtype != b.dtype or a.device != b.device:
        return None
    values_a, offsets_a = parts(a)
    values_b, offsets_b = parts(b)
    if values_a.shape[1:] != values_b.shape[1:] or not torch.equal(
        offsets_a.cpu(), offsets_b.cpu()
    ):
        return None
    return values_a, values_b


def describe(t: torch.Tensor) -> str:
    """A short description, e.g. ``float32[4, jagged, 8]@cuda:0``."""
    device = "" if t.device.type == "cpu" else f"@{t.device}"
    dtype = str(t.dtype).removeprefix("torch.")
    if not is_jagged(t):
        return f"{dtype}{list(t.shape)}{device}"
    rest = list(_layout(t).values().shape[1:])
    return f"{dtype}{[int(t.shape[0]), 'jagged', *rest]}{device}".replace("'", "")


def _gather(
    values: torch.Tensor, starts: torch.Tensor, lengths: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Compact ``values`` rows ``[starts[k], starts[k] + lengths[k])`` into fresh storage."""
    lengths = lengths.to(torch.int64)
    new_offsets = torch.zeros(lengths.numel() + 1, dtype=torch.int64, device=lengths.device)
    torch.cumsum(lengths, 0, out=new_offsets[1:])
    total = int(new_offsets[-1])
    row_of = torch.repeat_interleave(torch.arange(lengths.numel(), device=lengths.device), lengths)
    position = torch.arange(total, device=lengths.device) - new_offsets[row_of] + starts[row_of]
    return values.index_select(0, position.to(values.device)), new_offsets


def _owns_storage(t: torch.Tensor) -> bool:
    return (
        t.is_contiguous()
        and t.storage_offset() == 0
        and t.untyped_storage().nbytes() == t.numel() * t.element_size()
    )
