"""Batches through real group calls: jagged columns and the receive copy rule, per backend.

Parametrized over the in-process backend, the session's Ray cluster (marked ``ray``) and a
Monarch backend (marked ``monarch``):
each test runs real worker processes/actors and checks what comes back to the driver. The
copy counters are :func:`runtime._batch_wire.receive_stats` of the driver's process.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from runtime import (
    Backend,
    Batch,
    Dispatch,
    ResourcePool,
    WorkerGroup,
    WorkerSpec,
    current_context,
    register,
)
from runtime._batch_wire import receive_stats
from runtime.testing import InProcessBackend

BACKENDS = [
    pytest.param("inprocess", id="inprocess"),
    pytest.param("ray", id="ray", marks=pytest.mark.ray),
    pytest.param("monarch", id="monarch", marks=pytest.mark.monarch),
]


class JaggedWorker:
    """Echoes and transforms jagged columns on each rank."""

    @register(Dispatch.DP_COMPUTE_PROTO)
    def shift(self, data: Batch) -> Batch:
        """Each row + 100 * rank (in place, on the rank's own copy), plus its length."""
        seq = data.tensors["seq"]
        seq.values().add_(100 * current_context().rank)
        lengths = torch.tensor([int(row.shape[0]) for row in seq.unbind()])
        return Batch({"seq": seq, "length": lengths, "id": data.tensors["id"]}, meta=data.meta)

    @register(Dispatch.DP_COMPUTE_PROTO)
    def echo(self, data: Batch) -> Batch:
        """The rank's rows as they arrived (forwarded without reading them)."""
        return data

    @register(Dispatch.ONE_TO_ALL)
    def bump(self, data: Batch) -> list[float]:
        """Add the rank to every value in place, then report the sums each rank sees."""
        rank = current_context().rank
        data.tensors["x"] += rank
        data.tensors["seq"].values().add_(rank)
        return [float(data.tensors["x"].sum()), float(data.tensors["seq"].values().sum())]

    @register(Dispatch.ONE_TO_ALL)
    def describe(self, data: Batch) -> list[int]:
        """The row lengths this rank received."""
        return [int(row.shape[0]) for row in data.tensors["seq"].unbind()]


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    if request.param == "inprocess":
        inprocess = InProcessBackend()
        yield inprocess
        inprocess.shutdown()
        return
    if request.param == "monarch":
        pytest.importorskip(
            "monarch", reason="monarch is not installed; install it with: pip install '.[monarch]'"
        )
        from runtime_monarch import MonarchBackend

        with MonarchBackend() as monarch:
            yield monarch
        return
    pytest.importorskip("ray", reason="ray is not installed; install it with: pip install '.[ray]'")
    from tests._ray_session import ray_backend

    yield ray_backend()


@pytest.fixture(scope="module")
def jagged4(backend: Backend) -> Iterator[WorkerGroup[JaggedWorker]]:
    pool = ResourcePool.create([4], cpus_per_process=0.25)
    group = WorkerGroup(backend, WorkerSpec.of(JaggedWorker), pool, role="jagged")
    yield group
    group.shutdown()


def _rows(lengths: list[int]) -> list[torch.Tensor]:
    return [torch.full((n, 3), float(i)) for i, n in enumerate(lengths)]


def test_a_jagged_column_goes_through_dp_compute_proto_and_back(
    jagged4: WorkerGroup[JaggedWorker],
) -> None:
    lengths = [3, 0, 5, 1, 2, 7, 4, 1]
    rows = _rows(lengths)
    seq = torch.nested.nested_tensor(rows, layout=torch.jagged)
    data = Batch({"seq": seq, "id": torch.arange(8)}, meta={"step": 1})
    out = jagged4.call(JaggedWorker.shift, data)
    assert out.tensors["length"].tolist() == lengths
    assert out.tensors["id"].tolist() == list(range(8))
    assert out.meta == {"step": 1}
    for i, row in enumerate(out.tensors["seq"].unbind()):
        rank = i // 2
        assert torch.equal(row, rows[i] + 100 * rank)
    # The ranks changed their own copies only: the caller's column is untouched.
    assert all(torch.equal(a, b) for a, b in zip(seq.unbind(), rows, strict=True))


def test_every_rank_gets_the_whole_jagged_column(jagged4: WorkerGroup[JaggedWorker]) -> None:
    seq = torch.nested.nested_tensor(_rows([2, 4, 1]), layout=torch.jagged)
    assert jagged4.call(JaggedWorker.describe, Batch({"seq": seq})) == [[2, 4, 1]] * 4


def test_each_rank_writes_only_its_own_copy(jagged4: WorkerGroup[JaggedWorker]) -> None:
    seq = torch.nested.nested_tensor([torch.ones(2), torch.ones(3)], layout=torch.jagged)
    data = Batch({"x": torch.zeros(2, 2), "seq": seq})
    # Rank r sees only its own additions: 4 * r and 5 * (1 + r), never another rank's.
    assert jagged4.call(JaggedWorker.bump, data) == [[4.0 * r, 5.0 * (1 + r)] for r in range(4)]
    assert data.tensors["x"].sum() == 0


def test_driver_copies_each_result_buffer_at_most_once(
    jagged4: WorkerGroup[JaggedWorker], backend: Backend
) -> None:
    rows = [torch.full((n,), float(n)) for n in (1, 2, 3, 4, 5, 6, 7, 8)]
    data = Batch(
        {"x": torch.randn(8, 1024), "seq": torch.nested.nested_tensor(rows, layout=torch.jagged)}
    )
    before = receive_stats()
    out = jagged4.call(JaggedWorker.echo, data)
    after = receive_stats()
    counts = {k: after[k] - before[k] for k in after}
    assert out.equals(data)
    out.tensors["x"].add_(1)  # the concatenation's own memory: no further copy
    assert receive_stats()["copies"] == after["copies"]
    if not type(backend).__module__.startswith("runtime_ray"):
        # In-process ranks receive in this process, so their receives count here too; other
        # transports may hand over writable buffers. Either way: at most one copy per buffer.
        assert counts["copies"] <= counts["buffers"]
    else:
        # 4 results x 3 buffers (x, seq values, seq offsets), all read-only object-store
        # memory, none copied on receive: the concatenation is the one copy.
        assert counts == {"buffers": 12, "borrowed": 12, "copies": 0, "copied_bytes": 0}


@pytest.mark.ray
def test_the_object_store_is_never_written_through_a_batch() -> None:
    """Raw torch over an object-store buffer writes into the store (every later reader sees
    it); a received Batch copies first, so the stored object stays intact."""
    ray = pytest.importorskip("ray")
    from tests._ray_session import ray_backend

    ray_backend()  # the session's cluster, started if no test before needed it

    raw_ref = ray.put(np.zeros(4))
    stored = ray.get(raw_ref)
    assert not stored.flags.writeable
    with pytest.warns(UserWarning, match="not writable"):
        torch.from_numpy(stored).add_(1)
    assert ray.get(raw_ref).tolist() == [1.0] * 4  # the hazard: the store was changed

    ref = ray.put(Batch({"x": torch.zeros(4)}, {"n": np.zeros(4)}))
    first = ray.get(ref)
    first.tensors["x"].add_(1)
    first.non_tensors["n"] += 1
    again = ray.get(ref)
    assert again.tensors["x"].tolist() == [0.0] * 4
    assert again.non_tensors["n"].tolist() == [0.0] * 4


def test_a_jagged_column_is_padded_and_unpadded_by_the_dispatcher(
    jagged4: WorkerGroup[JaggedWorker],
) -> None:
    lengths = [2, 5, 0, 1, 3, 4, 1]  # 7 rows for 4 ranks: one padding row
    rows = _rows(lengths)
    seq = torch.nested.nested_tensor(rows, layout=torch.jagged)
    data = Batch({"seq": seq, "id": torch.arange(7)})
    out = jagged4.with_padding().call(JaggedWorker.echo, data)
    assert len(out) == 7
    assert out.tensors["id"].tolist() == list(range(7))
    for got, want in zip(out.tensors["seq"].unbind(), rows, strict=True):
        assert torch.equal(got, want)
