"""``python -m rlrun --config configs/demo.toml [section.field=value ...]``.

``python -m rlrun plot <run_dir> [<run_dir> ...]`` draws or overlays runs (:mod:`rlrun.plot`).

Chooses the backend by name (``ray``, the default, or ``inprocess`` for debugging), builds
``PPOTrainer(backend=..., config=...)``, trains with a progress bar and a one-line summary per
step, and leaves ``metrics.jsonl``, ``reward_curve.png`` and checkpoints in the run directory.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence

import structlog

from ppo import PPOTrainer, load_config
from ppo.config import ConfigError, config_to_dict
from runtime import Backend
from runtime.errors import BackendUnavailableError

__all__ = ["build_backend", "main"]


def build_backend(name: str, *, address: str | None = None, num_cpus: int | None = None) -> Backend:
    """The backend called ``name``: ``"ray"`` (local cluster or ``address``) or ``"inprocess"``."""
    if name == "inprocess":
        from runtime.testing import InProcessBackend

        return InProcessBackend(copy_values=False)
    if name == "ray":
        try:
            from runtime_ray import RayBackend
        except ImportError as exc:
            raise BackendUnavailableError(
                "Backend 'ray' is not available: install it with `pip install 'rlruntime[ray]'` "
                "(or use --backend inprocess)"
            ) from exc
        return RayBackend(address=address, num_cpus=num_cpus)
    raise ValueError(f"unknown backend {name!r}; choose 'ray' or 'inprocess'")


def _configure_logging(verbose: bool) -> None:
    level = logging.DEBUG if verbose else logging.INFO
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(level),
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="%H:%M:%S"),
            structlog.dev.ConsoleRenderer(colors=False),
        ],
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["export"]:
        from rlrun import export

        return export.main(argv[1:])
    if argv[:1] == ["plot"]:  # `python -m rlrun plot <run_dir> ...`: see rlrun/plot.py
        from rlrun import plot

        return plot.main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m rlrun", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="TOML config file (defaults are used without one)")
    parser.add_argument("--backend", default="ray", choices=["ray", "inprocess"])
    parser.add_argument(
        "--address", default=None, help="Ray cluster address (default: start a local one)"
    )
    parser.add_argument(
        "--num-cpus", type=int, default=None, help="logical CPUs for a local Ray cluster"
    )
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("overrides", nargs="*", help="section.field=value overrides")
    args = parser.parse_args(argv)
    _configure_logging(args.verbose)
    log = structlog.get_logger("rlrun")
    try:
        config = load_config(args.config, args.overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    log.info("config", backend=args.backend, run_dir=config.trainer.run_dir)
    start = time.perf_counter()
    backend = build_backend(args.backend, address=args.address, num_cpus=args.num_cpus)
    try:
        with PPOTrainer(backend=backend, config=config) as trainer:
            history = trainer.fit()
    finally:
        backend.shutdown()
    elapsed = time.perf_counter() - start
    vals = [r["val/accuracy"] for r in history if r.get("val/accuracy") is not None]
    summary = {
        "wall_s": round(elapsed, 1),
        "steps": config.trainer.total_steps,
        "val_accuracy_first": vals[0] if vals else None,
        "val_accuracy_last": vals[-1] if vals else None,
        "run_dir": config.trainer.run_dir,
    }
    (trainer.run_dir / "config.json").write_text(
        json.dumps(config_to_dict(config), indent=2, default=str)
    )
    (trainer.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    log.info("done", **summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
