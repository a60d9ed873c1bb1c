from typing import Any, Generic, TypeVar

_T = TypeVar("_T")

class ActorClass(Generic[_T]):
    def options(self, **actor_options: Any) -> ActorClass[_T]: ...
    def remote(self, *args: Any, **kwargs: Any) -> ActorHandle[_T]: ...

class ActorHandle(Generic[_T]):
    # Remote methods are reached by name (`handle.method.remote(...)`): untyped here, as
    # in Ray; runtime_ray._casts.HostActorRef is the typed view of our host actor.
    def __getattr__(self, name: str) -> Any: ...
