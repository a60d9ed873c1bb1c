"""The in-process backend and its fault injection (public through :mod:`runtime.testing`)."""

from __future__ import annotations

import itertools
import pickle
import threading
import time
import traceback
from collections.abc import Sequence
from typing import Any

import attrs
import cloudpickle

from runtime.backend import (
    DeviceMap,
    HostLaunch,
    NodeSlots,
    RankCall,
    ResourcePool,
    Shared,
    WorkerHost,
    extract_handles,
    free_port,
)
from runtime.errors import (
    CallTimeoutError,
    PlacementError,
    RemoteMethodError,
    WorkerDiedError,
    WorkerError,
)

__all__ = ["Fault", "FaultInjector", "InProcessBackend", "InProcessWorker"]


@attrs.define
class Fault:
    """One injected failure, matched against (group, role, rank, method) of each call.

    ``None`` fields match anything. ``times`` is how many calls it affects (None: all).
    """

    kind: str
    rank: int | None = None
    role: str | None = None
    method: str | None = None
    group: str | None = None
    seconds: float = 0.0
    error: BaseException | None = None
    times: int | None = 1

    def matches(self, group: str, call: RankCall) -> bool:
        return (
            (self.rank is None or self.rank == call.rank)
            and (self.role is None or self.role == call.role)
            and (self.method is None or self.method == call.method)
            and (self.group is None or self.group == group)
            and (self.times is None or self.times > 0)
        )


