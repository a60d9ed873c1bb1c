"""The CPU clocks of the benchmarks (benchmarks/suite_cpu.py): real kernel accounting of this
process and of a real trainer's worker calls, and the pure arithmetic on top of it."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from benchmarks.suite_cpu import (
    CallClock,
    ClockedActor,
    Snapshot,
    call_clocks,
    clock_call,
    cores,
    median_cpu,
    snapshot,
    split_by_method,
    split_slow_rank,
    utilisation,
)
from ppo import PPOTrainer
from ppo.tokenizer import load_tokenizer
from runtime import WorkerSpec
from runtime.testing import InProcessBackend
from tests.trainer_support import tiny_config


def _spin(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_a_busy_block_is_on_cpu_and_a_sleeping_one_is_blocked() -> None:
    clocks: list[CallClock] = []
    with clock_call(clocks, "spin"):
        _spin(0.05)
    with clock_call(clocks, "sleep"):
        time.sleep(0.05)
    spin, sleep = clocks
    assert (spin.method, spin.pid) == ("spin", os.getpid())
    assert spin.on_cpu >= 0.045
    assert spin.process_cpu >= 0.045
    # The thread's on-CPU and run-queue time fit inside the block's wall time (to within one
    # run-queue wait straddling the start, which the kernel books when the wait ends).
    for c in clocks:
        assert c.on_cpu <= c.wall
        assert c.on_cpu + c.runqueue <= c.wall + 0.02
    assert sleep.blocked >= 0.045
    assert sleep.on_cpu < 0.01


def _clock(method: str, start: float, wall: float, cpu: float, runq: float) -> CallClock:
    return CallClock(method, 1, start, wall, cpu, runq, cpu)


def test_split_slow_rank_pairs_the_kth_calls_and_splits_the_excess() -> None:
    rank0 = [_clock("update", 10.0, 1.0, 0.8, 0.1), _clock("gen", 12.0, 0.5, 0.5, 0.0)]
    rank1 = [_clock("update", 10.2, 1.6, 0.9, 0.5), _clock("gen", 12.0, 0.3, 0.3, 0.0)]
    out = split_slow_rank([rank0, rank1], (9.0, 13.0))
    assert out["calls"] == 2
    assert out["excess"] == pytest.approx(0.6 + 0.2)
    assert out["more_cpu"] == pytest.approx(0.1 + 0.2)
    assert out["more_runqueue"] == pytest.approx(0.4)
    assert out["more_blocked"] == pytest.approx(0.1)  # 1.6-0.9-0.5 vs 1.0-0.8-0.1
    assert out["start_skew"] == pytest.approx(0.2)
    assert out["excess"] == pytest.approx(
        out["more_cpu"] + out["more_runqueue"] + out["more_blocked"]
    )
    assert split_slow_rank([rank0, rank1], (11.0, 11.5))["calls"] == 0  # none starts inside
    by_method = split_by_method([rank0, rank1], (9.0, 13.0))
    assert sorted(by_method) == ["gen", "update"]
    assert by_method["gen"]["more_cpu"] == pytest.approx(0.2)
    assert by_method["update"]["more_runqueue"] == pytest.approx(0.4)


def test_utilisation_shares_the_cores_between_groups() -> None:
    n = cores()
    before = Snapshot(
        time=100.0,
        cpu={1: 5.0, 2: 1.0, 3: 0.0},
        runqueue={1: 0.0, 2: 0.0, 3: 0.0},
        machine_busy=10.0,
        machine_idle=50.0,
    )
    after = Snapshot(
        time=102.0,
        cpu={1: 6.0, 2: 2.0, 3: 0.5, 4: 9.0},
        runqueue={1: 0.2, 2: 0.1, 3: 0.0, 4: 0.0},
        machine_busy=13.0,
        machine_idle=51.0,
    )
    out = utilisation(before, after, {"driver": [1], "workers": [2]})
    assert out["driver"] == pytest.approx(1.0 / (2 * n))
    assert out["workers"] == pytest.approx(1.0 / (2 * n))
    assert out["other"] == pytest.approx(0.5 / (2 * n))  # pid 4 started inside: not counted
    assert out["total"] == pytest.approx(2.5 / (2 * n))
    assert out["driver_runqueue_s"] == pytest.approx(0.2)
    assert out["machine"] == pytest.approx(3.0 / 4.0)
    with pytest.raises(ValueError, match="later"):
        utilisation(after, before, {})


def test_snapshot_reads_this_process_cpu() -> None:
    first = snapshot()
    _spin(0.1)
    second = snapshot()
    me = os.getpid()
    assert second.cpu[me] - first.cpu[me] >= 0.08  # clock ticks: 10 ms resolution
    shares = utilisation(first, second, {"me": [me]})
    assert shares["me"] > 0
    assert 0 < shares["machine"] <= 1


def test_clocked_actor_records_every_data_parallel_call_of_a_real_run(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, ["trainer.test_freq=0", "trainer.save_freq=0"])
    tok = load_tokenizer(None)
    spec = WorkerSpec.of(ClockedActor, cfg, tok)
    with PPOTrainer(backend=InProcessBackend(), config=cfg, tokenizer=tok, actor_spec=spec) as t:
        t.fit()
        assert t.actor is not None
        (clocks,) = t.actor.run_function(call_clocks)
    steps = cfg.trainer.total_steps
    methods = [c.method for c in clocks]
    for name in ("generate", "compute_log_prob", "update_policy"):
        assert methods.count(name) == steps, name
    for c in clocks:
        assert c.wall > 0
        assert 0 <= c.on_cpu <= c.wall + 2e-3
        assert c.runqueue >= 0
    with pytest.raises(TypeError, match="not a clocked worker"):
        call_clocks(object())


def test_median_cpu_is_per_method_over_every_rank_in_the_window() -> None:
    clocks = [
        [_clock("generate", 1.0, 0.1, 0.02, 0.0), _clock("update_policy", 2.0, 0.1, 0.05, 0.0)],
        [_clock("generate", 1.0, 0.1, 0.04, 0.0), _clock("generate", 9.0, 0.1, 0.5, 0.0)],
        [_clock("generate", 1.5, 0.1, 0.03, 0.0)],
    ]
    # The call started at 9.0 is outside the window.
    assert median_cpu(clocks, (0.0, 5.0)) == {"generate": 0.03, "update_policy": 0.05}
