"""The fault matrix's backends: ``runtime_backend`` parametrized over every engine.

``inprocess`` (injected faults), ``ray`` (the session's shared local cluster; real process
kills) and ``monarch`` (its own :class:`runtime_monarch.MonarchBackend` with process reuse off,
so a killed, hung or failed rank's process must really be gone afterwards). The tests are
marked ``faults`` (``make test-faults`` runs just them). The suite's other fixtures
(``backend``, ``faults``) come from the conformance plugin loaded in ``tests/conftest.py``.
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


@pytest.fixture(scope="session", params=BACKENDS)
def runtime_backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """One backend per parametrization (the Ray one is shared with the whole session)."""
    name: str = request.param
    if name == "inprocess":
        inprocess = InProcessBackend()
        yield inprocess
        inprocess.shutdown()
    elif name == "ray":
        pytest.importorskip("ray", reason="ray is not installed; pip install '.[ray]'")
        from tests._ray_session import ray_backend

        yield ray_backend()
    else:
        pytest.importorskip(
            "monarch", reason="torchmonarch is not installed; pip install '.[monarch]'"
        )
        from runtime_monarch import MonarchBackend

        # 4 devices, like the session's Ray cluster's fake GPUs: a pool asking more is refused.
        with MonarchBackend(reuse_timeout=0.0, devices_per_node=4) as monarch:
            yield monarch
