"""Sequence-length balancing across data-parallel ranks.

A data-parallel call splits a batch into ``world`` equal contiguous chunks, one per rank, and
waits for the slowest rank. When row lengths differ, the rank whose chunk holds the most tokens
sets the pace. :func:`balanced_order` reorders rows so that every chunk keeps its row count
but holds a near-equal number of tokens: rows are taken longest first and each goes to the
chunk with the fewest tokens that still has room (greedy partitioning under an equal-size
constraint). Inside a chunk, rows keep their original relative order.

The result is never worse than leaving the order alone: if the greedy partition's largest
chunk holds more tokens than the identity order's, the identity order is returned.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

import torch

from runtime import Batch

__all__ = ["balance_batch", "balanced_order", "chunk_loads", "token_counts"]


def chunk_loads(lengths: Sequence[int], order: Sequence[int], world: int) -> list[int]:
    """Total length in each of the ``world`` equal contiguous chunks of ``order``."""
    size = len(order) // world
    return [sum(lengths[i] for i in order[c * size : (c + 1) * size]) for c in range(world)]


def balanced_order(lengths: Sequence[int], world: int) -> list[int]:
    """A permutation of ``range(len(lengths))`` whose ``world`` equal contiguous chunks have
    near-equal total length. ``len(lengths)`` must be a multiple of ``world`` (``ValueError``
    otherwise, naming both); lengths must be ``>= 0``."""
    n = len(lengths)
    if world < 1 or n % world != 0:
        raise ValueError(
            f"cannot balance {n} rows over world={world}: the row count must be a multiple of "
            "world (>= 1); pad the batch first"
        )
    if any(x < 0 for x in lengths):
        raise ValueError(f"lengths must be >= 0, got {min(lengths)}")
    identity = list(range(n))
    if world == 1 or n == 0:
        return identity
    size = n // world
    # (load, chunk) heap of chunks that still have room; ties go to the lower chunk.
    heap = [(0, c) for c in range(world)]
    members: list[list[int]] = [[] for _ in range(world)]
    for i in sorted(range(n), key=lambda i: (-lengths[i], i)):
        load, c = heapq.heappop(heap)
        members[c].append(i)
        if len(members[c]) < size:
            heapq.heappush(heap, (load + lengths[i], c))
    order = [i for chunk in members for i in sorted(chunk)]
    if max(chunk_loads(lengths, order, world)) > max(chunk_loads(lengths, identity, world)):
        return identity
    return order


def balance_batch(batch: Batch, world: int, *, mask_key: str) -> Batch:
    """``batch`` with rows reordered by :func:`balanced_order` of each row's token count
    (the sum of its ``mask_key`` column). A batch whose length is not a multiple of ``world``
    is returned unchanged (the dispatcher pads it; balancing would not survive the padding)."""
    if world <= 1 or len(batch) % world != 0:
        return batch
    order = balanced_order(token_counts(batch, (mask_key,)), world)
    if order == list(range(len(batch))):
        return batch
    return batch.reorder(torch.tensor(order, dtype=torch.int64))


def token_counts(batch: Batch, mask_keys: Sequence[str]) -> list[int]:
    """Each row's token count: the sum over the ``mask_keys`` columns ``batch`` holds (for
    example the prompt mask and the response mask, when the full sequence stays on the
    workers)."""
    counts = torch.zeros(len(batch), dtype=torch.int64)
    for key in mask_keys:
        if key in batch.tensors:
            counts += batch.tensors[key].reshape(len(batch), -1).long().sum(dim=1)
    return [int(x) for x in counts.tolist()]
