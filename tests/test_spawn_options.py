"""``SpawnOptions``: the one public place for how a group's hosts are named and started."""

from __future__ import annotations

from typing import Any, cast

import pytest

from runtime import ResourcePool, SpawnOptions, WorkerGroup, WorkerSpec, fuse
from runtime.testing import InProcessBackend
from runtime.testing.conformance.workers import Calc, Critic


def test_defaults_and_keyword_only() -> None:
    options = SpawnOptions()
    assert (options.name, options.master_addr, options.master_port) == (None, None, None)
    assert options.port_range is None
    assert options.start_timeout == 300.0
    with pytest.raises(TypeError):
        cast(Any, SpawnOptions)("name")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"master_addr": "10.0.0.1"}, "give both or neither"),
        ({"master_port": 29500}, "give both or neither"),
        ({"start_timeout": 0}, r"start_timeout=0 must be > 0"),
        ({"port_range": (2000, 2000)}, r"port_range=\(2000, 2000\) must be"),
        ({"port_range": (0, 10)}, "0 < lo < hi <= 65536"),
    ],
)
def test_invalid_options_name_the_field(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SpawnOptions(**fields)


def test_a_group_and_a_fused_group_take_the_same_options() -> None:
    backend = InProcessBackend()
    options = SpawnOptions(name="adders", master_addr="10.1.2.3", master_port=1234)
    group = WorkerGroup(backend, WorkerSpec.of(Calc), ResourcePool.create([2]), options=options)
    try:
        assert group.name == "adders"
        assert (group.master_addr, group.master_port) == ("10.1.2.3", 1234)
        assert [c.master_port for c in group.contexts()] == [1234, 1234]
    finally:
        group.shutdown()
    roles: dict[str, WorkerSpec[Any]] = {
        "calc": WorkerSpec.of(Calc),
        "critic": WorkerSpec.of(Critic, {"b": 1.0}),
    }
    fused = fuse(backend, roles, ResourcePool.create([2]), options=SpawnOptions(name="pair"))
    try:
        assert fused.name == "pair"
        assert fused.view("calc", Calc).name == "pair"
    finally:
        fused.shutdown()


def test_options_of_the_wrong_type_are_a_clear_error() -> None:
    backend = InProcessBackend()
    with pytest.raises(TypeError, match=r"options must be a runtime.SpawnOptions, got dict"):
        WorkerGroup(
            backend,
            WorkerSpec.of(Calc),
            ResourcePool.create([1]),
            options=cast(Any, {"name": "x"}),
        )
