"""Where the time of a sync and an async step goes, on the demo task (Ray, 2 processes each).

Runs the layouts of ``benchmarks/bench_async.py`` (sync: two data-parallel actor ranks that
generate, then train; async ``max_staleness = 1``: one actor rank that trains while one rollout
rank generates) for ``--steps`` steps each, with ``cProfile`` on the driver's ``fit``. Reports
per layout the mean step phases from the metrics (after ``--skip`` warm steps), the share of
driver time spent waiting on workers, the driver's own CPU seconds per step, and the machine's
load average. Writes ``benchmarks/results/async_profile.json``.

    .venv/bin/python benchmarks/profile_async.py [--steps 120] [--skip 20]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import logging
import os
import pstats
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import structlog

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bench_async import RUNS as ALL_RUNS  # noqa: E402
from ppo import PPOTrainer, load_config  # noqa: E402
from rlrun import build_backend  # noqa: E402

RUNS = {name: ALL_RUNS[name] for name in ("sync", "async s=1")}
PHASES = ("gen", "old_log_prob", "adv", "update_actor", "sync_weights", "weight_sync", "step")
#: Driver functions that only wait for workers (Ray's get and wait).
WAITS = ("get", "wait", "get_objects")


def _wait_seconds(stats: pstats.Stats) -> float:
    """Cumulative seconds in the outermost Ray wait functions (``ray._private.worker``)."""
    total = 0.0
    table: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]  # pstats keeps it untyped
    for (filename, _, name), (_, _, _, cumulative, _) in table.items():
        if filename.endswith(os.path.join("ray", "_private", "worker.py")) and name in WAITS:
            total = max(total, cumulative)
    return total


def run_one(name: str, steps: int, skip: int, run_dir: Path) -> dict[str, Any]:
    overrides = [
        *RUNS[name],
        f"trainer.total_steps={steps}",
        "trainer.test_freq=0",
        f"trainer.run_dir={str(run_dir)!r}",
        "trainer.resume='off'",
        "trainer.overwrite=true",  # an earlier run in this directory is moved aside
        "trainer.progress=false",
        "trainer.save_freq=0",
        "trainer.loggers=['jsonl']",
    ]
    config = load_config("demo", overrides)
    backend = build_backend("ray")
    profile = cProfile.Profile()
    try:
        with PPOTrainer(backend=backend, config=config) as trainer:
            trainer.init_workers()
            load_before = os.getloadavg()[0]
            cpu0, t0 = time.process_time(), time.perf_counter()
            profile.enable()
            history = trainer.fit()
            profile.disable()
            wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
            load_after = os.getloadavg()[0]
    finally:
        backend.shutdown()
    rows = [r for r in history if r["step"] > skip]
    phases = {
        p: round(statistics.fmean(r[f"timing_s/{p}"] for r in rows), 4)
        for p in PHASES
        if all(f"timing_s/{p}" in r for r in rows)
    }
    stats = pstats.Stats(profile)
    waiting = _wait_seconds(stats)
    return {
        "run": name,
        "steps": steps,
        "mean_phase_s": phases,
        "fit_wall_s": round(wall, 1),
        "driver_cpu_s_per_step": round(cpu / steps, 4),
        "driver_share_waiting_on_workers": round(waiting / wall, 3),
        "load_average_1min": [round(load_before, 1), round(load_after, 1)],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--skip", type=int, default=20)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    results = [
        run_one(name, args.steps, args.skip, REPO / "runs" / f"profile_async_{i}")
        for i, name in enumerate(RUNS)
    ]
    for r in results:
        print(json.dumps(r))
    out = REPO / "benchmarks" / "results" / "async_profile.json"
    out.write_text(json.dumps({"runs": results}, indent=2))
    print(f"wrote {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
