"""Runs the shipped conformance suite (:mod:`runtime.testing.conformance`) on our backends.

``conftest.py`` parametrizes ``runtime_backend`` over the in-process backend, Ray and Monarch
(each skipped, with the reason, when its engine is not installed).
"""
