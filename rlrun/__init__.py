"""The command-line entry point (composition root): picks a backend and runs the trainer.

This is the only place that imports both the trainer and the Ray adapter; ``runtime`` and
``ppo`` stay Ray-free and ``runtime_ray`` never imports ``ppo`` (import-linter enforces it).
"""

from rlrun.__main__ import build_backend, main

__all__ = ["build_backend", "main"]
