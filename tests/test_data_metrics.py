"""The step's data metrics (``ppo.trainer._data_metrics``) are built from tensors with one
``tolist()``; every value must equal the one-``float()``-per-metric computation it replaced."""

from __future__ import annotations

import math

import pytest
import torch

from ppo import columns as C
from ppo.algos import masked_mean
from ppo.trainer import _data_metrics
from runtime import Batch


def _reference(batch: Batch, max_response_len: int) -> dict[str, float]:
    """The previous implementation, value by value."""
    t = batch.tensors
    mask = t[C.RESPONSE_MASK].float()
    lengths = mask.sum(dim=1)
    prompt_lengths = t[C.PROMPT_MASK].sum(dim=1).float()
    clipped = (lengths >= max_response_len) & ~t[C.ENDS_WITH_EOS]
    valid = mask.bool()
    adv, score = t[C.ADVANTAGES], t[C.SCORE]
    out = {
        "critic/score/mean": float(score.mean()),
        "critic/score/max": float(score.max()),
        "critic/score/min": float(score.min()),
        "critic/rewards/mean": float(t[C.TOKEN_LEVEL_REWARDS].sum(dim=1).mean()),
        "critic/acc/mean": float(t[C.ACC].mean()),
        "critic/advantages/mean": float(masked_mean(adv, mask)),
        "critic/advantages/max": float(adv[valid].max()) if valid.any() else 0.0,
        "critic/advantages/min": float(adv[valid].min()) if valid.any() else 0.0,
        "response_length/mean": float(lengths.mean()),
        "response_length/max": float(lengths.max()),
        "response_length/min": float(lengths.min()),
        "response_length/clip_ratio": float(clipped.float().mean()),
        "prompt_length/mean": float(prompt_lengths.mean()),
        "actor/entropy_rollout": float(masked_mean(t[C.ENTROPY], mask)),
    }
    if C.VALUES in t:
        out["critic/values/mean"] = float(masked_mean(t[C.VALUES], mask))
        out["critic/returns/mean"] = float(masked_mean(t[C.RETURNS], mask))
    if C.REF_LOG_PROBS in t:
        kl = t[C.OLD_LOG_PROBS] - t[C.REF_LOG_PROBS]
        out["actor/reward_kl_penalty"] = float(masked_mean(kl, mask))
    return {k: (v if math.isfinite(v) else float("nan")) for k, v in out.items()}


def _batch(seed: int, *, rows: int = 24, width: int = 5, critic: bool, empty: bool) -> Batch:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(0 if empty else 1, width + 1, (rows,), generator=g)
    if empty:
        lengths.zero_()
    response_mask = (torch.arange(width) < lengths.unsqueeze(1)).long()

    def noise() -> torch.Tensor:
        return torch.randn(rows, width, generator=g)

    tensors = {
        C.RESPONSE_MASK: response_mask,
        C.PROMPT_MASK: (torch.rand(rows, 6, generator=g) > 0.3).long(),
        C.ENDS_WITH_EOS: torch.rand(rows, generator=g) > 0.5,
        C.ADVANTAGES: noise(),
        C.SCORE: torch.rand(rows, generator=g),
        C.TOKEN_LEVEL_REWARDS: noise(),
        C.ACC: (torch.rand(rows, generator=g) > 0.5).float(),
        C.ENTROPY: noise().abs(),
        C.OLD_LOG_PROBS: -noise().abs(),
    }
    if critic:
        tensors |= {C.VALUES: noise(), C.RETURNS: noise(), C.REF_LOG_PROBS: -noise().abs()}
    return Batch(tensors)


@pytest.mark.parametrize("critic", [False, True])
@pytest.mark.parametrize("empty", [False, True])
def test_data_metrics_equal_the_per_value_computation(critic: bool, empty: bool) -> None:
    for seed in range(20):
        batch = _batch(seed, critic=critic, empty=empty)
        got, want = _data_metrics(batch, 4), _reference(batch, 4)
        assert list(got) == list(want)
        for key, value in want.items():
            assert type(got[key]) is float
            assert got[key] == value or (math.isnan(got[key]) and math.isnan(value)), key


def test_non_finite_metrics_become_nan() -> None:
    batch = _batch(0, critic=False, empty=False)
    score = batch.tensors[C.SCORE].clone()
    score[0] = float("inf")
    bad = Batch({**batch.tensors, C.SCORE: score})
    got = _data_metrics(bad, 4)
    assert math.isnan(got["critic/score/max"])
    assert math.isnan(got["critic/score/mean"])
    assert got["critic/score/min"] == _reference(bad, 4)["critic/score/min"]
