"""Dispatch planning: pure functions turning one group call into per-rank arguments.

Every backend shares this code; a backend only moves the per-rank arguments and results.
``plan_call`` never mutates the caller's values: padding builds new batches.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from runtime._batch import Batch
from runtime._future import BatchFuture, Collector, FutureSlice, GroupFuture, Shared
from runtime._register import (
    CallArgs,
    CustomMode,
    Dispatch,
    Execute,
    MeshMode,
    MethodMeta,
    custom_mode,
)
from runtime.errors import DispatchError

__all__ = ["CallPlan", "MeshLayout", "plan_call"]

_SHARDED = (
    Dispatch.DP_COMPUTE_PROTO,
    Dispatch.DP_COMPUTE_PROTO_WITH_FUNC,
    Dispatch.DP_COMPUTE_METRIC,
)


@attrs.frozen
class MeshLayout:
    """Each rank's ``(dp_rank, is_collector)`` for one mesh, validated."""

    name: str
    dp_ranks: tuple[int, ...]
    collectors: tuple[bool, ...]

    @property
    def dp_size(self) -> int:
        return max(self.dp_ranks) + 1

    @property
    def collect_order(self) -> tuple[int, ...]:
        """Collector ranks sorted by dp rank."""
        return tuple(
            sorted((r for r, c in enumerate(self.collectors) if c), key=self.dp_ranks.__getitem__)
        )

    @classmethod
    def build(cls, name: str, role: str, infos: Sequence[tuple[int, bool] | None]) -> MeshLayout:
        """Validate the per-rank registrations: every rank registered, dp ranks contiguous from
        0, exactly one collector per dp rank."""
        missing = [r for r, i in enumerate(infos) if i is None]
        if missing:
            raise DispatchError(
                f"mesh {name!r} is not registered on role {role!r} ranks {missing}; call "
                f"runtime.register_mesh({name!r}, dp_rank=..., is_collector=...) in the worker "
                "(usually in __init__) before calling a method that dispatches over it"
            )
        pairs = [i for i in infos if i is not None]
        dp = tuple(p[0] for p in pairs)
        col = tuple(bool(p[1]) for p in pairs)
        size = max(dp) + 1
        if sorted(set(dp)) != list(range(size)):
            raise DispatchError(
                f"mesh {name!r} on role {role!r}: dp ranks {sorted(set(dp))} are not 0..{size - 1}"
            )
        for d in range(size):
            holders = [r for r in range(len(dp)) if dp[r] == d and col[r]]
            if len(holders) != 1:
                raise DispatchError(
                    f"mesh {name!r} on role {role!r}: dp rank {d} has {len(holders)} collector "
                    f"ranks {holders}; exactly one rank per dp rank must have is_collector=True"
                )
        return cls(name, dp, col)


@attrs.frozen
class CallPlan:
    """Which ranks run, with which arguments, and how to collect their outputs."""

    ranks: tuple[int, ...]
    per_rank: tuple[tuple[tuple[Any, ...], dict[str, Any]], ...]
    collector: Collector
    part_rows: tuple[int, ...] | None = None
    padding_enabled: bool = False


_LIGHT = (type(None), bool, int, float, complex, enum.Enum)


def _is_light(value: object) -> bool:
    if isinstance(value, _LIGHT):
        return True
    if isinstance(value, str | bytes):
        return len(value) < 1024
    return False


