"""Resource pools and placement plans: pure code, no backend.

Hypothesis checks the plan invariants (ranks 0..n-1 once each, local ranks 0..k-1 per IP,
ranks sorted by IP, devices from bundles) and split/merge round trips.
"""

from __future__ import annotations

import functools
import ipaddress
import itertools
import random
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runtime import PlacementPlan, ResourcePool, merge_pools, plan_placement

__all__ = [
    "compositions",
    "flat_bundles",
    "pools_and_ips",
    "summary",
    "test_invalid_pools",
    "test_merge_rejects_incompatible_or_overlapping_pools",
    "test_plan_devices_come_from_bundles",
    "test_plan_does_not_depend_on_which_entry_landed_first",
    "test_plan_is_sorted_by_ip_and_stable",
    "test_plan_local_ranks_count_per_ip",
    "test_plan_needs_one_ip_per_node_entry",
    "test_plan_of_a_heterogeneous_pool",
    "test_plan_ranks_are_0_to_n_minus_1_once_each",
    "test_plan_sorts_ips_numerically",
    "test_pools_are_pure_data",
    "test_split_by_even_count",
    "test_split_sizes_must_sum_to_the_world_size",
    "test_split_that_does_not_divide",
    "test_split_then_merge_round_trips",
    "test_splits_of_splits_partition_the_parent",
]

IPS = ["10.0.0.2", "10.0.0.10", "10.0.0.9", "192.168.1.1", "10.0.1.1"]


def flat_bundles(pool: ResourcePool) -> list[tuple[tuple[str, int], int]]:
    """Every process slot of ``pool`` as (node entry key, bundle index), in pool order."""
    return [(n.key, b) for n in pool.nodes for b in range(n.start, n.start + n.count)]


def summary(plan: PlacementPlan) -> list[tuple[object, ...]]:
    return [
        (r.rank, r.node.key, r.bundle, r.node_ip, r.local_rank, r.local_world_size, r.devices)
        for r in plan.ranks
    ]


@st.composite
def pools_and_ips(draw: st.DrawFn) -> tuple[ResourcePool, list[str]]:
    counts = draw(st.lists(st.integers(1, 4), min_size=1, max_size=5))
    devices = draw(st.integers(0, 2))
    colocate = draw(st.integers(1, 3))
    pool = ResourcePool.create(counts, devices_per_process=devices, max_colocate_count=colocate)
    ips = draw(st.lists(st.sampled_from(IPS), min_size=len(counts), max_size=len(counts)))
    return pool, ips


@st.composite
def compositions(draw: st.DrawFn, total: int) -> list[int]:
    """A random list of positive sizes summing to ``total``."""
    cuts = sorted(draw(st.sets(st.integers(1, total - 1), max_size=total - 1))) if total > 1 else []
    bounds = [0, *cuts, total]
    return [b - a for a, b in itertools.pairwise(bounds)]


# --------------------------------------------------------------------------- plan properties
@given(pools_and_ips())
def test_plan_ranks_are_0_to_n_minus_1_once_each(case: tuple[ResourcePool, list[str]]) -> None:
    pool, ips = case
    plan = plan_placement(pool, ips)
    assert [r.rank for r in plan.ranks] == list(range(pool.world_size))
    assert plan.world_size == pool.world_size
    # Every process slot is used exactly once.
    assert sorted((r.node.key, r.bundle) for r in plan.ranks) == sorted(flat_bundles(pool))


@given(pools_and_ips())
def test_plan_local_ranks_count_per_ip(case: tuple[ResourcePool, list[str]]) -> None:
    pool, ips = case
    plan = plan_placement(pool, ips)
    for ip in set(ips):
        mine = [r for r in plan.ranks if r.node_ip == ip]
        assert [r.local_rank for r in mine] == list(range(len(mine)))
        assert {r.local_world_size for r in mine} == {len(mine)}


