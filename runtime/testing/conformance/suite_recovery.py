"""Cancellation (best effort) and recovery: ``Backend.cancel`` and ``WorkerGroup.restart``."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from runtime import Backend, WorkerGroup, WorkerSpec
from runtime.backend import RankCall
from runtime.errors import CallTimeoutError, RuntimeErrorBase, WorkerDiedError
from runtime.testing.conformance._support import FaultHook, cpu_pool
from runtime.testing.conformance.workers import Calc, FaultWorker

__all__ = [
    "test_cancel_is_best_effort_and_never_hangs",
    "test_cancel_of_finished_calls_is_a_no_op",
    "test_restart_after_a_deadline_replaces_the_hung_rank",
    "test_restart_after_a_death_gives_the_same_ranks_back",
    "test_restart_of_a_shut_down_group_is_refused",
    "test_restart_rebuilds_the_workers_and_their_meshes",
    "to_recover",
]


@pytest.fixture
def to_recover(backend: Backend) -> Iterator[WorkerGroup[FaultWorker]]:
    """A fresh group of two :class:`FaultWorker` ranks for a test that breaks it."""
    group = WorkerGroup(backend, WorkerSpec.of(FaultWorker), cpu_pool(2), role="recover")
    yield group
    group.shutdown()


def test_cancel_of_finished_calls_is_a_no_op(backend: Backend, calc4: WorkerGroup[Calc]) -> None:
    future = calc4.submit(Calc.add, 1)
    assert future.get(timeout=60) == [1, 2, 3, 4]
    backend.cancel([])
    future.cancel()  # done: nothing to ask
    pending = backend.submit(
        calc4.workers, [RankCall(r, "calc", "add", (1,), {}) for r in range(4)]
    )
    assert backend.wait(pending, timeout=60) == [1, 2, 3, 4]
    backend.cancel(pending)  # finished: a no-op
    assert future.get(timeout=60) == [1, 2, 3, 4]
    assert calc4.call(Calc.add, 1) == [1, 2, 3, 4]


def test_cancel_is_best_effort_and_never_hangs(
    backend: Backend, to_recover: WorkerGroup[FaultWorker], faults: FaultHook
) -> None:
    faults.slow(to_recover, 0, 1.0)
    future = to_recover.submit(FaultWorker.work, 0)
    start = time.monotonic()
    future.cancel()
    assert time.monotonic() - start < 1.0, "Backend.cancel blocked"
    outcome: object
    try:
        outcome = future.get(timeout=10)  # ran on: allowed
    except RuntimeErrorBase as exc:
        outcome = exc  # cancelled: allowed, as a typed error
    assert outcome == [0, 1] or isinstance(outcome, RuntimeErrorBase), outcome
    assert time.monotonic() - start < 10
    assert to_recover.call(FaultWorker.work, 5) == [5, 6], "the group is unusable after cancel"


def test_restart_after_a_death_gives_the_same_ranks_back(
    to_recover: WorkerGroup[FaultWorker], faults: FaultHook
) -> None:
    before = to_recover.contexts()
    faults.kill(to_recover, 1)
    with pytest.raises(WorkerDiedError):
        to_recover.with_timeout(30).call(FaultWorker.work, 0)
    to_recover.restart(timeout=60)
    assert to_recover.call(FaultWorker.work, 10) == [10, 11]
    after = to_recover.contexts()
    assert [(c.rank, c.world_size, c.node_ip, c.master_addr, c.master_port) for c in after] == [
        (c.rank, c.world_size, c.node_ip, c.master_addr, c.master_port) for c in before
    ]
    to_recover.check_alive()


def test_restart_after_a_deadline_replaces_the_hung_rank(
    to_recover: WorkerGroup[FaultWorker], faults: FaultHook
) -> None:
    faults.hang(to_recover, 0)
    with pytest.raises(CallTimeoutError):
        to_recover.with_timeout(0.5).call(FaultWorker.work, 0)
    start = time.monotonic()
    to_recover.restart(timeout=60)
    assert to_recover.with_timeout(30).call(FaultWorker.work, 1) == [1, 2]
    assert time.monotonic() - start < 30, "restart waited for the hung call"


def test_restart_rebuilds_the_workers_and_their_meshes(backend: Backend) -> None:
    group = WorkerGroup(backend, WorkerSpec.of(Calc, x=7), cpu_pool(4), role="calc")
    try:
        assert group.call(Calc.nested_get) == [7, 8, 9, 10]
        before = group.mesh_layout("infer")
        group.restart(timeout=60)
        assert group.call(Calc.nested_get) == [7, 8, 9, 10]
        assert group.mesh_layout("infer") == before
    finally:
        group.shutdown()


def test_restart_of_a_shut_down_group_is_refused(backend: Backend) -> None:
    group = WorkerGroup(backend, WorkerSpec.of(Calc), cpu_pool(1), role="calc")
    group.shutdown()
    with pytest.raises(ValueError, match="shut down"):
        group.restart()
