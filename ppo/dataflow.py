"""How a step's data moves: rollout results stay in the backend's object store and reach the
trainer's ranks as futures; the controller receives only the columns it computes advantages
and metrics from, and counts the bytes it receives and sends.

One step (both ``trainer.mode`` values):

1. ``generate`` runs on the rollout ranks; the driver keeps only the *future* of its result.
2. The reward, log-prob and value calls take that future as an argument: each rank fetches
   its own rows from the object store. The reward hands the controller ``score``, ``acc``,
   ``response_mask``, ``ends_with_eos`` (and, in async mode, ``rollout_log_probs`` and
   ``policy_version``); the log-prob and value calls return their columns to the driver.
3. The driver computes advantages from those columns and its own prompts and uids.
4. The update receives ``advantages`` and ``returns`` from the driver and, as futures, the
   rollout, log-prob and value results.

The driver never holds ``input_ids``, ``attention_mask``, ``responses`` or the decoded texts,
and sends the update only the columns it computed (``advantages``, ``returns``); each rank
fetches its own rows of everything else from the object store.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from typing import cast

import attrs
import numpy as np
import torch
from torch import Tensor

from ppo import columns as C
from runtime import Batch, BatchFuture, GroupFuture

__all__ = [
    "UPDATE_COLUMNS",
    "DriverTraffic",
    "StepData",
    "StepStart",
    "batch_nbytes",
    "chained",
    "joined",
    "place_scores",
]

#: The columns the update methods read (whichever of them the step has).
UPDATE_COLUMNS = (
    C.INPUT_IDS,
    C.ATTENTION_MASK,
    C.RESPONSE_MASK,
    C.OLD_LOG_PROBS,
    C.ADVANTAGES,
    C.RETURNS,
    C.VALUES,
    C.REF_LOG_PROBS,
)


def chained(future: BatchFuture) -> Batch:
    """``future`` as the argument of a call whose parameter is a :class:`Batch`: the runtime
    resolves it on each consumer rank, which fetches only its own rows (the type says what the
    worker receives, not what the driver passes)."""
    return cast(Batch, future)


def joined(batch: Batch, parts: Sequence[Batch]) -> Batch:
    """``batch`` with the columns of ``parts`` (a worker's rows of chained results) added."""
    for part in parts:
        batch = batch.union(part)
    return batch


def place_scores(scores: Tensor, response_mask: Tensor) -> Tensor:
    """``(B, R)`` token-level scores: each row's score on its last response token, 0 elsewhere
    (a row without response tokens gets none)."""
    mask = response_mask.long()
    token_scores = torch.zeros(mask.shape, dtype=torch.float32)
    last = (mask.sum(dim=1) - 1).clamp(min=0)
    token_scores[torch.arange(len(scores)), last] = scores.float()
    return token_scores * mask


def batch_nbytes(batch: Batch) -> int:
    """Payload bytes of ``batch``: tensor data, plain arrays, and pickled object columns and
    meta (what the backend moves, without framing)."""
    total = sum(t.numel() * t.element_size() for t in batch.tensors.values())
    for column in batch.non_tensors.values():
        array = np.asarray(column)
        total += (
            len(pickle.dumps(array.tolist(), protocol=5)) if array.dtype == object else array.nbytes
        )
    if batch.meta:
        total += len(pickle.dumps(dict(batch.meta), protocol=5))
    return total


class DriverTraffic:
    """Counts the batches the controller materialises (``received``) and passes into calls
    (``sent``); :meth:`take` returns the totals since the last take and starts again.
    ``columns_received`` names every column the controller has received so far."""

    def __init__(self) -> None:
        self._received = 0
        self._sent = 0
        self.columns_received: set[str] = set()

    def received(self, batch: Batch) -> Batch:
        self._received += batch_nbytes(batch)
        self.columns_received.update(batch.tensors, batch.non_tensors)
        return batch

    def sent(self, batch: Batch) -> Batch:
        self._sent += batch_nbytes(batch)
        return batch

    def take(self) -> dict[str, float]:
        out = {
            "perf/driver_bytes_received": float(self._received),
            "perf/driver_bytes_sent": float(self._sent),
        }
        self._received = self._sent = 0
        return out

    def add(self, counts: dict[str, float]) -> None:
        """Count again what an earlier :meth:`take` returned (bytes moved ahead of time for
        the step being counted now)."""
        self._received += int(counts.get("perf/driver_bytes_received", 0))
        self._sent += int(counts.get("perf/driver_bytes_sent", 0))


@attrs.define
class StepData:
    """One step's data. ``view``: the columns on the driver (prompts and uids, scores, masks,
    log-probs, values, then advantages). ``parts``: pending results the trainer's ranks fetch
    rows of themselves (the rollout, the log-probs, the values)."""

    view: Batch
    parts: list[BatchFuture]


@attrs.define
class StepStart:
    """A step whose first stages are submitted, with nothing awaited yet.

    ``prompts``: the step's rows on the driver (prompts, uids, answers). Futures: ``rollout``
    (the responses), ``scores``, ``old_log_probs``, and ``ref_log_probs``, ``values`` and
    ``baselines`` (the greedy responses' scores, ReMax) where the config has them.
    ``sampler_state``: the data position before the step's prompts were drawn (what a
    checkpoint written before this step records); ``epoch``: the sampler's epoch once they
    were drawn; ``traffic``: the driver bytes moved to start it, when it was started ahead of
    its step (:meth:`DriverTraffic.add`).
    """

    step: int
    prompts: Batch
    rollout: BatchFuture
    scores: BatchFuture
    old_log_probs: BatchFuture
    ref_log_probs: BatchFuture | None
    values: BatchFuture | None
    baselines: BatchFuture | None
    sampler_state: dict[str, int]
    epoch: int
    traffic: dict[str, float] = attrs.field(factory=dict)
    #: The step's updates by role, when they were submitted with its first stages (the ranks
    #: compute the advantages, :mod:`ppo.group_advantages`); None: the driver submits them.
    updates: dict[str, GroupFuture[list[dict[str, float]]]] | None = None
