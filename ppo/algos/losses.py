"""Policy, value, KL and entropy losses, and the loss aggregation modes.

All functions are pure torch. Token tensors are ``(B, T)``; ``response_mask`` is non-zero on the
valid response tokens and values at masked positions are never read (they may even be ``nan``:
they are replaced with :func:`torch.where` before any arithmetic, so they get zero gradient).

Every tensor argument is **keyword-only** and named as in verl's ``core_algos``
(``old_log_prob``, ``log_prob``, ``advantages``, ``response_mask``, ``vpreds``, ``values``,
``returns``, ``loss_mat``, ``loss_mask``, ``loss_agg_mode``): two ``(B, T)`` tensors of the same
shape swapped by position would otherwise pass silently, and a positional call is a
``TypeError``. Options verl keeps in its config rather than in the signature keep our names
(``clip_low``, ``clip_high``, ``clip_c``, ``kind``).

Data parallelism. :func:`agg_loss` (and every loss taking ``**agg_kwargs``) can normalise by
*global* counts: pass ``global_tokens`` / ``global_seqs``, the number of valid tokens / sequences
in the whole mini-batch across every data-parallel rank and micro-batch (see
:func:`agg_normalizers`). Each rank's loss is then its share of the whole-batch loss: the sum of
the per-rank (per-micro-batch) losses equals the loss of the entire mini-batch computed at once,
whatever the split. The caller therefore **sums** gradients across ranks (``all_reduce(SUM)``)
and accumulates micro-batch gradients without rescaling. A backend that *averages* gradients
over ``dp_size`` ranks (DDP, FSDP) must multiply the loss by ``dp_size`` to get the same update.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Protocol, TypedDict, TypeVar, Unpack

import torch
from torch import Tensor

from ._errors import UnknownPolicyLossError
from ._masked import masked_mean, masked_sum

__all__ = [
    "AGG_MODES",
    "AggKwargs",
    "PolicyLossFn",
    "agg_loss",
    "agg_normalizers",
    "entropy_from_logits",
    "get_policy_loss",
    "gspo_loss",
    "kl_penalty",
    "policy_loss_names",
    "ppo_clip_loss",
    "register_policy_loss",
    "value_loss",
]

AGG_MODES: tuple[str, ...] = (
    "seq-mean-token-mean",
    "seq-mean-token-sum",
    "seq-mean-token-sum-norm",
    "token-mean",
    "token-sum",
)
"""The valid ``loss_agg_mode`` values of :func:`agg_loss`."""


class AggKwargs(TypedDict, total=False):
    """Keyword arguments forwarded to :func:`agg_loss` by the losses (``**agg_kwargs``)."""

    global_tokens: float | None
    global_seqs: float | None
    horizon: int | None


def _check_same(name: str, t: Tensor, ref: Tensor) -> None:
    """Raise ``ValueError`` unless ``t`` has the shape of ``ref``."""
    if t.shape != ref.shape:
        raise ValueError(
            f"{name} has shape {tuple(t.shape)}, expected {tuple(ref.shape)} (the shape of the "
            "first token tensor)"
        )


def _check_2d(name: str, t: Tensor) -> None:
    """Raise ``ValueError`` unless ``t`` is 2-d ``(B, T)``."""
    if t.dim() != 2:
        raise ValueError(f"{name} must be (B, T), got shape {tuple(t.shape)}")


def _zero_masked(x: Tensor, valid: Tensor) -> Tensor:
    """``x`` with masked positions replaced by 0 (zero gradient there too)."""
    return torch.where(valid, x, torch.zeros_like(x))


def _positive(name: str, value: float | None) -> None:
    """Raise ``ValueError`` if an optional normaliser is given and not ``> 0``."""
    if value is not None and not value > 0:
        raise ValueError(f"{name} must be > 0 when given, got {value!r}")


# --------------------------------------------------------------------------------------------
# aggregation


def agg_normalizers(response_mask: Tensor) -> AggKwargs:
    """Global counts of a whole mini-batch, to pass to every shard's :func:`agg_loss`.

    Args:
        response_mask: ``(B, T)`` mask of the *entire* mini-batch (all ranks, all micro-batches).

    Returns:
        ``{"global_tokens": valid tokens, "global_seqs": rows with at least one valid token}``.
    """
    _check_2d("response_mask", response_mask)
    valid = response_mask != 0
    return {
        "global_tokens": float(valid.sum().item()),
        "global_seqs": float(valid.any(dim=-1).sum().item()),
    }


def agg_loss(
    *,
    loss_mat: Tensor,
    loss_mask: Tensor,
    loss_agg_mode: str,
    global_tokens: float | None = None,
    global_seqs: float | None = None,
    horizon: int | None = None,
) -> Tensor:
    """Reduce a ``(B, T)`` per-token loss to a scalar (verl's ``agg_loss``, keyword-only).

    Modes (``n_tok`` valid tokens, ``n_seq`` rows with at least one valid token, ``L_i`` the
    valid-token sum of row ``i``, ``l_i`` its valid-token count):

    * ``"token-mean"``: ``sum_i L_i / n_tok``.
    * ``"token-sum"``: ``sum_i L_i`` (no normaliser, so already split-invariant).
    * ``"seq-mean-token-sum"``: ``sum_i L_i / n_seq``.
    * ``"seq-mean-token-mean"``: ``sum_i (L_i / l_i) / n_seq``.
    * ``"seq-mean-token-sum-norm"``: ``sum_i L_i / (n_seq * horizon)`` (Dr.GRPO): a constant
      length normaliser; ``horizon`` defaults to ``T`` but should be fixed (e.g. the max
      response length) since ``T`` follows the padding of each batch.

    Data-parallel invariance: when ``global_tokens`` / ``global_seqs`` are given they replace the
    local ``n_tok`` / ``n_seq`` (the other is still counted locally if only one is given). With
    the counts of the whole mini-batch, summing the results over any row-wise split of the
    batch (ranks, micro-batches) gives the whole-batch result; the caller then sums (all-reduce
    SUM) the gradients across ranks. See the module docstring for averaging backends.

    Args (keyword-only):
        loss_mat: ``(B, T)`` per-token loss.
        loss_mask: ``(B, T)``, non-zero on valid tokens.
        loss_agg_mode: one of :data:`AGG_MODES`.
        global_tokens: total valid tokens of the whole mini-batch (> 0), or ``None``.
        global_seqs: total valid sequences of the whole mini-batch (> 0), or ``None``.
        horizon: length normaliser of ``"seq-mean-token-sum-norm"`` (> 0), default ``T``.

    Returns:
        A 0-d tensor, differentiable in ``loss_mat``. With no valid token and local counts the
        result is ``0``.

    Raises:
        ValueError: unknown ``loss_agg_mode`` (the message lists the valid ones), shape
            mismatch, or a non-positive normaliser.
    """
    mode = loss_agg_mode
    if mode not in AGG_MODES:
        raise ValueError(f"unknown loss aggregation mode {mode!r}; valid modes: {AGG_MODES}")
    _check_2d("loss_mat", loss_mat)
    _check_same("loss_mask", loss_mask, loss_mat)
    _positive("global_tokens", global_tokens)
    _positive("global_seqs", global_seqs)
    _positive("horizon", horizon)
    valid = loss_mask != 0
    if mode == "token-sum":
        return masked_sum(loss_mat, valid)
    if mode == "token-mean":
        n_tok = valid.sum().to(loss_mat.dtype).clamp(min=1.0)
        return masked_sum(loss_mat, valid) / (n_tok if global_tokens is None else global_tokens)
    if mode == "seq-mean-token-mean":
        per_seq = masked_mean(loss_mat, valid, dim=-1)
    else:
        per_seq = masked_sum(loss_mat, valid, dim=-1)
        if mode == "seq-mean-token-sum-norm":
            per_seq = per_seq / float(loss_mat.shape[-1] if horizon is None else horizon)
    n_seq = valid.any(dim=-1).sum().to(loss_mat.dtype).clamp(min=1.0)
    return per_seq.sum() / (n_seq if global_seqs is None else global_seqs)


# --------------------------------------------------------------------------------------------
# policy losses


class PolicyLossFn(Protocol):
    """A policy loss, called by keyword only: ``old_log_prob``, ``log_prob``, ``advantages``,
    ``response_mask`` (verl's names and order) plus options; returns ``(loss, metrics)``.

    All four tensors are ``(B, T)``; ``loss`` is a 0-d tensor differentiable in ``log_prob``;
    ``metrics`` maps names to Python floats. Options: clip ranges, the aggregation mode
    ``loss_agg_mode`` and the :class:`AggKwargs` forwarded to :func:`agg_loss`. The actor passes
    every one of these by keyword, so an implementation may take the options it ignores as
    ``**kwargs``; :func:`register_policy_loss` checks this when the loss is registered.
    """

    def __call__(
        self,
        *,
        old_log_prob: Tensor,
        log_prob: Tensor,
        advantages: Tensor,
        response_mask: Tensor,
        clip_low: float = ...,
        clip_high: float = ...,
        clip_c: float | None = ...,
        loss_agg_mode: str = ...,
        **agg_kwargs: Unpack[AggKwargs],
    ) -> tuple[Tensor, dict[str, float]]:
        """Compute ``(loss, metrics)``; see :class:`PolicyLossFn`."""
        ...


_LossT = TypeVar("_LossT", bound=PolicyLossFn)
_POLICY_LOSSES: dict[str, PolicyLossFn] = {}

_POLICY_LOSS_KEYWORDS: tuple[str, ...] = (
    "old_log_prob",
    "log_prob",
    "advantages",
    "response_mask",
    "clip_low",
    "clip_high",
    "clip_c",
    "loss_agg_mode",
    *AggKwargs.__annotations__,
)
"""Every keyword the actor passes to a policy loss."""


def _check_keyword_callable(name: str, fn: Callable[..., object]) -> None:
    """``TypeError`` unless ``fn`` accepts every keyword of :data:`_POLICY_LOSS_KEYWORDS`."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # no introspectable signature (a C callable): nothing to check
    try:
        signature.bind(**dict.fromkeys(_POLICY_LOSS_KEYWORDS))
    except TypeError as err:
        raise TypeError(
            f"policy loss {name!r} ({fn!r}) cannot be called by keyword with "
            f"{', '.join(_POLICY_LOSS_KEYWORDS)}: {err}. Name its tensor parameters "
            "old_log_prob, log_prob, advantages, response_mask (verl's names) and take the "
            "options it ignores as **kwargs"
        ) from None


def register_policy_loss(name: str) -> Callable[[_LossT], _LossT]:
    """Decorator registering a :class:`PolicyLossFn` under ``name``.

    Raises:
        ValueError: ``name`` is empty or already registered (when the decorator is applied).
        TypeError: the function cannot be called with the keywords the actor passes (see
            :class:`PolicyLossFn`), e.g. a verl loss whose options come from a ``config``
            argument (when the decorator is applied).
    """
    if not name:
        raise ValueError("policy loss name must be a non-empty string")

    def decorator(fn: _LossT) -> _LossT:
        """Register ``fn`` under ``name``; ``ValueError`` if the name is taken."""
        if name in _POLICY_LOSSES:
            raise ValueError(
                f"policy loss {name!r} is already registered (by {_POLICY_LOSSES[name]!r}); "
                "pick another name"
            )
        _check_keyword_callable(name, fn)
        _POLICY_LOSSES[name] = fn
        return fn

    return decorator


def get_policy_loss(name: str) -> PolicyLossFn:
    """The policy loss registered under ``name`` (built-ins: ``"vanilla"``, ``"gspo"``).

    Raises:
        UnknownPolicyLossError: (a ``KeyError``) no such name; the message lists the known ones.
    """
    try:
        return _POLICY_LOSSES[name]
    except KeyError:
        raise UnknownPolicyLossError(name, _POLICY_LOSSES) from None


def policy_loss_names() -> tuple[str, ...]:
    """All registered policy loss names, sorted."""
    return tuple(sorted(_POLICY_LOSSES))


def _check_clip(clip_low: float, clip_high: float, clip_c: float | None) -> None:
    """Validate the clip parameters of the PPO-style losses."""
    if not 0.0 <= clip_low < 1.0:
        raise ValueError(f"clip_low must be in [0, 1), got {clip_low!r}")
    if not clip_high >= 0.0:
        raise ValueError(f"clip_high must be >= 0, got {clip_high!r}")
    if clip_c is not None and not clip_c > 1.0:
        raise ValueError(f"clip_c (dual-clip bound) must be > 1 or None to disable, got {clip_c!r}")


def _policy_inputs(
    *, old_log_prob: Tensor, log_prob: Tensor, advantages: Tensor, response_mask: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Validate shapes; return ``(valid, log_prob, log_ratio, advantages)`` zeroed where masked."""
    _check_2d("log_prob", log_prob)
    _check_same("old_log_prob", old_log_prob, log_prob)
    _check_same("advantages", advantages, log_prob)
    _check_same("response_mask", response_mask, log_prob)
    valid = response_mask != 0
    lp = _zero_masked(log_prob, valid)
    log_ratio = lp - _zero_masked(old_log_prob.detach(), valid)
    return valid, lp, log_ratio, _zero_masked(advantages.detach(), valid)


def _clipped_surrogate(
    ratio: Tensor,
    advantages: Tensor,
    clip_low: float,
    clip_high: float,
    clip_c: float | None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-token clipped surrogate; returns ``(losses, clipped_upper, clipped_lower)``."""
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    losses = torch.maximum(unclipped, clipped)
    hit = clipped > unclipped
    if clip_c is None:
        return losses, hit, torch.zeros_like(hit)
    cap = -advantages * clip_c
    negative = advantages < 0
    hit_lower = negative & (losses > cap)
    return torch.where(negative, torch.minimum(losses, cap), losses), hit, hit_lower


def _metrics(valid: Tensor, hit: Tensor, hit_lower: Tensor, log_ratio: Tensor) -> dict[str, float]:
    """Shard-local policy-loss metrics as Python floats (one device sync each)."""
    with torch.no_grad():
        return {
            "pg_clipfrac": float(masked_mean(hit.float(), valid).item()),
            "pg_clipfrac_lower": float(masked_mean(hit_lower.float(), valid).item()),
            "ppo_kl": float(masked_mean(-log_ratio.float(), valid).item()),
        }


@register_policy_loss("vanilla")
def ppo_clip_loss(
    *,
    old_log_prob: Tensor,
    log_prob: Tensor,
    advantages: Tensor,
    response_mask: Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    clip_c: float | None = 3.0,
    loss_agg_mode: str = "token-mean",
    **agg_kwargs: Unpack[AggKwargs],
) -> tuple[Tensor, dict[str, float]]:
    """PPO clipped surrogate with asymmetric clip range and dual clip (registered as "vanilla").

    Per token: ``r = exp(logp - logp_old)`` (log-ratio clamped to ``[-20, 20]``),
    ``loss = max(-A r, -A clip(r, 1 - clip_low, 1 + clip_high))``; for ``A < 0`` the loss is
    further capped at ``-A * clip_c`` (dual clip, bounding the push-down of very unlikely-now
    tokens). Then aggregated with :func:`agg_loss`.

    Args (keyword-only; a positional call is a ``TypeError``):
        old_log_prob: ``(B, T)`` behaviour-policy log-probs (treated as constant).
        log_prob: ``(B, T)`` current policy log-probs (carries the gradient).
        advantages: ``(B, T)`` (treated as constant).
        response_mask: ``(B, T)``, non-zero on valid tokens.
        clip_low: ``eps_low`` in ``[0, 1)``.
        clip_high: ``eps_high >= 0`` (clip-higher: set above ``clip_low``).
        clip_c: dual-clip constant ``> 1``; ``None`` disables the dual clip.
        loss_agg_mode: aggregation mode, see :func:`agg_loss`.
        **agg_kwargs: ``global_tokens`` / ``global_seqs`` / ``horizon`` for :func:`agg_loss`.

    Returns:
        ``(loss, metrics)``: 0-d loss; ``pg_clipfrac`` (fraction of valid tokens where the
        ``eps`` clip is active), ``pg_clipfrac_lower`` (fraction where the dual clip is active),
        ``ppo_kl`` (masked mean of ``logp_old - logp``). Metrics are local to this shard.

    Raises:
        ValueError: bad shapes, clip parameters or aggregation arguments.
    """
    _check_clip(clip_low, clip_high, clip_c)
    valid, _, log_ratio, adv = _policy_inputs(
        old_log_prob=old_log_prob,
        log_prob=log_prob,
        advantages=advantages,
        response_mask=response_mask,
    )
    ratio = torch.exp(log_ratio.clamp(-20.0, 20.0))
    losses, hit, hit_lower = _clipped_surrogate(ratio, adv, clip_low, clip_high, clip_c)
    loss = agg_loss(loss_mat=losses, loss_mask=valid, loss_agg_mode=loss_agg_mode, **agg_kwargs)
    return loss, _metrics(valid, hit, hit_lower, log_ratio)


@register_policy_loss("gspo")
def gspo_loss(
    *,
    old_log_prob: Tensor,
    log_prob: Tensor,
    advantages: Tensor,
    response_mask: Tensor,
    clip_low: float = 3e-4,
    clip_high: float = 4e-4,
    clip_c: float | None = None,
    loss_agg_mode: str = "seq-mean-token-mean",
    **agg_kwargs: Unpack[AggKwargs],
) -> tuple[Tensor, dict[str, float]]:
    """GSPO: PPO clip on the sequence-level importance ratio (registered as "gspo").

    ``s_i = exp(mean_{valid t} (logp_it - logp_old_it))`` (length-normalised), used per token
    through the straight-through form ``s_it = sg(s_i) * exp(logp_it - sg(logp_it))``: its value
    is ``s_i`` everywhere in the row (so clipping decisions are per sequence) while its gradient
    is ``s_i * grad(logp_it)``, which with ``"seq-mean-token-mean"`` aggregation and a per-row
    advantage is exactly the GSPO sequence gradient ``s_i * mean_t grad(logp_it)``. The log of
    ``s_it`` is clamped at 10. Clip defaults are the GSPO paper's (``3e-4`` / ``4e-4``); no dual
    clip by default.

    Args, returns and raises: as :func:`ppo_clip_loss` (the default ``loss_agg_mode`` is
    ``"seq-mean-token-mean"``, the paper's sequence-level objective, and unlike verl another
    mode given is honoured). ``ppo_kl`` is still the
    token-level masked mean of ``logp_old - logp``.
    """
    _check_clip(clip_low, clip_high, clip_c)
    valid, lp, log_ratio, adv = _policy_inputs(
        old_log_prob=old_log_prob,
        log_prob=log_prob,
        advantages=advantages,
        response_mask=response_mask,
    )
    seq_log_ratio = masked_mean(log_ratio, valid, dim=-1).detach()
    log_token_ratio = (lp - lp.detach() + seq_log_ratio.unsqueeze(-1)).clamp(max=10.0)
    ratio = torch.exp(log_token_ratio)
    losses, hit, hit_lower = _clipped_surrogate(ratio, adv, clip_low, clip_high, clip_c)
    loss = agg_loss(loss_mat=losses, loss_mask=valid, loss_agg_mode=loss_agg_mode, **agg_kwargs)
    return loss, _metrics(valid, hit, hit_lower, log_ratio)


# --------------------------------------------------------------------------------------------
# KL, entropy, value


_KL_KINDS: tuple[str, ...] = ("abs", "k1", "k2", "k3", "kl", "low_var_kl", "mse")
# ``kl``, ``mse`` and ``low_var_kl`` are aliases of ``k1``, ``k2`` and ``k3``.

_KL_ALIASES = {"kl": "k1", "mse": "k2", "low_var_kl": "k3"}


def kl_penalty(*, log_prob: Tensor, ref_log_prob: Tensor, kind: str) -> Tensor:
    """Per-token estimate of ``KL(policy || reference)`` from sampled-token log-probs.

    With ``d = logp - logp_ref``:

    * ``"k1"``: ``d`` (unbiased, can be negative);
    * ``"abs"``: ``|d|``;
    * ``"k2"``: ``0.5 * d**2``;
    * ``"k3"``: ``exp(-d) + d - 1`` (non-negative, low variance), with ``-d`` clamped to
      ``[-20, 20]`` before ``exp`` and the result clamped to ``[-10, 10]``.

    Args (keyword-only):
        log_prob: ``(B, T)`` (or any shape) policy log-probs.
        ref_log_prob: same shape, reference-policy log-probs.
        kind: ``"k1"``, ``"abs"``, ``"k2"`` or ``"k3"`` (aliases ``"kl"``, ``"mse"``,
            ``"low_var_kl"``); verl calls this argument ``kl_penalty`` and also accepts a
            ``"+"`` suffix (straight-through k2 gradient), which is not supported here.

    Returns:
        Same shape as the inputs, differentiable in both. No masking is applied.

    Raises:
        ValueError: unknown ``kind`` or shape mismatch.
    """
    if kind not in _KL_KINDS:
        raise ValueError(f"unknown KL penalty kind {kind!r}; valid kinds: {_KL_KINDS}")
    _check_same("ref_log_prob", ref_log_prob, log_prob)
    kind = _KL_ALIASES.get(kind, kind)
    diff = log_prob - ref_log_prob
    if kind == "k1":
        return diff
    if kind == "abs":
        return diff.abs()
    if kind == "k2":
        return 0.5 * diff.square()
    neg = (-diff).clamp(-20.0, 20.0)
    return (torch.exp(neg) - neg - 1.0).clamp(-10.0, 10.0)


def entropy_from_logits(logits: Tensor) -> Tensor:
    """Entropy of the categorical distribution given by ``logits`` over the last dimension.

    ``H = -sum_v p_v log p_v`` with ``log p = log_softmax(logits)`` (a logsumexp shift, so it is
    stable for large logits). ``-inf`` logits (banned tokens) contribute exactly 0, with a
    finite gradient. Half-precision input is computed in float32.

    Args:
        logits: ``(B, T, V)`` (any leading shape).

    Returns:
        ``(B, T)``: the entropy per position, differentiable in ``logits``.
    """
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    logp = torch.log_softmax(logits, dim=-1)
    p = logp.exp()
    safe_logp = logp.masked_fill(torch.isinf(logp), 0.0)
    return -(p * safe_logp).sum(dim=-1)


def value_loss(
    *,
    vpreds: Tensor,
    returns: Tensor,
    values: Tensor,
    response_mask: Tensor,
    cliprange_value: float,
    loss_agg_mode: str = "token-mean",
    **agg_kwargs: Unpack[AggKwargs],
) -> tuple[Tensor, dict[str, float]]:
    """Clipped value loss ``0.5 * max((V - R)^2, (clip(V, V_old - e, V_old + e) - R)^2)``.

    verl's ``compute_value_loss`` names and meaning: ``vpreds`` are the *current* predictions
    and ``values`` the values recorded at rollout time.

    Args (keyword-only; a positional call is a ``TypeError``):
        vpreds: ``(B, T)`` current critic values ``V`` (carries the gradient).
        returns: ``(B, T)`` regression targets ``R`` (constant).
        values: ``(B, T)`` values at rollout time ``V_old`` (constant).
        response_mask: ``(B, T)``, non-zero on valid tokens.
        cliprange_value: ``e >= 0``.
        loss_agg_mode: aggregation mode, see :func:`agg_loss`.
        **agg_kwargs: ``global_tokens`` / ``global_seqs`` / ``horizon`` for :func:`agg_loss`.

    Returns:
        ``(loss, metrics)``: 0-d loss; ``vf_clipfrac``, the fraction of valid tokens where the
        clipped term is the larger one.

    Raises:
        ValueError: bad shapes, negative ``cliprange_value`` or bad aggregation arguments.
    """
    if not cliprange_value >= 0.0:
        raise ValueError(f"cliprange_value must be >= 0, got {cliprange_value!r}")
    _check_2d("vpreds", vpreds)
    _check_same("values", values, vpreds)
    _check_same("returns", returns, vpreds)
    _check_same("response_mask", response_mask, vpreds)
    valid = response_mask != 0
    v = _zero_masked(vpreds, valid)
    v_old = _zero_masked(values.detach(), valid)
    r = _zero_masked(returns.detach(), valid)
    v_clipped = v_old + (v - v_old).clamp(-cliprange_value, cliprange_value)
    unclipped = (v - r).square()
    clipped = (v_clipped - r).square()
    per_token = torch.maximum(unclipped, clipped)
    loss = 0.5 * agg_loss(
        loss_mat=per_token, loss_mask=valid, loss_agg_mode=loss_agg_mode, **agg_kwargs
    )
    with torch.no_grad():
        clipfrac = float(masked_mean((clipped > unclipped).float(), valid).item())
    return loss, {"vf_clipfrac": clipfrac}
