"""Truncated importance weights (decoupled PPO): hand case, edge cases, Hypothesis invariants."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from ppo.algos import truncated_importance_weights

F64 = torch.float64
NAN = float("nan")


def t(rows: list[list[float]]) -> Tensor:
    return torch.tensor(rows, dtype=F64)


def test_hand_case_truncates_and_reports_metrics() -> None:
    # ratios pi_prox / pi_behav: 1, 2, 5 (capped at 3), 0.5; the last token is masked (nan)
    behaviour = t([[-1.0, -2.0, -3.0, NAN], [-1.0, NAN, NAN, NAN]])
    proximal = behaviour + t([[0.0, math.log(2.0), math.log(5.0), NAN], [math.log(0.5)] * 4])
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])
    weights, metrics = truncated_importance_weights(
        log_prob_behaviour=behaviour, log_prob_proximal=proximal, response_mask=mask, cap=3.0
    )
    expected = t([[1.0, 2.0, 3.0, 0.0], [0.5, 0.0, 0.0, 0.0]])
    assert float((weights - expected).abs().max()) < 1e-12
    assert metrics == {
        "tis/weight_mean": pytest.approx((1.0 + 2.0 + 3.0 + 0.5) / 4),
        "tis/ratio_max": pytest.approx(5.0),
        "tis/capped_frac": pytest.approx(1 / 4),
    }


def test_weights_are_constants_and_overflow_is_capped() -> None:
    proximal = t([[0.0, -1.0]]).requires_grad_(True)
    behaviour = t([[-1000.0, -1.0]])  # a ratio of e^1000 overflows float64
    weights, metrics = truncated_importance_weights(
        log_prob_behaviour=behaviour,
        log_prob_proximal=proximal,
        response_mask=torch.ones(1, 2),
        cap=2.0,
    )
    assert not weights.requires_grad
    assert weights.tolist() == [[2.0, 1.0]]
    assert metrics["tis/ratio_max"] == math.inf
    assert metrics["tis/capped_frac"] == 0.5


def test_no_valid_token_gives_zero_weights_and_metrics() -> None:
    x = t([[NAN, NAN]])
    weights, metrics = truncated_importance_weights(
        log_prob_behaviour=x, log_prob_proximal=x, response_mask=torch.zeros(1, 2), cap=2.0
    )
    assert weights.tolist() == [[0.0, 0.0]]
    assert metrics == {"tis/weight_mean": 0.0, "tis/ratio_max": 0.0, "tis/capped_frac": 0.0}


def test_bad_arguments() -> None:
    x = torch.zeros(2, 3)
    for cap in (0.0, -1.0, math.inf, NAN):
        with pytest.raises(ValueError, match="cap must be a finite number > 0"):
            truncated_importance_weights(
                log_prob_behaviour=x, log_prob_proximal=x, response_mask=x, cap=cap
            )
    with pytest.raises(ValueError, match="log_prob_behaviour has shape"):
        truncated_importance_weights(
            log_prob_behaviour=torch.zeros(2, 2), log_prob_proximal=x, response_mask=x, cap=2.0
        )
    with pytest.raises(ValueError, match="log_prob_proximal must be"):
        truncated_importance_weights(
            log_prob_behaviour=x[0], log_prob_proximal=x[0], response_mask=x[0], cap=2.0
        )
    with pytest.raises(TypeError, match="positional"):
        truncated_importance_weights(x, x, x, 2.0)  # type: ignore[call-arg]  # keyword-only


logp = st.floats(-30.0, 0.0, allow_nan=False, allow_infinity=False)


@st.composite
def pairs(draw: st.DrawFn) -> tuple[Tensor, Tensor, Tensor]:
    """(behaviour, proximal, mask), ``(B, T)``, garbage at masked positions."""
    b = draw(st.integers(1, 5))
    n_t = draw(st.integers(1, 6))
    rows = st.lists(st.lists(logp, min_size=n_t, max_size=n_t), min_size=b, max_size=b)
    bits = st.lists(st.lists(st.booleans(), min_size=n_t, max_size=n_t), min_size=b, max_size=b)
    mask = torch.tensor(draw(bits))
    behaviour = torch.where(mask, t(draw(rows)), NAN)
    proximal = torch.where(mask, t(draw(rows)), math.inf)
    return behaviour, proximal, mask


@settings(max_examples=60, deadline=None)
@given(pairs(), st.floats(1.0, 10.0))
def test_invariants(batch: tuple[Tensor, Tensor, Tensor], cap: float) -> None:
    behaviour, proximal, mask = batch
    weights, metrics = truncated_importance_weights(
        log_prob_behaviour=behaviour, log_prob_proximal=proximal, response_mask=mask, cap=cap
    )
    assert bool((weights[~mask] == 0).all())
    valid = weights[mask]
    assert bool(torch.isfinite(valid).all())
    assert bool(((valid >= 0) & (valid <= cap * (1 + 1e-12))).all())
    ratio = torch.exp(proximal[mask] - behaviour[mask])
    assert bool(((valid - ratio.clamp(max=cap)).abs() <= 1e-12 * cap).all())
    n = int(mask.sum())
    share = float((ratio > cap).sum()) / n if n else 0.0
    assert metrics["tis/capped_frac"] == pytest.approx(share, abs=1e-9)
    assert metrics["tis/weight_mean"] == pytest.approx(float(valid.sum()) / max(n, 1), rel=1e-9)
    # the same policy on both sides: every weight is 1 and nothing is capped
    same, same_metrics = truncated_importance_weights(
        log_prob_behaviour=behaviour, log_prob_proximal=behaviour, response_mask=mask, cap=cap
    )
    assert bool((same[mask] == 1).all())
    assert same_metrics["tis/capped_frac"] == 0.0
