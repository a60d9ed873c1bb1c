"""Synchronous against asynchronous training on the demo task, side by side in one run.

Runs the demo config (``ppo/configs/demo.toml``) on a local Ray cluster three times with the
same seeds:

* ``sync``: two data-parallel actor ranks that generate, then train (the demo);
* ``async s=1`` and ``async s=2``: one actor rank that trains while one rollout rank (its own
  process) generates up to ``s`` policy versions ahead.

Both layouts use two processes, so each gets the machine's two cores. Reported per run: wall
seconds from the first step until validation accuracy first reaches 0.80 (checked every
``--test-freq`` steps), samples per second, the final accuracy, and the **CPU use** from the
first step to the last (:mod:`benchmarks.suite_cpu`): the CPU seconds of the driver, the worker
processes and the rest of the local Ray cluster, over wall time x cores. If the synchronous
run already keeps a share ``X`` of the cores busy, overlapping the same work can make it at
most ``1 / X`` times faster; the script prints that bound, the CPU milliseconds each run spends
per sample, and for each async run the bound its own CPU seconds set: it cannot finish sooner
than its CPU seconds spread over every core. The targets (from the async
issue): async reaches 0.80 at least 1.3x sooner than sync, and ends no more than 2 points below
it. Writes ``benchmarks/results/async.json`` and ``docs/async_vs_sync.png`` (accuracy against
wall time).

    .venv/bin/python benchmarks/bench_async.py [--steps 400] [--test-freq 20]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import structlog

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.suite_cpu import Snapshot, cores, snapshot, utilisation, worker_pid  # noqa: E402
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
    "async s=2": [
        "trainer.mode='async'",
        "async.max_staleness=2",
        "resources.actor_ranks=1",
        "actor.mini_batches=2",
    ],
}
TARGET = 0.80


def run_one(name: str, steps: int, test_freq: int, run_dir: Path) -> dict[str, Any]:
    overrides = [
        *RUNS[name],
        f"trainer.total_steps={steps}",
        f"trainer.test_freq={test_freq}",
        f"trainer.run_dir={str(run_dir)!r}",
        "trainer.resume='off'",
        "trainer.overwrite=true",  # an earlier bench run in this directory is moved aside
        "trainer.progress=false",
        "trainer.save_freq=0",
    ]
    config = load_config("demo", overrides)
    stamps: dict[int, float] = {}
    snaps: list[Snapshot] = []

    def on_step(row: dict[str, Any]) -> None:
        stamps[int(row["step"])] = time.perf_counter()
        if row["step"] == steps:
            snaps.append(snapshot())

    backend = build_backend("ray")
    try:
        with PPOTrainer(backend=backend, config=config, on_step=on_step) as trainer:
            trainer.init_workers()
            groups = [g for g in (trainer.actor, trainer.rollout) if g is not None]
            pids = sorted({p for g in groups for p in g.run_function(worker_pid)})
            snaps.append(snapshot())
            start = time.perf_counter()
            history = trainer.fit()
    finally:
        backend.shutdown()
    cpu = utilisation(snaps[0], snaps[1], {"driver": [os.getpid()], "workers": pids})
    cpu_s = cpu["total"] * cores() * (snaps[1].time - snaps[0].time)
    curve = [
        (round(stamps.get(r["step"], start) - start, 2), r["val/accuracy"])
        for r in history
        if "val/accuracy" in r
    ]
    reach = next((t for t, acc in curve if acc >= TARGET), None)
    train_s = stamps[steps] - start
    samples = steps * config.data.prompts_per_step * config.rollout.n
    return {
        "run": name,
        "steps": steps,
        "seconds_to_0.80": reach,
        "train_seconds": round(train_s, 1),
        "samples_per_s": round(samples / train_s, 1),
        "cpu_s": round(cpu_s, 2),
        "cpu_ms_per_sample": round(cpu_s / samples * 1e3, 3),
        "val_final": curve[-1][1],
        "cpu_share": {k: round(v, 3) for k, v in cpu.items() if not k.endswith("_runqueue_s")},
        "runqueue_ms_per_step": {
            k[: -len("_runqueue_s")]: round(v / steps * 1e3, 2)
            for k, v in cpu.items()
            if k.endswith("_runqueue_s")
        },
        "curve": curve,
    }


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for r in results:
        xs, ys = zip(*r["curve"], strict=True)
        ax.plot(xs, ys, marker=".", label=r["run"])
    ax.axhline(TARGET, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("wall time since the first step (s)")
    ax.set_ylabel("validation accuracy (greedy)")
    ax.set_title("GRPO on addition: sync vs async rollouts (2 processes each)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--test-freq", type=int, default=20)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    results = [
        run_one(name, args.steps, args.test_freq, REPO / "runs" / f"bench_async_{i}")
        for i, name in enumerate(RUNS)
    ]
    sync = results[0]
    print(
        f"{'run':<10} {'s to 0.80':>9} {'speed-up':>8} {'samples/s':>9} {'val end':>7} "
        f"{'CPU use':>7} {'machine':>7}"
    )
    for r in results:
        speedup = (
            sync["seconds_to_0.80"] / r["seconds_to_0.80"]
            if sync["seconds_to_0.80"] and r["seconds_to_0.80"]
            else None
        )
        r["speedup_to_0.80"] = round(speedup, 2) if speedup else None
        reach = r["seconds_to_0.80"]
        print(
            f"{r['run']:<10} {reach if reach is not None else 'never':>9} "
            f"{speedup or float('nan'):8.2f} {r['samples_per_s']:9.1f} {r['val_final']:7.3f} "
            f"{r['cpu_share']['total']:7.1%} {r['cpu_share']['machine']:7.1%}"
        )
    busy = sync["cpu_share"]["total"]
    bound = round(1 / busy, 2) if busy > 0 else None
    print(
        f"sync keeps {busy:.1%} of {cores()} cores busy: overlapping the same work can speed "
        f"it up at most {bound}x (the machine, other jobs included, was "
        f"{sync['cpu_share']['machine']:.0%} busy meanwhile)"
    )
    for r in results[1:]:
        # Async cannot finish faster than its own CPU seconds spread over every core.
        r["speedup_bound_by_cpu"] = round(sync["train_seconds"] * cores() / r["cpu_s"], 2)
        print(
            f"{r['run']}: {r['cpu_ms_per_sample']} CPU ms per sample (sync "
            f"{sync['cpu_ms_per_sample']}); even on {cores()} otherwise idle cores it could be "
            f"at most {r['speedup_bound_by_cpu']}x faster than this sync run"
        )
    out = REPO / "benchmarks" / "results" / "async.json"
    out.write_text(
        json.dumps(
            {"target": TARGET, "cores": cores(), "overlap_bound_vs_sync": bound, "runs": results},
            indent=2,
        )
    )
    plot(results, REPO / "docs" / "async_vs_sync.png")
    print(f"wrote {out.relative_to(REPO)} and docs/async_vs_sync.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
