"""Unit and property tests for runtime._batch.Batch."""

from __future__ import annotations

import copy
import math
import pickle
import warnings
from typing import Any, cast

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import runtime._batch as batch_module
from runtime._batch import Batch, _rebuild_batch
from runtime.errors import BatchError

PROPERTY = settings(max_examples=50, deadline=None)


def make_batch(n: int, *, meta: dict[str, object] | None = None) -> Batch:
    """A batch with every column kind: float 2-D, bool, bf16, strings, ints, dicts."""
    return Batch.from_dict(
        {
            "x": torch.arange(n * 3, dtype=torch.float32).reshape(n, 3),
            "mask": torch.arange(n) % 2 == 0,
            "h": torch.arange(n, dtype=torch.bfloat16),
        },
        {
            "uid": [f"u{i}" for i in range(n)],
            "score": np.arange(n, dtype=np.int64) * 10,
            "info": [{"i": i, "tags": [i, i + 1]} for i in range(n)],
        },
        meta={"temperature": 1.0} if meta is None else meta,
    )


def row_ids(b: Batch) -> list[int]:
    """Row identities of a make_batch-derived batch (its "score" column / 10)."""
    return [int(v) // 10 for v in b.non_tensors["score"]]


# ---------------------------------------------------------------------- construction


def test_public_names() -> None:
    assert batch_module.__all__ == ["Batch"]


def test_length_mismatch_names_column_and_lengths() -> None:
    with pytest.raises(BatchError, match=r"tensor column 'b' has length 3 .* length 4"):
        Batch({"a": torch.zeros(4), "b": torch.zeros(3, 2)})
    with pytest.raises(BatchError, match=r"non-tensor column 'uid' has length 2 .* length 4"):
        Batch({"a": torch.zeros(4)}, {"uid": np.array(["p", "q"], dtype=object)})


def test_construction_rejects_malformed_columns() -> None:
    with pytest.raises(BatchError, match=r"'s' is 0-dimensional"):
        Batch({"s": torch.tensor(1.0)})
    with pytest.raises(BatchError, match=r"'uid' must be a numpy.ndarray.*from_dict"):
        Batch(non_tensors={"uid": cast(Any, ["a", "b"])})
    with pytest.raises(BatchError, match=r"'x' is used by both"):
        Batch({"x": torch.zeros(2)}, {"x": np.zeros(2)})
    with pytest.raises(BatchError, match=r"'x' must be a torch.Tensor"):
        Batch({"x": cast(Any, np.zeros(2))})


def test_len_of_empty_and_non_tensor_only_batches() -> None:
    assert len(Batch()) == 0
    assert len(Batch(meta={"a": 1})) == 0
    assert len(Batch(non_tensors={"u": np.arange(5)})) == 5
    assert len(make_batch(7)) == 7


def test_from_dict_makes_one_object_per_row() -> None:
    b = Batch.from_dict({"x": torch.zeros(2)}, {"pairs": [[1, 2], [3, 4]]}, {"k": 1})
    pairs = b.non_tensors["pairs"]
    assert pairs.dtype == object
    assert pairs.shape == (2,)
    assert pairs[1] == [3, 4]
    assert b.meta == {"k": 1}


def test_from_single_dict_splits_tensors_and_arrays() -> None:
    b = Batch.from_single_dict(
        {"x": torch.ones(3, 2), "uid": ["a", "b", "c"], "n": np.arange(3)}, meta={"m": 2}
    )
    assert list(b.tensors) == ["x"]
    assert list(b.non_tensors) == ["uid", "n"]
    assert b.non_tensors["uid"].dtype == object
    assert b.meta == {"m": 2}


def test_repr_is_short_and_names_columns() -> None:
    text = repr(make_batch(4))
    assert text.startswith("Batch(len=4")
    assert "'x': float32[4, 3]" in text
    assert "'uid': object[4]" in text
    assert "temperature" in text
    assert len(repr(make_batch(10_000))) < 400


# ---------------------------------------------------------------------- indexing


def test_int_index_returns_row_dict() -> None:
    b = make_batch(4)
    row = b[1]
    assert set(row) == {"x", "mask", "h", "uid", "score", "info"}
    x = row["x"]
    assert isinstance(x, torch.Tensor)
    assert x.tolist() == [3.0, 4.0, 5.0]
    assert row["uid"] == "u1"
    assert row["info"] == {"i": 1, "tags": [1, 2]}
    assert b[-1]["uid"] == "u3"
    assert b[np.int64(2)]["uid"] == "u2"
    with pytest.raises(IndexError, match="row 4 is out of range"):
        b[4]
    assert [r["uid"] for r in b] == ["u0", "u1", "u2", "u3"]


def test_slice_indexing_matches_python_slicing() -> None:
    b = make_batch(10)
    assert row_ids(b[2:8:2]) == [2, 4, 6]
    assert row_ids(b[-3:]) == [7, 8, 9]
    assert row_ids(b[::-3]) == [9, 6, 3, 0]
    assert row_ids(b.slice(1, 4)) == [1, 2, 3]
    assert b[2:5].tensors["x"].tolist() == b.tensors["x"][2:5].tolist()
    assert b[2:5].non_tensors["uid"].tolist() == ["u2", "u3", "u4"]
    assert len(b[5:5]) == 0
    with pytest.raises(BatchError, match="zero"):
        b.slice(0, 5, 0)


def test_index_lists_arrays_tensors_and_masks() -> None:
    b = make_batch(6)
    assert row_ids(b[[4, 0, 0, -1]]) == [4, 0, 0, 5]
    assert row_ids(b[np.array([1, 3], dtype=np.int32)]) == [1, 3]
    assert row_ids(b[torch.tensor([5, 2])]) == [5, 2]
    mask = [True, False, True, False, False, True]
    assert row_ids(b[mask]) == [0, 2, 5]
    assert row_ids(b[np.array(mask)]) == [0, 2, 5]
    assert row_ids(b[torch.tensor(mask)]) == [0, 2, 5]
    assert len(b[[]]) == 0
    picked = b[[3]]
    assert picked.non_tensors["info"][0] == {"i": 3, "tags": [3, 4]}
    assert picked.tensors["h"].dtype == torch.bfloat16
    assert picked.meta == b.meta


def test_bad_indices_raise() -> None:
    b = make_batch(3)
    with pytest.raises(IndexError, match="row index 3 is out of range"):
        b[[0, 3]]
    with pytest.raises(IndexError, match="bool mask has length 2"):
        b[[True, False]]
    with pytest.raises(TypeError, match="integer or bool"):
        b[torch.tensor([0.0])]
    with pytest.raises(TypeError, match="cannot index a Batch with str"):
        b[cast(Any, "x")]
    with pytest.raises(IndexError, match="1-D"):
        b[np.zeros((1, 1), dtype=np.int64)]


@PROPERTY
@given(st.data())
def test_select_idxs_matches_numpy_indexing(data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 20))
    idx = data.draw(st.lists(st.integers(-n, n - 1), max_size=30))
    b = make_batch(n)
    picked = b.select_idxs(idx)
    expected = np.arange(n)[np.array(idx, dtype=np.int64)]
    assert row_ids(picked) == expected.tolist()
    assert picked.tensors["x"].tolist() == b.tensors["x"][torch.tensor(expected)].tolist()


