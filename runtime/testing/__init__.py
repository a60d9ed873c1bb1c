"""Test support, public API: the in-process backend, its fault injection, and the conformance
suite every backend runs (:mod:`runtime.testing.conformance`).

:class:`InProcessBackend` really runs the plain worker objects, in the calling process and
thread (zero subprocesses; ``breakpoint()`` inside a worker just works). It honours the
placement plan: while a rank runs, :func:`runtime.current_context` and ``os.environ`` hold that
rank's values (``RANK``, ``CUDA_VISIBLE_DEVICES``, ...), restored afterwards. Arguments and
results are passed through a pickle round trip by default, so workers cannot alias the
caller's data and unpicklable values fail here as they would on a real cluster.

Calls run when they are submitted, rank by rank. :attr:`InProcessBackend.faults` injects
deterministic failures so failure paths are testable in milliseconds::

    backend = InProcessBackend()
    backend.faults.die(rank=1)                    # rank 1's next call: WorkerDiedError
    backend.faults.hang(rank=0, method="step")    # never answers: deadline -> CallTimeoutError
    backend.faults.slow(rank=2, seconds=0.2)      # answers 0.2 s late
    backend.faults.fail(rank=3, error=ValueError("boom"))  # the method raises
"""

from runtime.testing._inprocess import Fault, FaultInjector, InProcessBackend, InProcessWorker

__all__ = ["Fault", "FaultInjector", "InProcessBackend", "InProcessWorker"]
