"""Worker classes of the fault matrix (module level: every backend's ranks import them)."""

from __future__ import annotations

import os
import time

from runtime import Batch, Dispatch, register

__all__ = ["SlowStart", "explode", "process_id"]


class SlowStart:
    """A worker whose constructor takes ``seconds`` (a hang, under a short start deadline)."""

    def __init__(self, seconds: float) -> None:
        time.sleep(seconds)

    @register(Dispatch.ONE_TO_ALL)
    def noop(self) -> None:
        return None


def explode(data: Batch) -> Batch:
    """A producer's step that fails on every rank (for ``Calc.apply``)."""
    raise ValueError(f"producer exploded on {len(data)} rows")


def process_id(worker: object) -> int:
    """The rank's process id (``group.run_function(process_id)``)."""
    return os.getpid()
