"""Bad input gets a clear typed error (nothing hangs, caller data unchanged); faults are reported.

Faults go through the ``faults`` fixture (:class:`runtime.testing.conformance.FaultHook`), so the
same test makes a rank slow, hung or dead on every backend.
"""

from __future__ import annotations

import copy
import pickle
import threading
import time
from collections.abc import Iterator
from typing import Any, cast

import numpy as np
import pytest
import torch

from runtime import (
    Backend,
    Batch,
    Dispatch,
    Execute,
    WorkerGroup,
    WorkerSpec,
    register,
    register_dispatch_mode,
    remove_dispatch_mode,
    update_dispatch_mode,
)
from runtime.errors import (
    BatchError,
    CallTimeoutError,
    DispatchError,
    RemoteMethodError,
    RuntimeErrorBase,
    WorkerDiedError,
    WorkerStartError,
)
from runtime.testing.conformance._support import FaultHook, cpu_pool
from runtime.testing.conformance.workers import CYCLE_MODE_NAME, Actor, BadInit, Calc, FaultWorker

__all__ = [
    "doomed",
    "faulty",
    "test_batch_arguments_of_different_lengths",
    "test_check_alive_names_the_dead_rank",
    "test_concat_with_conflicting_meta",
    "test_data_parallel_call_needs_a_batch",
    "test_dead_rank_fails_the_pending_call",
    "test_deadline_names_method_role_and_pending_ranks",
    "test_duplicate_custom_mode",
    "test_expired_deadline_on_a_future",
    "test_hung_rank_times_out",
    "test_inconsistent_batch_columns",
    "test_invalid_registrations_fail_at_decoration",
    "test_liveness_check_reports_a_death",
    "test_method_of_another_worker_class",
    "test_non_divisible_batch_without_padding",
    "test_per_rank_call_of_a_broadcast_method",
    "test_slow_call_within_the_deadline",
    "test_unknown_custom_mode",
    "test_unregistered_method_by_name",
    "test_with_timeout_is_a_view",
    "test_worker_constructor_that_raises",
    "test_worker_method_that_raises",
    "test_worker_method_that_raises_non_blocking",
    "test_wrong_number_of_per_rank_arguments",
]

#: Nothing in this module may take longer than this to fail.
PROMPT = 15.0


