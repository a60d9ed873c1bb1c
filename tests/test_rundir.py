"""Run directories never lose data: ownership, pruning, the latest pointer, files written on
interruption, a metrics file cut by a kill (in-process backend, real training)."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from ppo import PPOTrainer, load_config
from ppo.checkpoint import CheckpointError, CheckpointManager
from ppo.config import config_to_dict
from ppo.metrics import read_metrics
from ppo.rundir import RunDirError, repair_metrics, to_toml
from runtime.testing import InProcessBackend
from tests.trainer_support import tiny_config, varied_reward


def _train(run_dir: Path, *extra: str) -> list[dict[str, object]]:
    cfg = tiny_config(run_dir, ["trainer.save_freq=2", *extra])
    with PPOTrainer(backend=InProcessBackend(), config=cfg, reward_fn=varied_reward) as t:
        return t.fit()


def _snapshot(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}


def test_reusing_a_run_dir_refuses_resumes_or_moves_the_old_run_aside(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _train(run, "trainer.total_steps=4")  # the "demo": checkpoints step_2 and step_4
    before = _snapshot(run)
    assert (run / "checkpoints" / "latest").read_text().strip() == "step_4"

    # A fresh, shorter run in the same directory is refused; nothing is touched.
    with pytest.raises(RunDirError, match=r"holds another run.*step_4.*trainer\.overwrite"):
        _train(run, "trainer.total_steps=2", "trainer.resume='off'")
    assert _snapshot(run) == before

    # resume='auto' continues the run: already at step 4, nothing to do, nothing lost.
    assert _train(run, "trainer.total_steps=2") == []
    assert (run / "checkpoints" / "latest").read_text().strip() == "step_4"
    assert [r["step"] for r in read_metrics(run / "metrics.jsonl")] == [0, 1, 2, 3, 4]

    # overwrite=true moves the old run aside (kept byte for byte) and starts afresh.
    _train(run, "trainer.total_steps=2", "trainer.resume='off'", "trainer.overwrite=true")
    (aside,) = tmp_path.glob("run.old-*")
    old = _snapshot(aside)
    assert {k: v for k, v in old.items() if k.startswith(("checkpoints", "metrics"))} == {
        k: v for k, v in before.items() if k.startswith(("checkpoints", "metrics"))
    }
    latest = (run / "checkpoints" / "latest").read_text().strip()
    assert latest == "step_2"
    assert (run / "checkpoints" / latest / "actor").is_dir()
    assert [r["step"] for r in read_metrics(run / "metrics.jsonl")] == [0, 1, 2]


def _save(manager: CheckpointManager, step: int) -> Path:
    def parts(directory: Path) -> None:
        (directory / "actor.pt").write_bytes(b"weights of step %d" % step)

    return manager.save(step, {"step": step}, parts)


def test_pruning_only_removes_the_current_runs_older_checkpoints(tmp_path: Path) -> None:
    first = CheckpointManager(tmp_path, keep_last=2)
    for step in (50, 100, 550, 600):
        _save(first, step)
    assert sorted(p.name for p in first.root.glob("step_*")) == ["step_550", "step_600"]
    # Another run (other id) writing low step numbers in the same place: the reuse bug.
    second = CheckpointManager(tmp_path, keep_last=2)
    for step in (50, 100, 150):
        _save(second, step)
        assert second.latest() == second.root / f"step_{step}"
    names = sorted(p.name for p in second.root.glob("step_*"))
    assert names == ["step_100", "step_150", "step_550", "step_600"]
    # Replacing another run's step_<N> is refused.
    with pytest.raises(CheckpointError, match="belongs to another run"):
        _save(second, 600)


def test_a_latest_pointer_to_a_missing_checkpoint_is_reported(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path)
    _save(manager, 2)
    (manager.root / "latest").write_text("step_9\n")
    with pytest.raises(CheckpointError, match=r"names 'step_9'.*\['step_2'\]"):
        manager.resolve("auto")


def test_config_and_summary_are_written_when_interrupted(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, ["trainer.total_steps=4"])

    def stop(row: dict[str, object]) -> None:
        if row["step"] == 2:
            raise KeyboardInterrupt

    trainer = PPOTrainer(
        backend=InProcessBackend(), config=cfg, reward_fn=varied_reward, on_step=stop
    )
    with trainer, pytest.raises(KeyboardInterrupt):
        trainer.fit()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    assert summary["step"] == 2
    assert summary["latest_checkpoint"].endswith("step_2")
    assert (tmp_path / "reward_curve.png").stat().st_size > 1000
    assert load_config(tmp_path / "config.toml") == cfg


def test_to_toml_round_trips_nested_tables_and_special_values() -> None:
    cfg = load_config(None, ["data.task_kwargs.digits=2", "trainer.call_timeout=1.5"])
    text = to_toml(config_to_dict(cfg))
    assert tomllib.loads(text)["data"]["task_kwargs"] == {"digits": 2}
    assert load_config(None, []) != cfg
    doc = to_toml({"a": {"x": float("inf"), "y": None, "name with space": 'q"uote'}})
    assert tomllib.loads(doc) == {"a": {"x": float("inf"), "name with space": 'q"uote'}}
    assert "# y is unset (None)" in doc


def test_a_metrics_line_cut_by_a_kill_is_dropped_and_the_run_resumes(tmp_path: Path) -> None:
    _train(tmp_path, "trainer.total_steps=2")
    metrics = tmp_path / "metrics.jsonl"
    with open(metrics, "a") as fh:
        fh.write('{"step": 3, "reward/me')  # the kill hit mid-write
    _train(tmp_path, "trainer.total_steps=3")
    assert [r["step"] for r in read_metrics(metrics)] == [0, 1, 2, 3]


def test_a_broken_metrics_line_in_the_middle_is_reported_not_dropped(tmp_path: Path) -> None:
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text('{"step": 1}\n{"step": 2, "re\n{"step": 3}\n')
    before = metrics.read_bytes()
    with pytest.raises(RunDirError, match="line 2 is not valid JSON"):
        repair_metrics(metrics)
    assert metrics.read_bytes() == before


def test_run_dir_naming_an_existing_file_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    with pytest.raises(RunDirError, match=r"notes\.txt.*existing file.*trainer\.run_dir"):
        PPOTrainer(backend=InProcessBackend(), config=tiny_config(target))
    assert target.read_text() == "mine"
