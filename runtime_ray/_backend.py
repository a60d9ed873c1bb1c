"""``RayBackend``: the :class:`runtime.Backend` Protocol on Ray.

Mapping of the contract (see :mod:`runtime.backend`) onto Ray:

placement
    one placement group per node entry of a pool (cached by ``NodeSlots.key``, so split and
    colocated pools share it), bundles ``{"CPU": cpus_per_process * max_colocate_count,
    "GPU": devices_per_process}``, waited for with a timeout; each entry's node IP comes from
    the group's bundle-to-node table. A reservation is released when this backend kills the
    last actor placed in it (or a spawn on it fails); ``shutdown`` releases the rest.
spawn
    one :data:`~runtime_ray._host_actor.HostActor` per rank on its bundle (fractional GPUs for
    ``max_colocate_count > 1``), named ``launch.name``; then ``start()`` on all of them, where
    the user constructors run and the context gets the GPU ids Ray assigned.
calls
    ``share`` is ``ray.put``; :class:`runtime.Shared` and :class:`runtime.FutureSlice`
    handles are lifted out of the arguments and passed as top-level arguments of the actor
    call, so Ray resolves them on the worker. ``wait`` polls so a dead rank is reported while
    its peers are still blocked (e.g. in a collective), and maps Ray's exceptions into
    :mod:`runtime.errors`.

Only this package imports ray; the core never does.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

import attrs
import ray
import ray.exceptions
from ray.actor import ActorClass, ActorHandle
from ray.util.placement_group import PlacementGroup
from ray.util.scheduling_strategies import (
    NodeAffinitySchedulingStrategy,
    PlacementGroupSchedulingStrategy,
)

from runtime.backend import (
    Backend,
    HostLaunch,
    NodeSlots,
    RankCall,
    ResourcePool,
    WorkerGroup,
    WorkerHost,
    attached_group,
    extract_handles,
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
from runtime_ray import _casts
from runtime_ray._host_actor import NOSET_ENV, HostActor, Invocation
from runtime_ray._local_auth import AuthEnv, enable_token_auth

__all__ = ["RayBackend", "RayPending", "RayWorker", "attach"]

W = TypeVar("W")

_log = get_logger()

#: Environment variable naming the cluster to connect to (Ray's own convention).
_RAY_ADDRESS = "RAY_ADDRESS"


@attrs.define(eq=False)
class RayWorker:
    """``RayBackend``'s handle of one rank: the host actor plus what errors need to name.

    ``key`` is the reservation (node entry) the actor was placed in; ``None`` for attached
    workers, whose reservation belongs to the driver that created them.
    """

    actor: ActorHandle[Any]
    name: str
    rank: int
    roles: tuple[str, ...]
    node_ip: str
    detached: bool = False
    key: tuple[str, int] | None = None


@attrs.define(eq=False)
class RayPending:
    """A submitted call: its object ref plus the rank, role, method and node that produce it."""

    ref: ray.ObjectRef[Any]
    rank: int
    role: str
    method: str
    node_ip: str


@attrs.define(eq=False)
class _Reservation:
    pg: PlacementGroup
    node_ip: str
    cpus_per_process: float
    detached: bool
    users: set[int] = attrs.field(factory=set)


class RayBackend:
    """Run worker groups on a Ray cluster.

    ``RayBackend()`` starts a local cluster (``num_cpus``/``num_gpus`` size it; ``num_gpus``
    also fakes GPUs on a machine without any, for placement tests), or connects to
    ``address`` / ``$RAY_ADDRESS`` (``"auto"`` finds a running one). If Ray is already
    initialised in this process it is reused as is. ``shutdown()`` (or leaving a ``with``
    block) kills the actors and placement groups this backend created and calls
    ``ray.shutdown()`` only if this backend called ``ray.init()``. A local cluster it starts
    keeps Ray's token authentication on (Ray listens on every interface) with a token held in
    this process's ``RAY_AUTH_TOKEN``; shutdown restores ``RAY_AUTH_MODE``/``RAY_AUTH_TOKEN``.

    ``namespace``: the Ray namespace of the actors (detached groups are looked up there, see
    :meth:`attach`). ``runtime_env``: merged into every actor's runtime environment (its
    ``env_vars`` with the rank's variables). ``noset_visible_devices``: Ray's NOSET mode, where
    Ray does not narrow ``CUDA_VISIBLE_DEVICES`` and each rank's ``local_rank`` is the GPU id
    Ray assigned. ``placement_timeout``: the longest wait for a placement group.
    ``call_poll``: how often a waiting call checks for failed ranks (a dead rank is reported
    within about this long even while its peers hang). ``ping_timeout``: how long
    :meth:`alive` waits for a probe.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        namespace: str | None = None,
        num_cpus: int | None = None,
        num_gpus: int | None = None,
        runtime_env: Mapping[str, Any] | None = None,
        noset_visible_devices: bool = False,
        placement_timeout: float = 60.0,
        call_poll: float = 0.1,
        ping_timeout: float = 5.0,
    ) -> None:
        if placement_timeout <= 0 or call_poll <= 0 or ping_timeout <= 0:
            raise ValueError(
                f"placement_timeout={placement_timeout!r}, call_poll={call_poll!r} and "
                f"ping_timeout={ping_timeout!r} must all be > 0 (seconds)"
            )
        self._runtime_env: dict[str, Any] = dict(runtime_env or {})
        self._noset = noset_visible_devices
        self._placement_timeout = placement_timeout
        self._poll = call_poll
        self._ping_timeout = ping_timeout
        self._lock = threading.RLock()
        self._reserve_lock = threading.Lock()
        self._reservations: dict[tuple[str, int], _Reservation] = {}
        self._actors: dict[int, RayWorker] = {}
        self._closed = False
        self._owns_ray = False
        self._auth_env: AuthEnv | None = None
        target = address if address is not None else os.environ.get(_RAY_ADDRESS)
        if ray.is_initialized():
            if address is not None or num_cpus is not None or num_gpus is not None:
                _log.warning(
                    "ray is already initialised in this process; reusing it and ignoring "
                    "address/num_cpus/num_gpus",
                    address=address,
                    num_cpus=num_cpus,
                    num_gpus=num_gpus,
                )
        elif target:
            if num_cpus is not None or num_gpus is not None:
                raise ValueError(
                    f"num_cpus={num_cpus!r}/num_gpus={num_gpus!r} only size a local cluster that "
                    f"RayBackend starts; it is connecting to {target!r}. Drop them, or drop the "
                    f"address (and unset ${_RAY_ADDRESS}) to start a local cluster."
                )
            ray.init(address=target, namespace=namespace, runtime_env=self._runtime_env or None)
            self._owns_ray = True
        else:
            # Ray listens on every interface: keep token authentication on, with a token that
            # lives in this process's environment only (restored by shutdown()).
            self._auth_env = enable_token_auth()
            try:
                ray.init(
                    # "local": always a new instance. With None, ray.init would connect to the
                    # cluster named in /tmp/ray/ray_current_cluster (left by `ray start` or by
                    # ray.cluster_utils.Cluster in any other process on this machine).
                    address="local",
                    num_cpus=num_cpus,
                    num_gpus=num_gpus,
                    namespace=namespace,
                    runtime_env=self._runtime_env or None,
                    include_dashboard=False,
                )
            except BaseException:
                self._auth_env.restore()
                raise
            self._owns_ray = True
        self._namespace = (
            namespace if namespace is not None else ray.get_runtime_context().namespace
        )

    # ------------------------------------------------------------------ properties
    @property
    def namespace(self) -> str:
        """The Ray namespace this backend's actors live in (give it to :meth:`attach`)."""
        return self._namespace

    @property
    def address(self) -> str:
        """The cluster's GCS address (``RayBackend(address=...)`` from another driver)."""
        return _casts.gcs_address()

    @property
    def noset_visible_devices(self) -> bool:
        return self._noset

    def __repr__(self) -> str:
        return (
            f"<RayBackend namespace={self._namespace!r} actors={len(self._actors)} "
            f"reservations={len(self._reservations)}{' closed' if self._closed else ''}>"
        )

    def __enter__(self) -> RayBackend:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown()

    # ------------------------------------------------------------------ placement
    def reserve(self, pool: ResourcePool, *, timeout: float) -> list[str]:
        """One placement group per node entry (cached by entry); return each entry's node IP.

        Entries are reserved one after another, each waited for, so placement follows the
        pool's order (a later, smaller entry cannot take the node an earlier one needs).
        """
        limit = min(timeout, self._placement_timeout)
        bundle: dict[str, float] = {"CPU": pool.cpus_per_process * pool.max_colocate_count}
        if pool.devices_per_process > 0:
            bundle["GPU"] = float(pool.devices_per_process)
        deadline = time.monotonic() + limit
        created: list[tuple[str, int]] = []
        with self._reserve_lock:
            try:
                for node in pool.nodes:
                    with self._lock:
                        if node.key in self._reservations:
                            continue
                    pg = _casts.create_placement_group(
                        [bundle] * node.capacity,
                        strategy=pool.strategy,
                        name=_pg_name(node),
                        lifetime="detached" if pool.detached else None,
                    )
                    # Not pg.wait(): it truncates its timeout to whole seconds.
                    left = max(0.0, deadline - time.monotonic())
                    ready, _ = ray.wait([pg.ready()], timeout=left)
                    if not ready:
                        message = self._placement_message(pool, node, bundle, limit, pg)
                        _casts.remove_placement_group(pg)
                        raise PlacementError(message)
                    try:
                        ip = self._pg_node_ip(pg, node)
                    except BaseException:
                        _casts.remove_placement_group(pg)
                        raise
                    with self._lock:
                        self._reservations[node.key] = _Reservation(
                            pg, ip, pool.cpus_per_process, pool.detached
                        )
                    created.append(node.key)
            except BaseException:
                with self._lock:
                    for key in created:
                        self._release(key)
                raise
        with self._lock:
            return [self._reservations[node.key].node_ip for node in pool.nodes]

    def release(self, pool: ResourcePool) -> None:
        """Remove the placement groups of ``pool``'s node entries (idempotent).

        An entry this backend did not reserve is looked up by name in :attr:`namespace`: a
        detached reservation left by another driver (say one that exited after its workers
        were killed from here) is removed too. Ray kills actors still placed in a removed
        group, so call this after their group is shut down.
        """
        with self._lock:
            for node in pool.nodes:
                if node.key in self._reservations:
                    self._release(node.key)
                    continue
                pg = _casts.find_placement_group(_pg_name(node))
                if pg is not None:
                    _casts.remove_placement_group(pg)

    def placement_groups(self, pool: ResourcePool) -> list[PlacementGroup | None]:
        """The placement group reserved for each node entry of ``pool`` (``None`` where not
        reserved), e.g. to schedule other Ray work next to a group's ranks."""
        with self._lock:
            return [
                r.pg if (r := self._reservations.get(node.key)) is not None else None
                for node in pool.nodes
            ]

    def _pg_node_ip(self, pg: PlacementGroup, node: NodeSlots) -> str:
        table = _casts.placement_group_table(pg)
        by_bundle: Mapping[int, str] = table.get("bundles_to_node_id", {})
        ips = _node_ips()
        node_ids = {by_bundle[b] for b in range(node.capacity) if b in by_bundle}
        if not node_ids:
            raise PlacementError(
                f"placement group of node entry {node.key} reports no nodes: {table}"
            )
        if len(node_ids) > 1:
            _log.warning(
                "a PACK placement group spans nodes; ranks use the node of bundle 0",
                entry=node.key,
                nodes=sorted(ips.get(n, n) for n in node_ids),
            )
        first = by_bundle.get(0, next(iter(node_ids)))
        if first not in ips:
            raise PlacementError(
                f"placement group of node entry {node.key} is on node {first}, which is not alive"
            )
        return ips[first]

    def _placement_message(
        self,
        pool: ResourcePool,
        node: NodeSlots,
        bundle: Mapping[str, float],
        limit: float,
        pg: PlacementGroup,
    ) -> str:
        stats = _casts.placement_group_table(pg).get("stats") or {}
        state = stats.get("scheduling_state", "unknown")
        why = {
            "INFEASIBLE": " (Ray: INFEASIBLE, no node can ever hold it)",
            "NO_RESOURCES": " (Ray: NO_RESOURCES, other work holds what it needs)",
        }.get(state, f" (Ray: {state})")
        per_node = {
            n["NodeManagerAddress"]: _base_resources(n.get("Resources", {}))
            for n in _casts.nodes()
            if n.get("Alive")
        }
        nodes_text = ", ".join(f"{ip} {_fmt(r)}" for ip, r in per_node.items())
        return (
            f"cannot place resource pool {pool.name!r}: node entry {node.index} asks for "
            f"{node.capacity} bundle(s) x {_fmt(bundle)} with strategy {pool.strategy}, and the "
            f"placement group was not ready within {limit:g} s{why}. The cluster has "
            f"{_fmt(_base_resources(_casts.cluster_resources()))} in total, "
            f"{_fmt(_base_resources(_casts.available_resources()))} available now; per node: "
            f"{nodes_text}. Lower the processes or devices per node (or max_colocate_count), "
            "add nodes, free resources held by other groups, or raise "
            "RayBackend(placement_timeout=...) if the cluster is scaling up."
        )

    def master_endpoint(
        self, node_ip: str, *, port_range: tuple[int, int] | None = None
    ) -> tuple[str, int]:
        """A free port on ``node_ip`` (first free in ``[lo, hi)`` when given)."""
        if port_range is not None:
            lo, hi = port_range
            if not 0 < lo < hi <= 65536:
                raise ValueError(f"port_range={port_range!r}: need 0 < lo < hi <= 65536")
        if node_ip == _casts.node_ip_address():
            port = find_port(port_range)
        else:
            node_id = _node_id(node_ip)
            probe = _casts.remote_function(
                find_port,
                {
                    "num_cpus": 0,
                    "scheduling_strategy": NodeAffinitySchedulingStrategy(node_id, soft=False),
                    "runtime_env": self._runtime_env or None,
                },
            )
            try:
                port = ray.get(probe(port_range), timeout=self._placement_timeout)
            except ray.exceptions.RayError as exc:
                raise PlacementError(
                    f"could not probe for a free port on node {node_ip}: {exc}"
                ) from exc
        if port is None:
            assert port_range is not None
            raise PlacementError(
                f"no free port in [{port_range[0]}, {port_range[1]}) on node {node_ip}; widen "
                "port_range or free a port"
            )
        return node_ip, port

    # ------------------------------------------------------------------ lifecycle
    def spawn(self, launches: Sequence[HostLaunch], *, timeout: float) -> list[RayWorker]:
        """Create one host actor per launch, then start them all (constructors run there)."""
        workers: list[RayWorker] = []
        try:
            for launch in launches:
                check_plain_classes(launch)
            for launch in launches:
                workers.append(self._create(launch))
            contexts = self._gather(
                [
                    RayPending(
                        _casts.host_ref(w.actor).start.remote(),
                        w.rank,
                        w.roles[0],
                        "__init__",
                        w.node_ip,
                    )
                    for w in workers
                ],
                timeout=timeout,
                starting=True,
            )
        except BaseException:
            self._kill(workers, also=[launch.placement.node.key for launch in launches])
            raise
        for worker, ctx in zip(workers, contexts, strict=True):
            worker.node_ip = ctx.node_ip
        return workers

    def _create(self, launch: HostLaunch) -> RayWorker:
        key = launch.placement.node.key
        with self._lock:
            res = self._reservations.get(key)
        if res is None:
            raise PlacementError(
                f"{launch.name}: node entry {key} is not reserved; call reserve(pool) before spawn"
            )
        env = {
            k: v
            for k, v in {**launch.env, **launch.context.env()}.items()
            if k != "CUDA_VISIBLE_DEVICES"
        }
        if self._noset:
            env[NOSET_ENV] = "1"
        user = dict(launch.options)
        user_env = dict(user.pop("runtime_env", None) or {})
        runtime_env = {**self._runtime_env, **user_env}
        runtime_env["env_vars"] = {
            **self._runtime_env.get("env_vars", {}),
            **user_env.get("env_vars", {}),
            **env,
        }
        options: dict[str, Any] = {
            "name": launch.name,
            "namespace": self._namespace,
            "num_cpus": res.cpus_per_process,
            "num_gpus": launch.placement.device_share,
            "scheduling_strategy": PlacementGroupSchedulingStrategy(
                res.pg, placement_group_bundle_index=launch.placement.bundle
            ),
            "runtime_env": runtime_env,
            "max_restarts": 0,
        }
        if launch.detached:
            options["lifetime"] = "detached"
        options.update(user)
        payload = _casts.pickle_launch(launch)
        try:
            actor = _casts.create_actor(
                HostActor,
                options,
                launch.name,
                launch.role_names[0],
                launch.context.rank,
                payload,
                self._noset,
            )
        except ray.exceptions.ActorAlreadyExistsError as exc:
            raise ValueError(
                f"a Ray actor named {launch.name!r} already exists in namespace "
                f"{self._namespace!r}; give the group another name, or kill the old "
                "(detached?) group first"
            ) from exc
        worker = RayWorker(
            actor=actor,
            name=launch.name,
            rank=launch.context.rank,
            roles=launch.role_names,
            node_ip=launch.context.node_ip,
            detached=launch.detached,
            key=key,
        )
        with self._lock:
            self._actors[id(worker)] = worker
            res.users.add(id(worker))
        return worker

    def alive(self, workers: Sequence[object]) -> list[bool]:
        """Ping each host (own concurrency group); dead or silent for ``ping_timeout``: False."""
        ws = [self._worker(w) for w in workers]
        if not ws:
            return []
        refs = [_casts.host_ref(w.actor).ping.remote() for w in ws]
        ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=self._ping_timeout)
        done = set(ready)
        out: list[bool] = []
        for ref in refs:
            if ref not in done:
                out.append(False)
                continue
            try:
                ray.get(ref)
            except ray.exceptions.RayError:
                out.append(False)
            else:
                out.append(True)
        return out

    def terminate(self, workers: Sequence[object]) -> None:
        """Kill these hosts (idempotent). A reservation whose last actor this kills is
        released (its placement group removed); ``reserve`` makes a new one when needed.
        After Ray itself has shut down there is nothing left to kill: a no-op (never restarts
        a cluster just to clean up)."""
        if not ray.is_initialized():
            return
        self._kill([self._worker(w) for w in workers])

    def _kill(self, workers: Sequence[RayWorker], also: Sequence[tuple[str, int]] = ()) -> None:
        """Kill ``workers``; release each reservation they (or ``also``) name that no live
        actor of ours uses any more."""
        for w in workers:
            try:
                ray.kill(w.actor, no_restart=True)
            except (ValueError, ray.exceptions.RayError) as exc:
                _log.debug("ray.kill failed (already gone?)", actor=w.name, error=str(exc))
        with self._lock:
            touched = set(also)
            for w in workers:
                self._actors.pop(id(w), None)
                if w.key is not None and (res := self._reservations.get(w.key)) is not None:
                    res.users.discard(id(w))
                    touched.add(w.key)
            for key in touched:
                res = self._reservations.get(key)
                if res is not None and not res.users:
                    self._release(key)

    def _release(self, key: tuple[str, int]) -> None:
        res = self._reservations.pop(key)
        try:
            _casts.remove_placement_group(res.pg)
        except (ValueError, ray.exceptions.RayError) as exc:
            _log.debug("remove_placement_group failed", entry=key, error=str(exc))

    def shutdown(self, *, kill_detached: bool = False) -> None:
        """Kill this backend's actors and remove its placement groups (detached ones only if
        ``kill_detached``), then ``ray.shutdown()`` if this backend started Ray. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            doomed = [w for w in self._actors.values() if kill_detached or not w.detached]
        if ray.is_initialized():
            self._kill(doomed)
            with self._lock:
                for key in [
                    k for k, r in self._reservations.items() if kill_detached or not r.detached
                ]:
                    self._release(key)
        if self._owns_ray and ray.is_initialized():
            ray.shutdown()
        if self._auth_env is not None:
            self._auth_env.restore()

    # ------------------------------------------------------------------ calls
    def share(self, value: object) -> ray.ObjectRef[object]:
        """``ray.put`` once; the ref goes into arguments and Ray resolves it on each worker."""
        return ray.put(value)

    def cancel(self, pending: Sequence[object]) -> None:
        """Checks the handles, then does nothing: ``ray.cancel`` of a call to one of our
        (ordered, single-threaded) host actors breaks the actor. Measured with Ray 2.x: the
        next call waits 30 s for the cancelled call's sequence number, then every call fails
        as "actor unavailable". A stuck rank is recovered with ``WorkerGroup.restart``."""
        for p in pending:
            if not isinstance(p, RayPending):
                raise TypeError(f"RayBackend.cancel got a handle of another backend: {p!r}")

    def submit(self, workers: Sequence[object], calls: Sequence[RankCall]) -> list[RayPending]:
        """``invoke.remote((role, method, args, kwargs), *handles)`` per rank, no waiting."""
        out: list[RayPending] = []
        for w, call in zip(workers, calls, strict=True):
            worker = self._worker(w)
            args, kwargs, handles = extract_handles(call.args, call.kwargs)
            refs = [_ref_of(h) for h in handles]
            invocation: Invocation = (call.role, call.method, args, kwargs)
            ref = _casts.host_ref(worker.actor).invoke.remote(invocation, *refs)
            out.append(RayPending(ref, call.rank, call.role, call.method, worker.node_ip))
        return out

    def wait(self, pending: Sequence[object], *, timeout: float | None) -> list[Any]:
        """Results in order; :mod:`runtime.errors` on failure, death or deadline."""
        items: list[RayPending] = []
        for p in pending:
            if not isinstance(p, RayPending):
                raise TypeError(f"RayBackend.wait got a handle of another backend: {p!r}")
            items.append(p)
        return self._gather(items, timeout=timeout, starting=False)

    def _gather(
        self, items: Sequence[RayPending], *, timeout: float | None, starting: bool
    ) -> list[Any]:
        positions: dict[ray.ObjectRef[Any], list[int]] = {}
        for i, p in enumerate(items):
            positions.setdefault(p.ref, []).append(i)
        results: list[Any] = [None] * len(items)
        remaining = list(positions)
        deadline = None if timeout is None else time.monotonic() + timeout
        # Fast path: one ray.get when every rank answers within one poll (a failed rank makes
        # it return early; the loop below then finds which one).
        try:
            values = ray.get(
                remaining, timeout=self._poll if timeout is None else min(self._poll, timeout)
            )
        except ray.exceptions.RayError:  # GetTimeoutError, or a rank failed
            values = None
        if values is not None:
            by_ref = dict(zip(remaining, values, strict=True))
            return [by_ref[p.ref] for p in items]
        while remaining:
            step = (
                self._poll
                if deadline is None
                else max(0.0, min(self._poll, deadline - time.monotonic()))
            )
            ready, remaining = ray.wait(remaining, num_returns=len(remaining), timeout=step)
            if ready:
                try:
                    values = ray.get(ready)
                except ray.exceptions.RayError:
                    values = None  # map outside this handler: no "during handling" chain
                if values is None:
                    mapped, exc = self._first_error(ready, positions, items, starting)
                    raise mapped from exc
                for ref, value in zip(ready, values, strict=True):
                    for i in positions[ref]:
                        results[i] = value
            if remaining and deadline is not None and time.monotonic() >= deadline:
                late = sorted(items[i].rank for ref in remaining for i in positions[ref])
                assert timeout is not None
                if starting:
                    raise _start_timeout(items, late, timeout)
                raise CallTimeoutError(
                    method=items[0].method, role=items[0].role, pending_ranks=late, timeout=timeout
                )
        return results

    def _first_error(
        self,
        ready: Sequence[ray.ObjectRef[Any]],
        positions: Mapping[ray.ObjectRef[Any], Sequence[int]],
        items: Sequence[RayPending],
        starting: bool,
    ) -> tuple[BaseException, BaseException]:
        """Fetch ``ready`` one by one; return the error to raise (a death wins, else the lowest
        rank) and Ray's exception it maps."""
        errors: list[tuple[int, int, BaseException, BaseException]] = []
        for ref in ready:
            p = items[positions[ref][0]]
            try:
                ray.get(ref)
            except ray.exceptions.RayError as exc:
                mapped = map_ray_error(exc, p, starting=starting)
                errors.append(
                    (0 if isinstance(mapped, WorkerDiedError) else 1, p.rank, mapped, exc)
                )
        if not errors:  # the batch get failed but no single one does: report the batch
            try:
                ray.get(list(ready))
            except ray.exceptions.RayError as exc:
                return map_ray_error(exc, items[positions[ready[0]][0]], starting=starting), exc
            raise AssertionError("ray.get failed once but not when repeated")
        errors.sort(key=lambda e: (e[0], e[1]))
        return errors[0][2], errors[0][3]

    # ------------------------------------------------------------------ detached groups
    def attach(
        self, names: Sequence[str], cls: type[W], *, role: str, timeout: float = 60.0
    ) -> WorkerGroup[W]:
        """A group onto running (detached) hosts named ``names`` in :attr:`namespace`, e.g.
        from another driver: ``RayBackend(address, namespace=ns).attach(group.worker_names,
        Worker, role="worker")``. ``group.shutdown()`` then kills them."""
        if not names:
            raise ValueError("attach needs at least one actor name")
        handles: list[ActorHandle[Any]] = []
        for name in names:
            try:
                handles.append(ray.get_actor(name, namespace=self._namespace))
            except ValueError as exc:
                raise ValueError(
                    f"no Ray actor named {name!r} in namespace {self._namespace!r}; pass the "
                    "names from group.worker_names and the namespace of the driver that "
                    "created them (RayBackend(namespace=...))"
                ) from exc
        probes = [
            RayPending(
                _casts.host_ref(h).invoke.remote((role, WorkerHost.CONTEXT, (), {})),
                i,
                role,
                WorkerHost.CONTEXT,
                "?",
            )
            for i, h in enumerate(handles)
        ]
        contexts = self._gather(probes, timeout=timeout, starting=False)
        order = sorted(range(len(names)), key=lambda i: contexts[i].rank)
        ranks = [contexts[i].rank for i in order]
        sizes = {c.world_size for c in contexts}
        if ranks != list(range(len(names))) or sizes != {len(names)}:
            raise ValueError(
                f"actors {list(names)} hold ranks {sorted(ranks)} of world size(s) "
                f"{sorted(sizes)}; attach needs every rank of one group exactly once"
            )
        first = contexts[order[0]]
        workers = tuple(
            RayWorker(
                actor=handles[i],
                name=names[i],
                rank=contexts[i].rank,
                roles=(role,),
                node_ip=contexts[i].node_ip,
                detached=True,
            )
            for i in order
        )
        return attached_group(
            self,
            name=first.group,
            role=role,
            cls=cls,
            workers=workers,
            master=(first.master_addr, first.master_port),
            names=[names[i] for i in order],
        )

    # ------------------------------------------------------------------ internals
    def _worker(self, w: object) -> RayWorker:
        if not isinstance(w, RayWorker):
            raise TypeError(f"RayBackend got a worker handle of another backend: {w!r}")
        return w


