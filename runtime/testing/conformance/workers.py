"""Plain worker classes for the conformance suite (module level, so Ray workers import them).

None of them subclasses anything: each learns its place through ``runtime.current_context()``.
The numbers follow verl's ``tests/single_controller`` examples; each test states the expected
values it derives from the formulas here.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from runtime import (
    Batch,
    CustomMode,
    Dispatch,
    Execute,
    WorkerContext,
    current_context,
    mesh_dispatch,
    register,
    register_dispatch_mode,
    register_mesh,
    sibling,
    update_dispatch_mode,
)
from runtime.errors import DispatchError

__all__ = [
    "CYCLE_MODE_NAME",
    "STD_ENV_KEYS",
    "SUM_MODE_NAME",
    "Actor",
    "BadInit",
    "Calc",
    "Critic",
    "EnvWorker",
    "FaultWorker",
    "Hybrid",
    "Inner",
    "Twin",
    "all_worker_classes",
    "infer_coords",
    "train_coords",
]

#: The variables every backend exports for a rank before its worker is constructed.
STD_ENV_KEYS = (
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "CUDA_VISIBLE_DEVICES",
)

CYCLE_MODE_NAME = "CONFORMANCE_CYCLE"
SUM_MODE_NAME = "CONFORMANCE_SUM"

DispatchFn = Callable[
    [int, tuple[Any, ...], dict[str, Any]], Sequence[tuple[tuple[Any, ...], dict[str, Any]]]
]
CollectFn = Callable[[list[Any]], Any]


# --------------------------------------------------------------------------- custom mode
def _cycle_dispatch(
    world_size: int, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    """verl's ``foo_custom``: every argument is a list, cycled to the world size."""
    return [
        (
            tuple(a[r % len(a)] for a in args),
            {k: v[r % len(v)] for k, v in kwargs.items()},
        )
        for r in range(world_size)
    ]


def _cycle_collect(outputs: list[Any]) -> list[Any]:
    return list(outputs)


