"""The run figure (ppo.plots) and ``python -m rlrun plot`` on real tiny runs."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from ppo import PPOTrainer
from ppo.metrics import plot_reward_curve as reexported
from ppo.metrics import read_metrics, summary_line
from ppo.plots import PANELS, RunSeries, build_figure, ema, plot_reward_curve, series
from rlrun.__main__ import main as rlrun_main
from runtime.testing import InProcessBackend
from tests.trainer_support import tiny_config, varied_reward

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.image  # noqa: E402  (after the skip and the backend choice)
import matplotlib.pyplot as plt  # noqa: E402

NEW_ROWS: list[dict[str, Any]] = [
    {"step": 0, "val/accuracy": 0.25},
    *[
        {
            "step": s,
            "critic/score/mean": 0.1 * s,
            "response_length/mean": 3.0 + s,
            "response_length/max": 6.0,
            "actor/ppo_kl": 0.01 * s,
            "actor/entropy": 2.0 - 0.1 * s,
            "timing_s/step": 0.5,
            "timing_s/gen": 0.2,
            "perf/throughput": 1000.0 + s,
            **({"val/accuracy": 0.3 + 0.1 * s} if s % 2 == 0 else {}),
        }
        for s in range(1, 13)
    ],
]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two real 3-step runs: GRPO and GAE (with a critic), each with config.json as the CLI
    writes it."""
    root = tmp_path_factory.mktemp("runs")
    dirs = []
    for estimator in ("grpo", "gae"):
        run_dir = root / estimator
        cfg = tiny_config(run_dir, [f"algorithm.adv_estimator='{estimator}'"])
        with PPOTrainer(backend=InProcessBackend(), config=cfg, reward_fn=varied_reward) as trainer:
            trainer.fit()
        (run_dir / "config.json").write_text(
            json.dumps({"data": {"task": "addition"}, "algorithm": {"adv_estimator": estimator}})
        )
        dirs.append(run_dir)
    return dirs[0], dirs[1]


# ----------------------------------------------------------------------------- pure parts


def test_series_takes_the_first_present_name_and_skips_gaps() -> None:
    rows: list[dict[str, Any]] = [
        {"step": 1, "reward/mean": 0.5},
        {"step": 2, "reward/mean": None},
        {"step": 3, "reward/mean": math.nan},
        {"step": 4, "reward/mean": 1.0},
    ]
    assert series(rows, ["critic/score/mean", "reward/mean"]) == ([1, 4], [0.5, 1.0])
    assert series(rows, ["nothing/here"]) == ([], [])


def test_ema_is_debiased_and_validates_its_weight() -> None:
    assert ema([2.0, 2.0, 2.0]) == pytest.approx([2.0, 2.0, 2.0])
    assert ema([1.0, 3.0], weight=0.0) == [1.0, 3.0]
    smoothed = ema([0.0, 10.0], weight=0.5)
    assert smoothed[0] == 0.0
    assert 0.0 < smoothed[1] < 10.0
    with pytest.raises(ValueError, match="smoothing weight"):
        ema([1.0], weight=1.0)


def test_summary_line_reads_new_and_old_names() -> None:
    line = summary_line(NEW_ROWS[2])
    assert line.startswith("step    2 | reward 0.200 | val_acc 0.500 | kl 0.0200 | len 5.00")
    assert line.endswith("0.50s")
    old = summary_line({"step": 1, "reward/mean": 0.75, "timing/step_s": 1.5})
    assert old == "step    1 | reward 0.750 | 1.50s"
    assert summary_line({"step": 0, "val/accuracy": 0.5}) == "step    0 | val_acc 0.500"


def test_figure_has_every_panel_labelled() -> None:
    fig = build_figure([RunSeries("run", NEW_ROWS)], title="grpo on task addition")
    try:
        axes = [ax for ax in fig.axes if ax.get_title()]
        assert [ax.get_title() for ax in axes] == [p.title for p in PANELS]
        for ax in axes:
            assert ax.get_xlabel() == "step"
            assert ax.get_ylabel()
            assert ax.get_lines(), f"panel {ax.get_title()!r} drew nothing"
        reward = axes[0]
        # raw and smoothed train reward
        assert len(reward.get_lines()) == 2
        assert fig.get_suptitle() == "grpo on task addition"
    finally:
        plt.close(fig)