def attach(
    names: Sequence[str],
    cls: type[W],
    *,
    role: str,
    namespace: str,
    address: str | None = None,
    timeout: float = 60.0,
) -> WorkerGroup[W]:
    """Connect to ``address`` (or ``$RAY_ADDRESS``) and attach to detached hosts ``names``.

    The group's ``backend`` is the new :class:`RayBackend`; call ``group.backend.shutdown()``
    to disconnect (the detached workers keep running unless ``group.shutdown()`` killed them).
    """
    backend = RayBackend(
        address if address is not None else os.environ.get(_RAY_ADDRESS, "auto"),
        namespace=namespace,
    )
    return backend.attach(names, cls, role=role, timeout=timeout)


def check_plain_classes(launch: HostLaunch) -> None:
    """Reject classes already wrapped by ``@ray.remote``: the options they carry would be lost."""
    for role, spec in launch.roles:
        cls: object = spec.cls
        if isinstance(cls, ActorClass) or hasattr(cls, "__ray_actor_class__"):
            raise ValueError(
                f"role {role!r}: {cls!r} is already wrapped by @ray.remote. Pass the plain class "
                "(remove the decorator); options given to ray.remote(...) would be silently "
                "lost, so set them with WorkerSpec.of(...).with_options(num_cpus=..., "
                "resources=...) instead."
            )


