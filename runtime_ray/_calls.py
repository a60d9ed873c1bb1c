"""Calls on Ray: worker and pending handles, gathering results, mapping Ray's errors.

:func:`gather` waits for object refs the way the :mod:`runtime.backend` contract asks: a dead
rank is reported while its peers are still blocked (e.g. in a collective), a death wins over
a method's error, else the lowest rank's error wins, and ranks still running at the deadline
are a :class:`~runtime.errors.CallTimeoutError` (a
:class:`~runtime.errors.WorkerStartError` while starting).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import ray
import ray.exceptions
from ray.actor import ActorHandle

from runtime.errors import (
    CallTimeoutError,
    RemoteMethodError,
    WorkerDiedError,
    WorkerError,
    WorkerStartError,
)

__all__ = [
    "RayPending",
    "RayWorker",
    "first_error",
    "gather",
    "map_ray_error",
    "ref_of",
    "start_timeout",
]


@attrs.define(eq=False)
class RayWorker:
    """``RayBackend``'s handle of one rank: the host actor plus what errors need to name.

    ``key`` is the reservation (node entry) the actor was placed in; ``None`` for attached
    workers, whose reservation belongs to the driver that created them. ``methods``: the
    actor's generated method for each registered ``(role, method)`` (empty for attached
    workers: their calls all go through ``invoke``).
    """

    actor: ActorHandle[Any]
    name: str
    rank: int
    roles: tuple[str, ...]
    node_ip: str
    detached: bool = False
    key: tuple[str, int] | None = None
    methods: Mapping[tuple[str, str], str] = attrs.field(factory=dict)


@attrs.define(eq=False)
class RayPending:
    """A submitted call: its object ref plus the rank, role, method and node that produce it."""

    ref: ray.ObjectRef[Any]
    rank: int
    role: str
    method: str
    node_ip: str


def gather(
    items: Sequence[RayPending], *, timeout: float | None, starting: bool, poll: float
) -> list[Any]:
    """Results of ``items`` in order. Polls every ``poll`` seconds so a failed rank is
    reported while its peers still run; errors mapped into :mod:`runtime.errors` (a death
    first, else the lowest rank); ``starting``: failures are start failures."""
    positions: dict[ray.ObjectRef[Any], list[int]] = {}
    for i, p in enumerate(items):
        positions.setdefault(p.ref, []).append(i)
    results: list[Any] = [None] * len(items)
    remaining = list(positions)
    deadline = None if timeout is None else time.monotonic() + timeout
    # Fast path: one ray.get when every rank answers within one poll (a failed rank makes
    # it return early; the loop below then finds which one).
    try:
        values = ray.get(remaining, timeout=poll if timeout is None else min(poll, timeout))
    except ray.exceptions.RayError:  # GetTimeoutError, or a rank failed
        values = None
    if values is not None:
        by_ref = dict(zip(remaining, values, strict=True))
        return [by_ref[p.ref] for p in items]
    while remaining:
        step = poll if deadline is None else max(0.0, min(poll, deadline - time.monotonic()))
        ready, remaining = ray.wait(remaining, num_returns=len(remaining), timeout=step)
        if ready:
            try:
                values = ray.get(ready)
            except ray.exceptions.RayError:
                values = None  # map outside this handler: no "during handling" chain
            if values is None:
                mapped, exc = first_error(ready, positions, items, starting)
                raise mapped from exc
            for ref, value in zip(ready, values, strict=True):
                for i in positions[ref]:
                    results[i] = value
        if remaining and deadline is not None and time.monotonic() >= deadline:
            late = sorted(items[i].rank for ref in remaining for i in positions[ref])
            assert timeout is not None
            if starting:
                raise start_timeout(items, late, timeout)
            raise CallTimeoutError(
                method=items[0].method, role=items[0].role, pending_ranks=late, timeout=timeout
            )
    return results


def first_error(
    ready: Sequence[ray.ObjectRef[Any]],
    positions: Mapping[ray.ObjectRef[Any], Sequence[int]],
    items: Sequence[RayPending],
    starting: bool,
) -> tuple[BaseException, BaseException]:
    """Fetch ``ready`` one by one; return the error to raise (a death wins, else the lowest
    rank) and Ray's exception it maps."""
    errors: list[tuple[int, int, BaseException, BaseException]] = []
    for ref in ready:
        p = items[positions[ref][0]]
        try:
            ray.get(ref)
        except ray.exceptions.RayError as exc:
            mapped = map_ray_error(exc, p, starting=starting)
            errors.append((0 if isinstance(mapped, WorkerDiedError) else 1, p.rank, mapped, exc))
    if not errors:  # the batch get failed but no single one does: report the batch
        try:
            ray.get(list(ready))
        except ray.exceptions.RayError as exc:
            return map_ray_error(exc, items[positions[ready[0]][0]], starting=starting), exc
        raise AssertionError("ray.get failed once but not when repeated")
    errors.sort(key=lambda e: (e[0], e[1]))
    return errors[0][2], errors[0][3]


def map_ray_error(exc: BaseException, p: RayPending, *, starting: bool = False) -> BaseException:
    """Map an exception from ``ray.get`` of ``p`` into :mod:`runtime.errors` (not raised)."""
    cause: BaseException = exc
    while isinstance(cause, ray.exceptions.RayTaskError) and isinstance(cause.cause, BaseException):
        cause = cause.cause
    if isinstance(cause, (WorkerError, CallTimeoutError)):
        return cause

    def err(cls: type[WorkerError], message: str) -> WorkerError:
        return cls(message, role=p.role, rank=p.rank, method=p.method, node=p.node_ip)

    if isinstance(cause, ray.exceptions.RayActorError):
        if starting:
            return err(WorkerStartError, f"the worker's actor died while starting: {cause}")
        return err(WorkerDiedError, f"the worker's actor died: {cause}")
    if isinstance(cause, ray.exceptions.ObjectLostError):
        return err(
            WorkerDiedError, f"a value this call needed was lost (its owner or node died): {cause}"
        )
    if isinstance(exc, ray.exceptions.RayTaskError):
        return RemoteMethodError(
            remote_type=type(cause).__qualname__,
            remote_message=str(cause),
            remote_traceback=str(exc),
            role=p.role,
            rank=p.rank,
            method=p.method,
            node=p.node_ip,
        )
    return err(WorkerStartError if starting else WorkerError, f"{type(cause).__name__}: {cause}")


def ref_of(handle: object) -> ray.ObjectRef[Any]:
    if isinstance(handle, RayPending):
        return handle.ref
    if isinstance(handle, ray.ObjectRef):
        return handle
    raise TypeError(
        f"a shared value or future of another backend reached RayBackend: {handle!r}; use one "
        "backend per group chain"
    )


def start_timeout(
    items: Sequence[RayPending], late: Sequence[int], timeout: float
) -> WorkerStartError:
    """A constructor still running at the start deadline: a start failure naming the rank(s)."""
    first = next(p for p in items if p.rank == late[0])
    return WorkerStartError(
        f"the worker's constructor did not finish within start_timeout={timeout:g} s (still "
        f"starting: rank(s) {list(late)}); it hangs or is very slow: fix it, or pass a larger "
        "start_timeout to the group",
        role=first.role,
        rank=first.rank,
        method="__init__",
        node=first.node_ip,
    )
