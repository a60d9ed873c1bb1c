"""The implementer's API: everything a backend needs, and every rule it must keep.

``runtime`` is the user's API; this module is the backend author's (as ``anyio.abc`` sits
beside ``anyio``). A backend imports only public names, from here and from ``runtime`` and
``runtime.errors``. The core (dispatch planning, padding, futures, fusion, placement planning)
is backend-agnostic; a backend reserves resources, starts one :class:`WorkerHost` per rank,
moves per-rank arguments and results, and reports liveness. Shipped implementations:
:class:`runtime.testing.InProcessBackend`, ``runtime_ray.RayBackend`` and
``runtime_monarch.MonarchBackend``. The conformance suite
(:mod:`runtime.testing.conformance`) checks every rule below against a backend.

``workers`` and ``pending`` values are opaque handles the backend itself returned; a handle of
another backend is a ``TypeError``.

Placement
    ``reserve(pool, timeout=)`` reserves every node entry of ``pool`` and returns the **node
    IP** of each entry, in ``pool.nodes`` order. It is idempotent per node entry
    (``NodeSlots.key``): split and colocated pools share a reservation, and reserving the same
    pool twice returns the same IPs. Infeasible or not ready within ``timeout`` seconds:
    :class:`~runtime.errors.PlacementError` saying what was asked and what is available.
    ``release(pool)`` gives back the reservations of ``pool``'s node entries; it is idempotent
    (entries not reserved are skipped). Call it once the hosts placed there are terminated or
    dead: an engine may stop hosts still on a released entry (Ray does). A backend whose
    reservations outlive the driver (detached ones) finds them by the entry's key, so another
    driver can release what a dead driver left behind. The core calls it when the last group
    holding a node entry shuts down. ``spawn`` on an entry that is not reserved is a
    :class:`~runtime.errors.PlacementError`. How many groups share a pool is the core's rule,
    not the backend's: at most ``pool.max_colocate_count`` groups per process slot, checked
    before ``reserve`` is called; a backend sizes each slot for that many hosts.
    ``master_endpoint(node_ip, port_range=)`` returns an address and a port free on that node
    for the ``torch.distributed`` rendezvous (the first free one in ``[lo, hi)`` when given;
    none free: :class:`~runtime.errors.PlacementError`).

Lifecycle
    ``spawn(launches, timeout=)`` starts one :class:`HostLaunch` per rank, each on its
    placement, and returns one worker handle per launch, in order. In the rank's process it
    builds ``WorkerHost(launch, scoped_env=False)`` with the **final** context (see
    :func:`finalize_context`: the planned ``CUDA_VISIBLE_DEVICES``, or the accelerator ids the
    backend assigned itself; in a "don't set visible devices" mode the local rank comes from
    those ids) and calls :meth:`WorkerHost.start`, which exports the rank's environment and
    builds its worker(s). A launch may hold several roles (fusion needs nothing more). A
    constructor that raises is :class:`~runtime.errors.WorkerStartError` naming role and rank
    (:meth:`WorkerHost.start` raises it already); on any failure ``spawn`` stops the hosts it
    started before raising. Launches travel **pickled with cloudpickle** semantics: worker
    classes, closures and functions defined in ``__main__`` travel by value; classes of
    importable modules travel by reference, so the rank's process must be able to import them.
    ``launch.detached`` asks for hosts that outlive the driver; a backend whose hosts cannot do
    that raises :class:`~runtime.errors.PlacementError` from ``spawn`` saying so
    (the in-process backend, whose hosts are objects of the driver, accepts it as a no-op).
    ``alive(workers)`` probes liveness (answers within a few seconds even while a long method
    runs; a dead or silent host is ``False``). ``terminate(workers)`` stops hosts and is
    idempotent (terminating a dead or terminated host is a no-op); a terminated host's next
    call fails with :class:`~runtime.errors.WorkerDiedError`. ``shutdown()`` releases
    everything the backend started and is idempotent.

Calls
    ``submit(workers, calls)`` starts ``calls[i]`` on ``workers[i]`` (:meth:`WorkerHost.invoke`
    with the call's role, method, arguments) and returns one pending handle per call without
    waiting for results. Top-level argument values that are :class:`Shared` or
    :class:`FutureSlice` must reach the host resolved: lift them with
    :func:`extract_handles`, resolve the handles (a ``share`` handle, or a pending handle of an
    earlier ``submit``: **the backend resolves chained futures**, on the worker or the driver)
    and give the values to :meth:`WorkerHost.invoke` as ``resolved``, which fills them back.
    A consumer whose producer failed fails with the **producer's** error (its role, rank and
    method), never with a hang or a half-filled argument.

    Every rank gets a **private copy** of its arguments, and the driver a private copy of each
    result: no aliasing between ranks or with the caller (four ranks incrementing an argument
    tensor leave the caller's tensor unchanged and each see ``+1``), and no tensor shared
    through shared memory (a pickler that moves tensors by shared-memory handles, such as
    ``torch.multiprocessing``'s, breaks this rule: copy the storage). Arguments and results
    travel with cloudpickle semantics, like launches: a lambda, a closure over driver state
    and a class defined in a function or in ``__main__`` reach the worker by value.

    ``wait(pending, timeout=)`` returns the results in order. ``timeout=None`` means no
    deadline (a dead rank is still reported as soon as it is noticed, never a hang forever on
    a death); a number is seconds from the call of ``wait``. Errors: a method that raised is
    :class:`~runtime.errors.RemoteMethodError` with the remote type, message and traceback; a
    host that died is :class:`~runtime.errors.WorkerDiedError`; ranks still pending at the
    deadline are :class:`~runtime.errors.CallTimeoutError` naming them. When several ranks
    fail, ``wait`` raises **a death first, else the failure of the lowest rank**; a failure
    noticed before the deadline wins over the timeout. Every error names role, rank,
    method and node. ``share(value)`` publishes a value once for many ranks and returns a handle to
    wrap in :class:`Shared` (the object store's ``put``; the value itself in the in-process
    backend).

Cancellation and recovery
    ``cancel(pending)`` asks the engine to stop these calls, **best effort**: a call that
    already finished, or that the engine cannot interrupt (a running method of a
    single-threaded host), runs on. It never raises for a handle of this backend and never
    blocks long; waiting on a cancelled handle afterwards returns its result or raises a
    :mod:`runtime.errors` error within the deadline, never hangs, and the host keeps answering
    later calls. The in-process backend runs calls at submit time, so its ``cancel`` is a
    no-op; Ray's and Monarch's are no-ops too (neither can interrupt a running call of an
    ordered actor, and ``ray.cancel`` of an actor call breaks the actor).

    Recovery needs nothing more than the methods above: :meth:`runtime.WorkerGroup.restart`
    calls ``terminate`` on the old hosts (which must stop even a hung or dead one),
    ``reserve`` again and ``spawn`` with the same launches, so a backend must accept a new
    spawn of a launch whose old host it terminated (same name, same placement).

Threads
    Every method may be called from any thread, concurrently with the others: the liveness
    monitor (:class:`runtime.LivenessMonitor`) calls ``alive`` from its own thread while the
    driver's thread submits and waits.

Devices
    Device ids never repeat across node entries on one node: a backend that picks the ids
    itself (no engine assigns them) keeps a :class:`DeviceMap`, which gives each reserved
    entry its own run of ids (the halves of a merged pool see ``0..3``, not ``0,1,0,1``).
    :func:`finalize_context` is the one rule every GPU backend shares for the final
    ``visible_devices``/``local_rank``; :meth:`WorkerHost.start` exports the context's
    ``CUDA_VISIBLE_DEVICES``. A backend that starts processes itself should also set it in the
    process's environment before the process starts (CUDA reads it once).

Calls without an envelope (optional)
    A backend may give its host class one engine method per registered worker method, named
    by :func:`method_endpoints` (``<role>__<method>``; :func:`host_subclass` builds the
    class), and send a call whose arguments hold
    no lifted handle straight to it with the call's own arguments, as a raw engine call would;
    every other call goes through the host's generic call. Both end in
    :meth:`WorkerHost.invoke`, so the rules above hold on either path.
"""

from __future__ import annotations

from runtime._backend import Backend, HostLaunch, RankCall
from runtime._context import (
    PROTECTED_ENV_KEYS,
    WorkerContext,
    finalize_context,
    free_port,
    normalize_visible_devices,
)
from runtime._future import FutureSlice, Shared, extract_handles, fill_handles
from runtime._group import GroupCore, WorkerGroup, attached_group
from runtime._host import WorkerHost, host_subclass, method_endpoints
from runtime._log import get_logger
from runtime._placement import DeviceMap, NodeSlots, RankPlacement, ResourcePool

__all__ = [
    "PROTECTED_ENV_KEYS",
    "Backend",
    "DeviceMap",
    "FutureSlice",
    "GroupCore",
    "HostLaunch",
    "NodeSlots",
    "RankCall",
    "RankPlacement",
    "ResourcePool",
    "Shared",
    "WorkerContext",
    "WorkerGroup",
    "WorkerHost",
    "attached_group",
    "extract_handles",
    "fill_handles",
    "finalize_context",
    "free_port",
    "get_logger",
    "host_subclass",
    "method_endpoints",
    "normalize_visible_devices",
]
