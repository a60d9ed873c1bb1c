"""The driver's own CPU time per demo step on Ray, and where it goes (cProfile).

Trains the demo config (2 data-parallel actor ranks on a local Ray cluster) for ``--steps``
steps and reads the driver's CPU clocks at every step's end (a tracker's ``log``):
``time.process_time()`` (every thread of the driver process, Ray's client threads included)
and ``time.thread_time()`` (the main thread only: the trainer's code and the calls it makes).
The backend is wrapped in :class:`benchmarks.suite_orchestration.TimedBackend`, which
adds up the main thread's CPU inside ``Backend.submit`` and ``Backend.wait`` (Ray's client:
serialising, getting objects); the rest of the main thread's CPU is the **driver's own work**
(the trainer's code and the runtime's dispatch). CPU time moves much less than wall time when
other jobs share the machine. The first ``--skip`` steps are left out. With ``--profile``,
cProfile (timed by the main thread's CPU clock) runs on the measured steps and the top entries
are printed; profiling slows the driver, so its CPU figures are then not comparable and
nothing is written. Otherwise writes ``benchmarks/results/driver_profile.json``.

    .venv/bin/python benchmarks/profile_driver.py [--steps 60] [--skip 10] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import logging
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import structlog

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.suite_orchestration import TimedBackend, demo_overrides  # noqa: E402
from ppo import PPOTrainer, load_config  # noqa: E402
from ppo.trackers import CallbackTracker  # noqa: E402
from rlrun import build_backend  # noqa: E402


def measure(
    steps: int, skip: int, run_dir: Path, profile: cProfile.Profile | None
) -> dict[str, Any]:
    """Train the demo for ``steps`` steps; per-step driver CPU seconds after ``skip``."""
    overrides = demo_overrides(steps, run_dir)
    clocks: dict[int, tuple[float, float, float, float]] = {}
    backend = build_backend("ray")
    timed = TimedBackend(backend)

    def stamp(row: Mapping[str, Any]) -> None:
        step = int(row["step"])
        thread = time.thread_time()
        clocks[step] = (
            time.process_time(),
            thread,
            thread - timed.backend_cpu_s,
            time.perf_counter(),
        )
        if profile is not None and step == skip:
            profile.enable()
        elif profile is not None and step == steps:
            profile.disable()

    try:
        with PPOTrainer(
            backend=timed, config=load_config("demo", overrides), trackers=[CallbackTracker(stamp)]
        ) as t:
            t.init_workers()
            t.fit()
    finally:
        backend.shutdown()
    deltas = [
        tuple(b - a for a, b in zip(clocks[s - 1], clocks[s], strict=True))
        for s in range(skip + 1, steps + 1)
    ]
    process, thread, own, wall = (statistics.median(d[i] for d in deltas) for i in range(4))
    return {
        "steps": steps,
        "skip": skip,
        "driver_process_cpu_ms_per_step": round(process * 1e3, 2),
        "driver_main_thread_cpu_ms_per_step": round(thread * 1e3, 2),
        "driver_own_work_cpu_ms_per_step": round(own * 1e3, 2),
        "step_wall_ms": round(wall * 1e3, 1),
        "statistic": "median over the measured steps",
    }


def top_entries(profile: cProfile.Profile, n: int = 25) -> str:
    """The ``n`` top entries by own time, then ours (``ppo``, ``runtime``) by cumulative time."""
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out)
    stats.sort_stats("tottime").print_stats(n)
    stats.sort_stats("cumulative").print_stats(r"/(ppo|runtime)/", n)
    return out.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--skip", type=int, default=10)
    parser.add_argument("--profile", action="store_true", help="cProfile the driver's fit()")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/driver_profile.json")
    args = parser.parse_args()
    if args.steps <= args.skip:
        parser.error(f"--steps ({args.steps}) must be larger than --skip ({args.skip})")
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    # Timed by the main thread's CPU clock: where the driver spends CPU, not where it waits.
    profile = cProfile.Profile(time.thread_time) if args.profile else None
    with tempfile.TemporaryDirectory(prefix="profile-driver-") as run_dir:
        result = measure(args.steps, args.skip, Path(run_dir), profile)
    print(json.dumps(result))
    if profile is not None:
        print(top_entries(profile))
    else:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
