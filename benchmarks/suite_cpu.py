"""CPU clocks of a training run's processes (Linux ``/proc``), read by the benchmarks.

Two measurements, both from the kernel's own accounting rather than inferred from wall time:

* **per worker call**: :class:`ClockedActor` (a benchmark-only subclass of the trainer's
  actor) wraps its generate, log-prob and update methods in a :class:`CallClock` record: the
  wall time inside the method, the executing thread's time on a CPU (``time.thread_time()``)
  and its time *runnable but waiting for a CPU* (the run-queue nanoseconds of
  ``/proc/thread-self/schedstat``), and the process's CPU time (every thread: torch, gloo,
  Ray's own). The rest of the wall time (``wall - on_cpu - runqueue``) the thread slept:
  blocked on a peer rank in an all-reduce, on I/O, or on a lock.
* **per process, over a window**: :func:`snapshot` reads the CPU seconds (``/proc/PID/stat``)
  and summed run-queue wait of every thread (``/proc/PID/task/*/schedstat``) of the driver and
  all its descendants (a local Ray cluster's daemons and workers are the driver's
  descendants); :func:`utilisation` turns two snapshots into the share of the cores used.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from ppo.workers import ActorRolloutWorker, RewardWorker
from runtime import Batch, Dispatch, register

__all__ = [
    "CallClock",
    "ClockedActor",
    "ClockedReward",
    "Snapshot",
    "call_clocks",
    "clock_call",
    "cores",
    "median_cpu",
    "snapshot",
    "split_by_method",
    "split_slow_rank",
    "utilisation",
    "worker_pid",
]

_TICK = float(os.sysconf("SC_CLK_TCK"))


@attrs.frozen
class CallClock:
    """One method call on one rank; times in seconds, ``start`` on the host's wall clock."""

    method: str
    pid: int
    start: float
    wall: float
    on_cpu: float
    runqueue: float
    process_cpu: float

    @property
    def blocked(self) -> float:
        """Wall time the calling thread neither ran nor waited for a CPU (it slept)."""
        return max(0.0, self.wall - self.on_cpu - self.runqueue)


def _thread_runqueue() -> float:
    """Seconds the calling thread has been runnable but waiting for a CPU, so far. The kernel
    adds each wait when the thread gets a CPU again, so a block's figure is right to within
    one wait that straddles its start (a scheduling slice, a few ms)."""
    with open("/proc/thread-self/schedstat") as f:
        return int(f.read().split()[1]) / 1e9


@contextlib.contextmanager
def clock_call(into: list[CallClock], method: str) -> Iterator[None]:
    """Append the :class:`CallClock` of the block (run in the calling thread) to ``into``."""
    # The wall clock brackets the CPU clocks, so the CPU figures never exceed the wall time.
    t0, wall0 = time.time(), time.perf_counter()
    wait0, run0, cpu0 = _thread_runqueue(), time.thread_time(), time.process_time()
    try:
        yield
    finally:
        run1, wait1, cpu1 = time.thread_time(), _thread_runqueue(), time.process_time()
        wall = time.perf_counter() - wall0
        into.append(
            CallClock(
                method=method,
                pid=os.getpid(),
                start=t0,
                wall=wall,
                on_cpu=run1 - run0,
                runqueue=wait1 - wait0,
                process_cpu=cpu1 - cpu0,
            )
        )


class ClockedActor(ActorRolloutWorker):
    """The trainer's actor, with a :class:`CallClock` per generate, log-prob and update call
    (benchmarks only; the methods are the parent's, unchanged)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.clocks: list[CallClock] = []

    @register(Dispatch.DP_COMPUTE_PROTO)
    def generate(self, batch: Batch) -> Batch:
        with clock_call(self.clocks, "generate"):
            return super().generate(batch)

    @register(Dispatch.DP_COMPUTE_PROTO)
    def compute_log_prob(self, batch: Batch) -> Batch:
        with clock_call(self.clocks, "compute_log_prob"):
            return super().compute_log_prob(batch)

    @register(Dispatch.DP_COMPUTE_METRIC)
    def update_policy(self, batch: Batch, *parts: Batch) -> dict[str, float]:
        with clock_call(self.clocks, "update_policy"):
            return super().update_policy(batch, *parts)


class ClockedReward(RewardWorker):
    """The trainer's reward worker, with a :class:`CallClock` per ``compute_score`` call
    (benchmarks only)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.clocks: list[CallClock] = []

    @register(Dispatch.DP_COMPUTE_PROTO, pad=True)
    def compute_score(self, batch: Batch, *parts: Batch) -> Batch:
        with clock_call(self.clocks, "compute_score"):
            return super().compute_score(batch, *parts)


def median_cpu(
    clocks: Sequence[Sequence[CallClock]], window: tuple[float, float]
) -> dict[str, float]:
    """Median on-CPU seconds per call of each method, over every rank's calls started in
    ``window``."""
    by_method: dict[str, list[float]] = {}
    for rank in clocks:
        for c in rank:
            if window[0] <= c.start <= window[1]:
                by_method.setdefault(c.method, []).append(c.on_cpu)
    return {m: statistics.median(v) for m, v in sorted(by_method.items())}


def worker_pid(worker: object) -> int:
    """The process id of a worker (pass to ``WorkerGroup.run_function``)."""
    return os.getpid()


def call_clocks(worker: object) -> list[CallClock]:
    """The records of a clocked worker (pass to ``WorkerGroup.run_function``)."""
    clocks = getattr(worker, "clocks", None)
    if not isinstance(clocks, list):
        raise TypeError(f"{type(worker).__qualname__} is not a clocked worker (no .clocks)")
    return list(clocks)


