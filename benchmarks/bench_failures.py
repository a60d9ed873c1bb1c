"""How fast failures surface, and that the group stays usable: figures for the README's
"Failure behaviour" section.

On a local ``RayBackend`` (4 CPU ranks; real actor processes, real kills) it measures, for each
case, the time from the fault to the typed error and what the error names:

* a rank killed mid-call (``ray.kill`` while every rank sleeps 60 s): ``WorkerDiedError``;
* a hung call under a 1 s deadline: ``CallTimeoutError`` naming the pending ranks;
* a raising method: ``RemoteMethodError`` (then the same group answers a call);
* a raising constructor: ``WorkerStartError`` naming the rank.

On the in-process backend, with real (tiny) training: how long refusing an incompatible resume
and a reused run directory takes (both before any worker starts). Writes
``benchmarks/results/failures.json``::

    .venv/bin/python benchmarks/bench_failures.py
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ppo import ConfigError, PPOTrainer, load_config  # noqa: E402
from runtime import (  # noqa: E402
    Dispatch,
    ResourcePool,
    WorkerGroup,
    WorkerSpec,
    current_context,
    register,
)
from runtime.errors import RuntimeErrorBase, WorkerError  # noqa: E402
from runtime.testing import InProcessBackend  # noqa: E402
from runtime_ray import RayBackend, RayWorker  # noqa: E402


class Victim:
    """Sleeps, raises, echoes; ``fail_rank`` makes one rank's constructor raise."""

    def __init__(self, fail_rank: int = -1) -> None:
        if current_context().rank == fail_rank:
            raise RuntimeError("constructor failed on purpose")

    @register(Dispatch.ONE_TO_ALL)
    def sleep(self, seconds: float) -> float:
        time.sleep(seconds)
        return seconds

    @register(Dispatch.ONE_TO_ALL)
    def echo(self, x: int) -> int:
        return x

    @register(Dispatch.ONE_TO_ALL)
    def fail(self) -> None:
        raise ValueError("method failed on purpose")


def _timed(fn: Callable[[], object]) -> tuple[float, BaseException | None]:
    start = time.monotonic()
    try:
        fn()
    except BaseException as exc:  # the error is what is measured
        return time.monotonic() - start, exc
    return time.monotonic() - start, None


def _describe(seconds: float, exc: BaseException | None) -> dict[str, Any]:
    out: dict[str, Any] = {"seconds": round(seconds, 3), "error": type(exc).__name__}
    if isinstance(exc, WorkerError):
        out.update(role=exc.role, rank=exc.rank, method=exc.method)
    if isinstance(exc, RuntimeErrorBase) and hasattr(exc, "pending_ranks"):
        out["pending_ranks"] = list(exc.pending_ranks)
    return out


def ray_cases(backend: RayBackend) -> dict[str, Any]:
    pool = ResourcePool.create([4])
    results: dict[str, Any] = {}
    group = WorkerGroup(backend, WorkerSpec.of(Victim), pool, role="victim", timeout=120)
    try:
        future = group.submit(Victim.sleep, 60.0)
        time.sleep(0.5)
        victim = group.workers[2]
        assert isinstance(victim, RayWorker)
        threading.Timer(0.0, ray.kill, args=(victim.actor,)).start()
        results["rank_killed_mid_call"] = _describe(*_timed(lambda: future.get(timeout=60)))
    finally:
        group.shutdown()
    group = WorkerGroup(backend, WorkerSpec.of(Victim), pool, role="victim", timeout=120)
    try:  # a hung group stays hung (calls are not cancelled): a fresh group for the next case
        hung = _timed(lambda: group.with_timeout(1.0).call(Victim.sleep, 30.0))
        results["hung_call_1s_deadline"] = _describe(*hung)
    finally:
        group.shutdown()
    group = WorkerGroup(backend, WorkerSpec.of(Victim), pool, role="victim", timeout=120)
    try:
        raised = _describe(*_timed(lambda: group.call(Victim.fail)))
        raised["group_usable_after"] = group.call(Victim.echo, 7) == [7] * 4
        results["raising_method"] = raised
    finally:
        group.shutdown()
    start = _timed(
        lambda: WorkerGroup(
            backend, WorkerSpec.of(Victim, fail_rank=1), pool, role="victim", timeout=120
        )
    )
    results["raising_constructor"] = _describe(*start)
    return results


def trainer_cases() -> dict[str, Any]:
    tiny = [
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
        "trainer.total_steps=2",
        "trainer.save_freq=2",
        "trainer.progress=false",
    ]
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        run = f"trainer.run_dir={os.path.join(tmp, 'run')!r}"
        with PPOTrainer(backend=InProcessBackend(), config=load_config(None, [*tiny, run])) as t:
            t.fit()
        for name, extra in (
            ("resume_with_other_model", ["model.config.hidden_size=64", "trainer.total_steps=3"]),
            ("fresh_run_in_used_dir", ["trainer.resume='off'"]),
        ):
            cfg = load_config(None, [*tiny, run, *extra])
            trainer = PPOTrainer(backend=InProcessBackend(), config=cfg)
            seconds, exc = _timed(trainer.fit)
            assert isinstance(exc, ConfigError), exc
            results[name] = {
                "seconds": round(seconds, 4),
                "error": type(exc).__name__,
                "workers_started": trainer.actor is not None,
            }
    return results


def main() -> None:
    backend = RayBackend(num_cpus=4)
    results: dict[str, Any] = {}
    try:
        results["ray"] = ray_cases(backend)
    finally:
        backend.shutdown()
    results["trainer"] = trainer_cases()
    results["load_average"] = list(os.getloadavg())
    print(json.dumps(results, indent=2))
    out = REPO / "benchmarks" / "results" / "failures.json"
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
