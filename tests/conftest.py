"""Generic test hygiene for the whole suite.

Backend fixtures live elsewhere; this file only keeps tests independent of each other:
``os.environ`` and structlog's configuration are restored after every test, Hypothesis runs with
one shared profile, and tests marked ``ray`` are skipped (with the fix) when ray is not installed.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator

import pytest
import structlog
from hypothesis import settings

# The conformance suite's fixtures (runtime_backend, backend, faults, calc4, ...).
pytest_plugins = ["runtime.testing.conformance.plugin"]

# tests/typing/ holds files that mypy checks and pytest never runs (see tests/typing/README.md).
collect_ignore_glob = ["typing/*"]

settings.register_profile("repo", deadline=None, max_examples=50)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repo"))


def ray_available() -> bool:
    """Whether ray is installed (without importing it: that costs seconds)."""
    return importlib.util.find_spec("ray") is not None


def monarch_available() -> bool:
    """Whether torchmonarch is installed (without importing it)."""
    return importlib.util.find_spec("monarch") is not None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip every test marked ``ray`` (``monarch``) when ray (torchmonarch) is not installed
    (the core-only install has neither)."""
    missing = {
        "ray": None if ray_available() else "ray is not installed; pip install '.[ray]'",
        "monarch": None
        if monarch_available()
        else "torchmonarch is not installed; pip install '.[monarch]'",
    }
    for marker, reason in missing.items():
        if reason is None:
            continue
        skip = pytest.mark.skip(reason=reason)
        for item in items:
            if item.get_closest_marker(marker) is not None:
                item.add_marker(skip)


@pytest.fixture(autouse=True)
def _restore_environ() -> Iterator[None]:
    """Undo any ``os.environ`` change a test (or a backend it starts) makes."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        for key in set(os.environ) - set(saved):
            del os.environ[key]
        for key, value in saved.items():
            if os.environ.get(key) != value:
                os.environ[key] = value


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    """Undo any ``structlog.configure`` a test (or the entry point it runs) makes."""
    try:
        yield
    finally:
        structlog.reset_defaults()
