"""The one cast of the adapter, plus two small helpers over Ray's typed surface.

Ray's untyped or mistyped surfaces (client-mode wrapped ``ray.util.placement_group`` and
friends, ``ray.nodes``, ``ray.remote(concurrency_groups=...)``, ``ActorClass.options().remote``)
are typed by the stubs in ``typings/ray`` (top level), so the adapter calls them directly.
What is left is :func:`host_ref`: attribute access on an ``ActorHandle`` is untyped (remote
methods are reached by name), so method calls on our host actor go through
:class:`HostActorRef`, a small typed view of its fixed methods, and :func:`host_method`, a
generated per-worker-method one reached by its name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, TypeVar, cast

import ray
import ray.util
from ray.actor import ActorClass, ActorHandle
from ray.util.placement_group import PlacementGroup

__all__ = [
    "HostActorRef",
    "actor_class",
    "create_actor",
    "find_placement_group",
    "gcs_address",
    "host_method",
    "host_ref",
]

T = TypeVar("T")


class _RemoteCall(Protocol):
    def remote(self, *args: Any, **kwargs: Any) -> ray.ObjectRef[Any]: ...


class HostActorRef(Protocol):
    """The remote methods of :class:`runtime_ray._host_actor.RayHost`, as the driver sees them."""

    @property
    def start(self) -> _RemoteCall: ...
    @property
    def invoke(self) -> _RemoteCall: ...
    @property
    def ping(self) -> _RemoteCall: ...
    @property
    def nop(self) -> _RemoteCall: ...


def host_ref(handle: ActorHandle[Any]) -> HostActorRef:
    """A typed view of a host actor handle (``ActorHandle`` attribute access is untyped)."""
    return cast(HostActorRef, handle)


def host_method(handle: ActorHandle[Any], name: str) -> _RemoteCall:
    """The remote method ``name`` of a host actor (one generated per worker method)."""
    method: _RemoteCall = getattr(handle, name)
    return method


def actor_class(cls: type[T], *, concurrency_groups: Mapping[str, int]) -> ActorClass[T]:
    """``ray.remote(concurrency_groups=...)(cls)``: concurrency groups can only be declared
    here, not in ``.options()``."""
    return ray.remote(concurrency_groups=dict(concurrency_groups))(cls)


def create_actor(cls: ActorClass[T], options: Mapping[str, Any], *args: Any) -> ActorHandle[T]:
    """``cls.options(**options).remote(*args)``."""
    return cls.options(**options).remote(*args)


def find_placement_group(name: str) -> PlacementGroup | None:
    """``ray.util.get_placement_group(name)`` in this driver's namespace; ``None`` if none."""
    try:
        return ray.util.get_placement_group(name)
    except ValueError:
        return None


def gcs_address() -> str:
    """The connected cluster's GCS address."""
    return ray.get_runtime_context().gcs_address
