"""Plain worker classes for the Monarch-only tests (importable by Monarch's processes)."""

from __future__ import annotations

import time

from runtime import Dispatch, register

__all__ = ["Sleepy"]


class Sleepy:
    """A worker whose constructor takes ``seconds`` (a hang, for a short start deadline)."""

    def __init__(self, seconds: float) -> None:
        time.sleep(seconds)

    @register(Dispatch.ONE_TO_ALL)
    def noop(self) -> None:
        return None
