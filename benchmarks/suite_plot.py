"""``docs/bench_overhead.png``: call overhead against the number of ranks (headless)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from benchmarks.suite_report import Figure

__all__ = ["overhead_series", "plot_overhead"]

#: (backend, mode) lines of the plot; keys are ``{backend}_{mode}_{ranks}``.
LINES = (
    ("ray", "blocking"),
    ("ray", "pipelined"),
    ("monarch", "blocking"),
    ("monarch", "pipelined"),
)


def overhead_series(figures: Sequence[Figure]) -> dict[str, list[tuple[int, Figure]]]:
    """The call-overhead figures by line label, sorted by rank count."""
    out: dict[str, list[tuple[int, Figure]]] = {}
    for backend, mode in LINES:
        prefix = f"{backend}_{mode}_"
        points = [
            (int(f.key.removeprefix(prefix)), f)
            for f in figures
            if f.key.startswith(prefix) and f.key.removeprefix(prefix).isdigit()
        ]
        if points:
            out[f"{backend.capitalize()} {mode}"] = sorted(points, key=lambda p: p[0])
    return out


def plot_overhead(figures: Sequence[Figure], path: Path, machine: str) -> bool:
    """Draw ratio (with its spread) and absolute time per call against ranks; ``False`` when
    matplotlib is missing or there is nothing to draw."""
    series = overhead_series(figures)
    if not series:
        return False
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (ax_ratio, ax_abs) = plt.subplots(1, 2, figsize=(10, 4))
    for label, points in series.items():
        ranks = [r for r, _ in points]
        ratios = [f.value for _, f in points]
        lo = [f.value - (f.spread[0] if f.spread else f.value) for _, f in points]
        hi = [(f.spread[1] if f.spread else f.value) - f.value for _, f in points]
        style = "-" if "blocking" in label else "--"
        ax_ratio.errorbar(ranks, ratios, yerr=[lo, hi], fmt="o" + style, capsize=3, label=label)
        ax_abs.plot(ranks, [f.ours or 0.0 for _, f in points], "o" + style, label=f"{label} (ours)")
    ax_ratio.axhline(1.0, color="grey", linewidth=1, linestyle=":")
    ax_ratio.set_xscale("log", base=2)
    ax_ratio.set_xlabel("ranks")
    ax_ratio.set_ylabel("ours / raw (median; bars: per-repeat min-max)")
    ax_ratio.set_title("call overhead against the raw engine")
    ax_abs.set_xscale("log", base=2)
    ax_abs.set_xlabel("ranks")
    ax_abs.set_ylabel("median ms per call (ours; pipelined: burst / depth)")
    ax_abs.set_title("time per call")
    for ax in (ax_ratio, ax_abs):
        ax.set_xticks([1, 2, 4, 8], ["1", "2", "4", "8"])
        ax.legend(fontsize=8)
    fig.suptitle(machine, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
