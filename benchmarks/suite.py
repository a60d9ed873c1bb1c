"""``make bench``: the runtime's overhead and data-movement figures, each against a baseline
measured in the same run.

Prints a table (``--markdown``: the README's Markdown table), writes ``runs/bench/results.json``
and ``docs/bench_overhead.png``. Every timed figure is a ratio of two medians (ours / baseline)
with both absolute medians, the repeat count and the spread (min-max of per-repeat ratios);
counted figures say how they were counted. Targets of issue 11 are printed met/MISSED::

    .venv/bin/python -m benchmarks.suite             # the full suite (~10 min on 2 cores)
    .venv/bin/python -m benchmarks.suite --quick     # a smoke run (~2 min)
    .venv/bin/python -m benchmarks.suite --only calls,data --markdown

Parts (``--only``): ``calls`` (Ray and Monarch by ranks, in-process), ``data`` (64/256 MB round
trips, serializations, driver copies, Batch ops), ``demo`` (the demo step's orchestration
share with pipelined steps and one stage at a time, with ``trainer.balance_batch``, and of the
same call graph on raw Ray actors; the step-time ratio of the two layouts; the CPU side: the
share of the cores the run uses and why the slow rank is slow), ``tokens`` (generation/training
tokens/s).
The slow training benchmarks are separate scripts (``make bench-training``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import structlog
import torch

from benchmarks.suite_report import Figure, markdown, ratio_figure, share_figure, table, to_json

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "runs" / "bench" / "results.json"
PLOT = ROOT / "docs" / "bench_overhead.png"
PARTS = ("calls", "data", "demo", "tokens")
#: Target of issue 11 for the demo step's orchestration share.
SHARE_TARGET = 0.10


def _ray_backend() -> Any:
    from runtime_ray import RayBackend

    return RayBackend(num_cpus=24, runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})


def _calls(quick: bool) -> list[Figure]:
    from benchmarks.suite_calls import CallPlan, inprocess_figure, measure_backend

    plan = (
        CallPlan(ranks=(1, 4), repeats=3, per_repeat=10, depth=20, pipelined_per_repeat=1)
        if quick
        else CallPlan(
            ranks=(1, 2, 4, 8), repeats=7, per_repeat=40, depth=50, pipelined_per_repeat=3
        )
    )
    figures = [inprocess_figure(repeats=plan.repeats, per_repeat=20)]
    figures += _ray_calls(plan, measure_backend)
    figures += _monarch_calls(plan, measure_backend)
    return figures


def _ray_calls(plan: Any, measure: Callable[..., list[Figure]]) -> list[Figure]:
    import ray

    from runtime_ray import RayWorker
    from runtime_ray._casts import host_ref

    def actors(group: Any) -> list[Any]:
        return [w.actor for w in group.workers if isinstance(w, RayWorker)]

    def burst(handles: Sequence[Any], args: tuple[Any, ...]) -> Callable[[], Callable[[], object]]:
        def start() -> Callable[[], object]:
            refs = [host_ref(h).nop.remote(*args) for h in handles]
            return lambda: ray.get(refs)

        return start

    backend = _ray_backend()
    try:
        return measure("Ray", backend, actors, burst, plan)
    finally:
        backend.shutdown()


def _monarch_calls(plan: Any, measure: Callable[..., list[Figure]]) -> list[Figure]:
    try:
        from runtime_monarch import MonarchBackend, MonarchWorker
    except ImportError:
        print("monarch is not installed: Monarch figures skipped", file=sys.stderr)
        return []

    def actors(group: Any) -> list[Any]:
        return [w.actor for w in group.workers if isinstance(w, MonarchWorker)]

    def burst(handles: Sequence[Any], args: tuple[Any, ...]) -> Callable[[], Callable[[], object]]:
        def start() -> Callable[[], object]:
            futures = [h.nop.call_one(*args) for h in handles]
            return lambda: [f.get() for f in futures]

        return start

    with MonarchBackend(env={"PYTHONPATH": str(ROOT)}) as backend:
        return measure("Monarch", backend, actors, burst, plan)


def _data(quick: bool) -> list[Figure]:
    from benchmarks.suite_data import (
        batch_op_figures,
        count_driver_copies,
        count_serializations,
        round_trip_figures,
    )

    backend = _ray_backend()
    try:
        sizes = (8, 32) if quick else (64, 256)
        figures = round_trip_figures(backend, sizes, repeats=3 if quick else 5, per_repeat=2)
        figures += count_serializations(backend)
        figures.append(count_driver_copies(backend))
    finally:
        backend.shutdown()
    figures += batch_op_figures(16 if quick else 64, repeats=3 if quick else 5, per_repeat=3)
    return figures


#: The demo layouts measured: name, title words, config overrides.
_DEMO_RUNS: tuple[tuple[str, str, list[str]], ...] = (
    ("pipelined", "pipelined steps (default)", []),
    ("one_stage_at_a_time", "trainer.pipeline_steps=false", ["trainer.pipeline_steps=false"]),
)


def _demo(quick: bool) -> list[Figure]:
    steps, skip = (12, 4) if quick else (50, 10)
    rounds = 1 if quick else 2
    runs, balanced, skeleton = _measure_demo(steps, skip, rounds)
    figures = [
        _share(f"demo_orchestration_share_{name}", words, runs[name], steps - skip)
        for name, words, _ in _DEMO_RUNS
    ]
    figures.append(
        _share(
            "demo_orchestration_share_balance_on",
            "trainer.balance_batch=true (pipelined, driver advantages)",
            [balanced],
            steps - skip,
        )
    )
    pipelined, plain = runs["pipelined"], runs["one_stage_at_a_time"]
    figures.append(_skeleton_figure(skeleton, pipelined[-1].method_cpu, steps - skip))
    figures.append(
        ratio_figure(
            "demo_step_time",
            "demo step time, pipelined steps (default)",
            [r.step_times for r in pipelined],
            [r.step_times for r in plain],
            base_label="trainer.pipeline_steps=false",
            note=f"median step wall time; {rounds} alternating run(s) of {steps - skip} "
            "measured steps per layout",
        )
    )
    return figures + _demo_cpu_figures(pipelined[-1], steps - skip)


def _measure_demo(steps: int, skip: int, rounds: int) -> tuple[dict[str, list[Any]], Any, Any]:
    """``rounds`` alternating runs of each of :data:`_DEMO_RUNS`, one with
    ``balance_batch``, and the raw-Ray skeleton with the last pipelined run's CPU per call."""
    from benchmarks.suite_orchestration import demo_step_parts
    from benchmarks.suite_skeleton import skeleton_step

    backend = _ray_backend()
    runs: dict[str, list[Any]] = {name: [] for name, _, _ in _DEMO_RUNS}

    def run(balance: bool, extra: Sequence[str]) -> Any:
        with tempfile.TemporaryDirectory(prefix="bench-demo-") as run_dir:
            return demo_step_parts(
                backend, Path(run_dir), steps=steps, skip=skip, balance=balance, extra=extra
            )

    try:
        # Alternate the layouts so a slow spell of the machine hits both alike.
        for _ in range(rounds):
            for name, _, extra in _DEMO_RUNS:
                runs[name].append(run(False, extra))
        balanced = run(True, [])
        skeleton = skeleton_step(runs["pipelined"][-1].method_cpu, steps=steps, skip=skip)
    finally:
        backend.shutdown()
    return runs, balanced, skeleton


