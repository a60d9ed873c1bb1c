"""The ``register`` decorator, dispatch/execute modes and the typed ``Method`` descriptor.

``@register(Dispatch.ONE_TO_ALL)`` only attaches metadata: the decorated function still runs
unchanged when called on a worker instance (``self.add(1)``), the class stays a plain class, and
the metadata is readable from the class (``Worker.add.meta``). At the type level the result is
a :class:`Method` carrying the worker class, the parameters, the return type and a *mode
marker*, which :class:`runtime.WorkerGroup` maps to the collected result type:

=========================  ===============  ==============================================
marker                     modes            ``group.call(...)`` result
=========================  ===============  ==============================================
:class:`Broadcast`         ONE_TO_ALL       ``list[R]``
:class:`PerRank`           ALL_TO_ALL,      ``list[R]`` (explicit per-rank args via
                           DP_COMPUTE       ``group.call_per_rank``)
:class:`Sharded`           DP_COMPUTE_PROTO ``Batch`` (concatenated, padding removed)
                           and mesh modes
:class:`ShardedWithFunc`   ..._WITH_FUNC    ``Batch``
:class:`ShardedList`       DP_COMPUTE_METRIC ``list[R]``
:class:`RankZero`          Execute.RANK_ZERO ``R``
:class:`Custom`            custom modes     whatever the collect function returns
=========================  ===============  ==============================================
"""

from __future__ import annotations

import enum
import inspect
import threading
from collections.abc import Callable, Sequence
from typing import Any, Concatenate, Generic, Literal, ParamSpec, TypeVar, overload

import attrs

from runtime.errors import DispatchError

__all__ = [
    "Broadcast",
    "CallArgs",
    "CollectFn",
    "Custom",
    "CustomMode",
    "Dispatch",
    "DispatchFn",
    "Execute",
    "MeshMode",
    "Method",
    "MethodMeta",
    "PerRank",
    "RankZero",
    "Registrar",
    "Sharded",
    "ShardedList",
    "ShardedWithFunc",
    "custom_mode",
    "get_method_meta",
    "mesh_dispatch",
    "register",
    "register_dispatch_mode",
    "registered_methods",
    "remove_dispatch_mode",
    "update_dispatch_mode",
]

S_contra = TypeVar("S_contra", contravariant=True)
S2 = TypeVar("S2")
P = ParamSpec("P")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)
M = TypeVar("M")
M_co = TypeVar("M_co", covariant=True)


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


# Mode markers: phantom types only, never instantiated.
class Broadcast:
    """ONE_TO_ALL: same arguments everywhere; result ``list[R]``."""


class PerRank:
    """ALL_TO_ALL / DP_COMPUTE: explicit per-rank arguments; result ``list[R]``."""


class Sharded:
    """DP_COMPUTE_PROTO and mesh modes: batch arguments chunked; result ``Batch``."""


class ShardedWithFunc:
    """DP_COMPUTE_PROTO_WITH_FUNC: a function broadcast, batches chunked; result ``Batch``."""


class ShardedList:
    """DP_COMPUTE_METRIC: batches chunked; result ``list[R]`` (one per rank)."""


class RankZero:
    """Execute.RANK_ZERO: only rank 0 runs; result ``R``."""


class Custom:
    """A user-registered mode; result is whatever its collect function returns."""


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
    """What ``register`` recorded: how to dispatch, execute and collect a worker method."""

    name: str
    dispatch: DispatchSpec
    execute: Execute
    is_async: bool

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


class Method(Generic[S_contra, P, R_co, M_co]):
    """A registered worker method: the function plus its :class:`MethodMeta`.

    As a descriptor it is transparent: ``instance.method(...)`` calls the function.
    ``Worker.method`` (class access) is this object, which ``WorkerGroup.call`` accepts.
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
    def __get__(
        self, instance: None, owner: type[Any] | None = None
    ) -> Method[S_contra, P, R_co, M_co]: ...
    @overload
    def __get__(self, instance: S_contra, owner: type[Any] | None = None) -> Callable[P, R_co]: ...
    def __get__(self, instance: object, owner: type[Any] | None = None) -> Any:
        if instance is None:
            return self
        return self.fn.__get__(instance, owner)

    def __set_name__(self, owner: type[Any], name: str) -> None:
        if name != self.meta.name:
            self.meta = attrs.evolve(self.meta, name=name)
        self.owner = owner

    def bind(self, *args: P.args, **kwargs: P.kwargs) -> CallArgs[P]:
        """One rank's arguments for ``group.call_per_rank`` (type-checked against the method)."""
        return CallArgs(tuple(args), dict(kwargs))

    def __repr__(self) -> str:
        return f"<registered {self.meta.mode_name} method {self.fn.__qualname__}>"


class Registrar(Generic[M]):
    """What ``register(...)`` returns: applied to a function, it yields a :class:`Method`."""

    def __init__(self, dispatch: DispatchSpec, execute: Execute) -> None:
        self._dispatch = dispatch
        self._execute = execute

    def __call__(self, fn: Callable[Concatenate[S2, P], R]) -> Method[S2, P, R, M]:
        if isinstance(fn, Method):
            raise DispatchError(f"{fn.fn.__qualname__} is already registered; apply @register once")
        if not callable(fn):
            raise DispatchError(f"@register applies to functions, got {fn!r}")
        meta = MethodMeta(
            name=fn.__name__,
            dispatch=self._dispatch,
            execute=self._execute,
            is_async=inspect.iscoroutinefunction(fn),
        )
        return Method(fn, meta)


