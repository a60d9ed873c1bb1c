"""Library-side logging: structlog loggers, never configured here (the entry point does that)."""

from __future__ import annotations

from typing import Any

import structlog

__all__ = ["get_logger"]


def get_logger(**initial: Any) -> Any:
    """A structlog logger bound to ``initial`` (role=..., rank=..., group=...).

    Lazy: it takes structlog's configuration at its first use, not at import, so modules may
    create their loggers at import time and still follow what the entry point configures."""
    return structlog.get_logger("runtime", **initial)
