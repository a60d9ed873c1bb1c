"""``@register``: metadata only, validated when applied, plain classes stay plain."""

from __future__ import annotations

import pickle

import pytest

from runtime import (
    Batch,
    Dispatch,
    Execute,
    get_method_meta,
    mesh_dispatch,
    register,
    registered_methods,
)
from runtime.errors import DispatchError


class Plain:
    def __init__(self, base: int) -> None:
        self.base = base

    @register(Dispatch.ONE_TO_ALL)
    def add(self, x: int) -> int:
        return self.base + x

    @register(Dispatch.DP_COMPUTE_PROTO)
    async def step(self, data: Batch) -> Batch:
        return data

    @register(mesh_dispatch("train"))
    def train(self, data: Batch) -> Batch:
        return data

    def helper(self) -> int:
        return 1


def test_metadata_is_readable_from_the_class() -> None:
    metas = registered_methods(Plain)
    assert sorted(metas) == ["add", "step", "train"]
    assert metas["add"].dispatch is Dispatch.ONE_TO_ALL
    assert metas["add"].execute is Execute.ALL
    assert not metas["add"].is_async
    assert metas["step"].is_async
    assert metas["train"].mode_name == "MeshMode('train')"
    assert get_method_meta(Plain, "helper") is None


def test_decorated_methods_run_unchanged_on_an_instance() -> None:
    assert Plain(2).add(3) == 5
    assert Plain.add.__name__ == "add"
    assert Plain.add.__doc__ is None


def test_classes_and_instances_survive_stdlib_pickle() -> None:
    clone = pickle.loads(pickle.dumps(Plain(7)))
    assert type(clone) is Plain
    assert clone.add(1) == 8
    assert pickle.loads(pickle.dumps(Plain)) is Plain


def test_rank_zero_execute_only_combines_with_broadcast_modes() -> None:
    with pytest.raises(DispatchError, match="RANK_ZERO only combines"):
        register(Dispatch.DP_COMPUTE_PROTO, Execute.RANK_ZERO)  # type: ignore[call-overload]
    meta = register(Dispatch.RANK_ZERO)(lambda self: 1).meta
    assert meta.execute is Execute.RANK_ZERO


def test_unknown_modes_fail_when_the_decorator_is_applied() -> None:
    with pytest.raises(DispatchError, match="unknown dispatch mode 'NOPE'"):
        register("NOPE")
    with pytest.raises(DispatchError, match="unknown dispatch mode"):
        register(42)  # type: ignore[call-overload]


def test_registering_twice_is_rejected() -> None:
    method = register(Dispatch.ONE_TO_ALL)(lambda self: 1)
    with pytest.raises(DispatchError, match="already registered"):
        register(Dispatch.ONE_TO_ALL)(method)  # type: ignore[arg-type]  # mypy rejects it too
