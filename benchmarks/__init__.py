"""Benchmarks: ``python -m benchmarks.suite`` (``make bench``) and the standalone ``bench_*.py``
scripts (``make bench-training`` runs the slow training ones)."""
