"""Losses and aggregation: hand-computed cases plus Hypothesis invariants."""

from __future__ import annotations

import math
import pickle
import uuid
from collections.abc import Callable
from itertools import pairwise
from typing import Unpack, cast

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from ppo.algos import (
    AGG_MODES,
    AggKwargs,
    PolicyLossFn,
    UnknownPolicyLossError,
    agg_loss,
    agg_normalizers,
    entropy_from_logits,
    get_policy_loss,
    gspo_loss,
    kl_penalty,
    policy_loss_names,
    ppo_clip_loss,
    register_policy_loss,
    value_loss,
)

F64 = torch.float64
NAN = float("nan")


def t(rows: list[list[float]]) -> Tensor:
    return torch.tensor(rows, dtype=F64)


def close(
    actual: Tensor | float, expected: Tensor | float | list[list[float]], atol: float = 1e-6
) -> None:
    # (not torch.testing.assert_close: its first call costs ~2 s of lazy imports)
    a = actual.detach() if isinstance(actual, Tensor) else torch.tensor(actual, dtype=F64)
    if isinstance(expected, Tensor):
        e = expected
    elif isinstance(expected, list):
        e = t(expected)
    else:
        e = torch.tensor(expected, dtype=F64)
    e = e.to(a.dtype)
    assert a.shape == e.shape, (a.shape, e.shape)
    diff = float((a - e).abs().max()) if a.numel() else 0.0
    assert diff <= atol, f"max abs diff {diff} > {atol}\nactual={a}\nexpected={e}"


# --------------------------------------------------------------------------------------------
# agg_loss


def test_agg_loss_hand_case() -> None:
    # valid: row 0 -> 1, 2 (sum 3, mean 1.5); row 1 -> 4 (sum 4, mean 4); row 2 -> nothing.
    loss = t([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0], [0, 0, 0]])

    def agg(mode: str, **kwargs: Unpack[AggKwargs]) -> Tensor:
        return agg_loss(loss_mat=loss, loss_mask=mask, loss_agg_mode=mode, **kwargs)

    close(agg("token-mean"), 7.0 / 3.0)
    close(agg("token-sum"), 7.0)
    close(agg("seq-mean-token-sum"), (3.0 + 4.0) / 2.0)
    close(agg("seq-mean-token-mean"), (1.5 + 4.0) / 2.0)
    close(agg("seq-mean-token-sum-norm", horizon=4), (3.0 + 4.0) / (2.0 * 4.0))
    close(agg("seq-mean-token-sum-norm"), (3.0 + 4.0) / (2.0 * 3.0))  # T = 3
    # global counts replace the local ones
    close(agg("token-mean", global_tokens=14.0), 7.0 / 14.0)
    close(agg("seq-mean-token-sum", global_seqs=7.0), 1.0)
    assert agg_normalizers(mask) == {"global_tokens": 3.0, "global_seqs": 2.0}
    # nothing valid: 0, not nan
    close(agg_loss(loss_mat=loss, loss_mask=torch.zeros(3, 3), loss_agg_mode="token-mean"), 0.0)


def test_agg_loss_rejects_bad_arguments() -> None:
    x = torch.zeros(2, 2)
    with pytest.raises(ValueError, match="unknown loss aggregation mode 'mean'") as info:
        agg_loss(loss_mat=x, loss_mask=x, loss_agg_mode="mean")
    for mode in AGG_MODES:
        assert mode in str(info.value)
    with pytest.raises(ValueError, match="global_tokens must be > 0"):
        agg_loss(loss_mat=x, loss_mask=x, loss_agg_mode="token-mean", global_tokens=0.0)
    with pytest.raises(ValueError, match="horizon must be > 0"):
        agg_loss(loss_mat=x, loss_mask=x, loss_agg_mode="seq-mean-token-sum-norm", horizon=0)
    with pytest.raises(ValueError, match="loss_mask has shape"):
        agg_loss(loss_mat=x, loss_mask=torch.zeros(2, 3), loss_agg_mode="token-mean")


