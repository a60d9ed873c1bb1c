"""The copy rule for received buffers (runtime/_batch_wire.py), in one process.

Read-only received buffers stand in for an object store's mapping: ``memoryview(bytes(...))``
is read-only exactly like the buffers Ray hands to the unpickler. The rule under test: such
buffers are wrapped without a copy; a column is copied once, when user code first reads it
through ``tensors``/``non_tensors``/a row, or never when an operation makes fresh storage
from it (``concat``, ``select_idxs``, ...); nothing ever writes into the received memory.
"""

from __future__ import annotations

import copy
import pickle
import threading
import warnings
from collections.abc import Callable

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime import Batch
from runtime._batch_wire import receive_stats


def received(batch: Batch) -> tuple[Batch, list[bytes]]:
    """``batch`` pickled with out-of-band buffers and rebuilt over read-only copies of them;
    also returns those buffers (immutable ``bytes``) so a test can check they never change."""
    buffers: list[pickle.PickleBuffer] = []
    data = pickle.dumps(batch, protocol=5, buffer_callback=buffers.append)
    frozen = [bytes(b.raw()) for b in buffers]
    return pickle.loads(data, buffers=[memoryview(f) for f in frozen]), frozen


def snapshot(frozen: list[bytes]) -> list[bytes]:
    """A separate copy of the received buffers' contents (compared after the test's writes)."""
    return [bytes(bytearray(f)) for f in frozen]


def sample() -> Batch:
    return Batch(
        {
            "x": torch.arange(8, dtype=torch.float32).reshape(4, 2),
            "seq": torch.nested.nested_tensor(
                [torch.ones(2), torch.ones(1), torch.ones(3), torch.ones(1)], layout=torch.jagged
            ),
        },
        {"score": np.arange(4, dtype=np.int64), "uid": np.array(list("abcd"), dtype=object)},
        {"step": 1},
    )


def delta(before: dict[str, int]) -> dict[str, int]:
    after = receive_stats()
    return {k: after[k] - before[k] for k in after}


def test_torch_writes_silently_into_read_only_memory() -> None:
    """Why the rule exists: torch has no read-only tensors; over a read-only buffer it only
    warns, then an in-place op changes memory that Python promised was immutable."""
    data = bytes(4)
    with pytest.warns(UserWarning, match="not writable"):
        t = torch.frombuffer(data, dtype=torch.uint8)
    t.add_(7)
    assert data == b"\x07\x07\x07\x07"  # an immutable bytes object, changed


def test_read_only_buffers_are_wrapped_without_a_copy() -> None:
    before = receive_stats()
    out, _ = received(sample())
    # x, seq values, seq offsets, score: four out-of-band buffers, all borrowed, none copied.
    assert delta(before) == {"buffers": 4, "borrowed": 4, "copies": 0, "copied_bytes": 0}
    assert out.equals(sample())
    assert len(out) == 4
    assert "float32[4, 2]" in repr(out)
    assert delta(before)["copies"] == 0  # equals, len and repr read without copying


def test_first_access_copies_each_column_once_and_never_writes_the_buffer() -> None:
    out, frozen = received(sample())
    original = snapshot(frozen)
    before = receive_stats()
    x = out.tensors["x"]
    x.add_(100)
    out.tensors["seq"].values().mul_(5)
    assert delta(before)["copies"] == 2  # x and seq, once each
    assert delta(before)["copied_bytes"] == 8 * 4 + 7 * 4 + 5 * 8  # x, seq values + offsets
    assert out.tensors["x"] is x  # no further copy
    score = out.non_tensors["score"]
    score += 1  # writable now
    assert delta(before)["copies"] == 3
    assert frozen == original
    assert out.tensors["x"][0].tolist() == [100.0, 101.0]


def test_writable_buffers_are_used_as_they_are() -> None:
    buffers: list[pickle.PickleBuffer] = []
    data = pickle.dumps(sample(), protocol=5, buffer_callback=buffers.append)
    writable = [bytearray(b.raw()) for b in buffers]
    before = receive_stats()
    out = pickle.loads(data, buffers=writable)
    out.tensors["x"].add_(1)
    assert delta(before) == {"buffers": 4, "borrowed": 0, "copies": 0, "copied_bytes": 0}
    assert np.frombuffer(writable[0], dtype=np.float32)[0] == 1.0  # the tensor is that memory


def test_concat_of_received_parts_copies_exactly_once() -> None:
    parts = [received(p)[0] for p in sample().chunk(2)]
    frozen = [f for p in sample().chunk(2) for f in received(p)[1]]
    before = receive_stats()
    joined = Batch.concat(parts)
    joined.tensors["x"].add_(1)
    joined.non_tensors["score"] += 1
    assert delta(before)["copies"] == 0  # the concatenation is the only copy
    assert joined.tensors["x"].tolist()[0] == [1.0, 2.0]
    assert frozen == [f for p in sample().chunk(2) for f in received(p)[1]]


