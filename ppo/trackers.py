"""Experiment trackers: where each step's metrics row goes (``trainer.loggers``).

A tracker is anything with the three methods of :class:`Tracker`. The trainer makes its
trackers when it is built (so a bad or missing one fails before any worker starts), calls
``log_params`` once with the resolved configuration, ``log`` once per row (every step, and the
validation row of step 0), and ``close`` from ``PPOTrainer.close`` (the end of its ``with``
block). Built-in trackers, by name:

===============  ========================================================================
``console``      one summary line per row (:func:`ppo.metrics.summary_line`)
``jsonl``        ``<run_dir>/metrics.jsonl``, the run's own record; always made, since
                 resume and the figures read it
``tensorboard``  event files under ``<run_dir>/tensorboard`` (``torch.utils.tensorboard``)
``wandb``        a Weights & Biases run under ``<run_dir>/wandb``, offline unless
                 ``WANDB_MODE=online``
``mlflow``       an MLflow run in ``sqlite:///<run_dir>/mlflow.db`` unless
                 ``MLFLOW_TRACKING_URI`` names another store
===============  ========================================================================

The libraries behind ``tensorboard``, ``wandb`` and ``mlflow`` are optional extras, imported
only when such a tracker is made; a missing one raises :class:`ppo.config.ConfigError` naming
the ``pip install`` that fixes it. None of them reaches the network by default: W&B runs
offline and MLflow's usage telemetry is switched off (``MLFLOW_DISABLE_TELEMETRY``), unless
the user's environment already sets those variables.

Your own tracker needs no base class::

    class PrintTracker:
        def log_params(self, params): print(params)
        def log(self, row, step): print(step, row)
        def close(self): pass

    PPOTrainer(backend=..., config=..., trackers=[PrintTracker()])
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from tqdm import tqdm

from ppo.config import ConfigError
from ppo.metrics import MetricsWriter, summary_line

if TYPE_CHECKING:
    from mlflow.entities import RunOperations
    from torch.utils.tensorboard import SummaryWriter

__all__ = [
    "TRACKER_EXTRAS",
    "TRACKER_NAMES",
    "CallbackTracker",
    "ConsoleTracker",
    "JsonlTracker",
    "MlflowTracker",
    "TensorBoardTracker",
    "Tracker",
    "WandbTracker",
    "flatten_params",
    "make_trackers",
    "missing_extra",
    "mlflow_key",
    "scalar_items",
]

#: Every name ``trainer.loggers`` accepts, in the order the docs list them.
TRACKER_NAMES = ("console", "jsonl", "tensorboard", "wandb", "mlflow")

#: For each tracker backed by an optional library: (module to import, the extra that installs it).
TRACKER_EXTRAS: dict[str, tuple[str, str]] = {
    "tensorboard": ("tensorboard", "tensorboard"),
    "wandb": ("wandb", "wandb"),
    "mlflow": ("mlflow", "mlflow"),
}


@runtime_checkable
class Tracker(Protocol):
    """Receives a run's parameters once and its metrics rows step by step.

    ``log_params(params)``: the resolved configuration, flattened to ``"section.field"`` keys.
    ``log(row, step)``: one metrics row (metric name -> number, or None for a value that was
    not finite); ``row`` also holds the plain ``"step"`` key. Steps only grow within one run.
    ``close()``: flush and release everything; called once, after the last ``log``.
    """

    def log_params(self, params: Mapping[str, Any]) -> None: ...

    def log(self, row: Mapping[str, Any], step: int) -> None: ...

    def close(self) -> None: ...


def missing_extra(name: str) -> str | None:
    """The one-line fix when tracker ``name``'s library is not installed, else None."""
    if name not in TRACKER_EXTRAS:
        return None
    module, extra = TRACKER_EXTRAS[name]
    if importlib.util.find_spec(module) is not None:
        return None
    return (
        f"trainer.loggers includes {name!r} but {module!r} is not installed: "
        f"pip install 'rlruntime[{extra}]'"
    )


def _require(name: str) -> None:
    message = missing_extra(name)
    if message is not None:
        raise ConfigError(message)


