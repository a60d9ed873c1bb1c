"""``RayBackend`` on a real local Ray cluster (16 CPUs, 4 fake GPUs; see tests/_ray_session.py).

Actors cost ~1 s each to start on these 2-core machines, so groups are module-scoped and
shared by the tests that only read from them; tests that break a group (kill a rank, a failing
constructor) start their own small one. Two scenarios need another Ray instance or another
driver and run as subprocesses: the two-node placement (``_two_node_driver``) and attaching
to detached workers (``_attach_driver``).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import ray
import torch
from ray.util import get_node_ip_address as node_ip_address
from ray.util.placement_group import PlacementGroup, placement_group_table

import runtime
from runtime import (
    Batch,
    Dispatch,
    HostLaunch,
    NodeSlots,
    RankPlacement,
    ResourcePool,
    SpawnOptions,
    WorkerContext,
    WorkerGroup,
    WorkerSpec,
    register,
)
from runtime.errors import (
    CallTimeoutError,
    PlacementError,
    RemoteMethodError,
    WorkerDiedError,
    WorkerStartError,
)
from runtime_ray import RayBackend, RayWorker
from runtime_ray._casts import find_placement_group
from runtime_ray._local_auth import client_env
from tests._ray_session import REPO_ROOT
from tests.ray.workers import Crashy, Probe, Sleepy

pytestmark = pytest.mark.ray

PYTHONPATH_ENV = {"env_vars": {"PYTHONPATH": str(REPO_ROOT)}}


def _subprocess_env() -> dict[str, str]:
    env = {**os.environ, **client_env()}  # the session cluster's token, to join it
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


def _last_json(stdout: str) -> dict[str, Any]:
    report: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    return report


def _workers(group: WorkerGroup[Any]) -> list[RayWorker]:
    out = [w for w in group.workers if isinstance(w, RayWorker)]
    assert len(out) == group.world_size
    return out


# ---------------------------------------------------------------------------- module fixtures
@pytest.fixture(scope="module")
def gpu_pool() -> ResourcePool:
    """2 processes x 1 fake GPU, shared by up to 2 groups (0.5 GPU per actor)."""
    return ResourcePool.create([2], devices_per_process=1, max_colocate_count=2)


@pytest.fixture(scope="module")
def colocated(
    backend: RayBackend, gpu_pool: ResourcePool
) -> Iterator[tuple[WorkerGroup[Probe], WorkerGroup[Probe]]]:
    """Two groups on the same GPU pool (fractional GPU sharing)."""
    a = WorkerGroup(backend, WorkerSpec.of(Probe, tag="a"), gpu_pool, timeout=60)
    try:
        b = WorkerGroup(backend, WorkerSpec.of(Probe, tag="b"), gpu_pool, timeout=60)
    except BaseException:
        a.shutdown()
        raise
    yield a, b
    a.shutdown()
    b.shutdown()


@pytest.fixture(scope="module")
def cpu_group(backend: RayBackend) -> Iterator[WorkerGroup[Probe]]:
    """4 CPU-only ranks."""
    group = WorkerGroup(backend, WorkerSpec.of(Probe), ResourcePool.create([4]), timeout=60)
    yield group
    group.shutdown()


@pytest.fixture(scope="module")
def noset_group(backend: RayBackend) -> Iterator[WorkerGroup[Probe]]:
    """2 GPU ranks of a second backend in NOSET mode (it reuses the session's Ray)."""
    with RayBackend(noset_visible_devices=True, runtime_env=PYTHONPATH_ENV) as noset:
        pool = ResourcePool.create([2], devices_per_process=1)
        yield WorkerGroup(noset, WorkerSpec.of(Probe), pool, timeout=60)


# ---------------------------------------------------------------------------- conformance
def test_is_a_runtime_backend(backend: RayBackend) -> None:
    assert isinstance(backend, runtime.Backend)


def test_backend_that_reuses_ray_does_not_shut_it_down(backend: RayBackend) -> None:
    with RayBackend() as other:
        assert other.namespace == backend.namespace
    assert ray.is_initialized()


# ---------------------------------------------------------------------------- placement
def test_placement_group_has_the_pool_bundles(
    backend: RayBackend,
    gpu_pool: ResourcePool,
    colocated: tuple[WorkerGroup[Probe], WorkerGroup[Probe]],
) -> None:
    [pg] = backend.placement_groups(gpu_pool)
    assert pg is not None
    table = placement_group_table(pg)
    assert table["state"] == "CREATED"
    assert table["strategy"] == "STRICT_PACK"
    # CPU = cpus_per_process x max_colocate_count; one bundle per process; one PG for both groups.
    assert table["bundles"] == {0: {"CPU": 2.0, "GPU": 1.0}, 1: {"CPU": 2.0, "GPU": 1.0}}
    a, b = colocated
    assert a.placement is not None
    assert b.placement is not None
    assert [p.bundle for p in a.placement.ranks] == [0, 1] == [p.bundle for p in b.placement.ranks]
    assert [p.device_share for p in a.placement.ranks] == [0.5, 0.5]


def test_cuda_visible_devices_per_rank_come_from_ray(
    colocated: tuple[WorkerGroup[Probe], WorkerGroup[Probe]],
) -> None:
    a, _ = colocated
    seen = a.call(Probe.seen)
    contexts = a.contexts()
    for rank, (s, ctx) in enumerate(zip(seen, contexts, strict=True)):
        assert s["CUDA_VISIBLE_DEVICES"] == s["ray_gpu_ids"] == ctx.cuda_visible_devices, s
        assert ctx.visible_devices == (s["ray_gpu_ids"],)
        assert (s["RANK"], s["WORLD_SIZE"]) == (str(rank), "2")
        assert (s["LOCAL_RANK"], s["LOCAL_WORLD_SIZE"]) == (str(rank), "2")
    assert len({s["CUDA_VISIBLE_DEVICES"] for s in seen}) == 2


def test_colocated_groups_share_each_gpu(
    colocated: tuple[WorkerGroup[Probe], WorkerGroup[Probe]],
) -> None:
    a, b = colocated
    seen_a, seen_b = a.call(Probe.seen), b.call(Probe.seen)
    assert [s["tag"] for s in seen_a + seen_b] == ["a", "a", "b", "b"]
    assert [s["CUDA_VISIBLE_DEVICES"] for s in seen_a] == [
        s["CUDA_VISIBLE_DEVICES"] for s in seen_b
    ]
    assert {s["pid"] for s in seen_a}.isdisjoint(s["pid"] for s in seen_b)


def test_noset_mode_takes_local_rank_from_the_gpu_ids(noset_group: WorkerGroup[Probe]) -> None:
    seen = noset_group.call(Probe.seen)
    contexts = noset_group.contexts()
    ids = [s["ray_gpu_ids"] for s in seen]
    assert all(ids), ids
    assert len(set(ids)) == 2, ids
    for s, ctx in zip(seen, contexts, strict=True):
        assert s["CUDA_VISIBLE_DEVICES"] is None, s  # Ray left it unset, and so did we
        assert ctx.visible_devices == ()
        assert ctx.local_rank == int(str(s["ray_gpu_ids"]))
        assert s["LOCAL_RANK"] == str(ctx.local_rank)


def test_infeasible_pool_fails_fast_with_what_was_asked(backend: RayBackend) -> None:
    pool = ResourcePool.create([1], devices_per_process=8)
    start = time.monotonic()
    with pytest.raises(PlacementError) as info:
        WorkerGroup(backend, WorkerSpec.of(Probe), pool, options=SpawnOptions(start_timeout=1.0))
    assert 0.9 < time.monotonic() - start < 15  # waited for the deadline, not longer
    message = str(info.value)
    assert "1 bundle(s) x {CPU: 1, GPU: 8}" in message
    assert "INFEASIBLE" in message
    assert "GPU: 4" in message  # what the cluster has
    assert backend.placement_groups(pool) == [None]  # removed, not left pending


def test_master_endpoint_port_range(backend: RayBackend) -> None:
    ip = node_ip_address()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("", 0))
        busy = taken.getsockname()[1]
        addr, port = backend.master_endpoint(ip, port_range=(busy, busy + 64))
        assert addr == ip
        assert busy < port < busy + 64
        with pytest.raises(PlacementError, match="no free port"):
            backend.master_endpoint(ip, port_range=(busy, busy + 1))


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_two_nodes_ranks_follow_node_ip() -> None:
    # ray.cluster_utils.Cluster writes its address to <ray temp dir>/ray_current_cluster, where
    # a plain ray.init() in ANY process on this machine would find and join it: give the
    # subprocess a private Ray temp dir (short: Ray's unix socket paths must fit 107 bytes).
    ray_tmp = tempfile.mkdtemp(prefix="rlrt2n-", dir="/tmp")
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "tests.ray._two_node_driver"],
            cwd=REPO_ROOT,
            env={**_subprocess_env(), "RAY_TMPDIR": ray_tmp},
            capture_output=True,
            text=True,
            timeout=200,
            check=False,
        )
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-4000:]}"
    report = _last_json(proc.stdout)
    assert report["node_ip"] == ["127.0.0.2", "127.0.0.3", "127.0.0.3"]
    assert report["entry"] == [1, 0, 0]  # pool order was entry 0 first: re-sorted by IP
    assert report["master_addr"] == "127.0.0.2"


