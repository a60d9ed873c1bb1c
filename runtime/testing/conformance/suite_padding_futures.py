"""Padding (a setting of the method or of the group view; blocking and not) and batch futures.

Worker: ``Calc.add_rank`` adds the rank to column ``a`` in place and tags each row with its
rank; ``Calc.add_rank_padded`` is the same method registered with ``pad=True``. With padding,
``n`` rows on 4 ranks are padded to ``4 * ceil(n / 4)``, so row ``i`` is processed by rank
``i // ceil(n / 4)``; the padding rows are dropped from the result.
"""

from __future__ import annotations

import asyncio
import copy
import math

import attrs
import pytest
import torch

from runtime import Batch, BatchFuture, WorkerGroup, get_method_meta, plan_call
from runtime.errors import DispatchError
from runtime.testing.conformance.workers import Calc

__all__ = [
    "Padded",
    "check_padded_result",
    "numbered",
    "owner",
    "padded",
    "test_a_non_batch_future_cannot_be_passed_on",
    "test_await_a_future",
    "test_divisible_batch_needs_no_padding",
    "test_each_consumer_fetches_only_the_producer_parts_it_needs",
    "test_future_chained_through_a_non_blocking_call",
    "test_future_into_a_group_of_another_size",
    "test_future_into_the_same_group",
    "test_padded_future_passed_on",
    "test_padding_off_rejects_a_batch_that_does_not_divide",
    "test_padding_returns_exactly_the_input_rows_in_order",
    "test_padding_with_a_keyword_batch_argument",
    "test_reordered_future_passed_on",
    "test_the_data_carries_no_padding_setting",
    "test_with_padding_is_a_view",
]


def numbered(n: int) -> Batch:
    """``a = idx = arange(n)`` plus a uid column (non-tensor data must travel too)."""
    return Batch.from_dict(
        {"a": torch.arange(n), "idx": torch.arange(n)}, {"uid": [f"u{i}" for i in range(n)]}
    )


def owner(i: int, n: int, ranks: int) -> int:
    """The rank that processes row ``i`` of ``n`` rows split (padded) over ``ranks`` ranks."""
    return i // math.ceil(n / ranks)


@attrs.frozen
class Padded:
    """A group with padding switched on one way: call the ``*_padded`` methods (registered
    with ``pad=True``) or the plain ones through a ``with_padding()`` view."""

    group: WorkerGroup[Calc]
    by_method: bool

    def add_rank(self, data: Batch | BatchFuture) -> Batch:
        method = Calc.add_rank_padded if self.by_method else Calc.add_rank
        return self.group.call(method, data)

    def submit_add_rank(self, data: Batch | BatchFuture) -> BatchFuture:
        method = Calc.add_rank_padded if self.by_method else Calc.add_rank
        return self.group.submit(method, data)

    def merge(self, left: Batch, right: Batch) -> Batch:
        method = Calc.merge_padded if self.by_method else Calc.merge
        return self.group.call(method, left, right=right)

    @property
    def add_rank_name(self) -> str:
        return "add_rank_padded" if self.by_method else "add_rank"


@pytest.fixture(params=["method", "group"])
def padded(request: pytest.FixtureRequest, calc4: WorkerGroup[Calc]) -> Padded:
    """Padding on through ``@register(..., pad=True)`` or through ``calc4.with_padding()``."""
    if request.param == "method":
        return Padded(calc4, by_method=True)
    return Padded(calc4.with_padding(), by_method=False)


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
def test_padding_returns_exactly_the_input_rows_in_order(
    padded: Padded, n: int, style: str
) -> None:
    caller = numbered(n)
    before = copy.deepcopy(caller)
    out: Batch
    if style == "positional":
        out = padded.add_rank(caller)
    elif style == "keyword":
        out = padded.group.call_by_name(padded.add_rank_name, data=caller)
    elif style == "submit":
        future = padded.submit_add_rank(caller)
        assert isinstance(future, BatchFuture)
        assert len(future) == n
        out = future.get(timeout=60)
    else:
        future = padded.group.submit_by_name(padded.add_rank_name, data=caller)
        assert isinstance(future, BatchFuture)
        out = future.get(timeout=60)
    check_padded_result(out, n, 4)
    assert caller.equals(before), "the caller's batch was mutated"


def test_padding_with_a_keyword_batch_argument(padded: Padded) -> None:
    out = padded.merge(Batch({"a": torch.arange(10)}), Batch({"b": torch.arange(10) + 50}))
    assert out.tensors["a"].tolist() == [i * 100 + i + 50 for i in range(10)]
    assert out.tensors["rank"].tolist() == [owner(i, 10, 4) for i in range(10)]


def test_divisible_batch_needs_no_padding(calc4: WorkerGroup[Calc]) -> None:
    out = calc4.call(Calc.add_rank, numbered(8))
    check_padded_result(out, 8, 4)


def test_padding_off_rejects_a_batch_that_does_not_divide(calc4: WorkerGroup[Calc]) -> None:
    caller = numbered(10)
    before = copy.deepcopy(caller)
    with pytest.raises(DispatchError, match=r"10 rows, which does not split evenly over 4") as info:
        calc4.call(Calc.add_rank, caller)
    message = str(info.value)
    for part in ("'add_rank'", "role 'calc'", "world size 4", "pad=True", "with_padding()"):
        assert part in message, (part, message)
    with pytest.raises(DispatchError):
        calc4.submit(Calc.add_rank, caller)
    assert caller.equals(before)


def test_with_padding_is_a_view(calc4: WorkerGroup[Calc]) -> None:
    view = calc4.with_padding()
    assert view.padding
    assert not calc4.padding
    assert view.with_timeout(30).padding, "with_timeout keeps the padding setting"
    assert not view.with_padding(False).padding
    check_padded_result(view.with_timeout(30).call(Calc.add_rank, numbered(10)), 10, 4)
    # The original group and a view with padding off still refuse; a pad=True method pads.
    for group in (calc4, view.with_padding(False)):
        with pytest.raises(DispatchError, match="does not split evenly"):
            group.call(Calc.add_rank, numbered(10))
        check_padded_result(group.call(Calc.add_rank_padded, numbered(10)), 10, 4)


def test_the_data_carries_no_padding_setting(calc4: WorkerGroup[Calc]) -> None:
    # A batch that went through a padded call is an ordinary batch afterwards.
    out = calc4.with_padding().call(Calc.add_initial, Batch({"a": torch.arange(10)}))
    assert out.meta == {}
    with pytest.raises(DispatchError, match="does not split evenly"):
        calc4.call(Calc.add_initial, out)


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
    first = calc4.submit(Calc.add_rank_padded, numbered(10))
    assert len(first) == 10
    # 10 rows on 2 ranks (5 each): no padding needed by the chained call.
    out = calc2.call(Calc.add_initial, first, initial_value=0)
    assert out.tensors["a"].tolist() == [i + owner(i, 10, 4) + i // 5 for i in range(10)]
    # 10 rows on 4 ranks again: the consumer pads because it is asked to, not the future.
    again = calc4.call(Calc.add_rank_padded, first)
    assert again.tensors["idx"].tolist() == list(range(10))
    assert again.tensors["a"].tolist() == [i + 2 * owner(i, 10, 4) for i in range(10)]
    with pytest.raises(DispatchError, match="does not split evenly"):
        calc4.call(Calc.add_rank, first)


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
