"""``WorkerGroup``: one object for many ranks of a plain worker class, with typed calls.

::

    group = WorkerGroup(backend, WorkerSpec.of(Adder), ResourcePool.create([4]))
    group.call(Adder.add, 1)            # list[int], one per rank (ONE_TO_ALL)
    group.call(Adder.step, batch)       # Batch, split over ranks and concatenated (DP modes)
    fut = group.submit(Adder.step, batch)   # BatchFuture; fut.get(timeout=5) or pass it on
    group.with_padding().call(Adder.step, batch)   # pads a batch that does not split evenly

``call`` and ``submit`` have one signature each: ``@register`` already computed, per dispatch
mode, the parameters a call takes and what it returns (see :mod:`runtime._register`), and mypy
checks each call against them.
"""

from __future__ import annotations

import threading
import uuid
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, overload

import attrs

from runtime._backend import Backend, HostLaunch, RankCall
from runtime._context import WorkerContext
from runtime._dispatch import MeshLayout, plan_call
from runtime._future import BatchFuture, Collector, GroupFuture
from runtime._host import CONTEXT, MESH_INFO, RUN_FUNCTION
from runtime._log import get_logger
from runtime._placement import PlacementPlan, ResourcePool, SlotLedger, plan_placement
from runtime._register import (
    CallArgs,
    Dispatch,
    Execute,
    MeshMode,
    Method,
    MethodMeta,
    PerRankMethod,
    Registered,
    get_method_meta,
    registered_methods,
)
from runtime._spec import WorkerSpec
from runtime.errors import DispatchError, FusionError, PlacementError, WorkerDiedError

__all__ = [
    "GroupCore",
    "LivenessMonitor",
    "SpawnOptions",
    "WorkerGroup",
    "attached_group",
    "leave_pool",
    "ledger_of",
    "spawn_core",
]

W = TypeVar("W")
P = ParamSpec("P")
R = TypeVar("R")
Fut = TypeVar("Fut")
A = TypeVar("A", bound=CallArgs[Any])

_log = get_logger()


@attrs.define
class GroupCore:
    """The ranks shared by a group and every view onto it (fused roles, timeouts)."""

    backend: Backend
    name: str
    roles: dict[str, type[Any]]
    plan: PlacementPlan | None
    launches: tuple[HostLaunch, ...]
    workers: tuple[object, ...]
    master: tuple[str, int]
    names: tuple[str, ...] = ()
    meshes: dict[tuple[str, str], MeshLayout] = attrs.field(factory=dict)
    lock: threading.Lock = attrs.field(factory=threading.Lock)
    closed: bool = False

    @classmethod
    def started(
        cls,
        backend: Backend,
        name: str,
        roles: Mapping[str, WorkerSpec[Any]],
        plan: PlacementPlan,
        launches: tuple[HostLaunch, ...],
        workers: tuple[object, ...],
        master: tuple[str, int],
    ) -> GroupCore:
        """The core of hosts this driver started (it can restart them)."""
        return cls(
            backend=backend,
            name=name,
            roles={r: s.cls for r, s in roles.items()},
            plan=plan,
            launches=launches,
            workers=workers,
            master=master,
            names=tuple(launch.name for launch in launches),
        )

    @classmethod
    def attached(
        cls,
        backend: Backend,
        name: str,
        roles: Mapping[str, type[Any]],
        workers: Sequence[object],
        master: tuple[str, int],
        names: Sequence[str],
    ) -> GroupCore:
        """The core of running hosts another driver started (``workers`` in rank order)."""
        return cls(
            backend=backend,
            name=name,
            roles=dict(roles),
            plan=None,
            launches=(),
            workers=tuple(workers),
            master=master,
            names=tuple(names),
        )


@attrs.frozen
class _View(Generic[W]):
    """What one group view binds: shared ranks, a role, its class, a default deadline and
    whether its sharded calls pad uneven batches."""

    core: GroupCore
    role: str
    cls: type[W]
    timeout: float | None
    pad: bool = False


_ledgers: weakref.WeakKeyDictionary[Backend, SlotLedger] = weakref.WeakKeyDictionary()
_ledgers_by_id: dict[int, SlotLedger] = {}  # backends that cannot be weakly referenced
_ledgers_lock = threading.Lock()