def test_forwarding_a_received_batch_does_not_copy() -> None:
    out, _ = received(sample())
    before = receive_stats()
    again, _ = received(out)
    assert delta(before)["copies"] == 0
    assert again.equals(sample())


VIEWS: dict[str, Callable[[Batch], Batch]] = {
    "slice": lambda b: b[1:3],
    "select": lambda b: b.select(["x", "seq"], ["score"]),
    "rename": lambda b: b.rename("x", "y").rename("y", "x"),
    "chunk": lambda b: b.chunk(2, copy=False)[1],
    "chunk_owned": lambda b: b.chunk(1)[0],
    "to": lambda b: b.to("cpu"),
    "union": lambda b: b.select(["x"], []).union(b.select(["seq"], ["score"])),
    "pad0": lambda b: b.pad_to_multiple(2)[0],
    "unpad": lambda b: b.unpad(1),
    "split": lambda b: b.split(3)[0],
}


@pytest.mark.parametrize("op", sorted(VIEWS))
def test_views_of_a_received_batch_copy_before_user_code_writes(op: str) -> None:
    out, frozen = received(sample())
    original = snapshot(frozen)
    view = VIEWS[op](out)
    view.tensors["x"].add_(1)
    view.tensors["seq"].values().add_(1)
    view.non_tensors["score"] += 1
    for row in view:
        row_x = row["x"]
        assert isinstance(row_x, torch.Tensor)
        row_x.add_(1)
    assert frozen == original
    assert out.equals(sample())  # the source batch still reads the untouched buffers


def test_pop_and_rows_copy_what_they_hand_out() -> None:
    out, frozen = received(sample())
    original = snapshot(frozen)
    popped = out.pop(["x"])
    popped.tensors["x"].add_(1)
    first = out[0]["seq"]
    assert isinstance(first, torch.Tensor)
    first.add_(1)
    out.tensors["x"] = torch.zeros(4)  # a fresh column under a popped borrowed name
    assert out.tensors["x"].sum() == 0
    assert frozen == original


def test_fresh_storage_ops_never_count_copies() -> None:
    out, _ = received(sample())
    before = receive_stats()
    picked = out.select_idxs([3, 1])
    tiled = out.repeat(2)
    padded, _ = out.pad_to_multiple(3)
    half = out.chunk(2)[1]  # chunk() clones views, so the halves are fresh storage
    for b in (picked, tiled, padded, half):
        b.tensors["x"].add_(1)
        b.non_tensors["score"] += 1
    assert delta(before)["copies"] == 0


def test_no_warning_on_receive_or_access() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out, _ = received(sample())
        out.tensors["x"].add_(1)


def test_threads_reading_one_batch_get_the_same_copy() -> None:
    out, _ = received(sample())
    barrier = threading.Barrier(8)
    seen: list[torch.Tensor] = []

    def read() -> None:
        barrier.wait()
        seen.append(out.tensors["x"])

    threads = [threading.Thread(target=read) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == 8
    assert all(t is seen[0] for t in seen)


OPS: dict[str, Callable[[Batch], Batch]] = {
    "slice": lambda b: b[1:] if len(b) > 1 else b[:],
    "reverse": lambda b: b[::-1],
    "select": lambda b: b.select(["x", "seq"], ["score", "uid"]),
    "rename": lambda b: b.rename("x", "y").rename("y", "x"),
    "chunk": lambda b: b.chunk(1, copy=False)[0],
    "chunk_owned": lambda b: b.chunk(1)[0],
    "split": lambda b: b.split(2)[0],
    "to": lambda b: b.to("cpu"),
    "union": lambda b: b.select(["x"], ["uid"]).union(b.select(["seq"], ["score"])),
    "pad": lambda b: b.pad_to_multiple(3)[0],
    "unpad": lambda b: b.unpad(1) if len(b) > 1 else b,
    "select_idxs": lambda b: b.select_idxs([len(b) - 1, 0]),
    "repeat": lambda b: b.repeat(2, interleave=False),
    "concat": lambda b: Batch.concat([b, b]),
    "deepcopy": copy.deepcopy,
    "pickle": lambda b: received(b)[0],
}


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from(sorted(OPS)), min_size=1, max_size=4))
def test_any_op_sequence_on_a_received_batch_matches_and_never_writes_it(
    ops: list[str],
) -> None:
    out, frozen = received(sample())
    original = snapshot(frozen)
    mine, theirs = out, sample()
    for op in ops:
        mine, theirs = OPS[op](mine), OPS[op](theirs)
    assert mine.equals(theirs)
    mine.tensors["x"].add_(1)
    mine.tensors["seq"].values().add_(1)
    mine.non_tensors["score"] += 1
    assert frozen == original
    assert out.equals(sample())
