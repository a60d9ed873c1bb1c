"""Advantages the ranks compute for their own rows (``ppo/group_advantages.py``): exactly the
driver's, and only where every group lies on one rank and no batch statistic is involved."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ppo import columns as C
from ppo.config import load_config
from ppo.group_advantages import GROUP_ESTIMATORS, group_advantages, ranks_compute_advantages
from ppo.workers import _update_batch
from runtime import Batch


def _batch(scores: list[float], lengths: list[int], n: int, width: int = 5) -> Batch:
    rows = len(scores)
    mask = torch.zeros(rows, width, dtype=torch.bool)
    for i, length in enumerate(lengths):
        mask[i, :length] = True
    uids = np.empty(rows, dtype=object)
    uids[:] = [f"s1-{i // n}" for i in range(rows)]  # n adjacent rows per prompt
    return Batch({C.SCORE: torch.tensor(scores), C.RESPONSE_MASK: mask}, {C.UID: uids})


@settings(max_examples=60, deadline=None)
@given(
    estimator=st.sampled_from(sorted(GROUP_ESTIMATORS)),
    n=st.integers(1, 4),
    groups_per_rank=st.integers(1, 3),
    world=st.integers(1, 4),
    data=st.data(),
)
def test_each_rank_computes_exactly_its_rows_of_the_whole_batch(
    estimator: str, n: int, groups_per_rank: int, world: int, data: st.DataObject
) -> None:
    rows = n * groups_per_rank * world
    scores = data.draw(
        st.lists(st.floats(-3, 3, allow_nan=False, width=32), min_size=rows, max_size=rows)
    )
    lengths = data.draw(st.lists(st.integers(0, 5), min_size=rows, max_size=rows))
    whole = _batch(scores, lengths, n)
    algorithm = load_config("demo", [f"algorithm.adv_estimator={estimator!r}"]).algorithm
    adv, ret = group_advantages(whole, algorithm)
    block = rows // world
    for rank in range(world):
        part = whole.select_idxs(torch.arange(rank * block, (rank + 1) * block))
        rank_adv, rank_ret = group_advantages(part, algorithm)
        assert torch.equal(rank_adv, adv[rank * block : (rank + 1) * block])
        assert torch.equal(rank_ret, ret[rank * block : (rank + 1) * block])


@pytest.mark.parametrize(
    ("overrides", "world", "expected"),
    [
        ([], 2, True),  # the demo: GRPO, 256 rows, 16 groups per rank
        (["algorithm.adv_estimator='rloo'"], 2, True),
        (["algorithm.adv_estimator='dr_grpo'", "actor.use_kl_loss=true"], 2, True),
        (["algorithm.adv_estimator='gae'"], 2, False),  # critic; whitened over the batch
        (["algorithm.adv_estimator='remax'"], 2, False),  # greedy baselines
        (["algorithm.adv_estimator='reinforce_plus_plus_baseline'"], 2, False),  # whitened
        (["algorithm.use_kl_in_reward=true"], 2, False),  # adaptive KL: a batch statistic
        (["trainer.balance_batch=true"], 2, False),  # moves rows between ranks
        (["trainer.mode='async'"], 2, False),  # stale rows weighted on the driver
        (["data.prompts_per_step=3"], 2, False),  # 24 rows: 12 per rank split a group of 8
        (["data.prompts_per_step=3"], 3, True),  # 8 rows per rank: one group each
        (["data.prompts_per_step=6", "rollout.n=4"], 4, False),  # 6 rows per rank
    ],
)
def test_ranks_compute_advantages_only_for_whole_groups_and_no_batch_statistic(
    overrides: list[str], world: int, expected: bool
) -> None:
    config = load_config("demo", overrides)
    assert ranks_compute_advantages(config, world) is expected


def test_an_update_without_advantages_or_scores_says_what_it_needs() -> None:
    algorithm = load_config("demo").algorithm
    uids = _batch([1.0, 0.0], [2, 2], 2).select(tensor_keys=[])
    with pytest.raises(ValueError, match=r"no 'advantages' column.*no 'score' column"):
        _update_batch(uids, [Batch({C.RESPONSE_MASK: torch.ones(2, 5)})], algorithm)
    with pytest.raises(ValueError, match="reward's result as the last part"):
        _update_batch(uids, [], algorithm)
