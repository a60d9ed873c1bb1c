"""The ``register`` decorator, dispatch/execute modes and the typed method descriptors.

``@register(Dispatch.ONE_TO_ALL)`` only attaches metadata: the decorated function still runs
unchanged when called on a worker instance (``self.add(1)``), the class stays a plain class, and
the metadata is readable from the class (``Worker.add.meta``).

**Types are computed once, here.** Each mode's registrar turns the function into a descriptor
whose type parameters already say what a group call takes and returns, so
``WorkerGroup.call``/``submit`` have one signature each and only read them off:

``Method[S, Fn, P, R, Fut]``
    ``S`` the worker class, ``Fn`` the function as ``instance.method`` sees it (its own
    signature, ``self`` bound), ``P`` the parameters of ``group.call(method, *P)``, ``R`` what
    ``call`` returns and ``Fut`` what ``submit`` returns.
``PerRankMethod[S, Fn, P, R, CallArgs[P]]``
    ALL_TO_ALL / DP_COMPUTE: one argument set per rank, built with ``Worker.m.bind(*P)`` (a
    ``CallArgs[P]``) and passed to ``group.call_per_rank`` (returns ``R``) or
    ``submit_per_rank`` (``GroupFuture[R]``). It is not a ``Method``, so ``group.call``
    rejects it; the bound arguments of another method are rejected too.

For a function ``def m(self, *P) -> T`` (or ``async def``; ``T`` is then what it awaits to):

============================  ==================================================
mode                          what a group call takes and returns
============================  ==================================================
ONE_TO_ALL                    ``call(m, *P) -> list[T]``
Execute.RANK_ZERO, RANK_ZERO  ``call(m, *P) -> T``
ALL_TO_ALL, DP_COMPUTE        ``call_per_rank(m, [m.bind(*P), ...]) -> list[T]``
DP_COMPUTE_PROTO, mesh modes  ``call(m, Batch | BatchFuture, *P) -> Batch``
..._PROTO_WITH_FUNC           ``call(m, F, Batch | BatchFuture, *P) -> Batch``
DP_COMPUTE_METRIC             ``call(m, Batch | BatchFuture, *P) -> list[T]``
custom modes                  ``call(m, *P) -> Any``
============================  ==================================================

``submit`` (``submit_per_rank``) takes the same arguments and returns a ``BatchFuture`` where
``call`` returns a ``Batch``, else a ``GroupFuture`` of what ``call`` returns.
For the sharded modes ``P`` is what follows the batch (or the function ``F`` and the batch),
the batch is positional, and ``T`` must be ``Batch`` except for DP_COMPUTE_METRIC. Per-rank
methods are submitted with ``submit_per_rank``.

**Padding** is a setting of the method or of the group, never of the data: the sharded modes
take ``@register(..., pad=True)``, which pads a batch whose rows do not split evenly over the
ranks with repeated rows and removes them from the collected result; ``group.with_padding()``
does the same for every sharded call through that view. Without either, an uneven batch is a
:class:`~runtime.errors.DispatchError` naming the method, the role, the rows, the world size
and both fixes.
"""

from __future__ import annotations

import enum
import inspect
import threading
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Concatenate, Generic, Literal, ParamSpec, Self, TypeVar, cast, overload

import attrs

from runtime._batch import Batch
from runtime._future import BatchFuture, GroupFuture
from runtime.errors import DispatchError

__all__ = [
    "BroadcastRegistrar",
    "CallArgs",
    "CollectFn",
    "CustomMode",
    "CustomRegistrar",
    "Dispatch",
    "DispatchFn",
    "Execute",
    "MeshMode",
    "Method",
    "MethodMeta",
    "PerRankMethod",
    "PerRankRegistrar",
    "RankZeroRegistrar",
    "Registered",
    "Registrar",
    "ShardedListRegistrar",
    "ShardedRegistrar",
    "ShardedWithFuncRegistrar",
    "custom_mode",
    "get_method_meta",
    "mesh_dispatch",
    "register",
    "register_dispatch_mode",
    "registered_methods",
    "remove_dispatch_mode",
    "update_dispatch_mode",
]

