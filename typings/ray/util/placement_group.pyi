from collections.abc import Mapping, Sequence
from typing import Any

from ray import ObjectRef

class PlacementGroup:
    def ready(self) -> ObjectRef[PlacementGroup]: ...

def placement_group(
    bundles: Sequence[Mapping[str, float]],
    strategy: str = "PACK",
    name: str = "",
    lifetime: str | None = None,
) -> PlacementGroup: ...
def remove_placement_group(placement_group: PlacementGroup) -> None: ...
def get_placement_group(placement_group_name: str) -> PlacementGroup: ...
def placement_group_table(placement_group: PlacementGroup | None = None) -> dict[str, Any]: ...