def split_slow_rank(
    clocks: Sequence[Sequence[CallClock]], window: tuple[float, float]
) -> dict[str, float]:
    """Where the slower rank's extra time goes, summed over the calls started in ``window``.

    ``clocks[r]`` holds rank ``r``'s records in call order; the ``k``-th call of a method on
    each rank is one group call. For every group call, the rank with the longest wall time is
    the slow one; its excess over the fastest rank splits into more time on a CPU (more
    work), more time runnable but descheduled, and more time asleep. ``start_skew`` sums how
    much later than the first rank the last one entered the method (time outside it).
    Returns seconds: ``excess``, ``more_cpu``, ``more_runqueue``, ``more_blocked``,
    ``start_skew``, and ``calls`` (how many group calls).
    """
    by_method: list[dict[str, list[CallClock]]] = []
    for rank in clocks:
        methods: dict[str, list[CallClock]] = {}
        for c in rank:
            methods.setdefault(c.method, []).append(c)
        by_method.append(methods)
    out = dict.fromkeys(
        ("excess", "more_cpu", "more_runqueue", "more_blocked", "start_skew", "calls"), 0.0
    )
    for method in by_method[0]:
        for group in zip(*(m.get(method, []) for m in by_method), strict=False):
            if not window[0] <= min(c.start for c in group) <= window[1]:
                continue
            slow = max(group, key=lambda c: c.wall)
            fast = min(group, key=lambda c: c.wall)
            out["excess"] += slow.wall - fast.wall
            out["more_cpu"] += slow.on_cpu - fast.on_cpu
            out["more_runqueue"] += slow.runqueue - fast.runqueue
            out["more_blocked"] += slow.blocked - fast.blocked
            out["start_skew"] += max(c.start for c in group) - min(c.start for c in group)
            out["calls"] += 1
    return out


def split_by_method(
    clocks: Sequence[Sequence[CallClock]], window: tuple[float, float]
) -> dict[str, dict[str, float]]:
    """:func:`split_slow_rank` for each method on its own."""
    methods = sorted({c.method for rank in clocks for c in rank})
    return {
        m: split_slow_rank([[c for c in rank if c.method == m] for rank in clocks], window)
        for m in methods
    }


@attrs.frozen
class Snapshot:
    """CPU and run-queue seconds per process (pid), the host's wall clock, and the busy and
    idle CPU seconds of the whole machine (every process, other users' too), at one time."""

    time: float
    cpu: Mapping[int, float]
    runqueue: Mapping[int, float]
    machine_busy: float = 0.0
    machine_idle: float = 0.0


def _machine_cpu() -> tuple[float, float]:
    """``(busy, idle)`` CPU seconds of all CPUs since boot (``/proc/stat``, first line)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    busy = sum(fields[:8]) - idle  # user nice system idle iowait irq softirq steal
    return busy / _TICK, idle / _TICK


def _parents() -> dict[int, int]:
    out: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (entry / "stat").read_text()
                out[int(entry.name)] = int(stat[stat.rindex(")") + 2 :].split()[1])
    return out


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid, ppid in _parents().items():
        children.setdefault(ppid, []).append(pid)
    out, todo = [root], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _process_cpu(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime + stime


def _process_runqueue(pid: int) -> float:
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += int((task / "schedstat").read_text().split()[1])
    return total / 1e9


def snapshot(root: int | None = None) -> Snapshot:
    """CPU clocks of ``root`` (default: this process) and every descendant still alive."""
    cpu: dict[int, float] = {}
    runq: dict[int, float] = {}
    for pid in _descendants(os.getpid() if root is None else root):
        with contextlib.suppress(OSError, ValueError, IndexError):
            cpu[pid] = _process_cpu(pid)
            runq[pid] = _process_runqueue(pid)
    busy, idle = _machine_cpu()
    return Snapshot(time=time.time(), cpu=cpu, runqueue=runq, machine_busy=busy, machine_idle=idle)


def cores() -> int:
    """CPUs this process may run on."""
    return len(os.sched_getaffinity(0))


def utilisation(
    before: Snapshot, after: Snapshot, groups: Mapping[str, Sequence[int]]
) -> dict[str, float]:
    """Share of ``cores()`` x wall time that each group of pids used between the snapshots
    (``groups`` maps a name to pids; every other pid seen in both snapshots is ``other``),
    and ``total``. Also ``<name>_runqueue_s``: that group's seconds runnable but waiting, and
    ``machine``: the share of all CPUs busy with anything (other users' jobs included), which
    says whether the run had idle CPU left at all."""
    capacity = (after.time - before.time) * cores()
    if capacity <= 0:
        raise ValueError("the second snapshot must be later than the first")
    common = set(before.cpu) & set(after.cpu)
    named = {pid for pids in groups.values() for pid in pids}
    out: dict[str, float] = {}
    for name, pids in [*groups.items(), ("other", sorted(common - named))]:
        live = [p for p in pids if p in common]
        out[name] = sum(after.cpu[p] - before.cpu[p] for p in live) / capacity
        out[f"{name}_runqueue_s"] = sum(after.runqueue[p] - before.runqueue[p] for p in live)
    out["total"] = sum(out[name] for name in [*groups, "other"])
    busy = after.machine_busy - before.machine_busy
    idle = after.machine_idle - before.machine_idle
    out["machine"] = busy / (busy + idle) if busy + idle > 0 else 0.0
    return out
