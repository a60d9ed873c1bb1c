"""Figures of a run (or several overlaid) from ``metrics.jsonl`` rows.

:func:`plot_runs` draws one figure of six panels (:data:`PANELS`): train reward (raw and
smoothed), validation accuracy, response length, KL / entropy, step time and throughput. Each
panel names its metrics with verl's names and falls back to the names older runs used
(``reward/mean``, ``timing/step_s``...), so any run's ``metrics.jsonl`` can be drawn; a panel
whose metrics a run lacks says so instead of failing. With several runs, each run has one colour
in every panel and the legend names the runs.

matplotlib is an optional extra (``pip install 'rlruntime[plot]'``); :func:`plot_runs` raises
:class:`PlotUnavailableError` without it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from ppo.metrics import read_metrics

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "PANELS",
    "Curve",
    "Panel",
    "PlotUnavailableError",
    "RunSeries",
    "auto_weight",
    "build_figure",
    "ema",
    "plot_reward_curve",
    "plot_runs",
    "series",
]


class PlotUnavailableError(ImportError):
    """matplotlib is not installed; the message says how to install it."""


@attrs.frozen
class Curve:
    """One line of a panel: the first of ``keys`` that a run has, drawn with ``label``.

    ``smooth``: draw the moving average (:func:`auto_weight`); ``raw``: also draw the raw
    values, faint, under it.
    """

    keys: tuple[str, ...]
    label: str
    smooth: bool = True
    raw: bool = False
    marker: str = ""
    #: Drawn against a second y axis on the right (for a quantity on another scale).
    right_axis: bool = False


@attrs.frozen
class Panel:
    title: str
    ylabel: str
    curves: tuple[Curve, ...]
    unit_interval: bool = False
    #: The label of the right-hand y axis, when some curve uses it.
    right_ylabel: str = ""


#: The figure's panels, in reading order (two rows of three).
PANELS: tuple[Panel, ...] = (
    Panel(
        "Train reward",
        "sequence score (mean)",
        (Curve(("critic/score/mean", "reward/mean"), "score", raw=True),),
    ),
    Panel(
        "Validation accuracy",
        "accuracy",
        (Curve(("val/accuracy",), "val accuracy", smooth=False, marker="o"),),
        unit_interval=True,
    ),
    Panel(
        "Response length",
        "tokens (mean)",
        (
            Curve(("response_length/mean",), "mean length"),
            Curve(("response_length/clip_ratio",), "cut at max length", right_axis=True),
        ),
        right_ylabel="fraction cut at max length",
    ),
    Panel(
        "KL / entropy",
        "KL (nats per token)",
        (
            Curve(("actor/ppo_kl",), "PPO KL (old vs new)"),
            Curve(("actor/reward_kl_penalty", "kl/in_reward", "kl/actor_ref"), "KL to reference"),
            Curve(("actor/entropy", "actor/entropy_rollout"), "entropy", right_axis=True),
        ),
        right_ylabel="entropy (nats per token)",
    ),
    Panel(
        "Step time",
        "seconds",
        (
            Curve(("timing_s/step", "timing/step_s"), "step"),
            Curve(("timing_s/gen", "timing/gen_s"), "generation"),
            Curve(("timing_s/update_actor", "timing/update_actor_s"), "actor update"),
        ),
    ),
    Panel(
        "Throughput",
        "tokens / s",
        (Curve(("perf/throughput", "perf/tokens_per_s"), "throughput"),),
    ),
)


@attrs.frozen
class RunSeries:
    """A run to draw: its legend label and its metrics rows."""

    label: str
    rows: Sequence[Mapping[str, Any]]


def series(rows: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> tuple[list[int], list[float]]:
    """(steps, values) of the first of ``keys`` present in ``rows``; skips missing and
    non-finite values. ([], []) when no row has any of the keys."""
    for key in keys:
        points = [
            (int(r["step"]), float(v))
            for r in rows
            if isinstance(v := r.get(key), int | float)
            and not isinstance(v, bool)
            and math.isfinite(v)
            and "step" in r
        ]
        if points:
            return [s for s, _ in points], [v for _, v in points]
    return [], []


def auto_weight(n: int) -> float:
    """The smoothing weight for ``n`` points: averages over about a tenth of the run (no
    smoothing below 10 points, at most ~20 steps: weight 0.95)."""
    return min(0.95, max(0.0, 1.0 - 10.0 / max(n, 1)))


def ema(values: Sequence[float], weight: float = 0.8) -> list[float]:
    """Exponential moving average with bias correction (TensorBoard-style smoothing).

    ``weight`` in [0, 1): 0 returns ``values`` unchanged; the first point is never damped.
    """
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"smoothing weight must be in [0, 1), got {weight!r}")
    out: list[float] = []
    acc = 0.0
    for i, v in enumerate(values, start=1):
        acc = weight * acc + (1.0 - weight) * v
        out.append(acc / (1.0 - weight**i))
    return out


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise PlotUnavailableError(
            "figures need matplotlib: pip install 'rlruntime[plot]'"
        ) from exc
    return plt


def build_figure(runs: Sequence[RunSeries], *, title: str) -> Figure:
    """The multi-panel figure of ``runs`` (one colour per run). The caller closes it."""
    plt = _pyplot()
    fig: Figure
    fig, axes = plt.subplots(2, 3, figsize=(15, 7.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, panel in zip(axes.flat, PANELS, strict=True):
        _draw_panel(ax, panel, runs, colors)
    fig.suptitle(title)
    fig.text(
        0.5, 0.005,
        "Per-step curves of 10+ points: exponential moving average over about a tenth of the "
        "run (train reward: raw values faint underneath). Validation: as measured.",
        ha="center", va="bottom", fontsize="small", color="gray",
    )  # fmt: skip
    fig.tight_layout(rect=(0, 0.025, 1, 1))
    return fig


def _draw_panel(ax: Any, panel: Panel, runs: Sequence[RunSeries], colors: Sequence[str]) -> None:
    """Draw ``panel`` on ``ax``: each run's curves in the run's colour, one line style per
    curve; a note instead when no run has any of the panel's metrics."""
    from matplotlib.ticker import MaxNLocator

    right = ax.twinx() if any(c.right_axis for c in panel.curves) else None
    for r, run in enumerate(runs):
        for c, curve in enumerate(panel.curves):
            steps, values = series(run.rows, curve.keys)
            if not steps:
                continue
            target = right if curve.right_axis and right is not None else ax
            label = curve.label if len(runs) == 1 else f"{run.label}: {curve.label}"
            style = dict(color=colors[r % len(colors)], linestyle=("-", "--", ":")[c % 3])
            if curve.smooth and len(values) >= 10:
                if curve.raw:
                    target.plot(steps, values, alpha=0.25, linewidth=0.8, **style)
                target.plot(steps, ema(values, auto_weight(len(values))), label=label, **style)
            else:
                target.plot(steps, values, marker=curve.marker, label=label, **style)
    ax.set_title(panel.title)
    ax.set_xlabel("step")
    ax.set_ylabel(panel.ylabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    if panel.unit_interval:
        ax.set_ylim(-0.02, 1.02)
    handles, labels = ax.get_legend_handles_labels()
    if right is not None:
        right.set_ylabel(panel.right_ylabel)
        right.set_visible(bool(right.get_lines()))
        more_handles, more_labels = right.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
    if handles:
        ax.legend(handles, labels, loc="best", fontsize="x-small", framealpha=0.6)
    else:
        names = ", ".join(c.keys[0] for c in panel.curves)
        ax.text(
            0.5, 0.5, f"not in this run:\n{names}", ha="center", va="center",
            transform=ax.transAxes, color="gray",
        )  # fmt: skip


def plot_runs(runs: Sequence[RunSeries], out_path: str | Path, *, title: str) -> Path:
    """Write the figure of ``runs`` to ``out_path`` (PNG; the parent directory must exist).

    The file is replaced atomically, so a run killed while drawing keeps its previous figure.
    """
    if not runs:
        raise ValueError("plot_runs needs at least one run")
    plt = _pyplot()
    fig = build_figure(runs, title=title)
    out = Path(out_path)
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        fig.savefig(tmp, dpi=100, format="png")
        tmp.replace(out)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return out


def plot_reward_curve(
    metrics_path: str | Path, out_path: str | Path, *, title: str = ""
) -> Path | None:
    """The figure of one run's ``metrics.jsonl``; None if matplotlib is missing or no rows."""
    rows = read_metrics(metrics_path)
    if not rows:
        return None
    try:
        return plot_runs([RunSeries("run", rows)], out_path, title=title or "PPO/GRPO training")
    except PlotUnavailableError:
        return None