class FaultInjector:
    """Arms deterministic faults for the next matching calls (see the module docstring)."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._lock = threading.Lock()

    def die(
        self,
        rank: int | None = None,
        *,
        role: str | None = None,
        method: str | None = None,
        group: str | None = None,
    ) -> Fault:
        """The rank's process dies when the matching call arrives (it stays dead)."""
        return self._add(Fault("die", rank, role, method, group))

    def hang(
        self,
        rank: int | None = None,
        *,
        role: str | None = None,
        method: str | None = None,
        group: str | None = None,
        times: int | None = 1,
    ) -> Fault:
        """The matching call never answers."""
        return self._add(Fault("hang", rank, role, method, group, times=times))

    def slow(
        self,
        rank: int | None = None,
        *,
        seconds: float,
        role: str | None = None,
        method: str | None = None,
        group: str | None = None,
        times: int | None = 1,
    ) -> Fault:
        """The matching call answers ``seconds`` late."""
        return self._add(Fault("slow", rank, role, method, group, seconds=seconds, times=times))

    def fail(
        self,
        rank: int | None = None,
        *,
        error: BaseException,
        role: str | None = None,
        method: str | None = None,
        group: str | None = None,
        times: int | None = 1,
    ) -> Fault:
        """The matching call raises ``error`` as if the worker method had raised it."""
        return self._add(Fault("fail", rank, role, method, group, error=error, times=times))

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def _add(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults.append(fault)
        return fault

    def take(self, group: str, call: RankCall) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(group, call):
                    if fault.times is not None:
                        fault.times -= 1
                    return fault
        return None


@attrs.define(eq=False)
class InProcessWorker:
    """The in-process backend's handle of one rank."""

    host: WorkerHost
    launch: HostLaunch
    alive: bool = True


@attrs.define(eq=False)
class _Pending:
    rank: int
    role: str
    method: str
    value: Any = None
    error: BaseException | None = None
    ready_at: float = 0.0
    took: float = 0.0
    hang: bool = False


class InProcessBackend:
    """A real backend that runs every rank in the calling process.

    ``nodes`` fake nodes (IPs ``127.0.0.1``, ``127.0.0.2``, ...) with ``devices_per_node``
    devices each; every node entry of a pool is placed on the next node with room
    (round robin), and a pool asking for more devices than a node has is a
    :class:`~runtime.errors.PlacementError`. ``copy_values=False`` skips the pickle round trip
    of arguments and results (faster; workers then see the caller's objects).
    """

    def __init__(
        self, *, nodes: int = 1, devices_per_node: int = 8, copy_values: bool = True
    ) -> None:
        if nodes < 1:
            raise ValueError(f"nodes={nodes!r}; need >= 1")
        self.nodes = nodes
        self.devices_per_node = devices_per_node
        self.copy_values = copy_values
        self.faults = FaultInjector()
        self._reserved: dict[tuple[str, int], str] = {}  # node entry -> fake node IP
        self._devices = DeviceMap(devices_per_node)
        self._home: dict[tuple[str, int], int] = {}
        self._next_node = itertools.count()
        self._workers: list[InProcessWorker] = []
        self._lock = threading.RLock()

    # placement
    def reserve(self, pool: ResourcePool, *, timeout: float) -> list[str]:
        """Place each node entry not yet reserved on a fake node with room for its devices.

        An entry takes ``capacity x devices_per_process`` consecutive device ids of its node,
        so entries sharing a node (e.g. the halves of a merged pool) get distinct ids. A
        released entry reserved again prefers the node it had (a restart keeps its IPs).
        """
        ips: list[str] = []
        with self._lock:
            for node in pool.nodes:
                if node.key not in self._reserved:
                    self._reserved[node.key] = self._place(pool, node)
                ips.append(self._reserved[node.key])
        return ips

    def release(self, pool: ResourcePool) -> None:
        """Forget the reservations of ``pool``'s node entries (their device ids become free)."""
        with self._lock:
            for node in pool.nodes:
                self._reserved.pop(node.key, None)
                self._devices.release(node.key)

    def _place(self, pool: ResourcePool, node: NodeSlots) -> str:
        need = pool.devices_per_process * node.capacity
        if need > self.devices_per_node:
            raise PlacementError(
                f"pool {pool.name!r} asks for {node.capacity} processes x "
                f"{pool.devices_per_process} devices on one node, but each in-process node has "
                f"{self.devices_per_node} devices; lower the counts or create "
                "InProcessBackend(devices_per_node=...)"
            )
        start = next(self._next_node)
        home = self._home.get(node.key)
        order = [home] if home is not None else []
        order += [(start + i) % self.nodes for i in range(self.nodes)]
        for n in order:
            if self._devices.place(node.key, f"127.0.0.{n + 1}", need):
                self._home[node.key] = n
                return f"127.0.0.{n + 1}"
        raise PlacementError(
            f"pool {pool.name!r} node entry {node.index} needs {need} free devices on one node, "
            f"and no in-process node has that many left ({self.devices_per_node} per node; "
            f"taken: {self._devices.describe()}). Shut down groups you no longer need, or "
            "create InProcessBackend(nodes=..., devices_per_node=...) with more room"
        )

    def master_endpoint(
        self, node_ip: str, *, port_range: tuple[int, int] | None = None
    ) -> tuple[str, int]:
        if port_range is None:
            return node_ip, free_port()
        import socket

        lo, hi = port_range
        for port in range(lo, hi):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                try:
                    sock.bind(("", port))
                except OSError:
                    continue
                return node_ip, port
        raise PlacementError(f"no free port in range [{lo}, {hi}) on {node_ip}")

    # lifecycle
    def spawn(self, launches: Sequence[HostLaunch], *, timeout: float) -> list[InProcessWorker]:
        out: list[InProcessWorker] = []
        for planned in launches:
            try:
                launch = self._on_devices(planned)
            except BaseException:
                self.terminate(out)
                raise
            host = WorkerHost(self._copy(launch), scoped_env=True)
            try:
                host.start()
            except BaseException:
                self.terminate(out)
                raise
            out.append(InProcessWorker(host, launch))
        with self._lock:
            self._workers.extend(out)
        return out

    def _on_devices(self, launch: HostLaunch) -> HostLaunch:
        """``launch`` with the device ids its reserved entry holds (planned ids + offset)."""
        key = launch.placement.node.key
        with self._lock:
            reserved = key in self._reserved
        if not reserved:
            raise PlacementError(
                f"{launch.name}: node entry {key} is not reserved (never, or released); call "
                "reserve(pool) before spawn"
            )
        if not launch.placement.devices:
            return launch
        ids = self._devices.ids(launch.placement)
        return attrs.evolve(launch, context=attrs.evolve(launch.context, visible_devices=ids))

    def alive(self, workers: Sequence[object]) -> list[bool]:
        return [self._worker(w).alive for w in workers]

    def terminate(self, workers: Sequence[object]) -> None:
        for w in workers:
            worker = self._worker(w)
            worker.alive = False
            worker.host.close()

    def shutdown(self) -> None:
        with self._lock:
            workers, self._workers = self._workers, []
        self.terminate(workers)

    # calls
    def share(self, value: object) -> object:
        return value

    def cancel(self, pending: Sequence[object]) -> None:
        """A no-op: calls run when they are submitted, so there is nothing left to stop."""

    def submit(self, workers: Sequence[object], calls: Sequence[RankCall]) -> list[_Pending]:
        return [self._run(self._worker(w), call) for w, call in zip(workers, calls, strict=True)]

    def wait(self, pending: Sequence[object], *, timeout: float | None) -> list[Any]:
        items = [p for p in pending if isinstance(p, _Pending)]
        if len(items) != len(pending):
            raise TypeError("InProcessBackend.wait got handles from another backend")
        start = time.monotonic()
        hung = [p for p in items if p.hang]
        latest = max((p.ready_at for p in items if not p.hang), default=start)
        if timeout is None and hung:
            raise CallTimeoutError(
                method=hung[0].method,
                role=hung[0].role,
                pending_ranks=[p.rank for p in hung],
                timeout=float("inf"),
            )
        if timeout is not None:
            # A call is late if it needs longer than the deadline, counted from when it ran
            # (calls run at submit time here) or from now for injected delays still to come.
            late = [p for p in items if p.hang or p.took > timeout or p.ready_at > start + timeout]
            if late:
                time.sleep(max(0.0, min(timeout, start + timeout - time.monotonic())))
                raise CallTimeoutError(
                    method=late[0].method,
                    role=late[0].role,
                    pending_ranks=[p.rank for p in late],
                    timeout=float(timeout),
                )
        if latest > time.monotonic():
            time.sleep(latest - time.monotonic())
        failed = [p.error for p in items if p.error is not None]
        if failed:
            # The contract's precedence: a death first, else the lowest rank's failure.
            raise min(failed, key=lambda e: (not isinstance(e, WorkerDiedError), _rank_of(e)))
        return [p.value for p in items]

    # internals
    def _worker(self, w: object) -> InProcessWorker:
        if not isinstance(w, InProcessWorker):
            raise TypeError(f"InProcessBackend got a worker handle of another backend: {w!r}")
        return w

    def _resolve(self, handle: object) -> Any:
        if not isinstance(handle, _Pending):
            return handle  # a shared value: share() is the identity here
        if handle.hang:
            raise CallTimeoutError(
                method=handle.method,
                role=handle.role,
                pending_ranks=[handle.rank],
                timeout=float("inf"),
            )
        if handle.error is not None:
            raise handle.error
        return handle.value

    def _copy(self, value: Any) -> Any:
        if not self.copy_values:
            return value
        buffers: list[pickle.PickleBuffer] = []
        # cloudpickle, as Ray and Monarch use: lambdas, closures and classes from __main__
        # travel by value, so what a real backend accepts works here too.
        data = cloudpickle.dumps(value, protocol=5, buffer_callback=buffers.append)
        # The out-of-band buffers are views of the sender's memory: hand the receiver copies,
        # as a real transport would, or it would alias (and could mutate) the caller's data.
        return pickle.loads(data, buffers=[bytearray(b) for b in buffers])

    def _unpicklable(self, args: Sequence[Any], kwargs: dict[str, Any]) -> str:
        """Which argument fails to pickle (for the error message)."""
        named: list[tuple[str, Any]] = [(f"argument {i}", a) for i, a in enumerate(args)]
        named += [(f"keyword argument {k!r}", v) for k, v in kwargs.items()]
        for name, given in named:
            # The in-process share() handle is the value itself.
            value = given.handle if isinstance(given, Shared) else given
            try:
                cloudpickle.dumps(value)
            except (pickle.PicklingError, TypeError, AttributeError):
                return f"{name} ({type(value).__qualname__})"
        return "an argument"

    def _run(self, worker: InProcessWorker, call: RankCall) -> _Pending:
        """Run one call now (or fail it as an injected fault says); the pending result."""
        pending = _Pending(call.rank, call.role, call.method, ready_at=time.monotonic())
        node = worker.launch.context.node_ip
        if not worker.alive:
            pending.error = WorkerDiedError(
                "the worker is dead (terminated or killed); restart the group",
                role=call.role,
                rank=call.rank,
                method=call.method,
                node=node,
            )
            return pending
        fault = self.faults.take(worker.launch.group, call)
        if fault is not None and fault.kind != "slow":
            self._inject(fault, worker, call, pending)
            return pending
        began = time.monotonic()
        self._invoke(worker, call, pending)
        pending.took = time.monotonic() - began
        pending.ready_at = time.monotonic()
        if fault is not None:  # slow
            pending.took += fault.seconds
            pending.ready_at += fault.seconds
        return pending

    @staticmethod
    def _inject(fault: Fault, worker: InProcessWorker, call: RankCall, pending: _Pending) -> None:
        """Fail ``pending`` as ``fault`` (die, hang or fail) says, without running the call."""
        role, rank, method = call.role, call.rank, call.method
        node = worker.launch.context.node_ip
        if fault.kind == "die":
            worker.alive = False
            pending.error = WorkerDiedError(
                "the worker process died during the call (injected fault)",
                role=role,
                rank=rank,
                method=method,
                node=node,
            )
        elif fault.kind == "hang":
            pending.hang = True
        else:
            err = fault.error or RuntimeError("injected failure")
            pending.error = RemoteMethodError(
                remote_type=type(err).__qualname__,
                remote_message=str(err),
                remote_traceback="".join(traceback.format_exception_only(err)),
                role=role,
                rank=rank,
                method=method,
                node=node,
            )

    def _invoke(self, worker: InProcessWorker, call: RankCall, pending: _Pending) -> None:
        """Resolve the handles, copy the arguments in and the result out, run the method."""
        args, kwargs, handles = extract_handles(call.args, call.kwargs)
        what = "an argument"
        try:
            resolved = [self._resolve(h) for h in handles]
            sent = (self._copy(args), self._copy(kwargs), self._copy(resolved))
            what = "the result"
            value = worker.host.invoke(call.role, call.method, *sent)
            pending.value = self._copy(value)
        except (WorkerError, CallTimeoutError) as err:
            pending.error = err
        except (pickle.PicklingError, TypeError, AttributeError) as err:
            if what != "the result":
                what = self._unpicklable(call.args, dict(call.kwargs))
            pending.error = RemoteMethodError(
                remote_type=type(err).__qualname__,
                remote_message=(
                    f"{what} could not be pickled: {err}. Values sent to and from workers must "
                    "be picklable with cloudpickle (as on every backend)"
                ),
                remote_traceback=traceback.format_exc(),
                role=call.role,
                rank=call.rank,
                method=call.method,
                node=worker.launch.context.node_ip,
            )


def _rank_of(error: BaseException) -> int:
    rank = getattr(error, "rank", None)
    return rank if isinstance(rank, int) else 1 << 30
