"""Fusion and colocation (verl's colocated/fused worker tests) and N-D mesh dispatch."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from runtime import (
    Backend,
    Batch,
    BatchFuture,
    FusedGroup,
    MeshLayout,
    NotInWorkerError,
    ResourcePool,
    WorkerGroup,
    WorkerSpec,
    fuse,
    register_mesh,
    sibling,
)
from runtime.errors import DispatchError, FusionError, RemoteMethodError
from runtime.testing import InProcessBackend
from runtime.testing.conformance._support import POOL_CPUS, cpu_pool
from runtime.testing.conformance.workers import Actor, Calc, Critic, Hybrid, Twin

__all__ = [
    "calc8",
    "fused",
    "separate",
    "test_device_mesh_register_numbers_on_eight_ranks",
    "test_errors_name_the_role_not_the_host",
    "test_fused_group_shape",
    "test_fused_roles_give_verl_colocated_numbers",
    "test_fused_roles_see_their_siblings",
    "test_fusing_no_roles_is_an_error",
    "test_mesh_dp2_tp2_on_four_ranks",
    "test_mesh_dp2_tp4_on_eight_ranks",
    "test_mesh_layout_orders_collectors_by_dp_rank",
    "test_mesh_layout_validation",
    "test_mesh_pads_like_any_data_parallel_call",
    "test_mesh_pp2_dp2_on_four_ranks",
    "test_mesh_queried_before_registration",
    "test_mesh_registered_twice",
    "test_mesh_submit_and_chained_future",
    "test_mesh_with_two_or_zero_collectors_per_dp_rank",
    "test_method_name_clash_is_reported",
    "test_sibling_outside_a_worker",
    "test_unknown_role_or_wrong_class",
    "test_unknown_sibling_is_an_error_naming_the_role",
]

CRITIC_CONFIG = {"b": 10.0}


@pytest.fixture(scope="module")
def fused(backend: Backend) -> Iterator[FusedGroup]:
    """verl's fused workers: actor, critic and a hybrid role on 2 ranks, plus a clashing twin."""
    group = fuse(
        backend,
        {
            "actor": WorkerSpec.of(Actor),
            "critic": WorkerSpec.of(Critic, CRITIC_CONFIG),
            "hybrid": WorkerSpec.of(Hybrid),
            "twin": WorkerSpec.of(Twin),
        },
        cpu_pool(2),
    )
    yield group
    group.shutdown()


@pytest.fixture(scope="module")
def separate(backend: Backend) -> Iterator[tuple[WorkerGroup[Actor], WorkerGroup[Critic]]]:
    """verl's colocated baseline: an actor group and a critic group sharing one pool."""
    pool = ResourcePool.create([2], cpus_per_process=POOL_CPUS, max_colocate_count=2)
    actor = WorkerGroup(backend, WorkerSpec.of(Actor), pool, role="actor")
    critic = WorkerGroup(backend, WorkerSpec.of(Critic, CRITIC_CONFIG), pool, role="critic")
    yield actor, critic
    actor.shutdown()
    critic.shutdown()


# --------------------------------------------------------------------------- fusion
def test_fused_roles_give_verl_colocated_numbers(
    fused: FusedGroup, separate: tuple[WorkerGroup[Actor], WorkerGroup[Critic]]
) -> None:
    data = Batch({"a": torch.zeros(10)})
    actor_out = fused.view("actor", Actor).call(Actor.add, data)
    critic_out = fused.view("critic", Critic).call(Critic.sub, data)
    assert actor_out.tensors["a"].tolist() == [0.0] * 5 + [1.0] * 5
    assert critic_out.tensors["a"].tolist() == [-10.0] * 10
    # The same numbers as separate groups on one pool (verl compares the two).
    actor, critic = separate
    assert actor.call(Actor.add, data).equals(actor_out)
    assert critic.call(Critic.sub, data).equals(critic_out)
    assert data.tensors["a"].tolist() == [0.0] * 10


def test_fused_roles_see_their_siblings(fused: FusedGroup) -> None:
    # verl's fused workers: actor add(0.1) -> [0.1, 1.1]; critic sub on that -> [-9.9, -8.9];
    # the hybrid method critic.sub(actor.add(x)) gives the same.
    x = fused.view("actor", Actor).call(Actor.inc, 0.1)
    assert x == pytest.approx([0.1, 1.1])
    critic = fused.view("critic", Critic)
    y = critic.call_per_rank(Critic.dec, [Critic.dec.bind(v) for v in x])
    assert y == pytest.approx([-9.9, -8.9])
    z = fused.view("hybrid", Hybrid).call(Hybrid.foo, 0.1)
    assert z == y
    assert fused.view("hybrid", Hybrid).call(Hybrid.sibling_type, "critic") == ["Critic"] * 2