def ledger_of(backend: Backend) -> SlotLedger:
    """The slot ledger of ``backend``: which groups of this process hold which pool slots."""
    with _ledgers_lock:
        try:
            ledger = _ledgers.get(backend)
            if ledger is None:
                ledger = _ledgers[backend] = SlotLedger()
        except TypeError:  # unhashable or not weakly referenceable
            ledger = _ledgers_by_id.setdefault(id(backend), SlotLedger())
        return ledger


def leave_pool(backend: Backend, pool: ResourcePool, group: str) -> None:
    """Free ``group``'s slots of ``pool``; release the node entries no group holds any more."""
    freed = set(ledger_of(backend).give_back(group))
    if freed:
        backend.release(attrs.evolve(pool, nodes=tuple(n for n in pool.nodes if n.key in freed)))


@attrs.frozen(kw_only=True)
class SpawnOptions:
    """How a group's hosts are named and started: the one place for these settings, passed as
    ``WorkerGroup(..., options=SpawnOptions(...))`` or ``fuse(..., options=...)`` (like
    ``httpx.Client(limits=httpx.Limits(...))``); every field has a default.

    ``name`` names the group (default: the first role plus a random suffix);
    ``master_addr``/``master_port`` override the rendezvous endpoint (both or neither);
    ``port_range`` picks the first free port in ``[lo, hi)`` on rank 0's node;
    ``start_timeout`` (seconds) bounds reservation and the constructors.
    """

    name: str | None = None
    master_addr: str | None = None
    master_port: int | None = None
    port_range: tuple[int, int] | None = None
    start_timeout: float = 300.0

    def __attrs_post_init__(self) -> None:
        if (self.master_addr is None) != (self.master_port is None):
            raise ValueError(
                f"SpawnOptions: master_addr={self.master_addr!r} and "
                f"master_port={self.master_port!r}: give both or neither"
            )
        if not self.start_timeout > 0:
            raise ValueError(
                f"SpawnOptions: start_timeout={self.start_timeout!r} must be > 0 seconds"
            )
        if self.port_range is not None:
            lo, hi = self.port_range
            if not 0 < lo < hi <= 65536:
                raise ValueError(
                    f"SpawnOptions: port_range={self.port_range!r} must be (lo, hi) with "
                    "0 < lo < hi <= 65536"
                )


def _options(options: SpawnOptions | None) -> SpawnOptions:
    if options is None:
        return SpawnOptions()
    if not isinstance(options, SpawnOptions):
        raise TypeError(
            f"options must be a runtime.SpawnOptions, got {type(options).__name__}; e.g. "
            "options=SpawnOptions(name='actor', start_timeout=60)"
        )
    return options


def spawn_core(
    backend: Backend,
    roles: Mapping[str, WorkerSpec[Any]],
    pool: ResourcePool,
    options: SpawnOptions | None = None,
) -> GroupCore:
    """Book the pool's slots, reserve, plan, and start one host per rank holding every role
    in ``roles``. On any failure the slots are given back (and unused reservations released)."""
    if not isinstance(backend, Backend):
        raise TypeError(
            f"backend must implement runtime.Backend, got {type(backend).__name__}; pass e.g. "
            "runtime.testing.InProcessBackend() or runtime_ray.RayBackend()"
        )
    options = _options(options)
    env, backend_options = _merge_roles(roles)
    group = options.name or f"{next(iter(roles))}-{uuid.uuid4().hex[:6]}"
    ledger_of(backend).take(pool, group)
    try:
        node_ips = backend.reserve(pool, timeout=options.start_timeout)
        plan = plan_placement(pool, node_ips)
        if options.master_addr is not None and options.master_port is not None:
            master = (options.master_addr, int(options.master_port))
        else:
            master = backend.master_endpoint(plan.ranks[0].node_ip, port_range=options.port_range)
        launches = _launches(group, roles, plan, master, env, backend_options)
        workers = tuple(backend.spawn(launches, timeout=options.start_timeout))
    except BaseException:
        leave_pool(backend, pool, group)
        raise
    return GroupCore.started(backend, group, roles, plan, launches, workers, master)


def _merge_roles(roles: Mapping[str, WorkerSpec[Any]]) -> tuple[dict[str, str], dict[str, Any]]:
    """The roles' environment and backend options merged (a conflict: :class:`FusionError`)."""
    if not roles:
        raise FusionError("a group needs at least one role")
    env: dict[str, str] = {}
    options: dict[str, Any] = {}
    for role, spec in roles.items():
        if not role or not role.replace("_", "a").isalnum():
            raise FusionError(f"role name {role!r} must be a non-empty identifier-like string")
        for key, value in spec.env.items():
            if env.get(key, value) != value:
                raise FusionError(
                    f"role {role!r} sets env {key}={value!r}, another role {env[key]!r}"
                )
            env[key] = value
        for key, value in spec.options.items():
            if key in options and options[key] != value:
                raise FusionError(
                    f"role {role!r} sets backend option {key}={value!r}, another role "
                    f"{options[key]!r}"
                )
            options[key] = value
    return env, options


