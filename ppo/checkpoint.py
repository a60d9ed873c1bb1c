"""Atomic checkpoints: ``<run_dir>/checkpoints/step_<N>/`` plus a ``latest`` pointer.

A checkpoint is written into a temporary directory (each role writes its own file there,
fsynced), then ``trainer.pt`` and ``meta.json`` are added, the directory is fsynced and renamed
to ``step_<N>``; only then is ``latest`` replaced, itself through a temporary file, fsync and
rename. A crash at any point leaves either the previous checkpoint or the new one, never a
half-written one. Everything is loaded with ``torch.load(weights_only=True)``.

``meta.json`` records the run the checkpoint belongs to (``run_id``), its step and whatever the
trainer adds (the resolved config, the tokenizer in use). Contracts:

- pruning only removes checkpoints of the current run (same ``run_id``) older than the one just
  written; checkpoints of another run, of a later step, or without ``meta.json`` are kept;
- ``latest`` always names a complete checkpoint; a pointer to a missing or incomplete one is
  reported (:class:`CheckpointError`), never silently treated as "no checkpoint".
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from ppo.config import ConfigError

__all__ = ["CheckpointError", "CheckpointManager", "checkpoint_steps", "new_run_id"]

_PREFIX = "step_"
META = "meta.json"


class CheckpointError(ConfigError):
    """A checkpoint or the ``latest`` pointer cannot be used; the message says how to fix it."""


def new_run_id() -> str:
    """A fresh identifier for a run (stored in each of its checkpoints)."""
    return uuid.uuid4().hex[:12]


def checkpoint_steps(root: Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of every ``step_<N>`` directory under ``root``, by step."""
    if not root.is_dir():
        return []
    return sorted(
        (int(p.name[len(_PREFIX) :]), p)
        for p in root.iterdir()
        if p.is_dir() and p.name.startswith(_PREFIX) and p.name[len(_PREFIX) :].isdigit()
    )


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


class CheckpointManager:
    """Writes, finds and prunes checkpoints under ``run_dir/checkpoints``.

    ``run_id`` names the run whose checkpoints this manager writes and may prune; the trainer
    sets it (a new id for a fresh run, the checkpoint's id on resume).
    """

    def __init__(self, run_dir: str | Path, keep_last: int = 2, run_id: str | None = None) -> None:
        if keep_last < 1:
            raise ValueError(f"keep_last={keep_last!r}; need >= 1")
        self.root = Path(run_dir) / "checkpoints"
        self.keep_last = keep_last
        self.run_id = run_id if run_id is not None else new_run_id()

    def save(
        self,
        step: int,
        trainer_state: dict[str, Any],
        write_parts: Callable[[Path], None],
        meta: Mapping[str, Any] | None = None,
    ) -> Path:
        """Write checkpoint ``step``: ``write_parts(tmp_dir)`` lets the workers write their
        files, then ``trainer.pt`` and ``meta.json`` (``meta`` plus run id and step) are added,
        and the directory is published atomically. Refuses to replace another run's
        ``step_<N>``."""
        self.root.mkdir(parents=True, exist_ok=True)
        final = self.root / f"{_PREFIX}{step}"
        if final.exists() and self.read_meta(final).get("run_id") != self.run_id:
            raise CheckpointError(
                f"{final} belongs to another run; not replacing it. Move it away or choose "
                "another trainer.run_dir"
            )
        tmp = self.root / f".{_PREFIX}{step}.tmp-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        write_parts(tmp)
        with open(tmp / "trainer.pt", "wb") as fh:
            torch.save(trainer_state, fh)
        full_meta = {**(meta or {}), "run_id": self.run_id, "step": step}
        (tmp / META).write_text(json.dumps(full_meta, indent=2, sort_keys=True, default=str))
        for child in sorted(tmp.rglob("*")):  # roles may write directories (safetensors)
            if child.is_file():
                _fsync_file(child)
            else:
                _fsync_dir(child)
        _fsync_dir(tmp)
        if final.exists():  # the same run rewound to an earlier checkpoint and got here again
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(self.root)
        pointer_tmp = self.root / f".latest.tmp-{os.getpid()}"
        pointer_tmp.write_text(final.name + "\n")
        _fsync_file(pointer_tmp)
        os.replace(pointer_tmp, self.root / "latest")
        _fsync_dir(self.root)
        self._prune(step)
        return final

    def latest(self) -> Path | None:
        """The checkpoint ``latest`` points at, or None when there is no pointer.

        Raises :class:`CheckpointError` when the pointer names a missing or incomplete
        checkpoint (resuming "from scratch" would silently discard the run).
        """
        pointer = self.root / "latest"
        if not pointer.is_file():
            return None
        name = pointer.read_text().strip()
        target = self.root / name
        if not (target / "trainer.pt").is_file():
            have = [p.name for _, p in checkpoint_steps(self.root)]
            raise CheckpointError(
                f"{pointer} names {name!r}, which is missing or incomplete (checkpoints present: "
                f"{have or 'none'}); set trainer.resume to one of them (a path like "
                f"{self.root / 'step_N'}) or start afresh with trainer.resume='off' and "
                "trainer.overwrite=true (the old run is moved aside, not deleted)"
            )
        return target

    def resolve(self, resume: str) -> Path | None:
        """``"off"`` -> None; ``"auto"`` -> latest (or None); otherwise an explicit path."""
        if resume == "off":
            return None
        if resume == "auto":
            return self.latest()
        path = Path(resume)
        if not (path / "trainer.pt").is_file():
            raise CheckpointError(
                f"trainer.resume={resume!r} is not a checkpoint directory (no trainer.pt); use "
                "'auto', 'off' or a path like runs/x/checkpoints/step_10"
            )
        return path

    @staticmethod
    def load_trainer_state(path: Path) -> dict[str, Any]:
        state: dict[str, Any] = torch.load(path / "trainer.pt", weights_only=True)
        return state

    @staticmethod
    def read_meta(path: Path) -> dict[str, Any]:
        """``meta.json`` of checkpoint ``path`` ({} for checkpoints written before it existed)."""
        file = path / META
        if not file.is_file():
            return {}
        try:
            meta = json.loads(file.read_text())
        except json.JSONDecodeError as exc:
            raise CheckpointError(
                f"{file} is not valid JSON ({exc}); the checkpoint is damaged"
            ) from exc
        if not isinstance(meta, dict):
            raise CheckpointError(f"{file} holds {type(meta).__name__}, not a JSON object")
        return meta

    def _prune(self, current: int) -> None:
        """Keep the ``keep_last`` newest checkpoints of this run up to ``current``; never
        touch another run's checkpoints or later steps."""
        mine = [
            path
            for step, path in checkpoint_steps(self.root)
            if step <= current and self.read_meta(path).get("run_id") == self.run_id
        ]
        for path in mine[: max(0, len(mine) - self.keep_last)]:
            shutil.rmtree(path, ignore_errors=True)
