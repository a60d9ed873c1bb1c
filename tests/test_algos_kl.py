"""KL controllers and KL-in-reward shaping."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from ppo.algos import (
    AdaptiveKLController,
    FixedKLController,
    KLController,
    apply_kl_in_reward,
    make_kl_controller,
)

F64 = torch.float64


def test_fixed_controller_never_moves_and_round_trips() -> None:
    ctl = FixedKLController(0.05)
    ctl.update(current_kl=10.0, n_steps=1000)
    assert ctl.value == 0.05
    other = FixedKLController(1.0)
    other.load_state_dict(ctl.state_dict())
    assert other.value == 0.05
    assert isinstance(ctl, KLController)
    with pytest.raises(ValueError, match="KL coefficient must be >= 0"):
        FixedKLController(-0.1)


def test_adaptive_controller_hand_case() -> None:
    # value *= 1 + clip(kl / target - 1, -0.2, 0.2) * n_steps / horizon
    ctl = AdaptiveKLController(init_value=0.1, target=0.1, horizon=100)
    ctl.update(current_kl=0.11, n_steps=10)  # error 0.1 -> 0.1 * (1 + 0.1 * 0.1) = 0.101
    assert ctl.value == pytest.approx(0.101)
    ctl.update(current_kl=1.0, n_steps=10)  # error 9 clipped to 0.2 -> 0.101 * 1.02 = 0.10302
    assert ctl.value == pytest.approx(0.10302)
    ctl.update(current_kl=0.0, n_steps=50)  # error -1 clipped to -0.2 -> 0.10302 * 0.9 = 0.092718
    assert ctl.value == pytest.approx(0.092718)
    ctl.update(current_kl=0.1, n_steps=50)  # on target: unchanged
    assert ctl.value == pytest.approx(0.092718)
    restored = AdaptiveKLController(init_value=0.5, target=0.1, horizon=100)
    restored.load_state_dict(ctl.state_dict())
    assert restored.value == ctl.value
    assert isinstance(ctl, KLController)


@settings(max_examples=40, deadline=None)
@given(
    init=st.floats(1e-3, 10.0),
    target=st.floats(1e-3, 1.0),
    ratio=st.floats(0.0, 5.0),
    n_steps=st.integers(1, 512),
)
def test_adaptive_controller_moves_towards_target(
    init: float, target: float, ratio: float, n_steps: int
) -> None:
    ctl = AdaptiveKLController(init, target, horizon=10_000)
    kl = ratio * target
    ctl.update(kl, n_steps)
    if kl > target * (1 + 1e-9):
        assert ctl.value > init
    elif kl < target * (1 - 1e-9):
        assert ctl.value < init
    # never by more than 20 % of n_steps / horizon
    assert abs(ctl.value / init - 1.0) <= 0.2 * n_steps / 10_000 + 1e-12


def test_make_kl_controller() -> None:
    fixed = make_kl_controller("fixed", 0.2)
    assert isinstance(fixed, FixedKLController)
    assert fixed.value == 0.2
    adaptive = make_kl_controller("adaptive", 0.2, target=0.05, horizon=500)
    assert isinstance(adaptive, AdaptiveKLController)
    assert (adaptive.value, adaptive.target, adaptive.horizon) == (0.2, 0.05, 500.0)
    with pytest.raises(ValueError, match="target KL must be > 0"):
        make_kl_controller("adaptive", 0.2, target=0.0)
    with pytest.raises(ValueError, match="horizon must be > 0"):
        AdaptiveKLController(0.2, 0.1, horizon=0)


def test_apply_kl_in_reward_hand_case() -> None:
    scores = torch.tensor([[0.0, 0.0, 1.0], [0.0, 2.0, 0.0]], dtype=F64)
    old = torch.tensor([[0.0, -1.0, -1.0], [-1.0, -1.0, 0.0]], dtype=F64)
    ref = torch.tensor([[-1.0, -1.0, -1.0], [0.0, -1.0, 5.0]], dtype=F64)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    # k1 = old - ref = [[1, 0, 0], [-1, 0, (masked)]]; beta = 0.5
    # rewards = scores - 0.5 * kl = [[-0.5, 0, 1], [0.5, 2, 0]]
    # observed kl = mean over rows of the row token-means = (1/3 + (-1/2)) / 2 = -1/12

    def apply(
        controller: KLController, kind: str = "k1", ref_log_prob: Tensor = ref
    ) -> tuple[Tensor, dict[str, float]]:
        return apply_kl_in_reward(
            token_level_scores=scores,
            old_log_prob=old,
            ref_log_prob=ref_log_prob,
            response_mask=mask,
            controller=controller,
            kind=kind,
        )

    ctl = FixedKLController(0.5)
    rewards, metrics = apply(ctl)
    expected = torch.tensor([[-0.5, 0.0, 1.0], [0.5, 2.0, 0.0]], dtype=F64)
    assert float((rewards - expected).abs().max()) < 1e-12
    assert metrics == {"kl/in_reward": pytest.approx(-1 / 12), "kl/coef": 0.5}

    # adaptive: the coefficient used is the one before the update; then updated with n_steps = B
    # k2 = 0.5 * d^2 = [[0.5, 0, 0], [0.5, 0, -]] -> observed kl = (1/6 + 1/4) / 2 = 5/24
    ada = AdaptiveKLController(init_value=0.5, target=0.1, horizon=20)
    rewards, metrics = apply(ada, kind="k2")
    expected = torch.tensor([[-0.25, 0.0, 1.0], [-0.25, 2.0, 0.0]], dtype=F64)
    assert float((rewards - expected).abs().max()) < 1e-12
    assert metrics == {"kl/in_reward": pytest.approx(5 / 24), "kl/coef": 0.5}
    # error = clip(5/24 / 0.1 - 1, -0.2, 0.2) = 0.2 -> 0.5 * (1 + 0.2 * 2 / 20) = 0.51
    assert ada.value == pytest.approx(0.51)

    with pytest.raises(ValueError, match="unknown KL penalty kind"):
        apply(ctl, kind="k9")
    with pytest.raises(ValueError, match="ref_log_prob has shape"):
        apply(ctl, ref_log_prob=ref[:, :2])
    with pytest.raises(TypeError, match="positional"):
        apply_kl_in_reward(scores, old, ref, mask, ctl)  # type: ignore[call-arg]  # keyword-only
