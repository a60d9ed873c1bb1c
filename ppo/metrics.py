"""Metrics output: ``metrics.jsonl`` (one JSON object per step) and ``reward_curve.png``."""

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
    p = Path(path)
    if not p.is_file():
        return []
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


def summary_line(row: Mapping[str, Any]) -> str:
    """The one-line per-step summary printed under the progress bar."""
    parts = [f"step {int(row['step']):4d}", f"reward {row.get('reward/mean', float('nan')):.3f}"]
    if "val/accuracy" in row:
        parts.append(f"val_acc {row['val/accuracy']:.3f}")
    for key, label in (
        ("actor/pg_clipfrac", "clip"),
        ("actor/ppo_kl", "kl"),
        ("critic/vf_loss", "vf"),
    ):
        if key in row:
            parts.append(f"{label} {row[key]:.4f}")
    parts.append(f"len {row.get('response_length/mean', float('nan')):.2f}")
    parts.append(f"{row.get('timing/step_s', float('nan')):.2f}s")
    return " | ".join(parts)


def plot_reward_curve(
    metrics_path: str | Path, out_path: str | Path, *, title: str = ""
) -> Path | None:
    """Plot training reward and validation accuracy per step; None if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    rows = read_metrics(metrics_path)
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    steps = [r["step"] for r in rows if r.get("reward/mean") is not None]
    ax.plot(
        steps,
        [r["reward/mean"] for r in rows if r.get("reward/mean") is not None],
        label="train reward (mean)",
    )
    val = [(r["step"], r["val/accuracy"]) for r in rows if r.get("val/accuracy") is not None]
    if val:
        ax.plot([s for s, _ in val], [v for _, v in val], "o-", label="validation accuracy")
    ax.set_xlabel("step")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title(title or "PPO/GRPO training")
    fig.tight_layout()
    out = Path(out_path)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
