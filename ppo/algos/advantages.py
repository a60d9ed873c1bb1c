"""Advantage estimators: pure functions of ``(B, T)`` token tensors.

Every estimator returns ``(advantages, returns)``, both ``(B, T)``, in the dtype of the token
rewards and **exactly zero at masked positions**. They run under :func:`torch.no_grad` (advantages
are constants of the policy-gradient loss) and never read values at masked positions.

Notation: ``r`` token rewards, ``m`` response mask (non-zero = valid response token), ``V``
critic values, ``s_i = sum_t m_it * r_it`` the scalar score of response ``i``. A *group* is the
set of rows that share an ``index`` entry (usually the prompt uid, so the responses sampled for
one prompt). For estimators without a critic ``returns`` is the quantity being regressed towards
in verl-style trainers: the (un-whitened) return-to-go for REINFORCE++/ReMax and the advantage
itself for the group-baseline estimators.

The estimator functions take keyword arguments only, named as verl's
(``token_level_rewards``, ``values``, ``response_mask``, ``index``, ``reward_baselines``,
``epsilon``, ``norm_adv_by_std_in_grpo``, ``gamma``, ``lam``): several inputs are ``(B, T)``
tensors of the same shape, which a positional call could swap silently.

Estimators are also available by name through a registry (:func:`get_advantage_estimator`,
:func:`compute_advantages`) taking one :class:`AdvantageInputs`; register your own with
:func:`register_advantage_estimator`.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any, TypeAlias

import attrs
import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from ._errors import UnknownEstimatorError
from ._masked import masked_whiten

__all__ = [
    "AdvantageEstimator",
    "AdvantageInputs",
    "IndexLike",
    "advantage_estimator_names",
    "compute_advantages",
    "dr_grpo",
    "estimator_needs_baselines",
    "estimator_needs_critic",
    "gae",
    "get_advantage_estimator",
    "grpo",
    "register_advantage_estimator",
    "reinforce_plus_plus",
    "reinforce_plus_plus_baseline",
    "remax",
    "rloo",
]

IndexLike: TypeAlias = Sequence[Hashable] | npt.NDArray[Any]
"""Group key per row: a list of hashables or a 1-d numpy (object) array, e.g. prompt uids."""


# --------------------------------------------------------------------------------------------
# helpers


def _check_2d(name: str, t: Tensor, shape: torch.Size | None = None) -> None:
    """Raise ``ValueError`` unless ``t`` is 2-d (and of ``shape`` when given)."""
    if t.dim() != 2:
        raise ValueError(f"{name} must be (B, T), got shape {tuple(t.shape)}")
    if shape is not None and t.shape != shape:
        raise ValueError(
            f"{name} has shape {tuple(t.shape)} but token_level_rewards has {tuple(shape)}; "
            "all (B, T) inputs must have the same shape"
        )


def _valid(response_mask: Tensor, token_rewards: Tensor) -> Tensor:
    """Validate the ``(B, T)`` rewards/mask pair; return the boolean validity mask."""
    _check_2d("token_level_rewards", token_rewards)
    _check_2d("response_mask", response_mask, token_rewards.shape)
    return response_mask != 0


def _scores(token_rewards: Tensor, valid: Tensor) -> Tensor:
    """``(B,)`` sum of token rewards over valid tokens."""
    return torch.where(valid, token_rewards, torch.zeros_like(token_rewards)).sum(dim=-1)


def _broadcast(per_row: Tensor, valid: Tensor) -> Tensor:
    """``(B,)`` -> ``(B, T)``: the row value on valid tokens, zero elsewhere."""
    full = per_row.unsqueeze(-1).expand(valid.shape)
    return torch.where(valid, full, torch.zeros_like(full))


def _group_ids(index: IndexLike, batch_size: int, device: torch.device) -> tuple[Tensor, int]:
    """Map each row's group key to a dense id ``0..G-1`` (order of first appearance)."""
    if isinstance(index, str | bytes):
        raise TypeError("index must be a sequence of per-row group keys, not a single string")
    if isinstance(index, np.ndarray) and index.ndim != 1:
        raise ValueError(f"index must be 1-d, got an array of shape {index.shape}")
    keys = list(index)
    if len(keys) != batch_size:
        raise ValueError(f"index has {len(keys)} entries but the batch has {batch_size} rows")
    dense: dict[Hashable, int] = {}
    codes = [dense.setdefault(k, len(dense)) for k in keys]
    return torch.tensor(codes, dtype=torch.long, device=device), len(dense)