S = TypeVar("S")
S_contra = TypeVar("S_contra", contravariant=True)
Fn_co = TypeVar("Fn_co", covariant=True)
P = ParamSpec("P")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)
Fut_co = TypeVar("Fut_co", covariant=True)
F = TypeVar("F")
A = TypeVar("A", bound="CallArgs[Any]")
B = TypeVar("B", bound="Batch | Coroutine[Any, Any, Batch]")
Co = Coroutine[Any, Any, R]


class Dispatch(enum.Enum):
    """Built-in dispatch modes (how a call's arguments are split over ranks)."""

    ONE_TO_ALL = "one_to_all"
    ALL_TO_ALL = "all_to_all"
    DP_COMPUTE = "dp_compute"
    DP_COMPUTE_PROTO = "dp_compute_proto"
    DP_COMPUTE_PROTO_WITH_FUNC = "dp_compute_proto_with_func"
    DP_COMPUTE_METRIC = "dp_compute_metric"
    RANK_ZERO = "rank_zero"


class Execute(enum.Enum):
    """Which ranks run: all of them, or rank 0 only (the result is then a single value)."""

    ALL = "all"
    RANK_ZERO = "rank_zero"


#: ``dispatch_fn(world_size, args, kwargs) -> per-rank [(args, kwargs), ...]``
DispatchFn = Callable[
    [int, tuple[Any, ...], dict[str, Any]], Sequence[tuple[tuple[Any, ...], dict[str, Any]]]
]
#: ``collect_fn(outputs) -> result`` with ``outputs`` in rank order
CollectFn = Callable[[list[Any]], Any]


@attrs.frozen
class CustomMode:
    """A dispatch mode registered by name (see :func:`register_dispatch_mode`)."""

    name: str


@attrs.frozen
class MeshMode:
    """N-D mesh dispatch over the mesh ``name`` that workers register with ``register_mesh``."""

    name: str


_custom_lock = threading.Lock()
_custom_modes: dict[str, tuple[DispatchFn, CollectFn]] = {}


def register_dispatch_mode(name: str, dispatch_fn: DispatchFn, collect_fn: CollectFn) -> CustomMode:
    """Register a custom mode; a duplicate name raises :class:`DispatchError`."""
    key = name.upper()
    if key in Dispatch.__members__:
        raise DispatchError(f"dispatch mode {name!r} is a built-in mode; choose another name")
    with _custom_lock:
        if key in _custom_modes:
            raise DispatchError(
                f"dispatch mode {name!r} is already registered; use update_dispatch_mode to "
                "replace its functions, or pick a new name"
            )
        _custom_modes[key] = (dispatch_fn, collect_fn)
    return CustomMode(key)


def update_dispatch_mode(name: str, dispatch_fn: DispatchFn, collect_fn: CollectFn) -> CustomMode:
    """Replace the functions of an existing custom mode (unknown name: :class:`DispatchError`)."""
    key = name.upper()
    with _custom_lock:
        if key not in _custom_modes:
            raise DispatchError(f"dispatch mode {name!r} is not registered; known: {_known()}")
        _custom_modes[key] = (dispatch_fn, collect_fn)
    return CustomMode(key)


def remove_dispatch_mode(name: str) -> None:
    """Forget a custom mode (unknown name: :class:`DispatchError`)."""
    with _custom_lock:
        if _custom_modes.pop(name.upper(), None) is None:
            raise DispatchError(f"dispatch mode {name!r} is not registered; known: {_known()}")


def custom_mode(name: str) -> tuple[DispatchFn, CollectFn]:
    """The functions of custom mode ``name`` (unknown: :class:`DispatchError`)."""
    with _custom_lock:
        fns = _custom_modes.get(name.upper())
    if fns is None:
        raise DispatchError(
            f"unknown dispatch mode {name!r}; register it first with register_dispatch_mode "
            f"(custom modes known: {_known()})"
        )
    return fns


