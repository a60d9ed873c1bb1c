from ray.util import placement_group as placement_group
from ray.util import scheduling_strategies as scheduling_strategies
from ray.util.placement_group import (
    PlacementGroup,
    get_placement_group as get_placement_group,
    placement_group_table as placement_group_table,
    remove_placement_group as remove_placement_group,
)

def get_node_ip_address() -> str: ...
