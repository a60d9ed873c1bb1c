"""BatchFuture.slice_rows and reorder, as pure code: which producer parts a consumer fetches and
which of their rows it keeps, against a direct computation on the concatenated rows."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime import Batch, BatchFuture, Collector
from runtime.errors import DispatchError
from runtime.testing import InProcessBackend


def future(part_rows: list[int]) -> BatchFuture:
    """A future over parts named ``p0, p1, ...`` holding ``part_rows`` rows each (no backend
    call is made: slicing only reads the row counts)."""
    return BatchFuture(
        InProcessBackend(),
        [f"p{i}" for i in range(len(part_rows))],
        Collector("concat"),
        what="producer.m",
        part_rows=part_rows,
    )


def resolve(fut: BatchFuture, rows: list[int], part_rows: list[int]) -> list[int]:
    """Global row numbers a consumer of ``rows`` ends up with, by assembling the slice from
    parts whose rows are numbered globally."""
    piece = fut.slice_rows(rows)
    starts = [sum(part_rows[:i]) for i in range(len(part_rows))]
    parts = [
        Batch({"g": torch.arange(starts[int(h[1:])], starts[int(h[1:])] + part_rows[int(h[1:])])})
        for h in map(str, piece.handles)
    ]
    assert [part_rows[int(str(h)[1:])] for h in piece.handles] == list(piece.expected)
    return [int(x) for x in piece.assemble(parts).tensors["g"].tolist()]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 5), min_size=1, max_size=6), st.data())
def test_a_slice_holds_exactly_the_rows_asked_for(
    part_rows: list[int], data: st.DataObject
) -> None:
    n = sum(part_rows)
    if n == 0:
        return
    rows = data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=2 * n))
    fut = future(part_rows)
    assert resolve(fut, rows, part_rows) == rows
    # Only parts that hold a requested row are fetched.
    starts = [sum(part_rows[:i]) for i in range(len(part_rows))]
    owners = {max(i for i, s in enumerate(starts) if s <= g and part_rows[i]) for g in rows}
    assert {int(str(h)[1:]) for h in fut.slice_rows(rows).handles} == owners


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 4), min_size=1, max_size=5), st.data())
def test_a_reordered_future_slices_through_its_order(
    part_rows: list[int], data: st.DataObject
) -> None:
    n = sum(part_rows)
    if n == 0:
        return
    order = data.draw(st.permutations(list(range(n))))
    again = data.draw(st.permutations(list(range(n))))
    view = future(part_rows).reorder(order).reorder(again)
    assert resolve(view, list(range(n)), part_rows) == [order[i] for i in again]


def test_rows_outside_the_future_and_non_permutations_are_refused() -> None:
    fut = future([2, 2])
    with pytest.raises(DispatchError, match="row 4 is outside a future of 4 rows"):
        fut.slice_rows([0, 4])
    with pytest.raises(DispatchError, match="permutation"):
        fut.reorder([0, 1, 2])
