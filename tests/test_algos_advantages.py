"""Advantage estimators and masked reductions: hand-computed cases plus Hypothesis invariants."""

from __future__ import annotations

import pickle
import uuid
from collections.abc import Callable, Hashable

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

import ppo.algos as algos
from ppo.algos import (
    AdvantageInputs,
    UnknownEstimatorError,
    advantage_estimator_names,
    compute_advantages,
    dr_grpo,
    estimator_needs_critic,
    gae,
    get_advantage_estimator,
    grpo,
    masked_mean,
    masked_sum,
    masked_var,
    masked_whiten,
    register_advantage_estimator,
    reinforce_plus_plus,
    reinforce_plus_plus_baseline,
    remax,
    rloo,
)

F64 = torch.float64
BUILTINS = (
    "dr_grpo",
    "gae",
    "grpo",
    "reinforce_plus_plus",
    "reinforce_plus_plus_baseline",
    "remax",
    "rloo",
)


def t(rows: list[list[float]]) -> Tensor:
    return torch.tensor(rows, dtype=F64)


def close(actual: Tensor, expected: Tensor | list[list[float]], atol: float = 1e-5) -> None:
    # (not torch.testing.assert_close: its first call costs ~2 s of lazy imports)
    exp = (expected if isinstance(expected, Tensor) else t(expected)).to(actual.dtype)
    assert actual.shape == exp.shape, (actual.shape, exp.shape)
    diff = float((actual - exp).abs().max()) if actual.numel() else 0.0
    assert diff <= atol, f"max abs diff {diff} > {atol}\nactual={actual}\nexpected={exp}"


def whiten_by_hand(values: list[float]) -> list[float]:
    """Reference whitening of a flat list of valid values (unbiased variance, eps 1e-8)."""
    n = len(values)
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return [(v - mean) / (var + 1e-8) ** 0.5 for v in values]


# --------------------------------------------------------------------------------------------
# public surface


def test_all_is_sorted_and_complete() -> None:
    assert algos.__all__ == sorted(algos.__all__)
    for name in algos.__all__:
        assert hasattr(algos, name), name


# --------------------------------------------------------------------------------------------
# masked reductions


def test_masked_reductions_hand_case_ignore_nan_at_masked_positions() -> None:
    x = t([[1.0, 2.0, float("nan")], [3.0, float("inf"), 4.0]])
    m = torch.tensor([[1, 1, 0], [1, 0, 1]])
    close(masked_sum(x, m), torch.tensor(10.0, dtype=F64))
    close(masked_sum(x, m, dim=-1), torch.tensor([3.0, 7.0], dtype=F64))
    close(masked_mean(x, m), torch.tensor(2.5, dtype=F64))
    close(masked_mean(x, m, dim=-1), torch.tensor([1.5, 3.5], dtype=F64))
    # values 1, 2, 3, 4: mean 2.5, squared deviations 2.25 + 0.25 + 0.25 + 2.25 = 5
    close(masked_var(x, m), torch.tensor(5.0 / 3.0, dtype=F64))
    close(masked_var(x, m, unbiased=False), torch.tensor(5.0 / 4.0, dtype=F64))
    w = masked_whiten(x, m)
    s = (5.0 / 3.0 + 1e-8) ** 0.5
    close(w, [[-1.5 / s, -0.5 / s, 0.0], [0.5 / s, 0.0, 1.5 / s]])
    # shift_mean=False adds the mean (2.5) back after scaling
    close(
        masked_whiten(x, m, shift_mean=False),
        [[2.5 - 1.5 / s, 2.5 - 0.5 / s, 0.0], [2.5 + 0.5 / s, 0.0, 2.5 + 1.5 / s]],
    )


def test_masked_reductions_degenerate_counts_give_zero() -> None:
    x = t([[5.0, 7.0]])
    none = torch.zeros(1, 2)
    one = torch.tensor([[1.0, 0.0]])
    assert masked_mean(x, none).item() == 0.0
    assert masked_var(x, none).item() == 0.0
    assert masked_var(x, one).item() == 0.0
    close(masked_whiten(x, one), [[0.0, 0.0]])
    close(masked_mean(x, none, dim=-1), torch.tensor([0.0], dtype=F64))


# --------------------------------------------------------------------------------------------
# hand-computed estimator cases


