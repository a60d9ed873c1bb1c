"""Per-call overhead: each backend against its raw engine on the same processes, like for like.

For every rank count, one group of :class:`~benchmarks.suite_workers.Echo` is started and its
calls are timed against raw engine calls of a trivial method of the **same** host
actors/processes, ``nop``, which returns its first argument (``None`` without one) and runs
none of our code (Ray: ``RayHost.nop`` in the worker methods' concurrency group; Monarch: the
``MonarchHost.nop`` endpoint):

* **no argument** (the issue's trivial call; rows ``{backend}_{mode}_{ranks}``, plotted):
  ``group.call(Echo.noop)`` (``ONE_TO_ALL``, a list of ``None`` back) against, per rank, one
  raw ``nop`` call without arguments, then waiting for all (Ray:
  ``ray.get([h.nop.remote() ...])``; Monarch: ``[h.nop.call_one() ...]``, then ``.get()``
  each);
* **one small argument** (rows ``{backend}_{mode}_arg_{ranks}``, at the rank counts that have
  targets): ``group.call(Echo.echo, 1)`` against raw ``nop`` calls with the same argument
  (``h.nop.remote(1)``; ``h.nop.call_one(1)``).

Each is measured two ways:

* **blocking**: one call, waited for, per sample;
* **pipelined**: ``depth`` calls submitted before any is awaited (``group.submit``, then
  ``.get()`` each) against ``depth`` rounds of raw calls submitted before any is awaited; one
  sample is one such burst (its absolute medians are reported per call: burst time /
  ``depth``).

Ours includes everything a user's call does on the driver (argument checks, dispatch, the
backend's submit and wait with their failure polling, collection) and on the worker (the
host's lookup, context and error handling). The in-process backend's per-call cost is
measured against a direct method call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import attrs

from benchmarks.suite_report import Figure, ratio_figure
from benchmarks.suite_timing import alternate
from benchmarks.suite_workers import Echo
from runtime import Backend, ResourcePool, WorkerGroup, WorkerSpec

__all__ = ["TARGETS", "CallPlan", "RawBurst", "inprocess_figure", "measure_backend"]

#: Targets of issue 11 (ratio to raw): blocking at 4 and 8 ranks, pipelined at 4 ranks; the
#: same for the call without and with one argument.
TARGETS: dict[tuple[str, int], float] = {
    ("blocking", 4): 1.05,
    ("blocking", 8): 1.10,
    ("pipelined", 4): 1.10,
}


@attrs.frozen
class CallPlan:
    """How much to measure: ``repeats`` x ``per_repeat`` samples per side."""

    ranks: tuple[int, ...]
    repeats: int
    per_repeat: int
    depth: int
    pipelined_per_repeat: int


#: ``raw_burst(actors, args)`` returns a function that starts one raw ``nop(*args)`` call per
#: actor and returns a function that waits for them all (and returns their results).
RawBurst = Callable[[Sequence[Any], tuple[Any, ...]], Callable[[], Callable[[], object]]]

#: The argument of the one-argument rows.
ARG = 1


def measure_backend(
    name: str,
    backend: Backend,
    raw_actors: Callable[[WorkerGroup[Echo]], Sequence[Any]],
    raw_burst: RawBurst,
    plan: CallPlan,
) -> list[Figure]:
    """Blocking and pipelined figures of ``backend`` for every rank count of ``plan``
    without an argument, and with one where a target is set (see the module docstring)."""
    figures: list[Figure] = []
    for ranks in plan.ranks:
        group = WorkerGroup(backend, WorkerSpec.of(Echo), ResourcePool.create([ranks]))
        try:
            figures += _measure_group(name, group, raw_burst(raw_actors(group), ()), plan, ())
            if any(r == ranks for _, r in TARGETS):
                start = raw_burst(raw_actors(group), (ARG,))
                figures += _measure_group(name, group, start, plan, (ARG,))
        finally:
            group.shutdown()
    return figures


def _measure_group(
    name: str,
    group: WorkerGroup[Echo],
    start: Callable[[], Callable[[], object]],
    plan: CallPlan,
    args: tuple[int, ...],
) -> list[Figure]:
    """``group.call(Echo.noop)`` (no ``args``) or ``group.call(Echo.echo, *args)`` against
    raw bursts ``start`` of the same arguments."""
    if args:
        (arg,) = args

        def call() -> object:
            return group.call(Echo.echo, arg)

        def submit() -> Callable[[], object]:
            return group.submit(Echo.echo, arg).get

    else:

        def call() -> object:
            return group.call(Echo.noop)

        def submit() -> Callable[[], object]:
            return group.submit(Echo.noop).get

    kind = "arg_" if args else ""
    expect = args[0] if args else None
    return _measure(name, kind, group.world_size, call, submit, start, plan, expect)


def _measure(
    name: str,
    kind: str,
    ranks: int,
    call: Callable[[], object],
    submit: Callable[[], Callable[[], object]],
    start: Callable[[], Callable[[], object]],
    plan: CallPlan,
    expect: object,
) -> list[Figure]:
    """Blocking and pipelined figures of ``call``/``submit`` against raw bursts ``start``."""

    def raw() -> object:
        return start()()

    def ours_burst() -> object:
        waits = [submit() for _ in range(plan.depth)]
        return [w() for w in waits]

    def raw_burst() -> object:
        waits = [start() for _ in range(plan.depth)]
        return [w() for w in waits]

    # Both sides do the same work: each rank answers ``expect``.
    assert call() == [expect] * ranks, call()
    assert raw() == [expect] * ranks
    a, b = alternate(call, raw, repeats=plan.repeats, per_repeat=plan.per_repeat)
    c, d = alternate(
        ours_burst,
        raw_burst,
        repeats=plan.repeats,
        per_repeat=plan.pipelined_per_repeat,
        warmup=1,
    )
    figures = [
        _figure(name, "blocking", kind, ranks, a, b),
        _figure(name, f"pipelined x{plan.depth}", kind, ranks, c, d, per_sample=plan.depth),
    ]
    if not kind and ("blocking", ranks) in TARGETS:
        figures.append(_noise_floor(name, ranks, raw, plan))
    return figures


def _noise_floor(name: str, ranks: int, raw: Callable[[], object], plan: CallPlan) -> Figure:
    """The raw call timed against itself, exactly as ours is timed against it: the ratio a
    change of nothing gets on this machine (ideally 1.00x), and its spread."""
    a, b = alternate(raw, raw, repeats=plan.repeats, per_repeat=plan.per_repeat)
    return ratio_figure(
        f"{name.lower()}_noise_floor_{ranks}",
        f"{name} raw call against itself (noise floor), {ranks} ranks",
        a,
        b,
        base_label=f"raw {name} nop()",
        scale=1e3,
        note="both sides are the same raw call; the spread is the machine's, not ours",
    )


def _figure(
    name: str,
    mode: str,
    kind: str,
    ranks: int,
    a: list[list[float]],
    b: list[list[float]],
    *,
    per_sample: int = 1,
) -> Figure:
    """Absolute medians are per call (a pipelined sample holds ``per_sample`` calls)."""
    base = mode.split(maxsplit=1)[0]
    what = "call, one argument" if kind else "call"
    return ratio_figure(
        f"{name.lower()}_{base}_{kind}{ranks}",
        f"{name} {mode} {what}, {ranks} rank{'s' if ranks > 1 else ''}",
        a,
        b,
        base_label=f"raw {name} nop({ARG if kind else ''})",
        scale=1e3 / per_sample,
        target=TARGETS.get((base, ranks)),
    )


def inprocess_figure(repeats: int, per_repeat: int) -> Figure:
    """``group.call`` on the in-process backend (1 rank) against a direct method call."""
    from runtime.testing import InProcessBackend

    backend = InProcessBackend(copy_values=False)
    group = WorkerGroup(backend, WorkerSpec.of(Echo), ResourcePool.create([1]))
    direct = Echo()
    inner = 100  # calls per sample, so the clock's own cost does not swamp a direct call
    try:
        a, b = alternate(
            lambda: [group.call(Echo.echo, 1) for _ in range(inner)],
            lambda: [direct.echo(1) for _ in range(inner)],
            repeats=repeats,
            per_repeat=per_repeat,
        )
    finally:
        group.shutdown()
        backend.shutdown()
    return ratio_figure(
        "inprocess_call_1",
        "in-process call, 1 rank (per-call cost)",
        a,
        b,
        base_label="direct method call",
        scale=1e3 / inner,
        note="copy_values=False (what rlrun uses)",
    )
