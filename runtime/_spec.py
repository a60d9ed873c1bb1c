"""Worker specs: a plain class plus its constructor arguments and backend options."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Generic, ParamSpec, TypeVar

import attrs

from runtime._context import check_extra_env

__all__ = ["WorkerSpec"]

W = TypeVar("W")
P = ParamSpec("P")

_NOT_A_CLASS = (
    "WorkerSpec needs a plain class, got {value!r} ({kind}). Pass the class itself: not an "
    "instance or a function, and not a class wrapped by a backend decorator such as "
    "@ray.remote (the backend would silently drop the options that wrapper carries)."
)


@attrs.frozen
class WorkerSpec(Generic[W]):
    """How to build one worker: ``cls(*args, **kwargs)``, run remotely with ``options``.

    Build it with :meth:`of`, which type-checks the constructor arguments against ``cls``::

        spec = WorkerSpec.of(Actor, lr=1e-3)

    ``options`` are backend-specific scheduling options (for Ray: ``num_cpus``,
    ``resources``, ...); ``env`` holds extra environment variables for every rank (protected
    runtime variables such as ``RANK`` are rejected with ``ValueError``).
    """

    cls: type[W]
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = attrs.field(factory=dict)
    options: Mapping[str, Any] = attrs.field(factory=dict)
    env: Mapping[str, str] = attrs.field(factory=dict)

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.cls, type):
            raise ValueError(_NOT_A_CLASS.format(value=self.cls, kind=type(self.cls).__name__))
        check_extra_env(self.env, where=f"env of worker {self.cls.__qualname__}")

    @classmethod
    def of(cls, worker_cls: Callable[P, W], /, *args: P.args, **kwargs: P.kwargs) -> WorkerSpec[W]:
        """A spec whose constructor arguments mypy checks against ``worker_cls``."""
        if not isinstance(worker_cls, type):
            raise ValueError(_NOT_A_CLASS.format(value=worker_cls, kind=type(worker_cls).__name__))
        return WorkerSpec(worker_cls, tuple(args), dict(kwargs))

    def with_options(self, **options: Any) -> WorkerSpec[W]:
        """A copy with ``options`` merged into the backend options."""
        return attrs.evolve(self, options={**self.options, **options})

    def with_env(self, **env: str) -> WorkerSpec[W]:
        """A copy with extra environment variables (protected keys raise ``ValueError``)."""
        return attrs.evolve(self, env={**self.env, **env})

    def build(self) -> W:
        """Construct the worker in this process (what a host does on its rank)."""
        return self.cls(*self.args, **self.kwargs)
