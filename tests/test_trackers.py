"""Experiment trackers: config validation, and a real tiny run read back from each tracker's store.

One module-scoped training run (in-process backend) logs to every tracker whose library is
installed; each test then reads what its tracker stored (TensorBoard event files, the offline
W&B run file, the local MLflow store) and compares it with ``metrics.jsonl``, row by row.
"""

from __future__ import annotations

import glob
import importlib
import importlib.util
import json
import math
import struct
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from ppo import ConfigError, PPOTrainer, load_config
from ppo.metrics import read_metrics
from ppo.trackers import (
    TRACKER_EXTRAS,
    ConsoleTracker,
    JsonlTracker,
    Tracker,
    flatten_params,
    make_trackers,
    mlflow_key,
    scalar_items,
)
from rlrun.__main__ import main as rlrun_main
from runtime.testing import InProcessBackend
from tests.trainer_support import tiny_config, varied_reward

OPTIONAL = ("tensorboard", "wandb", "mlflow")


def _installed(name: str) -> bool:
    return importlib.util.find_spec(TRACKER_EXTRAS[name][0]) is not None


def _numeric(rows: list[dict[str, Any]]) -> dict[tuple[int, str], float]:
    """{(step, metric): value} of every finite number in ``rows`` (the expected values)."""
    return {(int(r["step"]), k): v for r in rows for k, v in scalar_items(r) if math.isfinite(v)}


class RecordingTracker:
    """A user tracker (no base class): keeps what it was given."""

    def __init__(self) -> None:
        self.params: dict[str, Any] = {}
        self.rows: list[tuple[int, dict[str, Any]]] = []
        self.closed = 0

    def log_params(self, params: Mapping[str, Any]) -> None:
        self.params.update(params)

    def log(self, row: Mapping[str, Any], step: int) -> None:
        self.rows.append((step, dict(row)))

    def close(self) -> None:
        self.closed += 1


class TinyRun:
    def __init__(self, run_dir: Path, loggers: list[str], user: RecordingTracker) -> None:
        self.run_dir = run_dir
        self.loggers = loggers
        self.user = user
        self.rows = read_metrics(run_dir / "metrics.jsonl")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TinyRun]:
    """A 3-step GRPO run logging to console, jsonl, a user tracker and every installed extra."""
    run_dir = tmp_path_factory.mktemp("tracked") / "run"
    home = tmp_path_factory.mktemp("home")
    loggers = ["console", *[n for n in OPTIONAL if _installed(n)]]
    with pytest.MonkeyPatch.context() as mp:
        for var in ("WANDB_MODE", "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME"):
            mp.delenv(var, raising=False)
        # Keep W&B's per-user files out of the real home directory; no network either way.
        for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
            mp.setenv(var, str(home / var.lower()))
        mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        user = RecordingTracker()
        cfg = tiny_config(run_dir, [f"trainer.loggers={json.dumps(loggers)}"])
        with PPOTrainer(
            backend=InProcessBackend(), config=cfg, reward_fn=varied_reward, trackers=[user]
        ) as trainer:
            trainer.fit()
        yield TinyRun(run_dir, loggers, user)


# ----------------------------------------------------------------------------- configuration


def test_default_loggers_are_console_and_jsonl() -> None:
    assert load_config(None, []).trainer.loggers == ("console", "jsonl")


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ('["console", "bogus"]', "'bogus' is not a tracker"),
        ('["jsonl", "jsonl"]', "['jsonl'] listed more than once"),
        ("3", "expected a list of tracker names"),
    ],
)
def test_bad_loggers_name_the_field_and_the_choices(value: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=r"trainer\.loggers") as info:
        load_config(None, [f"trainer.loggers={value}"])
    assert needle in str(info.value)


def test_a_missing_extra_names_the_pip_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(TRACKER_EXTRAS, "wandb", ("no_such_module_for_this_test", "wandb"))
    with pytest.raises(ConfigError) as info:
        load_config(None, ['trainer.loggers=["wandb"]'])
    message = str(info.value)
    assert "pip install 'rlruntime[wandb]'" in message
    assert "\n" not in message


def test_cli_answers_a_bad_logger_with_one_line_and_status_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert rlrun_main(["--backend", "inprocess", 'trainer.loggers=["tensorbord"]']) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "'tensorbord' is not a tracker" in err[0]


def test_unknown_name_in_make_trackers_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown tracker 'nope'"):
        make_trackers(["console", "nope"], tmp_path, run_name="r", config_dict={})


def test_jsonl_is_always_made(tmp_path: Path) -> None:
    trackers = make_trackers(["console"], tmp_path, run_name="r", config_dict={})
    assert [type(t) for t in trackers] == [JsonlTracker, ConsoleTracker]


