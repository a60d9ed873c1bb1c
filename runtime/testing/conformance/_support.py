"""Helpers of the conformance suite: small pools and the fault hook each backend provides."""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any, Protocol, runtime_checkable

from runtime import Backend, ResourcePool, WorkerGroup
from runtime.backend import RankCall, WorkerHost
from runtime.errors import CallTimeoutError, WorkerError
from runtime.testing._inprocess import InProcessBackend
from runtime.testing.conformance.workers import FaultWorker

__all__ = [
    "HANG_SECONDS",
    "POOL_CPUS",
    "FaultHook",
    "InProcessFaults",
    "ProcessFaults",
    "cpu_pool",
    "default_fault_hook",
    "exit_process",
]

#: CPU share of every test process: keeps a 16-CPU Ray cluster from running out of slots.
POOL_CPUS = 0.25
#: How long a "hung" rank sleeps on a backend without fault injection (then it is killed).
HANG_SECONDS = 60.0
#: How long :meth:`ProcessFaults.kill` waits for the backend to notice the death.
KILL_NOTICE_SECONDS = 10.0


def cpu_pool(*processes_per_node: int) -> ResourcePool:
    """A CPU-only pool for the suite (``cpu_pool(4)``: one node entry of 4 processes)."""
    return ResourcePool.create(list(processes_per_node), cpus_per_process=POOL_CPUS)


@runtime_checkable
class FaultHook(Protocol):
    """Make a rank slow, hung or dead on one backend (the ``runtime_fault_hook`` fixture).

    ``slow``/``hang`` affect the next ``FaultWorker.work`` call on that rank of ``group``;
    after ``kill`` the rank's host is gone for good (its process killed) and the next call
    reports it. ``clear`` drops armed faults that never fired (after each test).
    """

    def slow(self, group: WorkerGroup[FaultWorker], rank: int, seconds: float) -> None: ...

    def hang(self, group: WorkerGroup[FaultWorker], rank: int) -> None: ...

    def kill(self, group: WorkerGroup[Any], rank: int) -> None: ...

    def clear(self) -> None: ...


class InProcessFaults:
    """:class:`InProcessBackend`: its deterministic fault injection (nothing sleeps)."""

    def __init__(self, backend: InProcessBackend) -> None:
        self.backend = backend

    def slow(self, group: WorkerGroup[FaultWorker], rank: int, seconds: float) -> None:
        self.backend.faults.slow(rank, seconds=seconds, group=group.name, method="work")

    def hang(self, group: WorkerGroup[FaultWorker], rank: int) -> None:
        self.backend.faults.hang(rank, group=group.name, method="work")

    def kill(self, group: WorkerGroup[Any], rank: int) -> None:
        self.backend.faults.die(rank, group=group.name)

    def clear(self) -> None:
        self.backend.faults.clear()


def exit_process(worker: object) -> None:
    """Run on a rank (``WorkerHost.RUN_FUNCTION``): end its process at once, as a crash."""
    os._exit(17)


class ProcessFaults:
    """Any backend with one process per rank: ``FaultWorker.work`` sleeps (slow, hang) and
    ``kill`` makes the rank's process exit (``os._exit``) from inside, then waits until
    ``backend.alive`` reports it (at most :data:`KILL_NOTICE_SECONDS`)."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def slow(self, group: WorkerGroup[FaultWorker], rank: int, seconds: float) -> None:
        self._delay(group, rank, seconds)

    def hang(self, group: WorkerGroup[FaultWorker], rank: int) -> None:
        self._delay(group, rank, HANG_SECONDS)

    def kill(self, group: WorkerGroup[Any], rank: int) -> None:
        handle = group.workers[rank]
        call = RankCall(rank, group.role, WorkerHost.RUN_FUNCTION, (exit_process,), {})
        pending = self.backend.submit([handle], [call])
        # The expected outcome is an error: the rank died during the call.
        with contextlib.suppress(WorkerError, CallTimeoutError):
            self.backend.wait(pending, timeout=KILL_NOTICE_SECONDS)
        deadline = time.monotonic() + KILL_NOTICE_SECONDS
        while all(self.backend.alive([handle])) and time.monotonic() < deadline:
            time.sleep(0.05)

    def clear(self) -> None:
        pass

    @staticmethod
    def _delay(group: WorkerGroup[FaultWorker], rank: int, seconds: float) -> None:
        group.call_per_rank(
            FaultWorker.set_delay,
            [
                FaultWorker.set_delay.bind(seconds if r == rank else 0.0)
                for r in range(group.world_size)
            ],
        )


def default_fault_hook(backend: Backend) -> FaultHook:
    """The in-process backend's injection, or :class:`ProcessFaults` for any other backend."""
    if isinstance(backend, InProcessBackend):
        return InProcessFaults(backend)
    return ProcessFaults(backend)