def plan_call(
    meta: MethodMeta,
    world_size: int,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    *,
    share: Callable[[object], object],
    what: str,
    mesh: MeshLayout | None = None,
    per_rank: Sequence[CallArgs[Any]] | None = None,
) -> CallPlan:
    """Plan one call of ``meta`` on ``world_size`` ranks. ``share`` is ``Backend.share``."""
    mode = meta.dispatch
    for v in [*args, *kwargs.values()]:
        if isinstance(v, GroupFuture) and not isinstance(v, BatchFuture):
            raise DispatchError(
                f"{what}: only batch futures can be passed into a call; call .get() on {v!r} first"
            )
    if meta.execute is Execute.RANK_ZERO:
        return CallPlan((0,), ((_whole(args), _whole_kw(kwargs)),), Collector("single"))
    if isinstance(mode, CustomMode):
        return _plan_custom(mode, world_size, args, kwargs, what)
    if mode is Dispatch.ONE_TO_ALL:
        a, k = _broadcast(args, kwargs, world_size, share)
        return CallPlan(
            tuple(range(world_size)), tuple((a, k) for _ in range(world_size)), Collector("list")
        )
    if mode in (Dispatch.ALL_TO_ALL, Dispatch.DP_COMPUTE):
        calls = _per_rank(meta, world_size, args, kwargs, per_rank, what)
        return CallPlan(tuple(range(world_size)), calls, Collector("list"))
    if isinstance(mode, MeshMode):
        if mesh is None:
            raise DispatchError(f"{what}: mesh {mode.name!r} layout is unknown")
        return _plan_sharded(
            meta, mesh.dp_size, args, kwargs, share, what, mesh=mesh, world_size=world_size
        )
    if mode in _SHARDED:
        return _plan_sharded(
            meta, world_size, args, kwargs, share, what, mesh=None, world_size=world_size
        )
    raise DispatchError(f"{what}: unsupported dispatch mode {mode!r}")


def _whole(args: Sequence[Any]) -> tuple[Any, ...]:
    return tuple(_whole_value(a) for a in args)


def _whole_kw(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _whole_value(v) for k, v in kwargs.items()}


def _whole_value(v: Any) -> Any:
    return v.slice_rows(range(len(v))) if isinstance(v, BatchFuture) else v


