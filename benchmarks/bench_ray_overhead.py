"""What ``WorkerGroup`` on ``RayBackend`` costs over raw Ray handles, measured side by side.

One local cluster, two sets of 4 actors, both warm:

* **trivial call**: ``group.call(W.echo, 1)`` (ONE_TO_ALL, collected as a list) against
  ``ray.get([a.echo.remote(1) for a in actors])`` on plain Ray actors;
* **64 MB batch**: a DP_COMPUTE_PROTO round trip of a 64 MB ``Batch`` (split in 4, each rank
  returns its chunk, concatenated) against the raw zero-copy path (contiguous numpy shards,
  ``ray.put`` each, actors echo them, ``ray.get``, ``np.concatenate``).

Both paths copy the data 3 times (put, the actors' return, concatenate): the dispatcher
ships views of the batch, and received object-store buffers are not copied (the copy rule in
``runtime/_batch_wire.py``; ``benchmarks/bench_batch_copies.py`` counts the driver's copies).

The two paths alternate in blocks so drift on a busy machine hits both alike. Prints a table
and writes ``benchmarks/results/ray_overhead.json`` (with the machine's load average at start
and end: on a shared 2-core box other work shifts these numbers a lot)::

    .venv/bin/python benchmarks/bench_ray_overhead.py
    .venv/bin/python benchmarks/bench_ray_overhead.py --calls 2000 --batch-rounds 20
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import ray
import torch

from runtime import Batch, Dispatch, ResourcePool, WorkerGroup, WorkerSpec, register
from runtime_ray import RayBackend
from runtime_ray._casts import create_actor

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "ray_overhead.json"
RANKS = 4


class W:
    """The group's worker."""

    @register(Dispatch.ONE_TO_ALL)
    def echo(self, x: int) -> int:
        return x

    @register(Dispatch.DP_COMPUTE_PROTO)
    def echo_batch(self, data: Batch) -> Batch:
        return data


class RawEcho:
    """A plain Ray actor (the baseline)."""

    def echo(self, x: Any) -> Any:
        return x


def _stats(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_ms": statistics.median(ordered) * 1e3,
        "p90_ms": ordered[int(0.9 * (len(ordered) - 1))] * 1e3,
        "min_ms": ordered[0] * 1e3,
        "n": len(ordered),
    }


def _alternate(
    a: Callable[[], object], b: Callable[[], object], rounds: int, block: int
) -> tuple[list[float], list[float]]:
    ta: list[float] = []
    tb: list[float] = []
    done = 0
    while done < rounds:
        n = min(block, rounds - done)
        for fn, out in ((a, ta), (b, tb)):
            for _ in range(n):
                t0 = time.perf_counter()
                fn()
                out.append(time.perf_counter() - t0)
        done += n
    return ta, tb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000, help="trivial calls per path")
    parser.add_argument("--batch-mb", type=int, default=64)
    parser.add_argument("--batch-rounds", type=int, default=12, help="batch round trips per path")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    load_start = os.getloadavg()[0]
    backend = RayBackend(
        num_cpus=2 * RANKS + 2, runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}}
    )
    try:
        group = WorkerGroup(backend, WorkerSpec.of(W), ResourcePool.create([RANKS]))
        actor_cls = ray.remote(RawEcho)
        actors = [create_actor(actor_cls, {"num_cpus": 1}) for _ in range(RANKS)]
        raw_remote: list[Any] = list(actors)  # ActorHandle attribute access is typed Never

        def group_call() -> object:
            return group.call(W.echo, 1)

        def raw_call() -> object:
            return ray.get([a.echo.remote(1) for a in raw_remote])

        assert group_call() == raw_call() == [1] * RANKS
        _alternate(group_call, raw_call, 100, 50)  # warm-up
        t_group, t_raw = _alternate(group_call, raw_call, args.calls, 100)

        n = args.batch_mb * (1 << 20) // 4
        tensor = torch.randn(n, dtype=torch.float32)
        batch = Batch({"x": tensor})
        array: npt.NDArray[np.float32] = tensor.numpy()

        def group_batch() -> object:
            return group.call(W.echo_batch, batch)

        def raw_batch() -> object:
            shards = np.split(array, RANKS)  # contiguous row ranges of a contiguous array
            refs = [ray.put(s) for s in shards]
            parts = ray.get([a.echo.remote(r) for a, r in zip(raw_remote, refs, strict=True)])
            return np.concatenate(parts)

        out_group = group_batch()
        out_raw = raw_batch()
        assert isinstance(out_group, Batch)
        assert torch.equal(out_group.tensors["x"], tensor)
        assert np.array_equal(np.asarray(out_raw), array)
        b_group, b_raw = _alternate(group_batch, raw_batch, args.batch_rounds, 3)
    finally:
        backend.shutdown()

    call = {"group": _stats(t_group), "raw": _stats(t_raw)}
    call["ratio_median"] = {"group/raw": call["group"]["median_ms"] / call["raw"]["median_ms"]}
    big = {"group": _stats(b_group), "raw": _stats(b_raw)}
    big["ratio_median"] = {"group/raw": big["group"]["median_ms"] / big["raw"]["median_ms"]}
    report = {
        "trivial_call_4_ranks": call,
        f"batch_{args.batch_mb}mb_dp_compute_proto_4_ranks": big,
        "env": {
            "ray": ray.__version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "calls": args.calls,
            "batch_rounds": args.batch_rounds,
            # Other work on the machine inflates and spreads the timings: report it.
            "loadavg_1m": [round(load_start, 2), round(os.getloadavg()[0], 2)],
        },
    }
    print(f"{'measurement':<34}{'path':<8}{'median ms':>11}{'p90 ms':>10}{'min ms':>10}{'n':>7}")
    for title, section in (
        ("trivial call, 4 ranks", call),
        (f"{args.batch_mb} MB batch, 4 ranks", big),
    ):
        for path in ("group", "raw"):
            s = section[path]
            print(
                f"{title:<34}{path:<8}{s['median_ms']:>11.3f}{s['p90_ms']:>10.3f}"
                f"{s['min_ms']:>10.3f}{int(s['n']):>7}"
            )
        print(f"{title:<34}{'ratio':<8}{section['ratio_median']['group/raw']:>11.2f}x (median)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")


if __name__ == "__main__":
    main()
