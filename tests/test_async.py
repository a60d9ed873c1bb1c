"""Asynchronous training (``trainer.mode = "async"``): the staleness bound under random delays,
``max_staleness = 0`` equals the synchronous run, weights are versioned, and resume keeps the
data position. In-process backend (Ray: tests/ray/test_trainer_ray.py)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import torch

from ppo import ConfigError, PPOTrainer, load_config
from ppo.checkpoint import CheckpointManager
from ppo.pipeline import flat_weights, load_flat
from ppo.tokenizer import load_tokenizer
from runtime.testing import InProcessBackend
from tests.trainer_support import tiny_config, tiny_policy, training_values, varied_reward

ASYNC = ["trainer.mode='async'"]


def _fit(run_dir: Path, extra: list[str], backend: InProcessBackend | None = None) -> list[Any]:
    cfg = tiny_config(run_dir, ["trainer.total_steps=4", *extra])
    with PPOTrainer(
        backend=backend or InProcessBackend(), config=cfg, reward_fn=varied_reward
    ) as trainer:
        return trainer.fit()


def _training(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in training_values(row).items() if not k.startswith(("async/", "tis/"))}


def test_max_staleness_zero_reproduces_the_synchronous_run(tmp_path: Path) -> None:
    sync = _fit(tmp_path / "sync", [])
    on_policy = _fit(tmp_path / "async0", [*ASYNC, "async.max_staleness=0"])
    assert [_training(r) for r in on_policy] == [_training(r) for r in sync]
    assert all(r["async/staleness_max"] == 0 for r in on_policy if r["step"] > 0)


@pytest.mark.parametrize("staleness", [1, 2])
def test_the_staleness_bound_holds_under_random_delays(tmp_path: Path, staleness: int) -> None:
    backend = InProcessBackend()
    rng = random.Random(staleness)
    for method in ("generate", "update_policy", "load_weights", "compute_log_prob"):
        for _ in range(3):
            backend.faults.slow(seconds=rng.uniform(0.0, 0.05), method=method)
    rows = _fit(
        tmp_path,
        [*ASYNC, f"async.max_staleness={staleness}", "trainer.total_steps=5"],
        backend,
    )
    steps = [r for r in rows if r["step"] > 0]
    assert all(r["async/staleness_max"] <= staleness for r in steps)
    assert max(r["async/staleness_max"] for r in steps) == staleness  # the pipeline ran ahead
    assert all(0.0 < r["tis/weight_mean"] <= 2.0 for r in steps)
    assert all(r["actor/grad_norm"] >= 0 for r in steps)


def test_resume_keeps_the_data_position_of_the_next_step(tmp_path: Path) -> None:
    # Steps 3 and 4 are in flight when step 2's checkpoint is written (staleness 2).
    _fit(tmp_path / "a", [*ASYNC, "async.max_staleness=2", "trainer.save_freq=2"])
    state = CheckpointManager.load_trainer_state(tmp_path / "a" / "checkpoints" / "step_2")
    assert state["sampler"] == {"epoch": 0, "pos": 2 * 4}  # 2 steps x 4 prompts, not 4 steps
    resumed = _fit(
        tmp_path / "b",
        [*ASYNC, "async.max_staleness=2", "trainer.save_freq=2", "trainer.total_steps=2"],
    )
    assert resumed[-1]["step"] == 2
    more = _fit(tmp_path / "b", [*ASYNC, "async.max_staleness=2", "trainer.save_freq=2"])
    assert [r["step"] for r in more] == [3, 4]
    assert more[0]["async/staleness_max"] == 0  # the fresh pipeline starts from version 2


def test_weights_round_trip_through_the_flat_layout() -> None:
    tok = load_tokenizer(None)
    a, b = tiny_policy(tok, seed=1), tiny_policy(tok, seed=2)
    b.load_state_dict(dict(load_flat(b, flat_weights(a))))
    for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y)
    with pytest.raises(ValueError, match="do not fit"):
        load_flat(b, torch.zeros(3))


def test_async_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"trainer\.mode"):
        load_config(None, ["trainer.mode='later'"])
    with pytest.raises(ConfigError, match=r"async\.max_staleness"):
        load_config(None, ["async.max_staleness=-1"])
    with pytest.raises(ConfigError, match=r"trainer\.mode = 'async' .*remax"):
        load_config(None, [*ASYNC, "algorithm.adv_estimator='remax'"])
    with pytest.raises(ConfigError, match=r"algorithm\.is_cap"):
        load_config(None, ["algorithm.is_cap=0"])
