"""Typed futures of group calls, and the deferred values that travel inside arguments.

A non-blocking group call returns a :class:`GroupFuture` (``.get(timeout=)``, ``await``) that
carries everything needed to finish the collect, including removing padding. A
:class:`BatchFuture` can be passed as an argument to the next group call: the dispatcher cuts
it into :class:`FutureSlice` values, one per consumer rank, each naming only the producer
outputs that rank needs, so each consumer fetches its own rows and nothing more.

Two kinds of values inside call arguments must be resolved by the backend before the worker
runs: :class:`Shared` (a value published once with ``Backend.share``) and :class:`FutureSlice`.
:func:`extract_handles` lifts their backend handles out of the arguments (Ray, for instance,
resolves top-level object references itself) and :func:`fill_handles` puts the resolved values
back and assembles each slice into a batch.
"""

from __future__ import annotations

import asyncio
import bisect
import copy
import itertools
from collections.abc import Callable, Generator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import attrs

from runtime._batch import Batch
from runtime.errors import DispatchError

if TYPE_CHECKING:
    from runtime._backend import Backend

__all__ = [
    "BatchFuture",
    "Collector",
    "FutureSlice",
    "GroupFuture",
    "Shared",
    "extract_handles",
    "fill_handles",
]

T = TypeVar("T")


@attrs.frozen
class Shared:
    """A value published once (``Backend.share``); ``handle`` is the backend's reference."""

    handle: object


@attrs.frozen
class FutureSlice:
    """The rows of a pending batch that one consumer needs.

    ``handles`` are pending producer outputs; ``expected`` their row counts as dispatched;
    ``rows`` the global row indices (into the concatenation of ``handles``, in order) that form
    this consumer's batch. Producers must return as many rows as they received (checked).
    """

    handles: tuple[object, ...]
    expected: tuple[int, ...]
    rows: tuple[int, ...]
    producer: str

    def assemble(self, parts: Sequence[Any]) -> Batch:
        """Build the consumer's batch from the resolved producer outputs."""
        checked: list[Batch] = []
        for i, (part, want) in enumerate(zip(parts, self.expected, strict=True)):
            if not isinstance(part, Batch):
                raise DispatchError(
                    f"a future of {self.producer} resolved to {type(part).__name__}, not a Batch; "
                    "only batch futures can be passed to another call"
                )
            if len(part) != want:
                raise DispatchError(
                    f"{self.producer}: producer part {i} returned {len(part)} rows but received "
                    f"{want}; chaining a future needs row-preserving methods. Call .get() on the "
                    "driver and pass the batch instead."
                )
            checked.append(part)
        whole = checked[0] if len(checked) == 1 else Batch.concat(checked)
        if list(self.rows) == list(range(len(whole))):
            return whole
        return whole.select_idxs(list(self.rows))


@attrs.frozen
class _Slot:
    index: int


def extract_handles(
    args: Sequence[Any], kwargs: Mapping[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any], list[object]]:
    """Replace top-level :class:`Shared`/:class:`FutureSlice` values by slots; return the
    template arguments and the backend handles to resolve (in slot order)."""
    handles: list[object] = []

    def lift(value: Any) -> Any:
        if isinstance(value, Shared):
            handles.append(value.handle)
            return _Slot(len(handles) - 1)
        if isinstance(value, FutureSlice):
            slots: list[object] = []
            for h in value.handles:
                handles.append(h)
                slots.append(_Slot(len(handles) - 1))
            return attrs.evolve(value, handles=tuple(slots))
        return value

    new_args = tuple(lift(a) for a in args)
    new_kwargs = {k: lift(v) for k, v in kwargs.items()}
    return new_args, new_kwargs, handles


