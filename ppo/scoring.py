"""Rewards per batch: the :class:`Scorer` Protocol and its default, :class:`RewardFnScorer`.

A scorer sees a whole batch of responses at once (so a reward model or a batched verifier
fits) and returns a :class:`runtime.Batch` with a ``score`` column ``(B,)`` and, optionally,
``acc`` ``(B,)`` (correctness in ``[0, 1]``; without it, ``acc = score >= 1``). The batch it
receives holds ``responses``/``response_mask`` (ids), and the non-tensor columns
``response_text`` (decoded, before EOS), ``prompt``, ``answer``, ``data_source`` and
``metadata`` (each example's mapping, verl's ``extra_info``)::

    class LengthPenalty:
        def score(self, batch: Batch) -> Batch:
            texts = batch.non_tensors["response_text"]
            return Batch({"score": torch.tensor([-len(t) / 10 for t in texts])})

    PPOTrainer(backend, config, scorer=LengthPenalty())

The scorer runs inside the reward worker's process (it travels there pickled). Scores are
checked where they are produced: a non-numeric, NaN or infinite score, or a column of the wrong
length, is a :class:`ScoreError` naming the sample's index and prompt.
"""

from __future__ import annotations

import math
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from ppo import columns as C
from ppo.tasks import RewardFn, Task, TaskExample
from runtime import Batch

__all__ = ["RewardFnScorer", "ScoreError", "Scorer", "check_scores", "example_at"]


class ScoreError(ValueError):
    """A scorer or reward function produced an unusable score."""


@runtime_checkable
class Scorer(Protocol):
    """Scores a batch of responses (see the module docstring for the columns)."""

    def score(self, batch: Batch) -> Batch:
        """A batch with ``score`` (B,) and optionally ``acc`` (B,)."""
        ...


def example_at(batch: Batch, i: int) -> TaskExample:
    """Row ``i``'s example, rebuilt from the non-tensor columns."""
    nt = batch.non_tensors
    metadata = nt[C.METADATA][i] if C.METADATA in nt else {}
    return TaskExample(
        prompt=str(nt[C.PROMPT][i]),
        answer=str(nt[C.ANSWER][i]),
        data_source=str(nt[C.DATA_SOURCE][i]),
        metadata=metadata if isinstance(metadata, dict) else {},
    )


class RewardFnScorer:
    """The default scorer: ``reward_fn(response_text, example) -> float`` per sample
    (``task.score`` when no reward function is given)."""

    def __init__(self, task: Task, reward_fn: RewardFn | None = None) -> None:
        self.reward_fn: RewardFn = reward_fn if reward_fn is not None else task.score

    def score(self, batch: Batch) -> Batch:
        texts = batch.non_tensors[C.RESPONSE_TEXT]
        values: list[float] = []
        for i in range(len(batch)):
            example = example_at(batch, i)
            try:
                raw = self.reward_fn(str(texts[i]), example)
            except Exception as exc:
                raise ScoreError(
                    f"the reward function raised on sample {i} (prompt {example.prompt!r}, "
                    f"response {str(texts[i])!r}): {type(exc).__name__}: {exc}"
                ) from exc
            values.append(_number(raw, i, example.prompt))
        return Batch({C.SCORE: torch.tensor(values, dtype=torch.float32)})


#: Scores beyond this magnitude are refused: they overflow advantages and losses silently.
MAX_ABS_SCORE = 1e6


def _number(value: object, i: int, prompt: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        raise ScoreError(
            f"the reward for sample {i} (prompt {prompt!r}) is {value!r} of type "
            f"{type(value).__name__}; return a float"
        )
    out = float(value)
    if not math.isfinite(out) or abs(out) > MAX_ABS_SCORE:
        raise ScoreError(
            f"the reward for sample {i} (prompt {prompt!r}) is {out!r}; rewards must be finite "
            f"and within +-{MAX_ABS_SCORE:g}"
        )
    return out


def check_scores(scored: Batch, batch: Batch) -> tuple[Tensor, Tensor]:
    """``(score, acc)`` float32 ``(B,)`` from a scorer's output, checked (see module doc)."""
    n = len(batch)
    if C.SCORE not in scored.tensors:
        raise ScoreError(
            f"the scorer returned columns {sorted(scored.tensors)}; it must return 'score' (B,)"
        )
    score = scored.tensors[C.SCORE].reshape(-1).float()
    if score.numel() != n:
        raise ScoreError(f"the scorer returned {score.numel()} scores for {n} responses")
    bad = (~torch.isfinite(score) | (score.abs() > MAX_ABS_SCORE)).nonzero().flatten().tolist()
    if bad:
        i = bad[0]
        raise ScoreError(
            f"the score of sample {i} (prompt {str(batch.non_tensors[C.PROMPT][i])!r}) is "
            f"{float(score[i])!r}; scores must be finite and within +-{MAX_ABS_SCORE:g}"
        )
    if C.ACC in scored.tensors:
        acc = scored.tensors[C.ACC].reshape(-1).float()
        if acc.numel() != n:
            raise ScoreError(f"the scorer returned {acc.numel()} 'acc' values for {n} responses")
    else:
        acc = (score >= 1.0).float()
    return score, acc
