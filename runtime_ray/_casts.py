"""Typed wrappers around the parts of Ray whose annotations are missing or unusable.

This is the **only** module of the adapter that uses :func:`typing.cast`. Every function here
gives one untyped (or mistyped) Ray surface a precise signature, so the rest of
``runtime_ray`` type-checks under ``mypy --strict`` without ``Any`` leaking in:

* ``ray.util.placement_group`` and friends, ``ray.nodes``, ``ray.cluster_resources``,
  ``ray.available_resources`` and ``ray.util.get_node_ip_address`` are decorated with
  untyped wrappers, so mypy sees them as ``Any``;
* ``ray.remote(concurrency_groups=...)`` is a valid call that Ray's overloads omit;
* ``ActorClass.options(...).remote(...)`` is typed ``ActorHandle[T] | type[T]``, and
  attribute access on an ``ActorHandle[T]`` is typed ``Never`` (``ActorHandle.__getattr__``),
  which makes mypy silently skip the rest of a function. Method calls on our host actor
  therefore go through :class:`HostActorRef`, a small typed view of its three methods.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar, cast

import ray
import ray.util
from ray import cloudpickle
from ray.actor import ActorClass, ActorHandle
from ray.util.placement_group import PlacementGroup
from ray.util.placement_group import placement_group as _placement_group
from ray.util.placement_group import placement_group_table as _placement_group_table
from ray.util.placement_group import remove_placement_group as _remove_placement_group

__all__ = [
    "HostActorRef",
    "actor_class",
    "available_resources",
    "cluster_resources",
    "create_actor",
    "create_placement_group",
    "find_placement_group",
    "gcs_address",
    "host_ref",
    "node_ip_address",
    "nodes",
    "pickle_launch",
    "placement_group_table",
    "remote_function",
    "remove_placement_group",
]

T = TypeVar("T")


class _RemoteCall(Protocol):
    def remote(self, *args: Any) -> ray.ObjectRef[Any]: ...


class HostActorRef(Protocol):
    """The remote methods of :class:`runtime_ray._host_actor.RayHost`, as the driver sees them."""

    @property
    def start(self) -> _RemoteCall: ...
    @property
    def invoke(self) -> _RemoteCall: ...
    @property
    def ping(self) -> _RemoteCall: ...


def host_ref(handle: ActorHandle[Any]) -> HostActorRef:
    """A typed view of a host actor handle (``ActorHandle`` attribute access is ``Never``)."""
    return cast(HostActorRef, handle)


def actor_class(cls: type[T], *, concurrency_groups: Mapping[str, int]) -> ActorClass[T]:
    """``ray.remote(concurrency_groups=...)(cls)`` (valid; missing from Ray's overloads).

    Concurrency groups can only be declared here, not in ``.options()``.
    """
    decorate = cast(Callable[..., Callable[[type[T]], ActorClass[T]]], ray.remote)
    return decorate(concurrency_groups=dict(concurrency_groups))(cls)


def create_actor(cls: ActorClass[T], options: Mapping[str, Any], *args: Any) -> ActorHandle[T]:
    """``cls.options(**options).remote(*args)`` (typed ``ActorHandle[T] | type[T]`` by Ray)."""
    return cast(ActorHandle[T], cls.options(**options).remote(*args))


def remote_function(
    fn: Callable[..., T], options: Mapping[str, Any]
) -> Callable[..., ray.ObjectRef[T]]:
    """``ray.remote(fn).options(**options).remote`` (options such as a node-affinity
    scheduling strategy are not in Ray's typed overloads)."""
    remote_fn = cast(Any, ray.remote(fn)).options(**options)
    return cast(Callable[..., ray.ObjectRef[T]], remote_fn.remote)


def create_placement_group(
    bundles: Sequence[Mapping[str, float]], *, strategy: str, name: str, lifetime: str | None
) -> PlacementGroup:
    """``ray.util.placement_group`` (untyped: wrapped by Ray's client-mode decorator)."""
    return cast(
        PlacementGroup,
        _placement_group(
            [dict(b) for b in bundles], strategy=strategy, name=name, lifetime=lifetime
        ),
    )


def find_placement_group(name: str) -> PlacementGroup | None:
    """``ray.util.get_placement_group(name)`` in this driver's namespace; ``None`` if none."""
    try:
        return cast(PlacementGroup, ray.util.get_placement_group(name))
    except ValueError:
        return None


def remove_placement_group(pg: PlacementGroup) -> None:
    """``ray.util.remove_placement_group`` (untyped)."""
    _remove_placement_group(pg)


def placement_group_table(pg: PlacementGroup) -> dict[str, Any]:
    """``ray.util.placement_group_table(pg)``: state, bundles, ``bundles_to_node_id``."""
    return cast(dict[str, Any], _placement_group_table(pg))


def nodes() -> list[dict[str, Any]]:
    """``ray.nodes()``: one dict per node (``NodeID``, ``NodeManagerAddress``, ``Alive``, ...)."""
    return cast(Callable[[], list[dict[str, Any]]], ray.nodes)()


def cluster_resources() -> dict[str, float]:
    """``ray.cluster_resources()`` (untyped)."""
    return cast(Callable[[], dict[str, float]], ray.cluster_resources)()


def available_resources() -> dict[str, float]:
    """``ray.available_resources()`` (untyped)."""
    return cast(Callable[[], dict[str, float]], ray.available_resources)()


def gcs_address() -> str:
    """The connected cluster's GCS address (``RuntimeContext.gcs_address`` is untyped)."""
    return cast(str, ray.get_runtime_context().gcs_address)


def node_ip_address() -> str:
    """``ray.util.get_node_ip_address()``: this process's node IP (untyped)."""
    return cast(Callable[[], str], ray.util.get_node_ip_address)()


def pickle_launch(value: object) -> bytes:
    """``cloudpickle.dumps(value)``: classes defined in ``__main__`` travel by value, like
    Ray's own argument serialization (the result loads with plain :func:`pickle.loads`)."""
    dumps = cast(Callable[..., bytes], cloudpickle.dumps)
    return dumps(value, protocol=5)
