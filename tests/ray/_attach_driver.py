"""A second Ray driver for ``test_detached_group_attach_from_another_driver``.

Run as ``python -m tests.ray._attach_driver ADDRESS NAMESPACE [--release POOL] NAME...``:
connects to the running cluster, attaches to the detached hosts ``NAME...``, calls them,
kills them (``group.shutdown()``), with ``--release`` then releases the reservation of the
one-entry pool named ``POOL`` that the exited driver left behind, prints one JSON line and
disconnects. Exits non-zero on any failure.
"""

from __future__ import annotations

import json
import sys

from runtime import ResourcePool
from runtime_ray import attach
from tests.ray.workers import Probe


def main(argv: list[str]) -> int:
    address, namespace, *names = argv
    release = None
    if names[0] == "--release":
        release, *names = names[1:]
    group = attach(names, Probe, role="probe", namespace=namespace, address=address)
    try:
        echo = group.call(Probe.rank_plus, 10)
        contexts = group.contexts()
        tags = [seen["tag"] for seen in group.call(Probe.seen)]
        group.shutdown()  # kills the detached workers: they belong to nobody else now
        if release is not None:
            # The same name and entry count: the reservation is found by its entry's key.
            group.backend.release(ResourcePool.create([len(names)], name=release, detached=True))
        print(
            json.dumps(
                {
                    "echo": echo,
                    "ranks": [c.rank for c in contexts],
                    "group": group.name,
                    "names": group.worker_names,
                    "tags": tags,
                }
            )
        )
    finally:
        group.backend.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
