"""Which endpoint a ``MonarchBackend`` call takes, and that each path keeps the contract.

A call without lifted handles goes to the host actor's generated endpoint for ``(role,
method)`` with the call's own arguments; a call with a ``Shared``/``FutureSlice`` argument goes
through ``invoke``. A process kept idle after ``terminate`` keeps the actor class it was
spawned with, so a later rank of another worker class must still be served (through
``invoke`` for the methods the old class does not know).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch

from runtime import Batch, Dispatch, ResourcePool, WorkerGroup, WorkerSpec, register
from runtime.errors import RemoteMethodError
from tests.monarch.workers import Adder, Sleepy

pytestmark = pytest.mark.monarch


class Rows:
    """A DP worker (defined in a test module: travels by value)."""

    @register(Dispatch.DP_COMPUTE_PROTO)
    def plus_one(self, data: Batch) -> Batch:
        return Batch({"x": data.tensors["x"] + 1})


def _pids(group: WorkerGroup[Any]) -> set[int]:
    from runtime_monarch import MonarchWorker

    return {w.pid for w in group.workers if isinstance(w, MonarchWorker)}


@pytest.fixture(scope="module")
def backend() -> Iterator[object]:
    from runtime_monarch import MonarchBackend

    with MonarchBackend() as b:
        yield b


def test_small_calls_use_the_generated_endpoints(backend: object) -> None:
    from runtime_monarch import MonarchBackend, MonarchWorker

    assert isinstance(backend, MonarchBackend)
    group = WorkerGroup(backend, WorkerSpec.of(Adder, 10), ResourcePool.create([2]))
    try:
        workers = [w for w in group.workers if isinstance(w, MonarchWorker)]
        assert [w.methods[("adder", "add")] for w in workers] == ["adder__add"] * 2
        assert group.call(Adder.add, 1) == [11, 11]
        assert group.call(Adder.add, 1, y=2) == [13, 13]  # several arguments: still direct
        with pytest.raises(RemoteMethodError) as info:
            group.call(Adder.fail, "boom")
        err = info.value
        assert (err.role, err.rank, err.method, err.remote_type) == ("adder", 0, "fail", "KeyError")
    finally:
        group.shutdown()


def test_chained_futures_go_through_invoke_and_idle_processes_serve_other_classes(
    backend: object,
) -> None:
    from runtime_monarch import MonarchBackend

    assert isinstance(backend, MonarchBackend)
    first = WorkerGroup(backend, WorkerSpec.of(Sleepy, 0.0), ResourcePool.create([2]))
    pids = _pids(first)
    first.shutdown()  # the processes answer the reset: kept idle for reuse
    group = WorkerGroup(backend, WorkerSpec.of(Rows), ResourcePool.create([2]))
    try:
        assert _pids(group) == pids  # the Sleepy actors now host Rows: no generated endpoint for it
        future = group.submit(Rows.plus_one, Batch({"x": torch.arange(4)}))
        chained = group.call(Rows.plus_one, future)  # resolved on the driver, sent by invoke
        assert chained.tensors["x"].tolist() == [2, 3, 4, 5]
    finally:
        group.shutdown()