def flatten_params(config_dict: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"trainer": {"seed": 0}}`` -> ``{"trainer.seed": 0}``; sequences become JSON text."""
    out: dict[str, Any] = {}
    for key, value in config_dict.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten_params(value, f"{name}."))
        elif isinstance(value, list | tuple | Mapping):
            out[name] = json.dumps(value, default=str)
        else:
            out[name] = value
    return out


def scalar_items(row: Mapping[str, Any]) -> Iterable[tuple[str, float]]:
    """The numeric metrics of ``row`` as floats: skips ``step``, None, bools and non-numbers."""
    for key, value in row.items():
        if key == "step" or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        yield key, float(value)


# ---------------------------------------------------------------------------------- built-ins


class CallbackTracker:
    """Hands every metrics row to ``callback(row)``: a per-step hook that, unlike
    ``PPOTrainer(on_step=...)``, lets ``fit`` start the next step's update while it runs (with
    ``trainer.pipeline_steps``), so it must not act on the ranks' policy (checkpoint, validate,
    export); use it to clock, count or forward rows."""

    def __init__(self, callback: Callable[[Mapping[str, Any]], None]) -> None:
        self.callback = callback

    def log_params(self, params: Mapping[str, Any]) -> None:
        pass

    def log(self, row: Mapping[str, Any], step: int) -> None:
        self.callback(row)

    def close(self) -> None:
        pass


class ConsoleTracker:
    """Prints :func:`ppo.metrics.summary_line` of each row (through tqdm, under the bar)."""

    def log_params(self, params: Mapping[str, Any]) -> None:
        return None

    def log(self, row: Mapping[str, Any], step: int) -> None:
        tqdm.write(summary_line(row))

    def close(self) -> None:
        return None


class JsonlTracker:
    """Appends each row to ``metrics.jsonl`` (non-finite floats become null)."""

    def __init__(self, path: str | Path) -> None:
        self.writer = MetricsWriter(path)

    def log_params(self, params: Mapping[str, Any]) -> None:
        return None

    def log(self, row: Mapping[str, Any], step: int) -> None:
        self.writer.write(row)

    def close(self) -> None:
        return None


class TensorBoardTracker:
    """Scalars (one tag per metric name) and the configuration as text, in ``log_dir``.

    The event writer opens at the first ``log(row, step)`` with ``purge_step=step``, so after a
    resume TensorBoard drops the events an earlier, interrupted run wrote for steps at or past
    the resumed one, as ``metrics.jsonl`` drops its rows (a fresh run starts at step 0 and
    supersedes everything earlier in ``log_dir``).
    """

    def __init__(self, log_dir: str | Path) -> None:
        _require("tensorboard")
        self.log_dir = Path(log_dir)
        self._config_text: str | None = None
        self._writer: SummaryWriter | None = None

    def log_params(self, params: Mapping[str, Any]) -> None:
        lines = ["| parameter | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in sorted(params.items())]
        self._config_text = "\n".join(lines)
        if self._writer is not None:
            self._writer.add_text("config", self._config_text, global_step=0)

    def log(self, row: Mapping[str, Any], step: int) -> None:
        if self._writer is None:
            self._writer = self._open(step)
        for key, value in scalar_items(row):
            self._writer.add_scalar(key, value, global_step=step)
        self._writer.flush()

    def _open(self, first_step: int) -> SummaryWriter:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir=str(self.log_dir), purge_step=first_step)
        if self._config_text is not None:
            writer.add_text("config", self._config_text, global_step=first_step)
        return writer

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


class WandbTracker:
    """A W&B run in ``<run_dir>/wandb``: offline (``WANDB_MODE`` unset) or as the user set it."""

    def __init__(self, run_dir: str | Path, *, run_name: str) -> None:
        _require("wandb")
        import wandb

        directory = Path(run_dir)
        directory.mkdir(parents=True, exist_ok=True)
        self._run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "rlruntime"),
            name=run_name,
            dir=str(directory),
            mode=_wandb_mode(os.environ.get("WANDB_MODE")),
            settings=wandb.Settings(silent=True, console="off", x_disable_stats=True),
            reinit="create_new",
        )

    def log_params(self, params: Mapping[str, Any]) -> None:
        # wandb's Config.update has no annotations (the package is otherwise typed).
        self._run.config.update(dict(params), allow_val_change=True)  # type: ignore[no-untyped-call]

    def log(self, row: Mapping[str, Any], step: int) -> None:
        self._run.log(dict(scalar_items(row)), step=step)

    def close(self) -> None:
        self._run.finish()


def _wandb_mode(env: str | None) -> Literal["online", "offline", "disabled"]:
    """``WANDB_MODE`` when it names a mode, else offline (never online unless asked)."""
    if env == "online":
        return "online"
    if env == "disabled":
        return "disabled"
    return "offline"


#: MLflow accepts only these characters in metric and parameter names.
_MLFLOW_BAD_CHARS = re.compile(r"[^/\w.\- :]")


def mlflow_key(name: str) -> str:
    """``name`` with each character MLflow rejects replaced by ``_`` (``mean@1`` -> ``mean_1``)."""
    return _MLFLOW_BAD_CHARS.sub("_", name)


class MlflowTracker:
    """An MLflow run in experiment ``rlruntime`` (or ``MLFLOW_EXPERIMENT_NAME``).

    The store is ``MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<run_dir>/mlflow.db`` (a
    local file; MLflow 3 keeps its plain-directory store in maintenance mode). Metric names keep
    their slashes; characters MLflow rejects (such as ``@``) become ``_``.

    The sqlite store takes ~0.5-1 ms per metric value, so rows are logged asynchronously
    (MLflow's own background queue; ``log`` costs ~0.5 ms): at most :attr:`max_pending` rows
    wait, and :meth:`close` waits for all of them before marking the run finished.
    """

    #: Rows allowed in MLflow's queue before ``log`` waits for the oldest (back-pressure).
    max_pending = 100

    def __init__(self, run_dir: str | Path, *, run_name: str) -> None:
        _require("mlflow")
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        from mlflow.tracking import MlflowClient

        directory = Path(run_dir).resolve()
        directory.mkdir(parents=True, exist_ok=True)
        self.tracking_uri = os.environ.get("MLFLOW_TRACKING_URI") or (
            f"sqlite:///{directory / 'mlflow.db'}"
        )
        self.client = MlflowClient(tracking_uri=self.tracking_uri)
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "rlruntime")
        experiment = self.client.get_experiment_by_name(name)
        experiment_id = (
            experiment.experiment_id
            if experiment is not None
            else self.client.create_experiment(
                name, artifact_location=(directory / "mlflow-artifacts").as_uri()
            )
        )
        self.run_id: str = self.client.create_run(experiment_id, run_name=run_name).info.run_id
        self._pending: deque[RunOperations] = deque()

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(mlflow_key(k), str(v)[:6000]) for k, v in sorted(params.items())]
        for start in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=items[start : start + 100])

    def log(self, row: Mapping[str, Any], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [
            Metric(mlflow_key(k), v, now, step) for k, v in scalar_items(row) if math.isfinite(v)
        ]
        if not metrics:
            return
        operation = self.client.log_batch(self.run_id, metrics=metrics, synchronous=False)
        if operation is not None:
            self._pending.append(operation)
        while len(self._pending) > self.max_pending:
            self._pending.popleft().wait()

    def close(self) -> None:
        while self._pending:
            self._pending.popleft().wait()
        self.client.set_terminated(self.run_id)


# ---------------------------------------------------------------------------------- factory


def make_trackers(
    names: Sequence[str],
    run_dir: str | Path,
    *,
    run_name: str,
    config_dict: Mapping[str, Any],
) -> list[Tracker]:
    """The trackers called ``names`` (see the module docstring), writing under ``run_dir``.

    ``jsonl`` is always among them (first, unless ``names`` places it): ``metrics.jsonl`` is the
    run's own record, which resume and the figures read. Each one has already received
    ``config_dict`` (flattened) through ``log_params``. Raises :class:`ConfigError` for an
    unknown name or a missing optional library; trackers made before the failure are closed.
    """
    directory = Path(run_dir)
    params = flatten_params(config_dict)
    trackers: list[Tracker] = []
    try:
        for name in names if "jsonl" in names else ("jsonl", *names):
            tracker = _make_one(name, directory, run_name)
            tracker.log_params(params)
            trackers.append(tracker)
    except BaseException:
        for tracker in trackers:
            tracker.close()
        raise
    return trackers


def _make_one(name: str, run_dir: Path, run_name: str) -> Tracker:
    if name == "console":
        return ConsoleTracker()
    if name == "jsonl":
        return JsonlTracker(run_dir / "metrics.jsonl")
    if name == "tensorboard":
        return TensorBoardTracker(run_dir / "tensorboard")
    if name == "wandb":
        return WandbTracker(run_dir, run_name=run_name)
    if name == "mlflow":
        return MlflowTracker(run_dir, run_name=run_name)
    raise ConfigError(
        f"trainer.loggers: unknown tracker {name!r}; choose from {', '.join(TRACKER_NAMES)} "
        "(or pass your own to PPOTrainer(trackers=[...]))"
    )


# mypy checks that every built-in tracker satisfies the protocol (no inheritance needed).
_BUILT_IN: tuple[type[Tracker], ...] = (
    ConsoleTracker,
    JsonlTracker,
    TensorBoardTracker,
    WandbTracker,
    MlflowTracker,
)