def test_a_panel_without_its_metrics_says_so() -> None:
    rows = [{"step": 1, "critic/score/mean": 0.5}, {"step": 2, "critic/score/mean": 0.7}]
    fig = build_figure([RunSeries("run", rows)], title="t")
    try:
        by_title = {ax.get_title(): ax for ax in fig.axes if ax.get_title()}
        texts = [t.get_text() for t in by_title["Validation accuracy"].texts]
        assert texts == ["not in this run:\nval/accuracy"]
        assert not by_title["Validation accuracy"].get_lines()
    finally:
        plt.close(fig)


def test_plot_reward_curve_is_reexported_and_writes_a_png(tmp_path: Path) -> None:
    assert reexported is not None
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("".join(json.dumps(r) + "\n" for r in NEW_ROWS))
    out = reexported(metrics, tmp_path / "fig.png", title="t")
    assert out == tmp_path / "fig.png"
    height, width = matplotlib.image.imread(str(out)).shape[:2]
    assert (width, height) == (1500, 750)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fig.png", "metrics.jsonl"]  # no temp
    assert plot_reward_curve(tmp_path / "missing.jsonl", tmp_path / "no.png") is None


def test_a_row_cut_short_by_an_interrupted_write_is_skipped(tmp_path: Path) -> None:
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text(json.dumps({"step": 1}) + "\n" + '{"step": 2, "crit')
    assert read_metrics(metrics) == [{"step": 1}]
    metrics.write_text('{"step": 1, "crit\n' + json.dumps({"step": 2}) + "\n")
    with pytest.raises(json.JSONDecodeError):
        read_metrics(metrics)


# ----------------------------------------------------------------------------- real runs


def test_an_interrupted_run_already_has_its_figure(tmp_path: Path) -> None:
    class Interrupted(Exception):
        pass

    def stop_at_step_3(row: dict[str, Any]) -> None:
        if row["step"] == 3:
            raise Interrupted

    cfg = tiny_config(tmp_path, ["trainer.total_steps=5"])
    with (
        PPOTrainer(
            backend=InProcessBackend(),
            config=cfg,
            reward_fn=varied_reward,
            on_step=stop_at_step_3,
        ) as trainer,
        pytest.raises(Interrupted),
    ):
        trainer.fit()
    figure = tmp_path / "reward_curve.png"
    assert figure.stat().st_size > 10_000  # drawn at the step-2 validation


def test_plot_command_overlays_two_runs(
    two_runs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "compare.png"
    assert rlrun_main(["plot", str(two_runs[0]), str(two_runs[1]), "-o", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert matplotlib.image.imread(str(out)).shape[:2] == (750, 1500)
    runs = [RunSeries(d.name, read_metrics(d / "metrics.jsonl")) for d in two_runs]
    fig = build_figure(runs, title="grpo vs gae")
    try:
        for ax in (ax for ax in fig.axes if ax.get_title() in {"Train reward", "Step time"}):
            labels = {str(line.get_label()) for line in ax.get_lines()}
            assert any(label.startswith("grpo: ") for label in labels), labels
            assert any(label.startswith("gae: ") for label in labels), labels
    finally:
        plt.close(fig)


def test_plot_command_on_one_run_titles_it_from_its_config(
    two_runs: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    gae = two_runs[1]
    (gae / "reward_curve.png").unlink()
    assert rlrun_main(["plot", str(gae)]) == 0
    assert (gae / "reward_curve.png").is_file()
    assert capsys.readouterr().out.strip() == str(gae / "reward_curve.png")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["does-not-exist"], "run directory 'does-not-exist' does not exist"),
        (["{empty}"], "is missing or empty"),
        (["{empty}", "{empty}", "--labels", "a"], "--labels names 1 runs but 2 were given"),
        (["{grpo}", "-o", "/no/such/dir/x.png"], "output directory '/no/such/dir' does not exist"),
    ],
)
def test_plot_command_answers_bad_input_with_one_line_and_status_2(
    args: list[str],
    needle: str,
    two_runs: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    argv = [a.format(empty=empty, grpo=two_runs[0]) for a in args]
    assert rlrun_main(["plot", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("error: ")
    assert needle in err[0]
