"""Where the workers of a sync and an async demo step sit idle, on Ray (timeline + CPU clocks).

Runs :func:`benchmarks.suite_orchestration.demo_step_parts` for the layouts of
``benchmarks/bench_async.py`` (``--runs``, default sync and async s=2) and prints, per layout:
the mean step; each worker process's share of the measured window spent inside a method (Ray's
task timeline) and, while it is idle, what the driver does (inside ``submit``; inside
``wait``: results not there yet or in transit; or its own work); the orchestration parts (when
not every worker is busy); and the share of the two cores the run used, next to how busy the
whole machine was. Writes ``benchmarks/results/async_idle.json``.

    .venv/bin/python benchmarks/profile_async_idle.py [--steps 60] [--skip 10]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bench_async import RUNS  # noqa: E402
from benchmarks.suite_orchestration import demo_step_parts  # noqa: E402
from rlrun import build_backend  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--skip", type=int, default=10)
    parser.add_argument("--runs", default="sync,async s=2", help=f"comma list of {list(RUNS)}")
    args = parser.parse_args()
    names = [n.strip() for n in args.runs.split(",") if n.strip()]
    unknown = [n for n in names if n not in RUNS]
    if unknown:
        parser.error(f"--runs: unknown layout(s) {unknown}; choose from {list(RUNS)}")
    results = []
    for name in names:
        backend = build_backend("ray")
        try:
            with tempfile.TemporaryDirectory(prefix="async-idle-") as run_dir:
                demo = demo_step_parts(
                    backend,
                    Path(run_dir),
                    steps=args.steps,
                    skip=args.skip,
                    balance=None,
                    extra=RUNS[name],
                )
        finally:
            backend.shutdown()
        row = {
            "run": name,
            "step_ms": round(demo.step_s * 1e3, 1),
            "worker_busy_share": [round(x, 3) for x in demo.worker_busy],
            "worker_idle_by_driver_state": [
                {k: round(v, 3) for k, v in idle.items()} for idle in demo.worker_idle
            ],
            "orchestration_parts": {k: round(v, 3) for k, v in demo.parts.items()},
            "cpu_share": {k: round(v, 3) for k, v in demo.cpu.items() if "runqueue" not in k},
        }
        print(json.dumps(row))
        results.append(row)
    out = REPO / "benchmarks" / "results" / "async_idle.json"
    out.write_text(json.dumps({"steps": args.steps, "skip": args.skip, "runs": results}, indent=2))
    print(f"wrote {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