# ---------------------------------------------------------------------------- spawn
def test_ray_remote_class_is_rejected(backend: RayBackend) -> None:
    wrapped: Any = ray.remote(Probe)
    with pytest.raises(ValueError, match=r"plain class.*@ray\.remote"):
        WorkerSpec.of(wrapped)
    # The backend's own guard, for launches that bypass the spec's check.
    spec = WorkerSpec.of(Probe)
    object.__setattr__(spec, "cls", wrapped)
    node = NodeSlots("p", 0, 1, 0, 1)
    ctx = WorkerContext(
        rank=0,
        world_size=1,
        local_rank=0,
        local_world_size=1,
        node_ip="x",
        master_addr="x",
        master_port=1,
    )
    launch = HostLaunch(
        group="g",
        roles=(("probe", spec),),
        context=ctx,
        placement=RankPlacement(0, node, 0, "x", 0, 1, (), 0.0),
        env={},
        options={},
        name="g:probe:0",
    )
    with pytest.raises(ValueError, match=r"@ray\.remote.*plain class"):
        backend.spawn([launch], timeout=5)


def test_raising_constructor_is_a_worker_start_error(backend: RayBackend) -> None:
    pool = ResourcePool.create([1])
    with pytest.raises(WorkerStartError) as info:
        WorkerGroup(backend, WorkerSpec.of(Crashy, "ctor boom"), pool, timeout=30)
    err = info.value
    assert (err.role, err.rank, err.method) == ("crashy", 0, "__init__")
    assert "RuntimeError: ctor boom" in str(err)
    assert "Traceback" in str(err)
    assert "workers.py" in str(err)
    assert isinstance(err.__cause__, ray.exceptions.RayTaskError)
    assert backend.placement_groups(pool) == [None]  # the failed group's reservation is freed


