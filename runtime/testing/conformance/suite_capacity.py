"""One capacity rule, device ids, reservation release and replaced built-in modes, on every
backend (verl behaviours the suite once found inconsistent between backends).

* A pool's ``max_colocate_count`` is how many groups may share each of its process slots; one
  more is a :class:`~runtime.errors.PlacementError` at once (never a start timeout), naming the
  pool, the groups holding it and the fix.
* The halves of a merged pool never share a device id.
* ``Backend.release`` gives a reservation back (idempotent); the last group on a node entry
  releases it when it shuts down; a detached group's reservation can be released after its
  ranks died outside the driver's control.
* ``update_dispatch_mode`` replaces a built-in mode's functions, as verl allows.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from runtime import (
    Backend,
    Dispatch,
    ResourcePool,
    WorkerContext,
    WorkerGroup,
    WorkerSpec,
    merge_pools,
    plan_placement,
    remove_dispatch_mode,
    update_dispatch_mode,
)
from runtime.backend import HostLaunch
from runtime.errors import PlacementError, WorkerDiedError
from runtime.testing._inprocess import InProcessBackend
from runtime.testing.conformance._support import POOL_CPUS, FaultHook
from runtime.testing.conformance.workers import Calc, EnvWorker

__all__ = [
    "replaced_one_to_all",
    "test_a_detached_groups_reservation_is_released_after_its_ranks_died",
    "test_a_full_pool_is_a_placement_error_at_once",
    "test_colocated_groups_fill_a_pool_up_to_max_colocate_count",
    "test_disjoint_parts_of_a_split_pool_do_not_compete",
    "test_inprocess_merged_halves_get_ids_0_to_3",
    "test_release_gives_a_reservation_back_and_is_idempotent",
    "test_the_halves_of_a_merged_pool_get_distinct_devices",
    "test_the_last_group_on_a_pool_releases_its_reservation",
    "test_update_dispatch_mode_replaces_a_builtin_mode",
]

#: A full pool must be refused well before any start timeout.
REFUSAL_SECONDS = 5.0


def _pool(colocate: int = 1, *, detached: bool = False) -> ResourcePool:
    return ResourcePool.create(
        [2], cpus_per_process=POOL_CPUS, max_colocate_count=colocate, detached=detached
    )


def _calc(backend: Backend, pool: ResourcePool) -> WorkerGroup[Calc]:
    return WorkerGroup(backend, WorkerSpec.of(Calc), pool, role="calc", timeout=60)


def _launch(backend: Backend, pool: ResourcePool, ips: list[str]) -> HostLaunch:
    """A launch of rank 0 of ``pool`` built by hand, as the core builds them."""
    rank = plan_placement(pool, ips).ranks[0]
    name = f"probe-{pool.name.replace('/', '_')}"
    context = WorkerContext(
        rank=0,
        world_size=1,
        local_rank=0,
        local_world_size=1,
        node_ip=rank.node_ip,
        master_addr=rank.node_ip,
        master_port=backend.master_endpoint(rank.node_ip)[1],
        role="calc",
        group=name,
    )
    return HostLaunch(
        group=name,
        roles=(("calc", WorkerSpec.of(Calc)),),
        context=context,
        placement=rank,
        env={},
        options={},
        name=f"{name}:calc:0",
    )


def _spawn_refused(backend: Backend, launch: HostLaunch) -> bool:
    """Whether ``spawn`` refuses ``launch`` with a PlacementError (its entry is not reserved);
    a host it starts after all is stopped again."""
    try:
        workers = backend.spawn([launch], timeout=60)
    except PlacementError:
        return True
    backend.terminate(workers)
    return False


# --------------------------------------------------------------------------- capacity
def test_a_full_pool_is_a_placement_error_at_once(backend: Backend) -> None:
    pool = _pool(1)
    first = _calc(backend, pool)
    try:
        began = time.monotonic()
        with pytest.raises(PlacementError) as info:
            _calc(backend, pool)
        assert time.monotonic() - began < REFUSAL_SECONDS, "a full pool must fail at once"
        message = str(info.value)
        assert repr(pool.name) in message, "the error names the pool"
        assert repr(first.name) in message, "the error names the group holding it"
        assert "max_colocate_count=2" in message, "the error says how to fix it"
        assert first.call(Calc.rank_of) == [0, 1], "the refused group disturbed the first"
    finally:
        first.shutdown()
    again = _calc(backend, pool)  # the slots were given back
    try:
        assert again.call(Calc.rank_of) == [0, 1]
    finally:
        again.shutdown()


def test_colocated_groups_fill_a_pool_up_to_max_colocate_count(backend: Backend) -> None:
    pool = _pool(2)
    groups = [_calc(backend, pool), _calc(backend, pool)]
    try:
        with pytest.raises(PlacementError, match="max_colocate_count=3"):
            _calc(backend, pool)
        assert [g.call(Calc.add, 1) for g in groups] == [[1, 2], [1, 2]]
    finally:
        for g in groups:
            g.shutdown()


def test_disjoint_parts_of_a_split_pool_do_not_compete(backend: Backend) -> None:
    pool = _pool(1)
    left, right = pool.split(1)
    groups = [_calc(backend, left), _calc(backend, right)]
    try:
        with pytest.raises(PlacementError):
            _calc(backend, pool)  # both slots are taken, one by each half
        assert [g.call(Calc.rank_of) for g in groups] == [[0], [0]]
    finally:
        for g in groups:
            g.shutdown()


# --------------------------------------------------------------------------- devices
def test_the_halves_of_a_merged_pool_get_distinct_devices(backend: Backend) -> None:
    # Two one-device entries on one node (a 4-GPU test cluster may hold other groups' GPUs);
    # planned from their own bundles alone, both would get id 0.
    a, b = (
        ResourcePool.create([1], devices_per_process=1, cpus_per_process=POOL_CPUS)
        for _ in range(2)
    )
    group = WorkerGroup(backend, WorkerSpec.of(EnvWorker), merge_pools(a, b), role="env")
    try:
        devices = [c.visible_devices for c in group.contexts()]
        assert all(len(d) == 1 for d in devices), devices
        assert len({d[0] for d in devices}) == 2, f"merged halves share device ids: {devices}"
        env = group.call(EnvWorker.getenv, "CUDA_VISIBLE_DEVICES")
        assert env == [d[0] for d in devices]
    finally:
        group.shutdown()


def test_inprocess_merged_halves_get_ids_0_to_3() -> None:
    """verl's case on a fresh in-process backend: ``['0', '1', '2', '3']``, not ``0,1,0,1``."""
    backend = InProcessBackend()
    a, b = (ResourcePool.create([2], devices_per_process=1) for _ in range(2))
    group = WorkerGroup(backend, WorkerSpec.of(EnvWorker), merge_pools(a, b), role="env")
    try:
        assert [c.visible_devices for c in group.contexts()] == [("0",), ("1",), ("2",), ("3",)]
        with pytest.raises(PlacementError, match="max_colocate_count=2"):
            WorkerGroup(backend, WorkerSpec.of(EnvWorker), b, role="more")
    finally:
        group.shutdown()
    alone = WorkerGroup(backend, WorkerSpec.of(EnvWorker), b, role="alone")
    try:  # the merged group's shutdown gave every id back
        assert [c.visible_devices for c in alone.contexts()] == [("0",), ("1",)]
    finally:
        alone.shutdown()
        backend.shutdown()


