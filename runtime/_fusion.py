"""Fusion: several roles in one host per rank, each seen through its own typed group view."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from runtime._backend import Backend
from runtime._group import GroupCore, SpawnOptions, WorkerGroup, spawn_core
from runtime._placement import ResourcePool
from runtime._register import Method, registered_methods
from runtime._spec import WorkerSpec
from runtime.errors import FusionError

__all__ = ["FusedGroup", "fuse"]

W = TypeVar("W")


class FusedGroup:
    """Colocated roles sharing one host per rank.

    ``view(role, cls)`` is a :class:`WorkerGroup` of that role with the same typed calls as a
    group of its own. Inside a worker, :func:`runtime.sibling` reaches the other roles.
    """

    def __init__(self, core: GroupCore, timeout: float | None) -> None:
        self._core = core
        self._timeout = timeout

    @property
    def roles(self) -> list[str]:
        return list(self._core.roles)

    @property
    def name(self) -> str:
        return self._core.name

    @property
    def world_size(self) -> int:
        return len(self._core.workers)

    def view(self, role: str, cls: type[W]) -> WorkerGroup[W]:
        """The group view of ``role`` (unknown role or wrong class: :class:`FusionError`)."""
        return WorkerGroup.view(self._core, role, cls, timeout=self._timeout)

    def role_of(self, method: Method[Any, Any, Any, Any] | str) -> str:
        """The role providing ``method``; a name two roles register is a clash
        (:class:`FusionError`) to be resolved by calling through ``view(role, cls)``."""
        name = method if isinstance(method, str) else method.meta.name
        owners = [r for r, cls in self._core.roles.items() if name in registered_methods(cls)]
        if isinstance(method, Method):
            owners = [r for r in owners if getattr(self._core.roles[r], name, None) is method]
        if not owners:
            raise FusionError(
                f"no role of fused group {self.name!r} registers {name!r}; roles: {self.roles}"
            )
        if len(owners) > 1:
            raise FusionError(
                f"method-name clash in fused group {self.name!r}: roles {owners} all register "
                f"{name!r}; call it through fused.view(role, cls) to say which"
            )
        return owners[0]

    def call_by_name(self, name: str, /, *args: Any, **kwargs: Any) -> Any:
        """Call ``name`` on the one role that registers it (clash: :class:`FusionError`)."""
        role = self.role_of(name)
        return self.view(role, self._core.roles[role]).call_by_name(name, *args, **kwargs)

    def check_alive(self) -> None:
        self.view(self.roles[0], self._core.roles[self.roles[0]]).check_alive()

    def shutdown(self) -> None:
        self.view(self.roles[0], self._core.roles[self.roles[0]]).shutdown()


def fuse(
    backend: Backend,
    roles: Mapping[str, WorkerSpec[Any]],
    pool: ResourcePool,
    *,
    name: str | None = None,
    timeout: float | None = None,
    master_addr: str | None = None,
    master_port: int | None = None,
    port_range: tuple[int, int] | None = None,
    start_timeout: float = 300.0,
) -> FusedGroup:
    """Start one host per rank of ``pool`` holding an instance of every role in ``roles``
    (built in the mapping's order)."""
    options = SpawnOptions(name, master_addr, master_port, port_range, start_timeout)
    core = spawn_core(backend, roles, pool, options)
    return FusedGroup(core, timeout)
