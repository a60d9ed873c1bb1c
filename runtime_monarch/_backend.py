"""``MonarchBackend``: the :class:`runtime.backend.Backend` Protocol on Monarch.

Mapping of the contract (see :mod:`runtime.backend`) onto Monarch:

placement
    a local host (``this_host()``): every node entry is ``127.0.0.1``; reservations only
    count (Monarch has no resource reservations of its own), and each reserved entry gets its
    own run of device ids (a :class:`~runtime.backend.DeviceMap`).
spawn
    one proc mesh of one process per rank (so a rank can be stopped or replaced alone), its
    environment (the rank's variables, ``CUDA_VISIBLE_DEVICES`` of its entry's ids, ``PYTHONPATH``)
    set by the bootstrap command **before** the process starts; then one host actor per
    process, of the class :func:`~runtime_monarch._host_actor.host_class` builds for the
    launch's roles, and ``start`` on all of them.
calls
    ``call_one(...)`` futures are the pending handles: of the actor's generated endpoint for
    ``(role, method)`` with the call's own arguments when no argument is a lifted handle, else
    of ``invoke``; chained futures are resolved on the driver; ``wait`` polls every rank so a
    dead rank is reported while its peers are blocked, and maps Monarch's
    ``ActorError``/``SupervisionError`` into :mod:`runtime.errors`.
faults
    Monarch's process-global ``unhandled_fault_hook`` (by default it kills the controller) is
    replaced by one that logs; ``HYPERACTOR_MESH_SUPERVISION_POLL_FREQUENCY`` is set (1 s unless
    already set) before Monarch starts, so a dead process is reported within a few seconds.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

import attrs
import cloudpickle
import monarch.actor
import torch
from monarch.actor import ActorError, ProcMesh, default_bootstrap_cmd, this_host

from runtime.backend import (
    Backend,
    DeviceMap,
    FutureSlice,
    HostLaunch,
    RankCall,
    ResourcePool,
    Shared,
    WorkerContext,
    extract_handles,
    free_port,
    get_logger,
)
from runtime.errors import (
    CallTimeoutError,
    PlacementError,
    RemoteMethodError,
    WorkerDiedError,
    WorkerError,
    WorkerStartError,
)
from runtime_monarch._host_actor import Invocation, host_class

__all__ = ["MonarchBackend", "MonarchPending", "MonarchWorker"]

_log = get_logger()
_LOCAL = "127.0.0.1"

#: The longest a waiting call blocks on one rank before looking at every rank again.
_SLICE = 0.05


def _log_fault(failure: object) -> None:
    """Replaces Monarch's default hook, which would end the controller on any mesh failure."""
    _log.debug("monarch reported a mesh failure", failure=str(failure))


monarch.actor.unhandled_fault_hook = _log_fault


@attrs.define(eq=False)
class MonarchWorker:
    """``MonarchBackend``'s handle of one rank: its proc mesh, actor and what errors name."""

    procs: ProcMesh
    actor: Any
    launch: HostLaunch
    pid: int = 0
    key: tuple[tuple[str, str], ...] = ()
    dead: bool = False
    lock: threading.Lock = attrs.field(factory=threading.Lock)
    #: The actor's generated endpoint for each registered ``(role, method)``.
    methods: Mapping[tuple[str, str], str] = attrs.field(factory=dict)

    @property
    def rank(self) -> int:
        return self.launch.context.rank

    @property
    def node_ip(self) -> str:
        return self.launch.context.node_ip


@attrs.define(eq=False)
class MonarchPending:
    """A submitted call: its Monarch future, or the error that kept it from being sent."""

    worker: MonarchWorker
    call: RankCall
    future: Any = None
    done: bool = False
    value: Any = None
    error: BaseException | None = None