def test_hanging_constructor_is_a_worker_start_error(backend: RayBackend) -> None:
    pool = ResourcePool.create([2])
    start = time.monotonic()
    with pytest.raises(WorkerStartError) as info:
        WorkerGroup(
            backend, WorkerSpec.of(Sleepy, 600.0), pool, options=SpawnOptions(start_timeout=3.0)
        )
    assert 2.9 < time.monotonic() - start < 20  # the start deadline, not the 600 s sleep
    err = info.value
    assert (err.role, err.rank, err.method) == ("sleepy", 0, "__init__")
    assert "did not finish within start_timeout=3 s" in str(err)
    assert "rank(s) [0, 1]" in str(err)
    assert backend.placement_groups(pool) == [None]  # nothing left behind


# ---------------------------------------------------------------------------- calls
def test_gloo_all_reduce_across_ranks(cpu_group: WorkerGroup[Probe]) -> None:
    # Each rank contributes 1 + rank: 1 + 2 + 3 + 4.
    assert cpu_group.call(Probe.allreduce, 1.0) == [10.0] * 4
    contexts = cpu_group.contexts()
    assert {(c.master_addr, c.master_port) for c in contexts} == {
        (cpu_group.master_addr, cpu_group.master_port)
    }


def test_one_to_all_batch_is_put_once(
    cpu_group: WorkerGroup[Probe], monkeypatch: pytest.MonkeyPatch
) -> None:
    puts: list[object] = []
    real_put = ray.put

    def counting_put(value: object, **kwargs: Any) -> ray.ObjectRef[object]:
        puts.append(value)
        return real_put(value, **kwargs)

    monkeypatch.setattr(ray, "put", counting_put)
    batch = Batch({"x": torch.ones(4_000_000, dtype=torch.float32)})  # 16 MB
    assert cpu_group.call(Probe.nbytes, batch) == [16_000_000] * 4
    assert len(puts) == 1
    assert puts[0] is batch
    assert cpu_group.call(Probe.rank_plus, 5) == [5, 6, 7, 8]  # scalars travel inline
    assert len(puts) == 1


