"""The trainer on users' Hugging Face pieces: a saved model directory, the export a HF user
loads, chat prompts, a batch scorer with metadata, a user worker class, and bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from ppo import ActorRolloutWorker, ConfigError, PPOTrainer
from ppo.metrics import read_metrics
from ppo.rollout import HFRolloutEngine, PromptBatch, SamplingParams
from ppo.tokenizer import HFTokenizer
from ppo.warmup import encode_prompts
from runtime import Batch, Dispatch, WorkerSpec, register
from runtime.testing import InProcessBackend
from tests.trainer_support import digit_tokenizer, save_tiny_model, tiny_config, varied_reward

REPO = Path(__file__).resolve().parents[1]


def test_trains_a_model_from_a_save_pretrained_directory(tmp_path: Path) -> None:
    model_dir = save_tiny_model(tmp_path / "model")
    cfg = tiny_config(tmp_path / "run", [f"model.path={str(model_dir)!r}", "trainer.total_steps=2"])
    with PPOTrainer(backend=InProcessBackend(), config=cfg, reward_fn=varied_reward) as trainer:
        history = trainer.fit()
        assert trainer.actor is not None
        kinds = trainer.actor.run_function(_model_kind)
    assert kinds == ["Qwen2ForCausalLM"]
    assert [r["step"] for r in history] == [0, 1, 2]
    before = AutoModelForCausalLM.from_pretrained(str(model_dir))
    after = AutoModelForCausalLM.from_pretrained(str(tmp_path / "run" / "hf_model"))
    changed = [
        not torch.equal(a, b) for a, b in zip(before.parameters(), after.parameters(), strict=True)
    ]
    assert any(changed), "training changed no weight"


def _model_kind(worker: ActorRolloutWorker) -> str:
    return type(worker.model).__name__


def test_an_exported_checkpoint_reproduces_the_trainers_greedy_output(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path / "run", ["trainer.total_steps=2"])
    prompts = ["1+2=", "7+8=", "3+3=", "9+1="]
    with PPOTrainer(backend=InProcessBackend(), config=cfg, reward_fn=varied_reward) as trainer:
        trainer.fit()
        assert trainer.actor is not None
        ours = trainer.actor.run_function(_greedy, prompts)[0]
    out = tmp_path / "exported"
    proc = _export(tmp_path / "run/checkpoints/step_2", out)
    assert proc.returncode == 0, proc.stderr
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in out.iterdir()}
    assert not (out / "optimizer.pt").exists()
    model = AutoModelForCausalLM.from_pretrained(str(out))
    tok = AutoTokenizer.from_pretrained(str(out))
    enc = tok(prompts, return_tensors="pt", padding=True)  # left padding, as saved
    gen = model.generate(**enc, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
    theirs = [tok.decode(r[enc["input_ids"].shape[1] :], skip_special_tokens=True) for r in gen]
    assert theirs == ours
    again = _export(tmp_path / "run/checkpoints/step_2", out)
    assert again.returncode == 2
    errors = [line for line in again.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert "exists and is not empty" in errors[0]
    assert "Traceback" not in again.stderr


def _export(checkpoint: Path, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rlrun", "export", str(checkpoint), str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def _greedy(worker: ActorRolloutWorker, prompts: list[str]) -> list[str]:
    ids, mask = encode_prompts(worker.tokenizer, prompts, 16)
    engine = HFRolloutEngine(
        worker.model,
        eos_id=worker.tokenizer.eos_id,
        pad_id=worker.tokenizer.pad_id,
        shares_weights=True,
    )
    out = engine.generate(
        PromptBatch(ids=ids, mask=mask, seeds=torch.zeros(len(prompts), dtype=torch.long)),
        SamplingParams(max_new_tokens=4, greedy=True),
    )
    return [worker.tokenizer.decode(r) for r in out.responses.tolist()]


def test_chat_prompts_from_jsonl_messages_with_metadata_reach_the_scorer(tmp_path: Path) -> None:
    rows = [
        {
            "messages": [
                {"role": "system", "content": "add"},
                {"role": "user", "content": f"{a}+1="},
            ],
            "answer": str(a + 1),
            "metadata": {"index": a},
        }
        for a in range(8)
    ]
    data = tmp_path / "chat.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    seen: list[object] = []

    class MetadataScorer:
        """A batch scorer: rewards a response by its length and records the metadata."""

        def score(self, batch: Batch) -> Batch:
            seen.extend(batch.non_tensors["metadata"].tolist())
            texts = batch.non_tensors["response_text"]
            score = torch.tensor([len(t) / 4 for t in texts], dtype=torch.float32)
            return Batch({"score": score, "acc": (score > 0.5).float()})

    cfg = tiny_config(
        tmp_path / "run",
        [
            "data.prompt_format='chat'",
            f"data.train_jsonl={str(data)!r}",
            f"data.val_jsonl={str(data)!r}",
            "data.max_prompt_len=16",
            "trainer.total_steps=1",
        ],
    )
    backend = InProcessBackend(copy_values=False)  # the scorer records into this test
    with PPOTrainer(backend=backend, config=cfg, scorer=MetadataScorer()) as trainer:
        assert trainer.train_examples[0].messages is not None
        row = trainer.fit()[-1]
    assert {"index": 0} in seen
    assert all(isinstance(m, dict) and "index" in m for m in seen)
    assert "val-core/chat/acc/mean@1" in row
    assert 0.0 <= row["critic/score/mean"] <= 1.0


class CountingActor(ActorRolloutWorker):
    """A user's actor: the trainer's, plus a count of generate calls."""

    generated = 0

    @register(Dispatch.DP_COMPUTE_PROTO)  # an override is registered again, like the original
    def generate(self, batch: Batch) -> Batch:
        type(self).generated += 1
        return super().generate(batch)


def test_a_user_subclass_replaces_the_actor(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, ["trainer.total_steps=1", "trainer.test_freq=0"])
    tok = HFTokenizer(AutoTokenizer.from_pretrained(str(REPO / "ppo" / "assets" / "tokenizer")))
    spec = WorkerSpec.of(CountingActor, cfg, tok)
    backend = InProcessBackend(copy_values=False)
    with PPOTrainer(backend=backend, config=cfg, actor_spec=spec, tokenizer=tok) as trainer:
        trainer.fit()
    assert CountingActor.generated == 1
    with pytest.raises(TypeError, match=r"not a subclass of ppo\.ActorRolloutWorker"):
        PPOTrainer(backend=backend, config=cfg, actor_spec=WorkerSpec.of(dict))


def _nothing_written(run_dir: Path) -> bool:
    return not run_dir.exists() or not any(run_dir.iterdir())


def test_a_tokenizer_that_does_not_fit_the_model_is_refused(tmp_path: Path) -> None:
    model_dir = save_tiny_model(tmp_path / "model")  # the shipped tokenizer's 103 ids
    run = tmp_path / "run"
    cfg = tiny_config(run, [f"model.path={str(model_dir)!r}"])
    with pytest.raises(ConfigError, match=r"model\.path: .*103 rows but the tokenizer has only 15"):
        PPOTrainer(backend=InProcessBackend(), config=cfg, tokenizer=digit_tokenizer())
    assert _nothing_written(run)


def test_chat_format_needs_a_chat_template(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path / "run", ["data.prompt_format='chat'"])
    with pytest.raises(ConfigError, match=r"data\.prompt_format = 'chat' needs .*chat template"):
        PPOTrainer(backend=InProcessBackend(), config=cfg, tokenizer=digit_tokenizer())
    assert _nothing_written(tmp_path / "run")


def test_malformed_messages_name_the_line(tmp_path: Path) -> None:
    data = tmp_path / "bad.jsonl"
    good = {"messages": [{"role": "user", "content": "1+1="}], "answer": "2"}
    bad = {"messages": [{"role": "user", "text": "1+1="}], "answer": "2"}
    data.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    cfg = tiny_config(tmp_path / "run", [f"data.train_jsonl={str(data)!r}"])
    with pytest.raises(ConfigError, match=r"bad\.jsonl:2: messages\[0\] = .* is malformed"):
        PPOTrainer(backend=InProcessBackend(), config=cfg)
    assert _nothing_written(tmp_path / "run")


def test_metrics_carry_verl_names(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, ["trainer.total_steps=1"])
    with PPOTrainer(backend=InProcessBackend(), config=cfg, reward_fn=varied_reward) as trainer:
        trainer.fit()
    row = read_metrics(tmp_path / "metrics.jsonl")[-1]
    for key in (
        "critic/score/mean",
        "critic/advantages/mean",
        "response_length/clip_ratio",
        "timing_s/gen",
        "timing_s/update_actor",
        "perf/throughput",
        "actor/pg_loss",
        "actor/grad_norm",
        "val/accuracy",
    ):
        assert key in row, key
    assert np.isfinite(row["perf/throughput"])


@pytest.mark.parametrize(
    "overrides",
    [
        ["model.dtype='bfloat16'"],
        ["model.gradient_checkpointing=true", "actor.micro_batch_size=3"],
        ["model.attn_implementation='eager'", "rollout.top_k=5", "rollout.top_p=0.9"],
    ],
    ids=["bf16", "checkpointing+micro", "eager+filters"],
)
def test_model_options_train(tmp_path: Path, overrides: list[str]) -> None:
    cfg = tiny_config(tmp_path, ["trainer.total_steps=1", "trainer.test_freq=0", *overrides])
    with PPOTrainer(backend=InProcessBackend(), config=cfg, reward_fn=varied_reward) as trainer:
        row = trainer.fit()[-1]
    assert np.isfinite(row["actor/pg_loss"])
    assert row["actor/grad_norm"] > 0
