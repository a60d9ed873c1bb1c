"""The part of tensorboard's EventAccumulator that tests/test_trackers.py reads back."""

from typing import Any, NamedTuple

SCALARS: str
TENSORS: str

class ScalarEvent(NamedTuple):
    wall_time: float
    step: int
    value: float

class TensorEvent(NamedTuple):
    wall_time: float
    step: int
    tensor_proto: Any

class EventAccumulator:
    def __init__(self, path: str, size_guidance: dict[str, int] | None = ...) -> None: ...
    def Reload(self) -> EventAccumulator: ...
    def Tags(self) -> dict[str, Any]: ...
    def Scalars(self, tag: str) -> list[ScalarEvent]: ...
    def Tensors(self, tag: str) -> list[TensorEvent]: ...
