"""Auto-padding (per batch, global config, environment; blocking and not) and batch futures.

Worker: ``Calc.add_rank`` adds the rank to column ``a`` in place and tags each row with its
rank. With padding, ``n`` rows on 4 ranks are padded to ``4 * ceil(n / 4)``, so row ``i`` is
processed by rank ``i // ceil(n / 4)``; the padding rows are dropped from the result.
"""

from __future__ import annotations

import asyncio
import copy
import math
from collections.abc import Callable, Iterator

import pytest
import torch

from runtime import Batch, BatchFuture, WorkerGroup, batch_config, get_method_meta, plan_call
from runtime.errors import DispatchError
from runtime.testing.conformance.workers import Calc

__all__ = [
    "check_padded_result",
    "enable_padding",
    "numbered",
    "owner",
    "padding_off_everywhere",
    "test_a_non_batch_future_cannot_be_passed_on",
    "test_auto_padding_returns_exactly_the_input_rows_in_order",
    "test_auto_padding_with_a_keyword_batch_argument",
    "test_await_a_future",
    "test_disabling_padding_per_batch_is_respected",
    "test_divisible_batch_needs_no_padding",
    "test_each_consumer_fetches_only_the_producer_parts_it_needs",
    "test_future_chained_through_a_non_blocking_call",
    "test_future_into_a_group_of_another_size",
    "test_future_into_the_same_group",
    "test_padded_future_passed_on",
    "test_padding_off_rejects_a_batch_that_does_not_divide",
    "test_reordered_future_passed_on",
    "test_verl_per_instance_flag_via_from_dict",
]

ENV_FLAG = "RUNTIME_AUTO_PADDING"


def numbered(n: int) -> Batch:
    """``a = idx = arange(n)`` plus a uid column (non-tensor data must travel too)."""
    return Batch.from_dict(
        {"a": torch.arange(n), "idx": torch.arange(n)}, {"uid": [f"u{i}" for i in range(n)]}
    )


def owner(i: int, n: int, ranks: int) -> int:
    """The rank that processes row ``i`` of ``n`` rows split (padded) over ``ranks`` ranks."""
    return i // math.ceil(n / ranks)


