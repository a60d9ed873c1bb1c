"""The adapter's Ray actor classes: a generic host for one rank.

:class:`RayHost` is a plain class. :func:`host_class` derives from it, once per combination of
hosted roles and worker classes, a subclass with **one actor method per registered worker
method** (``<role>__<method>``) and wraps it with ``ray.remote`` (cached for the driver's
lifetime, so Ray exports each class once). A call with at most one argument that is neither a
lifted handle nor a raw ``ObjectRef`` is then
``actor.<role>__<method>.remote(*args, **kwargs)``, exactly what a raw Ray call sends: no
envelope, nothing at all for a call without arguments. Every other call (lifted handles, several
arguments, built-in calls, attached groups) goes through :meth:`RayHost.invoke` with one
``(role, method, args, kwargs)`` tuple. Both end in :meth:`runtime.WorkerHost.invoke`.

A host never runs user code in its constructor: Ray reports errors raised in an actor's
``__init__`` opaquely, so the driver creates every actor first and then calls
:meth:`RayHost.start`, which unpickles the launch, finalises the worker context with the
devices Ray actually assigned, and builds a :class:`runtime.WorkerHost` (whose constructor
errors come back as :class:`~runtime.errors.WorkerStartError` with the remote traceback).

Concurrency: the default group keeps Ray's default of one thread, so user methods run one at
a time, in order, always on the same thread. :meth:`RayHost.ping` lives in its own
concurrency group (:data:`CONTROL_GROUP`), so liveness probes answer while a long method runs.
"""

from __future__ import annotations

import os
import pickle
import re
import threading
import traceback
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import ray
from ray.actor import ActorClass

from runtime.backend import (
    HostLaunch,
    WorkerContext,
    WorkerHost,
    finalize_context,
    host_subclass,
)
from runtime.errors import WorkerStartError
from runtime_ray._casts import actor_class

__all__ = [
    "CONTROL_GROUP",
    "NOSET_ENV",
    "HostClass",
    "Invocation",
    "RayHost",
    "final_context",
    "host_class",
    "is_call_task",
]

#: The concurrency group of liveness probes (one thread, separate from user methods).
CONTROL_GROUP = "control"

#: Ray's switch that stops it from setting ``CUDA_VISIBLE_DEVICES`` in GPU actors.
NOSET_ENV = "RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES"

#: ``(role, method, args, kwargs)``: one rank's call as :meth:`RayHost.invoke` receives it.
Invocation = tuple[str, str, Sequence[Any], Mapping[str, Any]]


def final_context(planned: WorkerContext, gpu_ids: Sequence[str], *, noset: bool) -> WorkerContext:
    """The context a rank really runs with, given the GPU ids Ray assigned to its actor
    (:func:`runtime.backend.finalize_context`: Ray's ids, or NOSET mode's local rank)."""
    return finalize_context(planned, gpu_ids, noset=noset)


