"""PPOTrainer end to end on the in-process backend (tiny configs), config errors, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Mapping
from pathlib import Path

import pytest

from ppo import ActorRolloutWorker, ConfigError, PPOTrainer, StepInFlightError, load_config
from ppo.metrics import read_metrics
from ppo.tokenizer import PromptCache
from ppo.trackers import CallbackTracker
from runtime.testing import InProcessBackend
from tests.trainer_support import (
    digit_tokenizer,
    tiny_config,
    training_values,
    varied_reward,
)

REPO = Path(__file__).resolve().parents[1]


def test_grpo_trains_end_to_end_and_writes_outputs(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path)
    backend = InProcessBackend()
    with PPOTrainer(backend=backend, config=cfg, reward_fn=varied_reward) as trainer:
        history = trainer.fit()
    train_rows = [r for r in history if r["step"] > 0]
    assert [r["step"] for r in train_rows] == [1, 2, 3]
    for row in train_rows:
        assert 0.0 < row["critic/score/mean"] <= 1.0
        assert row["timing_s/step"] > 0
        assert 0.0 <= row["response_length/clip_ratio"] <= 1.0
        assert "actor/pg_clipfrac" in row
    assert max(row["actor/grad_norm"] for row in train_rows) > 0  # real gradients flowed
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0, 1, 2, 3]
    assert {r["step"] for r in rows if "val/accuracy" in r} == {0, 2, 3}
    assert (tmp_path / "reward_curve.png").stat().st_size > 1000
    latest = (tmp_path / "checkpoints" / "latest").read_text().strip()
    assert latest == "step_3"
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "latest",
        "step_2",
        "step_3",
    ]
    actor_dir = tmp_path / "checkpoints" / "step_3" / "actor"
    assert (actor_dir / "model.safetensors").is_file()
    assert (actor_dir / "config.json").is_file()
    assert (tmp_path / "checkpoints" / "step_3" / "tokenizer" / "tokenizer.json").is_file()
    assert (tmp_path / "hf_model" / "model.safetensors").is_file()


def test_gae_with_critic_and_kl_trains(tmp_path: Path) -> None:
    cfg = tiny_config(
        tmp_path,
        [
            "algorithm.adv_estimator='gae'",
            "algorithm.use_kl_in_reward=true",
            "algorithm.kl_ctrl='adaptive'",
            "actor.use_kl_loss=true",
            "actor.entropy_coeff=0.01",
            "trainer.save_freq=3",
        ],
    )
    with PPOTrainer(backend=InProcessBackend(), config=cfg) as trainer:
        history = trainer.fit()
    last = history[-1]
    assert last["critic/vf_loss"] >= 0
    assert "critic/vf_clipfrac" in last
    assert "kl/coef" in last
    assert "actor/kl_loss" in last
    assert "actor/reward_kl_penalty" in last
    step3 = tmp_path / "checkpoints" / "step_3"
    assert (step3 / "critic" / "model.safetensors").is_file()
    assert (step3 / "actor" / "reference.safetensors").is_file()


def test_data_parallel_needs_one_process_per_rank(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, ["resources.actor_ranks=2"])
    trainer = PPOTrainer(backend=InProcessBackend(), config=cfg)
    with pytest.raises(ConfigError, match=r"resources\.actor_ranks = 2.*one process per rank"):
        trainer.init_workers()


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("actor.lr=-1", "actor.lr"),
        ("actor.clip_c=0.5", "actor.clip_c"),
        ("algorithm.adv_estimator='nope'", "algorithm.adv_estimator"),
        ("trainer.total_steps='many'", "trainer.total_steps"),
        ("rollout.n=0", "rollout.n"),
        ("actor.mini_batches=7", "actor.mini_batches"),
        ("model.dtype='float16'", "model.dtype"),
        ("model.attn_implementation='magic'", "model.attn_implementation"),
        ("rollout.top_p=0", "rollout.top_p"),
        ("data.prompt_format='xml'", "data.prompt_format"),
        ("model.path='/nonexistent/model'", "model.path"),
    ],
)
def test_config_errors_name_the_field(override: str, field: str) -> None:
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_config(None, [override])


def test_config_rejects_unknown_fields_and_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"actor\.nope"):
        load_config(None, ["actor.nope=1"])
    with pytest.raises(ConfigError, match=r"section\.field=value"):
        load_config(None, ["justtext"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[actor\nlr = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


_CRASHING_RUN = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from ppo import PPOTrainer
    from runtime.testing import InProcessBackend
    from tests.trainer_support import tiny_config

    run_dir, crash_at, steps = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    cfg = tiny_config(run_dir, [f"trainer.total_steps={steps}", "trainer.save_freq=2"])

    def on_step(row):
        if row["step"] == crash_at:
            os._exit(137)  # a hard kill: no cleanup, no final checkpoint

    PPOTrainer(backend=InProcessBackend(), config=cfg, on_step=on_step).fit()
    """
)


