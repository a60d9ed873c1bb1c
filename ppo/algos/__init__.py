"""Pure, sans-IO PPO/GRPO algorithm functions (torch only).

Nothing here knows about workers, backends or the runtime: advantage estimators
(:mod:`.advantages`), policy/value/KL/entropy losses and their aggregation (:mod:`.losses`),
KL-in-reward controllers (:mod:`.kl_control`), truncated importance weights for off-policy
samples (:mod:`.off_policy`) and masked reductions (:mod:`._masked`).
Token tensors are ``(B, T)`` with a response mask that is non-zero on valid tokens.

Functions that take several token tensors take them as **keyword-only** arguments named as in
verl's ``core_algos`` (``old_log_prob``, ``log_prob``, ``advantages``, ``response_mask``,
``token_level_rewards``, ``vpreds``, ``values``, ``returns``, ``loss_mat``, ``loss_mask``,
``loss_agg_mode``, ...), so a swapped pair of same-shaped tensors is a ``TypeError`` or a wrong
name, never a silent bug::

    loss, metrics = ppo_clip_loss(
        old_log_prob=old, log_prob=logp, advantages=adv, response_mask=mask
    )

Where our conventions differ from verl's (masked positions, singleton groups, normalisers),
``docs/differences-from-verl.md`` lists them with the tests that pin them.
"""

from __future__ import annotations

from ._errors import UnknownEstimatorError, UnknownNameError, UnknownPolicyLossError
from ._masked import masked_mean, masked_sum, masked_var, masked_whiten
from .advantages import (
    AdvantageEstimator,
    AdvantageInputs,
    IndexLike,
    advantage_estimator_names,
    compute_advantages,
    dr_grpo,
    estimator_needs_baselines,
    estimator_needs_critic,
    gae,
    get_advantage_estimator,
    grpo,
    register_advantage_estimator,
    reinforce_plus_plus,
    reinforce_plus_plus_baseline,
    remax,
    rloo,
)
from .kl_control import (
    AdaptiveKLController,
    FixedKLController,
    KLController,
    apply_kl_in_reward,
    make_kl_controller,
)
from .losses import (
    AGG_MODES,
    AggKwargs,
    PolicyLossFn,
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
from .off_policy import truncated_importance_weights

__all__ = [
    "AGG_MODES",
    "AdaptiveKLController",
    "AdvantageEstimator",
    "AdvantageInputs",
    "AggKwargs",
    "FixedKLController",
    "IndexLike",
    "KLController",
    "PolicyLossFn",
    "UnknownEstimatorError",
    "UnknownNameError",
    "UnknownPolicyLossError",
    "advantage_estimator_names",
    "agg_loss",
    "agg_normalizers",
    "apply_kl_in_reward",
    "compute_advantages",
    "dr_grpo",
    "entropy_from_logits",
    "estimator_needs_baselines",
    "estimator_needs_critic",
    "gae",
    "get_advantage_estimator",
    "get_policy_loss",
    "grpo",
    "gspo_loss",
    "kl_penalty",
    "make_kl_controller",
    "masked_mean",
    "masked_sum",
    "masked_var",
    "masked_whiten",
    "policy_loss_names",
    "ppo_clip_loss",
    "register_advantage_estimator",
    "register_policy_loss",
    "reinforce_plus_plus",
    "reinforce_plus_plus_baseline",
    "remax",
    "rloo",
    "truncated_importance_weights",
    "value_loss",
]
