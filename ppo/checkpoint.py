"""Atomic checkpoints: ``<run_dir>/checkpoints/step_<N>/`` plus a ``latest`` pointer.

A checkpoint is written into a temporary directory (each role writes its own file there,
fsynced), then the directory is fsynced and renamed to ``step_<N>``; only then is ``latest``
replaced, itself through a temporary file, fsync and rename. A crash at any point leaves
either the previous checkpoint or the new one, never a half-written one. Everything is loaded
with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

__all__ = ["CheckpointManager"]

_PREFIX = "step_"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class CheckpointManager:
    """Writes, finds and prunes checkpoints under ``run_dir/checkpoints``."""

    def __init__(self, run_dir: str | Path, keep_last: int = 2) -> None:
        if keep_last < 1:
            raise ValueError(f"keep_last={keep_last!r}; need >= 1")
        self.root = Path(run_dir) / "checkpoints"
        self.keep_last = keep_last

    def save(
        self, step: int, trainer_state: dict[str, Any], write_parts: Callable[[Path], None]
    ) -> Path:
        """Write checkpoint ``step``: ``write_parts(tmp_dir)`` lets the workers write their
        files, then ``trainer.pt`` is added, and the directory is published atomically."""
        self.root.mkdir(parents=True, exist_ok=True)
        final = self.root / f"{_PREFIX}{step}"
        tmp = self.root / f".{_PREFIX}{step}.tmp-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        write_parts(tmp)
        trainer_file = tmp / "trainer.pt"
        with open(trainer_file, "wb") as fh:
            torch.save(trainer_state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        for child in sorted(tmp.rglob("*")):
            if child.is_file():
                with open(child, "rb") as fh:
                    os.fsync(fh.fileno())
            else:
                _fsync_dir(child)
        _fsync_dir(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(self.root)
        pointer_tmp = self.root / f".latest.tmp-{os.getpid()}"
        pointer_tmp.write_text(final.name + "\n")
        with open(pointer_tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(pointer_tmp, self.root / "latest")
        _fsync_dir(self.root)
        self._prune()
        return final

    def latest(self) -> Path | None:
        """The checkpoint ``latest`` points at, or None."""
        pointer = self.root / "latest"
        if not pointer.is_file():
            return None
        target = self.root / pointer.read_text().strip()
        return target if (target / "trainer.pt").is_file() else None

    def resolve(self, resume: str) -> Path | None:
        """``"off"`` -> None; ``"auto"`` -> latest (or None); otherwise an explicit path."""
        if resume == "off":
            return None
        if resume == "auto":
            return self.latest()
        path = Path(resume)
        if not (path / "trainer.pt").is_file():
            raise FileNotFoundError(
                f"trainer.resume={resume!r} is not a checkpoint directory (no trainer.pt); use "
                "'auto', 'off' or a path like runs/x/checkpoints/step_10"
            )
        return path

    @staticmethod
    def load_trainer_state(path: Path) -> dict[str, Any]:
        state: dict[str, Any] = torch.load(path / "trainer.pt", weights_only=True)
        return state

    def _prune(self) -> None:
        steps = sorted(
            (int(p.name[len(_PREFIX) :]), p)
            for p in self.root.iterdir()
            if p.is_dir() and p.name.startswith(_PREFIX) and p.name[len(_PREFIX) :].isdigit()
        )
        for _, path in steps[: max(0, len(steps) - self.keep_last)]:
            shutil.rmtree(path, ignore_errors=True)