def test_gae_hand_case_with_interior_mask_and_padding() -> None:
    # Row 0: valid tokens 0, 2, 3 (token 1 is a masked observation: its reward 9 and value 7
    # must be ignored). gamma = 0.9, lam = 0.8, V = 0.5 on valid tokens, reward 1 at the end.
    #   t=3: delta = 1 + 0.9*0 - 0.5 = 0.5                       A = 0.5
    #   t=2: delta = 0 + 0.9*0.5 - 0.5 = -0.05   A = -0.05 + 0.72*0.5  = 0.31
    #   t=0: delta = 0 + 0.9*0.5 - 0.5 = -0.05   A = -0.05 + 0.72*0.31 = 0.1732
    # Row 1: all padding.
    rewards = t([[0.0, 9.0, 0.0, 1.0], [3.0, 3.0, 3.0, 3.0]])
    values = t([[0.5, 7.0, 0.5, 0.5], [1.0, 1.0, 1.0, 1.0]])
    mask = torch.tensor([[1, 0, 1, 1], [0, 0, 0, 0]])
    raw, returns = gae(
        token_level_rewards=rewards,
        values=values,
        response_mask=mask,
        gamma=0.9,
        lam=0.8,
        whiten=False,
    )
    close(raw, [[0.1732, 0.0, 0.31, 0.5], [0.0, 0.0, 0.0, 0.0]])
    close(returns, [[0.6732, 0.0, 0.81, 1.0], [0.0, 0.0, 0.0, 0.0]])
    adv, returns2 = gae(
        token_level_rewards=rewards, values=values, response_mask=mask, gamma=0.9, lam=0.8
    )
    # whitened over the three valid raw advantages (0.1732, 0.31, 0.5)
    close(adv, [[-0.9415866, 0.0, -0.1080509, 1.0496375], [0.0, 0.0, 0.0, 0.0]])
    close(returns2, returns)


def test_grpo_dr_grpo_rloo_hand_case() -> None:
    # groups: a = rows 0-2 with scores 1, 0, 0; b = rows 3-4 with scores 1, 3; c = row 5 score 5.
    # Row 0 spreads its score over two tokens; rewards at masked positions are ignored.
    rewards = t(
        [
            [0.5, 0.5, 0.0],
            [0.0, 0.0, 8.0],
            [0.0, 0.0, 0.0],
            [0.0, 1.0, 0.0],
            [3.0, 0.0, 0.0],
            [0.0, 0.0, 5.0],
        ]
    )
    mask = torch.tensor([[1, 1, 0], [1, 1, 0], [1, 0, 0], [1, 1, 1], [1, 0, 0], [1, 1, 1]])
    index = np.array(["a", "a", "a", "b", "b", "c"], dtype=object)

    # a: mean 1/3, unbiased std sqrt(((2/3)^2 + 2*(1/3)^2) / 2) = sqrt(1/3) = 0.5773503
    #    -> A = (2/3)/0.5773503 = 1.1547005 and (-1/3)/0.5773503 = -0.5773503
    # b: mean 2, std sqrt((1 + 1) / 1) = 1.4142136 -> A = -0.7071068, 0.7071068
    # c: singleton, mean 0, std 1 -> A = 5 / (1 + 1e-6) = 4.999995
    per_row = [1.1547005, -0.5773503, -0.5773503, -0.7071068, 0.7071068, 4.999995]
    adv, ret = grpo(token_level_rewards=rewards, response_mask=mask, index=index)
    close(adv, t([[a] * 3 for a in per_row]) * mask)
    close(ret, adv)

    # Dr.GRPO: no division by std: a -> 2/3, -1/3, -1/3; b -> -1, 1; c -> 5
    adv, _ = dr_grpo(token_level_rewards=rewards, response_mask=mask, index=list(index))
    close(adv, t([[a] * 3 for a in [2 / 3, -1 / 3, -1 / 3, -1.0, 1.0, 5.0]]) * mask)

    # RLOO: a -> 1 - (0+0)/2 = 1, 0 - (1+0)/2 = -0.5 (twice); b -> 1 - 3 = -2, 3 - 1 = 2; c -> 0
    adv, ret = rloo(token_level_rewards=rewards, response_mask=mask, index=list(index))
    close(adv, t([[a] * 3 for a in [1.0, -0.5, -0.5, -2.0, 2.0, 0.0]]) * mask)
    close(ret, adv)