def _known() -> list[str]:
    return sorted(_custom_modes)


def mesh_dispatch(name: str) -> MeshMode:
    """The N-D mode for mesh ``name``: batches chunked into dp-size pieces, every rank of a dp
    group gets its chunk, outputs gathered from collector ranks ordered by dp rank."""
    if not name:
        raise DispatchError("a mesh needs a non-empty name")
    return MeshMode(name)


DispatchSpec = Dispatch | MeshMode | CustomMode


@attrs.frozen
class MethodMeta:
    """What ``register`` recorded: how to dispatch, execute and collect a worker method.

    ``pad``: a batch that does not split evenly over the ranks is padded (sharded modes only).
    """

    name: str
    dispatch: DispatchSpec
    execute: Execute
    is_async: bool
    pad: bool = False

    @property
    def mode_name(self) -> str:
        d = self.dispatch
        return d.name if isinstance(d, Dispatch) else f"{type(d).__name__}({d.name!r})"


@attrs.frozen
class CallArgs(Generic[P]):
    """One rank's arguments for a per-rank call, checked against the method by mypy.

    Build with ``Worker.method.bind(...)``.
    """

    args: tuple[Any, ...]
    kwargs: dict[str, Any]


class Registered(Generic[S_contra, Fn_co]):
    """A registered worker method: the function plus its :class:`MethodMeta`.

    As a descriptor it is transparent: ``instance.method`` is the bound function (type
    ``Fn_co``); ``Worker.method`` (class access) is this object, which a group accepts.
    """

    def __init__(self, fn: Callable[..., Any], meta: MethodMeta) -> None:
        self.fn = fn
        self.meta = meta
        self.__doc__ = fn.__doc__
        self.__name__ = fn.__name__
        self.__qualname__ = fn.__qualname__
        self.__module__ = fn.__module__
        self.__wrapped__ = fn

    @overload
    def __get__(self, instance: None, owner: type[Any] | None = None) -> Self: ...
    @overload
    def __get__(self, instance: S_contra, owner: type[Any] | None = None) -> Fn_co: ...
    def __get__(self, instance: object, owner: type[Any] | None = None) -> Any:
        if instance is None:
            return self
        return self.fn.__get__(instance, owner)

    def __set_name__(self, owner: type[Any], name: str) -> None:
        if name != self.meta.name:
            self.meta = attrs.evolve(self.meta, name=name)
        self.owner = owner

    def __repr__(self) -> str:
        return f"<registered {self.meta.mode_name} method {self.fn.__qualname__}>"


class Method(Registered[S_contra, Fn_co], Generic[S_contra, Fn_co, P, R_co, Fut_co]):
    """A method called on every rank with one argument set: ``group.call(m, *P) -> R_co``,
    ``group.submit(m, *P) -> Fut_co`` (see the module docstring for each mode's types)."""


class PerRankMethod(Registered[S_contra, Fn_co], Generic[S_contra, Fn_co, P, R_co, A]):
    """An ALL_TO_ALL / DP_COMPUTE method: ``group.call_per_rank(m, [m.bind(*P), ...]) -> R_co``.

    ``A`` is ``CallArgs[P]``, what :meth:`bind` returns. It is a type parameter of its own, and
    invariant, so that ``call_per_rank(W.a, [W.b.bind(...)])`` is a type error whenever the two
    methods' parameters differ (mypy solves a ``ParamSpec`` met twice too leniently for that).
    """

    def bind(self, *args: P.args, **kwargs: P.kwargs) -> A:
        """One rank's arguments for ``group.call_per_rank`` (type-checked against the method)."""
        return cast(A, CallArgs(tuple(args), dict(kwargs)))


