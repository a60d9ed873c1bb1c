"""Every row of the dispatch table, with verl's numbers, on every backend.

The mesh row lives in ``test_fusion_mesh.py`` and padding/futures in ``test_padding_futures.py``.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pickle
import subprocess
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import torch

import runtime
from runtime import (
    Batch,
    BatchFuture,
    Dispatch,
    GroupFuture,
    HostLaunch,
    ResourcePool,
    WorkerContext,
    WorkerGroup,
    WorkerSpec,
    get_method_meta,
    plan_call,
    plan_placement,
    register,
    register_dispatch_mode,
    registered_methods,
    remove_dispatch_mode,
    update_dispatch_mode,
)
from runtime.errors import DispatchError
from runtime.testing import InProcessBackend
from runtime.testing.conformance._support import cpu_pool
from runtime.testing.conformance.workers import Calc, all_worker_classes

__all__ = [
    "rank_times",
    "square_plus_one",
    "temp_mode",
    "test_all_to_all_by_name_takes_one_list_per_argument",
    "test_all_to_all_typed_per_rank_call",
    "test_call_by_name_one_to_all",
    "test_custom_mode_by_name",
    "test_custom_mode_registry_register_update_remove",
    "test_custom_mode_typed_call",
    "test_dp_compute_metric_returns_the_raw_per_rank_list",
    "test_dp_compute_proto_async_def_with_submit",
    "test_dp_compute_proto_by_name",
    "test_dp_compute_proto_splits_in_rank_order",
    "test_dp_compute_proto_verl_numbers",
    "test_dp_compute_proto_with_a_keyword_batch",
    "test_dp_compute_proto_with_func_replicates_the_function",
    "test_dp_compute_takes_pre_sharded_lists",
    "test_every_backend_fixture_implements_the_protocol",
    "test_group_lists_its_registered_methods",
    "test_inprocess_backend_implements_the_protocol",
    "test_inprocess_calls_run_in_the_calling_thread_without_subprocesses",
    "test_live_worker_instances_and_host_launch_survive_pickle",
    "test_one_to_all_add_gives_x_plus_rank",
    "test_one_to_all_async_def_method",
    "test_one_to_all_shares_one_value_and_never_aliases_the_callers",
    "test_one_to_all_submit_returns_a_list_future",
    "test_per_rank_arguments_are_not_shared_between_ranks",
    "test_rank_zero_async_and_submit",
    "test_rank_zero_dispatch_mode_implies_rank_zero_execution",
    "test_rank_zero_returns_rank_zeros_scalar",
    "test_register_only_attaches_metadata",
    "test_run_function_runs_a_driver_function_on_every_rank",
    "test_worker_classes_survive_pickle",
]


def square_plus_one(data: Batch) -> Batch:
    """A driver-defined function shipped to every rank by DP_COMPUTE_PROTO_WITH_FUNC."""
    return Batch({"a": data.tensors["a"] ** 2 + 1})


def rank_times(worker: Calc, k: int) -> int:
    """A driver-defined function run on every rank by ``run_function``."""
    return worker.ctx.rank * k


# --------------------------------------------------------------------------- ONE_TO_ALL
def test_one_to_all_add_gives_x_plus_rank(calc4: WorkerGroup[Calc]) -> None:
    assert calc4.call(Calc.add, 1) == [1, 2, 3, 4]
    assert calc4.call(Calc.add, x=10) == [10, 11, 12, 13]


def test_one_to_all_async_def_method(calc4: WorkerGroup[Calc]) -> None:
    assert calc4.call(Calc.add_async, 1) == [1, 2, 3, 4]


def test_one_to_all_submit_returns_a_list_future(calc4: WorkerGroup[Calc]) -> None:
    future = calc4.submit(Calc.add, 5)
    assert isinstance(future, GroupFuture)
    assert type(future) is GroupFuture  # not a BatchFuture
    assert future.get(timeout=30) == [5, 6, 7, 8]
    assert future.get() == [5, 6, 7, 8]  # cached


def test_one_to_all_shares_one_value_and_never_aliases_the_callers(
    calc4: WorkerGroup[Calc],
) -> None:
    # Every rank increments its copy in place; nobody sees another rank's (or the caller's) edit.
    t = torch.zeros(3)
    assert calc4.call(Calc.tensor_sum, t) == [3.0, 3.0, 3.0, 3.0]
    assert torch.equal(t, torch.zeros(3))
    data = Batch({"a": torch.zeros(3)})
    assert calc4.call(Calc.batch_sum, data) == [3.0, 3.0, 3.0, 3.0]
    assert data.tensors["a"].tolist() == [0.0, 0.0, 0.0]


def test_call_by_name_one_to_all(calc4: WorkerGroup[Calc]) -> None:
    assert calc4.call_by_name("add", 1) == [1, 2, 3, 4]
    assert calc4.submit_by_name("add", x=2).get() == [2, 3, 4, 5]


def test_run_function_runs_a_driver_function_on_every_rank(calc4: WorkerGroup[Calc]) -> None:
    assert calc4.run_function(rank_times, 7) == [0, 7, 14, 21]
    assert calc4.run_function(rank_times, k=2) == [0, 2, 4, 6]


# --------------------------------------------------------------------------- rank zero
def test_rank_zero_returns_rank_zeros_scalar(calc4: WorkerGroup[Calc]) -> None:
    # verl: foo_rank_zero(x=1, y=2) with ALL_TO_ALL + Execute.RANK_ZERO gives the scalar 5.
    result = calc4.call(Calc.foo_rank_zero, x=1, y=2)
    assert result == 5
    assert isinstance(result, int)
    assert calc4.call_by_name("foo_rank_zero", x=1, y=2) == 5


def test_rank_zero_async_and_submit(calc4: WorkerGroup[Calc]) -> None:
    assert calc4.call(Calc.rank_zero_async, 3) == 30
    future = calc4.submit(Calc.foo_rank_zero, 1, 2)
    assert isinstance(future, GroupFuture)
    assert future.get(timeout=30) == 5


def test_rank_zero_dispatch_mode_implies_rank_zero_execution() -> None:
    class Solo:
        @register(Dispatch.RANK_ZERO)
        def only(self) -> int:
            return 0

    meta = get_method_meta(Solo, "only")
    assert meta is not None
    assert meta.execute is runtime.Execute.RANK_ZERO


# --------------------------------------------------------------------------- ALL_TO_ALL
def test_all_to_all_typed_per_rank_call(calc4: WorkerGroup[Calc]) -> None:
    # verl: foo(x=[1,2,3,4], y=[5,6,7,8]) computing x + y per rank -> [6, 8, 10, 12].
    per_rank = [Calc.foo.bind(x=x, y=y) for x, y in zip([1, 2, 3, 4], [5, 6, 7, 8], strict=True)]
    assert calc4.call_per_rank(Calc.foo, per_rank) == [6, 8, 10, 12]
    positional = [Calc.foo.bind(x, y) for x, y in zip([1, 2, 3, 4], [5, 6, 7, 8], strict=True)]
    assert calc4.submit_per_rank(Calc.foo, positional).get() == [6, 8, 10, 12]


def test_all_to_all_by_name_takes_one_list_per_argument(calc4: WorkerGroup[Calc]) -> None:
    assert calc4.call_by_name("foo", x=[1, 2, 3, 4], y=[5, 6, 7, 8]) == [6, 8, 10, 12]
    assert calc4.call_by_name("foo", [1, 2, 3, 4], [5, 6, 7, 8]) == [6, 8, 10, 12]


def test_per_rank_arguments_are_not_shared_between_ranks(calc4: WorkerGroup[Calc]) -> None:
    # A caller list is not mutated and each rank got exactly its element.
    xs = [10, 20, 30, 40]
    assert calc4.call_by_name("foo", x=xs, y=[0, 0, 0, 0]) == xs
    assert xs == [10, 20, 30, 40]


# --------------------------------------------------------------------------- DP_COMPUTE
def test_dp_compute_takes_pre_sharded_lists(calc4: WorkerGroup[Calc]) -> None:
    shards = [[1, 2], [3], [], [4, 5]]
    expected = [30, 31, 2, 93]  # sum(shard) * 10 + rank
    assert calc4.call_per_rank(Calc.shard_sum, [Calc.shard_sum.bind(s) for s in shards]) == expected
    assert calc4.call_by_name("shard_sum", shards) == expected
    assert shards == [[1, 2], [3], [], [4, 5]]


# --------------------------------------------------------------------------- DP_COMPUTE_PROTO
def test_dp_compute_proto_verl_numbers(calc2: WorkerGroup[Calc]) -> None:
    # verl: a = arange(4) on 2 ranks, rank adds 10 + rank -> [10, 11, 13, 14].
    data = Batch({"a": torch.arange(4)})
    out = calc2.call(Calc.add_initial, data)
    assert isinstance(out, Batch)
    assert out.tensors["a"].tolist() == [10, 11, 13, 14]
    assert calc2.call(Calc.add_initial, data, initial_value=0).tensors["a"].tolist() == [0, 1, 3, 4]
    assert data.tensors["a"].tolist() == [0, 1, 2, 3]


def test_dp_compute_proto_async_def_with_submit(calc2: WorkerGroup[Calc]) -> None:
    # verl: async_dp_compute, non-blocking: input * 2 + 5 + rank -> [5, 7, 10, 12].
    future = calc2.submit(Calc.double_async, Batch({"a": torch.arange(4)}))
    assert isinstance(future, BatchFuture)
    assert len(future) == 4
    assert future.get(timeout=30).tensors["a"].tolist() == [5, 7, 10, 12]


def test_dp_compute_proto_splits_in_rank_order(calc4: WorkerGroup[Calc]) -> None:
    data = Batch.from_dict({"a": torch.arange(8)}, {"uid": [f"u{i}" for i in range(8)]})
    out = calc4.call(Calc.add_rank, data)
    assert out.tensors["rank"].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert out.tensors["a"].tolist() == [i + i // 2 for i in range(8)]
    assert list(out.non_tensors["uid"]) == [f"u{i}" for i in range(8)]


def test_dp_compute_proto_by_name(calc2: WorkerGroup[Calc]) -> None:
    out = calc2.call_by_name("add_initial", data=Batch({"a": torch.arange(4)}), initial_value=1)
    assert out.tensors["a"].tolist() == [1, 2, 4, 5]


def test_dp_compute_proto_with_a_keyword_batch(calc4: WorkerGroup[Calc]) -> None:
    left = Batch({"a": torch.arange(4)})
    right = Batch({"b": torch.arange(4) + 50})
    out = calc4.call(Calc.merge, left, right=right)
    assert out.tensors["a"].tolist() == [50, 151, 252, 353]
    assert out.tensors["rank"].tolist() == [0, 1, 2, 3]


# --------------------------------------------------------------------------- WITH_FUNC
def test_dp_compute_proto_with_func_replicates_the_function(calc4: WorkerGroup[Calc]) -> None:
    data = Batch({"a": torch.arange(8)})
    out = calc4.call(Calc.apply, square_plus_one, data)
    local = square_plus_one(data)  # verl: equals running the function locally
    assert out.tensors["a"].tolist() == local.tensors["a"].tolist()
    assert out.tensors["rank"].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    future = calc4.submit(Calc.apply, square_plus_one, data)
    assert isinstance(future, BatchFuture)
    assert future.get().tensors["a"].tolist() == [i * i + 1 for i in range(8)]


# --------------------------------------------------------------------------- METRIC
def test_dp_compute_metric_returns_the_raw_per_rank_list(calc4: WorkerGroup[Calc]) -> None:
    metrics = calc4.call(Calc.stats, Batch({"a": torch.arange(8)}))
    assert metrics == [{"rank": float(r), "rows": 2.0, "sum": float(4 * r + 1)} for r in range(4)]
    future = calc4.submit(Calc.stats, Batch({"a": torch.arange(4)}))
    assert type(future) is GroupFuture  # not a BatchFuture
    assert [m["rows"] for m in future.get()] == [1.0] * 4


# --------------------------------------------------------------------------- custom
def test_custom_mode_by_name(calc4: WorkerGroup[Calc]) -> None:
    # verl: foo_custom(x=[1, 2], y=[5, 6]) cycled to 4 ranks: x = [1,2,1,2], y = [5,6,5,6];
    # the worker computes x + y + 2 -> [8, 10, 8, 10].
    # The arguments (lists) differ from the worker's (ints): an untyped call by name.
    assert calc4.call_by_name("foo_custom", x=[1, 2], y=[5, 6]) == [8, 10, 8, 10]
    assert calc4.call_by_name("foo_custom", [1, 2], [5, 6]) == [8, 10, 8, 10]
    assert calc4.submit_by_name("foo_custom", x=[1], y=[1]).get() == [4, 4, 4, 4]


def test_custom_mode_typed_call(calc4: WorkerGroup[Calc]) -> None:
    # SUM gives every rank the arguments as given and sums the outputs: sum(1 + rank) = 10.
    assert calc4.call(Calc.summed, 1) == 10
    assert calc4.submit(Calc.summed, x=0).get() == 6


@pytest.fixture
def temp_mode() -> Iterator[str]:
    """verl's base/test_decorator: a temporary mode, always removed afterwards."""
    name = "CONFORMANCE_TEMP_MODE"
    try:
        yield name
    finally:
        with contextlib.suppress(DispatchError):
            remove_dispatch_mode(name)


