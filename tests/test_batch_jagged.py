"""Jagged nested tensors as Batch columns: every op against the same op on per-row lists.

The model: a batch with a jagged column ``"seq"`` (rows of varying length, each ``(len, 2)``)
and a dense ``"id"`` column (the row's identity). Every property test applies one Batch
operation and checks the jagged column row by row against the same operation applied to a
plain Python list of the rows.
"""

from __future__ import annotations

import copy
import pickle
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime import Batch
from runtime._batch_jagged import parts
from runtime.errors import BatchError

PROPERTY = settings(max_examples=40, deadline=None)

Rows = list[torch.Tensor]


def jagged(rows: Rows) -> torch.Tensor:
    return torch.nested.nested_tensor(rows, layout=torch.jagged)


def make_rows(lengths: list[int], *, width: int = 2, start: int = 0) -> Rows:
    """Rows of shape ``(length, width)``; values encode (row, position) so rows are distinct."""
    return [
        (torch.arange(n * width, dtype=torch.float32).reshape(n, width) + 1000 * (start + i))
        for i, n in enumerate(lengths)
    ]


def make_batch(rows: Rows, *, start: int = 0) -> Batch:
    return Batch(
        {"seq": jagged(rows), "id": torch.arange(start, start + len(rows))},
        {"tag": np.array([f"r{start + i}" for i in range(len(rows))], dtype=object)},
        {"step": 3},
    )


def rows_of(b: Batch) -> Rows:
    """The jagged column's rows, read through the Batch row interface."""
    return [row["seq"] for row in b]  # type: ignore[misc]  # row values are object-typed


def assert_rows(b: Batch, expected: Rows, ids: list[int]) -> None:
    got = [r for r in rows_of(b)]
    assert len(b) == len(expected) == len(ids)
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert isinstance(g, torch.Tensor)
        assert g.shape == e.shape
        assert torch.equal(g, e)
    assert b.tensors["id"].tolist() == ids
    assert list(b.non_tensors["tag"]) == [f"r{i}" for i in ids]


lengths_st = st.lists(st.integers(0, 5), min_size=1, max_size=12)


# ---------------------------------------------------------------------- construction


def test_a_jagged_column_is_accepted_and_described() -> None:
    b = make_batch(make_rows([3, 0, 2]))
    assert len(b) == 3
    assert "'seq': float32[3, jagged, 2]" in repr(b)


def test_ragged_dimension_must_be_dimension_one() -> None:
    late = torch.nested.nested_tensor([torch.ones(2, 3), torch.ones(2, 4)], layout=torch.jagged)
    with pytest.raises(BatchError, match=r"'bad'.*ragged dimension is 2.*dimension 1"):
        Batch({"bad": late})


def test_a_jagged_column_of_another_length_is_rejected() -> None:
    with pytest.raises(BatchError, match=r"'id' has length 2 but the batch has length 3"):
        Batch({"seq": jagged(make_rows([1, 2, 3])), "id": torch.arange(2)})


def test_other_layouts_are_still_rejected() -> None:
    with pytest.raises(BatchError, match=r"layout torch.sparse_coo.*jagged nested tensors"):
        Batch({"s": torch.eye(3).to_sparse()})


# ---------------------------------------------------------------------- row selection


@PROPERTY
@given(lengths_st, st.data())
def test_slice_matches_list_slicing(lengths: list[int], data: st.DataObject) -> None:
    rows = make_rows(lengths)
    n = len(rows)
    start = data.draw(st.none() | st.integers(-n - 2, n + 2))
    stop = data.draw(st.none() | st.integers(-n - 2, n + 2))
    step = data.draw(st.none() | st.sampled_from([1, 2, 3, -1, -2]))
    ids = list(range(n))[start:stop:step]
    assert_rows(make_batch(rows)[start:stop:step], rows[start:stop:step], ids)


def test_a_unit_step_slice_is_a_view_of_the_values() -> None:
    b = make_batch(make_rows([2, 3, 1]))
    piece = b[1:3]
    seq = piece.tensors["seq"]
    assert seq.values().untyped_storage().data_ptr() == (
        b.tensors["seq"].values().untyped_storage().data_ptr()
    )
    assert parts(seq)[1].tolist() == [0, 3, 4]


@PROPERTY
@given(lengths_st, st.data())
def test_select_idxs_matches_list_indexing(lengths: list[int], data: st.DataObject) -> None:
    rows = make_rows(lengths)
    n = len(rows)
    idx = data.draw(st.lists(st.integers(-n, n - 1), max_size=15))
    expected = [rows[i] for i in idx]
    assert_rows(make_batch(rows).select_idxs(idx), expected, [i % n for i in idx])


