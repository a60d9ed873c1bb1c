"""Each ``Backend`` method's contract, called directly, so a failure names the method at fault.

The rules are stated in :mod:`runtime.backend`; the rest of the suite checks them through
:class:`runtime.WorkerGroup`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from runtime import Backend, ResourcePool, WorkerGroup, WorkerSpec
from runtime.backend import RankCall
from runtime.errors import RemoteMethodError, WorkerDiedError
from runtime.testing.conformance._support import POOL_CPUS, FaultHook, cpu_pool
from runtime.testing.conformance.workers import Calc

__all__ = [
    "fresh4",
    "test_handles_of_another_backend_are_a_type_error",
    "test_master_endpoint_gives_an_address_and_a_port",
    "test_reserve_is_shared_by_split_pools",
    "test_reserve_returns_one_ip_per_node_entry_and_is_idempotent",
    "test_submit_gives_each_rank_a_private_copy",
    "test_terminate_is_idempotent_and_a_terminated_rank_is_dead",
    "test_wait_raises_a_death_before_a_method_error",
    "test_wait_raises_the_lowest_failed_rank",
    "test_wait_returns_results_in_order_without_a_deadline",
]


@pytest.fixture
def fresh4(backend: Backend) -> Iterator[WorkerGroup[Calc]]:
    """Four ranks of :class:`Calc` for a test that kills or terminates some of them."""
    group = WorkerGroup(backend, WorkerSpec.of(Calc), cpu_pool(4), role="calc")
    yield group
    group.shutdown()


def _calls(method: str, args: list[tuple[object, ...]]) -> list[RankCall]:
    return [RankCall(rank, "calc", method, a, {}) for rank, a in enumerate(args)]


def test_reserve_returns_one_ip_per_node_entry_and_is_idempotent(backend: Backend) -> None:
    pool = ResourcePool.create([1, 1], cpus_per_process=POOL_CPUS)
    first = list(backend.reserve(pool, timeout=60))
    assert len(first) == 2, "Backend.reserve: one node IP per node entry, in pool order"
    assert all(isinstance(ip, str) and ip for ip in first), first
    assert list(backend.reserve(pool, timeout=60)) == first, "Backend.reserve is not idempotent"


def test_reserve_is_shared_by_split_pools(backend: Backend) -> None:
    pool = ResourcePool.create([2], cpus_per_process=POOL_CPUS)
    whole = list(backend.reserve(pool, timeout=60))
    left, right = pool.split([1, 1])
    assert list(backend.reserve(left, timeout=60)) == whole
    assert list(backend.reserve(right, timeout=60)) == whole


def test_master_endpoint_gives_an_address_and_a_port(backend: Backend) -> None:
    (ip,) = backend.reserve(ResourcePool.create([1], cpus_per_process=POOL_CPUS), timeout=60)
    addr, port = backend.master_endpoint(ip)
    assert isinstance(addr, str)
    assert addr
    assert isinstance(port, int)
    assert 0 < port < 65536


def test_submit_gives_each_rank_a_private_copy(backend: Backend, calc4: WorkerGroup[Calc]) -> None:
    t = torch.zeros(3)  # Calc.tensor_sum adds 1 in place
    pending = backend.submit(calc4.workers, _calls("tensor_sum", [(t,)] * 4))
    assert backend.wait(pending, timeout=60) == [3.0] * 4, (
        "Backend.submit: ranks aliased one argument (each rank needs a private copy)"
    )
    assert t.tolist() == [0.0, 0.0, 0.0], "Backend.submit: a rank changed the caller's tensor"


def test_wait_returns_results_in_order_without_a_deadline(
    backend: Backend, calc4: WorkerGroup[Calc]
) -> None:
    pending = backend.submit(calc4.workers, _calls("rank_of", [()] * 4))
    assert backend.wait(list(reversed(pending)), timeout=None) == [3, 2, 1, 0]


def test_wait_raises_the_lowest_failed_rank(backend: Backend, calc4: WorkerGroup[Calc]) -> None:
    args: list[tuple[object, ...]] = [(r if r in (1, 3) else -1, f"rank {r}") for r in range(4)]
    pending = backend.submit(calc4.workers, _calls("boom", args))
    with pytest.raises(RemoteMethodError) as info:
        backend.wait(pending, timeout=60)
    assert (info.value.rank, info.value.method) == (1, "boom"), "Backend.wait precedence"


def test_wait_raises_a_death_before_a_method_error(
    backend: Backend, fresh4: WorkerGroup[Calc], faults: FaultHook
) -> None:
    faults.kill(fresh4, 2)
    args: list[tuple[object, ...]] = [(0, "rank 0 raises"), (0, "x"), (0, "x"), (0, "x")]
    pending = backend.submit(fresh4.workers, _calls("boom", args))
    with pytest.raises(WorkerDiedError) as info:
        backend.wait(pending, timeout=60)
    assert info.value.rank == 2, "Backend.wait: a death wins over a method's error"


def test_terminate_is_idempotent_and_a_terminated_rank_is_dead(
    backend: Backend, fresh4: WorkerGroup[Calc]
) -> None:
    doomed = [fresh4.workers[1]]
    backend.terminate(doomed)
    backend.terminate(doomed)  # again: a no-op
    assert list(backend.alive(fresh4.workers)) == [True, False, True, True]
    pending = backend.submit(doomed, [RankCall(1, "calc", "rank_of", (), {})])
    with pytest.raises(WorkerDiedError):
        backend.wait(pending, timeout=30)


def test_handles_of_another_backend_are_a_type_error(backend: Backend) -> None:
    with pytest.raises(TypeError):
        backend.wait([object()], timeout=1)
    with pytest.raises(TypeError):
        backend.alive([object()])
