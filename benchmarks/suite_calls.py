"""Per-call overhead: each backend against its raw engine on the same processes.

For every rank count, one group of :class:`~benchmarks.suite_workers.Echo` is started and
measured two ways against a raw call of the **same** host actors/processes:

* **blocking**: ``group.call(Echo.echo, 1)`` (ONE_TO_ALL, a list back) against one raw call
  per rank, then waiting for all (Ray: ``ray.get([h.ping.remote() ...])``; Monarch:
  ``[a.ping.call_one() ...]`` then ``.get()`` each). ``ping`` is the host's trivial endpoint:
  it goes through the engine alone, with none of our dispatch, lookup or error handling;
* **pipelined**: ``depth`` calls submitted before any is awaited (``group.submit``) against
  ``depth`` rounds of raw calls submitted before any is awaited; one sample is one such burst
  (its absolute medians are reported per call: burst time / ``depth``).

The in-process backend's per-call cost is measured against a direct method call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import attrs

from benchmarks.suite_report import Figure, ratio_figure
from benchmarks.suite_timing import alternate
from benchmarks.suite_workers import Echo
from runtime import Backend, ResourcePool, WorkerGroup, WorkerSpec

__all__ = ["CallPlan", "TARGETS", "inprocess_figure", "measure_backend"]

#: Targets of issue 11 (ratio to raw): blocking at 4 and 8 ranks, pipelined at 4 ranks.
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


#: ``raw_burst(actors, payload)`` returns a function that starts one raw call per actor and
#: returns a function that waits for them all. ``payload=None``: the host's no-argument
#: ``ping``; otherwise the host's own ``invoke`` endpoint with ``payload``, the very call our
#: group sends (the engine's cost of an argument and of our host's dispatch, without any of
#: the driver-side group code).
RawBurst = Callable[[Sequence[Any], "tuple[Any, ...] | None"], Callable[[], Callable[[], object]]]

#: The calls the groups make: ``Echo.echo(1)`` on role ``echo``.
ECHO_ARGS: tuple[str, str, tuple[int], dict[str, Any]] = ("echo", "echo", (1,), {})


def measure_backend(
    name: str,
    backend: Backend,
    raw_actors: Callable[[WorkerGroup[Echo]], Sequence[Any]],
    raw_burst: RawBurst,
    plan: CallPlan,
    payload: tuple[Any, ...] = ECHO_ARGS,
) -> list[Figure]:
    """Blocking and pipelined figures of ``backend`` for every rank count of ``plan`` (against
    ``ping``), and at 4 ranks the blocking call against a raw ``invoke`` of ``payload``."""
    figures: list[Figure] = []
    for ranks in plan.ranks:
        group = WorkerGroup(backend, WorkerSpec.of(Echo), ResourcePool.create([ranks]))
        try:
            handles = raw_actors(group)
            figures += _measure_group(name, group, raw_burst(handles, None), plan)
            if ranks == 4:
                figures += _same_payload(name, group, raw_burst(handles, payload), plan)
        finally:
            group.shutdown()
    return figures


def _measure_group(
    name: str, group: WorkerGroup[Echo], start: Callable[[], Callable[[], object]], plan: CallPlan
) -> list[Figure]:
    ranks = group.world_size

    def ours() -> object:
        return group.call(Echo.echo, 1)

    def raw() -> object:
        return start()()

    def ours_burst() -> object:
        futures = [group.submit(Echo.echo, 1) for _ in range(plan.depth)]
        return [f.get() for f in futures]

    def raw_burst() -> object:
        waits = [start() for _ in range(plan.depth)]
        return [w() for w in waits]

    assert ours() == [1] * ranks
    a, b = alternate(ours, raw, repeats=plan.repeats, per_repeat=plan.per_repeat)
    c, d = alternate(
        ours_burst,
        raw_burst,
        repeats=plan.repeats,
        per_repeat=plan.pipelined_per_repeat,
        warmup=1,
    )
    return [
        _figure(name, "blocking", ranks, a, b),
        _figure(name, f"pipelined x{plan.depth}", ranks, c, d, per_sample=plan.depth),
    ]


def _same_payload(
    name: str, group: WorkerGroup[Echo], start: Callable[[], Callable[[], object]], plan: CallPlan
) -> list[Figure]:
    """``group.call`` (blocking and pipelined) against raw calls of the host's ``invoke`` with
    the same payload on the same actors: what the driver-side group code (planning, dispatch,
    futures, collection) adds to the engine's own cost of the call."""
    assert start()() is not None
    figures = _measure_group(name, group, start, plan)
    note = "the raw side calls the host's own invoke endpoint with the group's payload"
    return [
        attrs.evolve(
            f,
            key=f.key + "_same_payload",
            title=f.title + ", vs raw invoke of the same payload",
            base_label=f.base_label + " invoke",
            target=None,
            note=note,
        )
        for f in figures
    ]


def _figure(
    name: str,
    mode: str,
    ranks: int,
    a: list[list[float]],
    b: list[list[float]],
    *,
    per_sample: int = 1,
) -> Figure:
    """Absolute medians are per call (a pipelined sample holds ``per_sample`` calls)."""
    kind = mode.split(maxsplit=1)[0]
    return ratio_figure(
        f"{name.lower()}_{kind}_{ranks}",
        f"{name} {mode} call, {ranks} rank{'s' if ranks > 1 else ''}",
        a,
        b,
        base_label=f"raw {name}",
        scale=1e3 / per_sample,
        target=TARGETS.get((kind, ranks)),
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
