"""Side-by-side timing: two callables alternating in repeats (drift hits both alike)."""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["Samples", "alternate"]

#: Per-repeat samples in seconds.
Samples = list[list[float]]


def _timed(fn: Callable[[], object], n: int) -> list[float]:
    out: list[float] = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def alternate(
    ours: Callable[[], object],
    base: Callable[[], object],
    *,
    repeats: int,
    per_repeat: int,
    warmup: int = 2,
) -> tuple[Samples, Samples]:
    """``repeats`` repeats of ``per_repeat`` timed calls of each side, after ``warmup`` untimed
    calls of each. The side that goes first swaps every repeat."""
    _timed(ours, warmup)
    _timed(base, warmup)
    a: Samples = []
    b: Samples = []
    for r in range(repeats):
        if r % 2 == 0:
            a.append(_timed(ours, per_repeat))
            b.append(_timed(base, per_repeat))
        else:
            b.append(_timed(base, per_repeat))
            a.append(_timed(ours, per_repeat))
    return a, b
