"""The immutable worker context and how a plain worker reads it.

A worker never reads ``os.environ`` to learn its place: inside a worker (its constructor, its
methods, and any object it builds locally, such as a nested worker) :func:`current_context`
returns the :class:`WorkerContext` of the rank being run. Backends also export the standard
variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``,
``MASTER_PORT``, ``CUDA_VISIBLE_DEVICES``) before the worker is constructed, so
``torch.distributed.init_process_group()`` with the env method works unchanged.
"""

from __future__ import annotations

import contextvars
import socket
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TypeVar

import attrs

from runtime.errors import RuntimeErrorBase

__all__ = [
    "PROTECTED_ENV_KEYS",
    "NotInWorkerError",
    "WorkerContext",
    "check_extra_env",
    "current_context",
    "finalize_context",
    "free_port",
    "normalize_visible_devices",
]

T = TypeVar("T")

#: Variables the runtime owns; extra worker env may not override them.
PROTECTED_ENV_KEYS: frozenset[str] = frozenset(
    {
        "RANK",
        "WORLD_SIZE",
        "LOCAL_RANK",
        "LOCAL_WORLD_SIZE",
        "MASTER_ADDR",
        "MASTER_PORT",
        "CUDA_VISIBLE_DEVICES",
        "HIP_VISIBLE_DEVICES",
        "ROCR_VISIBLE_DEVICES",
        "ASCEND_RT_VISIBLE_DEVICES",
    }
)


class NotInWorkerError(RuntimeErrorBase, LookupError):
    """A worker-only accessor (``current_context``, ``sibling``, ``register_mesh``) was called
    outside a worker."""


@attrs.frozen(kw_only=True)
class WorkerContext:
    """Where one rank of a worker group runs. Immutable; built by the runtime, never by users.

    ``visible_devices`` holds the device ids this process may use, as the accelerator runtime
    names them (what ``CUDA_VISIBLE_DEVICES`` lists); empty for CPU-only workers.
    ``local_rank`` is the position among this group's processes on the same node.
    """

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    node_ip: str
    master_addr: str
    master_port: int
    visible_devices: tuple[str, ...] = ()
    role: str = "worker"
    group: str = "group"

    @property
    def cuda_visible_devices(self) -> str | None:
        """The ``CUDA_VISIBLE_DEVICES`` value, or None for a CPU-only worker."""
        return ",".join(self.visible_devices) if self.visible_devices else None

    def env(self) -> dict[str, str]:
        """The standard variables exported for this rank before its worker is constructed."""
        out = {
            "RANK": str(self.rank),
            "WORLD_SIZE": str(self.world_size),
            "LOCAL_RANK": str(self.local_rank),
            "LOCAL_WORLD_SIZE": str(self.local_world_size),
            "MASTER_ADDR": self.master_addr,
            "MASTER_PORT": str(self.master_port),
        }
        if self.visible_devices:
            out["CUDA_VISIBLE_DEVICES"] = ",".join(self.visible_devices)
        return out


_current: contextvars.ContextVar[WorkerContext | None] = contextvars.ContextVar(
    "runtime_worker_context", default=None
)


def current_context() -> WorkerContext:
    """The context of the rank being run. Raises :class:`NotInWorkerError` outside a worker."""
    ctx = _current.get()
    if ctx is None:
        raise NotInWorkerError(
            "current_context() was called outside a worker; it only works inside a worker's "
            "constructor or methods run through a WorkerGroup."
        )
    return ctx


@contextmanager
def _using_context(ctx: WorkerContext) -> Iterator[None]:
    token = _current.set(ctx)
    try:
        yield
    finally:
        _current.reset(token)


def check_extra_env(env: Mapping[str, str], *, where: str = "extra worker env") -> None:
    """Reject extra environment variables that would override a protected key."""
    bad = sorted(k for k in env if k in PROTECTED_ENV_KEYS)
    if bad:
        raise ValueError(
            f"{where} may not set {', '.join(bad)}: the runtime owns these variables "
            f"(protected: {', '.join(sorted(PROTECTED_ENV_KEYS))}). Remove them from the env."
        )
    for key, value in env.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"{where}: keys and values must be str, got {key!r}={value!r}")


def normalize_visible_devices(env: Mapping[str, str]) -> dict[str, str]:
    """Fold AMD's variables into ``CUDA_VISIBLE_DEVICES`` (returns the updated copy).

    ``HIP_VISIBLE_DEVICES`` is merged (it must agree with ``CUDA_VISIBLE_DEVICES`` when both
    are set); ``ROCR_VISIBLE_DEVICES`` alone is moved; ``ROCR`` together with ``CUDA`` is an
    error, since the two would filter devices twice.
    """
    out = dict(env)
    hip = out.pop("HIP_VISIBLE_DEVICES", None)
    cuda = out.get("CUDA_VISIBLE_DEVICES")
    if hip is not None:
        if cuda is not None and cuda != hip:
            raise ValueError(
                f"HIP_VISIBLE_DEVICES={hip!r} disagrees with CUDA_VISIBLE_DEVICES={cuda!r}; "
                "set only one of them."
            )
        out["CUDA_VISIBLE_DEVICES"] = hip
    rocr = out.get("ROCR_VISIBLE_DEVICES")
    if rocr is not None:
        if "CUDA_VISIBLE_DEVICES" in out:
            raise ValueError(
                "ROCR_VISIBLE_DEVICES and CUDA_VISIBLE_DEVICES are both set; unset "
                "ROCR_VISIBLE_DEVICES (the runtime selects devices with CUDA_VISIBLE_DEVICES)."
            )
        out["CUDA_VISIBLE_DEVICES"] = out.pop("ROCR_VISIBLE_DEVICES")
    return out


def free_port(host: str = "") -> int:
    """A TCP port that was free on this machine a moment ago (bind to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def finalize_context(
    planned: WorkerContext, assigned_ids: Sequence[str | int] | None, *, noset: bool = False
) -> WorkerContext:
    """The context a rank really runs with, given the accelerator ids its backend assigned.

    ``assigned_ids=None``: the backend assigns nothing itself, so the planned
    ``visible_devices`` are the ids (e.g. a backend that exports ``CUDA_VISIBLE_DEVICES`` from
    the plan before the process starts). Otherwise, normal mode: ``visible_devices`` become the
    assigned ids (what the backend exported; the plan only guessed them). NOSET mode
    (``noset=True``, the backend leaves every device visible): ``visible_devices`` is empty
    and ``local_rank`` is the first assigned id (the device index to use, ``cuda:{local_rank}``),
    as verl does; with no ids the planned ``local_rank`` stays.
    """
    if assigned_ids is None:
        if not noset:
            return planned
        assigned_ids = planned.visible_devices
    ids = tuple(str(i) for i in assigned_ids)
    if noset:
        local_rank = int(ids[0]) if ids else planned.local_rank
        return attrs.evolve(planned, visible_devices=(), local_rank=local_rank)
    return attrs.evolve(planned, visible_devices=ids)
