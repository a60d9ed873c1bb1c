"""Negative typing cases: every marked line MUST be a mypy error with exactly that code.

Checked by mypy (``make typecheck``), never run by pytest. ``warn_unused_ignores`` turns a
line that stops being an error into a gate failure, and an error with another code is reported
as it is, so each ``# type: ignore[<code>]`` pins one specific error.
"""

from __future__ import annotations

from collections.abc import Callable

from runtime import (
    Backend,
    Batch,
    BatchFuture,
    Dispatch,
    Execute,
    ResourcePool,
    SpawnOptions,
    WorkerGroup,
    WorkerSpec,
    fuse,
    register,
)


class Worker:
    def __init__(self, lr: float) -> None:
        self.lr = lr

    @register(Dispatch.ONE_TO_ALL)
    def add(self, x: int) -> int:
        return x

    @register(Dispatch.ONE_TO_ALL, Execute.RANK_ZERO)
    def zero(self, x: int) -> float:
        return float(x)

    @register(Dispatch.ALL_TO_ALL)
    def foo(self, x: int, y: str) -> float:
        return float(x)

    @register(Dispatch.DP_COMPUTE)
    def bar(self, xs: list[int]) -> int:
        return len(xs)

    @register(Dispatch.DP_COMPUTE_PROTO)
    def step(self, data: Batch, lr: float = 1.0) -> Batch:
        return data

    @register(Dispatch.DP_COMPUTE_PROTO_WITH_FUNC)
    def apply(self, fn: Callable[[Batch], Batch], data: Batch) -> Batch:
        return fn(data)

    @register(Dispatch.DP_COMPUTE_METRIC)
    def metrics(self, data: Batch) -> dict[str, float]:
        return {}

    def not_registered(self) -> None:
        # Inside the worker a registered method keeps its plain signature and result type.
        self.add("one")  # type: ignore[arg-type]
        self.step(Batch()).append(1)  # type: ignore[attr-defined]
        self.step(BatchFuture.__new__(BatchFuture))  # type: ignore[arg-type]


class Other:
    @register(Dispatch.ONE_TO_ALL)
    def add(self, x: int) -> int:
        return x


class Critic:
    @register(Dispatch.DP_COMPUTE_PROTO)
    def score(self, data: Batch) -> Batch:
        return data


def wrong_arguments(group: WorkerGroup[Worker], batch: Batch) -> None:
    # Wrong argument type.
    group.call(Worker.add, "one")  # type: ignore[arg-type]
    group.submit(Worker.add, "one")  # type: ignore[arg-type]
    group.call(Worker.step, [1, 2])  # type: ignore[arg-type]
    group.call(Worker.apply, batch, batch)  # type: ignore[arg-type]
    # Missing required argument.
    group.call(Worker.add)  # type: ignore[call-arg]
    group.call(Worker.step)  # type: ignore[call-arg]
    # Unknown keyword argument.
    group.call(Worker.add, 1, z=2)  # type: ignore[call-arg]
    # Wrong keyword argument type.
    group.call(Worker.step, batch, lr="fast")  # type: ignore[arg-type]
    # The sharded batch is positional: it goes first, never by keyword.
    group.call(Worker.step, data=batch)  # type: ignore[call-arg]
    # A padding view checks the same way.
    group.with_padding().call(Worker.add, "one")  # type: ignore[arg-type]


def wrong_methods(group: WorkerGroup[Worker]) -> None:
    # A method of another worker class.
    group.call(Other.add, 1)  # type: ignore[arg-type]
    # A method that is not registered.
    group.call(Worker.not_registered)  # type: ignore[arg-type]
    # Per-rank methods go through call_per_rank, broadcast methods through call.
    group.call(Worker.foo, 1, "y")  # type: ignore[arg-type]
    group.submit(Worker.foo, 1, "y")  # type: ignore[arg-type]
    group.call_per_rank(Worker.add, [Worker.foo.bind(1, "y")])  # type: ignore[arg-type]
    group.submit_per_rank(Worker.step, [Worker.foo.bind(1, "y")])  # type: ignore[arg-type]
    # Another method's bound arguments (mypy: "Cannot infer value of type parameter").
    group.call_per_rank(Worker.foo, [Worker.bar.bind([1])])  # type: ignore[misc]
    group.submit_per_rank(Worker.bar, [Worker.foo.bind(1, "y")])  # type: ignore[misc]
    bound = [Worker.bar.bind([1])]
    group.call_per_rank(Worker.foo, bound)  # type: ignore[misc]


