"""The Monarch backend of the runtime: the only package that imports monarch.

::

    from runtime import ResourcePool, WorkerGroup, WorkerSpec
    from runtime_monarch import MonarchBackend

    with MonarchBackend() as backend:  # one process per rank on this host
        group = WorkerGroup(backend, WorkerSpec.of(Actor), ResourcePool.create([4]))

Importing this package sets ``HYPERACTOR_MESH_SUPERVISION_POLL_FREQUENCY`` (1 s unless already
set) so a dead rank is reported within seconds, and imports torch before monarch (Monarch's
native module links libtorch). ``monarch.gradient`` is never imported (it refuses our torch).
"""

import os

os.environ.setdefault("HYPERACTOR_MESH_SUPERVISION_POLL_FREQUENCY", "1s")

import torch  # noqa: F401  (before monarch)

from runtime_monarch._backend import MonarchBackend, MonarchPending, MonarchWorker

__all__ = ["MonarchBackend", "MonarchPending", "MonarchWorker"]