def _skeleton_figure(skeleton: Any, cpu: dict[str, float], repeats: int) -> Figure:
    return share_figure(
        "demo_orchestration_share_raw_ray_skeleton",
        "the same call graph on raw Ray actors (engine floor, no all-reduce)",
        skeleton.parts,
        wall_s=skeleton.step_s,
        repeats=repeats,
        note="benchmarks/suite_skeleton.py: 2 plain actors, per step and rank generate -> "
        "score, log_prob -> update chained by object refs, one step ahead, each burning the "
        "demo's median on-CPU time per call ("
        + ", ".join(f"{m} {v * 1e3:.1f} ms" for m, v in cpu.items())
        + "); each worker outside its calls, mean: "
        + ", ".join(f"{k} {v:.1%}" for k, v in skeleton.worker_gaps.items()),
    )


def _share(key: str, words: str, demos: Sequence[Any], repeats: int) -> Figure:
    """The orchestration share of ``demos`` (runs of one layout; parts averaged), with where
    the workers' idle time goes (inside the engine's task wrapper, or between calls)."""
    from benchmarks.suite_intervals import PARTS

    def mean(values: Sequence[float]) -> float:
        return sum(values) / len(values)

    parts = {k: mean([d.parts[k] for d in demos]) for k in PARTS}
    gaps = {k: mean([d.worker_gaps[k] for d in demos]) for k in demos[0].worker_gaps}
    return share_figure(
        key,
        f"demo step orchestration share (Ray, {demos[0].workers} workers), {words}",
        parts,
        wall_s=mean([d.step_s for d in demos]),
        repeats=repeats * len(demos),
        target=SHARE_TARGET if key == "demo_orchestration_share_pipelined" else None,
        note="ray.timeline task:execute intervals in the workers; driver submit/wait stamped "
        f"by a wrapping backend; repeats = measured steps ({len(demos)} run(s)); each "
        "worker outside its methods, mean: " + ", ".join(f"{k} {v:.1%}" for k, v in gaps.items()),
    )


