"""What ``WorkerGroup`` on ``MonarchBackend`` costs over raw Monarch endpoint calls.

One group of 4 ranks (one Monarch process each), warm. Side by side, on the same processes:

* **group**: ``group.call(Echo.echo, 1)`` (ONE_TO_ALL, collected as a list): dispatch
  planning, one ``invoke`` endpoint call per rank, the host's method lookup, context and
  error handling, the wait loop;
* **raw**: ``[a.ping.call_one() for a in actors]`` then ``.get()`` on each: a trivial
  endpoint of the same actors, straight through Monarch.

The two alternate in blocks so drift on a busy machine hits both alike. Prints the medians and
the ratio (target: <= 1.10) and writes ``benchmarks/results/monarch_overhead.json``::

    .venv/bin/python benchmarks/bench_monarch_overhead.py [--calls 400]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from runtime import Dispatch, ResourcePool, WorkerGroup, WorkerSpec, register  # noqa: E402
from runtime_monarch import MonarchBackend, MonarchWorker  # noqa: E402


class Echo:
    """The trivial worker of the group path."""

    @register(Dispatch.ONE_TO_ALL)
    def echo(self, x: int) -> int:
        return x


def timed(fn: Callable[[], object], n: int) -> list[float]:
    out: list[float] = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=400, help="calls per path (in 8 blocks)")
    args = parser.parse_args()
    load_start = os.getloadavg()[0]
    with MonarchBackend() as backend:
        group = WorkerGroup(backend, WorkerSpec.of(Echo), ResourcePool.create([4]), role="echo")
        workers = [w for w in group.workers if isinstance(w, MonarchWorker)]
        actors = [w.actor for w in workers]

        def via_group() -> object:
            return group.call(Echo.echo, 1)

        def raw() -> object:
            futures = [a.ping.call_one() for a in actors]
            return [f.get() for f in futures]

        timed(via_group, 20)
        timed(raw, 20)
        blocks = 8
        grouped: list[float] = []
        raws: list[float] = []
        for _ in range(blocks):
            grouped += timed(via_group, args.calls // blocks)
            raws += timed(raw, args.calls // blocks)
        group.shutdown()
    g_ms = statistics.median(grouped) * 1e3
    r_ms = statistics.median(raws) * 1e3
    result = {
        "ranks": 4,
        "calls": len(grouped),
        "group_median_ms": round(g_ms, 3),
        "raw_median_ms": round(r_ms, 3),
        "ratio": round(g_ms / r_ms, 3),
        "group_p90_ms": round(statistics.quantiles(grouped, n=10)[-1] * 1e3, 3),
        "raw_p90_ms": round(statistics.quantiles(raws, n=10)[-1] * 1e3, 3),
        "loadavg_start": round(load_start, 2),
        "loadavg_end": round(os.getloadavg()[0], 2),
    }
    print(
        f"trivial 4-rank call: group {g_ms:.3f} ms, raw Monarch {r_ms:.3f} ms, "
        f"ratio {g_ms / r_ms:.2f} (target <= 1.10)"
    )
    out = REPO / "benchmarks" / "results" / "monarch_overhead.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
