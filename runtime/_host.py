"""The generic host of one rank: builds the plain worker(s) and runs their registered methods.

Every backend runs a :class:`WorkerHost` in the rank's process (the in-process backend keeps
them all in the caller's process). The host is a plain, module-level, picklable class: it holds
one instance per role (several for a fused host), exports the standard environment, makes
:func:`runtime.current_context`, :func:`sibling` and :func:`register_mesh` work inside the
worker, runs ``async def`` methods on its own event loop, and turns a raising method into
:class:`~runtime.errors.RemoteMethodError` with the traceback as text.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import inspect
import os
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import attrs

from runtime._backend import HostLaunch
from runtime._context import (
    NotInWorkerError,
    WorkerContext,
    _using_context,
    normalize_visible_devices,
)
from runtime._future import fill_handles
from runtime._register import get_method_meta, registered_methods
from runtime.errors import DispatchError, FusionError, RemoteMethodError, WorkerStartError

__all__ = ["WorkerHost", "host_subclass", "method_endpoints", "register_mesh", "sibling"]

T = TypeVar("T")

# Built-in pseudo-methods every host answers (never clash with user names: leading "__rt_").
MESH_INFO = "__rt_mesh_info__"
CONTEXT = "__rt_context__"
RUN_FUNCTION = "__rt_run_function__"
PING = "__rt_ping__"

_active: contextvars.ContextVar[tuple[WorkerHost, str] | None] = contextvars.ContextVar(
    "runtime_active_host", default=None
)


class WorkerHost:
    """Hosts the worker instance(s) of one rank.

    ``scoped_env=True`` (in-process backend) sets the rank's environment only while one of its
    calls runs and restores the previous values afterwards; ``False`` (one process per rank)
    exports it once, for good, before the workers are built.
    """

    def __init__(self, launch: HostLaunch, *, scoped_env: bool) -> None:
        self.launch = launch
        self.context = launch.context
        self.scoped_env = scoped_env
        self.instances: dict[str, object] = {}
        self.meshes: dict[str, dict[str, tuple[int, bool]]] = {r: {} for r in launch.role_names}
        self._contexts = {r: attrs.evolve(self.context, role=r) for r in launch.role_names}
        self._env = normalize_visible_devices({**launch.env, **launch.context.env()})
        self._loop: asyncio.AbstractEventLoop | None = None
        if not scoped_env:
            os.environ.update(self._env)

    #: Names of the built-in calls every host answers through :meth:`invoke` (they never
    #: clash with user methods). A backend may also call the methods directly.
    CONTEXT = CONTEXT
    MESH_INFO = MESH_INFO
    PING = PING
    RUN_FUNCTION = RUN_FUNCTION

    def role_context(self, role: str) -> WorkerContext:
        """The context ``role`` sees on this rank (built once per role); the built-in call
        :attr:`CONTEXT`."""
        return self._contexts[role]

    def mesh_info(self, role: str, name: str) -> tuple[int, bool] | None:
        """``(dp_rank, is_collector)`` that ``role`` registered for mesh ``name`` on this rank,
        or ``None``; the built-in call :attr:`MESH_INFO`."""
        return self.meshes[role].get(name)

    def ping(self) -> int:
        """This host's rank (a liveness probe); the built-in call :attr:`PING`."""
        return self.context.rank

    @contextmanager
    def activate(self, role: str) -> Iterator[None]:
        """Run a block as ``role`` on this rank (context, env, host visible to accessors)."""
        saved: dict[str, str | None] = {}
        if self.scoped_env:
            for key, value in self._env.items():
                saved[key] = os.environ.get(key)
                os.environ[key] = value
        token = _active.set((self, role))
        try:
            with _using_context(self.role_context(role)):
                yield
        finally:
            _active.reset(token)
            for key, old in saved.items():
                if old is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = old

    def start(self) -> None:
        """Build every role's worker, in order. A raising constructor: WorkerStartError."""
        for role, spec in self.launch.roles:
            with self.activate(role):
                try:
                    self.instances[role] = spec.build()
                except Exception as exc:
                    raise WorkerStartError(
                        f"constructing {spec.cls.__qualname__} failed: "
                        f"{type(exc).__name__}: {exc}\n"
                        f"--- remote traceback ---\n{traceback.format_exc()}",
                        role=role,
                        rank=self.context.rank,
                        method="__init__",
                        node=self.context.node_ip,
                    ) from exc

    def invoke(
        self,
        role: str,
        method: str,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        resolved: Sequence[Any] = (),
    ) -> Any:
        """Run ``role.method(*args, **kwargs)``; ``resolved`` fills lifted handles (see
        :func:`runtime.fill_handles`). Exceptions come back as RemoteMethodError."""
        rank = self.context.rank
        try:
            if role not in self.instances:
                raise FusionError(
                    f"role {role!r} is not hosted here; hosted: {list(self.instances)}"
                )
            if resolved:
                args, kwargs = fill_handles(args, kwargs, resolved)
            if method == MESH_INFO:
                return self.mesh_info(role, args[0])
            if method == CONTEXT:
                return self.role_context(role)
            if method == PING:
                return self.ping()
            instance = self.instances[role]
            with self.activate(role):
                if method == RUN_FUNCTION:
                    fn, *rest = args
                    out = fn(instance, *rest, **kwargs)
                else:
                    if get_method_meta(type(instance), method) is None:
                        raise DispatchError(
                            f"{type(instance).__qualname__}.{method} is not a registered method"
                        )
                    out = getattr(instance, method)(*args, **kwargs)
                if inspect.isawaitable(out):
                    out = self._run(out)
                return out
        except Exception as exc:
            raise RemoteMethodError(
                remote_type=type(exc).__qualname__,
                remote_message=str(exc),
                remote_traceback=traceback.format_exc(),
                role=role,
                rank=rank,
                method=method,
                node=self.context.node_ip,
            ) from exc

    def _run(self, awaitable: Any) -> Any:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        ctx = contextvars.copy_context()
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return ctx.run(self._loop.run_until_complete, awaitable)
        # The caller's thread already runs an event loop (an async driver on an in-process
        # backend) and one thread cannot run two loops: drive this host's loop from a helper.
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(ctx.run, self._loop.run_until_complete, awaitable).result()

    def close(self) -> None:
        if self._loop is not None:
            self._loop.close()
            self._loop = None