def _demo_cpu_figures(demo: Any, repeats: int) -> list[Figure]:
    """The CPU side of the demo run (``demo``: a ``DemoStep``): the share of the cores it
    keeps busy, and the slow rank's excess time split by what its thread did."""
    from benchmarks.suite_cpu import cores

    n = cores()
    cpu, slow, step = demo.cpu, demo.slow, demo.step_s
    return [
        share_figure(
            "demo_cpu_utilisation",
            f"demo run CPU use, share of {n} cores (driver, workers, Ray daemons)",
            {"driver": cpu["driver"], "workers": cpu["workers"], "Ray daemons": cpu["other"]},
            wall_s=step,
            repeats=repeats,
            note="CPU seconds from /proc/PID/stat of the driver and its descendants over "
            "the measured steps / (wall x cores); runnable but waiting for a CPU, per step: "
            f"workers {cpu['workers_runqueue_s'] / repeats * 1e3:.1f} ms, driver "
            f"{cpu['driver_runqueue_s'] / repeats * 1e3:.1f} ms; whole machine (other jobs "
            f"too) {cpu['machine']:.0%} busy",
        ),
        share_figure(
            "demo_slow_rank_excess",
            "demo step: slow rank's extra time in a method over the fast rank, split",
            {
                "more CPU work": slow["more_cpu"] / step,
                "runnable, descheduled": slow["more_runqueue"] / step,
                "asleep": slow["more_blocked"] / step,
            },
            wall_s=step,
            repeats=repeats,
            note="per call: longest minus shortest rank's wall, on-CPU and run-queue time of "
            "the calling thread (/proc/thread-self/schedstat); start skew (outside the "
            f"method) {slow['start_skew'] / step:.1%} of the step; "
            f"{slow['calls']:.0f} calls per step; more CPU work by method: "
            + ", ".join(
                f"{m} {split['more_cpu'] / step:.1%}" for m, split in demo.slow_by_method.items()
            ),
        ),
    ]


def _tokens(quick: bool) -> list[Figure]:
    from benchmarks import bench_rollout_throughput as rt

    # Smaller than the script's defaults: the suite's budget is ~10 minutes on 2 cores.
    size = (
        ["--batch", "8", "--prompt-len", "16", "--new-tokens", "16"]
        if quick
        else ["--batch", "16", "--prompt-len", "32", "--new-tokens", "16"]
    )
    args = rt.parser().parse_args([*size, "--repeats", "3" if quick else "5"])
    r = rt.measure(args)
    out = []
    for key, label, tokens in (
        ("generation", "generate()", args.batch * args.new_tokens),
        ("training", "plain CE step", args.batch * (args.prompt_len + args.new_tokens)),
    ):
        rate = tokens / r[f"{key}_s_median"]
        out.append(
            ratio_figure(
                f"{key}_time",
                f"{key} time, tiny Qwen2, batch {args.batch} ({rate:,.0f} tokens/s)",
                [[x] for x in r[f"{key}_s"]],
                [[x] for x in r[f"{key}_raw_s"]],
                base_label=label,
                note=f"{rate:.0f} tokens/s (median run); ratio: time vs the library's own path",
            )
        )
    return out


def _env(parts: Sequence[str], quick: bool, started: float) -> dict[str, Any]:
    import ray

    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "ray": ray.__version__,
        "parts": list(parts),
        "quick": quick,
        "loadavg_1m_end": round(os.getloadavg()[0], 2),
        "wall_s": round(time.perf_counter() - started, 1),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: few repeats, small data")
    parser.add_argument("--markdown", action="store_true", help="also print the Markdown table")
    parser.add_argument("--only", default=",".join(PARTS), help=f"comma list of {PARTS}")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--plot", type=Path, default=PLOT)
    args = parser.parse_args(argv)
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        parser.error(f"--only: unknown part(s) {unknown}; choose from {list(PARTS)}")
    # The backends log start-up and shutdown at debug level; the table is what matters here.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    started = time.perf_counter()
    load_start = round(os.getloadavg()[0], 2)
    runners: dict[str, Callable[[bool], list[Figure]]] = {
        "calls": _calls,
        "data": _data,
        "demo": _demo,
        "tokens": _tokens,
    }
    figures: list[Figure] = []
    for part in parts:
        t0 = time.perf_counter()
        figures += runners[part](args.quick)
        print(f"[{part}: {time.perf_counter() - t0:.0f} s]", file=sys.stderr)
    env = _env(parts, args.quick, started) | {"loadavg_1m_start": load_start}
    print(table(figures))
    if args.markdown:
        print()
        print(markdown(figures))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(to_json(figures, env), indent=2) + "\n")
    print(f"wrote {args.out}")
    if "calls" in parts:
        from benchmarks.suite_plot import plot_overhead

        machine = f"{env['machine']}; load {load_start}-{env['loadavg_1m_end']}"
        if plot_overhead(figures, args.plot, machine):
            print(f"wrote {args.plot}")
    missed = [f.key for f in figures if f.met is False]
    print(f"targets missed: {missed}" if missed else "every target met")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
