"""A typed, backend-agnostic single-controller runtime for RL post-training.

Plain worker classes, ``@register``-ed methods, a :class:`Backend` injected into
:class:`WorkerGroup`, group calls mypy checks, and a :class:`Batch` type. This package never
imports ray; ``runtime_ray.RayBackend`` is the Ray implementation and
``runtime.testing.InProcessBackend`` runs everything in the calling process.
"""

from runtime import errors
from runtime._backend import Backend, HostLaunch, RankCall
from runtime._batch import Batch
from runtime._context import (
    PROTECTED_ENV_KEYS,
    NotInWorkerError,
    WorkerContext,
    current_context,
    free_port,
    normalize_visible_devices,
)
from runtime._dispatch import (
    CallPlan,
    MeshLayout,
    plan_call,
    remove_dispatch_mode,
    update_dispatch_mode,
)
from runtime._fusion import FusedGroup, fuse
from runtime._future import (
    BatchFuture,
    Collector,
    FutureSlice,
    GroupFuture,
    Shared,
    extract_handles,
    fill_handles,
)
from runtime._group import GroupCore, LivenessMonitor, SpawnOptions, WorkerGroup
from runtime._host import WorkerHost, register_mesh, sibling
from runtime._log import get_logger
from runtime._placement import (
    NodeSlots,
    PlacementPlan,
    RankPlacement,
    ResourcePool,
    merge_pools,
    plan_placement,
)
from runtime._register import (
    CallArgs,
    CustomMode,
    Dispatch,
    Execute,
    MeshMode,
    Method,
    MethodMeta,
    PerRankMethod,
    Registered,
    Registrar,
    get_method_meta,
    mesh_dispatch,
    register,
    register_dispatch_mode,
    registered_methods,
)
from runtime._spec import WorkerSpec

__all__ = [
    "PROTECTED_ENV_KEYS",
    "Backend",
    "Batch",
    "BatchFuture",
    "CallArgs",
    "CallPlan",
    "Collector",
    "CustomMode",
    "Dispatch",
    "Execute",
    "FusedGroup",
    "FutureSlice",
    "GroupCore",
    "GroupFuture",
    "HostLaunch",
    "LivenessMonitor",
    "MeshLayout",
    "MeshMode",
    "Method",
    "MethodMeta",
    "NodeSlots",
    "NotInWorkerError",
    "PerRankMethod",
    "PlacementPlan",
    "RankCall",
    "RankPlacement",
    "Registered",
    "Registrar",
    "ResourcePool",
    "Shared",
    "SpawnOptions",
    "WorkerContext",
    "WorkerGroup",
    "WorkerHost",
    "WorkerSpec",
    "current_context",
    "errors",
    "extract_handles",
    "fill_handles",
    "free_port",
    "fuse",
    "get_logger",
    "get_method_meta",
    "merge_pools",
    "mesh_dispatch",
    "normalize_visible_devices",
    "plan_call",
    "plan_placement",
    "register",
    "register_dispatch_mode",
    "register_mesh",
    "registered_methods",
    "remove_dispatch_mode",
    "sibling",
    "update_dispatch_mode",
]
