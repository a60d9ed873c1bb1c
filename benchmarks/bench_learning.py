"""Learning check for the main job: does RL raise validation accuracy on the demo task?

Runs the demo configuration (``ppo/configs/demo.toml``) once per estimator (GRPO, and PPO with a
critic/GAE), on the chosen backend, and reports in the same run: validation accuracy right
after the supervised warm-up (the baseline), at the end, the gain in points, the first and
last training reward, and the wall time. Pass criteria (from the trainer issue): the gain is at
least 20 points, GRPO ends at 0.8 or more within 10 minutes, and both estimators raise the
training reward.

    python benchmarks/bench_learning.py [--backend ray|inprocess] [--steps 300] [--only grpo]

Writes ``benchmarks/results/learning.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import structlog

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ppo import PPOTrainer, load_config  # noqa: E402
from rlrun import build_backend  # noqa: E402


def run_one(backend_name: str, estimator: str, steps: int, run_dir: Path) -> dict[str, Any]:
    overrides = [
        f"algorithm.adv_estimator={estimator!r}",
        f"trainer.total_steps={steps}",
        f"trainer.run_dir={str(run_dir)!r}",
        "trainer.resume='off'",
        "trainer.overwrite=true",  # an earlier bench run in this directory is moved aside
        "trainer.progress=false",
        "trainer.save_freq=0",
    ]
    config = load_config("demo", overrides)
    backend = build_backend(backend_name)
    start = time.perf_counter()
    try:
        with PPOTrainer(backend=backend, config=config) as trainer:
            history = trainer.fit()
    finally:
        backend.shutdown()
    wall = time.perf_counter() - start
    val = [(r["step"], r["val/accuracy"]) for r in history if r.get("val/accuracy") is not None]
    rewards = [r["critic/score/mean"] for r in history if "critic/score/mean" in r]
    window = max(1, len(rewards) // 10)
    return {
        "estimator": estimator,
        "backend": backend_name,
        "steps": steps,
        "wall_s": round(wall, 1),
        "val_after_warmup": val[0][1],
        "val_final": val[-1][1],
        "val_gain_points": round(100 * (val[-1][1] - val[0][1]), 1),
        "val_curve": val,
        "reward_first_10pct": round(sum(rewards[:window]) / window, 3),
        "reward_last_10pct": round(sum(rewards[-window:]) / window, 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="ray", choices=["ray", "inprocess"])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--only", choices=["grpo", "gae"], default=None)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    estimators = [args.only] if args.only else ["grpo", "gae"]
    results = [
        run_one(args.backend, est, args.steps, REPO / "runs" / f"bench_learning_{est}")
        for est in estimators
    ]
    print(
        f"{'estimator':10} {'val@warmup':>10} {'val@end':>8} {'gain':>6} {'reward':>14} {'wall':>7}"
    )
    for r in results:
        reward = f"{r['reward_first_10pct']:.2f}->{r['reward_last_10pct']:.2f}"
        print(
            f"{r['estimator']:10} {r['val_after_warmup']:10.3f} {r['val_final']:8.3f} "
            f"{r['val_gain_points']:+6.1f} {reward:>14} {r['wall_s']:6.0f}s"
        )
    ok = all(
        r["val_gain_points"] >= 20
        and r["reward_last_10pct"] > r["reward_first_10pct"]
        and r["wall_s"] < 600
        and (r["estimator"] != "grpo" or r["val_final"] >= 0.8)
        for r in results
    )
    out = REPO / "benchmarks" / "results" / "learning.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"pass": ok, "runs": results}, indent=2))
    print(("PASS" if ok else "FAIL") + f": wrote {out.relative_to(REPO)}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