@st.composite
def sharded_batches(draw: st.DrawFn) -> tuple[Tensor, Tensor, list[int]]:
    """A (B, T) loss and mask (some rows fully masked) and k >= 1 row-split sizes summing to B."""
    b = draw(st.integers(1, 8))
    n_t = draw(st.integers(1, 5))
    val = st.floats(-10.0, 10.0, allow_nan=False, allow_infinity=False)
    loss = t(draw(st.lists(st.lists(val, min_size=n_t, max_size=n_t), min_size=b, max_size=b)))
    bits = draw(
        st.lists(st.lists(st.booleans(), min_size=n_t, max_size=n_t), min_size=b, max_size=b)
    )
    cuts = sorted(draw(st.lists(st.integers(0, b), max_size=3)))
    edges = [0, *cuts, b]
    return loss, torch.tensor(bits), [hi - lo for lo, hi in pairwise(edges)]


@settings(max_examples=40, deadline=None)
@given(sharded_batches(), st.sampled_from(AGG_MODES))
def test_agg_loss_is_data_parallel_invariant(
    batch: tuple[Tensor, Tensor, list[int]], mode: str
) -> None:
    loss, mask, sizes = batch
    whole = agg_loss(loss_mat=loss, loss_mask=mask, loss_agg_mode=mode, horizon=7)
    counts = agg_normalizers(mask)
    assert counts.get("global_tokens") == float(mask.sum())
    if not counts.get("global_tokens"):
        return  # nothing valid anywhere: the whole-batch loss is 0 and no normaliser exists
    kwargs: AggKwargs = {**counts, "horizon": 7}
    shards = zip(torch.split(loss, sizes), torch.split(mask, sizes), strict=True)
    per_shard = [
        agg_loss(loss_mat=lo, loss_mask=ma, loss_agg_mode=mode, **kwargs) for lo, ma in shards
    ]
    close(torch.stack(per_shard).sum(), whole, atol=1e-9)
    # and the whole batch with its own global counts is unchanged
    close(agg_loss(loss_mat=loss, loss_mask=mask, loss_agg_mode=mode, **kwargs), whole, atol=1e-9)


# --------------------------------------------------------------------------------------------
# PPO clip


def test_ppo_clip_crafted_case() -> None:
    # token: ratio, A   -> -A*r, -A*clip(r, 0.8, 1.2)  -> max      -> dual cap -A*3 (A < 0)
    #   0:   1.5,  +1   -> -1.5, -1.2   clipped         -> -1.2
    #   1:   0.5,  +1   -> -0.5, -0.8                   -> -0.5
    #   2:   0.5,  -1   ->  0.5,  0.8   clipped         ->  0.8
    #   3:  10.0,  -1   -> 10.0,  1.2                   -> 10.0    -> capped to 3 (lower clip)
    #   4:   1.1,  -1   ->  1.1,  1.1                   ->  1.1
    #   5:   masked (nan inputs must be ignored)
    ratios = [1.5, 0.5, 0.5, 10.0, 1.1]
    old = torch.tensor([[-1.0, -2.0, -0.5, -3.0, -1.5, NAN]], dtype=F64)
    logp = (old[:, :5] + torch.log(torch.tensor([ratios], dtype=F64))).detach()
    logp = torch.cat([logp, torch.tensor([[NAN]], dtype=F64)], dim=1).requires_grad_(True)
    adv = t([[1.0, 1.0, -1.0, -1.0, -1.0, NAN]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 0]])
    loss, metrics = ppo_clip_loss(
        old_log_prob=old, log_prob=logp, advantages=adv, response_mask=mask
    )
    close(loss, (-1.2 - 0.5 + 0.8 + 3.0 + 1.1) / 5.0)
    assert metrics["pg_clipfrac"] == pytest.approx(2 / 5)
    assert metrics["pg_clipfrac_lower"] == pytest.approx(1 / 5)
    assert metrics["ppo_kl"] == pytest.approx(-sum(math.log(r) for r in ratios) / 5)
    torch.autograd.backward(loss)
    assert logp.grad is not None
    # d loss / d logp = -A * r / 5 where unclipped; 0 where clipped, capped, or masked
    close(logp.grad, [[0.0, -0.5 / 5, 0.0, 0.0, 1.1 / 5, 0.0]], atol=1e-9)
    # without dual clip token 3 keeps its loss 10
    loss_nc, metrics_nc = ppo_clip_loss(
        old_log_prob=old, log_prob=logp, advantages=adv, response_mask=mask, clip_c=None
    )
    close(loss_nc, (-1.2 - 0.5 + 0.8 + 10.0 + 1.1) / 5.0)
    assert metrics_nc["pg_clipfrac_lower"] == 0.0
    # asymmetric clip-higher: with clip_high = 0.6 token 0 is no longer clipped
    _, metrics_hi = ppo_clip_loss(
        old_log_prob=old, log_prob=logp, advantages=adv, response_mask=mask, clip_high=0.6
    )
    assert metrics_hi["pg_clipfrac"] == pytest.approx(1 / 5)


