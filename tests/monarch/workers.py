"""Plain worker classes for the Monarch-only tests (importable by Monarch's processes)."""

from __future__ import annotations

import time

from runtime import Dispatch, register

__all__ = ["Adder", "Sleepy"]


class Sleepy:
    """A worker whose constructor takes ``seconds`` (a hang, for a short start deadline)."""

    def __init__(self, seconds: float) -> None:
        time.sleep(seconds)

    @register(Dispatch.ONE_TO_ALL)
    def noop(self) -> None:
        return None


class Adder:
    """Small calls with and without arguments (the generated-endpoint path)."""

    def __init__(self, base: int = 0) -> None:
        self.base = base

    @register(Dispatch.ONE_TO_ALL)
    def add(self, x: int, y: int = 0) -> int:
        return self.base + x + y

    @register(Dispatch.ONE_TO_ALL)
    def fail(self, message: str) -> None:
        raise KeyError(message)
