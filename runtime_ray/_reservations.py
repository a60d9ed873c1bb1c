"""Placement groups: one per node entry of a pool, shared by split and colocated pools.

A :class:`Reservations` table maps each node entry (``NodeSlots.key``) to its placement group,
with bundles ``{"CPU": cpus_per_process * max_colocate_count, "GPU": devices_per_process}``
(each slot fits ``max_colocate_count`` hosts), its node IP and the hosts placed in it.
Placement groups are named after their entry (``rlrt:<pool>:<index>``), so another driver in
the same namespace finds a detached one to release it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Collection, Iterable, Mapping

import attrs
import ray
import ray.exceptions
from ray.util.placement_group import (
    PlacementGroup,
    placement_group,
    placement_group_table,
    remove_placement_group,
)

from runtime.backend import NodeSlots, ResourcePool, get_logger
from runtime.errors import PlacementError
from runtime_ray import _casts
from runtime_ray._cluster import base_resources, fmt_resources, node_ips

__all__ = ["Reservation", "Reservations", "pg_name"]

_log = get_logger()

Key = tuple[str, int]


def pg_name(node: NodeSlots) -> str:
    """The placement group name of a node entry (how another driver finds it)."""
    return f"rlrt:{node.root}:{node.index}"


@attrs.define(eq=False)
class Reservation:
    """One node entry's placement group, its node IP, and the ids of the hosts placed in it."""

    pg: PlacementGroup
    node_ip: str
    cpus_per_process: float
    detached: bool
    users: set[int] = attrs.field(factory=set)


class Reservations:
    """This backend's placement groups by node entry (thread-safe).

    ``placement_timeout`` is the longest wait for one reservation.
    """

    def __init__(self, placement_timeout: float) -> None:
        self._timeout = placement_timeout
        self._lock = threading.RLock()
        self._reserve_lock = threading.Lock()
        self._table: dict[Key, Reservation] = {}

    def __len__(self) -> int:
        return len(self._table)

    def get(self, key: Key) -> Reservation | None:
        with self._lock:
            return self._table.get(key)

    def reserve(self, pool: ResourcePool, *, timeout: float) -> list[str]:
        """One placement group per node entry (cached by entry); return each entry's node IP.

        Entries are reserved one after another, each waited for, so placement follows the
        pool's order (a later, smaller entry cannot take the node an earlier one needs). On a
        failure the entries reserved by this call are released again.
        """
        limit = min(timeout, self._timeout)
        deadline = time.monotonic() + limit
        created: list[Key] = []
        with self._reserve_lock:
            try:
                for node in pool.nodes:
                    if self.get(node.key) is None:
                        self._reserve_entry(pool, node, deadline, limit)
                        created.append(node.key)
            except BaseException:
                self.release_keys(created)
                raise
        with self._lock:
            return [self._table[node.key].node_ip for node in pool.nodes]

    def _reserve_entry(
        self, pool: ResourcePool, node: NodeSlots, deadline: float, limit: float
    ) -> None:
        bundle: dict[str, float] = {"CPU": pool.cpus_per_process * pool.max_colocate_count}
        if pool.devices_per_process > 0:
            bundle["GPU"] = float(pool.devices_per_process)
        pg = placement_group(
            [bundle] * node.capacity,
            strategy=pool.strategy,
            name=pg_name(node),
            lifetime="detached" if pool.detached else None,
        )
        # Not pg.wait(): it truncates its timeout to whole seconds.
        ready, _ = ray.wait([pg.ready()], timeout=max(0.0, deadline - time.monotonic()))
        try:
            if not ready:
                raise PlacementError(placement_message(pool, node, bundle, limit, pg))
            ip = _pg_node_ip(pg, node)
        except BaseException:
            remove_placement_group(pg)
            raise
        with self._lock:
            self._table[node.key] = Reservation(pg, ip, pool.cpus_per_process, pool.detached)

    def release(self, pool: ResourcePool) -> None:
        """Remove the placement groups of ``pool``'s entries: ours, or, for a detached pool,
        one another driver left, found by name in this namespace. Idempotent. (A pool that
        is not detached is never looked up by name: its placement groups die with their
        driver, and a same-named one of a live driver must not be touched.)"""
        with self._lock:
            for node in pool.nodes:
                if node.key in self._table:
                    self._remove(node.key)
                    continue
                if not pool.detached:
                    continue
                pg = _casts.find_placement_group(pg_name(node))
                if pg is not None:
                    remove_placement_group(pg)

    def release_keys(self, keys: Iterable[Key]) -> None:
        """Remove our placement groups of ``keys`` (unknown keys are skipped)."""
        with self._lock:
            for key in keys:
                if key in self._table:
                    self._remove(key)

    def add_user(self, key: Key, user: int) -> None:
        with self._lock:
            self._table[key].users.add(user)

    def drop_users(self, users: Mapping[int, Key | None], also: Collection[Key] = ()) -> None:
        """Forget hosts ``users`` (id -> entry); release each entry they (or ``also``) name
        that no host of ours uses any more."""
        with self._lock:
            touched = set(also)
            for user, key in users.items():
                if key is not None and (res := self._table.get(key)) is not None:
                    res.users.discard(user)
                    touched.add(key)
            self.release_keys(k for k in touched if k in self._table and not self._table[k].users)

    def release_all(self, *, kill_detached: bool) -> None:
        """Remove every placement group of ours (detached ones only if ``kill_detached``)."""
        with self._lock:
            self.release_keys(
                [k for k, r in self._table.items() if kill_detached or not r.detached]
            )

    def placement_groups(self, pool: ResourcePool) -> list[PlacementGroup | None]:
        with self._lock:
            return [
                r.pg if (r := self._table.get(node.key)) is not None else None
                for node in pool.nodes
            ]

    def _remove(self, key: Key) -> None:
        res = self._table.pop(key)
        try:
            remove_placement_group(res.pg)
        except (ValueError, ray.exceptions.RayError) as exc:
            _log.debug("remove_placement_group failed", entry=key, error=str(exc))