def test_sharded_batch_and_chained_future(cpu_group: WorkerGroup[Probe]) -> None:
    data = Batch({"x": torch.arange(8)})
    out = cpu_group.call(Probe.add_rank, data)
    assert out.tensors["x"].tolist() == [0, 1, 3, 4, 6, 7, 9, 10]
    future = cpu_group.submit(Probe.add_rank, data)
    chained = cpu_group.call(Probe.add_rank, future)  # resolved on the workers, not the driver
    assert chained.tensors["x"].tolist() == [0, 1, 4, 5, 8, 9, 12, 13]


def test_method_error_names_role_and_rank(cpu_group: WorkerGroup[Probe]) -> None:
    with pytest.raises(RemoteMethodError) as info:
        cpu_group.call(Probe.fail, "nope")
    err = info.value
    assert (err.role, err.rank, err.method, err.remote_type) == ("probe", 0, "fail", "KeyError")
    assert "nope" in err.remote_message
    assert "workers.py" in err.remote_traceback
    assert isinstance(err.__cause__, ray.exceptions.RayTaskError)


def test_deadline_names_the_pending_ranks(cpu_group: WorkerGroup[Probe]) -> None:
    with pytest.raises(CallTimeoutError) as info:
        cpu_group.with_timeout(0.3).call(Probe.sleep, 1.0)
    assert (info.value.method, info.value.role) == ("sleep", "probe")
    assert info.value.pending_ranks == (0, 1, 2, 3)


def test_liveness_probe_answers_during_a_long_call(
    backend: RayBackend, cpu_group: WorkerGroup[Probe]
) -> None:
    future = cpu_group.submit(Probe.sleep, 2.0)
    start = time.monotonic()
    assert backend.alive(cpu_group.workers) == [True] * 4
    assert time.monotonic() - start < 1.5  # did not queue behind sleep()
    assert future.get(timeout=30) == [2.0] * 4


def test_killed_rank_is_reported_by_call_and_check_alive(backend: RayBackend) -> None:
    group = WorkerGroup(backend, WorkerSpec.of(Probe), ResourcePool.create([2]), timeout=60)
    try:
        future = group.submit(Probe.sleep, 60.0)
        victim = _workers(group)[1]
        ray.kill(victim.actor)
        start = time.monotonic()
        with pytest.raises(WorkerDiedError) as info:
            future.get(timeout=30)  # rank 0 is still sleeping: the death must not wait for it
        assert time.monotonic() - start < 10
        err = info.value
        assert (err.role, err.rank, err.method, err.node) == ("probe", 1, "sleep", victim.node_ip)
        assert isinstance(err.__cause__, ray.exceptions.RayActorError)
        with pytest.raises(WorkerDiedError) as alive_info:
            group.check_alive()
        assert (alive_info.value.role, alive_info.value.rank) == ("probe", 1)
        assert backend.alive(group.workers) == [True, False]
    finally:
        group.shutdown()


