"""The conformance suite's pytest plugin: the fixtures every shipped test uses.

Load it with ``pytest_plugins = ["runtime.testing.conformance.plugin"]`` in a top-level
``conftest.py`` (or ``-p runtime.testing.conformance.plugin``). The one fixture a backend
author overrides is :func:`runtime_backend` (session or module scope: the suite's shared
groups are module-scoped); :func:`runtime_fault_hook` may be overridden too, when the default
(:func:`~runtime.testing.conformance.default_fault_hook`) cannot kill or hang that backend's
ranks.

Fixtures: ``runtime_backend`` (default: a fresh :class:`~runtime.testing.InProcessBackend`),
``backend`` (the backend under test, as the suite's tests name it), ``runtime_fault_hook``,
``faults`` (the hook, cleared after each test), ``calc4``/``calc2`` (groups of
:class:`~runtime.testing.conformance.workers.Calc` shared by one test module).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from runtime import Backend, WorkerGroup, WorkerSpec
from runtime.testing._inprocess import InProcessBackend
from runtime.testing.conformance._support import FaultHook, cpu_pool, default_fault_hook
from runtime.testing.conformance.workers import Calc

__all__ = ["backend", "calc2", "calc4", "faults", "runtime_backend", "runtime_fault_hook"]


@pytest.fixture(scope="session")
def runtime_backend() -> Iterator[Backend]:
    """The backend under test. Override it (same name) to run the suite on another backend."""
    backend = InProcessBackend()
    yield backend
    backend.shutdown()


@pytest.fixture(scope="module")
def backend(runtime_backend: Backend) -> Backend:
    """The backend under test, checked to implement the Protocol."""
    if not isinstance(runtime_backend, Backend):
        raise TypeError(
            f"the runtime_backend fixture returned {type(runtime_backend).__qualname__}, which "
            "does not implement runtime.backend.Backend (see its docstring for the methods)"
        )
    return runtime_backend


@pytest.fixture
def runtime_fault_hook(backend: Backend) -> FaultHook:
    """How to slow, hang and kill a rank of ``backend``. Override for a backend whose ranks
    are not separate processes (the in-process backend gets its fault injection)."""
    return default_fault_hook(backend)


@pytest.fixture
def faults(runtime_fault_hook: FaultHook) -> Iterator[FaultHook]:
    """The fault hook; faults armed but not fired are cleared after the test."""
    yield runtime_fault_hook
    runtime_fault_hook.clear()


@pytest.fixture(scope="module")
def calc4(backend: Backend) -> Iterator[WorkerGroup[Calc]]:
    """Four ranks of :class:`Calc` (meshes ``infer`` = dp2 x tp2 and ``train`` = pp2 x dp2)."""
    group = WorkerGroup(backend, WorkerSpec.of(Calc), cpu_pool(4), role="calc")
    yield group
    group.shutdown()


@pytest.fixture(scope="module")
def calc2(backend: Backend) -> Iterator[WorkerGroup[Calc]]:
    """Two ranks of :class:`Calc` (verl's 2-worker examples)."""
    group = WorkerGroup(backend, WorkerSpec.of(Calc), cpu_pool(2), role="calc")
    yield group
    group.shutdown()