class RayHost:
    """One rank's Ray actor: holds a :class:`runtime.WorkerHost` once :meth:`start` has run.

    ``payload`` is the pickled :class:`runtime.HostLaunch` (unpickled in :meth:`start`, so a
    worker class that cannot be imported on the worker also becomes a clear
    :class:`~runtime.errors.WorkerStartError`).
    """

    def __init__(self, name: str, role: str, rank: int, payload: bytes, noset: bool) -> None:
        self._name = name
        self._role = role
        self._rank = rank
        self._payload = payload
        self._noset = noset
        self._host: WorkerHost | None = None

    def __repr__(self) -> str:
        # Ray prefixes the actor's log lines with this (e.g. "(group:role:0 pid=123)").
        return self._name

    def start(self) -> WorkerContext:
        """Finalise the context, export the environment, build the worker(s); return the
        final context. Idempotent."""
        if self._host is not None:
            return self._host.context
        try:
            launch = pickle.loads(self._payload)
        except Exception as exc:
            raise WorkerStartError(
                f"could not unpickle the launch of {self._name!r} on the worker: "
                f"{type(exc).__name__}: {exc}. The worker class must be importable in Ray's "
                "worker processes (install its package, or set PYTHONPATH / a working_dir in "
                "RayBackend(runtime_env=...)).\n--- remote traceback ---\n"
                f"{traceback.format_exc()}",
                role=self._role,
                rank=self._rank,
                method="__init__",
            ) from exc
        if not isinstance(launch, HostLaunch):
            raise WorkerStartError(
                f"expected a HostLaunch, got {type(launch).__name__}",
                role=self._role,
                rank=self._rank,
            )
        gpu_ids = ray.get_runtime_context().get_accelerator_ids().get("GPU", [])
        context = final_context(launch.context, gpu_ids, noset=self._noset)
        host = WorkerHost(attrs.evolve(launch, context=context), scoped_env=False)
        host.start()
        self._host = host
        return context

    def invoke(self, call: Invocation, *resolved: Any) -> Any:
        """Run ``role.method(*args, **kwargs)`` with ``call = (role, method, args, kwargs)``;
        Ray resolved the lifted handles into ``resolved`` already.

        The call travels as ONE argument: Ray serializes each actor-call argument separately,
        and four small ones cost ~0.5 ms more per 4-rank call than one tuple (measured).
        """
        role, method, args, kwargs = call
        return self.run(role, method, args, kwargs, resolved)

    def run(
        self,
        role: str,
        method: str,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        resolved: Sequence[Any] = (),
    ) -> Any:
        """Run one call on the started host (the generated per-method actor methods and
        :meth:`invoke` both end here); not started: :class:`~runtime.errors.WorkerStartError`."""
        if self._host is None:
            raise WorkerStartError(
                "the host was not started", role=role, rank=self._rank, method=method
            )
        return self._host.invoke(role, method, args, kwargs, resolved)

    def nop(self, x: Any = None) -> Any:
        """The engine's floor on this actor: returns ``x`` and runs nothing of ours. Same
        concurrency group as the worker methods; the benchmark suite's raw baseline."""
        return x

    @ray.method(concurrency_group=CONTROL_GROUP)
    def ping(self) -> int:
        """Liveness probe (own concurrency group: answers while a method runs)."""
        return os.getpid()


@attrs.frozen
class HostClass:
    """A host actor class and the actor method that runs each registered ``(role, method)``."""

    actor: ActorClass[RayHost]
    methods: Mapping[tuple[str, str], str]


_classes: dict[tuple[tuple[str, type[Any]], ...], HostClass] = {}
_classes_lock = threading.Lock()


def host_class(roles: Sequence[tuple[str, type[Any]]]) -> HostClass:
    """The host actor class for ``(role, worker class)`` pairs, built once per combination.

    Every registered method of every role gets an actor method ``<role>__<method>`` that calls
    :meth:`RayHost.run`; a name that would shadow a :class:`RayHost` attribute is left out
    (that method then goes through :meth:`RayHost.invoke`).
    """
    key = tuple(roles)
    with _classes_lock:
        found = _classes.get(key)
        if found is not None:
            return found
        cls, methods = host_subclass(RayHost, roles)  # not importable: pickled by value
        found = HostClass(actor_class(cls, concurrency_groups={CONTROL_GROUP: 1}), methods)
        _classes[key] = found
        return found


#: A host actor's user-call task as Ray's timeline names it (``cat``): ``invoke`` or a
#: generated ``<role>__<method>`` of ``RayHost`` or a subclass ``RayHost[<roles>]``.
_CALL_TASK = re.compile(r"RayHost(\[[^\]]*\])?\.(invoke|\w+__\w+)$")


def is_call_task(category: str) -> bool:
    """Whether a Ray timeline event category (``cat``, e.g. ``task::RayHost[actor].actor__
    update``) is a host actor running a worker method (not ``start``, ``ping`` or ``nop``)."""
    return _CALL_TASK.search(category) is not None
