"""The backends our conformance run covers: ``runtime_backend`` parametrized per engine.

``inprocess`` is a fresh :class:`runtime.testing.InProcessBackend`; ``ray`` the session-wide
local cluster of :mod:`tests._ray_session` (marked ``ray``, skipped when ray is missing);
``monarch`` one :class:`runtime_monarch.MonarchBackend` for the session (marked ``monarch``;
its idle processes are reused by later groups, which keeps the run short). The
suite's fixtures come from the plugin loaded in ``tests/conftest.py``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from runtime import Backend
from runtime.testing import InProcessBackend

BACKENDS = [
    pytest.param("inprocess", id="inprocess"),
    pytest.param("ray", id="ray", marks=pytest.mark.ray),
    pytest.param("monarch", id="monarch", marks=pytest.mark.monarch),
]


def _ray_backend() -> Backend:
    pytest.importorskip("ray", reason="ray is not installed; install it with: pip install '.[ray]'")
    from tests._ray_session import ray_backend

    return ray_backend()


def _monarch_backend() -> Iterator[Backend]:
    pytest.importorskip(
        "monarch", reason="monarch is not installed; install it with: pip install '.[monarch]'"
    )
    from runtime_monarch import MonarchBackend

    with MonarchBackend() as backend:
        yield backend


@pytest.fixture(scope="session", params=BACKENDS)
def runtime_backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """One backend per parametrization (the Ray one is shared with the whole session)."""
    name: str = request.param
    if name == "inprocess":
        inprocess = InProcessBackend()
        yield inprocess
        inprocess.shutdown()
    elif name == "ray":
        yield _ray_backend()
    else:
        yield from _monarch_backend()
