"""What the fault matrix needs per backend: a leak probe, a kill in the middle of a call, and
a pool the backend cannot place.

The matrix itself (``test_fault_matrix.py``) is backend-agnostic; everything that differs
between backends lives here, keyed on the backend's type, so a later backend gets the matrix by
adding a branch (or nothing: the process-based defaults fit any backend with one local process
per rank).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

from runtime import Backend, ResourcePool, WorkerGroup
from runtime.testing import InProcessBackend
from runtime.testing.conformance import FaultHook
from runtime.testing.conformance.workers import FaultWorker
from tests.faults.workers import process_id

__all__ = [
    "KILL_SURFACE_S",
    "LeakProbe",
    "descendant_pids",
    "idle_count",
    "is_monarch",
    "is_ray",
    "MidCallKill",
    "unplaceable_pool",
]

#: A rank killed in the middle of a call must fail that call within this many seconds.
KILL_SURFACE_S = 5.0
#: How long the probe waits for a backend to finish releasing what a failed case started.
SETTLE_S = 15.0


def is_ray(backend: Backend) -> bool:
    """Whether ``backend`` is the Ray adapter (without importing ray otherwise)."""
    return type(backend).__module__.startswith("runtime_ray")


def is_monarch(backend: Backend) -> bool:
    """Whether ``backend`` is the Monarch adapter."""
    return type(backend).__module__.startswith("runtime_monarch")


def descendant_pids(root: int | None = None) -> set[int]:
    """Every live process below ``root`` (default: this one), read from ``/proc``."""
    root = os.getpid() if root is None else root
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] == "Z":  # a zombie is gone, only not yet reaped
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: set[int] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def idle_count(backend: Backend) -> int:
    """How many processes ``backend`` keeps on purpose between groups: a MonarchBackend parks
    a healthy rank's process for reuse by a later rank (torch imports cost seconds); that is
    not a leak. Read from its private pool (the backend has no public view of it; the pids
    there may be 0 for a rank whose group failed to start, so they are counted, not matched)."""
    idle = getattr(backend, "_idle", None)
    if not isinstance(idle, dict):
        return 0
    return sum(len(entries) for entries in idle.values())


class LeakProbe:
    """Counts what a backend holds: Ray's live actors and placement groups; for any other
    backend the processes below this driver, less those it keeps idle for reuse (and,
    in-process, the live threads).

    ``assert_clean()`` waits (at most :data:`SETTLE_S`) until the counts are back to what
    they were when the probe was made, then fails naming what is left.
    """

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.before = self.snapshot()

    def snapshot(self) -> dict[str, int]:
        if is_ray(self.backend):
            from tests.faults import _ray_state

            return {
                "ray actors alive": _ray_state.live_actor_count(),
                "ray placement groups": _ray_state.live_placement_group_count(),
            }
        counts = {"child processes": len(descendant_pids()) - idle_count(self.backend)}
        if isinstance(self.backend, InProcessBackend):
            counts["threads"] = threading.active_count()
        return counts

    def assert_clean(self) -> None:
        deadline = time.monotonic() + SETTLE_S
        now = self.snapshot()
        while now != self.before and time.monotonic() < deadline:
            time.sleep(0.2)
            now = self.snapshot()
        left = {k: (self.before[k], now[k]) for k in now if now[k] > self.before[k]}
        assert not left, f"left behind (before, after): {left}"


class MidCallKill:
    """Kill one rank while a call is running on it.

    Process backends: :meth:`arm` learns the rank's pid and makes its next ``FaultWorker.work``
    long (the ``faults`` hook); :meth:`fire`, called after submitting that call, sends SIGKILL
    from outside (as the OOM killer or a lost node does) and returns when. The in-process
    backend has no process to kill: its injected death fires when the call arrives, so
    :meth:`arm` injects it and :meth:`fire` returns the current time before the call.
    """

    def __init__(self, pid: int | None) -> None:
        self.pid = pid

    @classmethod
    def arm(
        cls, backend: Backend, group: WorkerGroup[FaultWorker], faults: FaultHook, rank: int
    ) -> MidCallKill:
        if isinstance(backend, InProcessBackend):
            backend.faults.die(rank, group=group.name)
            return cls(None)
        pid = group.run_function(process_id)[rank]
        faults.slow(group, rank, 30.0)
        return cls(pid)

    def fire(self) -> float:
        """Send the kill (process backends); returns its ``time.monotonic()``."""
        if self.pid is None:
            return time.monotonic()
        time.sleep(0.5)  # the call submitted before is running on the rank by now
        sent = time.monotonic()
        os.kill(self.pid, signal.SIGKILL)
        return sent


def unplaceable_pool(backend: Backend) -> ResourcePool:
    """One process asking for more devices than any node of ``backend`` has."""
    # In-process: one more than a node has; elsewhere 64 (the session's Ray cluster has 4 fake
    # GPUs, and no test machine has 64).
    devices = backend.devices_per_node + 1 if isinstance(backend, InProcessBackend) else 64
    return ResourcePool.create([1], devices_per_process=devices, name="unplaceable")