def test_fused_group_shape(fused: FusedGroup) -> None:
    assert fused.roles == ["actor", "critic", "hybrid", "twin"]
    assert fused.world_size == 2
    view = fused.view("critic", Critic)
    assert view.role == "critic"
    assert view.world_size == 2
    assert view.name == fused.name
    assert [c.role for c in view.contexts()] == ["critic", "critic"]
    assert [c.rank for c in view.contexts()] == [0, 1]


def test_method_name_clash_is_reported(fused: FusedGroup) -> None:
    with pytest.raises(FusionError, match=r"clash.*'actor', 'twin'.*'inc'"):
        fused.role_of("inc")
    with pytest.raises(FusionError, match="clash"):
        fused.call_by_name("inc", 1.0)
    # A method object says which role it means; a view resolves the clash too.
    assert fused.role_of(Actor.inc) == "actor"
    assert fused.role_of(Twin.inc) == "twin"
    assert fused.view("twin", Twin).call(Twin.inc, 1.0) == [101.0, 101.0]
    assert fused.role_of("foo") == "hybrid"
    assert fused.call_by_name("foo", 0.1) == pytest.approx([-9.9, -8.9])


def test_unknown_role_or_wrong_class(fused: FusedGroup) -> None:
    with pytest.raises(FusionError, match=r"unknown role 'reward'"):
        fused.view("reward", Actor)
    with pytest.raises(FusionError, match="Critic"):
        fused.view("actor", Critic)
    with pytest.raises(FusionError, match="registers 'missing'"):
        fused.role_of("missing")


def test_unknown_sibling_is_an_error_naming_the_role(fused: FusedGroup) -> None:
    with pytest.raises(RemoteMethodError) as info:
        fused.view("hybrid", Hybrid).call(Hybrid.sibling_type, "reward")
    assert info.value.remote_type == "FusionError"
    assert info.value.role == "hybrid"
    assert "reward" in info.value.remote_message


def test_errors_name_the_role_not_the_host(fused: FusedGroup) -> None:
    with pytest.raises(RemoteMethodError) as info:
        fused.view("actor", Actor).call(Actor.fail, "actor broke")
    assert info.value.role == "actor"
    assert info.value.rank in (0, 1)
    assert info.value.method == "fail"
    assert info.value.remote_type == "RuntimeError"
    assert info.value.remote_message == "actor broke"


def test_sibling_outside_a_worker() -> None:
    with pytest.raises(NotInWorkerError):
        sibling("actor", Actor)
    with pytest.raises(NotInWorkerError):
        register_mesh("infer", dp_rank=0, is_collector=True)


def test_fusing_no_roles_is_an_error() -> None:
    with pytest.raises(FusionError):
        fuse(InProcessBackend(), {}, cpu_pool(1))


# --------------------------------------------------------------------------- N-D mesh
def test_mesh_dp2_tp2_on_four_ranks(calc4: WorkerGroup[Calc]) -> None:
    # infer = dp2 x tp2, collectors at tp == 0: rows [1, 2]; ranks 0-1 get row 0, ranks 2-3
    # row 1; collectors return a + (tp + 1) * dp -> [1, 3].
    layout = calc4.mesh_layout("infer")
    assert layout.dp_ranks == (0, 0, 1, 1)
    assert layout.collectors == (True, False, True, False)
    out = calc4.call(Calc.infer, Batch({"a": torch.tensor([1, 2])}))
    assert out.tensors["a"].tolist() == [1, 3]
    assert calc4.call(Calc.seen_rows, "infer") == [[1], [1], [2], [2]]


def test_mesh_pp2_dp2_on_four_ranks(calc4: WorkerGroup[Calc]) -> None:
    # train = pp2 x dp2 x tp1, collectors at tp == 0 and pp == 1:
    # a + (tp + 1) * (dp + 2) * (pp + 3) on [3, 4] -> [3 + 2 * 4, 4 + 3 * 4] = [11, 16].
    assert calc4.mesh_layout("train").dp_ranks == (0, 1, 0, 1)  # ([0] * 1 + [1] * 1) * 2
    out = calc4.call(Calc.train, Batch({"a": torch.tensor([3, 4])}))
    assert out.tensors["a"].tolist() == [11, 16]
    assert calc4.call(Calc.seen_rows, "train") == [[3], [4], [3], [4]]


def test_mesh_submit_and_chained_future(calc4: WorkerGroup[Calc], calc2: WorkerGroup[Calc]) -> None:
    future = calc4.submit(Calc.infer, Batch({"a": torch.tensor([1, 2])}))
    assert isinstance(future, BatchFuture)
    assert future.get().tensors["a"].tolist() == [1, 3]
    # [1, 2] + rank on 2 ranks -> [1, 3]; into the mesh -> [1 + 0, 3 + 1].
    first = calc2.submit(Calc.add_initial, Batch({"a": torch.tensor([1, 2])}), initial_value=0)
    assert calc4.call(Calc.infer, first).tensors["a"].tolist() == [1, 4]
    # A mesh future passed on to a plain DP call.
    again = calc2.call(
        Calc.add_initial, calc4.submit(Calc.infer, Batch({"a": torch.tensor([1, 2])}))
    )
    assert again.tensors["a"].tolist() == [11, 14]