@pytest.fixture(autouse=True)
def padding_off_everywhere(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test starts with padding off everywhere and leaves the global config as found."""
    monkeypatch.delenv(ENV_FLAG, raising=False)
    saved = batch_config.auto_padding
    batch_config.auto_padding = False
    try:
        yield
    finally:
        batch_config.auto_padding = saved


Enable = Callable[[Batch], Batch]


@pytest.fixture(params=["per_batch", "global_config", "env_var"])
def enable_padding(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Enable:
    """Turn padding on one of the three ways; returns how to prepare a batch for the call."""
    how: str = request.param
    if how == "per_batch":
        return lambda b: b.with_auto_padding()
    if how == "global_config":
        batch_config.auto_padding = True  # restored by padding_off_everywhere
    else:
        monkeypatch.setenv(ENV_FLAG, "1")
    return lambda b: b


def check_padded_result(out: Batch, n: int, ranks: int) -> None:
    assert len(out) == n
    assert out.tensors["idx"].tolist() == list(range(n))
    assert list(out.non_tensors["uid"]) == [f"u{i}" for i in range(n)]
    owners = [owner(i, n, ranks) for i in range(n)]
    assert out.tensors["rank"].tolist() == owners
    assert out.tensors["a"].tolist() == [i + r for i, r in enumerate(owners)]


# --------------------------------------------------------------------------- padding
@pytest.mark.parametrize("n", [10, 1, 8])
@pytest.mark.parametrize("style", ["positional", "keyword", "submit", "submit_keyword"])
def test_auto_padding_returns_exactly_the_input_rows_in_order(
    calc4: WorkerGroup[Calc], enable_padding: Enable, n: int, style: str
) -> None:
    caller = enable_padding(numbered(n))
    before = copy.deepcopy(caller)
    out: Batch
    if style == "positional":
        out = calc4.call(Calc.add_rank, caller)
    elif style == "keyword":
        out = calc4.call_by_name("add_rank", data=caller)
    elif style == "submit":
        future = calc4.submit(Calc.add_rank, caller)
        assert isinstance(future, BatchFuture)
        assert len(future) == n
        out = future.get(timeout=60)
    else:
        future = calc4.submit_by_name("add_rank", data=caller)
        assert isinstance(future, BatchFuture)
        out = future.get(timeout=60)
    check_padded_result(out, n, 4)
    assert caller.equals(before), "the caller's batch was mutated"


def test_auto_padding_with_a_keyword_batch_argument(
    calc4: WorkerGroup[Calc], enable_padding: Enable
) -> None:
    left = enable_padding(Batch({"a": torch.arange(10)}))
    right = enable_padding(Batch({"b": torch.arange(10) + 50}))
    out = calc4.call(Calc.merge, left, right=right)
    assert out.tensors["a"].tolist() == [i * 100 + i + 50 for i in range(10)]
    assert out.tensors["rank"].tolist() == [owner(i, 10, 4) for i in range(10)]


def test_verl_per_instance_flag_via_from_dict(calc4: WorkerGroup[Calc]) -> None:
    data = Batch.from_dict({"a": torch.arange(10), "idx": torch.arange(10)}, auto_padding=True)
    out = calc4.call(Calc.add_rank, data)
    assert out.tensors["idx"].tolist() == list(range(10))
    single = Batch.from_single_dict(
        {"a": torch.arange(1), "idx": torch.arange(1)}, auto_padding=True
    )
    assert calc4.call(Calc.add_rank, single).tensors["a"].tolist() == [0]


def test_divisible_batch_needs_no_padding(calc4: WorkerGroup[Calc]) -> None:
    out = calc4.call(Calc.add_rank, numbered(8))
    check_padded_result(out, 8, 4)


def test_padding_off_rejects_a_batch_that_does_not_divide(calc4: WorkerGroup[Calc]) -> None:
    caller = numbered(10)
    before = copy.deepcopy(caller)
    with pytest.raises(DispatchError, match=r"10 rows does not split evenly over 4") as info:
        calc4.call(Calc.add_rank, caller)
    assert "with_auto_padding" in str(info.value)
    with pytest.raises(DispatchError):
        calc4.submit(Calc.add_rank, caller)
    assert caller.equals(before)
    assert not caller.padding_enabled


def test_disabling_padding_per_batch_is_respected(calc4: WorkerGroup[Calc]) -> None:
    data = numbered(10).with_auto_padding().with_auto_padding(False)
    with pytest.raises(DispatchError):
        calc4.call(Calc.add_rank, data)


# --------------------------------------------------------------------------- futures
def test_future_into_the_same_group(calc4: WorkerGroup[Calc]) -> None:
    first = calc4.submit(Calc.add_rank, numbered(8))
    out = calc4.call(Calc.add_rank, first)
    assert out.tensors["a"].tolist() == [i + 2 * (i // 2) for i in range(8)]
    assert out.tensors["idx"].tolist() == list(range(8))
    # The future still resolves on the driver afterwards.
    assert first.get().tensors["a"].tolist() == [i + i // 2 for i in range(8)]


def test_future_into_a_group_of_another_size(
    calc4: WorkerGroup[Calc], calc2: WorkerGroup[Calc]
) -> None:
    first = calc4.submit(Calc.add_rank, numbered(8))
    out = calc2.call(Calc.add_initial, first, initial_value=0)
    # + rank on 4 ranks (i // 2), then + rank on 2 ranks (i // 4).
    assert out.tensors["a"].tolist() == [i + i // 2 + i // 4 for i in range(8)]


def test_future_chained_through_a_non_blocking_call(
    calc4: WorkerGroup[Calc], calc2: WorkerGroup[Calc]
) -> None:
    first = calc2.submit(Calc.add_initial, Batch({"a": torch.arange(4)}), initial_value=0)
    second = calc4.submit(Calc.add_initial, first, initial_value=100)
    assert isinstance(second, BatchFuture)
    # [0, 1, 3, 4] on 2 ranks, then + 100 + rank on 4 ranks.
    assert second.get(timeout=60).tensors["a"].tolist() == [100, 102, 105, 107]


def test_reordered_future_passed_on(calc4: WorkerGroup[Calc], calc2: WorkerGroup[Calc]) -> None:
    first = calc4.submit(Calc.add_rank, numbered(8))
    order = [7, 0, 6, 1, 5, 2, 4, 3]
    view = first.reorder(order)
    # Each of the 2 consumer ranks fetches its 4 rows of the view, in the view's order.
    out = calc2.call(Calc.add_initial, view, initial_value=0)
    produced = [i + i // 2 for i in range(8)]
    assert out.tensors["a"].tolist() == [produced[g] + k // 4 for k, g in enumerate(order)]
    assert view.get(timeout=60).tensors["a"].tolist() == [produced[g] for g in order]
    # A view of a view composes; the source future is unchanged.
    assert view.reorder(list(range(7, -1, -1))).get().tensors["idx"].tolist() == [
        3,
        4,
        2,
        5,
        1,
        6,
        0,
        7,
    ]
    assert first.get().tensors["idx"].tolist() == list(range(8))
    with pytest.raises(DispatchError, match="permutation"):
        first.reorder([0, 0, 1, 2, 3, 4, 5, 6])


def test_padded_future_passed_on(calc4: WorkerGroup[Calc], calc2: WorkerGroup[Calc]) -> None:
    first = calc4.submit(Calc.add_rank, numbered(10).with_auto_padding())
    assert len(first) == 10
    assert first.padding_enabled
    # 10 rows on 2 ranks (5 each): padding is off for the chained call and not needed.
    out = calc2.call(Calc.add_initial, first, initial_value=0)
    assert out.tensors["a"].tolist() == [i + owner(i, 10, 4) + i // 5 for i in range(10)]
    # 10 rows on 4 ranks again: the future's padding flag carries over.
    again = calc4.call(Calc.add_rank, first)
    assert again.tensors["idx"].tolist() == list(range(10))
    assert again.tensors["a"].tolist() == [i + 2 * owner(i, 10, 4) for i in range(10)]


def test_await_a_future(calc4: WorkerGroup[Calc], calc2: WorkerGroup[Calc]) -> None:
    async def main() -> tuple[list[int], Batch, int]:
        ranks = await calc4.submit(Calc.add, 1)
        batch = await calc2.submit(Calc.double_async, Batch({"a": torch.arange(4)}))
        zero = await calc4.submit(Calc.foo_rank_zero, 1, 2)
        return ranks, batch, zero

    ranks, batch, zero = asyncio.run(main())
    assert ranks == [1, 2, 3, 4]
    assert batch.tensors["a"].tolist() == [5, 7, 10, 12]
    assert zero == 5


def test_each_consumer_fetches_only_the_producer_parts_it_needs(
    calc4: WorkerGroup[Calc],
) -> None:
    future = calc4.submit(Calc.add_rank, numbered(8))
    meta = get_method_meta(Calc, "add_initial")
    assert meta is not None
    plan = plan_call(meta, 2, (future,), {}, share=lambda v: v, what="calc.add_initial")
    slices = [args[0] for args, _ in plan.per_rank]
    # 4 producer parts of 2 rows; consumer 0 needs parts 0-1, consumer 1 parts 2-3.
    assert [len(s.handles) for s in slices] == [2, 2]
    assert [s.expected for s in slices] == [(2, 2), (2, 2)]
    assert [s.rows for s in slices] == [(0, 1, 2, 3), (0, 1, 2, 3)]
    assert set(map(id, slices[0].handles)).isdisjoint(map(id, slices[1].handles))
    future.get()


def test_a_non_batch_future_cannot_be_passed_on(calc4: WorkerGroup[Calc]) -> None:
    pending = calc4.submit(Calc.add, 1)
    with pytest.raises(DispatchError, match=r"only batch futures"):
        calc4.call_by_name("add", pending)
    assert pending.get() == [1, 2, 3, 4]
