"""Recovery without restarting the job (``trainer.max_restarts``, :mod:`ppo.recovery`), on
the in-process backend: a rank death injected during a step is recovered from the last
checkpoint, and the steps trained after it equal an uninterrupted run's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ppo import ConfigError, PPOTrainer
from ppo.metrics import read_metrics
from runtime.errors import WorkerDiedError
from runtime.testing import InProcessBackend
from tests.trainer_support import tiny_config, training_values, varied_reward

RUN = ["trainer.total_steps=4", "trainer.save_freq=2", "trainer.test_freq=0"]


def comparable(row: dict[str, Any]) -> dict[str, Any]:
    """A row's training values, without the recovery counters."""
    return {k: v for k, v in training_values(row).items() if not k.startswith("recovery/")}


def run(
    run_dir: Path, extra: list[str], die_after: int | None, method: str = "generate"
) -> tuple[PPOTrainer, list[Any]]:
    """Train; after step ``die_after`` (the first time) the actor's rank 0 dies on the next
    ``method`` call that reaches it (``0``: from the start). ``fit`` starts each step while
    the previous one's update runs, so after step ``k`` the next ``generate`` to arrive is
    step ``k + 2``'s."""
    backend = InProcessBackend()
    armed: list[bool] = []

    def on_step(row: dict[str, Any]) -> None:
        if row["step"] == die_after and not armed:
            armed.append(True)
            backend.faults.die(0, role="actor", method=method)

    if die_after == 0:
        on_step({"step": 0})
    trainer = PPOTrainer(
        backend, tiny_config(run_dir, [*RUN, *extra]), reward_fn=varied_reward, on_step=on_step
    )
    with trainer:
        history = trainer.fit()
    return trainer, history


def test_a_rank_death_mid_run_is_recovered_from_the_last_checkpoint(tmp_path: Path) -> None:
    _, straight = run(tmp_path / "straight", [], die_after=None)
    trainer, history = run(tmp_path / "recovered", [], die_after=2)
    # Died in step 4's rollout (started while step 3 updated); recovered from step_2; steps 3
    # and 4 trained again.
    assert [r["step"] for r in history] == [1, 2, 3, 4]
    rows = read_metrics(tmp_path / "recovered" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert [r["recovery/restarts"] for r in history] == [0, 0, 1, 1]
    assert history[2]["recovery/restart_s"] > 0
    assert "recovery/restart_s" not in history[3]
    assert trainer.summary["status"] == "completed"
    for a, b in zip(straight, history, strict=True):
        assert comparable(a) == comparable(b)


def test_without_restarts_left_the_death_ends_the_run(tmp_path: Path) -> None:
    with pytest.raises(WorkerDiedError) as info:
        run(tmp_path / "r", ["trainer.max_restarts=0"], die_after=2)
    # The rollout's result stays a future; the first call the driver waits on is the
    # reward's, which shares rank 0's (dead) process with the actor in this layout.
    assert info.value.rank == 0
    assert (info.value.role, info.value.method) in {
        ("actor", "generate"),
        ("reward", "compute_score"),
    }
    summary = read_summary(tmp_path / "r")
    assert summary["status"] == "failed"


def test_a_death_before_the_first_checkpoint_ends_the_run(tmp_path: Path) -> None:
    with pytest.raises(WorkerDiedError):
        # Dies in step 1's update; the first checkpoint is step 2's.
        run(tmp_path / "r", [], die_after=0, method="update_policy")
    assert read_metrics(tmp_path / "r" / "metrics.jsonl") == []


def test_max_restarts_must_not_be_negative(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"trainer\.max_restarts"):
        tiny_config(tmp_path, ["trainer.max_restarts=-1"])


def read_summary(run_dir: Path) -> dict[str, Any]:
    import json

    summary: dict[str, Any] = json.loads((run_dir / "summary.json").read_text())
    return summary
