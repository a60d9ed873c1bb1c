"""The Ray cluster a :class:`~runtime_ray.RayBackend` runs on: connecting, node facts, ports.

:class:`Cluster` starts a local cluster (token authentication on) or connects to one, and
remembers whether it did, so closing it never shuts down a Ray it did not start.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from typing import Any

import ray
import ray.exceptions
import ray.util
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from runtime.backend import get_logger
from runtime.errors import PlacementError
from runtime_ray._local_auth import AuthEnv, enable_token_auth

__all__ = [
    "RAY_ADDRESS",
    "Cluster",
    "base_resources",
    "find_port",
    "fmt_resources",
    "node_id",
    "node_ips",
]

_log = get_logger()

#: Environment variable naming the cluster to connect to (Ray's own convention).
RAY_ADDRESS = "RAY_ADDRESS"


class Cluster:
    """This process's connection to Ray (see :class:`~runtime_ray.RayBackend` for the
    arguments): reused when Ray is already initialised, else a connection to ``address`` /
    ``$RAY_ADDRESS``, else a new local cluster with token authentication."""

    def __init__(
        self,
        address: str | None,
        *,
        namespace: str | None,
        num_cpus: int | None,
        num_gpus: int | None,
        runtime_env: Mapping[str, Any],
    ) -> None:
        self.runtime_env: dict[str, Any] = dict(runtime_env)
        self.owns_ray = False
        self._auth_env: AuthEnv | None = None
        target = address if address is not None else os.environ.get(RAY_ADDRESS)
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
            self._connect(target, namespace, num_cpus, num_gpus)
        else:
            self._start_local(namespace, num_cpus, num_gpus)
        self.namespace: str = (
            namespace if namespace is not None else ray.get_runtime_context().namespace
        )

    def _connect(
        self, target: str, namespace: str | None, num_cpus: int | None, num_gpus: int | None
    ) -> None:
        if num_cpus is not None or num_gpus is not None:
            raise ValueError(
                f"num_cpus={num_cpus!r}/num_gpus={num_gpus!r} only size a local cluster that "
                f"RayBackend starts; it is connecting to {target!r}. Drop them, or drop the "
                f"address (and unset ${RAY_ADDRESS}) to start a local cluster."
            )
        ray.init(address=target, namespace=namespace, runtime_env=self.runtime_env or None)
        self.owns_ray = True

    def _start_local(
        self, namespace: str | None, num_cpus: int | None, num_gpus: int | None
    ) -> None:
        # Ray listens on every interface: keep token authentication on, with a token that
        # lives in this process's environment only (restored by close()).
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
                runtime_env=self.runtime_env or None,
                include_dashboard=False,
            )
        except BaseException:
            self._auth_env.restore()
            raise
        self.owns_ray = True

    @property
    def address(self) -> str:
        """The cluster's GCS address."""
        return ray.get_runtime_context().gcs_address

    def free_port(
        self, node_ip: str, port_range: tuple[int, int] | None, *, timeout: float
    ) -> tuple[str, int]:
        """A port free on ``node_ip`` (first free in ``[lo, hi)`` when given), probed there."""
        if port_range is not None:
            lo, hi = port_range
            if not 0 < lo < hi <= 65536:
                raise ValueError(f"port_range={port_range!r}: need 0 < lo < hi <= 65536")
        if node_ip == ray.util.get_node_ip_address():
            port = find_port(port_range)
        else:
            probe = ray.remote(find_port).options(
                num_cpus=0,
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id(node_ip), soft=False),
                runtime_env=self.runtime_env or None,
            )
            try:
                port = ray.get(probe.remote(port_range), timeout=timeout)
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

    def close(self) -> None:
        """``ray.shutdown()`` if this process's Ray was started here; restore the auth env."""
        if self.owns_ray and ray.is_initialized():
            ray.shutdown()
        if self._auth_env is not None:
            self._auth_env.restore()


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


def node_ips() -> dict[str, str]:
    """Node ID -> IP of every alive node."""
    return {n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes() if n.get("Alive")}


def node_id(node_ip: str) -> str:
    """The ID of the alive node with IP ``node_ip`` (none: :class:`PlacementError`)."""
    ips = node_ips()
    for nid, ip in ips.items():
        if ip == node_ip:
            return nid
    raise PlacementError(
        f"no alive Ray node has IP {node_ip!r}; alive nodes: {sorted(ips.values())}"
    )


def base_resources(resources: Mapping[str, float]) -> dict[str, float]:
    """Drop Ray's bookkeeping entries (``node:<ip>``, ``*_group_<id>``) from a resource dict."""
    return {
        k: v
        for k, v in sorted(resources.items())
        if not k.startswith("node:") and "_group_" not in k and not k.startswith("bundle_group")
    }


def fmt_resources(resources: Mapping[str, float]) -> str:
    """``{CPU: 4, GPU: 1}`` (memory entries left out)."""
    shown = {k: v for k, v in resources.items() if k not in ("memory", "object_store_memory")}
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in shown.items()) + "}"
