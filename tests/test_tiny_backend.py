"""A backend written outside the runtime passes the shipped conformance suite.

:class:`PipeBackend` is what a third-party author writes from :mod:`runtime.backend` alone
(public names only): one OS process per rank (multiprocessing's forkserver), calls and results
pickled over a pipe (so each rank gets a private copy), chained futures resolved on the driver.
The shipped suite runs on it by overriding the one fixture ``runtime_backend``.
"""

from __future__ import annotations

import itertools
import multiprocessing
import pickle
import threading
import time
from collections.abc import Iterator, Sequence
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

import attrs
import cloudpickle
import pytest

from runtime import ResourcePool
from runtime.backend import (
    DeviceMap,
    HostLaunch,
    RankCall,
    WorkerHost,
    extract_handles,
    free_port,
)
from runtime.errors import CallTimeoutError, PlacementError, WorkerDiedError, WorkerError
from runtime.testing.conformance.suite import *  # noqa: F403


def _send(conn: Connection, message: object) -> None:
    # cloudpickle (values travel as on Ray), not Connection.send: multiprocessing's pickler
    # moves tensors through shared memory, so ranks would alias one tensor (the private-copy
    # rule forbids it).
    conn.send_bytes(cloudpickle.dumps(message))


def _recv(conn: Connection) -> Any:
    return pickle.loads(conn.recv_bytes())


_CTX = multiprocessing.get_context("forkserver")
_CTX.set_forkserver_preload(["torch", "runtime", "runtime.testing.conformance.workers"])


def _rank_main(conn: Connection, payload: bytes) -> None:
    """One rank's process: build the host, then answer ``(call_id, role, method, args,
    kwargs, resolved)`` messages with ``(call_id, ok, value)`` until the pipe closes."""
    try:
        host = WorkerHost(pickle.loads(payload), scoped_env=False)
        host.start()
    except Exception as exc:
        _send(conn, (0, False, exc))
        return
    _send(conn, (0, True, host.context))
    while True:
        try:
            call_id, role, method, args, kwargs, resolved = _recv(conn)
        except EOFError:
            return
        try:
            _send(conn, (call_id, True, host.invoke(role, method, args, kwargs, resolved)))
        except Exception as exc:
            _send(conn, (call_id, False, exc))


@attrs.define(eq=False)
class PipeWorker:
    process: BaseProcess
    conn: Connection
    launch: HostLaunch
    lock: threading.Lock = attrs.field(factory=threading.Lock)
    results: dict[int, tuple[bool, Any]] = attrs.field(factory=dict)


@attrs.define(eq=False)
class PipePending:
    worker: PipeWorker
    call_id: int
    call: RankCall
    error: WorkerError | CallTimeoutError | None = None  # a producer this call depends on failed


