"""The ``Backend`` Protocol: the whole surface a backend implements.

The core (dispatch planning, padding, futures, fusion, placement planning) is backend-agnostic
and lives in ``runtime``; a backend only reserves resources, starts one host per rank, moves
per-rank arguments and results, and reports liveness. Two implementations ship:
:class:`runtime.testing.InProcessBackend` and ``runtime_ray.RayBackend``.

The contract, method by method (``workers`` and ``pending`` values are opaque handles the
backend itself returned):

placement
    ``reserve(pool, timeout=)`` reserves every node entry of ``pool`` (idempotent per entry:
    split and colocated pools share a reservation) and returns the **node IP** of each entry,
    in ``pool.nodes`` order. Infeasible or timed out: :class:`~runtime.errors.PlacementError`.
    ``master_endpoint(node_ip, port_range=)`` returns an address and a free port on that node
    for the ``torch.distributed`` rendezvous (first free port in ``[lo, hi)`` when given).
lifecycle
    ``spawn(launches, timeout=)`` starts one :class:`~runtime.HostLaunch` per rank, each on its
    placement. The backend **configures visible devices** for each rank (the planned
    ``CUDA_VISIBLE_DEVICES``, or the accelerator ids it assigned itself; in a "don't set
    visible devices" mode the local rank comes from those ids), builds a
    :class:`~runtime.WorkerHost` in the rank's process with the final
    :class:`~runtime.WorkerContext` and calls its ``start()``. Fusion needs nothing more: a
    launch may hold several roles. A constructor that raises becomes
    :class:`~runtime.errors.WorkerStartError` naming role and rank.
    ``alive(workers)`` probes liveness; ``terminate(workers)`` stops hosts;
    ``shutdown()`` releases everything the backend started.
calls
    ``submit(workers, calls)`` starts ``calls[i]`` on ``workers[i]`` (``WorkerHost.invoke``)
    and returns one pending handle per call without waiting. Argument values that are
    :class:`~runtime.Shared` or :class:`~runtime.FutureSlice` must reach the host resolved
    (see :func:`runtime.extract_handles` / :func:`runtime.fill_handles`).
    ``wait(pending, timeout=)`` returns the results in order, or raises
    :class:`~runtime.errors.CallTimeoutError` (naming the ranks still pending),
    :class:`~runtime.errors.WorkerDiedError` or :class:`~runtime.errors.RemoteMethodError`.
    ``share(value)`` publishes a value once for many ranks and returns a handle to put in
    arguments (the object store's ``put``; identity for the in-process backend).
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
    """Reserve, spawn, call, share, probe, stop. See the module docstring for the contract."""

    def reserve(self, pool: ResourcePool, *, timeout: float) -> Sequence[str]:
        """Reserve ``pool``'s node entries; return each entry's node IP (``pool.nodes`` order)."""
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
        """Publish ``value`` once for many ranks; the handle goes into arguments."""
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