def _group_sum(values: Tensor, gid: Tensor, n_groups: int) -> Tensor:
    """Per-row sum of ``values`` over the row's group, shape ``(B,)``."""
    out = torch.zeros(n_groups, dtype=values.dtype, device=values.device)
    return out.index_add_(0, gid, values)[gid]


def _return_to_go(token_rewards: Tensor, valid: Tensor, gamma: float) -> Tensor:
    """Discounted return-to-go over valid tokens only (masked tokens neither add nor discount)."""
    running = torch.zeros_like(token_rewards[:, 0])
    out = torch.zeros_like(token_rewards)
    for t in range(token_rewards.shape[1] - 1, -1, -1):
        m = valid[:, t]
        running = torch.where(m, token_rewards[:, t] + gamma * running, running)
        out[:, t] = torch.where(m, running, torch.zeros_like(running))
    return out


# --------------------------------------------------------------------------------------------
# estimators


def gae(
    *,
    token_level_rewards: Tensor,
    values: Tensor,
    response_mask: Tensor,
    gamma: float,
    lam: float,
    whiten: bool = True,
) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation (GAE), backwards over the response tokens.

    ``delta_t = r_t + gamma * V_next - V_t`` and ``A_t = delta_t + gamma * lam * A_next``, where
    ``V_next``/``A_next`` are those of the next *valid* token (masked positions, e.g. tool
    observations inside a multi-turn response, carry them through unchanged, and the value after
    the last valid token is 0).

    Args:
        token_level_rewards: ``(B, T)`` per-token rewards (usually the score on the last token).
        values: ``(B, T)`` critic values ``V_t``.
        response_mask: ``(B, T)``, non-zero on valid response tokens.
        gamma: discount factor.
        lam: GAE lambda.
        whiten: masked-whiten the advantages over all valid tokens of the batch (the default).
            ``False`` returns the raw GAE advantages (with ``gamma = lam = 1`` they equal the
            return-to-go minus the values).

    Returns:
        ``(advantages, returns)``, both ``(B, T)`` and zero at masked positions;
        ``returns = raw advantages + values`` (computed before whitening).
    """
    with torch.no_grad():
        valid = _valid(response_mask, token_level_rewards)
        _check_2d("values", values, token_level_rewards.shape)
        next_value = torch.zeros_like(values[:, 0])
        running = torch.zeros_like(token_level_rewards[:, 0])
        raw = torch.zeros_like(token_level_rewards)
        for t in range(token_level_rewards.shape[1] - 1, -1, -1):
            m = valid[:, t]
            delta = token_level_rewards[:, t] + gamma * next_value - values[:, t]
            running = torch.where(m, delta + gamma * lam * running, running)
            next_value = torch.where(m, values[:, t], next_value)
            raw[:, t] = torch.where(m, running, torch.zeros_like(running))
        zeros = torch.zeros_like(raw)
        returns = torch.where(valid, raw + values, zeros)
        advantages = masked_whiten(raw, valid) if whiten else raw
        return advantages, returns


def grpo(
    *,
    token_level_rewards: Tensor,
    response_mask: Tensor,
    index: IndexLike,
    epsilon: float = 1e-6,
    norm_adv_by_std_in_grpo: bool = True,
) -> tuple[Tensor, Tensor]:
    """GRPO: outcome advantage normalised within each group of responses to the same prompt.

    ``A_i = (s_i - mean_g(s)) / (std_g(s) + epsilon)`` with the unbiased sample std of the group;
    a group of one row gets mean 0 and std 1. ``A_i`` is broadcast over the row's valid tokens.

    Args:
        token_level_rewards: ``(B, T)``; only the per-row sum over valid tokens is used.
        response_mask: ``(B, T)``, non-zero on valid response tokens.
        index: ``B`` group keys (e.g. prompt uid strings), a list or 1-d numpy object array.
        epsilon: added to the std before dividing.
        norm_adv_by_std_in_grpo: divide by the std (GRPO); ``False`` gives Dr.GRPO
            (``s_i - mean_g(s)``).

    Returns:
        ``(advantages, returns)``, both ``(B, T)``, zero at masked positions, and equal.
    """
    with torch.no_grad():
        valid = _valid(response_mask, token_level_rewards)
        s = _scores(token_level_rewards, valid)
        gid, n_groups = _group_ids(index, s.shape[0], s.device)
        count = _group_sum(torch.ones_like(s), gid, n_groups)
        single = count <= 1
        group_mean = _group_sum(s, gid, n_groups) / count
        a = s - torch.where(single, torch.zeros_like(s), group_mean)
        if norm_adv_by_std_in_grpo:
            dev = s - group_mean
            var = _group_sum(dev * dev, gid, n_groups) / (count - 1.0).clamp(min=1.0)
            std = torch.where(single, torch.ones_like(s), var.sqrt())
            a = a / (std + epsilon)
        advantages = _broadcast(a, valid)
        return advantages, advantages.clone()


def dr_grpo(
    *, token_level_rewards: Tensor, response_mask: Tensor, index: IndexLike
) -> tuple[Tensor, Tensor]:
    """Dr.GRPO: :func:`grpo` without the division by the group std (``s_i - mean_g(s)``).

    Shapes and contract as :func:`grpo`.
    """
    return grpo(
        token_level_rewards=token_level_rewards,
        response_mask=response_mask,
        index=index,
        norm_adv_by_std_in_grpo=False,
    )


def rloo(
    *, token_level_rewards: Tensor, response_mask: Tensor, index: IndexLike
) -> tuple[Tensor, Tensor]:
    """RLOO: leave-one-out baseline, ``A_i = s_i - mean_{j in g, j != i} s_j``.

    A group of one row has no baseline and gets advantage 0. Within a group of two or more the
    advantages sum to zero.

    Args:
        token_level_rewards: ``(B, T)``; only the per-row sum over valid tokens is used.
        response_mask: ``(B, T)``, non-zero on valid response tokens.
        index: ``B`` group keys (list or 1-d numpy object array).

    Returns:
        ``(advantages, returns)``, both ``(B, T)``, zero at masked positions, and equal.
    """
    with torch.no_grad():
        valid = _valid(response_mask, token_level_rewards)
        s = _scores(token_level_rewards, valid)
        gid, n_groups = _group_ids(index, s.shape[0], s.device)
        count = _group_sum(torch.ones_like(s), gid, n_groups)
        others = (_group_sum(s, gid, n_groups) - s) / (count - 1.0).clamp(min=1.0)
        a = torch.where(count > 1, s - others, torch.zeros_like(s))
        advantages = _broadcast(a, valid)
        return advantages, advantages.clone()


def reinforce_plus_plus(
    *, token_level_rewards: Tensor, response_mask: Tensor, gamma: float
) -> tuple[Tensor, Tensor]:
    """REINFORCE++: discounted return-to-go, masked-whitened over all valid tokens.

    ``G_t = sum_{k >= t, valid} gamma^(number of valid tokens strictly between t and k) r_k``:
    masked positions inside a response neither add reward nor count as a discount step (the
    same convention as :func:`gae`).

    Args:
        token_level_rewards: ``(B, T)`` per-token rewards.
        response_mask: ``(B, T)``, non-zero on valid response tokens.
        gamma: discount factor.

    Returns:
        ``(advantages, returns)``: the whitened and the raw return-to-go, both ``(B, T)`` and
        zero at masked positions.
    """
    with torch.no_grad():
        valid = _valid(response_mask, token_level_rewards)
        returns = _return_to_go(token_level_rewards, valid, gamma)
        return masked_whiten(returns, valid), returns


def reinforce_plus_plus_baseline(
    *, token_level_rewards: Tensor, response_mask: Tensor, index: IndexLike
) -> tuple[Tensor, Tensor]:
    """REINFORCE++ with a group baseline: ``s_i - mean_g(s)``, broadcast, whitened over the batch.

    A group of one row gets baseline 0 (as in :func:`grpo`). The whitening statistics are taken
    over all valid tokens of the batch, so longer responses weigh more in them.

    Args:
        token_level_rewards: ``(B, T)``; only the per-row sum over valid tokens is used.
        response_mask: ``(B, T)``, non-zero on valid response tokens.
        index: ``B`` group keys (list or 1-d numpy object array).

    Returns:
        ``(advantages, returns)``, both ``(B, T)``, zero at masked positions, and equal.
    """
    with torch.no_grad():
        valid = _valid(response_mask, token_level_rewards)
        s = _scores(token_level_rewards, valid)
        gid, n_groups = _group_ids(index, s.shape[0], s.device)
        count = _group_sum(torch.ones_like(s), gid, n_groups)
        mean = torch.where(count > 1, _group_sum(s, gid, n_groups) / count, torch.zeros_like(s))
        advantages = masked_whiten(_broadcast(s - mean, valid), valid)
        return advantages, advantages.clone()


def remax(
    *, token_level_rewards: Tensor, reward_baselines: Tensor, response_mask: Tensor
) -> tuple[Tensor, Tensor]:
    """ReMax: undiscounted return-to-go minus the score of a greedy rollout of the same prompt.

    Args:
        token_level_rewards: ``(B, T)`` per-token rewards.
        reward_baselines: ``(B,)`` baseline score per row (the greedy response's score).
        response_mask: ``(B, T)``, non-zero on valid response tokens.

    Returns:
        ``(advantages, returns)``: ``G_t - b_i`` and ``G_t``, both ``(B, T)``, zero at masked
        positions. Not whitened.
    """
    with torch.no_grad():
        valid = _valid(response_mask, token_level_rewards)
        if reward_baselines.shape != token_level_rewards.shape[:1]:
            raise ValueError(
                f"reward_baselines must be (B,) = {tuple(token_level_rewards.shape[:1])}, "
                f"got {tuple(reward_baselines.shape)}"
            )
        returns = _return_to_go(token_level_rewards, valid, 1.0)
        advantages = returns - _broadcast(reward_baselines.to(returns.dtype), valid)
        return advantages, returns


# --------------------------------------------------------------------------------------------
# registry


@attrs.frozen(kw_only=True, eq=False)
class AdvantageInputs:
    """Everything a registered advantage estimator may read. Shapes are ``(B, T)`` unless noted.

    Keyword-only. Three fields keep the names the trainer fills them under, not verl's
    estimator argument names: ``token_rewards`` (verl: ``token_level_rewards``), ``eps``
    (``epsilon``) and ``norm_by_std`` (``norm_adv_by_std_in_grpo``).

    Attributes:
        token_rewards: per-token rewards (scores, possibly minus an in-reward KL penalty).
        response_mask: non-zero on valid response tokens.
        values: critic values; required by critic-based estimators (``gae``).
        index: ``B`` group keys (prompt uids); required by group estimators.
        reward_baselines: ``(B,)`` baseline scores; required by ``remax``.
        gamma: discount factor.
        lam: GAE lambda.
        eps: std epsilon of the GRPO normalisation.
        norm_by_std: GRPO divides by the group std (``False`` gives Dr.GRPO behaviour).
    """

    token_rewards: Tensor
    response_mask: Tensor
    values: Tensor | None = None
    index: IndexLike | None = None
    reward_baselines: Tensor | None = None
    gamma: float = 1.0
    lam: float = 1.0
    eps: float = 1e-6
    norm_by_std: bool = True


AdvantageEstimator: TypeAlias = Callable[[AdvantageInputs], tuple[Tensor, Tensor]]
"""A registered estimator: ``AdvantageInputs -> (advantages, returns)``, both ``(B, T)``."""


@attrs.frozen
class _Entry:
    """A registry entry: the estimator and which optional inputs it needs."""

    fn: AdvantageEstimator
    needs_critic: bool
    needs_baselines: bool = False


_REGISTRY: dict[str, _Entry] = {}


def register_advantage_estimator(
    name: str, *, needs_critic: bool = False, needs_baselines: bool = False
) -> Callable[[AdvantageEstimator], AdvantageEstimator]:
    """Decorator registering an estimator ``(AdvantageInputs) -> (advantages, returns)``.

    Args:
        name: the registry key (what a config names).
        needs_critic: the estimator reads ``AdvantageInputs.values`` (the trainer then runs a
            critic); see :func:`estimator_needs_critic`.
        needs_baselines: the estimator reads ``AdvantageInputs.reward_baselines`` (the trainer
            then scores one greedy rollout per prompt); see :func:`estimator_needs_baselines`.

    Returns:
        A decorator that registers the function and returns it unchanged.

    Raises:
        ValueError: ``name`` is empty or already registered (when the decorator is applied).
    """
    if not name:
        raise ValueError("advantage estimator name must be a non-empty string")

    def decorator(fn: AdvantageEstimator) -> AdvantageEstimator:
        """Register ``fn`` under ``name``; ``ValueError`` if the name is taken."""
        if name in _REGISTRY:
            raise ValueError(
                f"advantage estimator {name!r} is already registered "
                f"(by {_REGISTRY[name].fn!r}); pick another name"
            )
        _REGISTRY[name] = _Entry(fn, needs_critic, needs_baselines)
        return fn

    return decorator


def _entry(name: str) -> _Entry:
    """The registry entry for ``name``, or :class:`UnknownEstimatorError`."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownEstimatorError(name, _REGISTRY) from None


def get_advantage_estimator(name: str) -> AdvantageEstimator:
    """The estimator registered under ``name``.

    Raises:
        UnknownEstimatorError: (a ``KeyError``) no such name; the message lists the known ones.
    """
    return _entry(name).fn


def advantage_estimator_names() -> tuple[str, ...]:
    """All registered estimator names, sorted."""
    return tuple(sorted(_REGISTRY))


def estimator_needs_critic(name: str) -> bool:
    """Whether the estimator ``name`` needs critic values (``True`` only for ``"gae"`` built-in).

    Raises:
        UnknownEstimatorError: no such name.
    """
    return _entry(name).needs_critic


def estimator_needs_baselines(name: str) -> bool:
    """Whether the estimator ``name`` needs greedy-rollout baseline scores (``"remax"``).

    Raises:
        UnknownEstimatorError: no such name.
    """
    return _entry(name).needs_baselines


def compute_advantages(name: str, inputs: AdvantageInputs) -> tuple[Tensor, Tensor]:
    """Run the estimator registered under ``name`` on ``inputs``.

    Returns:
        ``(advantages, returns)``, both ``(B, T)``, zero at masked positions.

    Raises:
        UnknownEstimatorError: no such name.
        ValueError: a field the estimator needs is ``None``.
    """
    return get_advantage_estimator(name)(inputs)


def _missing(field: str, name: str) -> ValueError:
    """The error for a required :class:`AdvantageInputs` field left as ``None``."""
    return ValueError(f"advantage estimator {name!r} needs AdvantageInputs.{field}, got None")


def _require_tensor(value: Tensor | None, field: str, name: str) -> Tensor:
    """``value`` if it is set, else ``ValueError`` naming ``field``."""
    if value is None:
        raise _missing(field, name)
    return value


def _require_index(value: IndexLike | None, name: str) -> IndexLike:
    """``value`` if it is set, else ``ValueError`` naming ``index``."""
    if value is None:
        raise _missing("index", name)
    return value


@register_advantage_estimator("gae", needs_critic=True)
def _gae(x: AdvantageInputs) -> tuple[Tensor, Tensor]:
    """Registry adapter for :func:`gae` (needs ``values``)."""
    values = _require_tensor(x.values, "values", "gae")
    return gae(
        token_level_rewards=x.token_rewards,
        values=values,
        response_mask=x.response_mask,
        gamma=x.gamma,
        lam=x.lam,
    )


@register_advantage_estimator("grpo")
def _grpo(x: AdvantageInputs) -> tuple[Tensor, Tensor]:
    """Registry adapter for :func:`grpo` (needs ``index``; honours ``eps``/``norm_by_std``)."""
    index = _require_index(x.index, "grpo")
    return grpo(
        token_level_rewards=x.token_rewards,
        response_mask=x.response_mask,
        index=index,
        epsilon=x.eps,
        norm_adv_by_std_in_grpo=x.norm_by_std,
    )


@register_advantage_estimator("dr_grpo")
def _dr_grpo(x: AdvantageInputs) -> tuple[Tensor, Tensor]:
    """Registry adapter for :func:`dr_grpo` (needs ``index``)."""
    index = _require_index(x.index, "dr_grpo")
    return dr_grpo(token_level_rewards=x.token_rewards, response_mask=x.response_mask, index=index)


@register_advantage_estimator("rloo")
def _rloo(x: AdvantageInputs) -> tuple[Tensor, Tensor]:
    """Registry adapter for :func:`rloo` (needs ``index``)."""
    index = _require_index(x.index, "rloo")
    return rloo(token_level_rewards=x.token_rewards, response_mask=x.response_mask, index=index)


@register_advantage_estimator("reinforce_plus_plus")
def _reinforce_plus_plus(x: AdvantageInputs) -> tuple[Tensor, Tensor]:
    """Registry adapter for :func:`reinforce_plus_plus` (uses ``gamma``)."""
    return reinforce_plus_plus(
        token_level_rewards=x.token_rewards, response_mask=x.response_mask, gamma=x.gamma
    )


@register_advantage_estimator("reinforce_plus_plus_baseline")
def _reinforce_plus_plus_baseline(x: AdvantageInputs) -> tuple[Tensor, Tensor]:
    """Registry adapter for :func:`reinforce_plus_plus_baseline`."""
    index = _require_index(x.index, "reinforce_plus_plus_baseline")
    return reinforce_plus_plus_baseline(
        token_level_rewards=x.token_rewards, response_mask=x.response_mask, index=index
    )


@register_advantage_estimator("remax", needs_baselines=True)
def _remax(x: AdvantageInputs) -> tuple[Tensor, Tensor]:
    """Registry adapter for :func:`remax` (needs ``reward_baselines``)."""
    baselines = _require_tensor(x.reward_baselines, "reward_baselines", "remax")
    return remax(
        token_level_rewards=x.token_rewards,
        reward_baselines=baselines,
        response_mask=x.response_mask,
    )
