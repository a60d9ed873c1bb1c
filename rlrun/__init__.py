"""The command-line entry point (composition root): picks a backend and runs the trainer.

This is the only place that imports both the trainer and the Ray adapter; ``runtime`` and
``ppo`` stay Ray-free and ``runtime_ray`` never imports ``ppo`` (import-linter enforces it).

``build_backend`` and ``main`` live in ``rlrun.__main__`` and are loaded on first use, so that
``python -m rlrun`` does not import ``rlrun.__main__`` twice (which makes runpy warn).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rlrun.__main__ import build_backend, main

__all__ = ["build_backend", "main"]


def __getattr__(name: str) -> object:
    if name in __all__:
        return getattr(importlib.import_module("rlrun.__main__"), name)
    raise AttributeError(f"module 'rlrun' has no attribute {name!r}")
