"""Recovery on Ray with a real kill: an actor rank's process is SIGKILLed in the middle of a
two-rank (DDP over gloo) training run; the trainer replaces the dead ranks, re-forms
``torch.distributed``, reloads the last checkpoint and finishes, and the steps after the
restart equal an uninterrupted run resumed from that same checkpoint."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("ray")

from ppo import PPOTrainer
from ppo.metrics import read_metrics
from runtime_ray import RayBackend
from tests._ray_session import ray_backend
from tests.test_trainer_recovery import comparable
from tests.trainer_support import tiny_config, varied_reward

pytestmark = pytest.mark.ray

RUN = [
    "resources.actor_ranks=2",
    "trainer.total_steps=4",
    "trainer.save_freq=2",
    "trainer.keep_last=4",
    "trainer.test_freq=0",
]


@pytest.fixture(scope="module")
def backend() -> RayBackend:
    return ray_backend()


def _pid(worker: object) -> int:
    return os.getpid()


def test_a_killed_actor_rank_is_replaced_and_the_run_finishes(
    backend: RayBackend, tmp_path: Path
) -> None:
    times: dict[str, float] = {}
    holder: list[PPOTrainer] = []

    def on_step(row: dict[str, Any]) -> None:
        # After step 2 and its checkpoint, kill rank 1's process: step 3's update fails
        # (its first stages may be done already: fit starts them while step 2 finishes).
        if row["step"] == 2 and "killed" not in times:
            actor = holder[0].actor
            assert actor is not None
            pid = actor.run_function(_pid)[1]
            os.kill(pid, signal.SIGKILL)
            times["killed"] = time.monotonic()
        elif "killed" in times and "next_step" not in times:
            times["next_step"] = time.monotonic()

    run_a = tmp_path / "a"
    trainer = PPOTrainer(backend, tiny_config(run_a, RUN), reward_fn=varied_reward, on_step=on_step)
    holder.append(trainer)
    with trainer:
        history = trainer.fit()
    assert [r["step"] for r in history] == [1, 2, 3, 4]
    assert [r["step"] for r in read_metrics(run_a / "metrics.jsonl")] == [1, 2, 3, 4]
    assert [r["recovery/restarts"] for r in history] == [0, 0, 1, 1]
    assert trainer.summary["status"] == "completed"
    restart_s = history[2]["recovery/restart_s"]
    death_to_step_s = times["next_step"] - times["killed"]
    print(f"death -> next completed step: {death_to_step_s:.1f} s (metric: {restart_s:.1f} s)")
    assert 0 < restart_s <= death_to_step_s < 300

    # The uninterrupted run from the same checkpoint (a fresh trainer, fresh workers).
    resume = run_a / "checkpoints" / "step_2"
    run_b = tmp_path / "b"
    cfg_b = tiny_config(run_b, [*RUN, f"trainer.resume={str(resume)!r}"])
    with PPOTrainer(backend, cfg_b, reward_fn=varied_reward) as resumed:
        after = resumed.fit()
    assert [r["step"] for r in after] == [3, 4]
    for a, b in zip(history[2:], after, strict=True):
        expected = comparable(b)
        got = comparable(a)
        assert got.keys() == expected.keys()
        for key, value in expected.items():
            assert got[key] == pytest.approx(value, rel=1e-5, abs=1e-7), key
