"""Resource pools (pure data) and placement plans (pure functions of a pool and node IPs).

A :class:`ResourcePool` says how many processes run on each node entry, how many devices each
process uses, and how many groups may share one device (``max_colocate_count``). Backends
reserve a pool's node entries (Ray: one placement group per entry) and report each entry's node
IP; :func:`plan_placement` then assigns ranks deterministically: node entries sorted by IP
(stable for equal IPs), bundles in order, so per-rank checkpoints line up after a restart.

Pools can be split (views onto a range of the parent's bundles, sharing its reservation) and
merged (concatenation of compatible pools); both are pure and unit-tested without a backend.

:class:`SlotLedger` is the one capacity rule, kept by the core for every backend: each process
slot (bundle) of a node entry holds at most ``max_colocate_count`` groups, and a group that
would over-fill one is a :class:`~runtime.errors.PlacementError` before anything is reserved.
"""

from __future__ import annotations

import ipaddress
import itertools
import threading
import uuid
from collections.abc import Sequence

import attrs

from runtime.errors import PlacementError

__all__ = [
    "NodeSlots",
    "PlacementPlan",
    "RankPlacement",
    "DeviceMap",
    "ResourcePool",
    "SlotLedger",
    "merge_pools",
    "plan_placement",
]

_POOL_COUNTER = itertools.count()


@attrs.frozen
class NodeSlots:
    """A run of bundles on one reserved node entry.

    ``root`` names the pool that reserves the entry and ``index`` the entry within it; the
    entry has ``capacity`` bundles and this view uses ``count`` of them from ``start``.
    """

    root: str
    index: int
    capacity: int
    start: int
    count: int

    @property
    def key(self) -> tuple[str, int]:
        """Identity of the reserved node entry (what a backend keys its reservations by)."""
        return (self.root, self.index)


