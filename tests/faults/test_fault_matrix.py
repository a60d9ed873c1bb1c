"""The fault matrix: each failure mode on every backend of ``conftest.py``.

Each case checks the error's type, the role/rank/method it names, how fast it surfaced
(recorded as the ``surfaced_s`` property: ``pytest -m faults --junitxml=...`` keeps them), and
that nothing is left behind (:class:`tests.faults._support.LeakProbe`: Ray's live actors and
placement groups, other backends' processes). Faults go through the shipped fault hooks
(``faults``: the in-process backend's injection, real sleeps elsewhere) and real SIGKILLs.
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Callable

import pytest
import torch

from runtime import Backend, Batch, SpawnOptions, WorkerGroup, WorkerSpec, fuse
from runtime.errors import (
    CallTimeoutError,
    PlacementError,
    RemoteMethodError,
    WorkerDiedError,
    WorkerStartError,
)
from runtime.testing import InProcessBackend
from runtime.testing.conformance import FaultHook, cpu_pool
from runtime.testing.conformance.workers import Actor, BadInit, Calc, Critic, FaultWorker
from tests.faults._support import (
    KILL_SURFACE_S,
    LeakProbe,
    MidCallKill,
    unplaceable_pool,
)
from tests.faults.workers import SlowStart, explode

pytestmark = pytest.mark.faults

#: pytest's ``record_property`` fixture.
RecordProperty = Callable[[str, object], None]

#: A remote error (method raised, deadline expired) reaches the driver within this long.
ERROR_SURFACE_S = 5.0
#: The per-call deadline of the hung-rank case.
DEADLINE_S = 1.0
#: The start deadline of the hanging-constructor case.
START_DEADLINE_S = 3.0


@pytest.fixture
def probe(backend: Backend) -> LeakProbe:
    """Counts taken before the case; the case calls ``probe.assert_clean()`` at its end."""
    return LeakProbe(backend)


def test_a_rank_killed_mid_call(
    backend: Backend, faults: FaultHook, probe: LeakProbe, record_property: RecordProperty
) -> None:
    group = WorkerGroup(backend, WorkerSpec.of(FaultWorker), cpu_pool(2), role="victim")
    try:
        assert group.call(FaultWorker.work, 0) == [0, 1]
        kill = MidCallKill.arm(backend, group, faults, rank=1)
        start = time.monotonic()
        future = group.submit(FaultWorker.work, 0)
        start = max(start, kill.fire())
        with pytest.raises(WorkerDiedError) as info:
            future.get(timeout=60)
        surfaced = time.monotonic() - start
        record_property("surfaced_s", round(surfaced, 3))
        err = info.value
        assert (err.role, err.rank, err.method) == ("victim", 1, "work")
        assert err.node
        assert surfaced <= KILL_SURFACE_S, f"the death surfaced after {surfaced:.1f} s"
        with pytest.raises(WorkerDiedError):
            group.check_alive()
    finally:
        group.shutdown()
    probe.assert_clean()


def test_a_hung_rank_under_a_deadline(
    backend: Backend, faults: FaultHook, probe: LeakProbe, record_property: RecordProperty
) -> None:
    group = WorkerGroup(backend, WorkerSpec.of(FaultWorker), cpu_pool(2), role="sleeper")
    try:
        faults.hang(group, 0)
        start = time.monotonic()
        with pytest.raises(CallTimeoutError) as info:
            group.with_timeout(DEADLINE_S).call(FaultWorker.work, 1)
        waited = time.monotonic() - start
        record_property("surfaced_s", round(waited, 3))
        err = info.value
        assert (err.role, err.method, err.pending_ranks) == ("sleeper", "work", (0,))
        assert "[0]" in str(err)
        # In-process the hang is injected and answers at once; elsewhere the deadline is waited.
        low = 0.0 if isinstance(backend, InProcessBackend) else DEADLINE_S * 0.9
        assert low <= waited <= DEADLINE_S + ERROR_SURFACE_S, f"surfaced after {waited:.1f} s"
    finally:
        group.shutdown()  # stops the hung rank too
    probe.assert_clean()


def test_a_raising_method(
    backend: Backend, probe: LeakProbe, record_property: RecordProperty
) -> None:
    group = WorkerGroup(backend, WorkerSpec.of(Calc), cpu_pool(2), role="thrower")
    try:
        start = time.monotonic()
        with pytest.raises(RemoteMethodError) as info:
            group.call(Calc.boom, 1, "bad input on one")
        record_property("surfaced_s", round(time.monotonic() - start, 3))
        assert time.monotonic() - start <= ERROR_SURFACE_S
        err = info.value
        assert (err.role, err.rank, err.method) == ("thrower", 1, "boom")
        assert (err.remote_type, err.remote_message) == ("ValueError", "bad input on one")
        assert "Traceback" in err.remote_traceback
        assert "in boom" in err.remote_traceback
        again = pickle.loads(pickle.dumps(err))
        assert (again.remote_type, again.rank, again.method) == ("ValueError", 1, "boom")
        assert group.call(Calc.add, 1) == [1, 2]  # still usable (x + rank)
    finally:
        group.shutdown()
    probe.assert_clean()


def test_a_constructor_that_raises(
    backend: Backend, probe: LeakProbe, record_property: RecordProperty
) -> None:
    start = time.monotonic()
    with pytest.raises(WorkerStartError) as info:
        WorkerGroup(backend, WorkerSpec.of(BadInit, fail_rank=1), cpu_pool(2), role="starter")
    record_property("surfaced_s", round(time.monotonic() - start, 3))
    assert time.monotonic() - start <= 60
    err = info.value
    assert (err.role, err.rank) == ("starter", 1)
    assert "constructor refused on rank 1" in str(err)
    assert "ValueError" in str(err)
    probe.assert_clean()


def test_a_constructor_that_hangs(
    backend: Backend, probe: LeakProbe, record_property: RecordProperty
) -> None:
    if isinstance(backend, InProcessBackend):
        pytest.skip("the in-process backend runs constructors inline: it has no start deadline")
    start = time.monotonic()
    with pytest.raises(WorkerStartError) as info:
        WorkerGroup(
            backend,
            WorkerSpec.of(SlowStart, 600.0),
            cpu_pool(2),
            role="stuck",
            options=SpawnOptions(start_timeout=START_DEADLINE_S),
        )
    waited = time.monotonic() - start
    record_property("surfaced_s", round(waited, 3))
    err = info.value
    assert (err.role, err.rank, err.method) == ("stuck", 0, "__init__")
    assert f"start_timeout={START_DEADLINE_S:g} s" in str(err)
    assert "rank(s) [0, 1]" in str(err)
    assert START_DEADLINE_S * 0.9 <= waited <= START_DEADLINE_S + 20, f"{waited:.1f} s"
    probe.assert_clean()


def test_an_unsatisfiable_placement(backend: Backend, probe: LeakProbe) -> None:
    pool = unplaceable_pool(backend)
    start = time.monotonic()
    with pytest.raises(PlacementError) as info:
        WorkerGroup(backend, WorkerSpec.of(Calc), pool, options=SpawnOptions(start_timeout=1.0))
    assert time.monotonic() - start <= 1.0 + ERROR_SURFACE_S
    assert str(pool.devices_per_process) in str(info.value)
    probe.assert_clean()


def test_one_fused_role_raising_while_its_siblings_work(backend: Backend, probe: LeakProbe) -> None:
    group = fuse(
        backend,
        {"actor": WorkerSpec.of(Actor), "critic": WorkerSpec.of(Critic, {"b": 10.0})},
        cpu_pool(2),
    )
    try:
        actor, critic = group.view("actor", Actor), group.view("critic", Critic)
        start = time.monotonic()
        with pytest.raises(RemoteMethodError) as info:
            actor.call(Actor.fail, "actor broke")
        assert time.monotonic() - start <= ERROR_SURFACE_S
        err = info.value
        assert (err.role, err.rank, err.method) == ("actor", 0, "fail")
        assert (err.remote_type, err.remote_message) == ("RuntimeError", "actor broke")
        # The sibling role on the same ranks, and the failed role itself, keep working.
        assert critic.call_per_rank(Critic.dec, [Critic.dec.bind(v) for v in (1.0, 2.0)]) == [
            -9.0,
            -8.0,
        ]
        out = critic.call(Critic.sub, Batch({"a": torch.zeros(4)}))
        assert out.tensors["a"].tolist() == [-10.0] * 4
        assert actor.call(Actor.inc, 0.5) == [0.5, 1.5]
    finally:
        group.shutdown()
    probe.assert_clean()


def test_a_chained_future_whose_producer_failed(backend: Backend, probe: LeakProbe) -> None:
    producer = WorkerGroup(backend, WorkerSpec.of(Calc), cpu_pool(2), role="producer")
    consumer = WorkerGroup(backend, WorkerSpec.of(Calc), cpu_pool(2), role="consumer")
    try:
        start = time.monotonic()
        first = producer.submit(Calc.apply, explode, Batch({"a": torch.arange(4)}))
        second = consumer.submit(Calc.add_initial, first, initial_value=1)
        with pytest.raises(RemoteMethodError) as info:
            second.get(timeout=60)
        assert time.monotonic() - start <= ERROR_SURFACE_S
        err = info.value
        assert (err.role, err.method) == ("producer", "apply")
        assert (err.remote_type, err.remote_message) == (
            "ValueError",
            "producer exploded on 2 rows",
        )
        # Both groups are still usable.
        again = consumer.call(Calc.add_initial, Batch({"a": torch.arange(4)}), initial_value=1)
        assert again.tensors["a"].tolist() == [1, 2, 4, 5]
        assert producer.call(Calc.add, 0) == [0, 1]
    finally:
        producer.shutdown()
        consumer.shutdown()
    probe.assert_clean()
