"""Negative typing cases: every marked line MUST be a mypy error with exactly that code.

Checked by mypy (``make typecheck``), never run by pytest. ``warn_unused_ignores`` turns a
line that stops being an error into a gate failure, and an error with another code is reported
as it is, so each ``# type: ignore[<code>]`` pins one specific error.
"""

from __future__ import annotations

from runtime import (
    Batch,
    BatchFuture,
    Dispatch,
    Execute,
    WorkerGroup,
    WorkerSpec,
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

    @register(Dispatch.DP_COMPUTE_PROTO)
    def step(self, data: Batch, lr: float = 1.0) -> Batch:
        return data

    @register(Dispatch.DP_COMPUTE_METRIC)
    def metrics(self, data: Batch) -> dict[str, float]:
        return {}

    def not_registered(self) -> None:
        # Inside the worker a registered method keeps its plain signature and result type.
        self.add("one")  # type: ignore[arg-type]
        self.step(Batch()).append(1)  # type: ignore[attr-defined]


class Other:
    @register(Dispatch.ONE_TO_ALL)
    def add(self, x: int) -> int:
        return x


def wrong_arguments(group: WorkerGroup[Worker], batch: Batch) -> None:
    # Wrong argument type.
    group.call(Worker.add, "one")  # type: ignore[call-overload]
    group.call(Worker.step, [1, 2])  # type: ignore[call-overload]
    # Missing required argument.
    group.call(Worker.add)  # type: ignore[call-overload]
    # Unknown keyword argument.
    group.call(Worker.add, 1, z=2)  # type: ignore[call-arg, arg-type]
    # Wrong keyword argument type.
    group.call(Worker.step, batch, lr="fast")  # type: ignore[arg-type]


def wrong_methods(group: WorkerGroup[Worker]) -> None:
    # A method of another worker class.
    group.call(Other.add, 1)  # type: ignore[call-overload]
    # A method that is not registered.
    group.call(Worker.not_registered)  # type: ignore[call-overload]
    # Per-rank methods go through call_per_rank, broadcast methods through call.
    group.call(Worker.foo, 1, "y")  # type: ignore[call-overload]
    group.call_per_rank(Worker.add, [Worker.add.bind(1)])  # type: ignore[arg-type]


def wrong_per_rank_arguments() -> None:
    Worker.foo.bind("x", "y")  # type: ignore[arg-type]
    Worker.foo.bind(1)  # type: ignore[call-arg]


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


def wrong_specs() -> None:
    WorkerSpec.of(Worker, "fast")  # type: ignore[arg-type]
    WorkerSpec.of(Worker, lr=0.1, momentum=0.9)  # type: ignore[call-arg]
    WorkerSpec.of(Worker)  # type: ignore[call-arg]


def wrong_registrations() -> None:
    # Execute.RANK_ZERO only combines with ONE_TO_ALL, ALL_TO_ALL or RANK_ZERO dispatch.
    register(Dispatch.DP_COMPUTE_PROTO, Execute.RANK_ZERO)  # type: ignore[call-overload]
