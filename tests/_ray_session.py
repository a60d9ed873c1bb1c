"""One local Ray cluster per pytest session, shared by every test that needs Ray.

``ray_backend()`` starts it on first use (``ray.init`` costs ~3 s here) and returns the same
:class:`runtime_ray.RayBackend` afterwards; it is shut down when the interpreter exits. The
cluster has 16 logical CPUs and 4 **fake** GPUs (Ray schedules and assigns GPU ids as on real
hardware; ``torch.cuda`` stays unavailable), enough for several small groups at once.

This module imports ray lazily, so importing it never fails; callers guard with
``pytest.importorskip("ray")`` first (``tests/ray/conftest.py`` does).

Why ``PYTHONPATH``: worker classes used by tests live in ``tests/...`` modules, which Ray's
worker processes must import to unpickle them. Ray only adds the *driver's working
directory* to its workers' ``sys.path``, so that works when pytest runs from the repository
root and nowhere else; the editable install does not cover ``tests`` (and an install made
before a package gained its ``__init__.py`` resolves it as a namespace package from other
directories). Putting the repository root on the workers' ``PYTHONPATH`` (through the
backend's ``runtime_env``) makes the suite independent of the working directory.
"""

from __future__ import annotations

import atexit
import threading
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from runtime_ray import RayBackend

__all__ = ["REPO_ROOT", "ray_backend", "shutdown_ray_backend"]

#: The repository root (what Ray's workers get on ``PYTHONPATH``).
REPO_ROOT = Path(__file__).resolve().parent.parent

_lock = threading.Lock()
_backend: RayBackend | None = None


def ray_backend() -> RayBackend:
    """The session's backend (started on first call: 16 CPUs, 4 fake GPUs)."""
    global _backend
    with _lock:
        if _backend is None:
            from runtime_ray import RayBackend

            _backend = RayBackend(
                num_cpus=16,
                num_gpus=4,
                runtime_env={"env_vars": {"PYTHONPATH": str(REPO_ROOT)}},
            )
            atexit.register(shutdown_ray_backend)
        return _backend


def shutdown_ray_backend() -> None:
    """Stop the session cluster if it was started (idempotent; also runs at exit)."""
    global _backend
    with _lock:
        backend, _backend = _backend, None
    if backend is not None:
        backend.shutdown(kill_detached=True)
