"""KL-in-reward: coefficient controllers and the reward shaping step.

A controller holds the coefficient ``beta`` of the KL penalty subtracted from the token scores
(:func:`apply_kl_in_reward`). :class:`FixedKLController` keeps it constant;
:class:`AdaptiveKLController` steers it so the observed KL tracks a target (Ziegler et al.,
2019): ``beta *= 1 + clip(kl / target - 1, -0.2, 0.2) * n_steps / horizon``.

Both are plain classes with ``state_dict()`` / ``load_state_dict()`` for checkpoints; the state
is only the current coefficient (``target`` and ``horizon`` come from the configuration).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, Protocol, runtime_checkable

import torch
from torch import Tensor

from ._masked import masked_mean
from .losses import kl_penalty

__all__ = [
    "AdaptiveKLController",
    "FixedKLController",
    "KLController",
    "apply_kl_in_reward",
    "make_kl_controller",
]


@runtime_checkable
class KLController(Protocol):
    """The controller surface :func:`apply_kl_in_reward` needs."""

    @property
    def value(self) -> float:
        """The current KL coefficient ``beta``."""
        ...

    def update(self, current_kl: float, n_steps: int) -> None:
        """Adapt ``value`` after observing ``current_kl`` over ``n_steps`` samples."""
        ...

    def state_dict(self) -> dict[str, float]:
        """Checkpointable state."""
        ...

    def load_state_dict(self, state: Mapping[str, float]) -> None:
        """Restore from :meth:`state_dict`."""
        ...


def _check_coef(value: float) -> float:
    """Validate a KL coefficient (``>= 0``) and return it as a float."""
    if not value >= 0.0:
        raise ValueError(f"KL coefficient must be >= 0, got {value!r}")
    return float(value)


class FixedKLController:
    """A constant KL coefficient; :meth:`update` does nothing.

    Args:
        value: the coefficient ``beta >= 0``.
    """

    def __init__(self, value: float) -> None:
        self._value = _check_coef(value)

    @property
    def value(self) -> float:
        """The KL coefficient."""
        return self._value

    def update(self, current_kl: float, n_steps: int) -> None:
        """No-op (kept for the :class:`KLController` interface)."""

    def state_dict(self) -> dict[str, float]:
        """``{"value": beta}``."""
        return {"value": self._value}

    def load_state_dict(self, state: Mapping[str, float]) -> None:
        """Restore ``value`` from :meth:`state_dict` output."""
        self._value = _check_coef(state["value"])

    def __repr__(self) -> str:
        return f"FixedKLController(value={self._value!r})"


class AdaptiveKLController:
    """Adaptive KL coefficient (proportional controller on ``log beta``).

    ``update(kl, n)`` sets ``value *= 1 + clip(kl / target - 1, -0.2, 0.2) * n / horizon``: the
    coefficient grows when the observed KL is above ``target`` and shrinks when below, by at most
    20 % per ``horizon`` samples.

    Args:
        init_value: initial coefficient ``>= 0``.
        target: target KL ``> 0``.
        horizon: number of samples over which the full correction applies, ``> 0``.
    """

    def __init__(self, init_value: float, target: float, horizon: float) -> None:
        if not target > 0.0:
            raise ValueError(f"target KL must be > 0, got {target!r}")
        if not horizon > 0:
            raise ValueError(f"horizon must be > 0, got {horizon!r}")
        self._value = _check_coef(init_value)
        self.target = float(target)
        self.horizon = float(horizon)

    @property
    def value(self) -> float:
        """The current KL coefficient."""
        return self._value

    def update(self, current_kl: float, n_steps: int) -> None:
        """Adapt the coefficient after ``n_steps`` samples whose mean KL was ``current_kl``."""
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self._value *= 1.0 + error * n_steps / self.horizon

    def state_dict(self) -> dict[str, float]:
        """``{"value": beta}``."""
        return {"value": self._value}

    def load_state_dict(self, state: Mapping[str, float]) -> None:
        """Restore ``value`` from :meth:`state_dict` output."""
        self._value = _check_coef(state["value"])

    def __repr__(self) -> str:
        return (
            f"AdaptiveKLController(value={self._value!r}, target={self.target!r}, "
            f"horizon={self.horizon!r})"
        )


def make_kl_controller(
    kind: Literal["fixed", "adaptive"],
    coef: float,
    target: float = 0.1,
    horizon: float = 10_000,
) -> FixedKLController | AdaptiveKLController:
    """Build a controller from configuration values.

    Args:
        kind: ``"fixed"`` or ``"adaptive"``.
        coef: the (initial) coefficient.
        target: target KL (adaptive only).
        horizon: adaptation horizon in samples (adaptive only).

    Raises:
        ValueError: unknown ``kind`` or invalid values.
    """
    if kind == "fixed":
        return FixedKLController(coef)
    if kind == "adaptive":
        return AdaptiveKLController(coef, target, horizon)
    raise ValueError(f"unknown KL controller kind {kind!r}; valid kinds: ('adaptive', 'fixed')")


def apply_kl_in_reward(
    *,
    token_level_scores: Tensor,
    old_log_prob: Tensor,
    ref_log_prob: Tensor,
    response_mask: Tensor,
    controller: KLController,
    kind: str = "k1",
) -> tuple[Tensor, dict[str, float]]:
    """Subtract the KL penalty from the token scores, then update the controller.

    ``reward_t = score_t - beta * kl_t * m_t`` with ``kl_t = kl_penalty(old, ref, kind)`` and
    ``beta = controller.value`` *before* the update. The controller is then updated with the
    observed KL, ``mean_i(masked_mean_t kl_it)`` (per-sequence token mean, averaged over the
    rows), and ``n_steps = B``. Mutates ``controller``; runs under :func:`torch.no_grad`.

    All arguments are keyword-only (the two log-prob tensors must not be swappable by position);
    the tensor names are verl's batch keys.

    Args:
        token_level_scores: ``(B, T)`` token-level scores (e.g. the outcome score on the last
            token).
        old_log_prob: ``(B, T)`` behaviour-policy log-probs.
        ref_log_prob: ``(B, T)`` reference-policy log-probs.
        response_mask: ``(B, T)``, non-zero on valid tokens.
        controller: the KL coefficient controller.
        kind: KL estimator, see :func:`ppo.algos.losses.kl_penalty`.

    Returns:
        ``(token_rewards, metrics)``: ``(B, T)`` rewards (masked positions keep their score) and
        ``{"kl/in_reward": observed KL, "kl/coef": beta used}``.

    Raises:
        ValueError: shape mismatch or unknown ``kind``.
    """
    scores = token_level_scores
    for name, t in (("old_log_prob", old_log_prob), ("ref_log_prob", ref_log_prob)):
        if t.shape != scores.shape:
            raise ValueError(f"{name} has shape {tuple(t.shape)}, expected {tuple(scores.shape)}")
    if scores.dim() != 2 or response_mask.shape != scores.shape:
        raise ValueError(
            f"token_level_scores and response_mask must both be (B, T), got "
            f"{tuple(scores.shape)} and {tuple(response_mask.shape)}"
        )
    with torch.no_grad():
        valid = response_mask != 0
        kl = kl_penalty(log_prob=old_log_prob, ref_log_prob=ref_log_prob, kind=kind)
        kl = torch.where(valid, kl, torch.zeros_like(kl))
        beta = controller.value
        rewards = scores - beta * kl
        current_kl = float(masked_mean(kl, valid, dim=-1).mean().item())
    controller.update(current_kl, n_steps=scores.shape[0])
    return rewards, {"kl/in_reward": current_kl, "kl/coef": beta}
