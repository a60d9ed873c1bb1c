"""The runtime's exception hierarchy.

Every error the runtime raises on purpose is a :class:`RuntimeErrorBase` (subclassing the
builtin that fits its meaning, so ``except ValueError`` keeps working for callers that only
care about the category). Backends map their own exceptions into this hierarchy at their
boundary (``raise WorkerDiedError(...) from exc``) so user code never catches a Ray type::

    RuntimeErrorBase(Exception)
    ├── WorkerError                      something went wrong on a worker (role/rank/method known)
    │   ├── RemoteMethodError            the worker method raised; carries the remote traceback text
    │   ├── WorkerDiedError              the worker process is gone (crash, kill, OOM)
    │   └── WorkerStartError             the worker's constructor raised
    ├── CallTimeoutError(TimeoutError)   a deadline expired; names the ranks that did not answer
    ├── PlacementError                   the cluster cannot host the requested resource pool
    ├── DispatchError(ValueError)        bad arguments for a group call (counts, lengths, modes)
    ├── BatchError(ValueError)           inconsistent batch columns, conflicting concat/union
    ├── FusionError(ValueError)          unknown role, method-name clash between fused roles
    └── BackendUnavailableError(ImportError)  an optional backend is not installed

Remote failures keep the remote exception's type name, message and traceback as *text*, so
they survive pickling across processes even when the exception class itself does not.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "BackendUnavailableError",
    "BatchError",
    "CallTimeoutError",
    "DispatchError",
    "FusionError",
    "PlacementError",
    "RemoteMethodError",
    "RuntimeErrorBase",
    "WorkerDiedError",
    "WorkerError",
    "WorkerStartError",
]


class RuntimeErrorBase(Exception):
    """Base class of every error raised on purpose by the runtime and its backends."""


def _where(role: str | None, rank: int | None, method: str | None, node: str | None = None) -> str:
    parts: list[str] = []
    if role is not None:
        parts.append(f"role={role!r}")
    if rank is not None:
        parts.append(f"rank={rank}")
    if method is not None:
        parts.append(f"method={method!r}")
    if node is not None:
        parts.append(f"node={node!r}")
    return ", ".join(parts)


class WorkerError(RuntimeErrorBase):
    """A failure attributable to one worker; ``role``, ``rank`` and ``method`` say which."""

    def __init__(
        self,
        message: str,
        *,
        role: str | None = None,
        rank: int | None = None,
        method: str | None = None,
        node: str | None = None,
    ) -> None:
        self.role = role
        self.rank = rank
        self.method = method
        self.node = node
        self.detail = message
        where = _where(role, rank, method, node)
        super().__init__(f"[{where}] {message}" if where else message)

    def __reduce__(self) -> tuple[object, ...]:
        return (
            _rebuild_worker_error,
            (type(self), self.detail, self.role, self.rank, self.method, self.node, self.__dict__),
        )


def _rebuild_worker_error(
    cls: type[WorkerError],
    detail: str,
    role: str | None,
    rank: int | None,
    method: str | None,
    node: str | None,
    state: dict[str, object],
) -> WorkerError:
    err = cls.__new__(cls)
    WorkerError.__init__(err, detail, role=role, rank=rank, method=method, node=node)
    err.__dict__.update(state)
    return err


class RemoteMethodError(WorkerError):
    """A worker method raised. ``remote_type``/``remote_message``/``remote_traceback`` are text."""

    def __init__(
        self,
        *,
        remote_type: str,
        remote_message: str,
        remote_traceback: str,
        role: str | None = None,
        rank: int | None = None,
        method: str | None = None,
        node: str | None = None,
    ) -> None:
        self.remote_type = remote_type
        self.remote_message = remote_message
        self.remote_traceback = remote_traceback
        super().__init__(
            f"{remote_type}: {remote_message}\n--- remote traceback ---\n{remote_traceback}",
            role=role,
            rank=rank,
            method=method,
            node=node,
        )


class WorkerDiedError(WorkerError):
    """The worker's process or actor is gone. Restart the group; its state is lost."""


class WorkerStartError(WorkerError):
    """The worker's constructor raised; ``__cause__`` or the message holds the remote error."""


class CallTimeoutError(RuntimeErrorBase, TimeoutError):
    """A group call's deadline expired before every rank answered.

    ``pending_ranks`` lists the ranks that had not answered. The calls are not cancelled: a
    hung worker stays hung, and the group should be treated as unhealthy.
    """

    def __init__(
        self,
        *,
        method: str,
        role: str | None,
        pending_ranks: Sequence[int],
        timeout: float,
    ) -> None:
        self.method = method
        self.role = role
        self.pending_ranks = tuple(pending_ranks)
        self.timeout = timeout
        super().__init__(
            f"call {method!r} on role {role!r} did not finish within {timeout:g} s; "
            f"ranks still pending: {list(self.pending_ranks)}. Raise the timeout if the work is "
            "legitimately slow, or check those ranks for a hang."
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (
            _rebuild_timeout,
            (self.method, self.role, self.pending_ranks, self.timeout),
        )


def _rebuild_timeout(
    method: str, role: str | None, pending: tuple[int, ...], timeout: float
) -> CallTimeoutError:
    return CallTimeoutError(method=method, role=role, pending_ranks=pending, timeout=timeout)


class PlacementError(RuntimeErrorBase):
    """The backend cannot place a resource pool (more than the cluster has, or timed out)."""


class DispatchError(RuntimeErrorBase, ValueError):
    """A group call's arguments do not fit its dispatch mode (counts, lengths, unknown mode)."""


class BatchError(RuntimeErrorBase, ValueError):
    """A batch is inconsistent (column lengths differ) or two batches conflict (concat/union)."""


class FusionError(RuntimeErrorBase, ValueError):
    """Fused roles cannot be combined (unknown role, a method-name clash)."""


class BackendUnavailableError(RuntimeErrorBase, ImportError):
    """An optional backend's dependency is not installed; the message says what to install."""
