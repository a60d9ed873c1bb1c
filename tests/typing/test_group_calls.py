"""Positive typing cases: the result type of every group call mode, pinned with assert_type.

Checked by mypy (``make typecheck``), never run by pytest. Each ``assert_type`` fails the gate
if the inferred type changes.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, assert_type

from runtime import (
    Backend,
    Batch,
    BatchFuture,
    CallArgs,
    Dispatch,
    Execute,
    FusedGroup,
    GroupFuture,
    ResourcePool,
    SpawnOptions,
    WorkerContext,
    WorkerGroup,
    WorkerSpec,
    fuse,
    mesh_dispatch,
    register,
    register_dispatch_mode,
    sibling,
)


def _dispatch(
    world_size: int, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    return [(args, kwargs)] * world_size


def _collect(outputs: list[Any]) -> Any:
    return outputs


MODE = register_dispatch_mode("TYPING_ONLY", _dispatch, _collect)


class Worker:
    def __init__(self, lr: float, *, name: str = "w") -> None:
        self.lr = lr
        self.name = name

    @register(Dispatch.ONE_TO_ALL)
    def add(self, x: int) -> int:
        return x

    @register(Dispatch.ONE_TO_ALL)
    async def add_async(self, x: int) -> str:
        return str(x)

    @register(Dispatch.ONE_TO_ALL, Execute.RANK_ZERO)
    def zero(self, x: int) -> float:
        return float(x)

    @register(Dispatch.ALL_TO_ALL, Execute.RANK_ZERO)
    async def zero_async(self, x: int) -> bytes:
        return bytes(x)

    @register(Dispatch.RANK_ZERO)
    def zero_mode(self) -> str:
        return ""

    @register(execute_mode=Execute.RANK_ZERO)
    def zero_default(self, x: int) -> tuple[int, int]:
        return x, x

    @register(Dispatch.ALL_TO_ALL)
    def foo(self, x: int, y: str) -> float:
        return float(x)

    @register()
    def default_mode(self, x: int) -> int:
        return x

    @register(Dispatch.DP_COMPUTE)
    async def shard(self, xs: list[int]) -> int:
        return sum(xs)

    @register(Dispatch.DP_COMPUTE_PROTO)
    def step(self, data: Batch, lr: float = 1.0) -> Batch:
        return data

    @register(Dispatch.DP_COMPUTE_PROTO)
    async def step_async(self, data: Batch) -> Batch:
        return data

    @register(mesh_dispatch("train"))
    def mesh_step(self, data: Batch, *, scale: int = 1) -> Batch:
        return data

    @register(Dispatch.DP_COMPUTE_PROTO_WITH_FUNC)
    def apply(self, fn: Callable[[Batch], Batch], data: Batch) -> Batch:
        return fn(data)

    @register(Dispatch.DP_COMPUTE_PROTO_WITH_FUNC, pad=True)
    async def apply_async(self, fn: Callable[[Batch], Batch], data: Batch, *, k: int = 0) -> Batch:
        return fn(data)

    @register(Dispatch.DP_COMPUTE_PROTO, pad=True)
    def step_padded(self, data: Batch, lr: float = 1.0) -> Batch:
        return data

    @register(mesh_dispatch("train"), pad=True)
    async def mesh_step_async(self, data: Batch) -> Batch:
        return data

    @register(Dispatch.DP_COMPUTE_METRIC, pad=False)
    def metrics_unpadded(self, data: Batch, top: int) -> float:
        return 0.0

    @register(Dispatch.ALL_TO_ALL)
    async def foo_async(self, x: int) -> str:
        return str(x)

    @register(MODE)
    async def custom_async(self, x: int) -> int:
        return x

    @register(Dispatch.DP_COMPUTE_METRIC)
    def metrics(self, data: Batch) -> dict[str, float]:
        return {}

    @register(Dispatch.DP_COMPUTE_METRIC)
    async def metrics_async(self, data: Batch) -> list[float]:
        return []

    @register(MODE)
    def custom(self, x: int) -> int:
        return x

    @register("TYPING_ONLY")
    def custom_by_name(self, x: int) -> int:
        return x

    def inside(self) -> None:
        """Inside the worker, a registered method is a plain method with its plain type."""
        assert_type(self.add(1), int)
        assert_type(self.zero(1), float)
        assert_type(self.foo(1, "y"), float)
        assert_type(self.step(Batch(), lr=0.5), Batch)
        assert_type(self.metrics(Batch()), dict[str, float])
        assert_type(self.add_async(1), Coroutine[Any, Any, str]).close()
        assert_type(self.step_padded(Batch(), 0.1), Batch)
        assert_type(self.mesh_step_async(Batch()), Coroutine[Any, Any, Batch]).close()
        assert_type(self.foo_async(1), Coroutine[Any, Any, str]).close()
        other = sibling("critic", Critic)
        assert_type(other.score(Batch()), Batch)


class Critic:
    @register(Dispatch.DP_COMPUTE_PROTO)
    def score(self, data: Batch) -> Batch:
        return data


def double(data: Batch) -> Batch:
    return data


def rank_of(worker: Worker, offset: int) -> int:
    return offset


def blocking_calls(group: WorkerGroup[Worker], batch: Batch, future: BatchFuture) -> None:
    # ONE_TO_ALL -> list[R], also for async def methods.
    assert_type(group.call(Worker.add, 1), list[int])
    assert_type(group.call(Worker.add, x=1), list[int])
    assert_type(group.call(Worker.add_async, 1), list[str])
    # Execute.RANK_ZERO (or Dispatch.RANK_ZERO) -> R.
    assert_type(group.call(Worker.zero, 1), float)
    assert_type(group.call(Worker.zero_async, 1), bytes)
    assert_type(group.call(Worker.zero_mode), str)
    assert_type(group.call(Worker.zero_default, 2), tuple[int, int])
    # DP_COMPUTE_PROTO and mesh modes -> Batch, with a Batch or a BatchFuture as the data.
    assert_type(group.call(Worker.step, batch), Batch)
    assert_type(group.call(Worker.step, batch, lr=0.1), Batch)
    assert_type(group.call(Worker.step, future), Batch)
    assert_type(group.call(Worker.step_async, future), Batch)
    assert_type(group.call(Worker.mesh_step, batch, scale=2), Batch)
    # DP_COMPUTE_PROTO_WITH_FUNC -> Batch.
    assert_type(group.call(Worker.apply, double, batch), Batch)
    assert_type(group.call(Worker.apply, double, future), Batch)
    assert_type(group.call(Worker.apply_async, double, future, k=1), Batch)
    assert_type(group.call(Worker.mesh_step_async, future), Batch)
    # DP_COMPUTE_METRIC -> list[R].
    assert_type(group.call(Worker.metrics_unpadded, batch, 3), list[float])
    assert_type(group.call(Worker.metrics_unpadded, batch, top=3), list[float])
    assert_type(group.call(Worker.metrics, batch), list[dict[str, float]])
    assert_type(group.call(Worker.metrics_async, future), list[list[float]])
    # ALL_TO_ALL / DP_COMPUTE -> list[R] through call_per_rank.
    per_rank = [Worker.foo.bind(1, "a"), Worker.foo.bind(x=2, y="b")]
    assert isinstance(per_rank[0], CallArgs)
    assert_type(group.call_per_rank(Worker.foo, per_rank), list[float])
    assert_type(group.call_per_rank(Worker.shard, [Worker.shard.bind([1, 2])]), list[int])
    assert_type(group.call_per_rank(Worker.default_mode, [Worker.default_mode.bind(3)]), list[int])
    assert_type(group.call_per_rank(Worker.foo_async, [Worker.foo_async.bind(1)]), list[str])
    # Custom modes -> Any.
    assert_type(group.call(Worker.custom, 1), Any)
    assert_type(group.call(Worker.custom_async, 1), Any)
    assert_type(group.call(Worker.custom_by_name, 1), Any)
    # Untyped escape hatches and helpers.
    assert_type(group.call_by_name("add", 1), Any)
    assert_type(group.run_function(rank_of, 3), list[int])
    assert_type(group.contexts(), list[WorkerContext])
    assert_type(group.with_timeout(1.0), WorkerGroup[Worker])


def non_blocking_calls(group: WorkerGroup[Worker], batch: Batch, future: BatchFuture) -> None:
    assert_type(group.submit(Worker.add, 1), GroupFuture[list[int]])
    assert_type(group.submit(Worker.add_async, 1), GroupFuture[list[str]])
    assert_type(group.submit(Worker.zero, 1), GroupFuture[float])
    assert_type(group.submit(Worker.zero_async, 1), GroupFuture[bytes])
    assert_type(group.submit(Worker.step, batch), BatchFuture)
    assert_type(group.submit(Worker.step_async, future), BatchFuture)
    assert_type(group.submit(Worker.mesh_step, future), BatchFuture)
    assert_type(group.submit(Worker.apply, double, batch), BatchFuture)
    assert_type(group.submit(Worker.metrics, batch), GroupFuture[list[dict[str, float]]])
    assert_type(group.submit(Worker.custom, 1), GroupFuture[Any])
    assert_type(
        group.submit_per_rank(Worker.foo, [Worker.foo.bind(1, "a")]), GroupFuture[list[float]]
    )
    assert_type(group.submit(Worker.add, 1).get(timeout=1.0), list[int])
    assert_type(group.submit(Worker.step, batch).get(), Batch)
    assert_type(group.submit(Worker.zero, 1).get(), float)


def padded_calls(group: WorkerGroup[Worker], batch: Batch, future: BatchFuture) -> None:
    # A method registered with pad=True types like any other of its mode.
    assert_type(group.call(Worker.step_padded, batch, lr=0.5), Batch)
    assert_type(group.submit(Worker.step_padded, future), BatchFuture)
    assert_type(group.submit(Worker.apply_async, double, batch), BatchFuture)
    # A padding view is a WorkerGroup of the same class, with the same typed calls.
    padded = group.with_padding()
    assert_type(padded, WorkerGroup[Worker])
    assert_type(padded.padding, bool)
    assert_type(padded.with_timeout(5.0).with_padding(False), WorkerGroup[Worker])
    assert_type(padded.call(Worker.step, batch), Batch)
    assert_type(padded.submit(Worker.step_async, future), BatchFuture)
    assert_type(padded.call(Worker.metrics, future), list[dict[str, float]])
    assert_type(padded.submit(Worker.metrics_async, batch), GroupFuture[list[list[float]]])
    assert_type(padded.call(Worker.mesh_step, batch, scale=3), Batch)
    assert_type(padded.call(Worker.add, 1), list[int])
    assert_type(padded.call_per_rank(Worker.foo, [Worker.foo.bind(1, "a")]), list[float])


async def awaiting(group: WorkerGroup[Worker], batch: Batch) -> None:
    assert_type(await group.submit(Worker.add, 1), list[int])
    assert_type(await group.submit(Worker.step, batch), Batch)
    assert_type(await group.submit(Worker.zero, 1), float)


def construction(backend: Backend, pool: ResourcePool) -> None:
    spec = WorkerSpec.of(Worker, 0.1, name="x")
    assert_type(spec, WorkerSpec[Worker])
    assert_type(spec.with_env(KEY="v"), WorkerSpec[Worker])
    group = WorkerGroup(backend, spec, pool)
    assert_type(group, WorkerGroup[Worker])
    options = SpawnOptions(name="actor", port_range=(20000, 21000), start_timeout=60.0)
    named = WorkerGroup(backend, spec, pool, role="actor", timeout=5.0, options=options)
    assert_type(named, WorkerGroup[Worker])
    fused = fuse(backend, {"actor": spec, "critic": WorkerSpec.of(Critic)}, pool)
    assert_type(fused, FusedGroup)
    fused = fuse(backend, {"actor": spec}, pool, timeout=5.0, options=SpawnOptions(name="f"))
    assert_type(fused, FusedGroup)
    critic = fused.view("critic", Critic)
    assert_type(critic, WorkerGroup[Critic])
    assert_type(critic.call(Critic.score, Batch()), Batch)


def fused_views(fused: FusedGroup, batch: Batch, future: BatchFuture) -> None:
    """A fused group's views (also of its padding and timeout variants) type like groups."""
    assert_type(fused.with_padding(), FusedGroup)
    assert_type(fused.with_timeout(1.0).with_padding(False), FusedGroup)
    actor = fused.with_padding().view("actor", Worker)
    assert_type(actor, WorkerGroup[Worker])
    assert_type(actor.call(Worker.add, 1), list[int])
    assert_type(actor.call(Worker.zero_async, 1), bytes)
    assert_type(actor.submit(Worker.step, future), BatchFuture)
    assert_type(actor.call(Worker.apply, double, batch), Batch)
    assert_type(actor.submit(Worker.metrics, batch), GroupFuture[list[dict[str, float]]])
    assert_type(
        actor.submit_per_rank(Worker.shard, [Worker.shard.bind([1])]), GroupFuture[list[int]]
    )
    critic = fused.view("critic", Critic)
    assert_type(critic.submit(Critic.score, actor.submit(Worker.step, batch)), BatchFuture)
