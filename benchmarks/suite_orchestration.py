"""The demo step's orchestration share on Ray (see :mod:`benchmarks.suite_intervals`).

The demo config (``make demo``: 2 data-parallel actor ranks on a local Ray cluster) trains for
``steps`` steps with the trainer's own code; the first ``skip`` steps (start-up, compilation of
the first shapes) are left out. Worker busy intervals come from Ray's task timeline
(``ray.timeline()``): the ``task:execute`` events, timestamped by each worker process while it
runs a method of a host actor (argument decoding and result storing are *not* busy time).
Driver intervals come from a :class:`TimedBackend` wrapped around the Ray backend, which stamps
every ``submit`` and ``wait``. Both clocks are the host's wall clock (one machine).

The CPU side (:mod:`benchmarks.suite_cpu`) is measured in the same run: the workers are the
trainer's own, subclassed to clock every data-parallel call (on-CPU, run-queue and asleep time
of the calling thread), and the CPU seconds of the driver, the workers and the rest of the
local Ray cluster over the window give the share of the cores the run keeps busy.
"""

from __future__ import annotations

import bisect
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import ray
import structlog

from benchmarks.suite_cpu import (
    ClockedActor,
    ClockedReward,
    Snapshot,
    call_clocks,
    median_cpu,
    snapshot,
    split_by_method,
    split_slow_rank,
    utilisation,
    worker_pid,
)
from benchmarks.suite_intervals import Interval, merge, orchestration_parts, worker_gaps
from runtime import Backend, HostLaunch, RankCall, ResourcePool, WorkerSpec
from runtime_ray import is_call_task

__all__ = [
    "DemoStep",
    "TimedBackend",
    "busy_intervals",
    "demo_overrides",
    "demo_step_parts",
]


def demo_overrides(steps: int, run_dir: Path) -> list[str]:
    """Config overrides of a measured demo run: ``steps`` steps in ``run_dir``, nothing
    else that takes time (no validation, checkpoints, progress bar or trackers but jsonl)."""
    return [
        f"trainer.total_steps={steps}",
        "trainer.test_freq=0",
        "trainer.save_freq=0",
        f"trainer.run_dir={str(run_dir)!r}",
        "trainer.resume='off'",
        "trainer.overwrite=true",
        "trainer.progress=false",
        "trainer.loggers=['jsonl']",
    ]


@attrs.frozen
class DemoStep:
    """What :func:`demo_step_parts` measured over the window of the measured steps.

    ``parts``: fractions of the window (:data:`benchmarks.suite_intervals.PARTS`);
    ``step_s``: mean step wall time; ``workers``: worker processes seen busy; ``cpu``: the
    share of the cores used by ``driver``, ``workers`` and ``other`` (the Ray daemons) and
    ``total`` (:func:`benchmarks.suite_cpu.utilisation`), with run-queue seconds; ``slow``:
    the slow rank's excess time per step, split (:func:`benchmarks.suite_cpu.split_slow_rank`,
    seconds divided by the measured steps); ``worker_busy``: each worker process's share of the
    window spent running a method, largest first; ``worker_idle``: for each of those workers
    (same order), the window's fractions when that worker is idle, split by what the driver
    does meanwhile (inside ``submit``, inside ``wait``, its own work); ``slow_by_method``:
    ``slow`` for each clocked method on its own; ``step_times``: each measured step's wall
    seconds; ``worker_gaps``: where a worker's time outside its methods goes, mean over the
    workers, as fractions of the window: ``"engine task wrapper"`` (inside an engine task
    of a call but outside the method: decoding the arguments, storing the result) and
    ``"between calls"`` (no call task running: waiting for the next call or its inputs);
    ``method_cpu``: the median on-CPU seconds of one rank's call, per method (generate,
    reward, log-probs, update).
    """

    parts: dict[str, float]
    step_s: float
    workers: int
    cpu: dict[str, float]
    slow: dict[str, float]
    worker_busy: list[float] = attrs.field(factory=list)
    worker_idle: list[dict[str, float]] = attrs.field(factory=list)
    slow_by_method: dict[str, dict[str, float]] = attrs.field(factory=dict)
    step_times: list[float] = attrs.field(factory=list)
    worker_gaps: dict[str, float] = attrs.field(factory=dict)
    method_cpu: dict[str, float] = attrs.field(factory=dict)


