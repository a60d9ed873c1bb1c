"""What the session's Ray cluster holds, read from Ray's GCS (imports ray: Ray cases only).

The session cluster runs without the dashboard, so Ray's public state API
(``ray.util.state.list_actors``, served by the dashboard) is unavailable; the GCS tables behind
it are read directly: ``ray._private.state.actors()`` (the actor table) and
``ray.util.placement_group_table()``.
"""

from __future__ import annotations

from typing import Any, cast

import ray._private.state
import ray.util

__all__ = ["live_actor_count", "live_placement_group_count"]


def live_actor_count() -> int:
    """Actors not yet DEAD (alive, pending or restarting)."""
    table = cast(dict[str, dict[str, Any]], ray._private.state.actors())
    return sum(1 for info in table.values() if info.get("State") != "DEAD")


def live_placement_group_count() -> int:
    """Placement groups not yet REMOVED (created, pending or rescheduling)."""
    table = cast(dict[str, dict[str, Any]], ray.util.placement_group_table())
    return sum(1 for info in table.values() if info.get("state") != "REMOVED")