def test_mesh_pads_like_any_data_parallel_call(calc4: WorkerGroup[Calc]) -> None:
    out = calc4.with_padding().call(Calc.infer, Batch({"a": torch.tensor([5, 6, 7])}))
    # dp chunks of 2 rows: [5, 6] -> dp 0 (+0), [7, pad] -> dp 1 (+1).
    assert out.tensors["a"].tolist() == [5, 6, 8]


@pytest.fixture(scope="module")
def calc8() -> Iterator[WorkerGroup[Calc]]:
    """verl's 8-rank mesh example, in process only (8 Ray actors cost ~8 s; the 4-rank mesh
    tests above cover the mesh on every backend)."""
    group = WorkerGroup(InProcessBackend(), WorkerSpec.of(Calc), cpu_pool(8), role="calc")
    yield group
    group.shutdown()


def test_mesh_dp2_tp4_on_eight_ranks(calc8: WorkerGroup[Calc]) -> None:
    # dp2 x tp4, collectors at tp == 0: a batch of 2 rows, ranks 0-3 get row 0, 4-7 row 1.
    layout = calc8.mesh_layout("infer")
    assert layout.dp_ranks == (0,) * 4 + (1,) * 4
    assert layout.collect_order == (0, 4)
    out = calc8.call(Calc.infer, Batch({"a": torch.tensor([1, 2])}))
    assert len(out) == 2
    assert out.tensors["a"].tolist() == [1, 3]
    assert calc8.call(Calc.seen_rows, "infer") == [[1]] * 4 + [[2]] * 4


def test_device_mesh_register_numbers_on_eight_ranks(calc8: WorkerGroup[Calc]) -> None:
    # verl test_device_mesh_register with n = 8: train = pp2 x dp2 x tp2.
    assert list(calc8.mesh_layout("train").dp_ranks) == ([0] * 2 + [1] * 2) * 2
    assert calc8.call(Calc.train, Batch({"a": torch.tensor([3, 4])})).tensors["a"].tolist() == [
        11,
        16,
    ]
    # 16 rows over infer: chunks of 8, each gets + dp from its collector.
    out = calc8.call(Calc.infer, Batch({"a": torch.arange(16)}))
    assert out.tensors["a"].tolist() == list(range(8)) + [v + 1 for v in range(8, 16)]


# --------------------------------------------------------------------------- mesh errors
def test_mesh_with_two_or_zero_collectors_per_dp_rank(calc4: WorkerGroup[Calc]) -> None:
    data = Batch({"a": torch.arange(4)})
    with pytest.raises(DispatchError, match=r"dp rank 0 has 4 collector ranks"):
        calc4.call(Calc.on_two_collectors, data)
    with pytest.raises(DispatchError, match=r"dp rank 0 has 0 collector ranks"):
        calc4.call(Calc.on_no_collector, data)
    assert data.tensors["a"].tolist() == [0, 1, 2, 3]


def test_mesh_queried_before_registration(calc4: WorkerGroup[Calc]) -> None:
    with pytest.raises(DispatchError, match=r"register_mesh\('never_registered'"):
        calc4.call(Calc.on_unregistered_mesh, Batch({"a": torch.arange(4)}))
    with pytest.raises(DispatchError, match=r"ranks \[0, 1, 2, 3\]"):
        calc4.mesh_layout("never_registered")


def test_mesh_registered_twice(calc4: WorkerGroup[Calc]) -> None:
    with pytest.raises(RemoteMethodError) as info:
        calc4.call(Calc.register_infer_again)
    assert info.value.remote_type == "ValueError"
    assert "already registered" in info.value.remote_message
    # The first registration stands.
    assert calc4.call(Calc.infer, Batch({"a": torch.tensor([1, 2])})).tensors["a"].tolist() == [
        1,
        3,
    ]


@pytest.mark.parametrize(
    ("infos", "message"),
    [
        ([(0, True), (0, True)], r"dp rank 0 has 2 collector ranks \[0, 1\]"),
        ([(0, False), (1, True)], r"dp rank 0 has 0 collector ranks"),
        ([(0, True), (2, True)], r"are not 0\.\.2"),
        ([(0, True), None], r"not registered on role 'r' ranks \[1\]"),
    ],
)
def test_mesh_layout_validation(infos: list[tuple[int, bool] | None], message: str) -> None:
    with pytest.raises(DispatchError, match=message):
        MeshLayout.build("m", "r", infos)


def test_mesh_layout_orders_collectors_by_dp_rank() -> None:
    layout = MeshLayout.build("m", "r", [(1, True), (1, False), (0, False), (0, True)])
    assert layout.dp_size == 2
    assert layout.collect_order == (3, 0)