def map_ray_error(exc: BaseException, p: RayPending, *, starting: bool = False) -> BaseException:
    """Map an exception from ``ray.get`` of ``p`` into :mod:`runtime.errors` (not raised)."""
    cause: BaseException = exc
    while isinstance(cause, ray.exceptions.RayTaskError) and isinstance(cause.cause, BaseException):
        cause = cause.cause
    if isinstance(cause, (WorkerError, CallTimeoutError)):
        return cause

    def err(cls: type[WorkerError], message: str) -> WorkerError:
        return cls(message, role=p.role, rank=p.rank, method=p.method, node=p.node_ip)

    if isinstance(cause, ray.exceptions.RayActorError):
        if starting:
            return err(WorkerStartError, f"the worker's actor died while starting: {cause}")
        return err(WorkerDiedError, f"the worker's actor died: {cause}")
    if isinstance(cause, ray.exceptions.ObjectLostError):
        return err(
            WorkerDiedError, f"a value this call needed was lost (its owner or node died): {cause}"
        )
    if isinstance(exc, ray.exceptions.RayTaskError):
        return RemoteMethodError(
            remote_type=type(cause).__qualname__,
            remote_message=str(cause),
            remote_traceback=str(exc),
            role=p.role,
            rank=p.rank,
            method=p.method,
            node=p.node_ip,
        )
    return err(WorkerStartError if starting else WorkerError, f"{type(cause).__name__}: {cause}")


