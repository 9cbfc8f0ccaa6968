"""The evaluation engine: a bounded queue, workers on a background event loop, and limits.

The front doors (the in-process span processor, the sidecar) do only this on their own thread:
find the span's :class:`Route` (the rules whose ``apply_to`` picks a span of that name and parent
kind, cached), bump its counter, compute the trace's sampling hash once, and, when some rule of
the route may sample it, :meth:`Engine.submit` it. ``submit`` appends to a bounded deque (full:
the span is dropped and counted, the caller never waits). It wakes the loop only when the loop
sleeps or a backlog builds up: while spans keep coming, the loop polls the queue every 5 ms, so
the application's thread does not pay a wake-up (a syscall) per span.

On the loop each span is turned into a :class:`~otel_online_eval.spanview.SpanView`, every rule
of its route decides (sampling, filter), and each matching rule's scorers run concurrently:
inline built-ins right there, every other scorer behind its own bulkhead (its own slots, and
threads of its own for a sync scorer; a wait for a slot; a timeout from the start of the call;
a quarantine after repeated timeouts; see :mod:`otel_online_eval.engine._bulkhead`). The
results go to the :class:`~otel_online_eval.emit.Emitter`.

:meth:`Engine.force_flush` puts a marker in the queue and returns once everything enqueued
before it has been handed to the exporter and the exporter has flushed.

Modules: ``_routing`` (routes), ``_counts`` (the counters and their snapshot), ``_engine``
(the queue, the loop, deciding rules, flush, shutdown, fork), ``_running`` (scorer calls and
their counts), ``_bulkhead`` (a scorer's share of the engine).
"""

from __future__ import annotations

from otel_online_eval.engine._counts import DROP_REASONS, EngineStats, RuleCounts
from otel_online_eval.engine._engine import Engine, EvalFuture
from otel_online_eval.engine._routing import Route, Router
from otel_online_eval.engine._running import ScorerRunner, ScorerTimeoutError

__all__ = [
    "DROP_REASONS",
    "Engine",
    "EngineStats",
    "EvalFuture",
    "Route",
    "Router",
    "RuleCounts",
    "ScorerRunner",
    "ScorerTimeoutError",
]