def test_ppo_clip_validates_parameters() -> None:
    x = torch.zeros(1, 2)
    with pytest.raises(ValueError, match="clip_c"):
        ppo_clip_loss(old_log_prob=x, log_prob=x, advantages=x, response_mask=x, clip_c=1.0)
    with pytest.raises(ValueError, match="clip_low"):
        ppo_clip_loss(old_log_prob=x, log_prob=x, advantages=x, response_mask=x, clip_low=1.0)
    with pytest.raises(ValueError, match="advantages has shape"):
        ppo_clip_loss(old_log_prob=x, log_prob=x, advantages=torch.zeros(2, 2), response_mask=x)


finite = st.floats(-3.0, 3.0, allow_nan=False, allow_infinity=False)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(finite, finite), min_size=1, max_size=8),
    st.floats(1.01, 10.0),
)
def test_dual_clip_caps_negative_advantage_losses(
    tokens: list[tuple[float, float]], clip_c: float
) -> None:
    log_ratio = torch.tensor([[lr for lr, _ in tokens]], dtype=F64)
    adv = torch.tensor([[a for _, a in tokens]], dtype=F64)
    old = torch.zeros_like(log_ratio)
    for j, (lr, a) in enumerate(tokens):
        one_hot = torch.zeros_like(adv)
        one_hot[0, j] = 1.0
        loss, _ = ppo_clip_loss(
            old_log_prob=old,
            log_prob=log_ratio,
            advantages=adv,
            response_mask=one_hot,
            clip_c=clip_c,
            loss_agg_mode="token-sum",
        )
        r = math.exp(lr)
        standard = max(-a * r, -a * min(max(r, 0.8), 1.2))
        if a < 0:
            assert float(loss) <= -a * clip_c + 1e-9
            close(loss, min(standard, -a * clip_c), atol=1e-9)
        else:
            close(loss, standard, atol=1e-9)


# --------------------------------------------------------------------------------------------
# GSPO


def test_gspo_sequence_ratio_clip_and_straight_through_gradient() -> None:
    # row 0: token log-ratios 0.1, 0.3 -> s = exp(0.2) = 1.2214 > 1 + 4e-4: clipped, A = +1
    #        per-token loss max(-1.2214, -1.0004) = -1.0004
    # row 1: token log-ratios 3e-4, -1e-4 -> s = exp(1e-4) inside [1 - 3e-4, 1 + 4e-4], A = +2;
    #        per-token loss -2 * s; gradient wrt logp_t = -2 * s / 2 (seq-mean-token-mean)
    old = t([[-1.0, -1.0], [-2.0, -2.0]])
    logp = (old + t([[0.1, 0.3], [3e-4, -1e-4]])).requires_grad_(True)
    adv = t([[1.0, 1.0], [2.0, 2.0]])
    mask = torch.ones(2, 2)
    loss, metrics = gspo_loss(old_log_prob=old, log_prob=logp, advantages=adv, response_mask=mask)
    s1 = math.exp(1e-4)
    close(loss, (-1.0004 + -2.0 * s1) / 2.0, atol=1e-9)
    assert metrics["pg_clipfrac"] == pytest.approx(0.5)
    assert metrics["pg_clipfrac_lower"] == 0.0
    assert metrics["ppo_kl"] == pytest.approx(-(0.1 + 0.3 + 3e-4 - 1e-4) / 4)
    torch.autograd.backward(loss)
    assert logp.grad is not None
    close(logp.grad, [[0.0, 0.0], [-s1 / 2.0, -s1 / 2.0]], atol=1e-9)