def find_port(port_range: tuple[int, int] | None) -> int | None:
    """A port free on this machine now: any (``None`` range) or the first free in
    ``[lo, hi)``; ``None`` when the range has none. Runs on the target node as a Ray task."""
    lo, hi = port_range if port_range is not None else (0, 1)
    for port in range(lo, hi):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("", port))
            except OSError:
                continue
            found: int = sock.getsockname()[1]
            return found
    return None


def _ref_of(handle: object) -> ray.ObjectRef[Any]:
    if isinstance(handle, RayPending):
        return handle.ref
    if isinstance(handle, ray.ObjectRef):
        return handle
    raise TypeError(
        f"a shared value or future of another backend reached RayBackend: {handle!r}; use one "
        "backend per group chain"
    )


def _pg_name(node: NodeSlots) -> str:
    """The placement group name of a node entry (how another driver finds it)."""
    return f"rlrt:{node.root}:{node.index}"


def _node_ips() -> dict[str, str]:
    return {n["NodeID"]: n["NodeManagerAddress"] for n in _casts.nodes() if n.get("Alive")}


def _node_id(node_ip: str) -> str:
    ips = _node_ips()
    for node_id, ip in ips.items():
        if ip == node_ip:
            return node_id
    raise PlacementError(
        f"no alive Ray node has IP {node_ip!r}; alive nodes: {sorted(ips.values())}"
    )


def _base_resources(resources: Mapping[str, float]) -> dict[str, float]:
    """Drop Ray's bookkeeping entries (``node:<ip>``, ``*_group_<id>``) from a resource dict."""
    return {
        k: v
        for k, v in sorted(resources.items())
        if not k.startswith("node:") and "_group_" not in k and not k.startswith("bundle_group")
    }


def _fmt(resources: Mapping[str, float]) -> str:
    shown = {k: v for k, v in resources.items() if k not in ("memory", "object_store_memory")}
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in shown.items()) + "}"


_: type[Backend] = RayBackend


def _start_timeout(
    items: Sequence[RayPending], late: Sequence[int], timeout: float
) -> WorkerStartError:
    """A constructor still running at the start deadline: a start failure naming the rank(s)."""
    first = next(p for p in items if p.rank == late[0])
    return WorkerStartError(
        f"the worker's constructor did not finish within start_timeout={timeout:g} s (still "
        f"starting: rank(s) {list(late)}); it hangs or is very slow: fix it, or pass a larger "
        "start_timeout to the group",
        role=first.role,
        rank=first.rank,
        method="__init__",
        node=first.node_ip,
    )
