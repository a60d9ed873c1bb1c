"""Typing tests for ppo.trackers.Tracker: a user class conforms without a base class; one that
lacks a method, or takes the wrong row type, does not (checked by mypy, never run)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ppo.trackers import Tracker


class PrintTracker:
    def log_params(self, params: Mapping[str, Any]) -> None:
        print(params)

    def log(self, row: Mapping[str, Any], step: int) -> None:
        print(step, row)

    def close(self) -> None:
        pass


class NoClose:
    def log_params(self, params: Mapping[str, Any]) -> None:
        pass

    def log(self, row: Mapping[str, Any], step: int) -> None:
        pass


class StringStep:
    def log_params(self, params: Mapping[str, Any]) -> None:
        pass

    def log(self, row: Mapping[str, Any], step: str) -> None:
        pass

    def close(self) -> None:
        pass


ok: Tracker = PrintTracker()
missing: Tracker = NoClose()  # type: ignore[assignment]
wrong: Tracker = StringStep()  # type: ignore[assignment]
