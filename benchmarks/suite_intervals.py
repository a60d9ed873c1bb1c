"""Where a step's wall time goes, from worker busy intervals and driver intervals (pure).

Given the window of some training steps, the intervals each worker process spent running a
method (timestamps taken inside the workers), and the driver's intervals inside
``Backend.submit`` and ``Backend.wait``, every instant of the window is one of:

* **all busy**: every worker runs a method (the useful part);
* **waiting on the slowest rank**: some, not all, workers run a method (the others wait for
  a slower rank at a barrier, or, with pipelined steps, between their own calls);
* **submit**: no worker runs a method and the driver is inside ``submit``;
* **collect**: no worker runs a method and the driver is inside ``wait`` (results in
  transit, decoded, concatenated);
* **driver work**: no worker runs a method and the driver does anything else (the trainer's
  own math, logging, building batches).

The orchestration share is everything but "all busy", as fractions of the window.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Mapping, Sequence

__all__ = ["PARTS", "Interval", "merge", "orchestration_parts", "worker_gaps"]

Interval = tuple[float, float]

#: The parts of the orchestration share, in report order.
PARTS = ("waiting on slowest", "submit", "collect", "driver work")


def merge(intervals: Sequence[Interval]) -> list[Interval]:
    """Sorted, disjoint union of ``intervals`` (empty or reversed ones dropped)."""
    out: list[Interval] = []
    for start, end in sorted(i for i in intervals if i[1] > i[0]):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def _inside(merged: Sequence[Interval], starts: Sequence[float], t: float) -> bool:
    i = bisect.bisect_right(starts, t) - 1
    return i >= 0 and merged[i][0] <= t < merged[i][1]


def orchestration_parts(
    window: Interval,
    busy: Mapping[str, Sequence[Interval]],
    submit: Sequence[Interval],
    wait: Sequence[Interval],
) -> dict[str, float]:
    """Fractions of ``window`` in each of :data:`PARTS` (their sum is the orchestration
    share). ``busy`` maps each worker to its method intervals; a worker of ``busy`` with no
    interval counts as never busy."""
    t0, t1 = window
    if t1 <= t0:
        raise ValueError(f"empty window {window!r}")
    if not busy:
        raise ValueError("no workers")
    workers = [merge(v) for v in busy.values()]
    driver = {"submit": merge(submit), "collect": merge(wait)}
    points = {t0, t1}
    for series in (*workers, *driver.values()):
        for s, e in series:
            points.update(p for p in (s, e) if t0 < p < t1)
    cuts = sorted(points)
    w_starts = [[s for s, _ in w] for w in workers]
    d_starts = {k: [s for s, _ in v] for k, v in driver.items()}
    totals = dict.fromkeys(PARTS, 0.0)
    for a, b in itertools.pairwise(cuts):
        mid = (a + b) / 2
        n_busy = sum(_inside(w, st, mid) for w, st in zip(workers, w_starts, strict=True))
        if n_busy == len(workers):
            continue
        if n_busy > 0:
            part = "waiting on slowest"
        elif _inside(driver["submit"], d_starts["submit"], mid):
            part = "submit"
        elif _inside(driver["collect"], d_starts["collect"], mid):
            part = "collect"
        else:
            part = "driver work"
        totals[part] += b - a
    return {k: v / (t1 - t0) for k, v in totals.items()}


def worker_gaps(
    busy: Mapping[str, Sequence[Interval]],
    calls: Mapping[str, Sequence[Interval]],
    window: Interval,
) -> dict[str, float]:
    """Where each worker of ``busy`` spends the ``window`` outside its methods, as fractions
    of it, means over the workers: ``"engine task wrapper"`` (inside one of its ``calls``, the
    engine's tasks, but not in a ``busy`` method interval) and ``"between calls"`` (in no
    call task)."""

    def covered(spans: Sequence[Interval]) -> float:
        return sum(max(0.0, min(e, window[1]) - max(b, window[0])) for b, e in merge(spans))

    span = window[1] - window[0]
    wrapper = [covered(calls[t]) - covered(busy[t]) for t in busy]
    between = [span - covered(calls[t]) for t in busy]
    return {
        "engine task wrapper": sum(wrapper) / len(wrapper) / span,
        "between calls": sum(between) / len(between) / span,
    }
