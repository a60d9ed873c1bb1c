"""The public implementer's API: :mod:`runtime.backend` (device finalisation, built-in calls)."""

from __future__ import annotations

from typing import Any

import runtime
import runtime.backend
from runtime import Dispatch, register
from runtime.backend import (
    WorkerContext,
    WorkerHost,
    finalize_context,
    host_subclass,
    method_endpoints,
)


def _planned(*devices: str) -> WorkerContext:
    return WorkerContext(
        rank=1,
        world_size=2,
        local_rank=1,
        local_world_size=2,
        node_ip="10.0.0.1",
        master_addr="10.0.0.1",
        master_port=29500,
        visible_devices=devices,
    )


def test_assigned_ids_replace_the_planned_devices() -> None:
    final = finalize_context(_planned("1"), [3])
    assert final.visible_devices == ("3",)
    assert final.local_rank == 1
    assert final.env()["CUDA_VISIBLE_DEVICES"] == "3"


def test_no_assigned_ids_keeps_the_plan() -> None:
    planned = _planned("1")
    assert finalize_context(planned, None) is planned


def test_noset_mode_takes_the_local_rank_from_the_first_id() -> None:
    final = finalize_context(_planned("1"), ["5", "6"], noset=True)
    assert final.visible_devices == ()
    assert final.local_rank == 5
    assert "CUDA_VISIBLE_DEVICES" not in final.env()


def test_noset_mode_without_assigned_ids_uses_the_planned_ids() -> None:
    final = finalize_context(_planned("2"), None, noset=True)
    assert (final.visible_devices, final.local_rank) == ((), 2)


def test_noset_mode_on_a_cpu_rank_keeps_the_planned_local_rank() -> None:
    final = finalize_context(_planned(), [], noset=True)
    assert (final.visible_devices, final.local_rank) == ((), 1)


def test_builtin_calls_are_host_attributes_with_reserved_names() -> None:
    names = {WorkerHost.CONTEXT, WorkerHost.MESH_INFO, WorkerHost.PING, WorkerHost.RUN_FUNCTION}
    assert len(names) == 4
    assert all(name.startswith("__rt_") for name in names)


def test_the_protocol_is_the_same_object_in_both_apis() -> None:
    assert runtime.backend.Backend is runtime.Backend
    assert runtime.backend.HostLaunch is runtime.HostLaunch
    assert runtime.backend.WorkerHost is runtime.WorkerHost


class _Actor:
    @register(Dispatch.ONE_TO_ALL)
    def generate(self) -> int:
        return 1

    @register(Dispatch.ONE_TO_ALL)
    def update(self) -> int:
        return 2

    def helper(self) -> int:  # not registered: no engine method
        return 3


class _Host:
    actor__update = "taken by the host"


def test_method_endpoints_names_every_registered_method_of_every_role() -> None:
    names = method_endpoints([("actor", _Actor), ("ref", _Actor)], object)
    assert names == {
        ("actor", "generate"): "actor__generate",
        ("actor", "update"): "actor__update",
        ("ref", "generate"): "ref__generate",
        ("ref", "update"): "ref__update",
    }


def test_method_endpoints_leaves_out_a_name_the_host_already_has() -> None:
    assert method_endpoints([("actor", _Actor)], _Host) == {
        ("actor", "generate"): "actor__generate"
    }


class _RecordingHost:
    def run(self, role: str, method: str, args: Any, kwargs: Any) -> tuple[str, str, Any, Any]:
        return role, method, args, kwargs


def test_host_subclass_gives_each_registered_method_an_engine_method_that_runs_it() -> None:
    cls, methods = host_subclass(_RecordingHost, [("actor", _Actor)])
    assert issubclass(cls, _RecordingHost)
    assert cls.__qualname__ == "_RecordingHost[actor]"
    assert methods == method_endpoints([("actor", _Actor)], _RecordingHost)
    host = cls()
    engine_method = getattr(host, methods[("actor", "update")])
    assert engine_method(1, k=2) == ("actor", "update", (1,), {"k": 2})
