"""Stub package: only the surface our tests use (tensorboard ships no type information)."""
