"""Soak: does anything grow over a long run? Figures for the README's "Failure behaviour".

On a local ``RayBackend`` with 4 CPU ranks (real actor processes), three phases:

* **small calls**: 10,000 ``group.call(Soak.echo, i)`` (ONE_TO_ALL, one int per rank);
* **4 MB batches**: 200 DP_COMPUTE_PROTO round trips of a 4 MB ``Batch`` (split over the 4
  ranks, each returns its rows, concatenated on the driver);
* **training**: a 500-step PPO/GRPO run of a tiny model on 2 data-parallel actor ranks
  (``--steps`` shortens it).

During each phase it samples, at evenly spaced points, the driver's RSS, every rank's RSS and
the object store's used bytes (the raylet's store stats). For each series it fits a
least-squares line over the samples after the first quarter (warm-up: imports, caches, the
allocator's first growth) and reports the slope (bytes per call / per step), the growth that
slope amounts to over the phase, and the same over the last half alone. Verdict per series:
**flat** when that growth is below 16 MiB or 2 % of the series' mean, whichever is larger;
**flat (within the samples' noise)** when it is below twice the residual standard deviation
(the object store's use jumps with the objects in flight); **rose, then levelled off** when
only the last half's growth is below the limit; **upward** otherwise. Writes
``benchmarks/results/soak.json``::

    .venv/bin/python benchmarks/bench_soak.py
    .venv/bin/python benchmarks/bench_soak.py --calls 2000 --batches 40 --steps 100
    .venv/bin/python benchmarks/bench_soak.py --phases batches --batches 1000 \
        --out benchmarks/results/soak_batches_1000.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ppo import PPOTrainer, load_config  # noqa: E402
from runtime import Batch, Dispatch, ResourcePool, WorkerGroup, WorkerSpec, register  # noqa: E402
from runtime_ray import RayBackend  # noqa: E402
from runtime_ray._casts import gcs_address  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "soak.json"
RANKS = 4
SAMPLES = 21
#: A series is flat when its fitted growth over the phase stays under the larger limit.
FLAT_FRACTION = 0.02
FLAT_BYTES = 16 * 2**20
#: The tiny model and data of the training phase (as in the trainer tests).
TINY = [
    "model.config.hidden_size=32",
    "model.config.intermediate_size=64",
    "model.config.num_hidden_layers=1",
    "model.config.num_attention_heads=2",
    "model.config.num_key_value_heads=2",
    "data.train_size=64",
    "data.val_size=16",
    "data.prompts_per_step=4",
    "rollout.n=4",
    "warmup.steps=5",
    "warmup.batch_size=8",
    "resources.actor_ranks=2",
    "trainer.test_freq=0",
    "trainer.save_freq=0",
    "trainer.progress=false",
    "trainer.loggers=['jsonl']",
]


def rss_bytes() -> int:
    """This process's resident set size (``/proc/self/statm``)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def worker_rss(worker: object) -> int:
    """Run on a rank: its process's RSS."""
    return rss_bytes()


class Soak:
    """The soak group's worker."""

    @register(Dispatch.ONE_TO_ALL)
    def echo(self, x: int) -> int:
        return x

    @register(Dispatch.DP_COMPUTE_PROTO)
    def echo_batch(self, data: Batch) -> Batch:
        return data

    @register(Dispatch.ONE_TO_ALL)
    def rss(self) -> int:
        return rss_bytes()


def object_store_used() -> int:
    """Bytes in use in the cluster's object store (Ray's raylet store stats; the dashboard is
    off, so through Ray's internal API, as ``ray memory --stats-only`` does)."""
    from ray._private import internal_api

    state = cast(Callable[[str], Any], internal_api.get_state_from_address)(gcs_address())
    reply = cast(Callable[[Any], Any], internal_api.get_memory_info_reply)(state)
    return int(reply.store_stats.object_store_bytes_used)


class Sampler:
    """Samples the three series at given positions of a phase."""

    def __init__(self, total: int, workers: Callable[[], list[int]]) -> None:
        self.at = {round(i * total / (SAMPLES - 1)) for i in range(SAMPLES)}
        self.workers = workers
        self.rows: list[dict[str, Any]] = []

    def maybe(self, position: int) -> None:
        if position in self.at:
            ranks = self.workers()
            self.rows.append(
                {
                    "at": position,
                    "driver_rss": rss_bytes(),
                    "worker_rss": ranks,
                    "worker_rss_sum": sum(ranks),
                    "object_store_used": object_store_used(),
                }
            )


def fit_slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ``ys`` over ``xs``."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var if var else 0.0


def _line(rows: list[dict[str, Any]], key: str) -> tuple[float, float, float, float]:
    """Slope, fitted growth over the rows' span, mean and residual standard deviation."""
    xs = [float(r["at"]) for r in rows]
    ys = [float(r[key]) for r in rows]
    slope = fit_slope(xs, ys)
    mean, mx = sum(ys) / len(ys), sum(xs) / len(xs)
    resid = [y - (mean + slope * (x - mx)) for x, y in zip(xs, ys, strict=True)]
    std = (sum(r * r for r in resid) / len(resid)) ** 0.5
    return slope, slope * (xs[-1] - xs[0]), mean, std