_RANK_ZERO_DISPATCH = (Dispatch.ONE_TO_ALL, Dispatch.ALL_TO_ALL, Dispatch.RANK_ZERO)


@overload
def register(
    dispatch_mode: Literal[Dispatch.ONE_TO_ALL, Dispatch.ALL_TO_ALL, Dispatch.RANK_ZERO],
    execute_mode: Literal[Execute.RANK_ZERO],
) -> Registrar[RankZero]: ...
@overload
def register(*, execute_mode: Literal[Execute.RANK_ZERO]) -> Registrar[RankZero]: ...
@overload
def register(
    dispatch_mode: Literal[Dispatch.RANK_ZERO],
    execute_mode: Literal[Execute.ALL] = ...,
) -> Registrar[RankZero]: ...
@overload
def register(
    dispatch_mode: Literal[Dispatch.ONE_TO_ALL],
    execute_mode: Literal[Execute.ALL] = ...,
) -> Registrar[Broadcast]: ...
@overload
def register(
    dispatch_mode: Literal[Dispatch.ALL_TO_ALL, Dispatch.DP_COMPUTE] = ...,
    execute_mode: Literal[Execute.ALL] = ...,
) -> Registrar[PerRank]: ...
@overload
def register(
    dispatch_mode: Literal[Dispatch.DP_COMPUTE_PROTO] | MeshMode,
    execute_mode: Literal[Execute.ALL] = ...,
) -> Registrar[Sharded]: ...
@overload
def register(
    dispatch_mode: Literal[Dispatch.DP_COMPUTE_PROTO_WITH_FUNC],
    execute_mode: Literal[Execute.ALL] = ...,
) -> Registrar[ShardedWithFunc]: ...
@overload
def register(
    dispatch_mode: Literal[Dispatch.DP_COMPUTE_METRIC],
    execute_mode: Literal[Execute.ALL] = ...,
) -> Registrar[ShardedList]: ...
@overload
def register(
    dispatch_mode: CustomMode | str,
    execute_mode: Literal[Execute.ALL] = ...,
) -> Registrar[Custom]: ...
def register(
    dispatch_mode: DispatchSpec | str = Dispatch.ALL_TO_ALL,
    execute_mode: Execute = Execute.ALL,
) -> Registrar[Any]:
    """Mark a worker method as callable through a group.

    ``dispatch_mode`` says how arguments are split and results collected (a :class:`Dispatch`
    member, :func:`mesh_dispatch` ``(name)``, or the name of a mode registered with
    :func:`register_dispatch_mode`); ``execute_mode`` says which ranks run. Batch futures
    passed as arguments are always resolved on the worker before the call. Both modes are
    validated here, when the decorator is applied.
    """
    spec: DispatchSpec
    if isinstance(dispatch_mode, str):
        custom_mode(dispatch_mode)  # validates the name now
        spec = CustomMode(dispatch_mode.upper())
    elif isinstance(dispatch_mode, CustomMode):
        custom_mode(dispatch_mode.name)
        spec = dispatch_mode
    elif isinstance(dispatch_mode, Dispatch | MeshMode):
        spec = dispatch_mode
    else:
        raise DispatchError(
            f"unknown dispatch mode {dispatch_mode!r}; use a Dispatch member, "
            "mesh_dispatch(name), or a name registered with register_dispatch_mode"
        )
    if not isinstance(execute_mode, Execute):
        raise DispatchError(f"unknown execute mode {execute_mode!r}; use Execute.ALL or RANK_ZERO")
    if execute_mode is Execute.RANK_ZERO and spec not in _RANK_ZERO_DISPATCH:
        raise DispatchError(
            f"Execute.RANK_ZERO only combines with ONE_TO_ALL, ALL_TO_ALL or RANK_ZERO dispatch, "
            f"not {spec!r}: a rank-zero call runs once with the arguments as given"
        )
    if spec is Dispatch.RANK_ZERO:
        execute_mode = Execute.RANK_ZERO
    return Registrar(spec, execute_mode)


def get_method_meta(cls: type[Any], name: str) -> MethodMeta | None:
    """The metadata of ``cls.name`` if it is a registered method, else None."""
    for klass in cls.__mro__:
        attr = klass.__dict__.get(name)
        if attr is not None:
            return attr.meta if isinstance(attr, Method) else None
    return None


def registered_methods(cls: type[Any]) -> dict[str, MethodMeta]:
    """Every registered method of ``cls`` (including inherited ones), by name."""
    out: dict[str, MethodMeta] = {}
    for klass in reversed(cls.__mro__):
        for name, attr in klass.__dict__.items():
            if isinstance(attr, Method):
                out[name] = attr.meta
            elif name in out:
                del out[name]  # overridden by an unregistered attribute
    return out