def _noop_dispatch(
    world_size: int, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    return [(args, kwargs)] * world_size


def _noop_collect(outputs: list[Any]) -> list[Any]:
    return outputs


# --------------------------------------------------------------------------- bad calls
def test_unregistered_method_by_name(calc4: WorkerGroup[Calc]) -> None:
    with pytest.raises(DispatchError, match=r"Calc\.nope is not a registered method") as info:
        calc4.call_by_name("nope")
    assert "'add'" in str(info.value)  # lists what is registered
    with pytest.raises(DispatchError, match="not_registered"):
        calc4.call_by_name("not_registered")
    with pytest.raises(DispatchError):
        calc4.submit_by_name("nope")


def test_method_of_another_worker_class(calc4: WorkerGroup[Calc]) -> None:
    with pytest.raises(DispatchError, match="inc"):
        calc4.call(cast(Any, Actor.inc), 1.0)
    # Same name, different class and mode: still refused.
    with pytest.raises(DispatchError, match="does not belong"):
        calc4.call(cast(Any, Actor.add), Batch({"a": torch.zeros(4)}))
    with pytest.raises(DispatchError, match="not a registered method"):
        calc4.call(cast(Any, Calc.not_registered))


def test_wrong_number_of_per_rank_arguments(calc4: WorkerGroup[Calc]) -> None:
    three = [Calc.foo.bind(1, 2)] * 3
    with pytest.raises(DispatchError, match=r"arguments for 3 ranks but the group has 4"):
        calc4.call_per_rank(Calc.foo, three)
    with pytest.raises(DispatchError, match=r"per rank \(4\); x is a list of length 3"):
        calc4.call_by_name("foo", x=[1, 2, 3], y=[1, 2, 3, 4])
    with pytest.raises(DispatchError, match=r"argument 0 is 1"):
        calc4.call_by_name("foo", 1, [1, 2, 3, 4])
    shards = [[1], [2], [3], [4], [5]]
    with pytest.raises(DispatchError, match=r"DP_COMPUTE.*length 5"):
        calc4.call_by_name("shard_sum", shards)
    with pytest.raises(DispatchError, match=r"for 2 ranks"):
        calc4.call_per_rank(Calc.shard_sum, [Calc.shard_sum.bind([1])] * 2)
    assert shards == [[1], [2], [3], [4], [5]]


def test_per_rank_call_of_a_broadcast_method(calc4: WorkerGroup[Calc]) -> None:
    with pytest.raises(DispatchError, match="call_per_rank is only for"):
        calc4.call_per_rank(cast(Any, Calc.add), [Calc.foo.bind(1, 2)] * 4)


def test_batch_arguments_of_different_lengths(calc4: WorkerGroup[Calc]) -> None:
    left = Batch({"a": torch.arange(8)})
    right = Batch({"b": torch.arange(4)})
    before = (copy.deepcopy(left), copy.deepcopy(right))
    with pytest.raises(DispatchError, match=r"same length.*arg0=8, right=4"):
        calc4.call(Calc.merge, left, right=right)
    assert left.equals(before[0])
    assert right.equals(before[1])


def test_non_divisible_batch_without_padding(calc4: WorkerGroup[Calc]) -> None:
    data = Batch({"a": torch.arange(10)})
    with pytest.raises(DispatchError, match=r"10 rows, which does not split evenly over 4 ranks"):
        calc4.call(Calc.add_initial, data)
    assert data.tensors["a"].tolist() == list(range(10))
    assert data.meta == {}


def test_data_parallel_call_needs_a_batch(calc4: WorkerGroup[Calc]) -> None:
    with pytest.raises(DispatchError, match="needs at least one Batch"):
        calc4.call_by_name("add_initial", [1, 2, 3, 4])
    with pytest.raises(DispatchError, match="needs a function as its first argument"):
        calc4.call_by_name("apply", Batch({"a": torch.arange(4)}), Batch({"a": torch.arange(4)}))
    with pytest.raises(DispatchError, match="empty batch"):
        calc4.call(Calc.add_initial, Batch({"a": torch.zeros(0)}))


def test_unknown_custom_mode() -> None:
    with pytest.raises(DispatchError, match=r"unknown dispatch mode 'NO_SUCH_MODE'"):
        register("NO_SUCH_MODE")
    with pytest.raises(DispatchError, match="not registered"):
        update_dispatch_mode("NO_SUCH_MODE", _noop_dispatch, _noop_collect)
    with pytest.raises(DispatchError, match="not registered"):
        remove_dispatch_mode("NO_SUCH_MODE")


def test_duplicate_custom_mode() -> None:
    with pytest.raises(DispatchError, match="already registered"):
        register_dispatch_mode(CYCLE_MODE_NAME, _noop_dispatch, _noop_collect)
    with pytest.raises(DispatchError, match="already registered"):
        register_dispatch_mode(CYCLE_MODE_NAME.lower(), _noop_dispatch, _noop_collect)
    with pytest.raises(DispatchError, match="built-in"):
        register_dispatch_mode("one_to_all", _noop_dispatch, _noop_collect)


def test_invalid_registrations_fail_at_decoration() -> None:
    untyped_register: Any = register  # these calls are type errors too (tests/typing)
    with pytest.raises(DispatchError, match="RANK_ZERO only combines"):
        untyped_register(Dispatch.DP_COMPUTE_PROTO, Execute.RANK_ZERO)
    with pytest.raises(DispatchError, match="apply @register once"):
        register(Dispatch.ONE_TO_ALL)(cast(Any, Calc.add))
    with pytest.raises(DispatchError, match="unknown dispatch mode"):
        untyped_register(42)


def test_inconsistent_batch_columns() -> None:
    with pytest.raises(BatchError, match=r"'b' has length 3 but the batch has length 4"):
        Batch({"a": torch.zeros(4), "b": torch.zeros(3)})
    with pytest.raises(BatchError, match=r"'uid' has length 2"):
        Batch({"a": torch.zeros(4)}, {"uid": np.array(["x", "y"], dtype=object)})


def test_concat_with_conflicting_meta() -> None:
    parts = [Batch({"a": torch.zeros(2)}, meta={"temperature": t}) for t in (1.0, 0.5)]
    with pytest.raises(BatchError, match="temperature"):
        Batch.concat(parts)
    assert [p.meta for p in parts] == [{"temperature": 1.0}, {"temperature": 0.5}]


# --------------------------------------------------------------------------- remote errors
def test_worker_method_that_raises(calc4: WorkerGroup[Calc]) -> None:
    start = time.monotonic()
    with pytest.raises(RemoteMethodError) as info:
        calc4.call(Calc.boom, 2, "kaboom on two")
    err = info.value
    assert time.monotonic() - start < PROMPT
    assert (err.remote_type, err.remote_message) == ("ValueError", "kaboom on two")
    assert "Traceback" in err.remote_traceback
    assert "in boom" in err.remote_traceback  # the worker's own frame
    assert (err.role, err.rank, err.method) == ("calc", 2, "boom")
    assert "kaboom on two" in str(err)
    # Survives pickling (it crossed a process boundary on real backends).
    again = pickle.loads(pickle.dumps(err))
    assert (again.remote_type, again.rank, again.role) == ("ValueError", 2, "calc")
    # The group is still usable.
    assert calc4.call(Calc.add, 0) == [0, 1, 2, 3]


def test_worker_method_that_raises_non_blocking(calc4: WorkerGroup[Calc]) -> None:
    future = calc4.submit(Calc.boom, 0, "late failure")
    with pytest.raises(RemoteMethodError, match="late failure") as info:
        future.get(timeout=PROMPT)
    assert info.value.rank == 0


def test_worker_constructor_that_raises(backend: Backend) -> None:
    start = time.monotonic()
    with pytest.raises(WorkerStartError) as info:
        WorkerGroup(backend, WorkerSpec.of(BadInit, fail_rank=1), cpu_pool(2), role="starter")
    err = info.value
    assert (err.role, err.rank) == ("starter", 1)
    assert "constructor refused on rank 1" in str(err)
    assert "ValueError" in str(err)
    assert time.monotonic() - start < 60


# --------------------------------------------------------------------------- deadlines
@pytest.fixture(scope="module")
def faulty(backend: Backend) -> Iterator[WorkerGroup[FaultWorker]]:
    group = WorkerGroup(backend, WorkerSpec.of(FaultWorker), cpu_pool(2), role="faulty")
    yield group
    group.shutdown()


@pytest.fixture
def doomed(backend: Backend) -> Iterator[WorkerGroup[FaultWorker]]:
    """A fresh group for a test that leaves a rank dead or hung."""
    group = WorkerGroup(backend, WorkerSpec.of(FaultWorker), cpu_pool(2), role="doomed")
    yield group
    group.shutdown()


def test_deadline_names_method_role_and_pending_ranks(
    faulty: WorkerGroup[FaultWorker], faults: FaultHook
) -> None:
    faults.slow(faulty, 1, 1.5)
    start = time.monotonic()
    with pytest.raises(CallTimeoutError) as info:
        faulty.with_timeout(0.2).call(FaultWorker.work, 1)
    assert time.monotonic() - start < 1.4
    err = info.value
    assert isinstance(err, TimeoutError)
    assert isinstance(err, RuntimeErrorBase)
    assert "work" in err.method
    assert err.role == "faulty"
    assert err.pending_ranks == (1,)
    assert "[1]" in str(err)


def test_slow_call_within_the_deadline(faulty: WorkerGroup[FaultWorker], faults: FaultHook) -> None:
    faults.slow(faulty, 0, 0.1)
    assert faulty.with_timeout(PROMPT).call(FaultWorker.work, 10) == [10, 11]


def test_expired_deadline_on_a_future(faulty: WorkerGroup[FaultWorker], faults: FaultHook) -> None:
    faults.slow(faulty, 0, 1.0)
    future = faulty.submit(FaultWorker.work, 5)
    with pytest.raises(CallTimeoutError) as info:
        future.get(timeout=0.1)
    assert info.value.pending_ranks == (0,)
    # Calls are not cancelled: the future still completes.
    assert future.get(timeout=PROMPT) == [5, 6]


def test_with_timeout_is_a_view(faulty: WorkerGroup[FaultWorker]) -> None:
    view = faulty.with_timeout(3.0)
    assert (view.timeout, faulty.timeout) == (3.0, None)
    assert view.name == faulty.name
    assert view.call(FaultWorker.work, 0) == [0, 1]


def test_hung_rank_times_out(doomed: WorkerGroup[FaultWorker], faults: FaultHook) -> None:
    faults.hang(doomed, 0)
    start = time.monotonic()
    with pytest.raises(CallTimeoutError) as info:
        doomed.with_timeout(0.3).call(FaultWorker.work, 1)
    assert time.monotonic() - start < PROMPT
    assert info.value.pending_ranks == (0,)
    assert info.value.role == "doomed"


# --------------------------------------------------------------------------- dead ranks
def test_dead_rank_fails_the_pending_call(
    doomed: WorkerGroup[FaultWorker], faults: FaultHook
) -> None:
    assert doomed.call(FaultWorker.work, 0) == [0, 1]
    faults.kill(doomed, 1)
    start = time.monotonic()
    with pytest.raises(WorkerDiedError) as info:
        doomed.with_timeout(PROMPT).call(FaultWorker.work, 0)
    assert time.monotonic() - start < PROMPT
    err = info.value
    assert (err.role, err.rank) == ("doomed", 1)
    assert err.node
    assert "rank=1" in str(err)


def test_check_alive_names_the_dead_rank(
    doomed: WorkerGroup[FaultWorker], faults: FaultHook
) -> None:
    doomed.check_alive()
    faults.kill(doomed, 1)
    with pytest.raises(WorkerDiedError):
        doomed.with_timeout(PROMPT).call(FaultWorker.work, 0)
    with pytest.raises(WorkerDiedError) as info:
        doomed.check_alive()
    assert (info.value.role, info.value.rank) == ("doomed", 1)
    plan = doomed.placement
    assert plan is not None
    assert info.value.node == plan.ranks[1].node_ip


def test_liveness_check_reports_a_death(
    doomed: WorkerGroup[FaultWorker], faults: FaultHook
) -> None:
    reported = threading.Event()
    errors: list[WorkerDiedError] = []

    def on_failure(err: WorkerDiedError) -> None:
        errors.append(err)
        reported.set()

    monitor = doomed.start_liveness_check(interval=0.05, on_failure=on_failure)
    try:
        time.sleep(0.2)
        assert not reported.is_set()
        faults.kill(doomed, 1)
        with pytest.raises(WorkerDiedError):
            doomed.with_timeout(PROMPT).call(FaultWorker.work, 0)
        assert reported.wait(PROMPT), "the liveness check never reported the dead rank"
    finally:
        monitor.stop()
    assert len(errors) == 1
    assert (errors[0].role, errors[0].rank) == ("doomed", 1)
    assert monitor.error is errors[0]