def _two_each(
    world_size: int, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    return [((r, *args), dict(kwargs)) for r in range(world_size)]


def _sum_all(outputs: list[Any]) -> int:
    return sum(outputs)


def _first(outputs: list[Any]) -> Any:
    return outputs[0]


def test_custom_mode_registry_register_update_remove(temp_mode: str) -> None:
    mode = register_dispatch_mode(temp_mode, _two_each, _sum_all)
    assert mode.name == temp_mode

    class Temp:
        @register(mode)
        def f(self, r: int, x: int) -> int:
            return r + x

    meta = get_method_meta(Temp, "f")
    assert meta is not None
    plan = plan_call(meta, 3, (5,), {}, share=lambda v: v, what="temp.f")
    assert [a for a, _ in plan.per_rank] == [(0, 5), (1, 5), (2, 5)]
    assert plan.collector.finish([1, 2, 3], what="temp.f") == 6

    update_dispatch_mode(temp_mode, _two_each, _first)
    plan = plan_call(meta, 2, (5,), {}, share=lambda v: v, what="temp.f")
    assert plan.collector.finish([7, 8], what="temp.f") == 7

    remove_dispatch_mode(temp_mode)
    with pytest.raises(DispatchError, match=temp_mode):
        register(temp_mode)


# --------------------------------------------------------------------------- registration
def test_register_only_attaches_metadata() -> None:
    meta = get_method_meta(Calc, "add")
    assert meta is not None
    assert meta.dispatch is Dispatch.ONE_TO_ALL
    assert not meta.is_async
    async_meta = get_method_meta(Calc, "double_async")
    assert async_meta is not None
    assert async_meta.is_async
    assert get_method_meta(Calc, "not_registered") is None
    assert "foo" in registered_methods(Calc)
    assert "not_registered" not in registered_methods(Calc)
    # The class stays plain and the method still works when called directly.
    assert Calc.__mro__ == (Calc, object)
    assert Calc.foo.fn(object(), 1, 2) == 3


def test_group_lists_its_registered_methods(calc4: WorkerGroup[Calc]) -> None:
    names = calc4.method_names()
    assert {"add", "foo", "foo_rank_zero", "shard_sum", "add_rank", "apply", "stats"} <= set(names)
    assert "not_registered" not in names
    assert calc4.world_size == 4
    assert len(calc4.workers) == 4
    assert len(set(calc4.worker_names)) == 4
    assert calc4.worker_class is Calc


# --------------------------------------------------------------------------- backend surface
def test_inprocess_backend_implements_the_protocol() -> None:
    assert isinstance(InProcessBackend(), runtime.Backend)


def test_every_backend_fixture_implements_the_protocol(backend: runtime.Backend) -> None:
    assert isinstance(backend, runtime.Backend)


@pytest.mark.parametrize("cls", all_worker_classes(), ids=lambda c: c.__name__)
def test_worker_classes_survive_pickle(cls: type[Any]) -> None:
    assert pickle.loads(pickle.dumps(cls)) is cls


def test_live_worker_instances_and_host_launch_survive_pickle() -> None:
    backend = InProcessBackend()
    group = WorkerGroup(backend, WorkerSpec.of(Calc, x=3), cpu_pool(2))
    try:
        for handle in group.workers:
            assert isinstance(handle, runtime.testing.InProcessWorker)
            for instance in handle.host.instances.values():
                assert isinstance(instance, Calc)
                copy = pickle.loads(pickle.dumps(instance))
                assert type(copy) is Calc
                assert copy.inner.get() == instance.inner.get()
            launch = pickle.loads(pickle.dumps(handle.launch))
            assert launch == handle.launch
    finally:
        group.shutdown()
    pool = ResourcePool.create([2], devices_per_process=1)
    plan = plan_placement(pool, ["10.0.0.1"])
    launch = HostLaunch(
        group="g",
        roles=(("calc", WorkerSpec.of(Calc, x=1)),),
        context=WorkerContext(
            rank=0,
            world_size=2,
            local_rank=0,
            local_world_size=2,
            node_ip="10.0.0.1",
            master_addr="10.0.0.1",
            master_port=1234,
            visible_devices=("0",),
        ),
        placement=plan.ranks[0],
        env={"EXTRA": "1"},
        options={},
        name="g:calc:0",
    )
    assert pickle.loads(pickle.dumps(launch)) == launch


def test_inprocess_calls_run_in_the_calling_thread_without_subprocesses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``breakpoint()`` inside an in-process worker just works: same thread, no child process."""

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("the in-process backend must not start a process")

    monkeypatch.setattr(subprocess.Popen, "__init__", forbidden)
    monkeypatch.setattr(os, "fork", forbidden)
    monkeypatch.setattr(multiprocessing.Process, "start", forbidden)
    threads_before = threading.active_count()
    children_before = set(multiprocessing.active_children())
    backend = InProcessBackend()
    group = WorkerGroup(backend, WorkerSpec.of(Calc), cpu_pool(2))
    try:
        assert group.call(Calc.thread_id) == [threading.get_ident()] * 2
        assert group.submit(Calc.thread_id).get() == [threading.get_ident()] * 2
        assert group.call(Calc.double_async, Batch({"a": torch.arange(2)})).tensors[
            "a"
        ].tolist() == [5, 8]
        assert set(multiprocessing.active_children()) == children_before
        assert threading.active_count() == threads_before
    finally:
        group.shutdown()