def _launches(
    group: str,
    roles: Mapping[str, WorkerSpec[Any]],
    plan: PlacementPlan,
    master: tuple[str, int],
    env: Mapping[str, str],
    options: Mapping[str, Any],
) -> tuple[HostLaunch, ...]:
    """One launch per rank of ``plan``, every role in each."""
    role_items = tuple(roles.items())
    return tuple(
        HostLaunch(
            group=group,
            roles=role_items,
            context=WorkerContext(
                rank=p.rank,
                world_size=plan.world_size,
                local_rank=p.local_rank,
                local_world_size=p.local_world_size,
                node_ip=p.node_ip,
                master_addr=master[0],
                master_port=master[1],
                visible_devices=tuple(str(d) for d in p.devices),
                role=role_items[0][0],
                group=group,
            ),
            placement=p,
            env=env,
            options=options,
            name=f"{group}:{'+'.join(roles)}:{p.rank}",
            detached=plan.pool.detached,
        )
        for p in plan.ranks
    )


class LivenessMonitor:
    """A daemon thread probing a group every ``interval`` seconds; stop with :meth:`stop`.

    On the first dead rank it stores the :class:`WorkerDiedError` in :attr:`error`, calls
    ``on_failure(error)`` once, and stops.
    """

    def __init__(
        self,
        group: WorkerGroup[Any],
        interval: float,
        on_failure: Callable[[WorkerDiedError], None] | None,
    ) -> None:
        self.error: WorkerDiedError | None = None
        self._group = group
        self._interval = interval
        self._on_failure = on_failure
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._loop, name=f"liveness-{group.name}", daemon=True
        )
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._group.check_alive()
            except WorkerDiedError as err:
                self.error = err
                _log.error("worker died", group=self._group.name, role=err.role, rank=err.rank)
                if self._on_failure is not None:
                    self._on_failure(err)
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self._interval + 1)