def wrong_fused_views(backend: Backend, pool: ResourcePool) -> None:
    fused = fuse(
        backend, {"actor": WorkerSpec.of(Worker, 0.1), "critic": WorkerSpec.of(Critic)}, pool
    )
    critic = fused.with_padding().view("critic", Critic)
    critic.call(Worker.add, 1)  # type: ignore[arg-type]
    critic.call(Critic.score, 1)  # type: ignore[arg-type]


def wrong_per_rank_arguments() -> None:
    Worker.foo.bind("x", "y")  # type: ignore[arg-type]
    Worker.foo.bind(1)  # type: ignore[call-arg]
    # Only per-rank methods have per-rank arguments.
    Worker.add.bind(1)  # type: ignore[attr-defined]


def misused_results(group: WorkerGroup[Worker], batch: Batch, future: BatchFuture) -> None:
    # A list result used as a Batch.
    group.call(Worker.add, 1).tensors  # type: ignore[attr-defined]
    group.call(Worker.metrics, batch).tensors  # type: ignore[attr-defined]
    group.submit(Worker.add, 1).get().tensors  # type: ignore[attr-defined]
    # A Batch result used as a list.
    group.call(Worker.step, batch).append(batch)  # type: ignore[attr-defined]
    group.submit(Worker.step, future).get().append(batch)  # type: ignore[attr-defined]
    # A rank-zero result is a single value, not a list.
    group.call(Worker.zero, 1).append(1.0)  # type: ignore[attr-defined]
    total: int = group.call(Worker.zero, 1)  # type: ignore[assignment]
    del total
    # A GroupFuture of a list is not a BatchFuture.
    chained: BatchFuture = group.submit(Worker.metrics, batch)  # type: ignore[assignment]
    del chained


def wrong_specs() -> None:
    WorkerSpec.of(Worker, "fast")  # type: ignore[arg-type]
    WorkerSpec.of(Worker, lr=0.1, momentum=0.9)  # type: ignore[call-arg]
    WorkerSpec.of(Worker)  # type: ignore[call-arg]


def wrong_spawn_options(backend: Backend, pool: ResourcePool) -> None:
    spec = WorkerSpec.of(Worker, 0.1)
    # Spawn settings live in SpawnOptions, not in the group's keywords.
    WorkerGroup(backend, spec, pool, name="x")  # type: ignore[call-overload]
    SpawnOptions(start_timeout="soon")  # type: ignore[arg-type]
    SpawnOptions("name")  # type: ignore[call-arg]


def not_a_batch(self: Worker, x: int) -> Batch:
    return Batch()


def not_returning_a_batch(self: Worker, data: Batch) -> int:
    return 0


def wrong_registrations() -> None:
    # Execute.RANK_ZERO only combines with ONE_TO_ALL, ALL_TO_ALL or RANK_ZERO dispatch.
    register(Dispatch.DP_COMPUTE_PROTO, Execute.RANK_ZERO)  # type: ignore[call-overload]
    # Padding only applies to the sharded modes.
    register(Dispatch.ONE_TO_ALL, pad=True)  # type: ignore[call-overload]
    register(Dispatch.ALL_TO_ALL, pad=True)  # type: ignore[call-overload]
    # A sharded method takes a Batch first and returns a Batch.
    register(Dispatch.DP_COMPUTE_PROTO)(not_a_batch)  # type: ignore[arg-type]
    register(Dispatch.DP_COMPUTE_PROTO, pad=True)(not_returning_a_batch)  # type: ignore[type-var]