class Registrar:
    """What ``register(...)`` returns; each mode's subclass types the descriptor it makes."""

    def __init__(self, dispatch: DispatchSpec, execute: Execute, pad: bool = False) -> None:
        self._dispatch = dispatch
        self._execute = execute
        self._pad = pad

    def _meta(self, fn: object) -> tuple[Callable[..., Any], MethodMeta]:
        if isinstance(fn, Registered):
            raise DispatchError(f"{fn.fn.__qualname__} is already registered; apply @register once")
        if not callable(fn):
            raise DispatchError(f"@register applies to functions, got {fn!r}")
        meta = MethodMeta(
            name=getattr(fn, "__name__", repr(fn)),
            dispatch=self._dispatch,
            execute=self._execute,
            is_async=inspect.iscoroutinefunction(fn),
            pad=self._pad,
        )
        return fn, meta


class BroadcastRegistrar(Registrar):
    """ONE_TO_ALL: ``call`` returns ``list[T]``."""

    @overload
    def __call__(
        self, fn: Callable[Concatenate[S, P], Co[R]]
    ) -> Method[S, Callable[P, Co[R]], P, list[R], GroupFuture[list[R]]]: ...
    @overload
    def __call__(
        self, fn: Callable[Concatenate[S, P], R]
    ) -> Method[S, Callable[P, R], P, list[R], GroupFuture[list[R]]]: ...
    def __call__(self, fn: Callable[..., Any]) -> Method[Any, Any, Any, Any, Any]:
        return Method(*self._meta(fn))


class RankZeroRegistrar(Registrar):
    """Execute.RANK_ZERO: only rank 0 runs; ``call`` returns ``T``."""

    @overload
    def __call__(
        self, fn: Callable[Concatenate[S, P], Co[R]]
    ) -> Method[S, Callable[P, Co[R]], P, R, GroupFuture[R]]: ...
    @overload
    def __call__(
        self, fn: Callable[Concatenate[S, P], R]
    ) -> Method[S, Callable[P, R], P, R, GroupFuture[R]]: ...
    def __call__(self, fn: Callable[..., Any]) -> Method[Any, Any, Any, Any, Any]:
        return Method(*self._meta(fn))


class PerRankRegistrar(Registrar):
    """ALL_TO_ALL / DP_COMPUTE: ``call_per_rank`` returns ``list[T]``."""

    @overload
    def __call__(
        self, fn: Callable[Concatenate[S, P], Co[R]]
    ) -> PerRankMethod[S, Callable[P, Co[R]], P, list[R], CallArgs[P]]: ...
    @overload
    def __call__(
        self, fn: Callable[Concatenate[S, P], R]
    ) -> PerRankMethod[S, Callable[P, R], P, list[R], CallArgs[P]]: ...
    def __call__(self, fn: Callable[..., Any]) -> PerRankMethod[Any, Any, Any, Any, Any]:
        return PerRankMethod(*self._meta(fn))


class ShardedRegistrar(Registrar):
    """DP_COMPUTE_PROTO and mesh modes: the batch (first argument, a ``Batch`` or a
    ``BatchFuture``) is split over the ranks; ``call`` returns the concatenated ``Batch``."""

    def __call__(
        self, fn: Callable[Concatenate[S, Batch, P], B]
    ) -> Method[
        S,
        Callable[Concatenate[Batch, P], B],
        Concatenate[Batch | BatchFuture, P],
        Batch,
        BatchFuture,
    ]:
        return Method(*self._meta(fn))


class ShardedWithFuncRegistrar(Registrar):
    """DP_COMPUTE_PROTO_WITH_FUNC: a function broadcast, then the batch split; ``Batch``."""

    def __call__(
        self, fn: Callable[Concatenate[S, F, Batch, P], B]
    ) -> Method[
        S,
        Callable[Concatenate[F, Batch, P], B],
        Concatenate[F, Batch | BatchFuture, P],
        Batch,
        BatchFuture,
    ]:
        return Method(*self._meta(fn))


