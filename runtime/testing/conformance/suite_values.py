"""Every backend carries the same values: what cloudpickle moves (as Ray does) moves everywhere.

Lambdas, closures over driver state, and classes defined in a function (or in ``__main__``)
travel by value; a worker class defined in a function can be a group's worker.
"""

from __future__ import annotations

import pytest

from runtime import Backend, Dispatch, WorkerGroup, WorkerSpec, register
from runtime.errors import RemoteMethodError
from runtime.testing import InProcessBackend
from runtime.testing.conformance._support import cpu_pool
from runtime.testing.conformance.workers import Calc

__all__ = [
    "test_a_class_defined_in_a_function_travels_by_value",
    "test_a_closure_over_driver_state_travels",
    "test_a_lambda_travels_as_an_argument",
    "test_a_worker_class_defined_in_a_function_runs",
    "test_an_unpicklable_argument_is_named_in_process",
]


def test_a_lambda_travels_as_an_argument(calc2: WorkerGroup[Calc]) -> None:
    assert calc2.run_function(lambda worker, x: x * 2, 21) == [42, 42]


def test_a_closure_over_driver_state_travels(calc2: WorkerGroup[Calc]) -> None:
    scale = {"factor": 3}

    def reward_fn(worker: Calc, x: int) -> int:
        return x * scale["factor"]

    assert calc2.run_function(reward_fn, 5) == [15, 15]


def test_a_class_defined_in_a_function_travels_by_value(calc2: WorkerGroup[Calc]) -> None:
    class Box:
        def __init__(self, value: int) -> None:
            self.value = value

    def unbox(worker: Calc, box: Box) -> tuple[str, int]:
        return type(box).__name__, box.value + 1

    assert calc2.run_function(unbox, Box(1)) == [("Box", 2), ("Box", 2)]


def test_a_worker_class_defined_in_a_function_runs(backend: Backend) -> None:
    class Local:
        def __init__(self, base: int) -> None:
            self.base = base

        @register(Dispatch.ONE_TO_ALL)
        def plus(self, x: int) -> int:
            return self.base + x

    group = WorkerGroup(backend, WorkerSpec.of(Local, base=10), cpu_pool(2), role="local")
    try:
        assert group.call(Local.plus, 1) == [11, 11]
    finally:
        group.shutdown()


def test_an_unpicklable_argument_is_named_in_process(calc2: WorkerGroup[Calc]) -> None:
    if not isinstance(calc2.backend, InProcessBackend):
        pytest.skip("the wording of a pickling failure is each engine's own")
    import threading

    with pytest.raises(RemoteMethodError, match=r"argument 1 \(lock\) could not be pickled"):
        calc2.run_function(lambda worker, lock: 1, threading.Lock())
