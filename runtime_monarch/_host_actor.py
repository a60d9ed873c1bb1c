"""The adapter's Monarch actor classes: a generic host for one rank.

:func:`host_class` derives from :class:`MonarchHost`, once per combination of hosted roles and
worker classes, a subclass with **one endpoint per registered worker method**
(``<role>__<method>``): a call without lifted handles is then
``actor.<role>__<method>.call_one(*args, **kwargs)``, what a raw Monarch call sends. Calls with
lifted handles and built-in calls go through :meth:`MonarchHost.invoke`. Both end in
:meth:`runtime.backend.WorkerHost.invoke`.

:class:`MonarchHost` never runs user code in its constructor (Monarch reports an actor
``__init__`` that raises as a supervision failure of the whole mesh): the driver spawns it,
then calls :meth:`MonarchHost.start`, which unpickles the launch, finalises the context and
builds a :class:`runtime.backend.WorkerHost` (constructor errors come back as
:class:`~runtime.errors.WorkerStartError` with the remote traceback).
"""

from __future__ import annotations

import os
import pickle
import threading
import traceback
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import torch  # noqa: F401  (Monarch's native module links libtorch: torch first)
from monarch.actor import Actor, endpoint

from runtime.backend import (
    HostLaunch,
    WorkerContext,
    WorkerHost,
    finalize_context,
    host_subclass,
)
from runtime.errors import WorkerStartError

__all__ = ["HostClass", "Invocation", "MonarchHost", "host_class"]

#: One call as it travels to a host: ``(role, method, args, kwargs, resolved)``.
Invocation = tuple[str, str, Sequence[Any], Mapping[str, Any], Sequence[Any]]


class MonarchHost(Actor):
    """One rank's actor: holds a :class:`runtime.backend.WorkerHost` once started."""

    def __init__(self) -> None:
        self._host: WorkerHost | None = None

    @endpoint
    def start(self, payload: bytes, noset: bool) -> WorkerContext:
        """Unpickle the launch, export the environment, build the worker(s); return the final
        context. Idempotent."""
        if self._host is not None:
            return self._host.context
        try:
            launch = pickle.loads(payload)
        except Exception as exc:
            raise WorkerStartError(
                f"could not unpickle the launch on the worker: {type(exc).__name__}: {exc}. "
                "The worker class must be importable in the rank's process (install its "
                "package, or give MonarchBackend(env={'PYTHONPATH': ...})).\n"
                f"--- remote traceback ---\n{traceback.format_exc()}",
                method="__init__",
            ) from exc
        if not isinstance(launch, HostLaunch):
            raise WorkerStartError(f"expected a HostLaunch, got {type(launch).__name__}")
        context = finalize_context(launch.context, None, noset=noset)
        host = WorkerHost(attrs.evolve(launch, context=context), scoped_env=False)
        host.start()
        self._host = host
        return context

    @endpoint
    def invoke(self, call: Invocation) -> Any:
        """Run ``role.method(*args, **kwargs)`` with ``call = (role, method, args, kwargs,
        resolved)`` (``resolved`` fills lifted handles).

        The call travels as ONE endpoint argument: Monarch binds and pickles each argument
        separately, and one tuple costs less per call than five (measured with cProfile on
        ``benchmarks/bench_monarch_overhead.py``).
        """
        role, method, args, kwargs, resolved = call
        return self.run(role, method, args, kwargs, resolved)

    def run(
        self,
        role: str,
        method: str,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        resolved: Sequence[Any] = (),
    ) -> Any:
        """Run one call on the started host (the generated endpoints and :meth:`invoke` both
        end here); not started: :class:`~runtime.errors.WorkerStartError`."""
        if self._host is None:
            raise WorkerStartError("the host was not started", role=role, method=method)
        return self._host.invoke(role, method, args, kwargs, resolved)

    @endpoint
    def reset(self) -> int:
        """Drop the worker(s) so the process can host another rank; return the process id."""
        if self._host is not None:
            self._host.close()
            self._host = None
        return os.getpid()

    @endpoint
    def nop(self, x: Any = None) -> Any:
        """The engine's floor on this actor: returns ``x`` and runs nothing of ours (the
        benchmark suite's raw baseline)."""
        return x

    @endpoint
    def ping(self) -> int:
        """Liveness probe: this process's id."""
        return os.getpid()


@attrs.frozen
class HostClass:
    """A host actor class and the endpoint that runs each registered ``(role, method)``."""

    cls: type[MonarchHost]
    methods: Mapping[tuple[str, str], str]


_classes: dict[tuple[tuple[str, type[Any]], ...], HostClass] = {}
_classes_lock = threading.Lock()


def host_class(roles: Sequence[tuple[str, type[Any]]]) -> HostClass:
    """The host actor class for ``(role, worker class)`` pairs, built once per combination.

    Every registered method of every role gets an endpoint ``<role>__<method>`` that calls
    :meth:`MonarchHost.run`; a name that would shadow a :class:`MonarchHost` attribute is left
    out (that method then goes through :meth:`MonarchHost.invoke`). The class is not
    importable by name, so it travels to the rank's process by value.
    """
    key = tuple(roles)
    with _classes_lock:
        found = _classes.get(key)
        if found is not None:
            return found
        cls, methods = host_subclass(MonarchHost, roles, wrap=endpoint)
        found = HostClass(cls, methods)
        _classes[key] = found
        return found