def test_reinforce_plus_plus_hand_case() -> None:
    # gamma = 0.5
    # row 0: rewards 1, 0, 2            -> G = 1 + 0.5*(0 + 0.5*2) = 1.5, 0 + 0.5*2 = 1, 2
    # row 1: rewards 0, 4, (99 masked)  -> G = 0.5*4 = 2, 4, 0
    # row 2: rewards 1, (50 masked), 2  -> the masked token is skipped: G = 1 + 0.5*2 = 2, 0, 2
    rewards = t([[1.0, 0.0, 2.0], [0.0, 4.0, 99.0], [1.0, 50.0, 2.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 0, 1]])
    adv, returns = reinforce_plus_plus(token_level_rewards=rewards, response_mask=mask, gamma=0.5)
    close(returns, [[1.5, 1.0, 2.0], [2.0, 4.0, 0.0], [2.0, 0.0, 2.0]])
    w = whiten_by_hand([1.5, 1.0, 2.0, 2.0, 4.0, 2.0, 2.0])
    close(adv, [[w[0], w[1], w[2]], [w[3], w[4], 0.0], [w[5], 0.0, w[6]]])


def test_reinforce_plus_plus_baseline_hand_case() -> None:
    # group a = rows 0, 1 with scores 1, 3 (mean 2) -> 1 - 2 = -1, 3 - 2 = 1
    # group b = row 2 with score 5, singleton baseline 0 -> 5
    # broadcast over valid tokens (2, 1 and 3 of them), then whitened over those 6 tokens
    rewards = t([[0.0, 1.0, 0.0], [3.0, 0.0, 0.0], [0.0, 0.0, 5.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1]])
    adv, ret = reinforce_plus_plus_baseline(
        token_level_rewards=rewards, response_mask=mask, index=["a", "a", "b"]
    )
    w = whiten_by_hand([-1.0, -1.0, 1.0, 5.0, 5.0, 5.0])
    close(adv, [[w[0], w[1], 0.0], [w[2], 0.0, 0.0], [w[3], w[4], w[5]]])
    close(ret, adv)