# ---------------------------------------------------------------------------- detached
def test_attach_to_unknown_names_is_a_clear_error(backend: RayBackend) -> None:
    with pytest.raises(ValueError, match="no Ray actor named 'nobody:probe:0'"):
        backend.attach(["nobody:probe:0"], Probe, role="probe")


@pytest.mark.timeout(180)
def test_detached_group_attach_from_another_driver(backend: RayBackend) -> None:
    with RayBackend(runtime_env=PYTHONPATH_ENV) as owner:
        pool = ResourcePool.create([2], detached=True)
        name = f"detached-{uuid.uuid4().hex[:6]}"
        spec = WorkerSpec.of(Probe, tag="d")
        group = WorkerGroup(owner, spec, pool, timeout=60, options=SpawnOptions(name=name))
        try:
            assert all(w.detached for w in _workers(group))
            proc = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "tests.ray._attach_driver",
                    owner.address,
                    owner.namespace,
                    *group.worker_names,
                ],
                cwd=REPO_ROOT,
                env=_subprocess_env(),
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-4000:]}"
            report = _last_json(proc.stdout)
            assert report["echo"] == [10, 11]
            assert report["ranks"] == [0, 1]
            assert report["group"] == name
            assert report["names"] == group.worker_names
            assert report["tags"] == ["d", "d"]
            # The other driver killed the detached workers on its way out.
            deadline = time.monotonic() + 15
            while owner.alive(group.workers) != [False, False]:
                assert time.monotonic() < deadline, "attached driver's shutdown did not kill them"
                time.sleep(0.2)
        finally:
            group.shutdown()
            owner.shutdown(kill_detached=True)
        assert owner.placement_groups(pool) == [None]


@pytest.mark.timeout(180)
def test_a_dead_drivers_detached_reservation_is_released_from_another_driver(
    backend: RayBackend,
) -> None:
    """verl: a detached group's placement group stayed taken after another driver killed its
    workers. The owner exits without killing them; a second driver process attaches, kills
    them and releases the reservation by the pool's name."""
    pool_name = f"kept-{uuid.uuid4().hex[:6]}"
    pool = ResourcePool.create([2], detached=True, name=pool_name)
    with RayBackend(runtime_env=PYTHONPATH_ENV) as owner:
        group = WorkerGroup(owner, WorkerSpec.of(Probe, tag="k"), pool, timeout=60)
        names = group.worker_names
    # The owner is gone (shutdown keeps detached hosts): its placement group stays taken.
    (pg,) = _named_placement_groups(pool_name)
    assert placement_group_table(pg)["state"] == "CREATED"
    try:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "tests.ray._attach_driver",
                backend.address,
                backend.namespace,
                "--release",
                pool_name,
                *names,
            ],
            cwd=REPO_ROOT,
            env=_subprocess_env(),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-4000:]}"
        assert _last_json(proc.stdout)["echo"] == [10, 11]
        assert placement_group_table(pg)["state"] == "REMOVED"
        assert _named_placement_groups(pool_name) == []
    finally:
        backend.release(pool)  # idempotent: a no-op when the other driver released it


def _named_placement_groups(pool_name: str) -> list[PlacementGroup]:
    """The live placement groups of the one-entry pool ``pool_name`` (found by name)."""
    pg = find_placement_group(f"rlrt:{pool_name}:0")
    return [] if pg is None else [pg]


def test_worker_class_shipped_by_value(backend: RayBackend) -> None:
    """A class no worker process can import (defined in a function, like one in a script's
    ``__main__``) travels by value; its registered methods must survive that."""

    class Local:
        @register(Dispatch.ONE_TO_ALL)
        def echo(self, x: int) -> int:
            return x * 10

    group = WorkerGroup(backend, WorkerSpec.of(Local), ResourcePool.create([1]), timeout=60)
    try:
        assert group.call(Local.echo, 4) == [40]
    finally:
        group.shutdown()
