"""The demo step's call graph on raw Ray actors: the engine's own floor for the orchestration
share (see :mod:`benchmarks.suite_orchestration`).

Two plain Ray actors, one per data-parallel rank, with no runtime, trainer or torch, run the
pipelined demo step's calls per rank, their results chained as object refs as the runtime
chains futures: ``generate`` -> ``score(rollout)`` and ``log_prob(rollout)`` ->
``update(rollout, log_prob, score)``. Each call burns the median on-CPU time the same call took
in the measured demo run (thread CPU time, so contention stretches it as it stretches the real
work) and returns about as many bytes. The driver keeps one step ahead, as ``fit`` does: it
submits step ``k + 1`` before it gets step ``k``'s scores, log-probs and update results.

Left out: the update's all-reduce (the skeleton's ranks never wait for each other), the
runtime, the trainer's driver work, and the model. Busy time is measured as in the demo: the
``task:execute`` intervals of the actors' calls in ``ray.timeline()``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import attrs
import numpy as np
import numpy.typing as npt
import ray

from benchmarks.suite_intervals import Interval, orchestration_parts, worker_gaps
from benchmarks.suite_orchestration import busy_intervals
from runtime_ray._casts import create_actor

__all__ = ["SkeletonRank", "SkeletonStep", "skeleton_step"]

#: Bytes a rank's call returns in the demo (128 rows): the rollout, and the small results.
ROLLOUT_BYTES = 52_000
SMALL_BYTES = 2_000

_Array = npt.NDArray[np.uint8]


def _burn(cpu_s: float) -> None:
    """Spin until this thread has used ``cpu_s`` seconds of CPU."""
    end = time.thread_time() + cpu_s
    while time.thread_time() < end:
        pass


class SkeletonRank:
    """One rank of the skeleton: each method burns ``cpu_s`` and returns ``nbytes`` bytes."""

    def generate(self, cpu_s: float, nbytes: int) -> _Array:
        _burn(cpu_s)
        return np.zeros(nbytes, dtype=np.uint8)

    def score(self, rollout: _Array, cpu_s: float, nbytes: int) -> _Array:
        _burn(cpu_s)
        return np.zeros(nbytes, dtype=np.uint8)

    def log_prob(self, rollout: _Array, cpu_s: float, nbytes: int) -> _Array:
        _burn(cpu_s)
        return np.zeros(nbytes, dtype=np.uint8)

    def update(self, rollout: _Array, log_prob: _Array, score: _Array, cpu_s: float) -> float:
        _burn(cpu_s)
        return float(len(rollout) + len(log_prob) + len(score))


def _is_skeleton_call(category: str) -> bool:
    return category.startswith("task::SkeletonRank.")


@attrs.frozen
class SkeletonStep:
    """What :func:`skeleton_step` measured: ``parts`` (as ``DemoStep.parts``), ``step_s``
    (mean step wall time) and ``worker_gaps`` (as ``DemoStep.worker_gaps``)."""

    parts: dict[str, float]
    step_s: float
    worker_gaps: dict[str, float]


def skeleton_step(cpu: Mapping[str, float], *, steps: int, skip: int) -> SkeletonStep:
    """Run the skeleton for ``steps`` steps on the local Ray cluster this process started,
    with the per-call CPU seconds ``cpu`` (keys ``generate``, ``compute_score``,
    ``compute_log_prob``, ``update_policy``), and measure steps ``skip + 1 .. steps``."""
    ranks: list[Any] = [create_actor(ray.remote(SkeletonRank), {"num_cpus": 1}) for _ in range(2)]
    try:
        ray.get([r.generate.remote(0.0, 1) for r in ranks])  # started
        stamps = _run(ranks, cpu, steps)
        time.sleep(2.5)  # workers report task events about once a second
        events: list[dict[str, Any]] = list(ray.timeline() or [])
    finally:
        for r in ranks:
            ray.kill(r)
    window: Interval = (stamps[skip], stamps[steps])
    busy, calls = busy_intervals(events, window, _is_skeleton_call)
    parts = orchestration_parts(window, busy, [], [])
    return SkeletonStep(
        parts, (window[1] - window[0]) / (steps - skip), worker_gaps(busy, calls, window)
    )


def _run(ranks: list[Any], cpu: Mapping[str, float], steps: int) -> dict[int, float]:
    """Per step ``k``, as ``fit`` does: get its scores and log-probs, submit step ``k + 1``,
    get its update's results; the wall time at the end of each step, by step."""

    def submit() -> list[Any]:
        refs: list[Any] = []
        for r in ranks:
            rollout = r.generate.remote(cpu["generate"], ROLLOUT_BYTES)
            score = r.score.remote(rollout, cpu["compute_score"], SMALL_BYTES)
            log_prob = r.log_prob.remote(rollout, cpu["compute_log_prob"], SMALL_BYTES)
            update = r.update.remote(rollout, log_prob, score, cpu["update_policy"])
            refs.append((score, log_prob, update))
        return refs

    stamps = {0: time.time()}
    pending = submit()
    for step in range(1, steps + 1):
        ray.get([ref for score, log_prob, _ in pending for ref in (score, log_prob)])
        ahead = submit() if step < steps else []
        ray.get([update for _, _, update in pending])
        stamps[step] = time.time()
        pending = ahead
    return stamps