def test_flatten_params() -> None:
    flat = flatten_params({"trainer": {"seed": 0, "loggers": ["jsonl"]}, "data": {"kw": {}}})
    assert flat == {"trainer.seed": 0, "trainer.loggers": '["jsonl"]', "data.kw": "{}"}


def test_mlflow_key_keeps_slashes_and_replaces_what_mlflow_rejects() -> None:
    assert mlflow_key("critic/score/mean") == "critic/score/mean"
    assert mlflow_key("val-core/addition/acc/mean@1") == "val-core/addition/acc/mean_1"


def test_built_in_and_user_trackers_satisfy_the_protocol() -> None:
    assert isinstance(RecordingTracker(), Tracker)
    assert isinstance(ConsoleTracker(), Tracker)


# ----------------------------------------------------------------------------- a real run


def test_metrics_jsonl_and_user_tracker_get_every_row(tiny_run: TinyRun) -> None:
    assert [r["step"] for r in tiny_run.rows] == [0, 1, 2, 3]
    user = tiny_run.user
    assert [s for s, _ in user.rows] == [0, 1, 2, 3]
    assert _numeric([row for _, row in user.rows]) == _numeric(tiny_run.rows)
    assert user.params["trainer.total_steps"] == 3
    assert user.params["model.config.hidden_size"] == 32
    assert user.closed == 1


def test_tensorboard_events_hold_the_same_metrics(tiny_run: TinyRun) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tiny_run.run_dir / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    logged = {
        (event.step, tag): event.value
        for tag in acc.Tags()["scalars"]
        for event in acc.Scalars(tag)
    }
    expected = _numeric(tiny_run.rows)
    assert set(logged) == set(expected)
    for key, value in expected.items():
        assert logged[key] == pytest.approx(value, rel=1e-6, abs=1e-6), key  # stored as float32
    text = acc.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "| trainer.total_steps | 3 |" in text


def test_tensorboard_after_a_resume_shows_each_step_once(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from ppo.trackers import TensorBoardTracker

    crashed = TensorBoardTracker(tmp_path)  # an interrupted run: steps 0-5, checkpoint at 2
    for step in range(6):
        crashed.log({"step": step, "critic/score/mean": 0.1 * step}, step)
    crashed.close()
    resumed = TensorBoardTracker(tmp_path)
    for step in (3, 4):
        resumed.log({"step": step, "critic/score/mean": 1.0 + step}, step)
    resumed.close()
    acc = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0})
    acc.Reload()
    points = [(e.step, round(e.value, 4)) for e in acc.Scalars("critic/score/mean")]
    assert points == [(0, 0.0), (1, 0.1), (2, 0.2), (3, 4.0), (4, 5.0)]


def _wandb_records(path: Path) -> list[bytes]:
    """The records of a W&B run file (a LevelDB-style log: 32 KiB blocks of framed chunks)."""
    data = path.read_bytes()
    assert data[:4] == b":W&B", "not a W&B run file"
    block, pos, out, pending = 32768, 7, [], b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if length == 0 and kind == 0:  # block padding
            pos += left
            continue
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST chunk ends a record
            out.append(pending)
            pending = b""
    return out


def test_wandb_offline_run_holds_the_same_metrics(tiny_run: TinyRun) -> None:
    pytest.importorskip("wandb")
    proto = importlib.import_module("wandb.proto.wandb_internal_pb2")
    files = glob.glob(str(tiny_run.run_dir / "wandb" / "offline-run-*" / "run-*.wandb"))
    assert len(files) == 1, files
    logged: dict[tuple[int, str], float] = {}
    config: dict[str, Any] = {}
    for raw in _wandb_records(Path(files[0])):
        record: Any = proto.Record()
        record.ParseFromString(raw)
        kind = record.WhichOneof("record_type")
        if kind == "history":
            for item in record.history.item:
                # Keys with slashes are stored split, as nested_key.
                key = item.key or "/".join(item.nested_key)
                if not key.startswith("_"):
                    logged[(int(record.history.step.num), key)] = json.loads(item.value_json)
        elif kind == "config":
            config.update({i.key: json.loads(i.value_json) for i in record.config.update})
    assert logged == pytest.approx(_numeric(tiny_run.rows))
    assert config["trainer.total_steps"] == 3


def test_mlflow_local_store_holds_the_same_metrics(tiny_run: TinyRun) -> None:
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tiny_run.run_dir.resolve() / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("rlruntime")
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "run"
    expected = _numeric(tiny_run.rows)
    logged = {
        (m.step, key): m.value
        for key in {k for _, k in expected}
        for m in client.get_metric_history(run.info.run_id, mlflow_key(key))
    }
    assert logged == pytest.approx(expected)
    assert run.data.params["trainer.total_steps"] == "3"
    assert json.loads(run.data.params["trainer.loggers"]) == tiny_run.loggers
