"""Rank order by node IP on a fake two-node cluster (its own Ray instance, so its own process).

Run as ``python -m tests.ray._two_node_driver``. ``ray.cluster_utils.Cluster`` starts two
raylets on this machine bound to distinct loopback addresses: the head on 127.0.0.3 with 2
fake GPUs and a second node on 127.0.0.2 with 1. The pool ``[2, 1]`` (one GPU per process)
reserves entry 0 first, which only fits on 127.0.0.3; entry 1 then lands on 127.0.0.2. Ranks
must follow node IP, not pool order: rank 0 is entry 1's process on 127.0.0.2 (so the
rendezvous port is probed there, by a Ray task pinned to that node), ranks 1-2 are on
127.0.0.3. A gloo all-reduce across the two "nodes" checks the rendezvous end to end.

Asserts, prints one JSON line, and exits non-zero on failure (the test checks both).
"""

from __future__ import annotations

import json
import os
import sys

from ray.cluster_utils import Cluster

from runtime import ResourcePool, WorkerGroup, WorkerSpec
from runtime_ray import RayBackend
from tests._ray_session import REPO_ROOT
from tests.ray.workers import Probe

LOW, HIGH = "127.0.0.2", "127.0.0.3"


def main() -> int:
    os.environ.pop("RAY_ADDRESS", None)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 2, "num_gpus": 2, "node_ip_address": HIGH},
    )
    try:
        cluster.add_node(num_cpus=2, num_gpus=1, node_ip_address=LOW)
        cluster.wait_for_nodes()
        with RayBackend(
            cluster.address, runtime_env={"env_vars": {"PYTHONPATH": str(REPO_ROOT)}}
        ) as backend:
            pool = ResourcePool.create([2, 1], devices_per_process=1)
            group = WorkerGroup(backend, WorkerSpec.of(Probe), pool, timeout=120)
            contexts = group.contexts()
            seen = group.call(Probe.seen)
            total = group.call(Probe.allreduce, 1.0)
            report = {
                "node_ip": [c.node_ip for c in contexts],
                "actual_ip": [s["node_ip"] for s in seen],
                "local_rank": [c.local_rank for c in contexts],
                "local_world_size": [c.local_world_size for c in contexts],
                "bundle": [p.bundle for p in group.placement.ranks] if group.placement else [],
                "entry": [p.node.index for p in group.placement.ranks] if group.placement else [],
                "master_addr": group.master_addr,
                "gpus": [s["CUDA_VISIBLE_DEVICES"] for s in seen],
                "allreduce": total,
            }
            print(json.dumps(report))
            assert report["node_ip"] == [LOW, HIGH, HIGH], report
            assert report["actual_ip"] == report["node_ip"], report
            assert report["entry"] == [1, 0, 0], report
            assert report["local_rank"] == [0, 0, 1], report
            assert report["local_world_size"] == [1, 2, 2], report
            assert report["master_addr"] == LOW, report
            assert len({s["CUDA_VISIBLE_DEVICES"] for s in seen[1:]}) == 2, report
            assert total == [6.0, 6.0, 6.0], report  # (1+0) + (1+1) + (1+2)
    finally:
        cluster.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
