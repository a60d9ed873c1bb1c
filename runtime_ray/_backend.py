"""``RayBackend``: the :class:`runtime.Backend` Protocol on Ray.

Mapping of the contract (see :mod:`runtime.backend`) onto Ray, one module per concern:

cluster (:mod:`runtime_ray._cluster`)
    a local cluster with token authentication, or a connection to a running one; free ports
    probed on the target node.
placement (:mod:`runtime_ray._reservations`)
    one placement group per node entry of a pool (cached by ``NodeSlots.key``, so split and
    colocated pools share it), bundles ``{"CPU": cpus_per_process * max_colocate_count,
    "GPU": devices_per_process}``, waited for with a timeout; each entry's node IP comes from
    the group's bundle-to-node table. A reservation is released when this backend kills the
    last actor placed in it, a spawn on it fails, or ``release`` is called (also for a
    detached one another driver left, found by name); ``shutdown`` releases the rest.
spawn (here)
    one host actor per rank on its bundle (fractional GPUs for ``max_colocate_count > 1``),
    named ``launch.name``, of the class :func:`~runtime_ray._host_actor.host_class` builds
    for the launch's roles; then ``start()`` on all of them, where the user constructors run
    and the context gets the GPU ids Ray assigned.
calls (:mod:`runtime_ray._calls`)
    ``share`` is ``ray.put``. A call with at most one argument, no lifted handle and no raw
    ``ObjectRef`` argument is the actor's generated method for it, called with the call's own
    arguments (what a raw Ray call sends); any other is ``invoke.remote((role, method, args,
    kwargs), *handles)``: :class:`runtime.Shared` and :class:`runtime.FutureSlice` handles
    are lifted out of the arguments and passed as top-level arguments of the actor call, so
    Ray resolves them on the worker. ``wait`` polls so a dead rank is reported while
    its peers are still blocked (e.g. in a collective), and maps Ray's exceptions into
    :mod:`runtime.errors`.
attach (:mod:`runtime_ray._attach`)
    running detached hosts found by name and wrapped in a group.

Only this package imports ray; the core never does.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

import ray
import ray.exceptions
from ray import cloudpickle
from ray.actor import ActorClass
from ray.util.placement_group import PlacementGroup
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from runtime.backend import (
    Backend,
    FutureSlice,
    HostLaunch,
    RankCall,
    ResourcePool,
    Shared,
    WorkerGroup,
    attached_group,
    extract_handles,
    get_logger,
)
from runtime.errors import PlacementError
from runtime_ray import _casts
from runtime_ray._attach import find_hosts
from runtime_ray._calls import RayPending, RayWorker, gather, ref_of
from runtime_ray._cluster import RAY_ADDRESS, Cluster
from runtime_ray._host_actor import NOSET_ENV, Invocation, host_class
from runtime_ray._reservations import Reservation, Reservations

__all__ = ["RayBackend", "RayPending", "RayWorker", "attach", "check_plain_classes"]

W = TypeVar("W")

_log = get_logger()


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
        self._noset = noset_visible_devices
        self._placement_timeout = placement_timeout
        self._poll = call_poll
        self._ping_timeout = ping_timeout
        self._lock = threading.RLock()
        self._reservations = Reservations(placement_timeout)
        self._actors: dict[int, RayWorker] = {}
        self._closed = False
        self._cluster = Cluster(
            address,
            namespace=namespace,
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            runtime_env=runtime_env or {},
        )
        self._runtime_env = self._cluster.runtime_env
        self._namespace = self._cluster.namespace

    # ------------------------------------------------------------------ properties
    @property
    def namespace(self) -> str:
        """The Ray namespace this backend's actors live in (give it to :meth:`attach`)."""
        return self._namespace

    @property
    def address(self) -> str:
        """The cluster's GCS address (``RayBackend(address=...)`` from another driver)."""
        return self._cluster.address

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
        return self._reservations.reserve(pool, timeout=timeout)

    def release(self, pool: ResourcePool) -> None:
        """Remove the placement groups of ``pool``'s node entries (idempotent).

        For a detached pool, an entry this backend did not reserve is looked up by name in
        :attr:`namespace`: a reservation left by another driver (say one that exited after
        its workers were killed from here) is removed too. Ray kills actors still placed in
        a removed group, so call this after their group is shut down.
        """
        self._reservations.release(pool)

    def placement_groups(self, pool: ResourcePool) -> list[PlacementGroup | None]:
        """The placement group reserved for each node entry of ``pool`` (``None`` where not
        reserved), e.g. to schedule other Ray work next to a group's ranks."""
        return self._reservations.placement_groups(pool)

    def master_endpoint(
        self, node_ip: str, *, port_range: tuple[int, int] | None = None
    ) -> tuple[str, int]:
        """A free port on ``node_ip`` (first free in ``[lo, hi)`` when given)."""
        return self._cluster.free_port(node_ip, port_range, timeout=self._placement_timeout)

    # ------------------------------------------------------------------ lifecycle
    def spawn(self, launches: Sequence[HostLaunch], *, timeout: float) -> list[RayWorker]:
        """Create one host actor per launch, then start them all (constructors run there)."""
        workers: list[RayWorker] = []
        try:
            for launch in launches:
                check_plain_classes(launch)
            for launch in launches:
                workers.append(self._create(launch))
            starts = [
                RayPending(
                    _casts.host_ref(w.actor).start.remote(),
                    w.rank,
                    w.roles[0],
                    "__init__",
                    w.node_ip,
                )
                for w in workers
            ]
            contexts = gather(starts, timeout=timeout, starting=True, poll=self._poll)
        except BaseException:
            self._kill(workers, also=[launch.placement.node.key for launch in launches])
            raise
        for worker, ctx in zip(workers, contexts, strict=True):
            worker.node_ip = ctx.node_ip
        return workers

    def _create(self, launch: HostLaunch) -> RayWorker:
        key = launch.placement.node.key
        res = self._reservations.get(key)
        if res is None:
            raise PlacementError(
                f"{launch.name}: node entry {key} is not reserved; call reserve(pool) before spawn"
            )
        hosted = host_class([(role, spec.cls) for role, spec in launch.roles])
        try:
            actor = _casts.create_actor(
                hosted.actor,
                self._actor_options(launch, res),
                launch.name,
                launch.role_names[0],
                launch.context.rank,
                cloudpickle.dumps(launch, protocol=5),
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
            methods=hosted.methods,
        )
        with self._lock:
            self._actors[id(worker)] = worker
        self._reservations.add_user(key, id(worker))
        return worker

    def _actor_options(self, launch: HostLaunch, res: Reservation) -> dict[str, Any]:
        """Ray options of one host actor: its bundle, name, environment, lifetime."""
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
        return options

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
            for w in workers:
                self._actors.pop(id(w), None)
        self._reservations.drop_users({id(w): w.key for w in workers}, also)

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
            self._reservations.release_all(kill_detached=kill_detached)
        self._cluster.close()

    # ------------------------------------------------------------------ calls
    def share(self, value: object) -> ray.ObjectRef[object]:
        """``ray.put`` once; the ref goes into arguments and Ray resolves it on each worker.
        A caller's own ``ObjectRef`` is returned as it is (Ray refuses to put a ref): every
        rank receives that ref, as a single rank does."""
        if isinstance(value, ray.ObjectRef):
            return value
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
        """One actor call per rank, no waiting: the generated method of ``(role, method)``
        with the call's own arguments when :func:`_direct` allows, else
        ``invoke.remote((role, method, args, kwargs), *handles)``."""
        out: list[RayPending] = []
        for w, call in zip(workers, calls, strict=True):
            worker = self._worker(w)
            name = worker.methods.get((call.role, call.method))
            if name is not None and _direct(call.args, call.kwargs):
                remote = _casts.host_method(worker.actor, name)
                ref = remote.remote(*call.args, **call.kwargs)
            else:
                args, kwargs, handles = extract_handles(call.args, call.kwargs)
                refs = [ref_of(h) for h in handles]
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
        return gather(items, timeout=timeout, starting=False, poll=self._poll)

    # ------------------------------------------------------------------ detached groups
    def attach(
        self, names: Sequence[str], cls: type[W], *, role: str, timeout: float = 60.0
    ) -> WorkerGroup[W]:
        """A group onto running (detached) hosts named ``names`` in :attr:`namespace`, e.g.
        from another driver: ``RayBackend(address, namespace=ns).attach(group.worker_names,
        Worker, role="worker")``. ``group.shutdown()`` then kills them."""
        workers, contexts = find_hosts(
            names, role=role, namespace=self._namespace, timeout=timeout, poll=self._poll
        )
        first = contexts[0]
        return attached_group(
            self,
            name=first.group,
            role=role,
            cls=cls,
            workers=workers,
            master=(first.master_addr, first.master_port),
            names=[w.name for w in workers],
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
        address if address is not None else os.environ.get(RAY_ADDRESS, "auto"),
        namespace=namespace,
    )
    return backend.attach(names, cls, role=role, timeout=timeout)


def _direct(args: Sequence[Any], kwargs: Mapping[str, Any]) -> bool:
    """Whether a call can pass its own arguments to the actor: at most one (Ray serializes
    each top-level argument on its own, so several cost more than one tuple), and that one
    neither a handle to lift (``Shared``/``FutureSlice``: ``invoke`` has Ray resolve them) nor
    an ``ObjectRef`` (Ray would resolve a top-level one; inside ``invoke``'s tuple it reaches
    the worker as the ref the caller passed)."""
    if len(args) + len(kwargs) > 1:
        return False
    for value in (*args, *kwargs.values()):
        if isinstance(value, (Shared, FutureSlice, ray.ObjectRef)):
            return False
    return True


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


_: type[Backend] = RayBackend
