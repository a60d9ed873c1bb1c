from typing import Any

get_state_from_address: Any
get_memory_info_reply: Any
