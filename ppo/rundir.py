"""A run directory belongs to one run: ownership checks and the files every run leaves.

- :func:`prepare_run_dir` refuses to start a fresh run in a directory that holds another
  run's checkpoints or metrics (or, with ``overwrite``, moves that run aside to a sibling
  ``<name>.old-<UTC time>``); nothing is ever deleted or truncated here.
- :func:`repair_metrics` drops a last line of ``metrics.jsonl`` that a kill cut short.
- :func:`write_config_toml` and :func:`write_summary` write ``config.toml`` (the resolved
  config, loadable with ``--config``) and ``summary.json`` atomically.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ppo.checkpoint import checkpoint_steps
from ppo.config import ConfigError
from runtime import get_logger

__all__ = [
    "RunDirError",
    "check_not_file",
    "prepare_run_dir",
    "repair_metrics",
    "run_data",
    "to_toml",
    "write_config_toml",
    "write_summary",
]

_log = get_logger(component="ppo.rundir")


class RunDirError(ConfigError):
    """``trainer.run_dir`` cannot be used as asked; the message says how to fix it."""


def run_data(run_dir: Path) -> list[str]:
    """What in ``run_dir`` belongs to a run: checkpoints, the ``latest`` pointer, and a
    non-empty ``metrics.jsonl`` (empty when the directory holds no run)."""
    found: list[str] = []
    steps = checkpoint_steps(run_dir / "checkpoints")
    if steps:
        found.append(f"{len(steps)} checkpoint(s) up to {steps[-1][1].name}")
    elif (run_dir / "checkpoints" / "latest").exists():
        found.append("a checkpoints/latest pointer")
    metrics = run_dir / "metrics.jsonl"
    if metrics.is_file() and metrics.stat().st_size > 0:
        rows = sum(1 for line in metrics.read_bytes().splitlines() if line.strip())
        found.append(f"metrics.jsonl with {rows} row(s)")
    return found


def prepare_run_dir(run_dir: Path, *, fresh: bool, overwrite: bool) -> Path | None:
    """Make ``run_dir`` ready for a run; returns where an old run was moved, if anywhere.

    ``fresh`` is True when the run starts from scratch (nothing to resume). A fresh run in a
    directory holding another run's data raises :class:`RunDirError`, unless ``overwrite``,
    which renames the directory to ``<run_dir>.old-<UTC time>`` first.
    """
    check_not_file(run_dir)
    moved: Path | None = None
    found = run_data(run_dir) if fresh else []
    if found:
        if not overwrite:
            raise RunDirError(
                f"trainer.run_dir = {str(run_dir)!r} holds another run ({', '.join(found)}) and "
                "this run starts afresh; resume it with trainer.resume='auto', choose another "
                "trainer.run_dir, or set trainer.overwrite=true to move the old run aside"
            )
        moved = _aside(run_dir)
        os.rename(run_dir, moved)
        _log.warning("moved the previous run aside", run_dir=str(run_dir), moved_to=str(moved))
    run_dir.mkdir(parents=True, exist_ok=True)
    return moved


def _aside(run_dir: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    candidate = run_dir.with_name(f"{run_dir.name}.old-{stamp}")
    n = 1
    while candidate.exists():
        n += 1
        candidate = run_dir.with_name(f"{run_dir.name}.old-{stamp}-{n}")
    return candidate


def repair_metrics(path: Path) -> bool:
    """Drop a last line of ``path`` that is not valid JSON (a write cut by a kill), with a
    warning; returns whether it did. A broken line elsewhere raises :class:`RunDirError`
    (the file is left as it is)."""
    if not path.is_file():
        return False
    data = path.read_bytes()
    lines = data.split(b"\n")
    # Index of the last non-empty line; earlier lines must all parse.
    nonempty = [i for i, line in enumerate(lines) if line.strip()]
    for i in nonempty[:-1]:
        if not _parses(lines[i]):
            raise RunDirError(
                f"{path} line {i + 1} is not valid JSON; fix or remove that line, or start "
                "afresh with trainer.resume='off' and trainer.overwrite=true"
            )
    if not nonempty or _parses(lines[nonempty[-1]]):
        return False
    keep = sum(len(line) + 1 for line in lines[: nonempty[-1]])
    with open(path, "r+b") as fh:
        fh.truncate(keep)
        fh.flush()
        os.fsync(fh.fileno())
    _log.warning(
        "dropped a partial last line of metrics.jsonl (cut by an interrupted write)",
        path=str(path),
        line=nonempty[-1] + 1,
        bytes=len(lines[nonempty[-1]]),
    )
    return True


def _parses(line: bytes) -> bool:
    try:
        json.loads(line)
    except ValueError:
        return False
    return True


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_summary(run_dir: Path, summary: Mapping[str, Any]) -> Path:
    """Write ``summary.json`` atomically (non-finite floats become null)."""
    clean = {
        k: (None if isinstance(v, float) and not math.isfinite(v) else v)
        for k, v in summary.items()
    }
    path = run_dir / "summary.json"
    _atomic_write(path, json.dumps(clean, indent=2, default=str) + "\n")
    return path


def write_config_toml(run_dir: Path, config: Mapping[str, Mapping[str, Any]]) -> Path:
    """Write the resolved config as ``config.toml`` (re-run it with ``--config``)."""
    path = run_dir / "config.toml"
    _atomic_write(path, to_toml(config))
    return path


def to_toml(config: Mapping[str, Mapping[str, Any]]) -> str:
    """A TOML document for a ``{section: {field: value}}`` dict. Nested mappings become
    sub-tables; ``None`` (which TOML cannot express) becomes a comment naming the field."""
    out = ["# The resolved configuration of this run (python -m rlrun --config <this file>)."]
    for name, section in config.items():
        out.extend(_table(name, section))
    return "\n".join(out) + "\n"


def _table(name: str, table: Mapping[str, Any]) -> list[str]:
    lines = ["", f"[{name}]"]
    subtables: list[tuple[str, Mapping[str, Any]]] = []
    for key, value in table.items():
        if isinstance(value, Mapping):
            subtables.append((f"{name}.{_key(key)}", value))
        elif value is None:
            lines.append(f"# {_key(key)} is unset (None)")
        else:
            lines.append(f"{_key(key)} = {_value(value)}")
    for sub_name, sub in subtables:
        lines.extend(_table(sub_name, sub))
    return lines


def _key(key: object) -> str:
    text = str(key)
    if text and all(c.isalnum() or c in "_-" for c in text):
        return text
    return json.dumps(text)


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    return json.dumps(str(value))


def check_not_file(run_dir: Path) -> None:
    """Raise :class:`RunDirError` when ``run_dir`` names an existing file."""
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(
            f"trainer.run_dir = {str(run_dir)!r} is an existing file, not a directory; "
            "choose another trainer.run_dir"
        )
