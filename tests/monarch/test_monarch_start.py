"""MonarchBackend start failures that the shared conformance suite cannot express (the
in-process backend runs constructors inline, so it has no start deadline)."""

from __future__ import annotations

import time

import pytest

from runtime import ResourcePool, SpawnOptions, WorkerGroup, WorkerSpec
from runtime.errors import WorkerStartError
from tests.monarch.workers import Sleepy

pytestmark = pytest.mark.monarch


def test_hanging_constructor_is_a_worker_start_error() -> None:
    from runtime_monarch import MonarchBackend

    with MonarchBackend() as backend:
        start = time.monotonic()
        with pytest.raises(WorkerStartError) as info:
            WorkerGroup(
                backend,
                WorkerSpec.of(Sleepy, 600.0),
                ResourcePool.create([2]),
                options=SpawnOptions(start_timeout=4.0),
            )
        assert 3.9 < time.monotonic() - start < 30  # the start deadline, not the 600 s sleep
        err = info.value
        assert (err.role, err.rank, err.method) == ("sleepy", 0, "__init__")
        assert "did not finish within start_timeout=4 s" in str(err)
        assert "rank(s) [0, 1]" in str(err)
        # The hung processes were stopped: a new group on the same backend starts normally.
        group = WorkerGroup(backend, WorkerSpec.of(Sleepy, 0.0), ResourcePool.create([1]))
        assert group.call(Sleepy.noop) == [None]
        group.shutdown()