def _broadcast(
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    world_size: int,
    share: Callable[[object], object],
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    if world_size == 1:
        return _whole(args), _whole_kw(kwargs)
    cache: dict[int, Any] = {}

    def one(v: Any) -> Any:
        v = _whole_value(v)
        if _is_light(v) or isinstance(v, FutureSlice):
            return v
        key = id(v)
        if key not in cache:
            cache[key] = Shared(share(v))
        return cache[key]

    return tuple(one(a) for a in args), {k: one(v) for k, v in kwargs.items()}


def _per_rank(
    meta: MethodMeta,
    world_size: int,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    per_rank: Sequence[CallArgs[Any]] | None,
    what: str,
) -> tuple[tuple[tuple[Any, ...], dict[str, Any]], ...]:
    if per_rank is not None:
        if args or kwargs:
            raise DispatchError(
                f"{what}: pass either per-rank CallArgs or argument lists, not both"
            )
        if len(per_rank) != world_size:
            raise DispatchError(
                f"{what} ({meta.mode_name}) got arguments for {len(per_rank)} ranks but the group "
                f"has {world_size}; pass exactly one CallArgs per rank"
            )
        return tuple((_whole(c.args), _whole_kw(c.kwargs)) for c in per_rank)
    for name, v in [*((f"argument {i}", a) for i, a in enumerate(args)), *kwargs.items()]:
        if not isinstance(v, list | tuple) or len(v) != world_size:
            got = (
                f"a {type(v).__name__} of length {len(v)}"
                if isinstance(v, list | tuple)
                else repr(v)
            )
            raise DispatchError(
                f"{what} ({meta.mode_name}) needs every argument as a list with one value per "
                f"rank ({world_size}); {name} is {got}"
            )
    return tuple(
        (
            tuple(_whole_value(a[r]) for a in args),
            {k: _whole_value(v[r]) for k, v in kwargs.items()},
        )
        for r in range(world_size)
    )


def _plan_custom(
    mode: CustomMode, world_size: int, args: Sequence[Any], kwargs: Mapping[str, Any], what: str
) -> CallPlan:
    dispatch_fn, collect_fn = custom_mode(mode.name)
    calls = list(dispatch_fn(world_size, _whole(args), _whole_kw(kwargs)))
    if len(calls) != world_size:
        raise DispatchError(
            f"{what}: custom dispatch {mode.name!r} returned {len(calls)} per-rank argument sets "
            f"for {world_size} ranks"
        )
    return CallPlan(
        tuple(range(world_size)),
        tuple((tuple(a), dict(k)) for a, k in calls),
        Collector("custom", fn=collect_fn),
    )


def _plan_sharded(
    meta: MethodMeta,
    parts: int,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    share: Callable[[object], object],
    what: str,
    *,
    mesh: MeshLayout | None,
    world_size: int,
) -> CallPlan:
    items: list[tuple[int | str, Any]] = [*enumerate(args), *kwargs.items()]
    fixed: set[int | str] = set()
    if meta.dispatch is Dispatch.DP_COMPUTE_PROTO_WITH_FUNC:
        if not args or not callable(args[0]) or isinstance(args[0], Batch | BatchFuture):
            raise DispatchError(
                f"{what} (DP_COMPUTE_PROTO_WITH_FUNC) needs a function as its first argument"
            )
        fixed.add(0)
    batches = {
        key: v for key, v in items if key not in fixed and isinstance(v, Batch | BatchFuture)
    }
    if not batches:
        raise DispatchError(
            f"{what} ({meta.mode_name}) needs at least one Batch argument to split over ranks"
        )
    lengths = {key: len(v) for key, v in batches.items()}
    if len(set(lengths.values())) != 1:
        raise DispatchError(
            f"{what}: batch arguments must have the same length to be split together; got "
            + ", ".join(f"{_argname(k)}={n}" for k, n in lengths.items())
        )
    n = next(iter(lengths.values()))
    if n == 0:
        raise DispatchError(f"{what}: cannot split an empty batch over {parts} ranks")
    padding = any(v.padding_enabled for v in batches.values())
    pad = (-n) % parts
    if pad and not padding:
        raise DispatchError(
            f"{what}: a batch of {n} rows does not split evenly over {parts} ranks; enable "
            "padding (batch.with_auto_padding(), runtime.batch_config.auto_padding = True, or "
            f"RUNTIME_AUTO_PADDING=1) or pass a multiple of {parts} rows"
        )
    size = (n + pad) // parts
    chunks: dict[int | str, list[Any]] = {}
    for key, v in batches.items():
        if isinstance(v, Batch):
            padded = v.pad_to_multiple(parts)[0] if pad else v
            # Views: the backend serializes each chunk's own elements (no extra copy here).
            chunks[key] = list(padded.chunk(parts, copy=False))
        else:
            rows = [j if j < n else (j - n) % n for j in range(n + pad)]
            chunks[key] = [v.slice_rows(rows[i * size : (i + 1) * size]) for i in range(parts)]

    shared_fixed = _broadcast(
        [v for key, v in items if key not in batches and isinstance(key, int)],
        {key: v for key, v in items if key not in batches and isinstance(key, str)},
        world_size,
        share,
    )
    fixed_pos = iter(shared_fixed[0])
    fixed_vals: dict[int | str, Any] = {}
    for key, _ in items:
        if key in batches:
            continue
        fixed_vals[key] = next(fixed_pos) if isinstance(key, int) else shared_fixed[1][key]

    if mesh is None:
        targets = list(range(parts))
    else:
        targets = list(mesh.dp_ranks)
        # Share each dp chunk once when several ranks (e.g. tensor-parallel peers) receive it.
        users = [targets.count(d) for d in range(parts)]
        for key, parts_of_key in list(chunks.items()):
            chunks[key] = [
                Shared(share(c)) if users[d] > 1 and isinstance(c, Batch) else c
                for d, c in enumerate(parts_of_key)
            ]

    per_rank: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
    for chunk_idx in targets:
        a = tuple(chunks[i][chunk_idx] if i in batches else fixed_vals[i] for i in range(len(args)))
        k = {key: chunks[key][chunk_idx] if key in batches else fixed_vals[key] for key in kwargs}
        per_rank.append((a, k))

    if meta.dispatch is Dispatch.DP_COMPUTE_METRIC:
        collector = Collector("list")
        part_rows = None
    elif mesh is None:
        collector = Collector("concat", pad=pad)
        part_rows = tuple([size] * parts)
    else:
        collector = Collector("concat", pad=pad, order=mesh.collect_order)
        part_rows = tuple([size] * parts)
    return CallPlan(tuple(range(world_size)), tuple(per_rank), collector, part_rows, padding)


def _argname(key: int | str) -> str:
    return f"arg{key}" if isinstance(key, int) else key
