"""Resume refuses a checkpoint written with another model, tokenizer or parallel layout, before
any worker starts, naming each differing field with its old and new value."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from ppo import PPOTrainer
from ppo.resume_check import ResumeMismatchError, check_resume, must_match
from runtime.testing import InProcessBackend
from tests.trainer_support import digit_tokenizer, tiny_config, varied_reward


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory with a step-2 checkpoint written by a real (tiny) training run."""
    run = tmp_path_factory.mktemp("trained")
    cfg = tiny_config(run, ["trainer.total_steps=2"])
    with PPOTrainer(backend=InProcessBackend(), config=cfg, reward_fn=varied_reward) as t:
        t.fit()
    return run


def _snapshot(run_dir: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}


def test_the_checkpoint_stores_the_resolved_config(trained: Path) -> None:
    meta = json.loads((trained / "checkpoints" / "step_2" / "meta.json").read_text())
    assert meta["config"]["model"]["config"]["hidden_size"] == 32
    assert meta["config"]["trainer"]["run_dir"] == str(trained)
    assert meta["tokenizer_in_use"] == {"class": "ppo.tokenizer.HFTokenizer", "vocab_size": 103}
    assert meta["step"] == 2
    assert meta["run_id"]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            ["model.config.hidden_size=64"],
            ["model.config.hidden_size: 32 in the checkpoint, 64 now"],
        ),
        (
            ["model.config.num_hidden_layers=2", "data.max_response_len=5"],
            [
                "data.max_response_len: 4 in the checkpoint, 5 now",
                "model.config.num_hidden_layers: 1 in the checkpoint, 2 now",
            ],
        ),
        (
            ["resources.colocate=false", "resources.critic_ranks=2"],
            ["resources.critic_ranks: 1 in the checkpoint, 2 now"],
        ),
    ],
)
def test_an_incompatible_config_is_refused_before_workers_start(
    trained: Path, overrides: list[str], expected: list[str]
) -> None:
    before = _snapshot(trained)
    cfg = tiny_config(trained, ["trainer.total_steps=3", *overrides])
    trainer = PPOTrainer(backend=InProcessBackend(), config=cfg, reward_fn=varied_reward)
    t0 = time.perf_counter()
    with pytest.raises(ResumeMismatchError) as info:
        trainer.fit()
    assert time.perf_counter() - t0 < 1.0  # no worker was started, no weights loaded
    assert trainer.actor is None
    message = str(info.value)
    assert "step_2" in message
    for line in expected:
        assert line in message
    assert message.count(" in the checkpoint, ") == len(expected)
    assert _snapshot(trained) == before


def test_a_different_tokenizer_object_is_refused(trained: Path) -> None:
    cfg = tiny_config(trained, ["trainer.total_steps=3"])
    trainer = PPOTrainer(backend=InProcessBackend(), config=cfg, tokenizer=digit_tokenizer())
    with pytest.raises(ResumeMismatchError, match=r"tokenizer_in_use\.vocab_size: 103 .*, 15 now"):
        trainer.init_workers()


def test_settings_that_do_not_change_the_weights_may_differ(trained: Path, tmp_path: Path) -> None:
    run = tmp_path / "copy"
    shutil.copytree(trained, run)
    cfg = tiny_config(
        run,
        [
            "trainer.total_steps=3",
            "actor.lr=1e-4",
            "rollout.n=2",
            "model.gradient_checkpointing=true",
            "model.attn_implementation='eager'",
        ],
    )
    with PPOTrainer(backend=InProcessBackend(), config=cfg, reward_fn=varied_reward) as t:
        rows = t.fit()
    assert [r["step"] for r in rows] == [3]


def test_fields_compared_by_dotted_path() -> None:
    for path in (
        "model.path",
        "model.config.hidden_size",
        "tokenizer.path",
        "critic.model.path",
        "resources.actor_ranks",
        "resources.rollout_ranks",
        "data.max_prompt_len",
        "data.max_response_len",
    ):
        assert must_match(path), path
    for path in (
        "actor.lr",
        "critic.lr",
        "resources.colocate",
        "data.train_size",
        "trainer.seed",
        "model.dtype",
        "model.gradient_checkpointing",
        "critic.model.attn_implementation",
    ):
        assert not must_match(path), path
    saved = {"model": {"path": "a", "revision": "r1"}, "resources": {"actor_ranks": 2}}
    current = {"model": {"path": "b"}, "resources": {"actor_ranks": 2}, "critic": {"lr": 1.0}}
    with pytest.raises(ResumeMismatchError) as info:
        check_resume(saved, current, Path("ckpt"))
    assert "model.revision: 'r1' in the checkpoint, '<absent>' now" in str(info.value)
    assert "model.path: 'a' in the checkpoint, 'b' now" in str(info.value)
    check_resume(saved, {**saved, "actor": {"lr": 2.0}}, Path("ckpt"))