# --------------------------------------------------------------------------------------------
# policy-loss registry


def test_policy_loss_registry() -> None:
    assert get_policy_loss("vanilla") is ppo_clip_loss
    assert get_policy_loss("gspo") is gspo_loss
    assert {"gspo", "vanilla"} <= set(policy_loss_names())
    with pytest.raises(UnknownPolicyLossError) as info:
        get_policy_loss("ppo2")
    assert isinstance(info.value, KeyError)
    assert "'ppo2'" in str(info.value)
    assert "'gspo'" in str(info.value)
    assert "'vanilla'" in str(info.value)
    again = pickle.loads(pickle.dumps(info.value))
    assert str(again) == str(info.value)

    name = f"test-{uuid.uuid4().hex}"

    @register_policy_loss(name)
    def reinforce(
        *,
        old_log_prob: Tensor,
        log_prob: Tensor,
        advantages: Tensor,
        response_mask: Tensor,
        clip_low: float = 0.0,
        clip_high: float = 0.0,
        clip_c: float | None = None,
        loss_agg_mode: str = "token-mean",
        **agg_kwargs: Unpack[AggKwargs],
    ) -> tuple[Tensor, dict[str, float]]:
        loss_mat = -advantages * log_prob
        return agg_loss(loss_mat=loss_mat, loss_mask=response_mask, loss_agg_mode=loss_agg_mode), {}

    fn: PolicyLossFn = get_policy_loss(name)
    loss, _ = fn(
        old_log_prob=t([[0.0]]),
        log_prob=t([[0.5]]),
        advantages=t([[2.0]]),
        response_mask=torch.ones(1, 1),
    )
    close(loss, -1.0)
    with pytest.raises(ValueError, match=name):
        register_policy_loss(name)(reinforce)
    with pytest.raises(ValueError, match="'vanilla' is already registered"):
        register_policy_loss("vanilla")(ppo_clip_loss)


# --------------------------------------------------------------------------------------------
# KL penalty, entropy, value loss


def test_kl_penalty_values() -> None:
    # d = logp - ref = 1, 0, -2, -5
    logp = t([[0.0, -1.0, -2.0, -5.0]])
    ref = t([[-1.0, -1.0, 0.0, 0.0]])
    close(kl_penalty(log_prob=logp, ref_log_prob=ref, kind="k1"), [[1.0, 0.0, -2.0, -5.0]])
    close(kl_penalty(log_prob=logp, ref_log_prob=ref, kind="kl"), [[1.0, 0.0, -2.0, -5.0]])
    close(kl_penalty(log_prob=logp, ref_log_prob=ref, kind="abs"), [[1.0, 0.0, 2.0, 5.0]])
    close(kl_penalty(log_prob=logp, ref_log_prob=ref, kind="k2"), [[0.5, 0.0, 2.0, 12.5]])
    # k3 = exp(-d) + d - 1: exp(-1) = 0.3678794; 0; exp(2) - 3 = 4.3890561; exp(5) - 6 = 142.4
    # which the clamp caps at 10
    close(
        kl_penalty(log_prob=logp, ref_log_prob=ref, kind="k3"), [[0.3678794, 0.0, 4.3890561, 10.0]]
    )
    close(
        kl_penalty(log_prob=logp, ref_log_prob=ref, kind="low_var_kl"),
        kl_penalty(log_prob=logp, ref_log_prob=ref, kind="k3"),
    )
    with pytest.raises(ValueError, match="unknown KL penalty kind 'k4'"):
        kl_penalty(log_prob=logp, ref_log_prob=ref, kind="k4")
    # verl's straight-through "+" variants are not supported: an error, not a silent k3
    with pytest.raises(ValueError, match="unknown KL penalty kind 'k3\\+'"):
        kl_penalty(log_prob=logp, ref_log_prob=ref, kind="k3+")