def trend(rows: list[dict[str, Any]], key: str, unit: str) -> dict[str, Any]:
    """Slope and verdict of one series, fitted over the samples after the first quarter
    (and, to show a levelling off, over the last half alone)."""
    slope, growth, mean, noise = _line(rows[len(rows) // 4 :], key)
    late_slope, late_growth, _, _ = _line(rows[len(rows) // 2 :], key)
    limit = max(FLAT_BYTES, FLAT_FRACTION * mean)
    if growth < limit:
        verdict = "flat"
    elif growth < 2 * noise:
        verdict = "flat (within the samples' noise)"
    elif late_growth < limit:
        verdict = "rose, then levelled off"
    else:
        verdict = "upward"
    return {
        f"slope_bytes_per_{unit}": round(slope, 2),
        "fitted_growth_bytes": round(growth),
        f"last_half_slope_bytes_per_{unit}": round(late_slope, 2),
        "last_half_growth_bytes": round(late_growth),
        "mean_bytes": round(mean),
        "residual_std_bytes": round(noise),
        "first_bytes": rows[0][key],
        "last_bytes": rows[-1][key],
        "verdict": verdict,
    }


def summarize(rows: list[dict[str, Any]], unit: str) -> dict[str, Any]:
    return {
        "samples": rows,
        "trend": {
            key: trend(rows, key, unit)
            for key in ("driver_rss", "worker_rss_sum", "object_store_used")
        },
    }


def small_calls(group: WorkerGroup[Soak], calls: int) -> dict[str, Any]:
    sampler = Sampler(calls, lambda: group.call(Soak.rss))
    start = time.perf_counter()
    for i in range(calls + 1):
        sampler.maybe(i)
        if i < calls:
            group.call(Soak.echo, i)
    out = summarize(sampler.rows, "call")
    out["calls"], out["wall_s"] = calls, round(time.perf_counter() - start, 1)
    return out


def batches(group: WorkerGroup[Soak], count: int) -> dict[str, Any]:
    data = Batch({"x": torch.randn(1024 * RANKS, 256)})  # 4 MiB of float32
    nbytes = data.tensors["x"].numel() * data.tensors["x"].element_size()
    sampler = Sampler(count, lambda: group.call(Soak.rss))
    start = time.perf_counter()
    for i in range(count + 1):
        sampler.maybe(i)
        if i < count:
            out = group.call(Soak.echo_batch, data)
            assert len(out) == len(data)
    result = summarize(sampler.rows, "dispatch")
    result["dispatches"], result["batch_bytes"] = count, nbytes
    result["wall_s"] = round(time.perf_counter() - start, 1)
    return result


def training(backend: RayBackend, steps: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(None, [*TINY, f"trainer.total_steps={steps}", f"trainer.run_dir={tmp!r}"])
        holder: list[PPOTrainer] = []

        def workers() -> list[int]:
            actor = holder[0].actor
            assert actor is not None
            return actor.run_function(worker_rss)

        sampler = Sampler(steps, workers)

        def on_step(row: dict[str, Any]) -> None:
            sampler.maybe(int(row["step"]))

        def reward(response: str, example: object) -> float:
            return (sum(map(ord, response)) % 11) / 11

        trainer = PPOTrainer(backend, cfg, reward_fn=reward, on_step=on_step)
        holder.append(trainer)
        start = time.perf_counter()
        with trainer:
            trainer.init_workers()
            sampler.maybe(0)
            trainer.fit()
        result = summarize(sampler.rows, "step")
        result["steps"], result["wall_s"] = steps, round(time.perf_counter() - start, 1)
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--phases",
        default="calls,batches,training",
        help="comma-separated subset of calls,batches,training (default: all three)",
    )
    args = parser.parse_args()
    chosen = set(args.phases.split(","))
    unknown = chosen - {"calls", "batches", "training"}
    if unknown:
        parser.error(f"--phases: unknown {sorted(unknown)}; choose from calls,batches,training")
    load_start = os.getloadavg()
    phases: dict[str, Any] = {}
    with RayBackend(num_cpus=8, runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}}) as backend:
        pool = ResourcePool.create([RANKS], cpus_per_process=0.5)
        group = WorkerGroup(backend, WorkerSpec.of(Soak), pool, role="soak")
        if "calls" in chosen:
            phases["small_calls"] = small_calls(group, args.calls)
        if "batches" in chosen:
            phases["batches_4mb"] = batches(group, args.batches)
        group.shutdown()
        if "training" in chosen:
            phases["training"] = training(backend, args.steps)
    report = {
        "ranks": RANKS,
        "flat_if_growth_below": {"fraction_of_mean": FLAT_FRACTION, "bytes": FLAT_BYTES},
        "phases": phases,
        "load_average": [load_start[0], os.getloadavg()[0]],
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{'phase':<12} {'series':<18} {'slope':>18} {'growth MiB':>11}  verdict")
    for name, phase in phases.items():
        for key, t in phase["trend"].items():
            slope_key = next(k for k in t if k.startswith("slope_"))
            unit = slope_key.removeprefix("slope_bytes_per_")
            print(
                f"{name:<12} {key:<18} {t[slope_key]:>9.1f} B/{unit:<8}"
                f" {t['fitted_growth_bytes'] / 2**20:>11.2f}  {t['verdict']}"
            )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
