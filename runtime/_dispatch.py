"""Dispatch planning: pure functions turning one group call into per-rank arguments.

Every backend shares this code; a backend only moves the per-rank arguments and results.
``plan_call`` never mutates the caller's values: padding builds new batches.

:func:`update_dispatch_mode` replaces the functions of a custom mode or, as verl allows, of a
built-in one (:func:`remove_dispatch_mode` restores a built-in).
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, overload

import attrs

from runtime._batch import Batch
from runtime._future import BatchFuture, Collector, FutureSlice, GroupFuture, Shared
from runtime._register import (
    CallArgs,
    CollectFn,
    CustomMode,
    Dispatch,
    DispatchFn,
    Execute,
    MeshMode,
    MethodMeta,
    custom_mode,
)
from runtime._register import remove_dispatch_mode as remove_custom_mode
from runtime._register import update_dispatch_mode as update_custom_mode
from runtime.errors import DispatchError

__all__ = [
    "CallPlan",
    "MeshLayout",
    "plan_call",
    "remove_dispatch_mode",
    "replaced_mode",
    "update_dispatch_mode",
]

_SHARDED = (
    Dispatch.DP_COMPUTE_PROTO,
    Dispatch.DP_COMPUTE_PROTO_WITH_FUNC,
    Dispatch.DP_COMPUTE_METRIC,
)


_replaced_lock = threading.Lock()
_replaced: dict[Dispatch, tuple[DispatchFn, CollectFn]] = {}


def _builtin(mode: str | Dispatch | CustomMode) -> Dispatch | None:
    if isinstance(mode, Dispatch):
        return mode
    name = mode.name if isinstance(mode, CustomMode) else mode
    return Dispatch.__members__.get(name.upper())


@overload
def update_dispatch_mode(
    mode: CustomMode, dispatch_fn: DispatchFn, collect_fn: CollectFn
) -> CustomMode: ...
@overload
def update_dispatch_mode(
    mode: Dispatch, dispatch_fn: DispatchFn, collect_fn: CollectFn
) -> Dispatch: ...
@overload
def update_dispatch_mode(
    mode: str, dispatch_fn: DispatchFn, collect_fn: CollectFn
) -> Dispatch | CustomMode: ...
def update_dispatch_mode(
    mode: str | Dispatch | CustomMode, dispatch_fn: DispatchFn, collect_fn: CollectFn
) -> Dispatch | CustomMode:
    """Replace the functions of a dispatch mode, custom or built-in (verl's behaviour).

    A custom mode must be registered (else :class:`DispatchError`). A built-in mode (a
    :class:`Dispatch` member or its name) then dispatches and collects every method
    registered with it through ``dispatch_fn``/``collect_fn``, exactly like a custom mode,
    until :func:`remove_dispatch_mode` restores it; ``Execute.RANK_ZERO`` methods still run
    on rank 0 only, and a per-rank call passes no per-rank argument sets (use
    ``call_by_name``). The static result type stays the built-in one: a collect function
    should return that shape. Process-global, like verl's registry.
    """
    builtin = _builtin(mode)
    if builtin is None:
        assert not isinstance(mode, Dispatch)
        return update_custom_mode(
            mode.name if isinstance(mode, CustomMode) else mode, dispatch_fn, collect_fn
        )
    with _replaced_lock:
        _replaced[builtin] = (dispatch_fn, collect_fn)
    return builtin


def remove_dispatch_mode(mode: str | Dispatch | CustomMode) -> None:
    """Forget a custom mode (unknown: :class:`DispatchError`), or restore a built-in mode's
    own dispatch and collection (a no-op when it was not replaced)."""
    builtin = _builtin(mode)
    if builtin is None:
        assert not isinstance(mode, Dispatch)
        remove_custom_mode(mode.name if isinstance(mode, CustomMode) else mode)
        return
    with _replaced_lock:
        _replaced.pop(builtin, None)


def replaced_mode(mode: Dispatch) -> tuple[DispatchFn, CollectFn] | None:
    """The functions replacing built-in ``mode`` (``None``: it is not replaced)."""
    with _replaced_lock:
        return _replaced.get(mode)


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
    pad: bool | None = None,
) -> CallPlan:
    """Plan one call of ``meta`` on ``world_size`` ranks. ``share`` is ``Backend.share``;
    ``what`` is ``role.method``; ``pad`` (default: ``meta.pad``) pads an uneven batch."""
    mode = meta.dispatch
    for v in [*args, *kwargs.values()]:
        if isinstance(v, GroupFuture) and not isinstance(v, BatchFuture):
            raise DispatchError(
                f"{what}: only batch futures can be passed into a call; call .get() on {v!r} first"
            )
    if meta.execute is Execute.RANK_ZERO:
        return CallPlan((0,), ((_whole(args), _whole_kw(kwargs)),), Collector("single"))
    if isinstance(mode, CustomMode):
        return _plan_custom(mode.name, custom_mode(mode.name), world_size, args, kwargs, what)
    if isinstance(mode, Dispatch) and (fns := replaced_mode(mode)) is not None:
        if per_rank is not None and any(c.args or c.kwargs for c in per_rank):
            raise DispatchError(
                f"{what}: {mode.name} was replaced with update_dispatch_mode, so it takes the "
                "arguments as its dispatch function does; call it with call_by_name(...)"
            )
        return _plan_custom(mode.name, fns, world_size, args, kwargs, what)
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
            meta,
            mesh.dp_size,
            args,
            kwargs,
            share,
            what,
            mesh=mesh,
            world_size=world_size,
            pad=meta.pad if pad is None else pad,
        )
    if mode in _SHARDED:
        return _plan_sharded(
            meta,
            world_size,
            args,
            kwargs,
            share,
            what,
            mesh=None,
            world_size=world_size,
            pad=meta.pad if pad is None else pad,
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
            handle = share(v)  # ``v`` itself: a reference to pass as it is (Backend.share)
            cache[key] = v if handle is v else Shared(handle)
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
    name: str,
    fns: tuple[DispatchFn, CollectFn],
    world_size: int,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    what: str,
) -> CallPlan:
    dispatch_fn, collect_fn = fns
    calls = list(dispatch_fn(world_size, _whole(args), _whole_kw(kwargs)))
    if len(calls) != world_size:
        raise DispatchError(
            f"{what}: custom dispatch {name!r} returned {len(calls)} per-rank argument sets "
            f"for {world_size} ranks"
        )
    return CallPlan(
        tuple(range(world_size)),
        tuple((tuple(a), dict(k)) for a, k in calls),
        Collector("custom", fn=collect_fn),
    )


Key = int | str  # a positional argument's index or a keyword argument's name


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
    pad: bool,
) -> CallPlan:
    """Split the batch arguments into ``parts`` chunks (padded when ``pad``), broadcast the
    others, and give each rank its chunk (by dp rank on a mesh)."""
    items: list[tuple[Key, Any]] = [*enumerate(args), *kwargs.items()]
    batches = _batch_arguments(meta, args, items, what)
    n = len(next(iter(batches.values())))
    if n == 0:
        raise DispatchError(f"{what}: cannot split an empty batch over {parts} ranks")
    extra = (-n) % parts
    if extra and not pad:
        raise DispatchError(_uneven(meta, what, n, parts, world_size))
    chunks = {key: _chunk(v, parts, n, extra) for key, v in batches.items()}
    fixed = _fixed_values(items, batches, world_size, share)
    targets = list(range(parts)) if mesh is None else list(mesh.dp_ranks)
    if mesh is not None:
        # Share each dp chunk once when several ranks (e.g. tensor-parallel peers) receive it.
        users = [targets.count(d) for d in range(parts)]
        for key, parts_of_key in list(chunks.items()):
            chunks[key] = [
                Shared(share(c)) if users[d] > 1 and isinstance(c, Batch) else c
                for d, c in enumerate(parts_of_key)
            ]
    values = {**fixed}
    per_rank: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
    for chunk_idx in targets:
        values.update({key: chunks[key][chunk_idx] for key in batches})
        a = tuple(values[i] for i in range(len(args)))
        per_rank.append((a, {key: values[key] for key in kwargs}))
    size = (n + extra) // parts
    if meta.dispatch is Dispatch.DP_COMPUTE_METRIC:
        return CallPlan(tuple(range(world_size)), tuple(per_rank), Collector("list"))
    order = None if mesh is None else mesh.collect_order
    collector = (
        Collector("concat", pad=extra)
        if order is None
        else Collector("concat", pad=extra, order=order)
    )
    part_rows = tuple([size] * parts)
    return CallPlan(tuple(range(world_size)), tuple(per_rank), collector, part_rows)


def _uneven(meta: MethodMeta, what: str, rows: int, parts: int, world_size: int) -> str:
    """The message for a batch of ``rows`` rows that does not split into ``parts`` chunks."""
    role = what.rpartition(".")[0] or "?"
    over = f"{parts} ranks" if parts == world_size else f"{parts} dp ranks of {world_size}"
    return (
        f"{what}: method {meta.name!r} of role {role!r} got a batch of {rows} rows, which does "
        f"not split evenly over {over} (world size {world_size}); pass a multiple of {parts} "
        f"rows, or enable padding: @register({_mode_expr(meta.dispatch)}, pad=True) on the "
        "method, or call through group.with_padding()"
    )


def _mode_expr(mode: Dispatch | MeshMode | CustomMode) -> str:
    """How ``mode`` is written in an ``@register(...)`` line."""
    if isinstance(mode, Dispatch):
        return f"Dispatch.{mode.name}"
    if isinstance(mode, MeshMode):
        return f"mesh_dispatch({mode.name!r})"
    return repr(mode.name)


def _batch_arguments(
    meta: MethodMeta, args: Sequence[Any], items: Sequence[tuple[Key, Any]], what: str
) -> dict[Key, Batch | BatchFuture]:
    """The arguments to split (non-empty, all of one length), by position or name."""
    fixed: set[Key] = set()
    if meta.dispatch is Dispatch.DP_COMPUTE_PROTO_WITH_FUNC:
        if not args or not callable(args[0]) or isinstance(args[0], Batch | BatchFuture):
            raise DispatchError(
                f"{what} (DP_COMPUTE_PROTO_WITH_FUNC) needs a function as its first argument"
            )
        fixed.add(0)
    batches: dict[Key, Batch | BatchFuture] = {
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
    return batches


def _chunk(v: Batch | BatchFuture, parts: int, n: int, pad: int) -> list[Any]:
    """``parts`` equal chunks of ``v`` (``n`` rows, padded by ``pad`` repeated rows)."""
    if isinstance(v, Batch):
        padded = v.pad_to_multiple(parts)[0] if pad else v
        # Views: the backend serializes each chunk's own elements (no extra copy here).
        return list(padded.chunk(parts, copy=False))
    size = (n + pad) // parts
    rows = [j if j < n else (j - n) % n for j in range(n + pad)]
    return [v.slice_rows(rows[i * size : (i + 1) * size]) for i in range(parts)]


def _fixed_values(
    items: Sequence[tuple[Key, Any]],
    batches: Mapping[Key, Any],
    world_size: int,
    share: Callable[[object], object],
) -> dict[Key, Any]:
    """The arguments that are not split, broadcast (shared once when heavy), by key."""
    rest = [(key, v) for key, v in items if key not in batches]
    shared_args, shared_kwargs = _broadcast(
        [v for key, v in rest if isinstance(key, int)],
        {key: v for key, v in rest if isinstance(key, str)},
        world_size,
        share,
    )
    positional = iter(shared_args)
    return {
        key: next(positional) if isinstance(key, int) else shared_kwargs[key] for key, _ in rest
    }


def _argname(key: int | str) -> str:
    return f"arg{key}" if isinstance(key, int) else key