@PROPERTY
@given(lengths_st, st.data())
def test_bool_mask_and_reorder(lengths: list[int], data: st.DataObject) -> None:
    rows = make_rows(lengths)
    n = len(rows)
    mask = data.draw(st.lists(st.booleans(), min_size=n, max_size=n))
    kept = [i for i in range(n) if mask[i]]
    assert_rows(make_batch(rows)[torch.tensor(mask)], [rows[i] for i in kept], kept)
    perm = data.draw(st.permutations(range(n)))
    assert_rows(make_batch(rows).reorder(list(perm)), [rows[i] for i in perm], list(perm))


@PROPERTY
@given(lengths_st)
def test_rows_and_iteration(lengths: list[int]) -> None:
    rows = make_rows(lengths)
    b = make_batch(rows)
    for i in range(-len(rows), len(rows)):
        assert torch.equal(b[i]["seq"], rows[i])  # type: ignore[arg-type]  # object-typed row


# ---------------------------------------------------------------------- chunk, split, concat


@PROPERTY
@given(st.integers(1, 4), st.integers(1, 4), st.data())
def test_chunk_owns_its_storage_and_concat_restores(n: int, per: int, data: st.DataObject) -> None:
    lengths = data.draw(st.lists(st.integers(0, 5), min_size=n * per, max_size=n * per))
    rows = make_rows(lengths)
    b = make_batch(rows)
    chunks = b.chunk(n)
    for k, c in enumerate(chunks):
        lo, hi = k * per, (k + 1) * per
        assert_rows(c, rows[lo:hi], list(range(lo, hi)))
        values = c.tensors["seq"].values()
        assert values.untyped_storage().nbytes() == values.numel() * values.element_size()
        assert int(parts(c.tensors["seq"])[1][0]) == 0
    assert Batch.concat(chunks).equals(b)
    assert Batch.concat(b.chunk(n, copy=False)).equals(b)


@PROPERTY
@given(lengths_st, st.integers(1, 5))
def test_split_and_concat(lengths: list[int], size: int) -> None:
    rows = make_rows(lengths)
    b = make_batch(rows)
    pieces = b.split(size)
    assert [len(p) for p in pieces] == [len(rows[i : i + size]) for i in range(0, len(rows), size)]
    assert_rows(Batch.concat(pieces), rows, list(range(len(rows))))


@PROPERTY
@given(lengths_st, lengths_st)
def test_concat_of_independent_batches(left: list[int], right: list[int]) -> None:
    a_rows, b_rows = make_rows(left), make_rows(right, start=len(left))
    joined = Batch.concat([make_batch(a_rows), make_batch(b_rows, start=len(left))])
    assert_rows(joined, a_rows + b_rows, list(range(len(left) + len(right))))


def test_concat_refuses_mixed_layouts_and_shapes() -> None:
    a = Batch({"seq": jagged(make_rows([1, 2]))})
    dense = Batch({"seq": torch.zeros(2, 3, 2)})
    with pytest.raises(BatchError, match=r"part 0 is float32\[2, jagged, 2\] but part 1 is "):
        Batch.concat([a, dense])
    wide = Batch({"seq": jagged(make_rows([1, 2], width=3))})
    with pytest.raises(BatchError, match=r"layout, dtype, device and trailing shape must match"):
        Batch.concat([a, wide])
    ints = Batch({"seq": jagged([torch.ones(1, 2, dtype=torch.int64)] * 2)})
    with pytest.raises(BatchError, match=r"'seq'"):
        Batch.concat([a, ints])


# ---------------------------------------------------------------------- repeat, pad, columns


@PROPERTY
@given(lengths_st, st.integers(0, 3), st.booleans())
def test_repeat_matches_lists(lengths: list[int], n: int, interleave: bool) -> None:
    rows = make_rows(lengths)
    ids = list(range(len(rows)))
    order = [i for i in ids for _ in range(n)] if interleave else ids * n
    assert_rows(make_batch(rows).repeat(n, interleave=interleave), [rows[i] for i in order], order)


@PROPERTY
@given(lengths_st, st.integers(1, 7))
def test_pad_and_unpad(lengths: list[int], n: int) -> None:
    rows = make_rows(lengths)
    padded, pad = make_batch(rows).pad_to_multiple(n)
    order = [i % len(rows) for i in range(len(rows) + pad)]
    assert_rows(padded, [rows[i] for i in order], order)
    assert_rows(padded.unpad(pad), rows, list(range(len(rows))))


