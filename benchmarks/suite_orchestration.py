"""The demo step's orchestration share on Ray (see :mod:`benchmarks.suite_intervals`).

The demo config (``make demo``: 2 data-parallel actor ranks on a local Ray cluster) trains for
``steps`` steps with the trainer's own code; the first ``skip`` steps (start-up, compilation of
the first shapes) are left out. Worker busy intervals come from Ray's task timeline
(``ray.timeline()``): the ``task:execute`` events, timestamped by each worker process while it
runs a method of a host actor (argument decoding and result storing are *not* busy time).
Driver intervals come from a :class:`TimedBackend` wrapped around the Ray backend, which stamps
every ``submit`` and ``wait``. Both clocks are the host's wall clock (one machine).
"""

from __future__ import annotations

import bisect
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ray
import structlog

from benchmarks.suite_intervals import Interval, orchestration_parts
from runtime import Backend, HostLaunch, RankCall, ResourcePool
from runtime_ray import is_call_task

__all__ = ["TimedBackend", "demo_step_parts"]


class TimedBackend:
    """A :class:`runtime.Backend` that forwards to ``inner`` and records the wall-clock
    intervals of every ``submit`` and ``wait``."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.submits: list[Interval] = []
        self.waits: list[Interval] = []

    def reserve(self, pool: ResourcePool, *, timeout: float) -> Sequence[str]:
        return self.inner.reserve(pool, timeout=timeout)

    def release(self, pool: ResourcePool) -> None:
        self.inner.release(pool)

    def master_endpoint(
        self, node_ip: str, *, port_range: tuple[int, int] | None = None
    ) -> tuple[str, int]:
        return self.inner.master_endpoint(node_ip, port_range=port_range)

    def spawn(self, launches: Sequence[HostLaunch], *, timeout: float) -> Sequence[object]:
        return self.inner.spawn(launches, timeout=timeout)

    def submit(self, workers: Sequence[object], calls: Sequence[RankCall]) -> Sequence[object]:
        t0 = time.time()
        try:
            return self.inner.submit(workers, calls)
        finally:
            self.submits.append((t0, time.time()))

    def wait(self, pending: Sequence[object], *, timeout: float | None) -> list[Any]:
        t0 = time.time()
        try:
            return self.inner.wait(pending, timeout=timeout)
        finally:
            self.waits.append((t0, time.time()))

    def share(self, value: object) -> object:
        return self.inner.share(value)

    def cancel(self, pending: Sequence[object]) -> None:
        self.inner.cancel(pending)

    def alive(self, workers: Sequence[object]) -> list[bool]:
        return self.inner.alive(workers)

    def terminate(self, workers: Sequence[object]) -> None:
        self.inner.terminate(workers)

    def shutdown(self) -> None:
        self.inner.shutdown()


def _busy_intervals(
    events: Sequence[dict[str, Any]], window: Interval
) -> dict[str, list[Interval]]:
    """``task:execute`` intervals (seconds) inside a host actor's user-call task (``invoke``
    or a generated per-method one, :func:`runtime_ray.is_call_task`), per worker process, for
    the workers that ran one in ``window``."""
    invokes: dict[str, list[Interval]] = {}
    executes: dict[str, list[Interval]] = {}
    for e in events:
        if e.get("ph") != "X" or "ts" not in e or "dur" not in e:
            continue
        span = (float(e["ts"]) / 1e6, (float(e["ts"]) + float(e["dur"])) / 1e6)
        if span[1] < window[0] or span[0] > window[1]:
            continue
        tid = str(e.get("tid"))
        if is_call_task(str(e.get("cat", ""))):
            invokes.setdefault(tid, []).append(span)
        elif e.get("name") == "task:execute":
            executes.setdefault(tid, []).append(span)
    busy: dict[str, list[Interval]] = {}
    for tid, spans in invokes.items():
        spans.sort()
        starts = [s for s, _ in spans]
        keep: list[Interval] = []
        for begin, end in executes.get(tid, []):
            i = bisect.bisect_right(starts, begin) - 1
            if i >= 0 and spans[i][0] <= begin <= spans[i][1]:
                keep.append((begin, end))
        busy[tid] = keep
    return busy


def demo_step_parts(
    backend: Backend, run_dir: Path, *, steps: int, skip: int, balance: bool | None
) -> tuple[dict[str, float], float, int]:
    """Train the demo on ``backend`` (Ray) and return the orchestration parts, the mean step
    wall time (s) over the measured steps and the number of worker processes seen.
    ``balance``: the value of ``trainer.balance_batch`` (``None``: leave the config's)."""
    from ppo import PPOTrainer, load_config

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    overrides = [
        f"trainer.total_steps={steps}",
        "trainer.test_freq=0",
        "trainer.save_freq=0",
        f"trainer.run_dir={str(run_dir)!r}",
        "trainer.resume='off'",
        "trainer.overwrite=true",
        "trainer.progress=false",
        "trainer.loggers=['jsonl']",
    ]
    if balance is not None:
        overrides.append(f"trainer.balance_batch={str(balance).lower()}")
    timed = TimedBackend(backend)
    stamps: dict[int, float] = {}
    with PPOTrainer(
        backend=timed,
        config=load_config("demo", overrides),
        on_step=lambda row: stamps.__setitem__(int(row["step"]), time.time()),
    ) as trainer:
        trainer.init_workers()
        trainer.fit()
        # Workers report task events about once a second; read them while they still live.
        time.sleep(2.5)
        events: list[dict[str, Any]] = list(ray.timeline() or [])
    window = (stamps[skip], stamps[steps])
    busy = _busy_intervals(events, window)
    if not busy:
        raise RuntimeError("ray.timeline() has no host actor task in the measured window")
    parts = orchestration_parts(window, busy, timed.submits, timed.waits)
    return parts, (window[1] - window[0]) / (steps - skip), len(busy)