class WorkerGroup(Generic[W]):
    """Ranks of one role, called as one object. ``backend`` is required (there is no default).

    ``WorkerGroup(backend, spec, pool)`` reserves ``pool`` on ``backend`` and starts one
    worker per rank. ``role`` names the role (default: the class name, lower case);
    ``timeout`` is the default deadline (seconds) for every blocking call and
    ``future.get()``; ``with_timeout`` gives a view with another one, ``with_padding`` one whose
    sharded calls pad uneven batches. How the hosts are started (group name, rendezvous
    endpoint, port range, start deadline) is a :class:`SpawnOptions` passed as ``options``.

    Capacity: at most ``pool.max_colocate_count`` groups (a fused group counts once) may
    share a process slot of a pool, on every backend; one more is a
    :class:`~runtime.errors.PlacementError` at once, naming the groups holding the slots.
    :meth:`shutdown` gives the slots back and, when no group holds a node entry any more, the
    backend releases its reservation.
    """

    _view: _View[W]
    _core: GroupCore
    _role: str
    _cls: type[W]
    _timeout: float | None

    @overload
    def __init__(
        self,
        backend: Backend,
        spec: WorkerSpec[W],
        pool: ResourcePool,
        *,
        role: str | None = None,
        timeout: float | None = None,
        options: SpawnOptions | None = None,
    ) -> None: ...
    @overload
    def __init__(self, backend: _View[W]) -> None: ...
    def __init__(
        self,
        backend: Backend | _View[W],
        spec: WorkerSpec[W] | None = None,
        pool: ResourcePool | None = None,
        *,
        role: str | None = None,
        timeout: float | None = None,
        options: SpawnOptions | None = None,
    ) -> None:
        if isinstance(backend, _View):  # the cheap internal constructor of views
            view = backend
        else:
            if spec is None or pool is None:
                raise TypeError("WorkerGroup(backend, spec, pool): spec and pool are required")
            role_name = role or spec.cls.__name__.lower()
            core = spawn_core(backend, {role_name: spec}, pool, options)
            view = _View(core, role_name, spec.cls, timeout)
        self._view = view
        self._core = view.core
        self._role = view.role
        self._cls = view.cls
        self._timeout = view.timeout

    @classmethod
    def view(
        cls,
        core: GroupCore,
        role: str,
        worker_cls: type[W],
        *,
        timeout: float | None = None,
        pad: bool = False,
    ) -> WorkerGroup[W]:
        """A group onto existing ranks (a fused role, or attached detached workers)."""
        if role not in core.roles:
            raise FusionError(
                f"unknown role {role!r} in group {core.name!r}; roles: {list(core.roles)}"
            )
        hosted = core.roles[role]
        if not issubclass(hosted, worker_cls):
            raise FusionError(
                f"role {role!r} of group {core.name!r} hosts {hosted.__qualname__}, not "
                f"{worker_cls.__qualname__}"
            )
        return cls(_View(core, role, worker_cls, timeout, pad))

    # ----------------------------------------------------------------- properties
    @property
    def name(self) -> str:
        return self._core.name

    @property
    def role(self) -> str:
        return self._role

    @property
    def worker_class(self) -> type[W]:
        return self._cls

    @property
    def world_size(self) -> int:
        return len(self._core.workers)

    @property
    def backend(self) -> Backend:
        return self._core.backend

    @property
    def master_addr(self) -> str:
        return self._core.master[0]

    @property
    def master_port(self) -> int:
        return self._core.master[1]

    @property
    def worker_names(self) -> list[str]:
        return list(self._core.names)

    @property
    def workers(self) -> tuple[object, ...]:
        """The backend's handles, one per rank (for backend-specific tooling)."""
        return self._core.workers

    @property
    def placement(self) -> PlacementPlan | None:
        return self._core.plan

    @property
    def timeout(self) -> float | None:
        return self._timeout

    @property
    def padding(self) -> bool:
        """Whether this view pads uneven batches in every sharded call (:meth:`with_padding`)."""
        return self._view.pad

    def with_timeout(self, seconds: float | None) -> WorkerGroup[W]:
        """A view of this group whose calls use ``seconds`` as their deadline."""
        return type(self)(attrs.evolve(self._view, timeout=seconds))

    def with_padding(self, enabled: bool = True) -> WorkerGroup[W]:
        """A view of this group whose sharded calls pad a batch that does not split evenly
        over the ranks (repeated rows, removed from the result), as if every sharded method
        were registered with ``pad=True``; ``enabled=False`` defers to each method again."""
        return type(self)(attrs.evolve(self._view, pad=enabled))

    def method_names(self) -> list[str]:
        """Names of the registered methods callable through this group."""
        return sorted(registered_methods(self._cls))

    def contexts(self) -> list[WorkerContext]:
        """Each rank's context as its worker sees it (after the backend set devices)."""
        out: list[WorkerContext] = self._builtin(CONTEXT, ())
        return out

    # ----------------------------------------------------------------- typed calls
    def call(self, method: Method[W, Any, P, R, Any], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run ``method`` on the group and wait; ``R`` is the collected result that
        ``@register`` computed from the mode (see :mod:`runtime._register`).

        Per-rank methods (ALL_TO_ALL, DP_COMPUTE) use :meth:`call_per_rank` instead. A custom
        mode is checked against the method's own parameters; a custom dispatch that reshapes
        the arguments (e.g. lists cycled to the world size) is called with :meth:`call_by_name`.
        """
        result: R = self._call(method, args, kwargs, None, blocking=True)
        return result

    def submit(
        self, method: Method[W, Any, P, Any, Fut], /, *args: P.args, **kwargs: P.kwargs
    ) -> Fut:
        """Like :meth:`call` but returns the typed future at once (never blocks): a
        :class:`BatchFuture` for the batch modes, else a :class:`GroupFuture`."""
        future: Fut = self._call(method, args, kwargs, None, blocking=False)
        return future

    def call_per_rank(
        self, method: PerRankMethod[W, Any, Any, R, A], per_rank: Sequence[A], /
    ) -> R:
        """Run a per-rank method (ALL_TO_ALL, DP_COMPUTE) with one argument set per rank::

        group.call_per_rank(W.foo, [W.foo.bind(x=i) for i in range(group.world_size)])
        """
        result: R = self._call(method, (), {}, per_rank, blocking=True)
        return result

    def submit_per_rank(
        self, method: PerRankMethod[W, Any, Any, R, A], per_rank: Sequence[A], /
    ) -> GroupFuture[R]:
        """Non-blocking :meth:`call_per_rank`."""
        future: GroupFuture[R] = self._call(method, (), {}, per_rank, blocking=False)
        return future

    def call_by_name(self, name: str, /, *args: Any, **kwargs: Any) -> Any:
        """Untyped escape hatch: call a registered method by name (verl style).

        Per-rank modes take every argument as a list with one value per rank.
        """
        meta = self._meta_by_name(name)
        return self._dispatch(meta, args, kwargs, None, blocking=True)

    def submit_by_name(self, name: str, /, *args: Any, **kwargs: Any) -> Any:
        """Non-blocking :meth:`call_by_name`."""
        return self._dispatch(self._meta_by_name(name), args, kwargs, None, blocking=False)

    def run_function(
        self, fn: Callable[Concatenate[W, P], R], /, *args: P.args, **kwargs: P.kwargs
    ) -> list[R]:
        """Run a driver-defined ``fn(worker, *args, **kwargs)`` on every rank (args shared once)."""
        meta = MethodMeta(RUN_FUNCTION, Dispatch.ONE_TO_ALL, Execute.ALL, is_async=False)
        result: list[R] = self._dispatch(meta, (fn, *args), kwargs, None, blocking=True)
        return result

    # ----------------------------------------------------------------- liveness, lifecycle
    def check_alive(self) -> None:
        """Raise :class:`WorkerDiedError` naming the first dead rank (role, rank, node)."""
        flags = self._core.backend.alive(self._core.workers)
        for rank, ok in enumerate(flags):
            if not ok:
                node = self._core.launches[rank].context.node_ip if self._core.launches else None
                raise WorkerDiedError(
                    f"worker of group {self.name!r} is dead; restart the group",
                    role=self._role,
                    rank=rank,
                    node=node,
                )

    def start_liveness_check(
        self, interval: float = 1.0, on_failure: Callable[[WorkerDiedError], None] | None = None
    ) -> LivenessMonitor:
        """Probe the ranks every ``interval`` seconds in a daemon thread."""
        return LivenessMonitor(self, interval, on_failure)

    def restart(self, *, timeout: float = 300.0) -> None:
        """Replace every host of this group with a fresh one, after a death or a deadline.

        Same placement, ranks, names and master address; the workers are constructed again
        (their state is lost) and meshes registered anew. Every view of the group, and every
        role of a fused group, uses the new hosts. Futures of the old hosts fail or are
        abandoned. Raises :class:`~runtime.errors.PlacementError` when the backend cannot give
        the same nodes back, and ``ValueError`` for a shut-down or attached group.
        """
        core = self._core
        if core.closed:
            raise ValueError(f"group {core.name!r} was shut down; create a new group instead")
        if core.plan is None or not core.launches:
            raise ValueError(
                f"group {core.name!r} was attached, not spawned here: only the driver that "
                "created it knows how to restart it"
            )
        core.backend.terminate(core.workers)
        pool = core.plan.pool
        ips = core.backend.reserve(pool, timeout=timeout)
        before = {p.node.key: p.node_ip for p in core.plan.ranks}
        now = {n.key: ip for n, ip in zip(pool.nodes, ips, strict=True) if n.key in before}
        if now != before:
            raise PlacementError(
                f"restarting group {core.name!r}: the backend placed its node entries on "
                f"{sorted(now.values())}, not on {sorted(before.values())} as before; create a "
                "new group instead"
            )
        core.workers = tuple(core.backend.spawn(core.launches, timeout=timeout))
        with core.lock:
            core.meshes.clear()

    def shutdown(self) -> None:
        """Stop this group's workers (every role of a fused group). Idempotent."""
        core = self._core
        if not core.closed:
            core.closed = True
            core.backend.terminate(core.workers)
            if core.plan is not None:
                leave_pool(core.backend, core.plan.pool, core.name)

    # ----------------------------------------------------------------- internals
    def _meta_by_name(self, name: str) -> MethodMeta:
        meta = get_method_meta(self._cls, name)
        if meta is None:
            raise DispatchError(
                f"{self._cls.__qualname__}.{name} is not a registered method (role "
                f"{self._role!r}); decorate it with @register(...). Registered: "
                f"{self.method_names()}"
            )
        return meta

    def _call(
        self,
        method: Registered[Any, Any],
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        per_rank: Sequence[CallArgs[Any]] | None,
        *,
        blocking: bool,
    ) -> Any:
        if not isinstance(method, Registered):
            raise DispatchError(
                f"{method!r} is not a registered method; decorate it with @register(...) and pass "
                f"it through the class, e.g. group.call({self._cls.__name__}.method, ...)"
            )
        meta = self._meta_by_name(method.meta.name)
        # Identity first: the usual case, and attrs' field-by-field equality is per call.
        if meta is not method.meta and meta != method.meta:
            raise DispatchError(
                f"{method!r} does not belong to {self._cls.__qualname__} (role {self._role!r})"
            )
        return self._dispatch(meta, args, kwargs, per_rank, blocking=blocking)

    def _what(self, method: str) -> str:
        return f"{self._role}.{method}"

    def _dispatch(
        self,
        meta: MethodMeta,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        per_rank: Sequence[CallArgs[Any]] | None,
        *,
        blocking: bool,
    ) -> Any:
        if self._core.closed:
            raise DispatchError(f"group {self.name!r} was shut down; create a new one")
        if per_rank is not None and meta.dispatch not in (Dispatch.ALL_TO_ALL, Dispatch.DP_COMPUTE):
            raise DispatchError(
                f"{self._what(meta.name)} uses {meta.mode_name}; call_per_rank is only for "
                "ALL_TO_ALL and DP_COMPUTE methods, use call()"
            )
        if (
            per_rank is None
            and not args
            and not kwargs
            and meta.dispatch in (Dispatch.ALL_TO_ALL, Dispatch.DP_COMPUTE)
        ):
            per_rank = [CallArgs((), {})] * self.world_size
        mesh = self._mesh(meta.dispatch.name) if isinstance(meta.dispatch, MeshMode) else None
        plan = plan_call(
            meta,
            self.world_size,
            args,
            kwargs,
            share=self._core.backend.share,
            what=self._what(meta.name),
            mesh=mesh,
            per_rank=per_rank,
            pad=meta.pad or self._view.pad,
        )
        calls = [
            RankCall(r, self._role, meta.name, a, k)
            for r, (a, k) in zip(plan.ranks, plan.per_rank, strict=True)
        ]
        pending = self._core.backend.submit([self._core.workers[r] for r in plan.ranks], calls)
        future: GroupFuture[Any]
        if plan.part_rows is not None:
            future = BatchFuture(
                self._core.backend,
                pending,
                plan.collector,
                what=self._what(meta.name),
                part_rows=plan.part_rows,
                default_timeout=self._timeout,
            )
        else:
            future = GroupFuture(
                self._core.backend,
                pending,
                plan.collector,
                what=self._what(meta.name),
                default_timeout=self._timeout,
            )
        return future.get() if blocking else future

    def _builtin(self, method: str, args: tuple[Any, ...]) -> list[Any]:
        """Run one of the host's built-in methods on every rank and wait (same args each)."""
        calls = [RankCall(r, self._role, method, args, {}) for r in range(self.world_size)]
        pending = self._core.backend.submit(self._core.workers, calls)
        future: GroupFuture[list[Any]] = GroupFuture(
            self._core.backend,
            pending,
            Collector("list"),
            what=self._what(method),
            default_timeout=self._timeout,
        )
        return future.get()

    def _mesh(self, name: str) -> MeshLayout:
        key = (self._role, name)
        with self._core.lock:
            cached = self._core.meshes.get(key)
        if cached is not None:
            return cached
        infos = self._builtin(MESH_INFO, (name,))
        layout = MeshLayout.build(name, self._role, infos)
        with self._core.lock:
            self._core.meshes[key] = layout
        return layout

    def mesh_layout(self, name: str) -> MeshLayout:
        """Each rank's ``(dp_rank, is_collector)`` for mesh ``name`` (queried once, cached)."""
        return self._mesh(name)

    def __repr__(self) -> str:
        cls = self._cls.__qualname__
        return f"<WorkerGroup {self.name!r} role={self._role!r} {cls} x{self.world_size}>"


def attached_group(
    backend: Backend,
    *,
    name: str,
    role: str,
    cls: type[W],
    workers: Sequence[object],
    master: tuple[str, int],
    names: Sequence[str],
) -> WorkerGroup[W]:
    """A group onto running hosts another driver started (``workers`` in rank order), for a
    backend's ``attach``. It cannot be restarted here; ``shutdown`` terminates the hosts."""
    core = GroupCore.attached(backend, name, {role: cls}, workers, master, names)
    return WorkerGroup.view(core, role, cls)