# ---------------------------------------------------------------------- chunk / split


def test_chunk_gives_equal_owned_pieces_and_copies_meta() -> None:
    b = make_batch(12, meta={"metrics": {"a": 1}, "t": 0.5})
    chunks = b.chunk(3)
    assert [row_ids(c) for c in chunks] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    for c in chunks:
        assert c.meta == b.meta
        assert c.meta is not b.meta
        for t in c.tensors.values():
            assert t.untyped_storage().nbytes() == t.numel() * t.element_size()
        for a in c.non_tensors.values():
            assert a.base is None
    chunks[0].meta["t"] = 9.0
    assert b.meta["t"] == 0.5
    chunks[0].tensors["x"][0, 0] = -1.0
    assert b.tensors["x"][0, 0].item() == 0.0


def test_chunk_rejects_uneven_length_and_suggests_padding() -> None:
    with pytest.raises(BatchError, match=r"length 10 into 3 .*pad_to_multiple.*with_padding"):
        make_batch(10).chunk(3)
    with pytest.raises(BatchError, match="n >= 1"):
        make_batch(2).chunk(0)
    assert [len(c) for c in Batch({"x": torch.zeros(0)}).chunk(2)] == [0, 0]


def test_split_last_piece_may_be_short() -> None:
    pieces = make_batch(7).split(3)
    assert [row_ids(p) for p in pieces] == [[0, 1, 2], [3, 4, 5], [6]]
    assert make_batch(0).split(3) == []


