"""The suite's figures and how they are reported: pure code, no timing, no backend.

Three kinds of figure:

* **ratio**: ours against a baseline measured in the same run, alternating in repeats. Each
  repeat holds a few samples (seconds) of each side; the figure is the ratio of the two
  medians over all samples, with both absolute medians, the repeat count and the spread: the
  minimum and maximum of the per-repeat ratios (each the ratio of that repeat's two medians);
* **count**: a counted quantity (serializations per shard, copies per result byte);
* **share**: a fraction of wall time, with its named parts.

A figure may carry a target (``ratio``/``value`` at most ``target``) and is then ``met`` or
``missed``. :func:`table` prints them, :func:`markdown` renders the README table, and
:func:`to_json` is what ``runs/bench/results.json`` holds.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

__all__ = [
    "SPREAD",
    "Figure",
    "count_figure",
    "markdown",
    "ratio_figure",
    "share_figure",
    "status",
    "table",
    "to_json",
]

#: How the spread of a ratio figure is defined (stated in the table and the JSON).
SPREAD = "min-max of per-repeat ratios of medians"


@attrs.frozen(kw_only=True)
class Figure:
    """One line of the table. ``value`` is the ratio (kind ``ratio``), the count (``count``)
    or the fraction (``share``); ``ours``/``base`` are absolute medians in ``unit``."""

    key: str
    title: str
    kind: str
    value: float
    unit: str = ""
    ours: float | None = None
    base: float | None = None
    base_label: str = ""
    spread: tuple[float, float] | None = None
    repeats: int = 0
    samples: int = 0
    target: float | None = None
    parts: Mapping[str, float] = attrs.field(factory=dict)
    note: str = ""

    @property
    def met(self) -> bool | None:
        """``None`` without a target; else whether ``value <= target``."""
        return None if self.target is None else self.value <= self.target


def _median(xs: Sequence[float]) -> float:
    if not xs:
        raise ValueError("a median of no samples")
    return statistics.median(xs)


def ratio_figure(
    key: str,
    title: str,
    ours: Sequence[Sequence[float]],
    base: Sequence[Sequence[float]],
    *,
    base_label: str,
    scale: float = 1e3,
    unit: str = "ms",
    target: float | None = None,
    note: str = "",
) -> Figure:
    """A ratio figure from per-repeat samples (seconds); ``scale`` converts to ``unit``.
    ``ours`` and ``base`` need the same number of non-empty repeats."""
    if len(ours) != len(base) or not ours:
        raise ValueError(
            f"{key}: need the same number (>= 1) of repeats, got {len(ours)}/{len(base)}"
        )
    per_repeat = [_median(o) / _median(b) for o, b in zip(ours, base, strict=True)]
    all_ours = [x for r in ours for x in r]
    all_base = [x for r in base for x in r]
    return Figure(
        key=key,
        title=title,
        kind="ratio",
        value=_median(all_ours) / _median(all_base),
        unit=unit,
        ours=_median(all_ours) * scale,
        base=_median(all_base) * scale,
        base_label=base_label,
        spread=(min(per_repeat), max(per_repeat)),
        repeats=len(ours),
        samples=min(len(all_ours), len(all_base)),
        target=target,
        note=note,
    )


def count_figure(
    key: str, title: str, value: float, *, target: float | None = None, note: str = ""
) -> Figure:
    """A counted figure (no timing)."""
    return Figure(key=key, title=title, kind="count", value=value, target=target, note=note)


def share_figure(
    key: str,
    title: str,
    parts: Mapping[str, float],
    *,
    wall_s: float,
    repeats: int,
    target: float | None = None,
    note: str = "",
) -> Figure:
    """A share of wall time: ``value`` is the sum of ``parts`` (each a fraction)."""
    return Figure(
        key=key,
        title=title,
        kind="share",
        value=sum(parts.values()),
        unit="%",
        ours=wall_s * 1e3,
        repeats=repeats,
        target=target,
        parts=dict(parts),
        note=note,
    )


def status(f: Figure) -> str:
    """``met``, ``MISSED`` or ``-`` (no target)."""
    if f.met is None:
        return "-"
    return "met" if f.met else "MISSED"


def _fmt(x: float | None, unit: str) -> str:
    if x is None:
        return ""
    if unit == "ms" and x < 1:
        return f"{x * 1e3:.1f} us"
    return f"{x:,.3g} {unit}".strip() if abs(x) < 1000 else f"{x:,.0f} {unit}".strip()


def _value(f: Figure) -> str:
    if f.kind == "share":
        inner = ", ".join(f"{k} {v * 100:.1f} %" for k, v in f.parts.items())
        return f"{f.value * 100:.1f} % ({inner})"
    if f.kind == "ratio":
        lo, hi = f.spread if f.spread is not None else (f.value, f.value)
        return f"{f.value:.2f}x [{lo:.2f}-{hi:.2f}]"
    return f"{f.value:.3g}"


def _target(f: Figure) -> str:
    if f.target is None:
        return ""
    if f.kind == "share":
        return f"<= {f.target * 100:.0f} %"
    return f"<= {f.target:g}" + ("x" if f.kind == "ratio" else "")


def _cells(f: Figure) -> list[str]:
    reps = (
        f"{f.repeats}x{f.samples // max(f.repeats, 1)}"
        if f.kind == "ratio"
        else (str(f.repeats) if f.repeats else "")
    )
    return [
        f.title,
        _fmt(f.ours, f.unit) if f.kind != "share" else _fmt(f.ours, "ms") + " / step",
        f"{_fmt(f.base, f.unit)} ({f.base_label})" if f.base is not None else "",
        _value(f),
        reps,
        _target(f),
        status(f),
    ]


_HEADER = ["figure", "ours", "baseline", "value [spread]", "repeats", "target", "status"]


def table(figures: Sequence[Figure]) -> str:
    """A plain-text table (what the suite prints)."""
    rows = [_HEADER, *(_cells(f) for f in figures)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(_HEADER))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append(f"ratio spread: {SPREAD}")
    return "\n".join(lines)


def markdown(figures: Sequence[Figure]) -> str:
    """The same table in Markdown (the README's "Benchmarks" table)."""

    def esc(c: str) -> str:
        return c.replace("|", "\\|")

    out = ["| " + " | ".join(_HEADER) + " |", "|" + "---|" * len(_HEADER)]
    out += ["| " + " | ".join(esc(c) for c in _cells(f)) + " |" for f in figures]
    return "\n".join(out)


def to_json(figures: Sequence[Figure], env: Mapping[str, Any]) -> dict[str, Any]:
    """The content of ``results.json``: every figure by key, plus the environment."""
    out: dict[str, Any] = {"spread": SPREAD, "env": dict(env), "figures": {}}
    for f in figures:
        d = attrs.asdict(f)
        d["parts"] = dict(f.parts)
        d["spread"] = list(f.spread) if f.spread is not None else None
        d["status"] = status(f)
        out["figures"][f.key] = d
    return out
