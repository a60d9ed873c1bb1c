"""The Ray backend of the runtime: the only package that imports ray.

::

    from runtime import ResourcePool, WorkerGroup, WorkerSpec
    from runtime_ray import RayBackend

    with RayBackend() as backend:  # a local cluster, or RayBackend("auto") to connect
        group = WorkerGroup(backend, WorkerSpec.of(Actor), ResourcePool.create([4]))

Detached groups (``ResourcePool.create(..., detached=True)``) outlive their driver; another
driver reaches them with :meth:`RayBackend.attach` or :func:`attach`.
"""

from runtime_ray._backend import RayBackend, RayPending, RayWorker, attach
from runtime_ray._host_actor import is_call_task

__all__ = ["RayBackend", "RayPending", "RayWorker", "attach", "is_call_task"]