@given(pools_and_ips())
def test_plan_is_sorted_by_ip_and_stable(case: tuple[ResourcePool, list[str]]) -> None:
    pool, ips = case
    plan = plan_placement(pool, ips)
    keys = [ipaddress.ip_address(r.node_ip) for r in plan.ranks]
    assert keys == sorted(keys)
    # Entries on the same IP keep pool order, bundles in order within an entry.
    expected = [
        (n.key, b)
        for i, n in sorted(enumerate(pool.nodes), key=lambda e: ipaddress.ip_address(ips[e[0]]))
        for b in range(n.start, n.start + n.count)
    ]
    assert [(r.node.key, r.bundle) for r in plan.ranks] == expected


@given(pools_and_ips())
def test_plan_devices_come_from_bundles(case: tuple[ResourcePool, list[str]]) -> None:
    pool, ips = case
    d = pool.devices_per_process
    for r in plan_placement(pool, ips).ranks:
        assert r.devices == tuple(range(r.bundle * d, r.bundle * d + d))
        if d:
            assert r.cuda_visible_devices == ",".join(map(str, r.devices))
            assert r.device_share == pytest.approx(d / pool.max_colocate_count)
        else:
            assert r.cuda_visible_devices is None
            assert r.device_share == 0.0


@given(pools_and_ips(), st.randoms())
def test_plan_does_not_depend_on_which_entry_landed_first(
    case: tuple[ResourcePool, list[str]], rnd: random.Random
) -> None:
    """Same-size entries swapping IPs give the same rank -> (IP, local rank) map."""
    pool, ips = case
    counts = [n.count for n in pool.nodes]
    same = ResourcePool.create([counts[0]] * len(counts))
    shuffled = list(ips)
    rnd.shuffle(shuffled)
    a = plan_placement(same, ips)
    b = plan_placement(same, shuffled)
    assert [(r.node_ip, r.local_rank) for r in a.ranks] == [
        (r.node_ip, r.local_rank) for r in b.ranks
    ]


def test_plan_sorts_ips_numerically() -> None:
    pool = ResourcePool.create([1, 1, 1])
    plan = plan_placement(pool, ["10.0.0.10", "10.0.0.9", "10.0.0.100"])
    assert [r.node_ip for r in plan.ranks] == ["10.0.0.9", "10.0.0.10", "10.0.0.100"]
    assert [r.node.index for r in plan.ranks] == [1, 0, 2]


def test_plan_of_a_heterogeneous_pool() -> None:
    pool = ResourcePool.create([2, 3], devices_per_process=1)
    assert pool.local_world_size_list() == [2, 2, 3, 3, 3]
    assert pool.local_rank_list() == [0, 1, 0, 1, 2]
    plan = plan_placement(pool, ["10.0.0.1", "10.0.0.2"])
    assert [r.local_rank for r in plan.ranks] == [0, 1, 0, 1, 2]
    assert [r.cuda_visible_devices for r in plan.ranks] == ["0", "1", "0", "1", "2"]
    # Two entries on one node share the local rank space.
    same = plan_placement(pool, ["10.0.0.1", "10.0.0.1"])
    assert [r.local_rank for r in same.ranks] == [0, 1, 2, 3, 4]
    assert {r.local_world_size for r in same.ranks} == {5}


def test_plan_needs_one_ip_per_node_entry() -> None:
    with pytest.raises(ValueError, match="2 node IPs for 3 node entries"):
        plan_placement(ResourcePool.create([1, 1, 1]), ["a", "b"])


# --------------------------------------------------------------------------- split / merge
@given(
    st.lists(st.integers(1, 4), min_size=1, max_size=4).flatmap(
        lambda counts: st.tuples(st.just(counts), compositions(sum(counts)))
    )
)
def test_split_then_merge_round_trips(case: tuple[list[int], list[int]]) -> None:
    counts, sizes = case
    pool = ResourcePool.create(counts, devices_per_process=1)
    parts = pool.split(sizes)
    assert [p.world_size for p in parts] == sizes
    assert [b for p in parts for b in flat_bundles(p)] == flat_bundles(pool)
    merged = functools.reduce(merge_pools, parts)
    assert merged.world_size == pool.world_size
    assert flat_bundles(merged) == flat_bundles(pool)
    # Same placement as the original pool for any node IPs.
    ip_of = {n.key: IPS[i % len(IPS)] for i, n in enumerate(pool.nodes)}
    original = plan_placement(pool, [ip_of[n.key] for n in pool.nodes])
    again = plan_placement(merged, [ip_of[n.key] for n in merged.nodes])
    assert summary(again) == summary(original)


