"""Tests of ``runtime_ray.RayBackend`` on a real local Ray cluster (marked ``ray``)."""
