"""What reaches the driver, sync against async: bytes per step, weight sync, and the driver's RSS.

Runs the demo config (``ppo/configs/demo.toml``) on a local Ray cluster, with the layouts of
``benchmarks/bench_async.py`` (sync: two data-parallel actor ranks; async ``max_staleness = 1``:
one actor rank and one rollout rank), for ``--steps`` steps each (default 500), and records
per step:

* ``perf/driver_bytes_received`` / ``perf/driver_bytes_sent``: payload bytes of the batches the
  driver materialises and passes into calls (``ppo/dataflow.py``);
* ``timing_s/weight_sync`` and ``perf/weight_sync_bytes`` (async only);
* the driver's resident set size (``/proc/self/statm``), sampled every ``--rss-every`` steps,
  with its least-squares slope over the second half of the run (after the allocator settled).

For scale it also reports ``rollout_bytes_per_step_max``: the bytes of one step's whole
rollout result (``input_ids``, ``attention_mask``, ``responses``, ``response_mask``,
``rollout_log_probs``) at the full ``data.max_prompt_len`` and ``data.max_response_len``
widths, which the driver used to receive (an upper bound: prompts are padded only to the
step's longest).
Writes ``benchmarks/results/driver_data.json``.

    .venv/bin/python benchmarks/bench_driver_data.py [--steps 500] [--rss-every 10]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import structlog

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ppo import PPOTrainer, load_config  # noqa: E402
from rlrun import build_backend  # noqa: E402

RUNS: dict[str, list[str]] = {
    "sync": ["resources.actor_ranks=2"],
    "async s=1": [
        "trainer.mode='async'",
        "async.max_staleness=1",
        "resources.actor_ranks=1",
        "actor.mini_batches=2",
    ],
}
_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mib() -> float:
    """This process's resident set size in MiB (Linux)."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * _PAGE / 2**20


def slope_per_100(points: list[tuple[int, float]]) -> float:
    """Least-squares slope of ``(step, value)`` points, per 100 steps."""
    xs = [float(x) for x, _ in points]
    ys = [y for _, y in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return 100 * sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var


def _mean(rows: list[dict[str, Any]], key: str) -> float | None:
    values = [float(r[key]) for r in rows if key in r]
    return round(statistics.fmean(values), 4) if values else None


def run_one(name: str, steps: int, rss_every: int, run_dir: Path) -> dict[str, Any]:
    overrides = [
        *RUNS[name],
        f"trainer.total_steps={steps}",
        "trainer.test_freq=0",
        f"trainer.run_dir={str(run_dir)!r}",
        "trainer.resume='off'",
        "trainer.overwrite=true",  # an earlier bench run in this directory is moved aside
        "trainer.progress=false",
        "trainer.save_freq=0",
        "trainer.loggers=['jsonl']",
    ]
    config = load_config("demo", overrides)
    rss: list[tuple[int, float]] = []

    def on_step(row: dict[str, Any]) -> None:
        step = int(row["step"])
        if step % rss_every == 0 or step == 1:
            rss.append((step, round(rss_mib(), 2)))

    backend = build_backend("ray")
    try:
        with PPOTrainer(backend=backend, config=config, on_step=on_step) as trainer:
            trainer.init_workers()
            start = time.perf_counter()
            history = trainer.fit()
            wall = time.perf_counter() - start
    finally:
        backend.shutdown()
    rows = [r for r in history if r["step"] > 0]
    data = config.data
    b = data.prompts_per_step * config.rollout.n
    p, r = data.max_prompt_len, data.max_response_len
    rollout_bytes = b * (p + r) * 8 * 2 + b * r * 8 * 2 + b * r * 4
    second_half = [pt for pt in rss if pt[0] > steps // 2]
    return {
        "run": name,
        "steps": steps,
        "train_seconds": round(wall, 1),
        "driver_bytes_received_per_step": _mean(rows, "perf/driver_bytes_received"),
        "driver_bytes_sent_per_step": _mean(rows, "perf/driver_bytes_sent"),
        "rollout_bytes_per_step_max": rollout_bytes,
        "weight_sync_s": _mean(rows, "timing_s/weight_sync"),
        "weight_sync_bytes": _mean(rows, "perf/weight_sync_bytes"),
        "rss_mib_first": rss[0][1],
        "rss_mib_last": rss[-1][1],
        "rss_slope_mib_per_100_steps": round(slope_per_100(second_half), 3),
        "rss_mib": rss,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--rss-every", type=int, default=10)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    results = [
        run_one(name, args.steps, args.rss_every, REPO / "runs" / f"bench_driver_data_{i}")
        for i, name in enumerate(RUNS)
    ]
    print(
        f"{'run':<10} {'recv B/step':>11} {'sent B/step':>11} {'rollout B<=':>11} "
        f"{'sync s':>7} {'sync B':>8} {'RSS MiB':>13} {'MiB/100 steps':>13}"
    )
    for r in results:
        sync_s = "-" if r["weight_sync_s"] is None else f"{r['weight_sync_s']:.4f}"
        sync_b = "-" if r["weight_sync_bytes"] is None else f"{r['weight_sync_bytes']:.0f}"
        print(
            f"{r['run']:<10} {r['driver_bytes_received_per_step']:>11.0f} "
            f"{r['driver_bytes_sent_per_step']:>11.0f} {r['rollout_bytes_per_step_max']:>11} "
            f"{sync_s:>7} {sync_b:>8} "
            f"{r['rss_mib_first']:>6.0f}->{r['rss_mib_last']:<6.0f} "
            f"{r['rss_slope_mib_per_100_steps']:>13.3f}"
        )
    out = REPO / "benchmarks" / "results" / "driver_data.json"
    out.write_text(json.dumps({"runs": results}, indent=2))
    print(f"wrote {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
