"""Plain worker classes for the Ray tests.

They live in an importable module (not in a test file or ``__main__``) so Ray's worker
processes unpickle them by reference; the session cluster puts the repository root on the
workers' ``PYTHONPATH`` (see :mod:`tests._ray_session`).
"""

from __future__ import annotations

import os
import time

import ray
import torch
import torch.distributed as dist
from ray.util import get_node_ip_address as node_ip_address

from runtime import Batch, Dispatch, current_context, register

__all__ = ["Crashy", "Probe", "Sleepy"]


class Probe:
    """Reports what its process sees, and does small distributed work."""

    def __init__(self, tag: str = "") -> None:
        self.tag = tag
        self.ctx = current_context()

    @register(Dispatch.ONE_TO_ALL)
    def echo(self, x: int) -> int:
        return x

    @register(Dispatch.ONE_TO_ALL)
    def kind(self, x: object) -> str:
        """The type name of what arrived (a raw ``ObjectRef`` must arrive as one)."""
        return type(x).__name__

    @register(Dispatch.ONE_TO_ALL)
    def rank_plus(self, x: int) -> int:
        return x + current_context().rank

    @register(Dispatch.ONE_TO_ALL)
    def seen(self) -> dict[str, str | None]:
        """Environment and Ray's view of this process (devices, node)."""
        keys = ("CUDA_VISIBLE_DEVICES", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")
        out: dict[str, str | None] = {k: os.environ.get(k) for k in keys}
        gpu = ray.get_runtime_context().get_accelerator_ids().get("GPU", [])
        out["ray_gpu_ids"] = ",".join(gpu)
        out["node_ip"] = node_ip_address()
        out["pid"] = str(os.getpid())
        out["tag"] = self.tag
        return out

    @register(Dispatch.ONE_TO_ALL)
    def sleep(self, seconds: float) -> float:
        time.sleep(seconds)
        return seconds

    @register(Dispatch.ONE_TO_ALL)
    def nbytes(self, data: Batch) -> int:
        """How many tensor bytes arrived (the shared batch)."""
        return sum(t.numel() * t.element_size() for t in data.tensors.values())

    @register(Dispatch.DP_COMPUTE_PROTO)
    def add_rank(self, data: Batch) -> Batch:
        return Batch({"x": data.tensors["x"] + current_context().rank})

    @register(Dispatch.ONE_TO_ALL)
    def allreduce(self, value: float) -> float:
        """Sum ``value + rank`` over the group with gloo, rendezvous through the env vars."""
        dist.init_process_group("gloo", init_method="env://")
        try:
            t = torch.tensor([value + dist.get_rank()], dtype=torch.float64)
            dist.all_reduce(t)
            return float(t.item())
        finally:
            dist.destroy_process_group()

    @register(Dispatch.ONE_TO_ALL)
    def fail(self, message: str) -> None:
        raise KeyError(message)


class Sleepy:
    """A worker whose constructor takes ``seconds`` (a hang, for a short start deadline)."""

    def __init__(self, seconds: float) -> None:
        time.sleep(seconds)

    @register(Dispatch.ONE_TO_ALL)
    def noop(self) -> None:
        return None


class Crashy:
    """A worker whose constructor raises."""

    def __init__(self, message: str) -> None:
        raise RuntimeError(message)

    @register(Dispatch.ONE_TO_ALL)
    def noop(self) -> None:
        return None
