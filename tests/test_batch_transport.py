"""Batches through real group calls: jagged columns and the receive copy rule, per backend.

Parametrized over the in-process backend and the session's Ray cluster (marked ``ray``):
each test runs real worker processes/actors and checks what comes back to the driver.
"""

from __future__ import annotations

from collections.abc import Iterator

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
from runtime.testing import InProcessBackend

BACKENDS = [
    pytest.param("inprocess", id="inprocess"),
    pytest.param("ray", id="ray", marks=pytest.mark.ray),
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