def test_remax_hand_case() -> None:
    # row 0: rewards 0, 0, 1 -> return-to-go 1, 1, 1; baseline 0.25 -> 0.75 each
    # row 1: rewards 0.5, 0, (9 masked) -> return-to-go 0.5, 0, 0; baseline 1 -> -0.5, -1, 0
    rewards = t([[0.0, 0.0, 1.0], [0.5, 0.0, 9.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    baselines = torch.tensor([0.25, 1.0], dtype=F64)
    adv, returns = remax(
        token_level_rewards=rewards, reward_baselines=baselines, response_mask=mask
    )
    close(returns, [[1.0, 1.0, 1.0], [0.5, 0.0, 0.0]])
    close(adv, [[0.75, 0.75, 0.75], [-0.5, -1.0, 0.0]])


def test_input_validation() -> None:
    r = torch.zeros(2, 3)
    m = torch.ones(2, 3)
    with pytest.raises(ValueError, match="index has 1 entries"):
        grpo(token_level_rewards=r, response_mask=m, index=["a"])
    with pytest.raises(TypeError, match="not a single string"):
        grpo(token_level_rewards=r, response_mask=m, index="ab")
    with pytest.raises(ValueError, match="response_mask has shape"):
        rloo(token_level_rewards=r, response_mask=torch.ones(2, 4), index=["a", "b"])
    with pytest.raises(ValueError, match="values has shape"):
        gae(token_level_rewards=r, values=torch.zeros(2, 2), response_mask=m, gamma=1.0, lam=1.0)
    with pytest.raises(ValueError, match="reward_baselines must be"):
        remax(token_level_rewards=r, reward_baselines=torch.zeros(3), response_mask=m)


# --------------------------------------------------------------------------------------------
# registry


def test_registry_builtins_and_dispatch() -> None:
    assert set(BUILTINS) <= set(advantage_estimator_names())
    assert [n for n in BUILTINS if estimator_needs_critic(n)] == ["gae"]
    rewards = t([[0.0, 1.0], [0.0, 0.0], [2.0, 0.0]])
    mask = torch.tensor([[1, 1], [1, 0], [1, 1]])
    inputs = AdvantageInputs(
        token_rewards=rewards, response_mask=mask, index=["u", "u", "v"], norm_by_std=False
    )
    adv, _ = compute_advantages("grpo", inputs)
    index = ["u", "u", "v"]
    close(adv, dr_grpo(token_level_rewards=rewards, response_mask=mask, index=index)[0])
    adv, _ = get_advantage_estimator("rloo")(inputs)
    close(adv, rloo(token_level_rewards=rewards, response_mask=mask, index=index)[0])


def test_registry_missing_inputs_name_the_field() -> None:
    inputs = AdvantageInputs(token_rewards=torch.zeros(1, 2), response_mask=torch.ones(1, 2))
    with pytest.raises(ValueError, match=r"'gae' needs AdvantageInputs\.values"):
        compute_advantages("gae", inputs)
    with pytest.raises(ValueError, match=r"'grpo' needs AdvantageInputs\.index"):
        compute_advantages("grpo", inputs)
    with pytest.raises(ValueError, match=r"'remax' needs AdvantageInputs\.reward_baselines"):
        compute_advantages("remax", inputs)


def test_registry_rejects_unknown_names() -> None:
    with pytest.raises(UnknownEstimatorError) as info:
        get_advantage_estimator("ppo_magic")
    err = info.value
    assert isinstance(err, KeyError)
    assert err.name == "ppo_magic"
    message = str(err)
    assert "'ppo_magic'" in message
    for name in BUILTINS:
        assert repr(name) in message
    with pytest.raises(KeyError):
        estimator_needs_critic("ppo_magic")
    again = pickle.loads(pickle.dumps(err))
    assert isinstance(again, UnknownEstimatorError)
    assert str(again) == message


def test_registry_custom_and_duplicate() -> None:
    name = f"test-{uuid.uuid4().hex}"

    @register_advantage_estimator(name, needs_critic=True)
    def constant(x: AdvantageInputs) -> tuple[Tensor, Tensor]:
        ones = torch.ones_like(x.token_rewards)
        return ones, ones

    assert get_advantage_estimator(name) is constant
    assert estimator_needs_critic(name)
    with pytest.raises(ValueError, match=name):
        register_advantage_estimator(name)(constant)
    with pytest.raises(ValueError, match="'gae' is already registered"):
        register_advantage_estimator("gae")(constant)
    with pytest.raises(ValueError, match="non-empty"):
        register_advantage_estimator("")


# --------------------------------------------------------------------------------------------
# Hypothesis invariants

reward = st.floats(-5.0, 5.0, allow_nan=False, allow_infinity=False)


@st.composite
def batches(draw: st.DrawFn) -> tuple[Tensor, Tensor, Tensor, list[Hashable]]:
    """(rewards, values, mask, index) with every row holding at least one valid token."""
    b = draw(st.integers(1, 6))
    n_t = draw(st.integers(1, 5))
    rewards = t(
        draw(st.lists(st.lists(reward, min_size=n_t, max_size=n_t), min_size=b, max_size=b))
    )
    values = t(draw(st.lists(st.lists(reward, min_size=n_t, max_size=n_t), min_size=b, max_size=b)))
    rows = []
    for _ in range(b):
        row = draw(st.lists(st.booleans(), min_size=n_t, max_size=n_t))
        row[draw(st.integers(0, n_t - 1))] = True
        rows.append(row)
    index: list[Hashable] = [f"uid-{draw(st.integers(0, 2))}" for _ in range(b)]
    return rewards, values, torch.tensor(rows), index


def per_sequence(adv: Tensor, mask: Tensor) -> Tensor:
    """The (constant) per-row advantage of an outcome estimator."""
    return masked_mean(adv, mask, dim=-1)


def assert_groups_sum_to_zero(seq_adv: Tensor, index: list[Hashable]) -> None:
    scale = 1.0 + float(seq_adv.abs().max())
    for key in set(index):
        members = [i for i, k in enumerate(index) if k == key]
        if len(members) >= 2:
            total = float(seq_adv[members].sum())
            assert abs(total) <= 1e-9 * scale, (key, total)


@settings(max_examples=40, deadline=None)
@given(batches())
def test_grpo_and_dr_grpo_groups_sum_to_zero(
    batch: tuple[Tensor, Tensor, Tensor, list[Hashable]],
) -> None:
    rewards, _, mask, index = batch
    for adv, ret in (
        grpo(token_level_rewards=rewards, response_mask=mask, index=index),
        dr_grpo(token_level_rewards=rewards, response_mask=mask, index=index),
    ):
        assert_groups_sum_to_zero(per_sequence(adv, mask), index)
        # constant over the valid tokens of each row
        seq = per_sequence(adv, mask).unsqueeze(-1).expand_as(adv)
        close(adv, torch.where(mask, seq, torch.zeros_like(seq)), atol=1e-9)
        close(ret, adv, atol=0.0)


@settings(max_examples=40, deadline=None)
@given(batches())
def test_rloo_groups_sum_to_zero(batch: tuple[Tensor, Tensor, Tensor, list[Hashable]]) -> None:
    rewards, _, mask, index = batch
    adv, _ = rloo(token_level_rewards=rewards, response_mask=mask, index=index)
    seq = per_sequence(adv, mask)
    assert_groups_sum_to_zero(seq, index)
    for i, key in enumerate(index):
        if index.count(key) == 1:
            assert float(seq[i]) == 0.0


def return_to_go_by_hand(rewards: Tensor, mask: Tensor) -> Tensor:
    out = torch.zeros_like(rewards)
    for i in range(rewards.shape[0]):
        for j in range(rewards.shape[1]):
            if mask[i, j]:
                out[i, j] = sum(
                    float(rewards[i, k]) for k in range(j, rewards.shape[1]) if mask[i, k]
                )
    return out


@settings(max_examples=40, deadline=None)
@given(batches())
def test_gae_gamma1_lam1_is_return_to_go_minus_values(
    batch: tuple[Tensor, Tensor, Tensor, list[Hashable]],
) -> None:
    rewards, values, mask, _ = batch
    raw, returns = gae(
        token_level_rewards=rewards,
        values=values,
        response_mask=mask,
        gamma=1.0,
        lam=1.0,
        whiten=False,
    )
    expected = torch.where(mask, return_to_go_by_hand(rewards, mask) - values, 0.0)
    close(raw, expected, atol=1e-9)
    close(returns, torch.where(mask, expected + values, 0.0), atol=1e-9)
    # the whitened advantages are the whitening of the raw ones
    adv, _ = gae(token_level_rewards=rewards, values=values, response_mask=mask, gamma=1.0, lam=1.0)
    close(adv, masked_whiten(raw, mask), atol=1e-9)


@settings(max_examples=40, deadline=None)
@given(batches(), st.sampled_from(BUILTINS))
def test_every_estimator_is_zero_on_masked_positions(
    batch: tuple[Tensor, Tensor, Tensor, list[Hashable]], name: str
) -> None:
    rewards, values, mask, index = batch
    # garbage at masked positions must not leak anywhere
    rewards = torch.where(mask, rewards, torch.full_like(rewards, 1e6))
    values = torch.where(mask, values, torch.full_like(values, -1e6))
    inputs = AdvantageInputs(
        token_rewards=rewards,
        response_mask=mask,
        values=values,
        index=np.array(index, dtype=object),
        reward_baselines=torch.ones(rewards.shape[0], dtype=F64),
        gamma=0.9,
        lam=0.95,
    )
    adv, ret = compute_advantages(name, inputs)
    assert adv.shape == ret.shape == rewards.shape
    assert bool(torch.isfinite(adv).all())
    assert bool(torch.isfinite(ret).all())
    assert bool((adv[~mask] == 0).all())
    assert bool((ret[~mask] == 0).all())
    assert bool((adv.abs() < 1e5).all())


def test_only_remax_needs_greedy_baselines() -> None:
    from ppo.algos import advantage_estimator_names, estimator_needs_baselines

    assert [n for n in advantage_estimator_names() if estimator_needs_baselines(n)] == ["remax"]


_R = torch.zeros(2, 3)
_M = torch.ones(2, 3)
_I = ["a", "b"]
POSITIONAL_CALLS: dict[str, Callable[[], object]] = {
    "gae": lambda: gae(_R, _R, _M, 1.0, 1.0),  # type: ignore[call-arg]  # keyword-only
    "grpo": lambda: grpo(_R, _M, _I),  # type: ignore[call-arg]  # keyword-only
    "dr_grpo": lambda: dr_grpo(_R, _M, _I),  # type: ignore[call-arg]  # keyword-only
    "rloo": lambda: rloo(_R, _M, _I),  # type: ignore[call-arg]  # keyword-only
    "reinforce_plus_plus": lambda: reinforce_plus_plus(_R, _M, 1.0),  # type: ignore[call-arg]
    "reinforce_plus_plus_baseline": (
        lambda: reinforce_plus_plus_baseline(_R, _M, _I)  # type: ignore[call-arg]
    ),
    "remax": lambda: remax(_R, torch.zeros(2), _M),  # type: ignore[call-arg]  # keyword-only
}


@pytest.mark.parametrize("name", sorted(POSITIONAL_CALLS))
def test_estimators_take_keyword_arguments_only(name: str) -> None:
    with pytest.raises(TypeError, match="positional"):
        POSITIONAL_CALLS[name]()
