"""Finding running (detached) hosts by name, e.g. from another driver, to attach a group."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import ray
from ray.actor import ActorHandle

from runtime.backend import WorkerContext, WorkerHost
from runtime_ray import _casts
from runtime_ray._calls import RayPending, RayWorker, gather

__all__ = ["find_hosts"]


def find_hosts(
    names: Sequence[str], *, role: str, namespace: str, timeout: float, poll: float
) -> tuple[list[RayWorker], list[WorkerContext]]:
    """The host actors named ``names`` in ``namespace`` and their contexts, in rank order.

    Unknown names, or names that are not every rank of one group exactly once, are a
    ``ValueError`` saying what to pass instead.
    """
    if not names:
        raise ValueError("attach needs at least one actor name")
    handles: list[ActorHandle[Any]] = []
    for name in names:
        try:
            handles.append(ray.get_actor(name, namespace=namespace))
        except ValueError as exc:
            raise ValueError(
                f"no Ray actor named {name!r} in namespace {namespace!r}; pass the names from "
                "group.worker_names and the namespace of the driver that created them "
                "(RayBackend(namespace=...))"
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
    contexts: list[WorkerContext] = gather(probes, timeout=timeout, starting=False, poll=poll)
    order = sorted(range(len(names)), key=lambda i: contexts[i].rank)
    ranks = [contexts[i].rank for i in order]
    sizes = {c.world_size for c in contexts}
    if ranks != list(range(len(names))) or sizes != {len(names)}:
        raise ValueError(
            f"actors {list(names)} hold ranks {sorted(ranks)} of world size(s) "
            f"{sorted(sizes)}; attach needs every rank of one group exactly once"
        )
    workers = [
        RayWorker(
            actor=handles[i],
            name=names[i],
            rank=contexts[i].rank,
            roles=(role,),
            node_ip=contexts[i].node_ip,
            detached=True,
        )
        for i in order
    ]
    return workers, [contexts[i] for i in order]