class MonarchBackend:
    """Run worker groups as Monarch actors, one process per rank, on this host.

    ``env``: extra environment for every rank's process (the driver's ``PYTHONPATH`` and
    working directory are always added, so classes of the driver's modules can be imported
    there). ``noset_visible_devices``: leave ``CUDA_VISIBLE_DEVICES`` unset and take each
    rank's ``local_rank`` from its planned device. ``reuse_timeout``: how long
    :meth:`terminate` lets a rank answer before killing its process instead of keeping it for
    reuse. ``devices_per_node``: how many accelerators this host offers; a pool that needs
    more on one node entry (or more than are still free) is a ``PlacementError`` at
    :meth:`reserve`. ``None`` (the default) counts the visible CUDA devices, and on a host
    without any sets no limit (device ids are then only labels, as with CPU ranks).
    Clusters: Monarch's host meshes (``SlurmJob``, Kubernetes jobs) give remote hosts; this
    backend uses the local host only.
    """

    def __init__(
        self,
        *,
        env: Mapping[str, str] | None = None,
        noset_visible_devices: bool = False,
        reuse_timeout: float = 0.5,
        devices_per_node: int | None = None,
    ) -> None:
        self._env = dict(env or {})
        self._noset = noset_visible_devices
        self._reuse_timeout = reuse_timeout
        self._idle: dict[tuple[tuple[str, str], ...], list[_Idle]] = {}
        self._lock = threading.RLock()
        self._workers: list[MonarchWorker] = []
        self._reserved: set[tuple[str, int]] = set()
        if devices_per_node is None:
            devices_per_node = torch.cuda.device_count() or None
        # This host's ids, one run per reserved node entry.
        self._devices = DeviceMap(devices_per_node)
        self._closed = False

    def __enter__(self) -> MonarchBackend:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        return f"<MonarchBackend workers={len(self._workers)}{' closed' if self._closed else ''}>"

    # ------------------------------------------------------------------ placement
    def reserve(self, pool: ResourcePool, *, timeout: float) -> list[str]:
        """Every node entry is this host. Monarch reserves nothing itself; the entries are
        recorded, so a spawn on an entry never reserved (or released) is refused."""
        with self._lock:
            placed: list[tuple[str, int]] = []
            for node in pool.nodes:
                need = pool.devices_per_process * node.capacity
                if not self._devices.place(node.key, _LOCAL, need):
                    for key in placed:  # all or nothing
                        self._devices.release(key)
                        self._reserved.discard(key)
                    raise PlacementError(
                        f"pool {pool.name!r} node entry {node.index} needs {need} devices "
                        f"({node.capacity} processes x {pool.devices_per_process}), but this "
                        f"host has {self._devices.devices_per_node} (taken: "
                        f"{self._devices.describe()}); lower the counts, shut down groups you "
                        "no longer need, or pass MonarchBackend(devices_per_node=...)"
                    )
                if node.key not in self._reserved:
                    placed.append(node.key)
                self._reserved.add(node.key)
        return [_LOCAL for _ in pool.nodes]

    def release(self, pool: ResourcePool) -> None:
        """Forget the entries of ``pool`` (idempotent; there is nothing to give back)."""
        with self._lock:
            for node in pool.nodes:
                self._reserved.discard(node.key)
                self._devices.release(node.key)

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

    # ------------------------------------------------------------------ lifecycle
    def spawn(self, launches: Sequence[HostLaunch], *, timeout: float) -> list[MonarchWorker]:
        """One proc mesh and host actor per launch, then ``start`` on all of them."""
        if self._closed:
            raise RuntimeError("this MonarchBackend was shut down; create a new one")
        for launch in launches:
            if launch.detached:
                raise PlacementError(
                    f"{launch.name}: MonarchBackend cannot keep hosts alive past the driver "
                    "(Monarch stops a controller's processes with it); create the pool with "
                    "detached=False"
                )
            with self._lock:
                reserved = launch.placement.node.key in self._reserved
            if not reserved:
                raise PlacementError(
                    f"{launch.name}: node entry {launch.placement.node.key} is not reserved "
                    "(never, or released); call reserve(pool) before spawn"
                )
        workers = [self._create(self._on_devices(launch)) for launch in launches]
        with self._lock:
            self._workers.extend(workers)
        try:
            starts = [
                MonarchPending(
                    w,
                    RankCall(w.rank, w.launch.role_names[0], "__init__", (), {}),
                    w.actor.start.call_one(cloudpickle.dumps(w.launch), self._noset),
                )
                for w in workers
            ]
            contexts = self._gather(starts, timeout=timeout, starting=True)
            pids = self._gather(
                [
                    MonarchPending(w, RankCall(w.rank, "", "ping", (), {}), w.actor.ping.call_one())
                    for w in workers
                ],
                timeout=timeout,
                starting=True,
            )
        except BaseException:
            self.terminate(workers)
            raise
        for w, ctx, pid in zip(workers, contexts, pids, strict=True):
            assert isinstance(ctx, WorkerContext)
            w.pid = int(pid)
        return workers

    def _on_devices(self, launch: HostLaunch) -> HostLaunch:
        """``launch`` with its entry's device ids (planned ids + the entry's first id)."""
        if not launch.placement.devices:
            return launch
        ids = self._devices.ids(launch.placement)
        return attrs.evolve(launch, context=attrs.evolve(launch.context, visible_devices=ids))

    def _create(self, launch: HostLaunch) -> MonarchWorker:
        """A host for ``launch``: an idle process with the same boot environment (its actor
        keeps the class it was spawned with: a generated endpoint runs ``(role, method)`` by
        name on whatever the host now holds), else a new process."""
        key = self._boot_env(launch)
        with self._lock:
            idle = self._idle.get(key)
            if idle:
                procs, actor, pid, methods = idle.pop()
                return MonarchWorker(
                    procs=procs, actor=actor, launch=launch, pid=pid, key=key, methods=methods
                )
        hosted = host_class([(role, spec.cls) for role, spec in launch.roles])
        command = default_bootstrap_cmd().with_env(dict(key))
        procs = this_host().spawn_procs(
            per_host={"procs": 1}, bootstrap_command=command, name=launch.name.replace(":", "_")
        )
        actor = procs.spawn("host", hosted.cls).slice(procs=0)
        return MonarchWorker(
            procs=procs, actor=actor, launch=launch, key=key, methods=hosted.methods
        )

    def _boot_env(self, launch: HostLaunch) -> tuple[tuple[str, str], ...]:
        """What a rank's process must have before it starts (and what makes an idle process
        reusable for another rank): extra env, visible devices, ``PYTHONPATH``. The rank's
        standard variables are exported by the host itself before the workers are built."""
        env = {**self._env, **launch.env}
        devices = launch.context.cuda_visible_devices
        if devices is not None and not self._noset:
            env["CUDA_VISIBLE_DEVICES"] = devices
        path = [p for p in (env.get("PYTHONPATH"), os.environ.get("PYTHONPATH"), os.getcwd()) if p]
        env["PYTHONPATH"] = os.pathsep.join(path)
        return tuple(sorted(env.items()))

    def alive(self, workers: Sequence[object]) -> list[bool]:
        """Whether each rank's process still runs (no message: answers during long calls)."""
        return [not (w := self._worker(x)).dead and _pid_running(w.pid) for x in workers]

    def terminate(self, workers: Sequence[object]) -> None:
        """Stop these ranks (idempotent). A rank whose host answers within
        ``reuse_timeout`` drops its workers and its process waits, idle, for a later rank with
        the same boot environment (starting a process costs seconds: torch imports); a busy,
        hung or dead one is killed."""
        ws = [self._worker(x) for x in workers]
        live: list[MonarchWorker] = []
        for w in ws:
            with w.lock:
                if w.pid == -1:
                    continue
                w.dead = True
                live.append(w)
        resets = [(w, w.actor.reset.call_one()) for w in live if _pid_running(w.pid)]
        deadline = time.monotonic() + self._reuse_timeout
        reused: set[int] = set()
        for w, fut in resets:
            try:
                fut.get(timeout=max(0.0, deadline - time.monotonic()))
            except Exception:
                continue
            if not self._closed:
                with self._lock:
                    self._idle.setdefault(w.key, []).append((w.procs, w.actor, w.pid, w.methods))
                reused.add(id(w))
        for w in live:
            pid, w.pid = w.pid, -1
            if id(w) in reused:
                continue
            self._kill(w.procs, pid)

    @staticmethod
    def _kill(procs: ProcMesh, pid: int) -> None:
        if pid > 0 and _pid_running(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        try:
            procs.stop().get(timeout=10)
        except Exception as exc:  # a killed mesh may refuse a clean stop
            _log.debug("monarch proc mesh stop failed", error=str(exc))

    def shutdown(self) -> None:
        """Stop every process this backend started (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            workers, self._workers = self._workers, []
            idle = [entry for entries in self._idle.values() for entry in entries]
            self._idle.clear()
        self.terminate(workers)
        for procs, _, pid, _ in idle:
            self._kill(procs, pid)

    # ------------------------------------------------------------------ calls
    def share(self, value: object) -> object:
        """The value itself: Monarch pickles it into each rank's message."""
        return value

    def cancel(self, pending: Sequence[object]) -> None:
        """A no-op: Monarch cannot interrupt a running endpoint (a deadline never cancels
        remote work either); :meth:`runtime.WorkerGroup.restart` replaces a stuck rank."""

    def submit(self, workers: Sequence[object], calls: Sequence[RankCall]) -> list[MonarchPending]:
        out: list[MonarchPending] = []
        for x, call in zip(workers, calls, strict=True):
            w = self._worker(x)
            pending = MonarchPending(w, call)
            name = w.methods.get((call.role, call.method))
            if name is not None and not w.dead and _direct(call.args, call.kwargs):
                # Monarch pickles all arguments of a message together: any number go as is.
                pending.future = getattr(w.actor, name).call_one(*call.args, **call.kwargs)
                out.append(pending)
                continue
            args, kwargs, handles = extract_handles(call.args, call.kwargs)
            try:
                resolved = [self._resolve(h) for h in handles]
            except (WorkerError, CallTimeoutError) as exc:
                pending.error, pending.done = exc, True
                out.append(pending)
                continue
            if w.dead:
                pending.error, pending.done = self._died(pending), True
            else:
                invocation: Invocation = (call.role, call.method, args, kwargs, resolved)
                pending.future = w.actor.invoke.call_one(invocation)
            out.append(pending)
        return out

    def wait(self, pending: Sequence[object], *, timeout: float | None) -> list[Any]:
        items: list[MonarchPending] = []
        for p in pending:
            if not isinstance(p, MonarchPending):
                raise TypeError(f"MonarchBackend.wait got a handle of another backend: {p!r}")
            items.append(p)
        return self._gather(items, timeout=timeout, starting=False)

    def _resolve(self, handle: object) -> Any:
        if isinstance(handle, MonarchPending):
            return self._gather([handle], timeout=None, starting=False)[0]
        return handle

    def _gather(
        self, items: Sequence[MonarchPending], *, timeout: float | None, starting: bool
    ) -> list[Any]:
        """Wait on the first unfinished call for up to one slice, look at every other rank
        (finished calls, failures, dead processes), repeat until done or the deadline."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            blocked = False
            for p in items:
                if p.done:
                    continue
                left = _SLICE if deadline is None else min(_SLICE, deadline - time.monotonic())
                # Block on the first unfinished rank only; look at the others without waiting.
                self._poll_one(p, starting, 0.0 if blocked else max(0.0, left))
                blocked = blocked or not p.done
            for p in items:
                if not p.done and p.worker.pid != 0 and not _pid_running(p.worker.pid):
                    p.worker.dead = True
                    p.error, p.done = self._died(p), True
            failed = [p.error for p in items if p.error is not None]
            if failed:
                raise min(failed, key=_precedence)
            waiting = [p for p in items if not p.done]
            if not waiting:
                return [p.value for p in items]
            if deadline is not None and time.monotonic() >= deadline:
                assert timeout is not None
                late = sorted(p.call.rank for p in waiting)
                if starting:
                    raise WorkerStartError(
                        f"the worker's constructor did not finish within start_timeout="
                        f"{timeout:g} s (still starting: rank(s) {late}); it hangs or is very "
                        "slow: fix it, or pass a larger start_timeout to the group",
                        role=waiting[0].call.role,
                        rank=late[0],
                        method="__init__",
                    )
                raise CallTimeoutError(
                    method=waiting[0].call.method,
                    role=waiting[0].call.role,
                    pending_ranks=late,
                    timeout=timeout,
                )

    def _poll_one(self, p: MonarchPending, starting: bool, wait: float) -> None:
        try:
            p.value = p.future.get(timeout=wait)
        except TimeoutError:
            return
        except ActorError as exc:
            p.error = self._map_actor_error(exc, p, starting)
        except Exception as exc:  # SupervisionError and friends: the process is gone
            p.worker.dead = True
            cls = WorkerStartError if starting else WorkerDiedError
            p.error = cls(
                f"the rank's process died: {type(exc).__name__}: {exc}",
                role=p.call.role,
                rank=p.call.rank,
                method=p.call.method,
                node=p.worker.node_ip,
            )
        p.done = True

    @staticmethod
    def _map_actor_error(exc: ActorError, p: MonarchPending, starting: bool) -> BaseException:
        cause = exc.exception
        if isinstance(cause, (WorkerError, CallTimeoutError)):
            return cause
        return RemoteMethodError(
            remote_type=type(cause).__qualname__,
            remote_message=str(cause),
            remote_traceback=exc.exception_formatted,
            role=p.call.role,
            rank=p.call.rank,
            method=p.call.method,
            node=p.worker.node_ip,
        )

    @staticmethod
    def _died(p: MonarchPending) -> WorkerDiedError:
        return WorkerDiedError(
            "the worker's process is gone (terminated or died); restart the group",
            role=p.call.role,
            rank=p.call.rank,
            method=p.call.method,
            node=p.worker.node_ip,
        )

    def _worker(self, w: object) -> MonarchWorker:
        if not isinstance(w, MonarchWorker):
            raise TypeError(f"MonarchBackend got a worker handle of another backend: {w!r}")
        return w


#: An idle process kept for reuse: its proc mesh, actor, pid and the actor's endpoints.
_Idle = tuple[ProcMesh, Any, int, Mapping[tuple[str, str], str]]


def _direct(args: Sequence[Any], kwargs: Mapping[str, Any]) -> bool:
    """Whether a call can pass its own arguments: none is a handle to lift and resolve."""
    return not any(isinstance(v, (Shared, FutureSlice)) for v in (*args, *kwargs.values()))


def _precedence(error: BaseException) -> tuple[bool, int]:
    """The contract's order: a death first, else the lowest rank."""
    rank = getattr(error, "rank", None)
    return (not isinstance(error, WorkerDiedError), rank if isinstance(rank, int) else 1 << 30)


def _pid_running(pid: int) -> bool:
    """Whether ``pid`` is a live (not zombie) process on this host."""
    if pid <= 0:
        return pid == 0  # 0: not started yet (treated as alive while starting)
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


_: type[Backend] = MonarchBackend