def test_select_pop_rename_union_to_share_or_keep_the_column() -> None:
    rows = make_rows([2, 0, 3])
    b = make_batch(rows)
    seq = b.tensors["seq"]
    assert b.select(["seq"]).tensors["seq"] is seq
    assert b.rename("seq", "tokens").tensors["tokens"] is seq
    assert b.to("cpu").tensors["seq"] is seq
    joined = b.select(["id"]).union(b.select(["seq"]))
    assert_rows(joined.union(b), rows, [0, 1, 2])
    other = make_batch(make_rows([2, 0, 3], start=5))
    with pytest.raises(BatchError, match=r"tensor column 'seq' differs.*float32\[3, jagged, 2\]"):
        b.select(["seq"]).union(other.select(["seq"]))
    popped = b.pop(["seq"])
    assert popped.tensors["seq"] is seq
    assert "seq" not in b.tensors


def test_make_iterator_visits_every_row_once() -> None:
    rows = make_rows([1, 2, 3, 4, 0, 2])
    seen: list[int] = []
    for mini in make_batch(rows).make_iterator(2, epochs=1, seed=0):
        for row in mini:
            i = int(row["id"])  # type: ignore[call-overload]  # object-typed row
            assert torch.equal(row["seq"], rows[i])  # type: ignore[arg-type]  # object-typed
            seen.append(i)
    assert sorted(seen) == list(range(6))


# ---------------------------------------------------------------------- equality and copies


def test_equals_compares_lengths_values_and_nans() -> None:
    rows = make_rows([2, 1])
    assert make_batch(rows).equals(make_batch([r.clone() for r in rows]))
    assert not make_batch(rows).equals(make_batch(make_rows([1, 2])))
    assert not Batch({"s": jagged(make_rows([2, 2]))}).equals(
        Batch({"s": torch.stack(make_rows([2, 2]))})
    )
    nan_rows = [torch.tensor([[float("nan"), 1.0]]), torch.zeros(0, 2)]
    assert Batch({"s": jagged(nan_rows)}).equals(Batch({"s": jagged(nan_rows)}))


def test_deepcopy_does_not_share_values() -> None:
    b = make_batch(make_rows([2, 3]))
    clone = copy.deepcopy(b)
    assert clone.equals(b)
    clone.tensors["seq"].values().add_(1)
    assert not clone.equals(b)


def test_a_non_contiguous_jagged_column_is_compacted() -> None:
    base = torch.arange(12.0).reshape(3, 4)
    holes = torch.nested.narrow(
        base, 1, torch.tensor([0, 1, 0]), torch.tensor([2, 1, 3]), layout=torch.jagged
    )
    b = Batch({"s": holes})
    expected = [torch.tensor([0.0, 1.0]), torch.tensor([5.0]), torch.tensor([8.0, 9.0, 10.0])]
    for got, want in zip(rows_of(b.rename("s", "seq")), expected, strict=True):
        assert torch.equal(got, want)
    again = pickle.loads(pickle.dumps(b, protocol=5))
    assert again.equals(Batch({"s": jagged(expected)}))
    assert b.chunk(3)[2].tensors["s"].values().tolist() == [8.0, 9.0, 10.0]


# ---------------------------------------------------------------------- wire format


@PROPERTY
@given(lengths_st, st.sampled_from([4, 5]))
def test_pickle_round_trip(lengths: list[int], protocol: int) -> None:
    b = make_batch(make_rows(lengths))
    buffers: list[pickle.PickleBuffer] = []
    callback = buffers.append if protocol >= 5 else None
    data = pickle.dumps(b, protocol=protocol, buffer_callback=callback)
    assert pickle.loads(data, buffers=buffers).equals(b)
    assert len(buffers) == (3 if protocol >= 5 else 0)  # seq values, seq offsets, id


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.int32, torch.bool, torch.complex64])
def test_pickle_round_trip_other_dtypes(dtype: torch.dtype) -> None:
    rows = [torch.ones(2, 3, dtype=dtype), torch.zeros(1, 3, dtype=dtype)]
    b = Batch({"s": jagged(rows)})
    assert pickle.loads(pickle.dumps(b, protocol=5)).equals(b)


def test_a_slice_ships_only_its_own_values() -> None:
    rows = make_rows([100, 1, 2, 100])
    piece = make_batch(rows)[1:3]
    buffers: list[pickle.PickleBuffer] = []
    pickle.dumps(piece.select(["seq"]), protocol=5, buffer_callback=buffers.append)
    sizes = sorted(memoryview(b).nbytes for b in buffers)
    assert sizes == [3 * 8, 3 * 2 * 4]  # 3 int64 offsets, 3 rows of 2 float32


def test_corrupt_offsets_are_a_batch_error() -> None:
    b = Batch({"s": jagged(make_rows([1, 2]))})
    reduced: Any = b.__reduce_ex__(4)
    rebuild, (payload,) = reduced
    payload["tensors"][0]["offsets"] = np.array([0, 1, 7], dtype=np.int64).tobytes()
    with pytest.raises(BatchError, match=r"jagged column 's' has offsets that do not span"):
        rebuild(payload)
