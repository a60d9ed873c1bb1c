"""Worker context, exported environment, extra env, colocated and split device pools.

verl's test_high_level_scheduling_api semantics with ``devices_per_process=1``: groups colocated
on one pool see the same devices; groups on split pools see their own slice; a merged pool sees
the union again. (On Ray the devices are the session cluster's fake GPUs.)
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import attrs
import pytest

from runtime import (
    PROTECTED_ENV_KEYS,
    Backend,
    ResourcePool,
    SpawnOptions,
    WorkerContext,
    WorkerGroup,
    WorkerSpec,
    current_context,
    free_port,
    merge_pools,
)
from runtime.errors import DispatchError
from runtime.testing import InProcessBackend
from runtime.testing.conformance._support import POOL_CPUS, cpu_pool
from runtime.testing.conformance.workers import STD_ENV_KEYS, Calc, EnvWorker

__all__ = [
    "Groups",
    "groups",
    "test_a_shut_down_group_refuses_calls",
    "test_colocated_groups_see_the_same_devices",
    "test_context_is_immutable",
    "test_current_context_outside_a_worker_is_an_error",
    "test_driver_environment_is_untouched_by_calls",
    "test_each_rank_sees_its_own_context",
    "test_extra_worker_env_is_visible",
    "test_inprocess_devices_follow_the_plan",
    "test_master_address_and_port_override",
    "test_master_override_needs_both_or_neither",
    "test_merged_pool_sees_every_device_again",
    "test_nested_worker_sees_the_same_context",
    "test_protected_env_var_is_rejected",
    "test_split_pools_see_their_own_devices",
    "test_standard_variables_are_exported_per_rank",
]


@attrs.frozen
class Groups:
    pool: ResourcePool
    main: WorkerGroup[EnvWorker]  # extra env test_key=test_value
    colocated: WorkerGroup[EnvWorker]  # same pool, explicit master address and port
    left: WorkerGroup[EnvWorker]  # first half of the split pool
    right: WorkerGroup[EnvWorker]  # second half
    merged: WorkerGroup[EnvWorker]  # the two halves merged again
    port: int


@pytest.fixture(scope="module")
def groups(backend: Backend) -> Iterator[Groups]:
    pool = ResourcePool.create(
        [2], devices_per_process=1, max_colocate_count=4, cpus_per_process=POOL_CPUS
    )
    port = free_port()
    made: list[WorkerGroup[EnvWorker]] = []

    def group(
        pool: ResourcePool, role: str, master: tuple[str, int] | None = None
    ) -> WorkerGroup[EnvWorker]:
        spec = WorkerSpec.of(EnvWorker)
        if role == "main":
            spec = spec.with_env(test_key="test_value")
        addr, port = master if master is not None else (None, None)
        options = SpawnOptions(master_addr=addr, master_port=port)
        made.append(WorkerGroup(backend, spec, pool, role=role, options=options))
        return made[-1]

    try:
        main = group(pool, "main")
        colocated = group(pool, "colocated", ("127.0.0.1", port))
        left_pool, right_pool = pool.split(1)
        left = group(left_pool, "left")
        right = group(right_pool, "right")
        merged = group(merge_pools(left_pool, right_pool), "merged")
        yield Groups(pool, main, colocated, left, right, merged, port)
    finally:
        for g in made:
            g.shutdown()


def test_each_rank_sees_its_own_context(groups: Groups) -> None:
    g = groups.main
    contexts = g.contexts()
    assert [c.rank for c in contexts] == [0, 1]
    assert {c.world_size for c in contexts} == {2}
    assert [c.local_rank for c in contexts] == [0, 1]
    assert {c.local_world_size for c in contexts} == {2}
    assert {c.role for c in contexts} == {"main"}
    assert {c.group for c in contexts} == {g.name}
    assert {(c.master_addr, c.master_port) for c in contexts} == {(g.master_addr, g.master_port)}
    assert len({c.node_ip for c in contexts}) == 1
    # What the worker itself reads, in a method and in its constructor, is the same context.
    assert g.call(EnvWorker.context) == contexts
    assert [ctx for ctx, _ in g.call(EnvWorker.init_view)] == contexts


def test_standard_variables_are_exported_per_rank(groups: Groups) -> None:
    g = groups.main
    expected = [
        {
            "RANK": str(c.rank),
            "WORLD_SIZE": str(c.world_size),
            "LOCAL_RANK": str(c.local_rank),
            "LOCAL_WORLD_SIZE": str(c.local_world_size),
            "MASTER_ADDR": c.master_addr,
            "MASTER_PORT": str(c.master_port),
            "CUDA_VISIBLE_DEVICES": c.cuda_visible_devices,
        }
        for c in g.contexts()
    ]
    assert g.call(EnvWorker.env_now) == expected
    # Already exported before the worker was constructed.
    assert [env for _, env in g.call(EnvWorker.init_view)] == expected
    # verl's RAY_LOCAL_WORLD_SIZE check, in our variables.
    assert g.call(EnvWorker.getenv, "LOCAL_WORLD_SIZE") == ["2", "2"]


def test_driver_environment_is_untouched_by_calls(groups: Groups) -> None:
    before = {k: os.environ.get(k) for k in STD_ENV_KEYS}
    groups.main.call(EnvWorker.env_now)
    groups.main.submit(EnvWorker.context).get()
    assert {k: os.environ.get(k) for k in STD_ENV_KEYS} == before


def test_extra_worker_env_is_visible(groups: Groups) -> None:
    assert groups.main.call(EnvWorker.getenv, "test_key") == ["test_value", "test_value"]
    assert groups.colocated.call(EnvWorker.getenv, "test_key") == [None, None]


@pytest.mark.parametrize("key", sorted(PROTECTED_ENV_KEYS))
def test_protected_env_var_is_rejected(key: str) -> None:
    with pytest.raises(ValueError, match=key):
        WorkerSpec.of(EnvWorker).with_env(**{key: "100"})
    with pytest.raises(ValueError, match=key):
        WorkerSpec(EnvWorker, env={key: "1", "fine": "x"})


def test_colocated_groups_see_the_same_devices(groups: Groups) -> None:
    main = [c.visible_devices for c in groups.main.contexts()]
    colocated = [c.visible_devices for c in groups.colocated.contexts()]
    assert colocated == main
    assert all(len(d) == 1 for d in main)
    assert main[0] != main[1]
    env = groups.main.call(EnvWorker.getenv, "CUDA_VISIBLE_DEVICES")
    assert env == [",".join(d) for d in main]


def test_inprocess_devices_follow_the_plan(backend: Backend, groups: Groups) -> None:
    if not isinstance(backend, InProcessBackend):
        pytest.skip("device ids are chosen by the backend; the in-process plan is exact")
    assert [c.visible_devices for c in groups.main.contexts()] == [("0",), ("1",)]
    assert [c.visible_devices for c in groups.left.contexts()] == [("0",)]
    assert [c.visible_devices for c in groups.right.contexts()] == [("1",)]


def test_split_pools_see_their_own_devices(groups: Groups) -> None:
    main = [c.visible_devices for c in groups.main.contexts()]
    (left,) = groups.left.contexts()
    (right,) = groups.right.contexts()
    assert (left.visible_devices, right.visible_devices) == (main[0], main[1])
    for ctx in (left, right):
        assert (ctx.rank, ctx.world_size, ctx.local_rank) == (0, 1, 0)
    assert groups.left.call(EnvWorker.getenv, "WORLD_SIZE") == ["1"]


def test_merged_pool_sees_every_device_again(groups: Groups) -> None:
    merged = groups.merged.contexts()
    assert [c.visible_devices for c in merged] == [
        c.visible_devices for c in groups.main.contexts()
    ]
    assert [c.rank for c in merged] == [0, 1]
    assert groups.merged.world_size == 2


def test_master_address_and_port_override(groups: Groups) -> None:
    g = groups.colocated
    assert (g.master_addr, g.master_port) == ("127.0.0.1", groups.port)
    assert {(c.master_addr, c.master_port) for c in g.contexts()} == {("127.0.0.1", groups.port)}
    assert g.call(EnvWorker.getenv, "MASTER_PORT") == [str(groups.port)] * 2
    assert g.call(EnvWorker.getenv, "MASTER_ADDR") == ["127.0.0.1"] * 2


@pytest.mark.parametrize(
    ("addr", "port"), [("127.0.0.1", None), (None, 29500)], ids=["addr_only", "port_only"]
)
def test_master_override_needs_both_or_neither(
    backend: Backend, addr: str | None, port: int | None
) -> None:
    with pytest.raises(ValueError, match="give both or neither"):
        SpawnOptions(master_addr=addr, master_port=port)


def test_nested_worker_sees_the_same_context(calc4: WorkerGroup[Calc]) -> None:
    # verl test_nested_worker: TestActor(x=2) built inside a worker on 4 ranks -> [2, 3, 4, 5].
    assert calc4.call(Calc.nested_get) == [2, 3, 4, 5]
    assert calc4.call(Calc.nested_context) == calc4.contexts()


def test_current_context_outside_a_worker_is_an_error() -> None:
    with pytest.raises(LookupError, match="outside a worker"):
        current_context()


def test_context_is_immutable(groups: Groups) -> None:
    ctx = groups.main.contexts()[0]
    assert isinstance(ctx, WorkerContext)
    field = "rank"
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        setattr(ctx, field, 5)


def test_a_shut_down_group_refuses_calls(backend: Backend) -> None:
    group = WorkerGroup(backend, WorkerSpec.of(EnvWorker), cpu_pool(1), role="brief")
    assert group.call(EnvWorker.getenv, "RANK") == ["0"]
    group.shutdown()
    group.shutdown()  # idempotent
    with pytest.raises(DispatchError, match="shut down"):
        group.call(EnvWorker.getenv, "RANK")