def _active_host(what: str) -> tuple[WorkerHost, str]:
    active = _active.get()
    if active is None:
        raise NotInWorkerError(f"{what} only works inside a worker run by a WorkerGroup")
    return active


def sibling(role: str, cls: type[T]) -> T:
    """The instance of ``role`` fused into this worker's host (a colocated sibling).

    Raises :class:`~runtime.errors.FusionError` for an unknown role and ``TypeError`` when the
    sibling is not a ``cls``.
    """
    host, me = _active_host("sibling()")
    if role not in host.instances:
        known = [r for r in host.launch.role_names if r != me]
        raise FusionError(f"role {me!r} asked for sibling {role!r}; siblings here: {known}")
    obj = host.instances[role]
    if not isinstance(obj, cls):
        raise TypeError(f"sibling {role!r} is a {type(obj).__qualname__}, not a {cls.__qualname__}")
    return obj


def register_mesh(name: str, *, dp_rank: int, is_collector: bool) -> None:
    """Declare this rank's place in mesh ``name`` (call in the worker, e.g. in ``__init__``).

    Methods registered with ``mesh_dispatch(name)`` then send this rank the batch chunk of
    ``dp_rank`` and keep its output only if ``is_collector``. Registering a mesh twice on one
    worker raises ``ValueError``.
    """
    host, role = _active_host("register_mesh()")
    if not isinstance(dp_rank, int) or dp_rank < 0:
        raise ValueError(f"register_mesh({name!r}): dp_rank={dp_rank!r} must be an int >= 0")
    meshes = host.meshes[role]
    if name in meshes:
        raise ValueError(
            f"mesh {name!r} is already registered on role {role!r} rank {host.context.rank} "
            f"as {meshes[name]}; register each mesh once"
        )
    meshes[name] = (dp_rank, bool(is_collector))


def method_endpoints(
    roles: Sequence[tuple[str, type[Any]]], host: type
) -> dict[tuple[str, str], str]:
    """The engine method name, ``<role>__<method>``, of every registered method of every
    ``(role, worker class)`` pair, for a backend whose host class gets one engine method per
    worker method (so a call sends only its own arguments, as a raw engine call does).

    A name that is already an attribute of ``host`` (or of an earlier pair) is left out: that
    method must go through the host's generic call instead.
    """
    names: dict[tuple[str, str], str] = {}
    taken: set[str] = set()
    for role, cls in roles:
        for method in registered_methods(cls):
            name = f"{role}__{method}"
            if hasattr(host, name) or name in taken:
                continue
            taken.add(name)
            names[(role, method)] = name
    return names


def host_subclass(
    base: type[T],
    roles: Sequence[tuple[str, type[Any]]],
    *,
    wrap: Callable[[Callable[..., Any]], object] = lambda fn: fn,
) -> tuple[type[T], dict[tuple[str, str], str]]:
    """A subclass of a backend's host class with one engine method per registered worker
    method, and the names :func:`method_endpoints` gave them.

    Each generated method ``<role>__<method>(*args, **kwargs)`` calls
    ``self.run(role, method, args, kwargs)``, which ``base`` must define; ``wrap`` turns the
    plain function into the engine's method (e.g. an endpoint decorator). The subclass is
    named ``Base[role+role]`` and is not importable by name, so engines pickle it by value.
    """
    methods = method_endpoints(roles, base)
    namespace: dict[str, Any] = {
        name: wrap(_run_method(base.__name__, role, method, name))
        for (role, method), name in methods.items()
    }
    label = "+".join(role for role, _ in roles)
    namespace["__qualname__"] = f"{base.__name__}[{label}]"
    namespace["__module__"] = base.__module__
    return type(f"{base.__name__}[{label}]", (base,), namespace), methods


def _run_method(host: str, role: str, method: str, name: str) -> Callable[..., Any]:
    """The generated method that runs ``role.method`` with the call's own arguments."""

    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        return self.run(role, method, args, kwargs)

    call.__name__ = name
    call.__qualname__ = f"{host}.{name}"
    call.__doc__ = f"Run {role}.{method}(*args, **kwargs) on this rank."
    return call
