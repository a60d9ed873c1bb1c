"""The large-batch round trip on Ray against the raw engine, and the driver's receive copies.

One local cluster, 4 warm actors per path. Each round sends a ``--mb`` MB float32 batch
through a ``DP_COMPUTE_PROTO`` echo (split in 4, each rank returns its rows, concatenated on
the driver) and compares it, in alternating blocks, with:

* **raw**: contiguous numpy shards, ``ray.put`` each, plain actors echo them, ``ray.get``;
* **raw + cat**: the same followed by one ``torch.cat`` of the results (what a user of raw Ray
  does to get one tensor back).

It also reads the batch receive counters (``runtime._batch_wire.receive_stats``) around one
group call and prints the driver's receive copies per result buffer (the rule in
``runtime/_batch_wire.py``: at most one, the concatenation). Prints a table and writes
``benchmarks/results/batch_copies.json``::

    .venv/bin/python benchmarks/bench_batch_copies.py --mb 256 --rounds 7
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch

from runtime import Batch, Dispatch, ResourcePool, WorkerGroup, WorkerSpec, register
from runtime_ray import RayBackend
from runtime_ray._casts import create_actor

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "batch_copies.json"
RANKS = 4


class W:
    """The group's worker."""

    @register(Dispatch.DP_COMPUTE_PROTO)
    def echo_batch(self, data: Batch) -> Batch:
        return data


class RawEcho:
    """A plain Ray actor (the baseline)."""

    def echo(self, x: Any) -> Any:
        return x


def _median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1e3


def _alternate(paths: dict[str, Callable[[], object]], rounds: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(rounds):
        for name, fn in paths.items():
            t0 = time.perf_counter()
            fn()
            out[name].append(time.perf_counter() - t0)
    return out


def _driver_copies(group: WorkerGroup[W], batch: Batch) -> dict[str, int] | None:
    try:
        from runtime._batch_wire import receive_stats
    except ImportError:  # a runtime from before the counter
        return None
    before = receive_stats()
    group.call(W.echo_batch, batch)
    after = receive_stats()
    return {k: after[k] - before[k] for k in after}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    load_start = os.getloadavg()[0]
    backend = RayBackend(
        num_cpus=2 * RANKS + 2, runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}}
    )
    try:
        group = WorkerGroup(backend, WorkerSpec.of(W), ResourcePool.create([RANKS]))
        actors: list[Any] = [
            create_actor(ray.remote(RawEcho), {"num_cpus": 1}) for _ in range(RANKS)
        ]
        tensor = torch.randn(args.mb * (1 << 20) // 4, dtype=torch.float32)
        batch = Batch({"x": tensor})
        array = tensor.numpy()

        def group_path() -> object:
            return group.call(W.echo_batch, batch)

        def raw_parts() -> list[Any]:
            refs = [ray.put(s) for s in np.split(array, RANKS)]
            return list(ray.get([a.echo.remote(r) for a, r in zip(actors, refs, strict=True)]))

        def raw_cat() -> torch.Tensor:
            with warnings.catch_warnings():  # the store's arrays are read-only; cat copies
                warnings.simplefilter("ignore", UserWarning)
                return torch.cat([torch.from_numpy(p) for p in raw_parts()])

        out = group_path()
        assert isinstance(out, Batch)
        assert torch.equal(out.tensors["x"], tensor)
        assert torch.equal(raw_cat(), tensor)
        copies = _driver_copies(group, batch)
        times = _alternate({"group": group_path, "raw": raw_parts, "raw+cat": raw_cat}, args.rounds)
    finally:
        backend.shutdown()

    medians = {name: _median_ms(t) for name, t in times.items()}
    ratios = {
        "group/raw": medians["group"] / medians["raw"],
        "group/raw+cat": medians["group"] / medians["raw+cat"],
    }
    report = {
        f"batch_{args.mb}mb_dp_compute_proto_4_ranks": {
            "median_ms": medians,
            "spread_ms": {name: [min(t) * 1e3, max(t) * 1e3] for name, t in times.items()},
            "ratio_median": ratios,
            "driver_receive_counters_per_call": copies,
            "rounds": args.rounds,
        },
        "env": {
            "ray": ray.__version__,
            "torch": torch.__version__,
            "cpus": os.cpu_count(),
            "loadavg_1m": [round(load_start, 2), round(os.getloadavg()[0], 2)],
        },
    }
    for name, ms in medians.items():
        print(f"{args.mb} MB, 4 ranks  {name:<8}{ms:>10.1f} ms (median of {args.rounds})")
    for name, ratio in ratios.items():
        print(f"{name:<16}{ratio:>6.2f}x")
    print(f"driver receive counters for one call: {copies}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