@PROPERTY
@given(st.integers(1, 40), st.integers(1, 8))
def test_pad_chunk_concat_unpad_round_trip(length: int, n: int) -> None:
    b = make_batch(length, meta={"temperature": 0.7})
    padded, pad = b.pad_to_multiple(n)
    assert pad == -length % n
    assert len(padded) % n == 0
    chunks = padded.chunk(n)
    assert len(chunks) == n
    assert {len(c) for c in chunks} == {len(padded) // n}
    back = Batch.concat(chunks).unpad(pad)
    assert back.equals(b)
    assert back.non_tensors["info"].tolist() == b.non_tensors["info"].tolist()


@PROPERTY
@given(st.integers(1, 25), st.integers(1, 60))
def test_pad_repeats_rows_cyclically_and_never_mutates(length: int, n: int) -> None:
    b = make_batch(length)
    before = copy.deepcopy(b)
    storages = {k: t.untyped_storage().data_ptr() for k, t in b.tensors.items()}
    padded, pad = b.pad_to_multiple(n)
    assert padded is not b
    assert row_ids(padded) == [i % length for i in range(length + pad)]
    assert b.equals(before)
    assert len(b) == length
    assert {k: t.untyped_storage().data_ptr() for k, t in b.tensors.items()} == storages


def test_pad_larger_than_length_and_edge_cases() -> None:
    padded, pad = make_batch(3).pad_to_multiple(8)
    assert pad == 5
    assert row_ids(padded) == [0, 1, 2, 0, 1, 2, 0, 1]
    same, zero = make_batch(4).pad_to_multiple(2)
    assert zero == 0
    assert row_ids(same) == [0, 1, 2, 3]
    with pytest.raises(BatchError, match="empty batch"):
        make_batch(0).pad_to_multiple(2)
    b = make_batch(4)
    assert b.unpad(0) is b
    assert row_ids(b.unpad(1)) == [0, 1, 2]
    with pytest.raises(BatchError, match="cannot unpad 5 rows"):
        b.unpad(5)


# ---------------------------------------------------------------------- concat


def test_concat_merges_metrics_into_dict_of_lists() -> None:
    parts = [
        make_batch(2, meta={"metrics": {"loss": 1.0, "kl": 0.1}, "step": 3}),
        make_batch(2, meta={"metrics": [{"loss": 2.0}, {"loss": 3.0}], "step": 3}),
        make_batch(1, meta={"step": 3}),
    ]
    out = Batch.concat(parts)
    assert out.meta == {"metrics": {"loss": [1.0, 2.0, 3.0], "kl": [0.1]}, "step": 3}
    assert len(out) == 5
    assert row_ids(out) == [0, 1, 0, 1, 0]
    assert parts[0].meta["metrics"] == {"loss": 1.0, "kl": 0.1}


def test_concat_rejects_conflicting_meta_and_columns() -> None:
    with pytest.raises(BatchError, match=r"meta key 'step' differs.*3 \(part 0\) vs 4 \(part 1\)"):
        Batch.concat([make_batch(1, meta={"step": 3}), make_batch(1, meta={"step": 4})])
    with pytest.raises(BatchError, match=r"part 1 has tensor columns.*missing: \['mask'\]"):
        Batch.concat([make_batch(2), make_batch(2).select(tensor_keys=["x", "h"])])
    with pytest.raises(BatchError, match="at least one batch"):
        Batch.concat([])
    with pytest.raises(BatchError, match=r"tensor column 'x'.*part 1 is float64"):
        Batch.concat(
            [Batch({"x": torch.zeros(1)}), Batch({"x": torch.zeros(1, dtype=torch.float64)})]
        )
    with pytest.raises(BatchError, match=r"meta\['metrics'\] of part 0"):
        Batch.concat([Batch(meta={"metrics": 3.0})])


def test_concat_accepts_equal_array_and_nan_meta() -> None:
    meta: dict[str, object] = {"w": np.array([1.0, math.nan]), "t": torch.ones(2)}
    out = Batch.concat([make_batch(1, meta=dict(meta)), make_batch(1, meta=dict(meta))])
    assert set(out.meta) == {"w", "t"}


# ---------------------------------------------------------------------- union / select / pop


def test_union_returns_new_batch_and_checks_conflicts() -> None:
    left = make_batch(3).select(tensor_keys=["x"], non_tensor_keys=["info"], meta_keys=[])
    right = make_batch(3).select(tensor_keys=["x", "mask"], non_tensor_keys=["uid", "info"])
    both = left.union(right)
    assert set(both.tensors) == {"x", "mask"}
    assert set(both.non_tensors) == {"info", "uid"}
    assert both.meta == {"temperature": 1.0}
    assert set(left.tensors) == {"x"}
    assert left.meta == {}

    other = make_batch(3)
    other.tensors["x"] = other.tensors["x"] + 1
    with pytest.raises(BatchError, match="tensor column 'x' differs"):
        left.union(other)
    changed = make_batch(3).select(tensor_keys=[], non_tensor_keys=["info"])
    changed.non_tensors["info"] = changed.non_tensors["info"].copy()
    changed.non_tensors["info"][1] = {"i": 1, "tags": [1, 99]}
    with pytest.raises(BatchError, match="non-tensor column 'info' differs"):
        left.union(changed)
    with pytest.raises(BatchError, match=r"meta key 'temperature' differs.*1.0.*2.0"):
        make_batch(3).union(make_batch(3, meta={"temperature": 2.0}))
    with pytest.raises(BatchError, match="lengths 3 and 4"):
        make_batch(3).union(make_batch(4))
    assert Batch(meta={"k": 1}).union(make_batch(4)).meta == {"k": 1, "temperature": 1.0}


def test_union_deep_equality_handles_nan_dicts_and_lists() -> None:
    def build() -> Batch:
        return Batch.from_dict(
            {"v": torch.tensor([math.nan, 1.0])},
            {
                "obj": [{"a": [1, math.nan]}, [math.nan, {"b": None}]],
                "f": np.array([math.nan, 2.0]),
            },
        )

    merged = build().union(build())
    assert len(merged) == 2
    assert build().equals(build())
    assert not build().equals(build().to("cpu").rename("obj", "obj2"))


def test_select_and_pop() -> None:
    b = make_batch(4, meta={"a": 1, "b": 2})
    sub = b.select(tensor_keys=["x"], non_tensor_keys=["uid"], meta_keys=["b"])
    assert list(sub.tensors) == ["x"]
    assert list(sub.non_tensors) == ["uid"]
    assert sub.meta == {"b": 2}
    assert sub.tensors["x"] is b.tensors["x"]
    everything = b.select()
    assert everything.equals(b)
    with pytest.raises(BatchError, match=r"unknown tensor column 'nope'; available: \['x'"):
        b.select(tensor_keys=["nope"])
    with pytest.raises(TypeError, match=r"use \['x'\]"):
        b.select(tensor_keys="x")

    with pytest.raises(BatchError, match="unknown meta key 'zzz'"):
        b.pop(tensor_keys=["x"], meta_keys=["zzz"])
    assert "x" in b.tensors  # a failed pop removes nothing
    popped = b.pop(tensor_keys=["x"], non_tensor_keys=["info"], meta_keys=["a"])
    assert list(popped.tensors) == ["x"]
    assert list(popped.non_tensors) == ["info"]
    assert popped.meta == {"a": 1}
    assert "x" not in b.tensors
    assert "info" not in b.non_tensors
    assert b.meta == {"b": 2}
    assert len(b) == 4


def test_rename_reorder_to_copy() -> None:
    b = make_batch(4)
    renamed = b.rename("x", "y").rename("uid", "id")
    assert list(renamed.tensors) == ["y", "mask", "h"]
    assert list(renamed.non_tensors) == ["id", "score", "info"]
    assert "x" in b.tensors
    with pytest.raises(BatchError, match="column 'mask' already exists"):
        b.rename("x", "mask")
    with pytest.raises(BatchError, match="cannot rename 'q'"):
        b.rename("q", "r")

    assert row_ids(b.reorder([2, 0, 3, 1])) == [2, 0, 3, 1]
    assert row_ids(b) == [0, 1, 2, 3]
    with pytest.raises(BatchError, match="permutation"):
        b.reorder([0, 0, 1, 2])

    moved = b.to(torch.device("cpu"))
    assert moved.equals(b)
    assert copy.copy(b).equals(b)
    deep = copy.deepcopy(b)
    assert deep.equals(b)
    assert deep.tensors["x"].data_ptr() != b.tensors["x"].data_ptr()


# ---------------------------------------------------------------------- repeat


def test_repeat_interleave_and_tile_exact_values() -> None:
    b = Batch.from_dict({"x": torch.tensor([[1, 2], [3, 4]])}, {"u": ["a", "b"]}, {"m": 1})
    inter = b.repeat(2, interleave=True)
    assert inter.tensors["x"].tolist() == [[1, 2], [1, 2], [3, 4], [3, 4]]
    assert inter.non_tensors["u"].tolist() == ["a", "a", "b", "b"]
    tiled = b.repeat(3, interleave=False)
    assert tiled.tensors["x"].tolist() == [[1, 2], [3, 4]] * 3
    assert tiled.non_tensors["u"].tolist() == ["a", "b", "a", "b", "a", "b"]
    assert tiled.meta == {"m": 1}
    assert len(b) == 2
    assert len(b.repeat(0)) == 0


# ---------------------------------------------------------------------- serialization


def dump_out_of_band(b: Batch) -> tuple[bytes, list[pickle.PickleBuffer]]:
    buffers: list[pickle.PickleBuffer] = []
    data = pickle.dumps(b, protocol=5, buffer_callback=buffers.append)
    return data, buffers


def round_trip_out_of_band(b: Batch) -> object:
    data, buffers = dump_out_of_band(b)
    return pickle.loads(data, buffers=buffers)


def test_pickle_protocol_5_ships_tensors_out_of_band() -> None:
    b = make_batch(16, meta={"metrics": {"loss": 1.5}})
    data, buffers = dump_out_of_band(b)
    # x, mask, h (tensors) and score (numeric array); uid and info are object arrays.
    assert len(buffers) == 4
    assert sum(buf.raw().nbytes for buf in buffers) == 16 * 3 * 4 + 16 + 16 * 2 + 16 * 8
    assert len(data) < 2_000
    back = pickle.loads(data, buffers=buffers)
    assert isinstance(back, Batch)
    assert back.equals(b)


def test_pickle_slice_of_large_tensor_ships_only_its_rows() -> None:
    big = Batch({"x": torch.arange(1_000_000, dtype=torch.float32)})
    one = big[500:501]
    assert one.tensors["x"].untyped_storage().nbytes() == 4_000_000  # it is a view
    in_band = pickle.dumps(one, protocol=5)
    assert len(in_band) < 2_000
    data, buffers = dump_out_of_band(one)
    assert [buf.raw().nbytes for buf in buffers] == [4]
    back = pickle.loads(data, buffers=buffers)
    assert isinstance(back, Batch)
    assert back.tensors["x"].tolist() == [500.0]
    strided = Batch({"x": torch.arange(1_000_000, dtype=torch.float32).reshape(1000, 1000).T})
    assert len(pickle.dumps(strided[:1], protocol=5)) < 8_000


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_pickle_in_band_round_trip(protocol: int) -> None:
    b = make_batch(5, meta={"metrics": [{"a": 1}], "flag": True})
    back = pickle.loads(pickle.dumps(b, protocol=protocol))
    assert isinstance(back, Batch)
    assert back.equals(b)
    back.tensors["x"][0, 0] = 42.0  # received tensors are writable
    assert b.tensors["x"][0, 0].item() == 0.0


@pytest.mark.parametrize(
    "tensor",
    [
        torch.tensor([1.5, -2.25, 3.0], dtype=torch.bfloat16),
        torch.tensor([True, False, True]),
        torch.tensor([[1 + 2j], [3 - 4j]], dtype=torch.complex64),
        torch.tensor([-128, 0, 127], dtype=torch.int8),
        torch.tensor([0.5, 65504.0], dtype=torch.float16),
        torch.zeros(0, 4, dtype=torch.bfloat16),
        torch.arange(12, dtype=torch.int64).reshape(3, 4).T,
    ],
)
def test_pickle_exotic_dtypes_and_layouts(tensor: torch.Tensor) -> None:
    b = Batch({"t": tensor})
    for back in (
        round_trip_out_of_band(b),
        pickle.loads(pickle.dumps(b, protocol=4)),
    ):
        assert isinstance(back, Batch)
        got = back.tensors["t"]
        assert got.dtype == tensor.dtype
        assert got.shape == tensor.shape
        assert torch.equal(got, tensor)


def test_pickle_read_only_buffers_are_copied_without_warning() -> None:
    b = make_batch(8)
    data, buffers = dump_out_of_band(b)
    read_only = [memoryview(bytes(buf.raw())) for buf in buffers]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        back = pickle.loads(data, buffers=read_only)
    assert isinstance(back, Batch)
    assert back.equals(b)
    back.tensors["x"] += 1  # writable even though the buffers were not


def test_pickle_writable_buffers_are_used_without_copy() -> None:
    b = Batch({"x": torch.arange(1024, dtype=torch.float32)})
    data, buffers = dump_out_of_band(b)
    writable = [bytearray(buf.raw()) for buf in buffers]
    address = np.frombuffer(writable[0], dtype=np.uint8).ctypes.data
    back = pickle.loads(data, buffers=writable)
    assert isinstance(back, Batch)
    assert back.tensors["x"].data_ptr() == address
    assert back.equals(b)


def test_pickle_object_arrays_of_dicts_and_numeric_arrays() -> None:
    b = Batch.from_dict(
        non_tensors={
            "rm": [{"ground_truth": "4", "style": "rule"}, {"ground_truth": [1, 2]}],
            "nested": np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32)[:, ::-1],
            "words": np.array(["ab", "c"]),
            "when": np.array(["2024-01-01", "2025-06-30"], dtype="datetime64[D]"),
        },
        meta={"note": {"k": [1, 2]}},
    )
    back = round_trip_out_of_band(b)
    assert isinstance(back, Batch)
    assert back.equals(b)
    assert back.non_tensors["rm"][0] == {"ground_truth": "4", "style": "rule"}
    assert back.non_tensors["nested"].tolist() == [[2.0, 1.0], [4.0, 3.0]]
    assert back.non_tensors["words"].dtype == np.dtype("<U2")


