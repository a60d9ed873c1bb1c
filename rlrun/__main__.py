"""``python -m rlrun --config demo [section.field=value ...]``.

Chooses the backend by name (``ray``, the default, ``monarch``, or ``inprocess`` for
debugging), builds ``PPOTrainer(backend=..., config=...)``, trains with a progress bar and a
one-line summary per step, and leaves ``config.toml``, ``metrics.jsonl``, ``reward_curve.png``,
``summary.json``, checkpoints and the final policy (``hf_model/``) in the run directory.
``python -m rlrun export <checkpoint> <dir>`` writes a checkpoint's policy as a Hugging Face
model.

Exit status: 0 when training completed; 2 with one ``error: ...`` line for bad input (command
line, config, data, run directory, checkpoint, a reward function's bad value); 130 with one line
saying how to resume on Ctrl-C. Log lines (``--log-format console|json``) are written through
the progress bar, so they never break it.
``python -m rlrun plot <run_dir> [<run_dir> ...]`` draws or overlays runs (:mod:`rlrun.plot`).
"""

from __future__ import annotations

import argparse
import io
import logging
import sys
import typing
from collections.abc import Sequence

import structlog
from tqdm import tqdm

from ppo import PPOTrainer, load_config
from ppo.config import ConfigError, PPOConfig
from runtime import Backend
from runtime.errors import BackendUnavailableError, RemoteMethodError

__all__ = ["build_backend", "main"]

BACKENDS = ("ray", "monarch", "inprocess")


def build_backend(name: str, *, address: str | None = None, num_cpus: int | None = None) -> Backend:
    """The backend called ``name``: ``"ray"`` (local cluster or ``address``), ``"monarch"``
    (one process per rank on this host) or ``"inprocess"``."""
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
        _adopt_ray_logger()
        return RayBackend(address=address, num_cpus=num_cpus)
    if name == "monarch":
        try:
            from runtime_monarch import MonarchBackend
        except ImportError as exc:
            raise BackendUnavailableError(
                "Backend 'monarch' is not available: install it with "
                "`pip install 'rlruntime[monarch]'` (or use --backend ray)"
            ) from exc
        return MonarchBackend()
    raise ValueError(f"unknown backend {name!r}; choose one of {list(BACKENDS)}")


def _configure_logging(verbose: bool, fmt: str) -> None:
    level = logging.DEBUG if verbose else logging.INFO
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    stamp = structlog.processors.TimeStamper(fmt="iso" if fmt == "json" else "%H:%M:%S")
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(level),
        processors=[structlog.processors.add_log_level, stamp, renderer],
        logger_factory=structlog.PrintLoggerFactory(file=_BarSafeStderr()),
    )
    # Standard-library records (Ray's driver messages, warnings) get the same format and path.
    handler = logging.StreamHandler(_BarSafeStderr())
    handler.set_name(_HANDLER)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=[
                structlog.stdlib.add_logger_name,
                structlog.processors.add_log_level,
                stamp,
            ],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)


_HANDLER = "rlrun"


def _adopt_ray_logger() -> None:
    """Ray gives its ``ray`` logger a handler of its own (another format, straight to stderr);
    hand its records to the root handler instead (``ray.init`` keeps that choice)."""
    ray_logger = logging.getLogger("ray")
    for handler in list(ray_logger.handlers):
        ray_logger.removeHandler(handler)
    ray_logger.propagate = True


class _BarSafeStderr(io.StringIO):
    """A text stream for log lines: each complete line goes out through ``tqdm.write``, which
    clears and redraws an active progress bar around it."""

    def __init__(self) -> None:
        super().__init__()
        self._pending = ""

    def write(self, text: str) -> int:
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            tqdm.write(line, file=sys.stderr)
        return len(text)

    def flush(self) -> None:
        sys.stderr.flush()


class _OneLineParser(argparse.ArgumentParser):
    """Usage errors as one ``error: ...`` line (exit status 2), not usage plus message."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"error: {message} (see python -m rlrun --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="python -m rlrun", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="TOML config file (defaults are used without one)")
    parser.add_argument("--backend", default="ray", choices=BACKENDS)
    parser.add_argument(
        "--address", default=None, help="Ray cluster address (default: start a local one)"
    )
    parser.add_argument(
        "--num-cpus", type=int, default=None, help="logical CPUs for a local Ray cluster"
    )
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument(
        "--log-format", default="console", choices=("console", "json"), help="log line format"
    )
    parser.add_argument("overrides", nargs="*", help="section.field=value overrides")
    return parser


def _error(exc: BaseException) -> int:
    """Report bad input as one line on stderr; exit status 2."""
    print("error: " + " ".join(str(exc).split()), file=sys.stderr)
    return 2


#: Remote error types that are bad input (a reward function's value, a config), not bugs.
_INPUT_ERRORS = ("ScoreError", "ConfigError")


def _remote_error(exc: RemoteMethodError, verbose: bool) -> int:
    """A worker raised: bad input gets one line and status 2; anything else is re-raised."""
    if not exc.remote_type.rsplit(".", 1)[-1].endswith(_INPUT_ERRORS):
        raise exc
    if verbose:
        print(exc.remote_traceback, file=sys.stderr)
    where = f" (role {exc.role}, rank {exc.rank})" if exc.role is not None else ""
    print("error: " + " ".join(exc.remote_message.split()) + where, file=sys.stderr)
    return 2


def _interrupted(trainer: PPOTrainer | None, config: PPOConfig) -> int:
    """Ctrl-C: one line saying where the run stopped and how to resume; exit status 130."""
    summary = trainer.summary if trainer is not None else {}
    latest = summary.get("latest_checkpoint")
    where = f"at step {summary['step']}" if "step" in summary else "before training started"
    if latest is None:
        hint = (
            "no checkpoint was written yet; re-run with trainer.resume=off trainer.overwrite=true"
        )
    elif config.trainer.resume == "auto":
        hint = f"run the same command again to resume from {latest}"
    else:
        hint = f"add trainer.resume=auto to the same command to resume from {latest}"
    print(f"interrupted {where}; {hint}", file=sys.stderr)
    return 130


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["export"]:
        from rlrun import export

        return export.main(argv[1:])
    if argv[:1] == ["plot"]:  # `python -m rlrun plot <run_dir> ...`: see rlrun/plot.py
        from rlrun import plot

        return plot.main(argv[1:])
    args = _parser().parse_intermixed_args(argv)
    _configure_logging(args.verbose, args.log_format)
    log = structlog.get_logger("rlrun")
    try:
        config = load_config(args.config, args.overrides)
        backend = build_backend(args.backend, address=args.address, num_cpus=args.num_cpus)
    except (ConfigError, BackendUnavailableError) as exc:
        return _error(exc)
    log.info("config", backend=args.backend, run_dir=config.trainer.run_dir)
    trainer: PPOTrainer | None = None
    try:
        trainer = PPOTrainer(backend=backend, config=config)
        with trainer:
            trainer.fit()
    except ConfigError as exc:
        return _error(exc)
    except RemoteMethodError as exc:
        return _remote_error(exc, args.verbose)
    except KeyboardInterrupt:
        return _interrupted(trainer, config)
    finally:
        backend.shutdown()
    log.info("done", **trainer.summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
