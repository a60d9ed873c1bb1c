"""Resource pools (pure data) and placement plans (pure functions of a pool and node IPs).

A :class:`ResourcePool` says how many processes run on each node entry, how many devices each
process uses, and how many groups may share one device (``max_colocate_count``). Backends
reserve a pool's node entries (Ray: one placement group per entry) and report each entry's node
IP; :func:`plan_placement` then assigns ranks deterministically: node entries sorted by IP
(stable for equal IPs), bundles in order, so per-rank checkpoints line up after a restart.

Pools can be split (views onto a range of the parent's bundles, sharing its reservation) and
merged (concatenation of compatible pools); both are pure and unit-tested without a backend.
"""

from __future__ import annotations

import ipaddress
import itertools
import uuid
from collections.abc import Sequence

import attrs

__all__ = [
    "NodeSlots",
    "PlacementPlan",
    "RankPlacement",
    "ResourcePool",
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