def _same_dispatch(
    world_size: int, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    """Every rank gets the arguments as given (so typed calls match the method)."""
    return [(args, dict(kwargs)) for _ in range(world_size)]


def _sum_collect(outputs: list[Any]) -> Any:
    return sum(outputs)


def _register(name: str, dispatch_fn: DispatchFn, collect_fn: CollectFn) -> CustomMode:
    # Importing this module twice (e.g. under another name) must not trip duplicate detection.
    try:
        return register_dispatch_mode(name, dispatch_fn, collect_fn)
    except DispatchError:
        return update_dispatch_mode(CustomMode(name), dispatch_fn, collect_fn)


CYCLE = _register(CYCLE_MODE_NAME, _cycle_dispatch, _cycle_collect)
SUM = _register(SUM_MODE_NAME, _same_dispatch, _sum_collect)


# --------------------------------------------------------------------------- mesh layouts
def infer_coords(rank: int, world_size: int) -> tuple[int, int]:
    """``(dp, tp)`` of ``rank`` in the mesh ``infer`` = dp2 x tp(world_size/2)."""
    tp_size = world_size // 2
    return rank // tp_size, rank % tp_size


def train_coords(rank: int, world_size: int) -> tuple[int, int, int]:
    """``(pp, dp, tp)`` of ``rank`` in the mesh ``train`` = pp2 x dp2 x tp(world_size/4)."""
    tp_size = world_size // 4
    pp, rest = divmod(rank, 2 * tp_size)
    dp, tp = divmod(rest, tp_size)
    return pp, dp, tp


# --------------------------------------------------------------------------- workers
def _add_rank(data: Batch) -> Batch:
    rank = current_context().rank
    data.tensors["a"] += rank
    return Batch({**data.tensors, "rank": torch.full((len(data),), rank)}, data.non_tensors)


def _merge(left: Batch, right: Batch) -> Batch:
    rank = current_context().rank
    return Batch(
        {"a": left.tensors["a"] * 100 + right.tensors["b"], "rank": torch.full((len(left),), rank)}
    )


class Inner:
    """A plain object a worker builds locally (verl's nested worker): it sees the same context."""

    def __init__(self, x: int) -> None:
        self.x = x
        self.context = current_context()
        self.env_rank = int(os.environ["RANK"])

    def get(self) -> int:
        return self.x + self.env_rank


class Calc:
    """The workhorse: one method per dispatch mode, mesh registrations, failure hooks."""

    def __init__(self, x: int = 2) -> None:
        ctx = current_context()
        self.ctx = ctx
        self.inner = Inner(x)
        self.seen: dict[str, list[int]] = {}
        ws, rank = ctx.world_size, ctx.rank
        if ws % 2 == 0:
            dp, tp = infer_coords(rank, ws)
            register_mesh("infer", dp_rank=dp, is_collector=tp == 0)
        if ws % 4 == 0:
            pp, dp, tp = train_coords(rank, ws)
            register_mesh("train", dp_rank=dp, is_collector=tp == 0 and pp == 1)
        # Deliberately broken layouts: every rank collects dp rank 0 / nobody collects.
        register_mesh("two_collectors", dp_rank=0, is_collector=True)
        register_mesh("no_collector", dp_rank=rank, is_collector=False)

    # ONE_TO_ALL ---------------------------------------------------------------
    @register(Dispatch.ONE_TO_ALL)
    def add(self, x: int) -> int:
        return x + current_context().rank

    @register(Dispatch.ONE_TO_ALL)
    async def add_async(self, x: int) -> int:
        await asyncio.sleep(0)
        return x + current_context().rank

    @register(Dispatch.ONE_TO_ALL)
    def rank_of(self) -> int:
        return self.ctx.rank

    @register(Dispatch.ONE_TO_ALL)
    def thread_id(self) -> int:
        return threading.get_ident()

    @register(Dispatch.ONE_TO_ALL)
    def nested_get(self) -> int:
        return self.inner.get()

    @register(Dispatch.ONE_TO_ALL)
    def nested_context(self) -> WorkerContext:
        return self.inner.context

    @register(Dispatch.ONE_TO_ALL)
    def seen_rows(self, mesh: str) -> list[int]:
        return self.seen.get(mesh, [])

    @register(Dispatch.ONE_TO_ALL)
    def boom(self, rank: int, message: str) -> int:
        if current_context().rank == rank:
            raise ValueError(message)
        return 0

    @register(Dispatch.ONE_TO_ALL)
    def register_infer_again(self) -> None:
        register_mesh("infer", dp_rank=0, is_collector=True)

    @register(Dispatch.ONE_TO_ALL)
    def tensor_sum(self, t: torch.Tensor) -> float:
        t += 1  # in place: the caller's tensor must not change
        return float(t.sum())

    @register(Dispatch.ONE_TO_ALL)
    def batch_sum(self, data: Batch) -> float:
        data.tensors["a"] += 1  # in place: the caller's batch must not change
        return float(data.tensors["a"].sum())

    # ALL_TO_ALL / DP_COMPUTE / rank zero / custom ------------------------------------
    @register(Dispatch.ALL_TO_ALL)
    def foo(self, x: int, y: int) -> int:
        return x + y

    @register(Dispatch.ALL_TO_ALL, Execute.RANK_ZERO)
    def foo_rank_zero(self, x: int, y: int) -> int:
        # 100 * rank proves that only rank 0 ran.
        return x + y + 2 + 100 * current_context().rank

    @register(Dispatch.ONE_TO_ALL, Execute.RANK_ZERO)
    async def rank_zero_async(self, x: int) -> int:
        await asyncio.sleep(0)
        return x * 10 + current_context().rank

    @register(Dispatch.DP_COMPUTE)
    def shard_sum(self, xs: list[int]) -> int:
        return sum(xs) * 10 + current_context().rank

    @register(CYCLE)
    def foo_custom(self, x: int, y: int) -> int:
        return x + y + 2

    @register(SUM)
    def summed(self, x: int) -> int:
        return x + current_context().rank

    # DP_COMPUTE_PROTO -------------------------------------------------------
    @register(Dispatch.DP_COMPUTE_PROTO)
    def add_rank(self, data: Batch) -> Batch:
        """verl's auto-padding worker: ``a += rank`` (in place), plus the rank of each row."""
        return _add_rank(data)

    @register(Dispatch.DP_COMPUTE_PROTO, pad=True)
    def add_rank_padded(self, data: Batch) -> Batch:
        """:meth:`add_rank`, registered with ``pad=True``."""
        return _add_rank(data)

    @register(Dispatch.DP_COMPUTE_PROTO)
    def add_initial(self, data: Batch, initial_value: int = 10) -> Batch:
        """verl's ``dp_compute``: ``a + initial_value + rank``."""
        rank = current_context().rank
        return Batch({"a": data.tensors["a"] + initial_value + rank})

    @register(Dispatch.DP_COMPUTE_PROTO)
    async def double_async(self, data: Batch) -> Batch:
        """verl's ``async_dp_compute``: ``a * 2 + 5 + rank``."""
        await asyncio.sleep(0)
        return Batch({"a": data.tensors["a"] * 2 + 5 + current_context().rank})

    @register(Dispatch.DP_COMPUTE_PROTO)
    def merge(self, left: Batch, *, right: Batch) -> Batch:
        """Two batch arguments, one positional and one keyword, split together."""
        return _merge(left, right)

    @register(Dispatch.DP_COMPUTE_PROTO, pad=True)
    def merge_padded(self, left: Batch, *, right: Batch) -> Batch:
        """:meth:`merge`, registered with ``pad=True``."""
        return _merge(left, right)

    @register(Dispatch.DP_COMPUTE_PROTO_WITH_FUNC)
    def apply(self, fn: Callable[[Batch], Batch], data: Batch) -> Batch:
        out = fn(data)
        return out.union(Batch({"rank": torch.full((len(data),), current_context().rank)}))

    @register(Dispatch.DP_COMPUTE_METRIC)
    def stats(self, data: Batch) -> dict[str, float]:
        return {
            "rank": float(current_context().rank),
            "rows": float(len(data)),
            "sum": float(data.tensors["a"].sum()),
        }

    # mesh modes -------------------------------------------------------------
    @register(mesh_dispatch("infer"))
    def infer(self, data: Batch) -> Batch:
        """verl's device-mesh test: collectors return ``a + (tp + 1) * dp``."""
        dp, tp = infer_coords(self.ctx.rank, self.ctx.world_size)
        self.seen["infer"] = [int(v) for v in data.tensors["a"].tolist()]
        return Batch({"a": data.tensors["a"] + (tp + 1) * dp})

    @register(mesh_dispatch("train"))
    def train(self, data: Batch) -> Batch:
        """Collectors return ``a + (tp + 1) * (dp + 2) * (pp + 3)``."""
        pp, dp, tp = train_coords(self.ctx.rank, self.ctx.world_size)
        self.seen["train"] = [int(v) for v in data.tensors["a"].tolist()]
        return Batch({"a": data.tensors["a"] + (tp + 1) * (dp + 2) * (pp + 3)})

    @register(mesh_dispatch("two_collectors"))
    def on_two_collectors(self, data: Batch) -> Batch:
        return data

    @register(mesh_dispatch("no_collector"))
    def on_no_collector(self, data: Batch) -> Batch:
        return data

    @register(mesh_dispatch("never_registered"))
    def on_unregistered_mesh(self, data: Batch) -> Batch:
        return data

    def not_registered(self) -> int:
        """A plain method: not callable through a group."""
        return 0


class EnvWorker:
    """Reports its context and the standard variables, at construction and while running."""

    def __init__(self) -> None:
        self.init_context = current_context()
        self.init_env = {k: os.environ.get(k) for k in STD_ENV_KEYS}

    @register(Dispatch.ONE_TO_ALL)
    def context(self) -> WorkerContext:
        return current_context()

    @register(Dispatch.ONE_TO_ALL)
    def init_view(self) -> tuple[WorkerContext, dict[str, str | None]]:
        return self.init_context, self.init_env

    @register(Dispatch.ONE_TO_ALL)
    def env_now(self) -> dict[str, str | None]:
        return {k: os.environ.get(k) for k in STD_ENV_KEYS}

    @register(Dispatch.ONE_TO_ALL)
    def getenv(self, key: str) -> str | None:
        return os.environ.get(key)


class FaultWorker:
    """``work`` sleeps once for the delay set with ``set_delay`` (how Ray tests go slow)."""

    def __init__(self) -> None:
        self._delay = 0.0

    @register(Dispatch.ALL_TO_ALL)
    def set_delay(self, seconds: float) -> None:
        self._delay = seconds

    @register(Dispatch.ONE_TO_ALL)
    def work(self, x: int) -> int:
        delay, self._delay = self._delay, 0.0
        if delay:
            time.sleep(delay)
        return x + current_context().rank


class BadInit:
    """A worker whose constructor raises on one rank."""

    def __init__(self, fail_rank: int) -> None:
        if current_context().rank == fail_rank:
            raise ValueError(f"constructor refused on rank {fail_rank}")

    @register(Dispatch.ONE_TO_ALL)
    def ping(self) -> int:
        return 1


# --------------------------------------------------------------------------- fusion
class Actor:
    """verl's colocated/fused actor: ``add`` (a += rank, sync) and ``inc`` (x + rank)."""

    @register(Dispatch.DP_COMPUTE_PROTO)
    def add(self, data: Batch) -> Batch:
        data.tensors["a"] += current_context().rank
        return Batch(data.tensors)

    @register(Dispatch.ONE_TO_ALL)
    def inc(self, x: float) -> float:
        return x + current_context().rank

    @register(Dispatch.ONE_TO_ALL)
    def fail(self, message: str) -> None:
        raise RuntimeError(message)


class Critic:
    """verl's critic: ``sub`` (a -= config["b"], async def) and ``dec`` (x - 10, per rank)."""

    def __init__(self, config: dict[str, float]) -> None:
        self.b = config["b"]

    @register(Dispatch.DP_COMPUTE_PROTO)
    async def sub(self, data: Batch) -> Batch:
        await asyncio.sleep(0)
        data.tensors["a"] -= self.b
        return Batch(data.tensors)

    @register(Dispatch.ALL_TO_ALL)
    def dec(self, x: float) -> float:
        return x - 10


class Hybrid:
    """A cross-role method: ``foo(x) = critic.dec(actor.inc(x))`` through its siblings."""

    @register(Dispatch.ONE_TO_ALL)
    def foo(self, x: float) -> float:
        actor = sibling("actor", Actor)
        critic = sibling("critic", Critic)
        return critic.dec(actor.inc(x))

    @register(Dispatch.ONE_TO_ALL)
    def sibling_type(self, role: str) -> str:
        return type(sibling(role, object)).__qualname__


class Twin:
    """Registers ``inc`` like :class:`Actor`: a method-name clash when both are fused."""

    @register(Dispatch.ONE_TO_ALL)
    def inc(self, x: float) -> float:
        return x + 100


def all_worker_classes() -> Sequence[type[Any]]:
    return (Actor, BadInit, Calc, Critic, EnvWorker, FaultWorker, Hybrid, Inner, Twin)
