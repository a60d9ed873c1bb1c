"""Metrics output: ``metrics.jsonl`` (one JSON object per step) and the per-step summary line.

The figures live in :mod:`ppo.plots`; ``plot_reward_curve`` is re-exported here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["MetricsWriter", "plot_reward_curve", "read_metrics", "summary_line"]


class MetricsWriter:
    """Appends one JSON object per step to ``path``; on resume, drops rows past ``step``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def truncate_after(self, step: int) -> None:
        """Keep only rows of steps ``<= step`` (all rows are dropped for a fresh run, step 0)."""
        rows = [r for r in read_metrics(self.path) if step > 0 and int(r.get("step", 0)) <= step]
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
        tmp.replace(self.path)

    def write(self, row: Mapping[str, Any]) -> None:
        clean = {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in row.items()
        }
        with open(self.path, "a") as fh:
            fh.write(json.dumps(clean, sort_keys=True) + "\n")


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a ``metrics.jsonl`` file, in order ([] if the file does not exist).

    A last line cut short by an interrupted write is skipped; any other bad line raises
    ``json.JSONDecodeError`` (a ``ValueError``) naming its position.
    """
    p = Path(path)
    if not p.is_file():
        return []
    text = p.read_text()
    lines = [line for line in text.splitlines() if line.strip()]
    rows = []
    for i, line in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1 and not text.endswith("\n"):
                break  # a last row cut short by an interrupted write
            raise
    return rows


def summary_line(row: Mapping[str, Any]) -> str:
    """The one-line per-step summary printed under the progress bar.

    Reads verl's metric names (``critic/score/mean``, ``timing_s/step``...) and, for rows
    written before the rename, the old ones (``reward/mean``, ``timing/step_s``); a metric
    absent from ``row`` is left out of the line.
    """
    parts = [f"step {int(row.get('step', 0)):4d}"]
    for keys, label, fmt in _SUMMARY_FIELDS:
        value = next((row[k] for k in keys if row.get(k) is not None), None)
        if isinstance(value, int | float):
            parts.append(f"{label} {value:{fmt}}")
    time_s = next((row[k] for k in ("timing_s/step", "timing/step_s") if row.get(k)), None)
    if isinstance(time_s, int | float):
        parts.append(f"{time_s:.2f}s")
    return " | ".join(parts)


#: (metric names, newest first; label; format) of the fields in :func:`summary_line`.
_SUMMARY_FIELDS: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (("critic/score/mean", "reward/mean"), "reward", ".3f"),
    (("val/accuracy",), "val_acc", ".3f"),
    (("actor/pg_clipfrac",), "clip", ".4f"),
    (("actor/ppo_kl",), "kl", ".4f"),
    (("critic/vf_loss",), "vf", ".4f"),
    (("response_length/mean",), "len", ".2f"),
)


def plot_reward_curve(
    metrics_path: str | Path, out_path: str | Path, *, title: str = ""
) -> Path | None:
    """Moved to :func:`ppo.plots.plot_reward_curve` (kept here for existing imports)."""
    from ppo.plots import plot_reward_curve as plot

    return plot(metrics_path, out_path, title=title)