class PipeBackend:
    """One process per rank on this machine; see the module docstring."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._workers: list[PipeWorker] = []
        self._reserved: set[tuple[str, int]] = set()
        self._devices = DeviceMap()  # each reserved entry gets its own device ids

    def reserve(self, pool: ResourcePool, *, timeout: float) -> list[str]:
        for node in pool.nodes:
            self._devices.place(node.key, "127.0.0.1", node.capacity * pool.devices_per_process)
            self._reserved.add(node.key)
        return ["127.0.0.1" for _ in pool.nodes]

    def release(self, pool: ResourcePool) -> None:
        for node in pool.nodes:
            self._reserved.discard(node.key)
            self._devices.release(node.key)

    def master_endpoint(
        self, node_ip: str, *, port_range: tuple[int, int] | None = None
    ) -> tuple[str, int]:
        return node_ip, free_port()

    def spawn(self, launches: Sequence[HostLaunch], *, timeout: float) -> list[PipeWorker]:
        workers: list[PipeWorker] = []
        for launch in launches:
            if launch.placement.node.key not in self._reserved:
                raise PlacementError(f"{launch.name}: node entry not reserved; reserve first")
        for planned in launches:
            devices = self._devices.ids(planned.placement)
            launch = attrs.evolve(
                planned, context=attrs.evolve(planned.context, visible_devices=devices)
            )
            ours, theirs = _CTX.Pipe()
            payload = cloudpickle.dumps(launch)
            process = _CTX.Process(target=_rank_main, args=(theirs, payload))
            process.start()
            workers.append(PipeWorker(process, ours, launch))
        self._workers.extend(workers)
        try:
            for w in workers:
                self._result(w, 0, RankCall(w.launch.context.rank, "", "__init__", (), {}), timeout)
        except BaseException:
            self.terminate(workers)
            raise
        return workers

    def alive(self, workers: Sequence[object]) -> list[bool]:
        return [self._worker(w).process.is_alive() for w in workers]

    def terminate(self, workers: Sequence[object]) -> None:
        for w in workers:
            worker = self._worker(w)
            worker.process.kill()
            worker.process.join()
            worker.conn.close()

    def shutdown(self) -> None:
        self.terminate([w for w in self._workers if w.process.exitcode is None])

    def share(self, value: object) -> object:
        return value

    def cancel(self, pending: Sequence[object]) -> None:
        """Best effort allows nothing: a rank's pipe carries one call at a time."""

    def submit(self, workers: Sequence[object], calls: Sequence[RankCall]) -> list[PipePending]:
        out: list[PipePending] = []
        for w, call in zip(workers, calls, strict=True):
            worker = self._worker(w)
            args, kwargs, handles = extract_handles(call.args, call.kwargs)
            pending = PipePending(worker, next(self._ids), call)
            try:
                resolved = [self._resolve(h) for h in handles]
                with worker.lock:
                    _send(
                        worker.conn,
                        (pending.call_id, call.role, call.method, args, kwargs, resolved),
                    )
            except (WorkerError, CallTimeoutError) as exc:
                pending.error = exc
            except OSError:
                pass  # a closed pipe: wait() reports the dead rank
            out.append(pending)
        return out

    def wait(self, pending: Sequence[object], *, timeout: float | None) -> list[Any]:
        items = [p for p in pending if isinstance(p, PipePending)]
        if len(items) != len(pending):
            raise TypeError("PipeBackend.wait got handles of another backend")
        deadline = None if timeout is None else time.monotonic() + timeout
        results: list[Any] = []
        errors: list[WorkerError] = []
        late: list[int] = []
        for p in items:
            try:
                if p.error is not None:
                    raise p.error
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                results.append(self._result(p.worker, p.call_id, p.call, left))
            except CallTimeoutError:
                late.append(p.call.rank)
            except WorkerError as exc:
                errors.append(exc)
        if errors:
            raise min(errors, key=lambda e: (not isinstance(e, WorkerDiedError), e.rank or 0))
        if late:
            raise CallTimeoutError(
                method=items[0].call.method,
                role=items[0].call.role,
                pending_ranks=late,
                timeout=float(timeout or 0.0),
            )
        return results

    def _resolve(self, handle: object) -> Any:
        if isinstance(handle, PipePending):
            return self.wait([handle], timeout=None)[0]
        return handle

    def _result(self, worker: PipeWorker, call_id: int, call: RankCall, left: float | None) -> Any:
        """The answer to ``call_id`` (kept, so a handle can be waited on again)."""
        deadline = None if left is None else time.monotonic() + left
        with worker.lock:
            while call_id not in worker.results:
                step = (
                    0.05 if deadline is None else max(0.0, min(0.05, deadline - time.monotonic()))
                )
                try:
                    if worker.conn.poll(step):
                        got_id, ok, value = _recv(worker.conn)
                        worker.results[got_id] = (ok, value)
                        continue
                except (EOFError, OSError):
                    pass
                else:
                    if worker.process.is_alive():
                        if deadline is not None and time.monotonic() >= deadline:
                            raise CallTimeoutError(
                                method=call.method,
                                role=call.role,
                                pending_ranks=[call.rank],
                                timeout=float(left or 0.0),
                            )
                        continue
                raise WorkerDiedError(
                    f"the rank's process is gone (exit code {worker.process.exitcode})",
                    role=call.role,
                    rank=call.rank,
                    method=call.method,
                    node=worker.launch.context.node_ip,
                )
            ok, value = worker.results[call_id]
        if not ok:
            raise value
        return value

    def _worker(self, w: object) -> PipeWorker:
        if not isinstance(w, PipeWorker):
            raise TypeError(f"PipeBackend got a worker handle of another backend: {w!r}")
        return w


@pytest.fixture(scope="module")
def runtime_backend() -> Iterator[PipeBackend]:
    """The one override: the shipped suite's tests in this module run on :class:`PipeBackend`."""
    backend = PipeBackend()
    yield backend
    backend.shutdown()


def test_the_override_reaches_the_suite(backend: object) -> None:
    assert isinstance(backend, PipeBackend)
