"""The backend conformance suite: one set of tests, run against every backend.

``conftest.py`` parametrizes a ``backend`` fixture over the in-process backend and Ray; worker
classes live in :mod:`tests.conformance.workers` so Ray worker processes can import them.
"""