def _run(script_args: list[str]) -> int:
    proc = subprocess.run(
        [sys.executable, "-c", _CRASHING_RUN, *script_args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if proc.returncode not in (0, 137):
        raise AssertionError(proc.stderr[-3000:])
    return proc.returncode


def test_kill_and_resume_reproduces_the_uninterrupted_run(tmp_path: Path) -> None:
    straight, crashed = tmp_path / "straight", tmp_path / "crashed"
    assert _run([str(straight), "0", "4"]) == 0
    # Killed during step 3, after the step-2 checkpoint; then resumed ("auto") to step 4.
    assert _run([str(crashed), "3", "4"]) == 137
    assert (crashed / "checkpoints" / "latest").read_text().strip() == "step_2"
    assert _run([str(crashed), "0", "4"]) == 0
    a = {r["step"]: training_values(r) for r in read_metrics(straight / "metrics.jsonl")}
    b = {r["step"]: training_values(r) for r in read_metrics(crashed / "metrics.jsonl")}
    assert sorted(b) == [0, 1, 2, 3, 4]
    for step in (3, 4):
        assert json.dumps(a[step], sort_keys=True) == json.dumps(b[step], sort_keys=True)


def test_prompts_from_local_jsonl_files(tmp_path: Path) -> None:
    lines = [
        {"prompt": f"{a}+{a}=", "answer": str(2 * a), "data_source": "double"} for a in range(8)
    ]
    train, val = tmp_path / "train.jsonl", tmp_path / "val.jsonl"
    train.write_text("".join(json.dumps(x) + "\n" for x in lines))
    val.write_text("".join(json.dumps(x) + "\n" for x in lines[:4]))
    cfg = tiny_config(
        tmp_path / "run",
        [
            f"data.train_jsonl={str(train)!r}",
            f"data.val_jsonl={str(val)!r}",
            "trainer.total_steps=2",
        ],
    )
    with PPOTrainer(backend=InProcessBackend(), config=cfg) as trainer:
        assert [e.prompt for e in trainer.train_examples][:2] == ["0+0=", "1+1="]
        history = trainer.fit()
    assert "val-core/double/acc/mean@1" in history[-1]


@pytest.mark.parametrize("estimator", ["remax", "rloo", "reinforce_plus_plus_baseline"])
def test_other_estimators_train(tmp_path: Path, estimator: str) -> None:
    cfg = tiny_config(tmp_path, [f"algorithm.adv_estimator={estimator!r}", "trainer.total_steps=1"])
    with PPOTrainer(backend=InProcessBackend(), config=cfg, reward_fn=varied_reward) as t:
        row = t.fit()[-1]
    assert row["actor/grad_norm"] > 0
    assert ("reward/greedy_baseline_mean" in row) == (estimator == "remax")


def test_a_user_tokenizer_replaces_the_built_in_one(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, ["trainer.total_steps=1"])
    tok = digit_tokenizer()
    assert tok.pad_token_id is None  # the trainer pads with EOS
    with PPOTrainer(backend=InProcessBackend(), config=cfg, tokenizer=tok) as trainer:
        row = trainer.fit()[-1]
        assert trainer.actor is not None
        vocab = trainer.actor.run_function(_vocab_size)
    assert vocab == [len(tok)]
    assert 0.0 <= row["critic/score/mean"] <= 1.0


def _vocab_size(worker: ActorRolloutWorker) -> int:
    return int(worker.model.config.vocab_size)


def test_the_prompt_cache_leaves_every_metric_unchanged(tmp_path: Path) -> None:
    """A short run tokenizing every prompt at every draw and one through the trainer's
    ``PromptCache`` log the same metrics (timings aside), validation included."""
    rows = []
    for name, cached in (("plain", False), ("cached", True)):
        cfg = tiny_config(tmp_path / name, ["trainer.save_freq=0"])
        with PPOTrainer(backend=InProcessBackend(), config=cfg) as trainer:
            if not cached:
                trainer._prompt_ids = trainer.tokenizer.encode_prompt
            rows.append([training_values(r) for r in trainer.fit()])
            if cached:
                cache = trainer._prompt_ids
                assert isinstance(cache, PromptCache)
                assert cache.hits > 0  # prompts were drawn again and served from the cache
    plain, cached_rows = rows
    assert len(plain) == cfg.trainer.total_steps + 1  # step 0 validation, then each step
    assert plain == cached_rows


@pytest.mark.parametrize(
    ("extra", "ranks_advantages"),
    [
        ([], True),
        (["algorithm.adv_estimator='rloo'", "actor.use_kl_loss=true"], True),
        (
            [
                "algorithm.adv_estimator='gae'",
                "algorithm.use_kl_in_reward=true",
                "algorithm.kl_ctrl='adaptive'",
                "actor.use_kl_loss=true",
            ],
            False,
        ),
        (["algorithm.adv_estimator='remax'"], False),
    ],
    ids=["grpo", "rloo-kl-loss", "gae-critic-kl", "remax"],
)
def test_pipelined_steps_train_exactly_as_one_stage_at_a_time(
    tmp_path: Path, extra: list[str], ranks_advantages: bool
) -> None:
    """With ``trainer.pipeline_steps`` (the default) ``fit`` submits step ``k + 1``'s
    rollout, scoring, log-probs and values while step ``k``'s update runs, and for group
    estimators the ranks compute the advantages, so each update is submitted with its step's
    first stages. Every metric equals a run with ``pipeline_steps=false`` stepped by
    ``train_step``, which starts nothing ahead and computes the advantages on the driver."""
    overrides = ["trainer.save_freq=0", "trainer.test_freq=0", *extra]
    ahead: list[tuple[int, bool] | None] = []

    def watch(row: Mapping[str, object]) -> None:
        nxt = fitting._ahead
        ahead.append(None if nxt is None else (nxt.step, nxt.updates is not None))

    cfg = tiny_config(tmp_path / "fit", overrides)
    steps = cfg.trainer.total_steps
    backend = InProcessBackend()
    trackers = [CallbackTracker(watch)]  # not on_step: it keeps every update in its own step
    with PPOTrainer(backend, cfg, reward_fn=varied_reward, trackers=trackers) as fitting:
        # fit's rows also count restarts (none here); train_step's do not.
        fitted = [{**training_values(r)} for r in fitting.fit()]
        assert fitting._ranks_advantages is ranks_advantages
    assert [r.pop("recovery/restarts") for r in fitted] == [0] * steps
    # Never past the last step; the update too where the ranks compute the advantages.
    assert ahead == [*((k, ranks_advantages) for k in range(2, steps + 1)), None]
    plain = tiny_config(tmp_path / "step", [*overrides, "trainer.pipeline_steps=false"])
    with PPOTrainer(backend, plain, reward_fn=varied_reward) as stepping:
        stepped = []
        for _ in range(steps):
            stepped.append(training_values(stepping.train_step()))
            assert stepping._ahead is None
        assert not stepping._ranks_advantages
    assert fitted == stepped
    grad_norm = fitted[-1]["actor/grad_norm"]
    assert isinstance(grad_norm, float)
    assert grad_norm > 0


@pytest.mark.parametrize(("save_freq", "stopped_at"), [(0, 3), (2, 2)])
def test_ctrl_c_finishes_a_step_whose_update_is_already_in_flight(
    tmp_path: Path, save_freq: int, stopped_at: int
) -> None:
    """Ctrl-C during step 2: with step 3's update already submitted (nothing between the
    steps) ``fit`` trains step 3 and stops, so the trainer's step is the policy's; when step 2
    checkpoints, nothing of step 3 but its rollout was started and ``fit`` stops at step 2."""
    overrides = [f"trainer.save_freq={save_freq}", "trainer.test_freq=0", "trainer.total_steps=5"]
    cfg = tiny_config(tmp_path, overrides)

    def ctrl_c(row: Mapping[str, object]) -> None:
        if row["step"] == 2:
            os.kill(os.getpid(), signal.SIGINT)  # fit's handler only sets a flag

    trainer = PPOTrainer(
        InProcessBackend(), cfg, reward_fn=varied_reward, trackers=[CallbackTracker(ctrl_c)]
    )
    with trainer, pytest.raises(KeyboardInterrupt):
        trainer.fit()
    assert trainer.step == stopped_at
    assert trainer._ahead is None or trainer._ahead.updates is None
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, stopped_at + 1))
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "interrupted"


