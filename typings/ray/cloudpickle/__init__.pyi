from collections.abc import Callable
from pickle import PickleBuffer

def dumps(
    obj: object,
    protocol: int | None = None,
    buffer_callback: Callable[[PickleBuffer], object] | None = None,
) -> bytes: ...
