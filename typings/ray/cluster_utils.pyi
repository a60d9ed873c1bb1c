from typing import Any

class Cluster:
    address: str
    def __init__(
        self,
        initialize_head: bool = False,
        connect: bool = False,
        head_node_args: dict[str, Any] | None = None,
        shutdown_at_exit: bool = True,
    ) -> None: ...
    def add_node(self, wait: bool = True, **node_args: Any) -> object: ...
    def wait_for_nodes(self, timeout: float = 30) -> None: ...
    def shutdown(self) -> None: ...
