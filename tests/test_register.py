"""``@register``: metadata only, validated when applied, plain classes stay plain."""

from __future__ import annotations

import pickle
from typing import Any, cast

import pytest

from runtime import (
    Batch,
    CallArgs,
    Dispatch,
    Execute,
    Method,
    PerRankMethod,
    Registered,
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

    @register(Dispatch.DP_COMPUTE_PROTO, pad=True)
    def padded(self, data: Batch) -> Batch:
        return data

    @register(Dispatch.ALL_TO_ALL)
    def per_rank(self, x: int, *, y: str = "") -> str:
        return f"{x}{y}"

    def helper(self) -> int:
        return 1


def test_metadata_is_readable_from_the_class() -> None:
    metas = registered_methods(Plain)
    assert sorted(metas) == ["add", "padded", "per_rank", "step", "train"]
    assert metas["add"].dispatch is Dispatch.ONE_TO_ALL
    assert metas["add"].execute is Execute.ALL
    assert not metas["add"].is_async
    assert metas["step"].is_async
    assert metas["train"].mode_name == "MeshMode('train')"
    assert get_method_meta(Plain, "helper") is None
    assert metas["padded"].pad
    assert not any(metas[name].pad for name in ("add", "step", "train", "per_rank"))


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
        register(Dispatch.ONE_TO_ALL)(method)  # type: ignore[call-overload]  # mypy rejects it too


def test_group_methods_and_per_rank_methods_are_different_descriptors() -> None:
    # group.call takes a Method; a per-rank method is a PerRankMethod (call_per_rank only).
    for method in (Plain.add, Plain.step, Plain.train, Plain.padded):
        assert isinstance(method, Method)
        assert not isinstance(method, PerRankMethod)
    assert isinstance(Plain.per_rank, PerRankMethod)
    assert not isinstance(Plain.per_rank, Method)
    assert all(isinstance(m, Registered) for m in (Plain.add, Plain.per_rank))
    assert Plain.per_rank.bind(1, y="b") == CallArgs((1,), {"y": "b"})
    assert Plain(0).per_rank(1, y="b") == "1b"


@pytest.mark.parametrize(
    "mode",
    [Dispatch.ONE_TO_ALL, Dispatch.ALL_TO_ALL, Dispatch.DP_COMPUTE, Dispatch.RANK_ZERO],
)
def test_pad_is_only_for_the_sharded_modes(mode: Dispatch) -> None:
    untyped: Any = register  # mypy rejects pad=True for these modes already
    with pytest.raises(DispatchError, match=rf"pad=True only applies to the sharded modes.*{mode}"):
        untyped(mode, pad=True)


@pytest.mark.parametrize(
    "mode",
    [
        Dispatch.DP_COMPUTE_PROTO,
        Dispatch.DP_COMPUTE_PROTO_WITH_FUNC,
        Dispatch.DP_COMPUTE_METRIC,
        mesh_dispatch("m"),
    ],
)
def test_pad_is_recorded_for_the_sharded_modes(mode: Any) -> None:
    registrar = cast(Any, register)(mode, pad=True)
    assert registrar(lambda self, fn, data=None: data).meta.pad
    assert not cast(Any, register)(mode)(lambda self, data: data).meta.pad
