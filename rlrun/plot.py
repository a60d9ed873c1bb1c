"""``python -m rlrun plot <run_dir> [<run_dir> ...] [-o out.png] [--labels a,b] [--title T]``.

Draws the multi-panel figure of :mod:`ppo.plots` from each run directory's ``metrics.jsonl``:
one run alone (default output ``<run_dir>/reward_curve.png``) or several overlaid, one colour
per run (default output ``runs_compare.png`` in the current directory). Bad input (a missing
directory, a run without metrics, an unwritable output) is answered with one line and exit
status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from ppo.metrics import read_metrics
from ppo.plots import PlotUnavailableError, RunSeries, plot_runs

__all__ = ["main", "run_title"]


class _UsageError(Exception):
    """Bad input for the plot command; the message is the one line printed."""


def run_title(run_dir: Path) -> str:
    """A title for one run: its estimator and data (from ``config.json``), or its directory."""
    config_path = run_dir / "config.json"
    try:
        config = json.loads(config_path.read_text())
        data = config["data"]
        what = Path(data["train_jsonl"]).name if data.get("train_jsonl") else f"task {data['task']}"
        return f"{config['algorithm']['adv_estimator']} on {what} ({run_dir.name})"
    except (OSError, ValueError, KeyError, TypeError):
        return run_dir.name


def _load_runs(run_dirs: Sequence[str], labels: Sequence[str]) -> list[RunSeries]:
    paths = [Path(d) for d in run_dirs]
    if labels and len(labels) != len(paths):
        raise _UsageError(f"--labels names {len(labels)} runs but {len(paths)} were given")
    names = [p.resolve().name for p in paths]
    if not labels:
        labels = names if len(set(names)) == len(names) else [str(p) for p in paths]
    runs = []
    for path, label in zip(paths, labels, strict=True):
        metrics = path / "metrics.jsonl"
        if not path.is_dir():
            raise _UsageError(f"run directory {str(path)!r} does not exist")
        try:
            rows = read_metrics(metrics)
        except (OSError, ValueError) as exc:
            raise _UsageError(f"{str(metrics)!r} cannot be read: {exc}") from exc
        if not rows:
            raise _UsageError(f"{str(metrics)!r} is missing or empty: is this a run directory?")
        runs.append(RunSeries(label, rows))
    return runs


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m rlrun plot",
        description="Draw one run's figure, or overlay several runs, from their metrics.jsonl.",
    )
    parser.add_argument("run_dirs", nargs="+", help="run directories holding metrics.jsonl")
    parser.add_argument(
        "-o",
        "--out",
        default=None,
        help="output PNG (default: <run_dir>/reward_curve.png for one run, "
        "runs_compare.png for several)",
    )
    parser.add_argument("--labels", default="", help="comma-separated legend labels, one per run")
    parser.add_argument("--title", default=None, help="figure title")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    labels = [s.strip() for s in args.labels.split(",")] if args.labels else []
    try:
        runs = _load_runs(args.run_dirs, labels)
        if args.out is not None:
            out = Path(args.out)
        elif len(runs) == 1:
            out = Path(args.run_dirs[0]) / "reward_curve.png"
        else:
            out = Path("runs_compare.png")
        if not out.parent.is_dir():
            raise _UsageError(f"output directory {str(out.parent)!r} does not exist")
        if args.title is not None:
            title = args.title
        elif len(runs) == 1:
            title = run_title(Path(args.run_dirs[0]))
        else:
            title = " vs ".join(r.label for r in runs)
        written = plot_runs(runs, out, title=title)
    except (_UsageError, PlotUnavailableError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot write {str(out)!r}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    print(written)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