def test_entropy_from_logits() -> None:
    logits = torch.tensor(
        [
            [[0.0, 0.0, 0.0, 0.0], [1000.0, 1000.0, -1000.0, -1000.0]],
            [[0.0, 0.0, -math.inf, -math.inf], [50.0, 0.0, 0.0, 0.0]],
        ],
        dtype=F64,
        requires_grad=True,
    )
    ent = entropy_from_logits(logits)
    assert ent.shape == (2, 2)
    # uniform over 4 -> ln 4; two equal huge logits -> ln 2; two of four banned -> ln 2;
    # one dominant logit -> ~0
    close(ent, [[math.log(4), math.log(2)], [math.log(2), 0.0]], atol=1e-9)
    torch.autograd.backward(ent.sum())
    assert logits.grad is not None
    assert bool(torch.isfinite(logits.grad).all())
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 7, generator=gen, dtype=F64)
    p = torch.softmax(x, dim=-1)
    close(entropy_from_logits(x), -(p * p.log()).sum(-1), atol=1e-12)
    assert entropy_from_logits(x.to(torch.bfloat16)).dtype == torch.float32


def test_value_loss_hand_case() -> None:
    # token 0: V=1, Vold=0, R=0, e=0.5: clip(V)=0.5: (1)^2=1 vs (0.5)^2=0.25 -> 1 (unclipped)
    # token 1: V=2, Vold=1, R=3:       clip(V)=1.5: (1)^2=1 vs (1.5)^2=2.25 -> 2.25 (clipped)
    # token 2: masked
    vpreds = t([[1.0, 2.0, NAN]]).requires_grad_(True)
    loss, metrics = value_loss(
        vpreds=vpreds,
        returns=t([[0.0, 3.0, NAN]]),
        values=t([[0.0, 1.0, NAN]]),
        response_mask=t([[1, 1, 0]]),
        cliprange_value=0.5,
    )
    close(loss, 0.5 * (1.0 + 2.25) / 2.0)
    assert metrics == {"vf_clipfrac": pytest.approx(0.5)}
    torch.autograd.backward(loss)
    assert vpreds.grad is not None
    # d/dV of 0.5 * (V - R)^2 / 2 = (V - R) / 2 on token 0; the clipped term is flat in V
    close(vpreds.grad, [[0.5, 0.0, 0.0]])
    with pytest.raises(ValueError, match="cliprange_value"):
        value_loss(
            vpreds=vpreds,
            returns=vpreds,
            values=vpreds,
            response_mask=t([[1, 1, 0]]),
            cliprange_value=-0.1,
        )


# --------------------------------------------------------------------------------------------
# keyword-only calls (verl's names): a swapped log_prob / old_log_prob cannot pass silently


def test_positional_calls_are_type_errors() -> None:
    x = torch.zeros(1, 2)
    for name in policy_loss_names():
        loss_fn: Callable[..., object] = get_policy_loss(name)
        with pytest.raises(TypeError, match="positional"):
            loss_fn(x, x, x, x)
    with pytest.raises(TypeError, match="positional"):
        value_loss(x, x, x, x, 0.2)  # type: ignore[call-arg]  # the point: no positional call
    with pytest.raises(TypeError, match="positional"):
        kl_penalty(x, x, "k1")  # type: ignore[call-arg]  # the point: no positional call
    with pytest.raises(TypeError, match="positional"):
        agg_loss(x, x, "token-mean")  # type: ignore[call-arg]  # the point: no positional call


