"""``EngineConfig``: how evaluation runs in the background (the ``engine:`` section)."""

from __future__ import annotations

from dataclasses import dataclass, field

from otel_online_eval.assembly import AssemblyBounds

__all__ = ["EngineConfig"]


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """How evaluation runs in the background.

    Attributes:
        queue_size: spans waiting for evaluation; when full, new spans are dropped and counted.
        max_concurrent_evals: (span, rule) evaluations in flight at once; also the default
            concurrency of each async scorer.
        threads: the threads of each sync scorer, its own (unless its ``bulkhead.concurrency``
            says otherwise), so that a scorer that hangs holds only its own; also the pool
            that runs sync sampling callables.
        shutdown_timeout_s: how long shutdown waits for queued evaluations.
        assembly: what trace rules may buffer at once (``engine.assembly``), shared out
            evenly between the trace rules.
    """

    queue_size: int = 2048
    max_concurrent_evals: int = 64
    threads: int = 4
    shutdown_timeout_s: float = 30.0
    assembly: AssemblyBounds = field(default_factory=AssemblyBounds)