@attrs.frozen
class ResourcePool:
    """Processes per node, devices per process, and device sharing, as plain data.

    Build one with :meth:`create`; ``nodes`` lists the node entries (heterogeneous counts are
    fine). ``max_colocate_count`` groups may share each device: each process then asks for
    ``devices_per_process / max_colocate_count`` of a device. ``devices_per_process=0`` makes a
    CPU-only pool.
    """

    nodes: tuple[NodeSlots, ...]
    devices_per_process: int = 0
    cpus_per_process: float = 1.0
    max_colocate_count: int = 1
    strategy: str = "STRICT_PACK"
    detached: bool = False
    name: str = "pool"

    def __attrs_post_init__(self) -> None:
        if not self.nodes:
            raise ValueError("a resource pool needs at least one node entry")
        for node in self.nodes:
            if node.count <= 0:
                raise ValueError(f"node entry {node.key} has {node.count} processes; need >= 1")
        if self.devices_per_process < 0:
            raise ValueError(f"devices_per_process={self.devices_per_process!r}; need >= 0")
        if self.max_colocate_count < 1:
            raise ValueError(f"max_colocate_count={self.max_colocate_count!r}; need >= 1")
        if self.cpus_per_process < 0:
            raise ValueError(f"cpus_per_process={self.cpus_per_process!r}; need >= 0")
        if self.strategy not in ("STRICT_PACK", "PACK"):
            raise ValueError(f"strategy={self.strategy!r}; use 'STRICT_PACK' or 'PACK'")

    @classmethod
    def create(
        cls,
        processes_per_node: Sequence[int],
        *,
        devices_per_process: int = 0,
        cpus_per_process: float = 1.0,
        max_colocate_count: int = 1,
        strategy: str = "STRICT_PACK",
        detached: bool = False,
        name: str | None = None,
    ) -> ResourcePool:
        """A new root pool; ``processes_per_node=[2, 3]`` is two node entries of 2 and 3."""
        counts = list(processes_per_node)
        if not counts or any((not isinstance(c, int)) or c <= 0 for c in counts):
            raise ValueError(
                f"processes_per_node={counts!r}: need a non-empty list of positive integers"
            )
        root = name or f"pool{next(_POOL_COUNTER)}-{uuid.uuid4().hex[:6]}"
        nodes = tuple(NodeSlots(root, i, c, 0, c) for i, c in enumerate(counts))
        return cls(
            nodes,
            devices_per_process=devices_per_process,
            cpus_per_process=cpus_per_process,
            max_colocate_count=max_colocate_count,
            strategy=strategy,
            detached=detached,
            name=root,
        )

    @property
    def world_size(self) -> int:
        return sum(n.count for n in self.nodes)

    @property
    def processes_per_node(self) -> list[int]:
        return [n.count for n in self.nodes]

    def local_world_size_list(self) -> list[int]:
        """For each process (pool order), its node entry's process count: ``[2,3]->[2,2,3,3,3]``."""
        return [n.count for n in self.nodes for _ in range(n.count)]

    def local_rank_list(self) -> list[int]:
        """For each process (pool order), its index within its node entry: ``[0,1,0,1,2]``."""
        return [i for n in self.nodes for i in range(n.count)]

    def split(self, sizes: int | Sequence[int]) -> list[ResourcePool]:
        """Split into consecutive sub-pools sharing this pool's reservation.

        An int must divide ``world_size`` (that many processes per sub-pool); a list must sum
        to it. Sub-pools can be split again.
        """
        ws = self.world_size
        if isinstance(sizes, int):
            if sizes <= 0 or ws % sizes != 0:
                raise ValueError(
                    f"cannot split pool {self.name!r} of world size {ws} into parts of {sizes}: "
                    f"the size must divide {ws} (try one of {_divisors(ws)})"
                )
            parts = [sizes] * (ws // sizes)
        else:
            parts = list(sizes)
            if any(p <= 0 for p in parts) or sum(parts) != ws:
                raise ValueError(
                    f"cannot split pool {self.name!r} of world size {ws} into {parts!r}: the "
                    f"sizes must be positive and sum to {ws}"
                )
        flat = [(n, b) for n in self.nodes for b in range(n.start, n.start + n.count)]
        out: list[ResourcePool] = []
        offset = 0
        for k, size in enumerate(parts):
            chunk = flat[offset : offset + size]
            offset += size
            nodes: list[NodeSlots] = []
            for node, group in itertools.groupby(chunk, key=lambda nb: nb[0]):
                bundles = [b for _, b in group]
                nodes.append(
                    NodeSlots(node.root, node.index, node.capacity, bundles[0], len(bundles))
                )
            out.append(attrs.evolve(self, nodes=tuple(nodes), name=f"{self.name}/{k}"))
        return out


def merge_pools(a: ResourcePool, b: ResourcePool) -> ResourcePool:
    """Concatenate two pools with the same per-process settings (their ranks follow a then b)."""
    for field in ("devices_per_process", "cpus_per_process", "max_colocate_count", "detached"):
        va, vb = getattr(a, field), getattr(b, field)
        if va != vb:
            raise ValueError(
                f"cannot merge pools {a.name!r} and {b.name!r}: {field} differs ({va!r} vs {vb!r})"
            )
    keys = {(n.key, i) for n in a.nodes for i in range(n.start, n.start + n.count)}
    overlap = [(n.key, i) for n in b.nodes for i in range(n.start, n.start + n.count)]
    if any(k in keys for k in overlap):
        raise ValueError(f"cannot merge pools {a.name!r} and {b.name!r}: they share bundles")
    return attrs.evolve(a, nodes=a.nodes + b.nodes, name=f"{a.name}+{b.name}")


def _slots(pool: ResourcePool) -> list[tuple[str, int, int]]:
    """Every process slot of ``pool`` as ``(root, entry index, bundle)``."""
    return [(*n.key, b) for n in pool.nodes for b in range(n.start, n.start + n.count)]


class SlotLedger:
    """Which groups hold each process slot of one backend's pools (thread-safe).

    :meth:`take` books every slot of a pool for a group, or raises
    :class:`~runtime.errors.PlacementError` at once (naming the pool, the slots, the groups
    holding them and the fix) when a slot already holds ``pool.max_colocate_count`` groups.
    :meth:`give_back` frees a group's slots and returns the node entries no group holds any
    more (the backend then releases their reservations).
    """

    def __init__(self) -> None:
        self._holders: dict[tuple[str, int, int], list[str]] = {}
        self._lock = threading.Lock()

    def take(self, pool: ResourcePool, group: str) -> None:
        """Book ``pool``'s slots for ``group`` (all or nothing)."""
        slots = _slots(pool)
        with self._lock:
            full = [s for s in slots if len(self._holders.get(s, ())) >= pool.max_colocate_count]
            if full:
                raise PlacementError(self._full_message(pool, group, full))
            for slot in slots:
                self._holders.setdefault(slot, []).append(group)

    def give_back(self, group: str) -> list[tuple[str, int]]:
        """Free ``group``'s slots; return the node entries (keys) left without any group."""
        with self._lock:
            touched: set[tuple[str, int]] = set()
            for slot, holders in self._holders.items():
                if group in holders:
                    holders.remove(group)
                    touched.add(slot[:2])
            self._holders = {s: h for s, h in self._holders.items() if h}
            held = {s[:2] for s in self._holders}
        return sorted(touched - held)

    def holders(self, pool: ResourcePool) -> dict[str, int]:
        """The groups holding slots of ``pool``, with how many slots each holds."""
        with self._lock:
            out: dict[str, int] = {}
            for slot in _slots(pool):
                for group in self._holders.get(slot, ()):
                    out[group] = out.get(group, 0) + 1
        return out

    def _full_message(
        self, pool: ResourcePool, group: str, full: Sequence[tuple[str, int, int]]
    ) -> str:
        taken: dict[str, list[tuple[int, int]]] = {}
        for slot in full:
            for holder in self._holders[slot]:
                taken.setdefault(holder, []).append(slot[1:])
        by_whom = "; ".join(
            f"group {holder!r} holds {len(where)} of them (entry, bundle: {where})"
            for holder, where in taken.items()
        )
        n = pool.max_colocate_count
        return (
            f"cannot place group {group!r} on resource pool {pool.name!r}: {len(full)} of its "
            f"{pool.world_size} process slot(s) already hold max_colocate_count={n} group(s); "
            f"{by_whom}. Create the pool with max_colocate_count={n + 1} (or more) to let that "
            "many groups share it, shut a holding group down first, or give this group its "
            "own pool (or a part of pool.split(...))"
        )


class DeviceMap:
    """Device ids for a backend that assigns them itself (no engine does it), thread-safe.

    Each reserved node entry holds ``capacity x devices_per_process`` consecutive ids of its
    node, so entries on one node (the halves of a merged pool, two pools) never share an id;
    a rank's ids are its entry's first id plus its planned ids (:attr:`RankPlacement.devices`).
    ``devices_per_node=None`` sets no limit.
    """

    def __init__(self, devices_per_node: int | None = None) -> None:
        self.devices_per_node = devices_per_node
        self._held: dict[tuple[str, int], tuple[str, int, int]] = {}  # key -> (ip, first, n)
        self._lock = threading.Lock()

    def place(self, key: tuple[str, int], ip: str, count: int) -> bool:
        """Hold ``count`` free consecutive ids of node ``ip`` for entry ``key``; ``False`` when
        the node has no such run. Idempotent: an entry already placed keeps its ids."""
        with self._lock:
            if key in self._held:
                return True
            first = self._first_free(ip, count)
            if first is None:
                return False
            self._held[key] = (ip, first, count)
            return True

    def release(self, key: tuple[str, int]) -> None:
        """Free the ids of entry ``key`` (idempotent)."""
        with self._lock:
            self._held.pop(key, None)

    def ids(self, placement: RankPlacement) -> tuple[str, ...]:
        """The device ids of one rank (``PlacementError`` if its entry holds none)."""
        key = placement.node.key
        with self._lock:
            held = self._held.get(key)
        if held is None:
            raise PlacementError(f"node entry {key} holds no device ids; reserve it first")
        return tuple(str(held[1] + d) for d in placement.devices)

    def describe(self) -> str:
        """What is taken, for error messages: ``ip ids a..b by entry key; ...``."""
        with self._lock:
            held = sorted(self._held.items(), key=lambda kv: (kv[1][0], kv[1][1]))
        taken = [f"{ip} ids {f}..{f + n - 1} by entry {k}" for k, (ip, f, n) in held if n]
        return "; ".join(taken) or "nothing"

    def _first_free(self, ip: str, count: int) -> int | None:
        if count == 0:
            return 0
        first = 0
        for start, n in sorted((f, n) for i, f, n in self._held.values() if i == ip and n):
            if first + count <= start:
                break
            first = max(first, start + n)
        limit = self.devices_per_node
        return first if limit is None or first + count <= limit else None


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


@attrs.frozen
class RankPlacement:
    """Where one rank runs: node entry, bundle, node IP, local rank, planned devices."""

    rank: int
    node: NodeSlots
    bundle: int
    node_ip: str
    local_rank: int
    local_world_size: int
    devices: tuple[int, ...]
    device_share: float

    @property
    def cuda_visible_devices(self) -> str | None:
        return ",".join(str(d) for d in self.devices) if self.devices else None


@attrs.frozen
class PlacementPlan:
    """Every rank's placement, in rank order."""

    pool: ResourcePool
    ranks: tuple[RankPlacement, ...]

    @property
    def world_size(self) -> int:
        return len(self.ranks)


def _ip_key(ip: str) -> tuple[int, int, str]:
    try:
        addr = ipaddress.ip_address(ip.strip("[]"))
    except ValueError:
        return (2, 0, ip)
    return (addr.version, int(addr), ip)


def plan_placement(pool: ResourcePool, node_ips: Sequence[str]) -> PlacementPlan:
    """Assign ranks for ``pool`` given the IP each node entry landed on (same order as
    ``pool.nodes``). Node entries are sorted by IP (numerically, stable for ties); ranks then
    follow bundle order. Local rank counts this pool's processes per IP."""
    if len(node_ips) != len(pool.nodes):
        raise ValueError(
            f"plan_placement: got {len(node_ips)} node IPs for {len(pool.nodes)} node entries"
        )
    order = sorted(range(len(pool.nodes)), key=lambda i: _ip_key(node_ips[i]))
    per_ip: dict[str, int] = {}
    for i in order:
        per_ip[node_ips[i]] = per_ip.get(node_ips[i], 0) + pool.nodes[i].count
    seen: dict[str, int] = {}
    share = (
        (pool.devices_per_process / pool.max_colocate_count) if pool.devices_per_process else 0.0
    )
    ranks: list[RankPlacement] = []
    for i in order:
        node, ip = pool.nodes[i], node_ips[i]
        for bundle in range(node.start, node.start + node.count):
            local = seen.get(ip, 0)
            seen[ip] = local + 1
            d = pool.devices_per_process
            ranks.append(
                RankPlacement(
                    rank=len(ranks),
                    node=node,
                    bundle=bundle,
                    node_ip=ip,
                    local_rank=local,
                    local_world_size=per_ip[ip],
                    devices=tuple(range(bundle * d, bundle * d + d)),
                    device_share=share,
                )
            )
    return PlacementPlan(pool, tuple(ranks))