# --------------------------------------------------------------------------- release
def test_release_gives_a_reservation_back_and_is_idempotent(backend: Backend) -> None:
    pool = _pool(1)
    ips = list(backend.reserve(pool, timeout=60))
    backend.release(pool)
    backend.release(pool)  # again: a no-op
    assert _spawn_refused(backend, _launch(backend, pool, ips)), (
        "Backend.spawn on a released node entry must be a PlacementError"
    )
    ips = list(backend.reserve(pool, timeout=60))
    assert not _spawn_refused(backend, _launch(backend, pool, ips))
    backend.release(pool)


def test_the_last_group_on_a_pool_releases_its_reservation(backend: Backend) -> None:
    pool = _pool(2)
    first, second = _calc(backend, pool), _calc(backend, pool)
    ips = [c.node_ip for c in first.contexts()]
    first.shutdown()
    try:
        assert second.call(Calc.rank_of) == [0, 1], "a group still on the pool lost its hosts"
    finally:
        second.shutdown()
    assert _spawn_refused(backend, _launch(backend, pool, ips[:1])), (
        "the last group's shutdown must release the pool's reservation"
    )


def test_a_detached_groups_reservation_is_released_after_its_ranks_died(
    backend: Backend, faults: FaultHook
) -> None:
    pool = _pool(1, detached=True)
    try:
        group = _calc(backend, pool)
    except PlacementError as err:
        if "detached" not in str(err):
            raise
        pytest.skip(f"this backend has no detached hosts: {err}")
    try:
        ips = [c.node_ip for c in group.contexts()]
        for rank in range(group.world_size):
            faults.kill(group, rank)  # as another driver would kill them
        with pytest.raises(WorkerDiedError):
            group.call(Calc.rank_of)
        backend.release(pool)  # the public call, without the group
        assert _spawn_refused(backend, _launch(backend, pool, ips[:1]))
    finally:
        group.shutdown()
    again = _calc(backend, pool)  # the slots and a new reservation are available
    try:
        assert again.call(Calc.rank_of) == [0, 1]
    finally:
        again.shutdown()


# --------------------------------------------------------------------------- dispatch modes
def _rank_plus(
    world_size: int, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    """Rank ``r`` gets ``x + 10 * r``."""
    (x,) = args
    return [((x + 10 * r,), dict(kwargs)) for r in range(world_size)]


def _total(outputs: list[Any]) -> list[int]:
    return [sum(outputs)]


@pytest.fixture
def replaced_one_to_all() -> Iterator[None]:
    """ONE_TO_ALL replaced for one test (by its lower-case name, as verl code passes it)."""
    assert update_dispatch_mode("one_to_all", _rank_plus, _total) is Dispatch.ONE_TO_ALL
    try:
        yield
    finally:
        remove_dispatch_mode(Dispatch.ONE_TO_ALL)


def test_update_dispatch_mode_replaces_a_builtin_mode(
    calc4: WorkerGroup[Calc], replaced_one_to_all: None
) -> None:
    # Calc.add returns x + rank: ranks get 1, 11, 21, 31 -> 1 + 12 + 23 + 34 = 70.
    assert calc4.call(Calc.add, 1) == [70]
    assert calc4.call_by_name("add", 1) == [70]
    remove_dispatch_mode("ONE_TO_ALL")
    assert calc4.call(Calc.add, 1) == [1, 2, 3, 4], "remove_dispatch_mode restores a built-in"