def test_with_an_on_step_callback_no_update_starts_before_it(tmp_path: Path) -> None:
    """``on_step`` may checkpoint, validate or export: it sees its own step's policy, so
    ``fit`` starts only the next step's first stages before it, never the update."""
    cfg = tiny_config(tmp_path, ["trainer.save_freq=0", "trainer.test_freq=0"])
    seen: list[tuple[int, bool] | None] = []

    def on_step(row: dict[str, object]) -> None:
        nxt = trainer._ahead
        seen.append(None if nxt is None else (nxt.step, nxt.updates is not None))

    trainer = PPOTrainer(InProcessBackend(), cfg, reward_fn=varied_reward, on_step=on_step)
    with trainer:
        trainer.fit()
        assert trainer._ranks_advantages
    steps = cfg.trainer.total_steps
    assert seen == [*((k, False) for k in range(2, steps + 1)), None]


def test_a_checkpoint_waits_for_a_step_left_in_flight_by_an_exception(tmp_path: Path) -> None:
    """An exception out of ``fit`` (here a tracker's) can leave the next step's update in
    flight: checkpointing or exporting then would write step 3's policy as step 2's, so both
    are refused until ``train_step`` finishes step 3."""
    cfg = tiny_config(tmp_path, ["trainer.save_freq=0", "trainer.test_freq=0"])

    def stop(row: Mapping[str, object]) -> None:
        if row["step"] == 2:
            raise KeyboardInterrupt

    trainer = PPOTrainer(
        InProcessBackend(), cfg, reward_fn=varied_reward, trackers=[CallbackTracker(stop)]
    )
    with trainer:
        with pytest.raises(KeyboardInterrupt):
            trainer.fit()
        assert trainer.step == 2
        with pytest.raises(StepInFlightError, match=r"step 3's update.*train_step\(\)"):
            trainer.save_checkpoint()
        with pytest.raises(StepInFlightError, match="export_pretrained"):
            trainer.export_pretrained(tmp_path / "hf")
        assert trainer.train_step()["step"] == 3
        assert trainer.save_checkpoint().name == "step_3"