def _pg_node_ip(pg: PlacementGroup, node: NodeSlots) -> str:
    table = placement_group_table(pg)
    by_bundle: Mapping[int, str] = table.get("bundles_to_node_id", {})
    ips = node_ips()
    node_ids = {by_bundle[b] for b in range(node.capacity) if b in by_bundle}
    if not node_ids:
        raise PlacementError(f"placement group of node entry {node.key} reports no nodes: {table}")
    if len(node_ids) > 1:
        _log.warning(
            "a PACK placement group spans nodes; ranks use the node of bundle 0",
            entry=node.key,
            nodes=sorted(ips.get(n, n) for n in node_ids),
        )
    first = by_bundle.get(0, next(iter(node_ids)))
    if first not in ips:
        raise PlacementError(
            f"placement group of node entry {node.key} is on node {first}, which is not alive"
        )
    return ips[first]


def placement_message(
    pool: ResourcePool,
    node: NodeSlots,
    bundle: Mapping[str, float],
    limit: float,
    pg: PlacementGroup,
) -> str:
    """Why a placement group was not ready: what was asked, Ray's state, what is available."""
    stats = placement_group_table(pg).get("stats") or {}
    state = stats.get("scheduling_state", "unknown")
    why = {
        "INFEASIBLE": " (Ray: INFEASIBLE, no node can ever hold it)",
        "NO_RESOURCES": " (Ray: NO_RESOURCES, other work holds what it needs)",
    }.get(state, f" (Ray: {state})")
    per_node = {
        n["NodeManagerAddress"]: base_resources(n.get("Resources", {}))
        for n in ray.nodes()
        if n.get("Alive")
    }
    nodes_text = ", ".join(f"{ip} {fmt_resources(r)}" for ip, r in per_node.items())
    return (
        f"cannot place resource pool {pool.name!r}: node entry {node.index} asks for "
        f"{node.capacity} bundle(s) x {fmt_resources(bundle)} with strategy {pool.strategy}, "
        f"and the placement group was not ready within {limit:g} s{why}. The cluster has "
        f"{fmt_resources(base_resources(ray.cluster_resources()))} in total, "
        f"{fmt_resources(base_resources(ray.available_resources()))} available now; per "
        f"node: {nodes_text}. Lower the processes or devices per node (or "
        "max_colocate_count), add nodes, free resources held by other groups, or raise "
        "RayBackend(placement_timeout=...) if the cluster is scaling up."
    )