class ShardedListRegistrar(Registrar):
    """DP_COMPUTE_METRIC: the batch split; ``call`` returns ``list[T]``, one per rank."""

    @overload
    def __call__(
        self, fn: Callable[Concatenate[S, Batch, P], Co[R]]
    ) -> Method[
        S,
        Callable[Concatenate[Batch, P], Co[R]],
        Concatenate[Batch | BatchFuture, P],
        list[R],
        GroupFuture[list[R]],
    ]: ...
    @overload
    def __call__(
        self, fn: Callable[Concatenate[S, Batch, P], R]
    ) -> Method[
        S,
        Callable[Concatenate[Batch, P], R],
        Concatenate[Batch | BatchFuture, P],
        list[R],
        GroupFuture[list[R]],
    ]: ...
    def __call__(self, fn: Callable[..., Any]) -> Method[Any, Any, Any, Any, Any]:
        return Method(*self._meta(fn))


class CustomRegistrar(Registrar):
    """A mode registered with :func:`register_dispatch_mode`: ``call`` returns ``Any``."""

    def __call__(
        self, fn: Callable[Concatenate[S, P], R]
    ) -> Method[S, Callable[P, R], P, Any, GroupFuture[Any]]:
        return Method(*self._meta(fn))


_RANK_ZERO_DISPATCH = (Dispatch.ONE_TO_ALL, Dispatch.ALL_TO_ALL, Dispatch.RANK_ZERO)
_PADDED = (
    Dispatch.DP_COMPUTE_PROTO,
    Dispatch.DP_COMPUTE_PROTO_WITH_FUNC,
    Dispatch.DP_COMPUTE_METRIC,
)


@overload
def register(
    dispatch_mode: Literal[Dispatch.ONE_TO_ALL, Dispatch.ALL_TO_ALL, Dispatch.RANK_ZERO],
    execute_mode: Literal[Execute.RANK_ZERO],
) -> RankZeroRegistrar: ...
@overload
def register(*, execute_mode: Literal[Execute.RANK_ZERO]) -> RankZeroRegistrar: ...
@overload
def register(
    dispatch_mode: Literal[Dispatch.RANK_ZERO],
    execute_mode: Literal[Execute.ALL] = ...,
) -> RankZeroRegistrar: ...
@overload
def register(
    dispatch_mode: Literal[Dispatch.ONE_TO_ALL],
    execute_mode: Literal[Execute.ALL] = ...,
) -> BroadcastRegistrar: ...
@overload
def register(
    dispatch_mode: Literal[Dispatch.ALL_TO_ALL, Dispatch.DP_COMPUTE] = ...,
    execute_mode: Literal[Execute.ALL] = ...,
) -> PerRankRegistrar: ...
@overload
def register(
    dispatch_mode: Literal[Dispatch.DP_COMPUTE_PROTO] | MeshMode,
    execute_mode: Literal[Execute.ALL] = ...,
    *,
    pad: bool = ...,
) -> ShardedRegistrar: ...
@overload
def register(
    dispatch_mode: Literal[Dispatch.DP_COMPUTE_PROTO_WITH_FUNC],
    execute_mode: Literal[Execute.ALL] = ...,
    *,
    pad: bool = ...,
) -> ShardedWithFuncRegistrar: ...
@overload
def register(
    dispatch_mode: Literal[Dispatch.DP_COMPUTE_METRIC],
    execute_mode: Literal[Execute.ALL] = ...,
    *,
    pad: bool = ...,
) -> ShardedListRegistrar: ...
@overload
def register(
    dispatch_mode: CustomMode | str,
    execute_mode: Literal[Execute.ALL] = ...,
) -> CustomRegistrar: ...
def register(
    dispatch_mode: DispatchSpec | str = Dispatch.ALL_TO_ALL,
    execute_mode: Execute = Execute.ALL,
    *,
    pad: bool = False,
) -> Registrar:
    """Mark a worker method as callable through a group.

    ``dispatch_mode`` says how arguments are split and results collected (a :class:`Dispatch`
    member, :func:`mesh_dispatch` ``(name)``, or the name of a mode registered with
    :func:`register_dispatch_mode`); ``execute_mode`` says which ranks run; ``pad=True``
    (sharded modes only) pads a batch that does not split evenly over the ranks. Batch
    futures passed as arguments are always resolved on the worker before the call. Every
    choice is validated here, when the decorator is applied.
    """
    spec = _spec(dispatch_mode)
    if not isinstance(execute_mode, Execute):
        raise DispatchError(f"unknown execute mode {execute_mode!r}; use Execute.ALL or RANK_ZERO")
    if execute_mode is Execute.RANK_ZERO and spec not in _RANK_ZERO_DISPATCH:
        raise DispatchError(
            f"Execute.RANK_ZERO only combines with ONE_TO_ALL, ALL_TO_ALL or RANK_ZERO dispatch, "
            f"not {spec!r}: a rank-zero call runs once with the arguments as given"
        )
    if spec is Dispatch.RANK_ZERO:
        execute_mode = Execute.RANK_ZERO
    if pad and not (spec in _PADDED or isinstance(spec, MeshMode)):
        raise DispatchError(
            f"pad=True only applies to the sharded modes (DP_COMPUTE_PROTO, ..._WITH_FUNC, "
            f"DP_COMPUTE_METRIC, mesh_dispatch), not {spec!r}: other modes do not split a batch"
        )
    return _registrar(spec, execute_mode)(spec, execute_mode, pad)


