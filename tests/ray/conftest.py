"""Fixtures for the Ray tests: the shared session cluster and a module-scoped backend.

The whole package is skipped when ray is not installed (the core-only install).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

pytest.importorskip("ray")

from runtime_ray import RayBackend
from tests._ray_session import ray_backend, shutdown_ray_backend


@pytest.fixture(scope="session")
def backend() -> Iterator[RayBackend]:
    """The session's :class:`RayBackend` (one local cluster: 16 CPUs, 4 fake GPUs)."""
    yield ray_backend()
    shutdown_ray_backend()