def fill_handles(
    args: Sequence[Any], kwargs: Mapping[str, Any], values: Sequence[Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Inverse of :func:`extract_handles`: put resolved ``values`` back; slices become batches."""

    def fill(value: Any) -> Any:
        if isinstance(value, _Slot):
            return values[value.index]
        if isinstance(value, FutureSlice):
            parts = [values[s.index] if isinstance(s, _Slot) else s for s in value.handles]
            return value.assemble(parts)
        return value

    return tuple(fill(a) for a in args), {k: fill(v) for k, v in kwargs.items()}


@attrs.frozen
class Collector:
    """How per-rank outputs become a call's result.

    ``kind``: ``"list"`` (one per rank), ``"single"`` (rank 0's value), ``"concat"`` (batches
    concatenated, the last ``pad`` rows dropped), ``"custom"`` (``fn(outputs)``). ``order``
    keeps and orders outputs (mesh collectors by dp rank).
    """

    kind: str
    pad: int = 0
    order: tuple[int, ...] | None = None
    fn: Callable[[list[Any]], Any] | None = None

    def finish(self, outputs: list[Any], *, what: str) -> Any:
        if self.order is not None:
            outputs = [outputs[i] for i in self.order]
        if self.kind == "list":
            return outputs
        if self.kind == "single":
            return outputs[0]
        if self.kind == "custom":
            assert self.fn is not None
            return self.fn(outputs)
        return _concat(outputs, self.pad, what)


def _concat(outputs: list[Any], pad: int, what: str) -> Any:
    if all(isinstance(o, Batch) for o in outputs):
        whole = outputs[0] if len(outputs) == 1 else Batch.concat(outputs)
        return whole.unpad(pad) if pad else whole
    if all(isinstance(o, list) for o in outputs):
        flat = [x for o in outputs for x in o]
        return flat[: len(flat) - pad] if pad else flat
    kinds = sorted({type(o).__name__ for o in outputs})
    raise DispatchError(
        f"{what}: a data-parallel method must return a Batch (or a list) on every rank so the "
        f"results can be concatenated; got {kinds}"
    )


class GroupFuture(Generic[T]):
    """The pending result of a non-blocking group call.

    ``get(timeout=)`` waits (raising :class:`~runtime.errors.CallTimeoutError` naming the
    ranks still pending) and finishes the collect; ``await future`` does the same without
    blocking the event loop. The result is computed once and cached.
    """

    def __init__(
        self,
        backend: Backend,
        pending: Sequence[object],
        collector: Collector,
        *,
        what: str,
        default_timeout: float | None = None,
    ) -> None:
        self._backend = backend
        self._pending = tuple(pending)
        self._collector = collector
        self._what = what
        self._default_timeout = default_timeout
        self._done = False
        self._value: Any = None

    def get(self, timeout: float | None = None) -> T:
        """Wait for every rank and return the collected result."""
        if not self._done:
            t = self._default_timeout if timeout is None else timeout
            outputs = self._backend.wait(self._pending, timeout=t)
            self._value = self._collector.finish(outputs, what=self._what)
            self._done = True
        value: T = self._value
        return value

    def cancel(self) -> None:
        """Ask the backend to stop the ranks' calls, best effort (``Backend.cancel``): a call
        that already runs may finish anyway; ``get`` then returns or raises, never hangs."""
        if not self._done:
            self._backend.cancel(self._pending)

    def __await__(self) -> Generator[Any, None, T]:
        return asyncio.to_thread(self.get).__await__()

    def __repr__(self) -> str:
        state = "done" if self._done else "pending"
        return f"<GroupFuture {self._what} ({len(self._pending)} ranks, {state})>"


class BatchFuture(GroupFuture[Batch]):
    """A pending batch. Pass it straight into another group call to chain without a round
    trip through the driver; each consumer then fetches only the rows it needs."""

    def __init__(
        self,
        backend: Backend,
        pending: Sequence[object],
        collector: Collector,
        *,
        what: str,
        part_rows: Sequence[int],
        default_timeout: float | None = None,
    ) -> None:
        super().__init__(backend, pending, collector, what=what, default_timeout=default_timeout)
        order = collector.order if collector.order is not None else range(len(pending))
        self._parts = tuple(self._pending[i] for i in order)
        self._part_rows = tuple(part_rows)
        if len(self._parts) != len(self._part_rows):
            raise DispatchError(f"{what}: {len(self._parts)} parts but {len(part_rows)} row counts")
        # Set on views made by ``reorder``: the future they read from and its rows, in order.
        self._source: BatchFuture | None = None
        self._order: tuple[int, ...] | None = None

    def get(self, timeout: float | None = None) -> Batch:
        """Wait for every rank and return the collected batch (in this view's row order)."""
        if self._source is None or self._order is None:
            return super().get(timeout)
        return self._source.get(timeout).reorder(list(self._order))

    def reorder(self, order: Sequence[int]) -> BatchFuture:
        """This future with its rows in ``order`` (a permutation of ``range(len(self))``), like
        :meth:`Batch.reorder` but nothing is fetched: a consumer of the view fetches the
        producer parts its rows live in, and :meth:`get` returns the collected batch reordered.
        A ``DispatchError`` names the problem when ``order`` is not a permutation."""
        n = len(self)
        if sorted(order) != list(range(n)):
            raise DispatchError(
                f"reorder of a future of {self._what} ({n} rows) needs a permutation of "
                f"range({n}); got {len(order)} indices"
            )
        view = copy.copy(self)
        view._source = self._source if self._source is not None else self
        base = self._order
        view._order = tuple(order) if base is None else tuple(base[i] for i in order)
        return view

    def __len__(self) -> int:
        """Rows of the collected batch (padding removed)."""
        return sum(self._part_rows) - self._collector.pad

    def slice_rows(self, rows: Sequence[int]) -> FutureSlice:
        """A slice holding global ``rows`` (indices into the collected batch), fetching only
        the producer parts those rows live in."""
        n = len(self)
        outside = [g for g in rows if not 0 <= g < n]
        if outside:
            raise DispatchError(f"row {outside[0]} is outside a future of {n} rows")
        if self._order is not None:
            rows = [self._order[g] for g in rows]
        starts = list(itertools.accumulate(self._part_rows, initial=0))[:-1]
        # The last part starting at or before each row holds it (empty parts are skipped).
        owner = [bisect.bisect_right(starts, g) - 1 for g in rows]
        needed = sorted(set(owner))
        local_start: dict[int, int] = {}
        acc = 0
        for p in needed:
            local_start[p] = acc
            acc += self._part_rows[p]
        local = [local_start[p] + g - starts[p] for g, p in zip(rows, owner, strict=True)]
        return FutureSlice(
            handles=tuple(self._parts[p] for p in needed),
            expected=tuple(self._part_rows[p] for p in needed),
            rows=tuple(local),
            producer=self._what,
        )
