"""ppo.balance: a permutation, equal-size chunks, never worse than the identity order."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ppo.balance import balance_batch, balanced_order, chunk_loads, token_counts
from runtime import Batch


@st.composite
def lengths_and_world(draw: st.DrawFn) -> tuple[list[int], int]:
    world = draw(st.integers(1, 8))
    rows = world * draw(st.integers(0, 12))
    lengths = draw(st.lists(st.integers(0, 500), min_size=rows, max_size=rows))
    return lengths, world


@settings(max_examples=300)
@given(lengths_and_world())
def test_balanced_order_is_a_permutation_no_worse_than_identity(
    case: tuple[list[int], int],
) -> None:
    lengths, world = case
    order = balanced_order(lengths, world)
    assert sorted(order) == list(range(len(lengths)))
    loads = chunk_loads(lengths, order, world)
    identity = chunk_loads(lengths, list(range(len(lengths))), world)
    assert sum(loads) == sum(lengths)
    assert max(loads, default=0) <= max(identity, default=0)


def test_sorted_lengths_are_spread_over_ranks() -> None:
    # Identity order puts all long rows on rank 0: loads [400, 4].
    lengths = [100, 100, 100, 100, 1, 1, 1, 1]
    order = balanced_order(lengths, 2)
    assert chunk_loads(lengths, order, 2) == [202, 202]
    assert chunk_loads(lengths, list(range(8)), 2) == [400, 4]


def test_rows_not_a_multiple_of_world_are_refused() -> None:
    with pytest.raises(ValueError, match="multiple of world"):
        balanced_order([1, 2, 3], 2)
    with pytest.raises(ValueError, match=">= 0"):
        balanced_order([1, -2], 2)


def test_balance_batch_reorders_rows_with_their_columns() -> None:
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 1], [1, 0, 0, 0], [1, 0, 0, 0]])
    batch = Batch({"attention_mask": mask, "row": torch.arange(4)})
    out = balance_batch(batch, 2, mask_key="attention_mask")
    assert sorted(out.tensors["row"].tolist()) == [0, 1, 2, 3]
    per_chunk = [int(c.tensors["attention_mask"].sum()) for c in out.chunk(2)]
    assert per_chunk == [5, 5]
    for i, r in enumerate(out.tensors["row"].tolist()):
        assert torch.equal(out.tensors["attention_mask"][i], mask[r])
    # Not a multiple of world: unchanged (the dispatcher pads).
    odd = Batch({"attention_mask": mask[:3]})
    assert balance_batch(odd, 2, mask_key="attention_mask") is odd


def test_token_counts_sum_the_named_masks_that_exist() -> None:
    batch = Batch(
        {
            "prompt_mask": torch.tensor([[0, 1, 1], [1, 1, 1]]),
            "response_mask": torch.tensor([[True, False], [True, True]]),
        }
    )
    assert token_counts(batch, ("prompt_mask", "response_mask", "absent")) == [3, 5]
    assert token_counts(batch, ()) == [0, 0]
