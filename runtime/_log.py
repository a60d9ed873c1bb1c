"""Library-side logging: structlog loggers, never configured here (the entry point does that)."""

from __future__ import annotations

from typing import Any

import structlog

__all__ = ["get_logger"]


def get_logger(**initial: Any) -> Any:
    """A structlog logger bound to ``initial`` (role=..., rank=..., group=...)."""
    return structlog.get_logger("runtime").bind(**initial)
