"""Data out of the controller (``ppo/dataflow.py``): the driver receives scores, masks and
log-probs, never the token ids; the update fetches the rest as futures; the byte counts and
the weight-sync figures are what the batches hold. In-process backend (Ray:
tests/ray/test_trainer_ray.py runs the same trainer code through a real object store)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ppo import PPOTrainer
from ppo import columns as C
from ppo.dataflow import DriverTraffic, batch_nbytes, place_scores
from ppo.pipeline import POLICY_VERSION
from runtime import Batch
from runtime.testing import InProcessBackend
from tests.trainer_support import tiny_config, varied_reward

#: Columns as wide as the whole sequence, or text: the data the controller must not hold.
HEAVY = {C.INPUT_IDS, C.ATTENTION_MASK, C.RESPONSES, C.RESPONSE_TEXT}


def _run(tmp_path: Path, extra: list[str]) -> tuple[list[dict[str, Any]], DriverTraffic, int]:
    cfg = tiny_config(tmp_path, ["trainer.total_steps=2", "trainer.test_freq=0", *extra])
    with PPOTrainer(backend=InProcessBackend(), config=cfg, reward_fn=varied_reward) as trainer:
        rows = trainer.fit()
        assert trainer.actor is not None
        params = trainer.actor.run_function(_unique_params)[0]
        return rows, trainer.traffic, params


def _unique_params(worker: Any) -> int:
    seen = {t.data_ptr(): t.numel() for t in worker.model.state_dict().values()}
    return sum(seen.values())


def test_place_scores_puts_each_score_on_the_last_response_token() -> None:
    mask = torch.tensor([[1, 1, 0], [1, 1, 1], [0, 0, 0]], dtype=torch.bool)
    out = place_scores(torch.tensor([0.5, -2.0, 3.0]), mask)
    assert torch.equal(out, torch.tensor([[0.0, 0.5, 0.0], [0.0, 0.0, -2.0], [0.0, 0.0, 0.0]]))


def test_batch_nbytes_counts_tensor_bytes_and_pickled_objects() -> None:
    texts = np.array(["ab", "c"], dtype=object)
    batch = Batch(
        {"x": torch.zeros(2, 3, dtype=torch.float32), "m": torch.ones(2, dtype=torch.bool)}
    )
    assert batch_nbytes(batch) == 2 * 3 * 4 + 2
    with_text = batch.union(Batch({}, {"t": texts}))
    assert batch_nbytes(with_text) > batch_nbytes(batch)


def test_sync_driver_receives_no_token_ids(tmp_path: Path) -> None:
    rows, traffic, _ = _run(tmp_path, ["algorithm.adv_estimator='gae'"])
    assert traffic.columns_received.isdisjoint(HEAVY)
    assert {C.SCORE, C.RESPONSE_MASK, C.OLD_LOG_PROBS, C.VALUES} <= traffic.columns_received
    cfg = tiny_config(tmp_path)
    batch = cfg.data.prompts_per_step * cfg.rollout.n
    width = cfg.data.max_prompt_len + cfg.data.max_response_len
    for row in rows[1:]:
        # Less than the int64 input_ids alone would take (scores, bool masks, log-probs).
        assert 0 < row["perf/driver_bytes_received"] < batch * width * 8
        assert row["perf/driver_bytes_sent"] > 0


def test_async_driver_receives_the_correction_columns_and_sync_figures(tmp_path: Path) -> None:
    rows, traffic, params = _run(
        tmp_path, ["trainer.mode='async'", "async.max_staleness=0", "async.rollout_ranks=1"]
    )
    assert traffic.columns_received.isdisjoint(HEAVY)
    assert {C.ROLLOUT_LOG_PROBS, POLICY_VERSION} <= traffic.columns_received
    steps = [r for r in rows if r["step"] > 0]
    for row in steps:
        # One rollout rank fetched actor rank 0's row: float32 weights + its publish time.
        assert row["perf/weight_sync_bytes"] == params * 4 + 8
        assert row["timing_s/weight_sync"] > 0
        assert row["async/weights_version_synced"] == row["step"] - 1
