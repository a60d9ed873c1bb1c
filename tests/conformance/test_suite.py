"""The shipped conformance suite, run on every backend of ``conftest.py``."""

from runtime.testing.conformance.suite import *  # noqa: F403