def test_unknown_wire_format_is_rejected() -> None:
    with pytest.raises(BatchError, match=r"unknown batch wire format 'runtime.batch/999'"):
        _rebuild_batch({"format": "runtime.batch/999"})


# ---------------------------------------------------------------------- make_iterator


def test_make_iterator_covers_each_row_once_per_epoch() -> None:
    b = make_batch(12)
    minis = list(b.make_iterator(mini_batch_size=4, epochs=3, seed=7))
    assert len(minis) == 9
    assert all(len(m) == 4 for m in minis)
    for epoch in range(3):
        seen = [r for m in minis[epoch * 3 : epoch * 3 + 3] for r in row_ids(m)]
        assert sorted(seen) == list(range(12))
    first_epoch = [r for m in minis[:3] for r in row_ids(m)]
    second_epoch = [r for m in minis[3:6] for r in row_ids(m)]
    assert first_epoch != second_epoch


def test_make_iterator_is_deterministic_for_a_seed() -> None:
    b = make_batch(16)

    def order(seed: int) -> list[list[int]]:
        return [row_ids(m) for m in b.make_iterator(4, epochs=2, seed=seed)]

    assert order(3) == order(3)
    assert order(3) != order(4)
    plain = [row_ids(m) for m in b.make_iterator(8, epochs=1, shuffle=False)]
    assert plain == [list(range(8)), list(range(8, 16))]
    with pytest.raises(BatchError, match="not a multiple of mini_batch_size 5"):
        b.make_iterator(5, epochs=1)


def test_chunk_without_copy_gives_views_that_still_ship_only_their_rows() -> None:
    b = Batch({"x": torch.arange(4_000, dtype=torch.float32).reshape(1_000, 4)})
    chunks = b.chunk(4, copy=False)
    assert [len(c) for c in chunks] == [250] * 4
    assert chunks[1].tensors["x"].untyped_storage().data_ptr() == b.tensors["x"].data_ptr()
    assert Batch.concat(chunks).equals(b)
    data, buffers = dump_out_of_band(chunks[3])
    assert [buf.raw().nbytes for buf in buffers] == [250 * 4 * 4]
    back = pickle.loads(data, buffers=buffers)
    assert back.equals(chunks[3])
