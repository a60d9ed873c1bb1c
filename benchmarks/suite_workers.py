"""Worker classes of the suite (a module, so Ray's and Monarch's processes can import them)."""

from __future__ import annotations

from runtime import Batch, Dispatch, current_context, mesh_dispatch, register, register_mesh

__all__ = ["MESH", "Echo", "MeshEcho", "RawEcho"]

#: The mesh of :class:`MeshEcho`: dp groups of two ranks (a tensor-parallel pair each).
MESH = "dp_pairs"


class Echo:
    """Trivial and batch echoes."""

    @register(Dispatch.ONE_TO_ALL)
    def noop(self) -> None:
        """The trivial call without an argument."""

    @register(Dispatch.ONE_TO_ALL)
    def echo(self, x: int) -> int:
        return x

    @register(Dispatch.DP_COMPUTE_PROTO)
    def echo_batch(self, data: Batch) -> Batch:
        return data


class MeshEcho:
    """Ranks ``2d`` and ``2d+1`` form dp rank ``d``; the even rank collects."""

    def __init__(self) -> None:
        rank = current_context().rank
        register_mesh(MESH, dp_rank=rank // 2, is_collector=rank % 2 == 0)

    @register(mesh_dispatch(MESH))
    def echo_batch(self, data: Batch) -> Batch:
        return data


class RawEcho:
    """A plain Ray actor class (the raw zero-copy baseline); no runtime involved."""

    def echo(self, x: object) -> object:
        return x