def test_swapped_log_probs_change_the_loss_and_the_gradient() -> None:
    # The two log-prob tensors play different roles: only log_prob carries the gradient and
    # exchanging them changes the ratio, so naming them is what keeps the call correct.
    old = t([[-1.0, -2.0]])
    new = t([[-0.9, -2.5]])
    adv = t([[1.0, -1.0]])
    mask = torch.ones(1, 2)
    logp = new.clone().requires_grad_(True)
    right, _ = ppo_clip_loss(
        old_log_prob=old, log_prob=logp, advantages=adv, response_mask=mask, clip_c=None
    )
    wrong, _ = ppo_clip_loss(
        old_log_prob=logp, log_prob=old, advantages=adv, response_mask=mask, clip_c=None
    )
    # right: ratios e^0.1 (A = 1, unclipped) and e^-0.5 (A = -1, clipped to 0.8)
    close(right, (-math.exp(0.1) + 0.8) / 2.0)
    # swapped: ratios e^-0.1 (A = 1, unclipped) and e^0.5 (A = -1, unclipped)
    close(wrong, (-math.exp(-0.1) + math.exp(0.5)) / 2.0)
    assert not wrong.requires_grad  # old_log_prob is detached: the swap would train nothing
    torch.autograd.backward(right)
    assert logp.grad is not None
    close(logp.grad, [[-math.exp(0.1) / 2.0, 0.0]], atol=1e-9)


def test_register_policy_loss_rejects_a_signature_the_actor_cannot_call() -> None:
    name = f"test-{uuid.uuid4().hex}"

    def verl_style(
        old_log_prob: Tensor,
        log_prob: Tensor,
        advantages: Tensor,
        response_mask: Tensor,
        loss_agg_mode: str = "token-mean",
        config: object = None,
    ) -> tuple[Tensor, dict[str, float]]:
        loss_mat = -advantages * log_prob
        return agg_loss(loss_mat=loss_mat, loss_mask=response_mask, loss_agg_mode=loss_agg_mode), {}

    # what an untyped port would do; mypy already rejects it, the runtime check names the fix
    untyped = cast(PolicyLossFn, verl_style)
    with pytest.raises(TypeError, match=rf"policy loss '{name}'.*clip_low.*\*\*kwargs"):
        register_policy_loss(name)(untyped)
    assert name not in policy_loss_names()

    def ported(
        *,
        old_log_prob: Tensor,
        log_prob: Tensor,
        advantages: Tensor,
        response_mask: Tensor,
        loss_agg_mode: str = "token-mean",
        **options: object,
    ) -> tuple[Tensor, dict[str, float]]:
        return verl_style(old_log_prob, log_prob, advantages, response_mask, loss_agg_mode)

    register_policy_loss(name)(cast(PolicyLossFn, ported))
    assert get_policy_loss(name) is ported


# --------------------------------------------------------------------------------------------
# conventions that differ from verl's (listed in docs/differences-from-verl.md)


def test_gspo_honours_the_aggregation_mode() -> None:
    # verl's GSPO always aggregates with "seq-mean-token-mean"; ours uses the mode it is given.
    # Rows of 1 and 3 valid tokens, ratio 1 (no clipping), advantages 1 and 2:
    # seq-mean-token-mean -> -(1 + 2) / 2 = -1.5; token-mean -> -(1 + 3 * 2) / 4 = -1.75.
    old = torch.zeros(2, 3, dtype=F64)
    adv = t([[1.0, 1.0, 1.0], [2.0, 2.0, 2.0]])
    mask = torch.tensor([[1, 0, 0], [1, 1, 1]])
    seq, _ = gspo_loss(old_log_prob=old, log_prob=old, advantages=adv, response_mask=mask)
    tok, _ = gspo_loss(
        old_log_prob=old,
        log_prob=old,
        advantages=adv,
        response_mask=mask,
        loss_agg_mode="token-mean",
    )
    close(seq, -1.5)
    close(tok, -1.75)


def test_ppo_kl_metric_is_not_clamped() -> None:
    # The ratio is computed from a log-ratio clamped to [-20, 20] (as verl does), but the ppo_kl
    # metric reports the unclamped masked mean of old - new (verl reports the clamped one).
    old = t([[-40.0, -1.0]])
    logp = t([[-10.0, -1.0]])
    _, metrics = ppo_clip_loss(
        old_log_prob=old, log_prob=logp, advantages=t([[1.0, 1.0]]), response_mask=torch.ones(1, 2)
    )
    assert metrics["ppo_kl"] == pytest.approx(-30.0 / 2)
