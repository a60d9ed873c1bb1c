"""PPOTrainer on RayBackend: two data-parallel actor ranks (gloo) in separate processes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ppo import ActorRolloutWorker, PPOTrainer
from ppo.metrics import read_metrics
from ppo.pipeline import RolloutWorker, flat_weights
from runtime_ray import RayBackend
from tests.trainer_support import save_tiny_model, tiny_config, varied_reward

pytestmark = pytest.mark.ray


def test_grpo_with_two_data_parallel_ranks_on_ray(backend: RayBackend, tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, ["resources.actor_ranks=2", "trainer.total_steps=2"])
    with PPOTrainer(backend=backend, config=cfg, reward_fn=varied_reward) as trainer:
        history = trainer.fit()
        assert trainer.actor is not None
        assert trainer.actor.world_size == 2
        contexts = trainer.actor.contexts()
        assert [c.rank for c in contexts] == [0, 1]
        assert {c.world_size for c in contexts} == {2}
    rows = [r for r in history if r["step"] > 0]
    assert [r["step"] for r in rows] == [1, 2]
    assert all(r["actor/grad_norm"] > 0 for r in rows)
    assert (tmp_path / "checkpoints" / "step_2" / "actor" / "model.safetensors").is_file()
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [0, 1, 2]


def test_balanced_updates_match_unbalanced_ones(backend: RayBackend, tmp_path: Path) -> None:
    # trainer.balance_batch reorders the driver's columns and the ranks' futures of the rollout,
    # log-probs and values alike: the same rows reach the update, split differently over the 2
    # ranks, so with one mini-batch the all-reduced gradient (normalised by global token counts)
    # is the same. (With several mini-batches, balancing changes which rows share one.)
    first: dict[bool, dict[str, float]] = {}
    for balance in (False, True):
        cfg = tiny_config(
            tmp_path / str(balance),
            [
                "resources.actor_ranks=2",
                "algorithm.adv_estimator='gae'",
                "trainer.total_steps=1",
                "trainer.test_freq=0",
                "actor.mini_batches=1",
                "critic.mini_batches=1",
                f"trainer.balance_batch={str(balance).lower()}",
            ],
        )
        with PPOTrainer(backend=backend, config=cfg, reward_fn=varied_reward) as trainer:
            history = trainer.fit()
        first[balance] = history[-1]
    for key in ("actor/grad_norm", "critic/grad_norm", "critic/vf_loss"):
        assert first[True][key] == pytest.approx(first[False][key], rel=1e-4), key


def test_gae_with_roles_in_separate_processes(backend: RayBackend, tmp_path: Path) -> None:
    cfg = tiny_config(
        tmp_path,
        [
            "resources.colocate=false",
            "algorithm.adv_estimator='gae'",
            "trainer.total_steps=1",
            "trainer.test_freq=0",
        ],
    )
    with PPOTrainer(backend=backend, config=cfg, reward_fn=varied_reward) as trainer:
        history = trainer.fit()
        assert trainer.actor is not None
        assert trainer.critic is not None
        assert trainer.reward is not None
        pids = {
            trainer.actor.run_function(_pid)[0],
            trainer.critic.run_function(_pid)[0],
            trainer.reward.run_function(_pid)[0],
        }
    assert len(pids) == 3  # each role in its own process
    assert history[-1]["critic/vf_loss"] >= 0


def _pid(worker: object) -> int:
    import os

    return os.getpid()


def test_a_saved_hf_model_trains_with_ddp_on_ray(backend: RayBackend, tmp_path: Path) -> None:
    model_dir = save_tiny_model(tmp_path / "model")
    cfg = tiny_config(
        tmp_path / "run",
        [
            f"model.path={str(model_dir)!r}",
            "resources.actor_ranks=2",
            "actor.micro_batch_size=2",
            "trainer.total_steps=1",
            "trainer.test_freq=0",
        ],
    )
    with PPOTrainer(backend=backend, config=cfg, reward_fn=varied_reward) as trainer:
        row = trainer.fit()[-1]
        assert trainer.actor is not None
        kinds = trainer.actor.run_function(_model_kind)
        identical = trainer.actor.run_function(_first_weight)
    assert kinds == ["DistributedDataParallel", "DistributedDataParallel"]
    assert torch.equal(identical[0], identical[1])  # DDP kept the replicas in step
    assert row["actor/grad_norm"] > 0
    assert (tmp_path / "run" / "hf_model" / "config.json").is_file()


def _model_kind(worker: ActorRolloutWorker) -> str:
    dp = worker._dp
    return type(dp.model).__name__ if dp is not None else "none"


def _first_weight(worker: ActorRolloutWorker) -> torch.Tensor:
    return next(worker.model.parameters()).detach().clone()


def test_async_rollouts_in_their_own_process_get_the_weights(
    backend: RayBackend, tmp_path: Path
) -> None:
    cfg = tiny_config(
        tmp_path,
        [
            "trainer.mode='async'",
            "async.max_staleness=1",
            "trainer.total_steps=3",
            "trainer.test_freq=0",
        ],
    )
    with PPOTrainer(backend=backend, config=cfg, reward_fn=varied_reward) as trainer:
        rows = trainer.fit()
        assert trainer.actor is not None
        assert trainer.rollout is not None
        actor_pid = trainer.actor.run_function(_pid)[0]
        rollout_pid = trainer.rollout.run_function(_pid)[0]
        actor_w = trainer.actor.run_function(_actor_flat)[0]
        rollout_w, version = trainer.rollout.run_function(_rollout_flat)[0]
    assert actor_pid != rollout_pid
    assert [r["async/staleness_max"] for r in rows] == [0.0, 1.0, 1.0]
    assert version == 3
    assert torch.equal(actor_w, rollout_w)  # the last update reached the rollout worker


def _actor_flat(worker: ActorRolloutWorker) -> torch.Tensor:
    return flat_weights(worker.model)


def _rollout_flat(worker: RolloutWorker) -> tuple[torch.Tensor, int]:
    return flat_weights(worker.engine.model), worker.engine.weights_version
