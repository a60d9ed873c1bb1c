"""The backend conformance suite, shipped so any backend can run it (needs pytest).

Every rule of :mod:`runtime.backend` has tests here, plus verl's single-controller behaviours
(dispatch modes, padding, futures, fusion, meshes, placement, errors and faults). To run it on
a backend, load the plugin and override one fixture::

    # conftest.py (top level)
    pytest_plugins = ["runtime.testing.conformance.plugin"]

    # test_conformance.py
    import pytest
    from runtime.testing.conformance.suite import *  # noqa: F403

    @pytest.fixture(scope="module")
    def runtime_backend():
        backend = MyBackend()
        yield backend
        backend.shutdown()

Worker classes live in :mod:`runtime.testing.conformance.workers` (importable in every rank's
process). Fault tests use a :class:`FaultHook`: the in-process backend's injection, or
:class:`ProcessFaults` (a rank's process exits from inside; slow and hung ranks sleep) for any
backend with one process per rank; override the ``runtime_fault_hook`` fixture otherwise.
"""

import pytest

# The suite's modules use plain ``assert``: let pytest rewrite them for useful failure messages.
pytest.register_assert_rewrite(
    *(
        f"runtime.testing.conformance.{name}"
        for name in (
            "suite",
            "suite_capacity",
            "suite_context_env",
            "suite_dispatch",
            "suite_errors_faults",
            "suite_fusion_mesh",
            "suite_padding_futures",
            "suite_placement",
            "suite_protocol",
            "suite_recovery",
            "suite_values",
        )
    )
)

from runtime.testing.conformance._support import (  # noqa: E402
    HANG_SECONDS,
    POOL_CPUS,
    FaultHook,
    InProcessFaults,
    ProcessFaults,
    cpu_pool,
    default_fault_hook,
)

__all__ = [
    "HANG_SECONDS",
    "POOL_CPUS",
    "FaultHook",
    "InProcessFaults",
    "ProcessFaults",
    "cpu_pool",
    "default_fault_hook",
]