def _spec(dispatch_mode: object) -> DispatchSpec:
    """The validated dispatch spec of ``register``'s first argument."""
    if isinstance(dispatch_mode, str):
        custom_mode(dispatch_mode)  # validates the name now
        return CustomMode(dispatch_mode.upper())
    if isinstance(dispatch_mode, CustomMode):
        custom_mode(dispatch_mode.name)
        return dispatch_mode
    if isinstance(dispatch_mode, Dispatch | MeshMode):
        return dispatch_mode
    raise DispatchError(
        f"unknown dispatch mode {dispatch_mode!r}; use a Dispatch member, "
        "mesh_dispatch(name), or a name registered with register_dispatch_mode"
    )


def _registrar(spec: DispatchSpec, execute: Execute) -> type[Registrar]:
    """The registrar class typing the descriptors of ``spec`` run with ``execute``."""
    if execute is Execute.RANK_ZERO:
        return RankZeroRegistrar
    if isinstance(spec, CustomMode):
        return CustomRegistrar
    if isinstance(spec, MeshMode) or spec is Dispatch.DP_COMPUTE_PROTO:
        return ShardedRegistrar
    return {
        Dispatch.ONE_TO_ALL: BroadcastRegistrar,
        Dispatch.ALL_TO_ALL: PerRankRegistrar,
        Dispatch.DP_COMPUTE: PerRankRegistrar,
        Dispatch.DP_COMPUTE_PROTO_WITH_FUNC: ShardedWithFuncRegistrar,
        Dispatch.DP_COMPUTE_METRIC: ShardedListRegistrar,
    }[spec]


def get_method_meta(cls: type[Any], name: str) -> MethodMeta | None:
    """The metadata of ``cls.name`` if it is a registered method, else None."""
    for klass in cls.__mro__:
        attr = klass.__dict__.get(name)
        if attr is not None:
            return attr.meta if isinstance(attr, Registered) else None
    return None


def registered_methods(cls: type[Any]) -> dict[str, MethodMeta]:
    """Every registered method of ``cls`` (including inherited ones), by name."""
    out: dict[str, MethodMeta] = {}
    for klass in reversed(cls.__mro__):
        for name, attr in klass.__dict__.items():
            if isinstance(attr, Registered):
                out[name] = attr.meta
            elif name in out:
                del out[name]  # overridden by an unregistered attribute
    return out