@given(st.integers(1, 12).flatmap(lambda n: st.tuples(st.just(n), compositions(n))))
def test_splits_of_splits_partition_the_parent(case: tuple[int, list[int]]) -> None:
    n, sizes = case
    pool = ResourcePool.create([n])
    parts = pool.split(sizes)
    nested = [q for p in parts for q in p.split(1)]
    assert [q.world_size for q in nested] == [1] * n
    assert [b for q in nested for b in flat_bundles(q)] == flat_bundles(pool)
    assert all(q.nodes[0].capacity == n for q in nested)  # still the parent's reservation


def test_split_by_even_count() -> None:
    pool = ResourcePool.create([4, 4], devices_per_process=1)
    halves = pool.split(4)
    assert [h.processes_per_node for h in halves] == [[4], [4]]
    quarters = pool.split(2)
    assert [q.world_size for q in quarters] == [2, 2, 2, 2]
    # verl's split test: [q, mid, q] then mid by 1.
    first, mid, last = ResourcePool.create([8]).split([2, 4, 2])
    assert [p.world_size for p in [first, *mid.split(1), last]] == [2, 1, 1, 1, 1, 2]


@pytest.mark.parametrize("size", [3, 0, -2, 16])
def test_split_that_does_not_divide(size: int) -> None:
    with pytest.raises(ValueError, match=r"must divide 8 \(try one of \[1, 2, 4, 8\]\)"):
        ResourcePool.create([8]).split(size)


@pytest.mark.parametrize("sizes", [[3, 3], [4, 5], [8, 0], [9, -1]])
def test_split_sizes_must_sum_to_the_world_size(sizes: Sequence[int]) -> None:
    with pytest.raises(ValueError, match="sum to 8"):
        ResourcePool.create([8]).split(sizes)


def test_merge_rejects_incompatible_or_overlapping_pools() -> None:
    a = ResourcePool.create([2], devices_per_process=1)
    b = ResourcePool.create([2], devices_per_process=2)
    with pytest.raises(ValueError, match="devices_per_process differs"):
        merge_pools(a, b)
    with pytest.raises(ValueError, match="share bundles"):
        merge_pools(a, a)
    left, right = a.split(1)
    with pytest.raises(ValueError, match="share bundles"):
        merge_pools(left, a)
    assert merge_pools(left, right).world_size == 2


@pytest.mark.parametrize(
    ("counts", "kwargs", "message"),
    [
        ([], {}, "non-empty list of positive integers"),
        ([0], {}, "non-empty list of positive integers"),
        ([2, -1], {}, "non-empty list of positive integers"),
        ([2], {"devices_per_process": -1}, "devices_per_process"),
        ([2], {"max_colocate_count": 0}, "max_colocate_count"),
        ([2], {"cpus_per_process": -0.5}, "cpus_per_process"),
        ([2], {"strategy": "SPREAD"}, "strategy"),
    ],
)
def test_invalid_pools(counts: list[int], kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ResourcePool.create(counts, **kwargs)


def test_pools_are_pure_data() -> None:
    pool = ResourcePool.create([2, 1], devices_per_process=1, max_colocate_count=3, name="p")
    assert pool.world_size == 3
    assert pool.name == "p"
    assert [n.key for n in pool.nodes] == [("p", 0), ("p", 1)]
    assert pool.split([1, 2])[1].nodes[0].key == ("p", 0)
    assert plan_placement(pool, ["1.1.1.1", "1.1.1.1"]) == plan_placement(
        pool, ["1.1.1.1", "1.1.1.1"]
    )
