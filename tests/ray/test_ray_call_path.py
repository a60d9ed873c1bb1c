"""Which actor method a ``RayBackend`` call takes, and that each path keeps the contract.

A call with at most one plain argument goes to the host actor's generated method for
``(role, method)`` with the call's own arguments; a call with several arguments, a lifted
handle or a raw ``ObjectRef`` goes through ``invoke``. The paths are observed with a spy that
counts the calls of the real ``host_method``/``host_ref`` (the calls themselves run as usual).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import ray
import torch
from ray.actor import ActorHandle

from runtime import Batch, ResourcePool, WorkerGroup, WorkerSpec
from runtime.backend import RankCall
from runtime.errors import RemoteMethodError
from runtime_ray import RayBackend, RayWorker, _casts, is_call_task
from runtime_ray._host_actor import RayHost, host_class
from tests.ray.workers import Crashy, Probe

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def group(backend: RayBackend) -> Iterator[WorkerGroup[Probe]]:
    g = WorkerGroup(backend, WorkerSpec.of(Probe), ResourcePool.create([2]), timeout=60)
    yield g
    g.shutdown()


class _Paths:
    """Counts the real ``host_method`` (generated method) and ``host_ref`` (invoke) calls
    made by ``RayBackend.submit``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.direct: list[str] = []
        self.invoke = 0
        real_method, real_ref = _casts.host_method, _casts.host_ref

        def host_method(handle: ActorHandle[Any], name: str) -> Any:
            self.direct.append(name)
            return real_method(handle, name)

        def host_ref(handle: ActorHandle[Any]) -> Any:
            self.invoke += 1
            return real_ref(handle)

        monkeypatch.setattr(_casts, "host_method", host_method)
        monkeypatch.setattr(_casts, "host_ref", host_ref)


def test_every_registered_method_gets_an_actor_method() -> None:
    hosted = host_class([("probe", Probe), ("crashy", Crashy)])
    assert hosted.methods[("probe", "echo")] == "probe__echo"
    assert hosted.methods[("crashy", "noop")] == "crashy__noop"
    assert not any(hasattr(RayHost, name) for name in hosted.methods.values())
    # Built once per combination of roles and classes (Ray exports each class once).
    assert host_class([("probe", Probe), ("crashy", Crashy)]) is hosted
    assert host_class([("probe", Probe)]) is not hosted


def test_small_calls_send_their_own_arguments(
    group: WorkerGroup[Probe], monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = _Paths(monkeypatch)
    assert group.call(Probe.echo, 3) == [3, 3]
    assert group.call(Probe.echo, x=4) == [4, 4]
    assert group.call(Probe.rank_plus, 10) == [10, 11]
    assert paths.direct == ["probe__echo"] * 4 + ["probe__rank_plus"] * 2
    assert paths.invoke == 0
    assert all(isinstance(w, RayWorker) and w.methods for w in group.workers)


def test_handles_and_raw_refs_go_through_invoke(
    group: WorkerGroup[Probe], monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = _Paths(monkeypatch)
    batch = Batch({"x": torch.ones(8, dtype=torch.float32)})
    assert group.call(Probe.nbytes, batch) == [32, 32]  # one put, a Shared per rank
    future = group.submit(Probe.add_rank, Batch({"x": torch.arange(4)}))  # direct: 1 shard
    chained = group.call(Probe.add_rank, future)  # FutureSlice: resolved by Ray on the worker
    assert chained.tensors["x"].tolist() == [0, 1, 4, 5]
    # A raw ObjectRef reaches the method as the ref the caller passed (Ray resolves only
    # top-level arguments, and inside invoke's tuple it is not top level), through the
    # backend itself and through the group's broadcast (which passes it on, not ray.put).
    ref = ray.put(5)
    calls = [RankCall(rank, "probe", "kind", (ref,), {}) for rank in range(2)]
    backend = group.backend
    pending = backend.submit(group.workers, calls)
    assert backend.wait(pending, timeout=60) == ["ObjectRef", "ObjectRef"]
    assert group.call(Probe.kind, ref) == ["ObjectRef", "ObjectRef"]
    assert paths.direct == ["probe__add_rank"] * 2
    assert paths.invoke == 8


def test_errors_of_the_direct_path_name_role_rank_and_method(
    group: WorkerGroup[Probe], monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = _Paths(monkeypatch)
    with pytest.raises(RemoteMethodError) as info:
        group.call(Probe.fail, "boom")
    err = info.value
    assert (err.role, err.rank, err.method) == ("probe", 0, "fail")
    assert err.remote_type == "KeyError"
    assert paths.direct == ["probe__fail"] * 2


def test_timeline_categories_of_user_calls() -> None:
    """The benchmark suite finds the workers' busy time by these names in Ray's timeline."""
    hosted = host_class([("probe", Probe)])
    name = hosted.methods[("probe", "echo")]
    assert is_call_task(f"task::RayHost[probe].{name}")
    assert is_call_task("task::RayHost[actor+ref].actor__update_policy")
    assert is_call_task("task::RayHost.invoke")
    for other in ("start", "ping", "nop"):
        assert not is_call_task(f"task::RayHost[probe].{other}")
    assert not is_call_task("task::g:probe:0:RayHost[probe].__init__")