class TimedBackend:
    """A :class:`runtime.Backend` that forwards to ``inner`` and records the wall-clock
    intervals of every ``submit`` and ``wait``, and the calling thread's CPU seconds inside
    them (``backend_cpu_s``: the engine's client work, e.g. Ray's serialisation and gets)."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.submits: list[Interval] = []
        self.waits: list[Interval] = []
        self.backend_cpu_s = 0.0

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
        t0, cpu0 = time.time(), time.thread_time()
        try:
            return self.inner.submit(workers, calls)
        finally:
            self.submits.append((t0, time.time()))
            self.backend_cpu_s += time.thread_time() - cpu0

    def wait(self, pending: Sequence[object], *, timeout: float | None) -> list[Any]:
        t0, cpu0 = time.time(), time.thread_time()
        try:
            return self.inner.wait(pending, timeout=timeout)
        finally:
            self.waits.append((t0, time.time()))
            self.backend_cpu_s += time.thread_time() - cpu0

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


def busy_intervals(
    events: Sequence[dict[str, Any]],
    window: Interval,
    is_call: Callable[[str], bool] = is_call_task,
) -> tuple[dict[str, list[Interval]], dict[str, list[Interval]]]:
    """``task:execute`` intervals (seconds) inside a user-call task (by default a host
    actor's ``invoke`` or generated per-method task, :func:`runtime_ray.is_call_task`; else
    those whose timeline category ``is_call`` accepts), per worker process, for the workers
    that ran one in ``window``; and those call tasks' own intervals."""
    invokes: dict[str, list[Interval]] = {}
    executes: dict[str, list[Interval]] = {}
    for e in events:
        if e.get("ph") != "X" or "ts" not in e or "dur" not in e:
            continue
        span = (float(e["ts"]) / 1e6, (float(e["ts"]) + float(e["dur"])) / 1e6)
        if span[1] < window[0] or span[0] > window[1]:
            continue
        tid = str(e.get("tid"))
        if is_call(str(e.get("cat", ""))):
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
    return busy, invokes


def demo_step_parts(
    backend: Backend,
    run_dir: Path,
    *,
    steps: int,
    skip: int,
    balance: bool | None,
    extra: Sequence[str] = (),
) -> DemoStep:
    """Train the demo on ``backend`` (a local Ray cluster this process started) and measure
    steps ``skip + 1 .. steps``. ``balance``: the value of ``trainer.balance_batch``
    (``None``: leave the config's); ``extra``: more config overrides (e.g. an async layout)."""
    from ppo import PPOTrainer, load_config
    from ppo.scoring import RewardFnScorer
    from ppo.tasks import get_task
    from ppo.tokenizer import load_tokenizer
    from ppo.trackers import CallbackTracker

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    overrides = demo_overrides(steps, run_dir)
    if balance is not None:
        overrides.append(f"trainer.balance_batch={str(balance).lower()}")
    overrides += extra
    timed = TimedBackend(backend)
    stamps: dict[int, float] = {}
    snaps: dict[int, Snapshot] = {}

    def on_step(row: Mapping[str, Any]) -> None:
        step = int(row["step"])
        if step == skip:
            snaps[step] = snapshot()  # before the window opens
        stamps[step] = time.time()
        if step == steps:
            snaps[step] = snapshot()

    config = load_config("demo", overrides)
    tokenizer = load_tokenizer(None)
    scorer = RewardFnScorer(get_task(config.data.task, **dict(config.data.task_kwargs)), None)
    with PPOTrainer(
        backend=timed,
        config=config,
        tokenizer=tokenizer,
        actor_spec=WorkerSpec.of(ClockedActor, config, tokenizer),
        reward_spec=WorkerSpec.of(ClockedReward, scorer, tokenizer),
        trackers=[CallbackTracker(on_step)],  # not on_step: see CallbackTracker
    ) as trainer:
        trainer.init_workers()
        trainer.fit()
        assert trainer.actor is not None
        groups = [g for g in (trainer.actor, trainer.rollout) if g is not None]
        pids = sorted({p for g in groups for p in g.run_function(worker_pid)})
        clocks = trainer.actor.run_function(call_clocks)
        assert trainer.reward is not None
        reward_clocks = trainer.reward.run_function(call_clocks)
        # Workers report task events about once a second; read them while they still live.
        time.sleep(2.5)
        events: list[dict[str, Any]] = list(ray.timeline() or [])
    window = (stamps[skip], stamps[steps])
    busy, call_spans = busy_intervals(events, window)
    if not busy:
        raise RuntimeError("ray.timeline() has no host actor task in the measured window")
    parts = orchestration_parts(window, busy, timed.submits, timed.waits)
    cpu = utilisation(snaps[skip], snaps[steps], {"driver": [os.getpid()], "workers": pids})
    n = steps - skip
    slow = {k: v / n for k, v in split_slow_rank(clocks, window).items()}
    by_method = {
        m: {k: v / n for k, v in split.items()}
        for m, split in split_by_method(clocks, window).items()
    }
    span = window[1] - window[0]

    def busy_share(spans: Sequence[Interval]) -> float:
        return sum(max(0.0, min(e, window[1]) - max(b, window[0])) for b, e in merge(spans)) / span

    order = sorted(busy, key=lambda tid: busy_share(busy[tid]), reverse=True)
    idle = [
        {
            k: v
            for k, v in orchestration_parts(
                window, {tid: busy[tid]}, timed.submits, timed.waits
            ).items()
            if k != "waiting on slowest"  # one worker: never partly busy
        }
        for tid in order
    ]
    shares = [busy_share(busy[tid]) for tid in order]
    step_times = [stamps[k] - stamps[k - 1] for k in range(skip + 1, steps + 1)]
    return DemoStep(
        parts,
        span / n,
        len(busy),
        cpu,
        slow,
        shares,
        idle,
        by_method,
        step_times,
        worker_gaps(busy, call_spans, window),
        median_cpu([*clocks, *reward_clocks], window),
    )
