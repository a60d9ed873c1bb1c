from collections.abc import Callable, Mapping
from typing import Any, Concatenate, Generic, ParamSpec, Self, TypeVar, overload



_P = ParamSpec("_P")
_R = TypeVar("_R")
_R_co = TypeVar("_R_co", covariant=True)
_A = TypeVar("_A", bound=Actor)

class Future(Generic[_R_co]):
    def get(self, timeout: float | None = None) -> _R_co: ...

class Endpoint(Generic[_P, _R]):
    def call_one(self, *args: _P.args, **kwargs: _P.kwargs) -> Future[_R]: ...
    def call(self, *args: _P.args, **kwargs: _P.kwargs) -> Future[Any]: ...
    def broadcast(self, *args: _P.args, **kwargs: _P.kwargs) -> None: ...

class _EndpointProperty(Generic[_P, _R]):
    @overload
    def __get__(self, instance: None, owner: type[Any]) -> Endpoint[_P, _R]: ...
    @overload
    def __get__(self, instance: object, owner: type[Any] | None = None) -> Endpoint[_P, _R]: ...

def endpoint(method: Callable[Concatenate[Any, _P], _R]) -> _EndpointProperty[_P, _R]: ...

class Actor:
    # An actor mesh is typed as its actor class (as Monarch types it): slicing keeps the type.
    def slice(self, **kwargs: int | slice) -> Self: ...

class ActorError(Exception):
    exception: BaseException
    exception_formatted: str

class ProcMesh:
    def spawn(self, name: str, Class: type[_A], *args: Any, **kwargs: Any) -> _A: ...
    def stop(self, reason: str = "stopped by client") -> Future[None]: ...

class BootstrapCommand:
    def with_env(self, env: Mapping[str, str]) -> BootstrapCommand: ...

class HostMesh:
    def spawn_procs(
        self,
        per_host: Mapping[str, int] | None = None,
        *,
        name: str | None = None,
        bootstrap_command: BootstrapCommand | None = None,
    ) -> ProcMesh: ...

def this_host() -> HostMesh: ...
def default_bootstrap_cmd() -> BootstrapCommand: ...

#: Called with a mesh failure nobody handled; Monarch's default exits the process.
unhandled_fault_hook: Callable[[Any], None]
