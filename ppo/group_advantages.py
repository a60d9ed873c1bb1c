"""Advantages the trainer's ranks compute for their own rows, so an update needs no driver.

The group estimators (GRPO, Dr.GRPO, RLOO) read only the scores of a row's own group: the
``rollout.n`` responses to one prompt. The trainer repeats each prompt ``n`` times in adjacent
rows and the data-parallel split hands every rank a contiguous block of rows, so when the
block size is a multiple of ``n`` every group lies on one rank, and the rank computes exactly
the advantages the driver would (:func:`group_advantages` is the one function both call, and
the group sums add the same numbers in the same order).

The update then needs nothing from the driver but the uids: it is submitted with the step's
first stages, chained on the rollout, log-prob and reward futures, and the ranks run the
whole step back to back (see :meth:`ppo.PPOTrainer.train_step`). The driver still receives
the scores and log-probs and computes the same advantages, for the step's metrics only.

:func:`ranks_compute_advantages` says when this holds: a group estimator, no KL penalty in
the reward (its adaptive coefficient is a batch statistic), no critic or greedy baselines,
synchronous mode (async corrects stale rows with driver-side importance weights), no
``trainer.balance_batch`` (it moves rows between ranks) and groups that do not straddle ranks.
"""

from __future__ import annotations

from torch import Tensor

from ppo import columns as C
from ppo.algos import AdvantageInputs, compute_advantages
from ppo.config import AlgorithmConfig, PPOConfig
from ppo.dataflow import place_scores
from runtime import Batch

__all__ = [
    "GROUP_ESTIMATORS",
    "group_advantages",
    "ranks_compute_advantages",
    "with_group_advantages",
]

#: Estimators whose advantage of a row depends on its own group's scores only.
GROUP_ESTIMATORS = frozenset({"grpo", "dr_grpo", "rloo"})


def ranks_compute_advantages(config: PPOConfig, world_size: int) -> bool:
    """Whether the actor's ``world_size`` ranks can compute a step's advantages themselves
    (module docstring): every group on one rank, and no statistic of the whole batch."""
    alg, n = config.algorithm, config.rollout.n
    rows = config.data.prompts_per_step * n
    return (
        alg.adv_estimator in GROUP_ESTIMATORS
        and not alg.use_kl_in_reward
        and not config.needs_critic
        and not config.needs_baselines
        and config.trainer.mode == "sync"
        and not config.trainer.balance_batch
        and rows % world_size == 0
        and (rows // world_size) % n == 0
    )


def group_advantages(batch: Batch, algorithm: AlgorithmConfig) -> tuple[Tensor, Tensor]:
    """``(advantages, returns)`` of a group estimator for ``batch``'s rows, from its
    ``score``, ``response_mask`` and ``uid`` columns (whole groups only)."""
    mask = batch.tensors[C.RESPONSE_MASK]
    token_scores = place_scores(batch.tensors[C.SCORE], mask)
    return compute_advantages(
        algorithm.adv_estimator,
        AdvantageInputs(
            token_rewards=token_scores,
            response_mask=mask.float(),
            values=None,
            index=batch.non_tensors[C.UID],
            reward_baselines=None,
            gamma=algorithm.gamma,
            lam=algorithm.lam,
            norm_by_std=algorithm.norm_adv_by_std,
        ),
    )


def with_group_advantages(batch: Batch, algorithm: AlgorithmConfig) -> Batch:
    """``batch`` with ``advantages`` and ``returns`` added by :func:`group_advantages`."""
    advantages, returns = group_advantages(batch, algorithm)
    return batch.union(Batch({C.ADVANTAGES: advantages, C.RETURNS: returns}))
