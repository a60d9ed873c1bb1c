"""Data parallelism with PyTorch's own machinery, set up from the injected worker context.

:func:`worker_device` picks the rank's device from :func:`runtime.current_context` (never
"cuda whenever CUDA exists"); :func:`join_process_group` joins the role's ranks into
``torch.distributed`` (gloo on CPU, nccl on GPU) when a worker's registered
``init_distributed`` is called, never in a constructor; :class:`DataParallelTrainer` wraps a
model in ``DistributedDataParallel`` and runs one optimizer step over micro-batches.

Loss convention (the DP-invariance the tests hold): every loss is normalised by *global*
counts (tokens or sequences of the whole mini-batch on every rank), so the correct gradient is
the **sum** of the ranks' gradients. DDP averages, so each micro-batch loss is multiplied by
the world size before ``backward``; gradient accumulation over micro-batches is then exact,
and only the last micro-batch synchronises (``no_sync`` for the others).
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Callable, Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from ppo.algos import AggKwargs, agg_normalizers
from runtime import WorkerContext, current_context

__all__ = ["DataParallelTrainer", "join_process_group", "micro_batches", "worker_device"]


def worker_device(ctx: WorkerContext | None = None) -> torch.device:
    """The device of this rank: CPU without assigned accelerators; otherwise the first
    assigned one - ``cuda:0`` when the backend narrowed ``CUDA_VISIBLE_DEVICES`` to them, the
    assigned id itself in "don't set visible devices" mode."""
    ctx = ctx if ctx is not None else current_context()
    if not ctx.visible_devices or not torch.cuda.is_available():
        return torch.device("cpu")
    if os.environ.get("CUDA_VISIBLE_DEVICES") == ctx.cuda_visible_devices:
        return torch.device("cuda", 0)
    return torch.device("cuda", int(ctx.visible_devices[0]))


def join_process_group(device: torch.device, timeout_s: float = 120.0) -> int:
    """Join the role's ranks (a no-op for one rank, or when this process already joined, e.g.
    a fused critic after its actor); returns the world size."""
    ctx = current_context()
    if ctx.world_size > 1 and not dist.is_initialized():
        dist.init_process_group(
            "nccl" if device.type == "cuda" else "gloo",
            init_method=f"tcp://{ctx.master_addr}:{ctx.master_port}",
            rank=ctx.rank,
            world_size=ctx.world_size,
            timeout=datetime.timedelta(seconds=timeout_s),
        )
    return ctx.world_size


class DataParallelTrainer:
    """One model's optimizer steps over the role's ranks (DDP when there are several).

    ``loss_fn(micro_batch_rows, normalisers) -> (loss, stats)`` computes one micro-batch's
    loss with the mini-batch's global normalisers.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, world_size: int):
        self.module = model
        self.optimizer = optimizer
        self.world_size = world_size
        self.model: nn.Module = DistributedDataParallel(model) if world_size > 1 else model

    def global_counts(self, mask: Tensor, horizon: int) -> AggKwargs:
        """Valid tokens and sequences of a mini-batch summed over every rank's shard."""
        counts = agg_normalizers(mask)
        local = torch.tensor([counts["global_tokens"], counts["global_seqs"]], dtype=torch.float64)
        if self.world_size > 1:
            dist.all_reduce(local, op=dist.ReduceOp.SUM)
        return {
            "global_tokens": float(local[0]),
            "global_seqs": float(local[1]),
            "horizon": horizon,
        }

    def step(
        self,
        micro_batches: Sequence[Tensor],
        loss_fn: Callable[[Tensor], tuple[Tensor, dict[str, float]]],
        grad_clip: float,
    ) -> dict[str, float]:
        """Accumulate gradients over ``micro_batches`` (row indices), clip, step. Returns the
        micro-batches' stats summed (``loss_fn`` weights them so that the sum is the
        mini-batch's value) and ``grad_norm``."""
        self.optimizer.zero_grad(set_to_none=True)
        totals: dict[str, float] = {}
        for i, rows in enumerate(micro_batches):
            last = i == len(micro_batches) - 1
            sync = (
                self.model.no_sync()
                if isinstance(self.model, DistributedDataParallel) and not last
                else contextlib.nullcontext()
            )
            with sync:
                loss, stats = loss_fn(rows)
                torch.autograd.backward(loss * self.world_size)
            for k, v in stats.items():
                totals[k] = totals.get(k, 0.0) + v
        grad_norm = torch.nn.utils.clip_grad_norm_(self.module.parameters(), grad_clip)
        self.optimizer.step()
        totals["grad_norm"] = float(grad_norm)
        return totals


def micro_batches(rows: Tensor, size: int) -> list[Tensor]:
    """``rows`` split into chunks of ``size`` (``0``: one chunk)."""
    if size <= 0 or size >= len(rows):
        return [rows]
    return list(torch.split(rows, size))
