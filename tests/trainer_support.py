"""Tiny trainer configurations shared by the trainer tests (in-process and Ray)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from tokenizers import Regex, decoders, models, pre_tokenizers, processors
from tokenizers import Tokenizer as RawTokenizer
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)

from ppo import PPOConfig, load_config
from ppo.lm import build_policy
from ppo.tokenizer import Tokenizer, load_tokenizer

TINY = [
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
    "warmup.batch_size=8",
    "trainer.total_steps=3",
    "trainer.test_freq=2",
    "trainer.save_freq=2",
    "trainer.progress=false",
]

#: Metrics that are measurements of time, not of training; excluded from equality checks.
TIMING_PREFIXES = ("timing_s/", "perf/")


def tiny_config(run_dir: Path, extra: Sequence[str] = ()) -> PPOConfig:
    return load_config(None, [*TINY, f"trainer.run_dir={str(run_dir)!r}", *extra])


def training_values(row: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in row.items() if not k.startswith(TIMING_PREFIXES)}


def varied_reward(response: str, example: object) -> float:
    """A dense plug-in reward in [0, 1) that differs between almost any two responses, so the
    samples of one prompt disagree and tiny runs get non-zero advantages and gradients."""
    return (sum(map(ord, response)) % 11) / 11


def digit_tokenizer() -> PreTrainedTokenizerFast:
    """A user's own Hugging Face tokenizer: digits and ``+=`` only, BOS and EOS but **no pad
    token** (the trainer pads with EOS), and no chat template."""
    chars = "0123456789+="
    vocab = {"<s>": 0, "</s>": 1, "<unk>": 2, **{c: 3 + i for i, c in enumerate(chars)}}
    raw = RawTokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    raw.decoder = decoders.Fuse()
    raw.add_special_tokens(["<s>", "</s>", "<unk>"])
    raw.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    return PreTrainedTokenizerFast(
        tokenizer_object=raw, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


def save_tiny_model(directory: Path, *, hidden_size: int = 32, seed: int = 5) -> Path:
    """A tiny Qwen2-architecture model and the shipped tokenizer, written with
    ``save_pretrained`` into ``directory`` (what a user's ``model.path`` points at)."""
    tok = load_tokenizer(None)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(
        AutoConfig.for_model(
            "qwen2",
            vocab_size=tok.vocab_size,
            hidden_size=hidden_size,
            intermediate_size=2 * hidden_size,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            max_position_embeddings=64,
            tie_word_embeddings=True,
            eos_token_id=tok.eos_id,
            pad_token_id=tok.pad_id,
        )
    )
    model.save_pretrained(str(directory))
    tok.save_pretrained(directory)
    return directory


def tiny_policy(tok: Tokenizer, *, seed: int = 0) -> PreTrainedModel:
    """The default architecture, shrunk, randomly initialised on the CPU (as the trainer
    builds it from ``model.config``)."""
    section = load_config(None, TINY).model
    return build_policy(
        section,
        vocab_size=tok.vocab_size,
        special_ids={"eos_token_id": tok.eos_id, "pad_token_id": tok.pad_id},
        max_positions=32,
        seed=seed,
        device=torch.device("cpu"),
    )
