"""Tiny trainer configurations shared by the trainer tests (in-process and Ray)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ppo import PPOConfig, load_config

TINY = [
    "model.d_model=32",
    "model.n_layers=1",
    "model.n_heads=2",
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
TIMING_PREFIXES = ("timing/", "perf/")


def tiny_config(run_dir: Path, extra: Sequence[str] = ()) -> PPOConfig:
    return load_config(None, [*TINY, f"trainer.run_dir={str(run_dir)!r}", *extra])


def training_values(row: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in row.items() if not k.startswith(TIMING_PREFIXES)}


def short_answer_reward(response: str, example: object) -> float:
    """A dense plug-in reward (shorter responses score higher) so tiny runs get gradients."""
    return 1.0 / (1.0 + len(response))


class DigitTokenizer:
    """A user tokenizer (plug-in point): digits and ``+=`` only, ids 0-2 special."""

    pad_id, bos_id, eos_id = 0, 1, 2
    _chars = "0123456789+="

    @property
    def vocab_size(self) -> int:
        return 3 + len(self._chars)

    def encode(self, text: str) -> list[int]:
        return [3 + self._chars.index(c) for c in text]

    def decode(self, ids: Sequence[int], *, skip_special: bool = True) -> str:
        out = []
        for i in ids:
            if i == self.eos_id:
                break
            if i >= 3:
                out.append(self._chars[i - 3])
            elif not skip_special:
                out.append("<pad>" if i == self.pad_id else "<bos>")
        return "".join(out)
