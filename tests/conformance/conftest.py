"""Fixtures of the conformance suite: the ``backend`` parametrization, shared groups, faults.

Every test that takes ``backend`` (directly or through a group fixture) runs once per backend:
``inprocess`` (a fresh :class:`runtime.testing.InProcessBackend` for the session) and ``ray``
(the session-wide local cluster of ``tests._ray_session``; marked ``ray`` and skipped, with the
reason, when ray or that module is missing).

Starting a Ray actor costs about a second, so groups are created once per session (``calc4``,
``calc2``) or per module and reused; tests must not leave state behind in them.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Iterator
from typing import Any

import pytest

from runtime import Backend, ResourcePool, WorkerGroup, WorkerSpec
from runtime.testing import InProcessBackend
from tests.conformance.workers import Calc, FaultWorker

#: CPU share of every test process: keeps a 16-CPU Ray cluster from running out of slots.
POOL_CPUS = 0.25
#: How long a "hung" rank sleeps on a backend without fault injection (then it is killed).
HANG_SECONDS = 60.0

BACKENDS = [
    pytest.param("inprocess", id="inprocess"),
    pytest.param("ray", id="ray", marks=pytest.mark.ray),
]


def cpu_pool(*processes_per_node: int) -> ResourcePool:
    """A CPU-only pool for the suite (``cpu_pool(4)``: one node entry of 4 processes)."""
    return ResourcePool.create(list(processes_per_node), cpus_per_process=POOL_CPUS)


def _ray_backend() -> Backend:
    pytest.importorskip("ray", reason="ray is not installed; install it with: pip install '.[ray]'")
    try:
        session = importlib.import_module("tests._ray_session")
    except ModuleNotFoundError as exc:
        if exc.name != "tests._ray_session":
            raise
        pytest.skip("tests/_ray_session.py (the shared local Ray cluster) does not exist yet")
    backend = session.ray_backend()
    assert isinstance(backend, Backend), f"ray_backend() returned {backend!r}"
    return backend


@pytest.fixture(scope="session", params=BACKENDS)
def backend_name(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture(scope="session")
def backend(backend_name: str) -> Iterator[Backend]:
    """The backend under test (the Ray one is shared with the rest of the test session)."""
    if backend_name == "inprocess":
        inprocess = InProcessBackend()
        yield inprocess
        inprocess.shutdown()
    else:
        yield _ray_backend()


def stop_session_group(group: WorkerGroup[Any]) -> None:
    """Shut a session-scoped group down, unless its cluster is already gone.

    Session fixtures are torn down last-in first-out, so another package's fixture may have
    stopped the shared Ray cluster first; killing stale actor handles would only restart Ray.
    """
    if not isinstance(group.backend, InProcessBackend):
        import ray

        if not ray.is_initialized():
            return
    group.shutdown()


@pytest.fixture(scope="session")
def calc4(backend: Backend) -> Iterator[WorkerGroup[Calc]]:
    """Four ranks of :class:`Calc` (meshes ``infer`` = dp2 x tp2 and ``train`` = pp2 x dp2)."""
    group = WorkerGroup(backend, WorkerSpec.of(Calc), cpu_pool(4), role="calc")
    yield group
    stop_session_group(group)


@pytest.fixture(scope="session")
def calc2(backend: Backend) -> Iterator[WorkerGroup[Calc]]:
    """Two ranks of :class:`Calc` (verl's 2-worker examples)."""
    group = WorkerGroup(backend, WorkerSpec.of(Calc), cpu_pool(2), role="calc")
    yield group
    stop_session_group(group)


class FaultKit:
    """Make a rank slow, hung or dead, whatever the backend.

    In-process: the backend's deterministic fault injection. Elsewhere: ``FaultWorker.work``
    sleeps (slow, hang) and the rank's process is killed (die). ``slow``/``hang`` affect the
    next ``FaultWorker.work`` call on that rank; after ``die`` the rank is gone for good and the
    next call reports it.
    """

    def __init__(self, backend_name: str, backend: Backend) -> None:
        self.backend_name = backend_name
        self.backend = backend

    @property
    def inprocess(self) -> InProcessBackend | None:
        return self.backend if isinstance(self.backend, InProcessBackend) else None

    def slow(self, group: WorkerGroup[FaultWorker], rank: int, seconds: float) -> None:
        if (ip := self.inprocess) is not None:
            ip.faults.slow(rank, seconds=seconds, group=group.name, method="work")
        else:
            self._delay(group, rank, seconds)

    def hang(self, group: WorkerGroup[FaultWorker], rank: int) -> None:
        if (ip := self.inprocess) is not None:
            ip.faults.hang(rank, group=group.name, method="work")
        else:
            self._delay(group, rank, HANG_SECONDS)

    def die(self, group: WorkerGroup[Any], rank: int) -> None:
        if (ip := self.inprocess) is not None:
            ip.faults.die(rank, group=group.name)
            return
        import ray

        handle = group.workers[rank]
        actor = getattr(handle, "actor", None) or getattr(handle, "_actor", None)
        if actor is None:
            pytest.skip(
                f"cannot kill a rank: {type(handle).__qualname__} exposes no actor handle "
                "('actor' or '_actor'); teach FaultKit.die how to reach it"
            )
        ray.kill(actor, no_restart=True)
        # Let the death be noticed before the next call is made.
        deadline = time.monotonic() + 10
        while all(self.backend.alive([handle])) and time.monotonic() < deadline:
            time.sleep(0.05)

    def clear(self) -> None:
        if (ip := self.inprocess) is not None:
            ip.faults.clear()

    @staticmethod
    def _delay(group: WorkerGroup[FaultWorker], rank: int, seconds: float) -> None:
        group.call_per_rank(
            FaultWorker.set_delay,
            [
                FaultWorker.set_delay.bind(seconds if r == rank else 0.0)
                for r in range(group.world_size)
            ],
        )


@pytest.fixture
def faults(backend_name: str, backend: Backend) -> Iterator[FaultKit]:
    kit = FaultKit(backend_name, backend)
    yield kit
    kit.clear()
