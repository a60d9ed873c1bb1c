"""The ``Backend`` Protocol and the records it exchanges with the core.

Public through :mod:`runtime.backend`, whose docstring states the whole contract.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import attrs

from runtime._context import WorkerContext
from runtime._placement import RankPlacement, ResourcePool
from runtime._spec import WorkerSpec

__all__ = ["Backend", "HostLaunch", "RankCall"]


@attrs.frozen
class HostLaunch:
    """Everything a backend needs to start the host of one rank.

    ``roles`` maps role name to spec (one entry, or several for a fused host), in construction
    order. ``context`` is the planned context (its ``visible_devices`` may be replaced by the
    backend with what it actually assigned). ``env`` is the extra environment for the rank;
    ``options`` the merged backend options of the roles; ``name`` a unique, readable name
    (``group:role:rank``) for the backend's process/actor.
    """

    group: str
    roles: tuple[tuple[str, WorkerSpec[Any]], ...]
    context: WorkerContext
    placement: RankPlacement
    env: Mapping[str, str]
    options: Mapping[str, Any]
    name: str
    detached: bool = False

    @property
    def role_names(self) -> tuple[str, ...]:
        return tuple(r for r, _ in self.roles)


@attrs.frozen
class RankCall:
    """One rank's share of a group call: run ``role.method(*args, **kwargs)``."""

    rank: int
    role: str
    method: str
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]


@runtime_checkable
class Backend(Protocol):
    """Reserve, spawn, call, share, probe, stop. :mod:`runtime.backend` states the contract."""

    def reserve(self, pool: ResourcePool, *, timeout: float) -> Sequence[str]:
        """Reserve ``pool``'s node entries; return each entry's node IP (``pool.nodes`` order)."""
        ...

    def release(self, pool: ResourcePool) -> None:
        """Give back the reservations of ``pool``'s node entries (idempotent; also for
        entries reserved by another driver, where the engine can find them)."""
        ...

    def master_endpoint(
        self, node_ip: str, *, port_range: tuple[int, int] | None = None
    ) -> tuple[str, int]:
        """An address and free port on ``node_ip`` for the rank-0 rendezvous."""
        ...

    def spawn(self, launches: Sequence[HostLaunch], *, timeout: float) -> Sequence[object]:
        """Start one host per launch (devices configured, worker(s) built); return handles."""
        ...

    def submit(self, workers: Sequence[object], calls: Sequence[RankCall]) -> Sequence[object]:
        """Start ``calls[i]`` on ``workers[i]``; return pending handles without waiting."""
        ...

    def wait(self, pending: Sequence[object], *, timeout: float | None) -> list[Any]:
        """Results of ``pending`` in order; typed runtime errors on failure or deadline."""
        ...

    def share(self, value: object) -> object:
        """Publish ``value`` once for many ranks; the handle goes into arguments. Returning
        ``value`` itself means "already a reference the engine passes along as it is" (e.g.
        Ray's ``ObjectRef``): each rank then receives ``value`` unchanged, as with one rank."""
        ...

    def cancel(self, pending: Sequence[object]) -> None:
        """Best effort: stop these calls if the engine can (never raises for a finished one)."""
        ...

    def alive(self, workers: Sequence[object]) -> list[bool]:
        """Whether each worker's host is still running."""
        ...

    def terminate(self, workers: Sequence[object]) -> None:
        """Stop these hosts (idempotent)."""
        ...

    def shutdown(self) -> None:
        """Release everything this backend started (idempotent)."""
        ...
