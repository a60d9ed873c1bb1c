"""Fusion: several roles in one host per rank, each seen through its own typed group view."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from runtime._backend import Backend
from runtime._group import GroupCore, SpawnOptions, WorkerGroup, spawn_core
from runtime._placement import ResourcePool
from runtime._register import Registered, registered_methods
from runtime._spec import WorkerSpec
from runtime.errors import FusionError

__all__ = ["FusedGroup", "fuse"]

W = TypeVar("W")


class FusedGroup:
    """Colocated roles sharing one host per rank.

    ``view(role, cls)`` is a :class:`WorkerGroup` of that role with the same typed calls as a
    group of its own. Inside a worker, :func:`runtime.sibling` reaches the other roles.
    """

    def __init__(self, core: GroupCore, timeout: float | None, pad: bool = False) -> None:
        self._core = core
        self._timeout = timeout
        self._pad = pad

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
        """The group view of ``role`` (unknown role or wrong class: :class:`FusionError`),
        with this fused group's deadline and padding setting."""
        return WorkerGroup.view(self._core, role, cls, timeout=self._timeout, pad=self._pad)

    def with_timeout(self, seconds: float | None) -> FusedGroup:
        """This fused group whose views use ``seconds`` as their deadline."""
        return FusedGroup(self._core, seconds, self._pad)

    def with_padding(self, enabled: bool = True) -> FusedGroup:
        """This fused group whose views pad uneven batches (see ``WorkerGroup.with_padding``)."""
        return FusedGroup(self._core, self._timeout, enabled)

    def role_of(self, method: Registered[Any, Any] | str) -> str:
        """The role providing ``method``; a name two roles register is a clash
        (:class:`FusionError`) to be resolved by calling through ``view(role, cls)``."""
        name = method if isinstance(method, str) else method.meta.name
        owners = [r for r, cls in self._core.roles.items() if name in registered_methods(cls)]
        if isinstance(method, Registered):
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
    timeout: float | None = None,
    options: SpawnOptions | None = None,
) -> FusedGroup:
    """Start one host per rank of ``pool`` holding an instance of every role in ``roles``
    (built in the mapping's order). ``timeout`` is the views' default deadline; ``options``
    says how the hosts are named and started, as for :class:`WorkerGroup`."""
    core = spawn_core(backend, roles, pool, options)
    return FusedGroup(core, timeout)
