"""Buffers the spans of traces until each is complete, then hands the whole trace on.

One :class:`TraceAssembler` serves the trace rules that share a :class:`Completion`. It is
driven by one thread (the engine's loop) and holds no lock: ``add`` for each ended span,
``due`` when :meth:`~TraceAssembler.next_due` comes, ``drain`` at shutdown. Time is passed
in (monotonic seconds), so tests and the tools drive it with their own clock.

Completion is read from the structure of the trace: its root has ended and every span's
parent has been seen (or an ``end_on`` span has arrived), then ``settle_s`` passes with no new
span. Idle and maximum-wait timers are the fallback. Each deadline is measured from the first
or the last span, and every setting is the same for all traces of one assembler, so three
dicts in deadline order replace a heap: a span costs a few dict operations, and finding what
is due reads from the front.

An evaluated trace is remembered by id, so its late spans are recognised as late and never
start a second, partial evaluation of the same trace. With ``late="reevaluate"`` its spans are
kept too (within ``max_bytes``, the oldest let go first; never for a trace evicted to make room),
and a late span reopens it as the next revision; a late span of a trace whose spans were let go is
counted as late and dropped.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from otel_online_eval.assembly._settings import AssemblyBounds, Completion

__all__ = ["AssemblyCounts", "TraceAssembler", "TraceSpan", "TraceUnit"]


class TraceSpan(Protocol):
    """What assembly reads of a span (``SpanView`` has it)."""

    @property
    def trace_id(self) -> int: ...
    @property
    def span_id(self) -> int: ...
    @property
    def parent_span_id(self) -> int | None: ...
    @property
    def parent_is_remote(self) -> bool: ...
    @property
    def name(self) -> str: ...


S = TypeVar("S", bound=TraceSpan)

_COMPLETE = ("complete", "end_on")


@dataclass(frozen=True, slots=True)
class TraceUnit(Generic[S]):
    """A trace handed to evaluation.

    Attributes:
        trace_id: the trace.
        spans: its spans in the order they arrived (at most ``max_spans_per_trace``).
        reason: ``complete``, ``end_on``, ``idle``, ``max_wait``, ``evicted`` or ``shutdown``.
        revision: 1 for the first evaluation, 2, 3, ... for re-evaluations after late spans.
        dropped_spans: spans of this trace not kept (over ``max_spans_per_trace``).
        size: its spans' sizes, as they were given to ``add``.
    """

    trace_id: int
    spans: tuple[S, ...]
    reason: str
    revision: int = 1
    dropped_spans: int = 0
    size: int = 0

    @property
    def complete(self) -> bool:
        """True when completion was read from the trace, not a timer, a bound or shutdown."""
        return self.reason in _COMPLETE


@dataclass(slots=True)
class AssemblyCounts:
    """What assembly counted (read on the assembler's thread).

    Attributes:
        spans: spans buffered (duplicates and late spans that were ignored are not).
        late: spans of a trace already evaluated, ignored (``late: ignore``) or reopening it.
        reopened: of those, the ones that reopened their trace (and were buffered).
        duplicates: spans whose id had already been seen in their trace, not kept twice.
        dropped_spans: spans over ``max_spans_per_trace``, not kept.
        released: traces handed on, by reason.
        dropped_traces: traces dropped whole (``on_full: drop``), not evaluated.
        evicted: traces evicted to make room (evaluated early or dropped), by the bound that
            was reached: ``max_traces`` or ``max_bytes``.
    """

    spans: int = 0
    late: int = 0
    reopened: int = 0
    duplicates: int = 0
    dropped_spans: int = 0
    released: dict[str, int] = field(default_factory=dict)
    dropped_traces: int = 0
    evicted: dict[str, int] = field(default_factory=dict)


class _Trace(Generic[S]):
    __slots__ = (
        "bytes",
        "dropped",
        "ended_on",
        "first",
        "ids",
        "last",
        "missing",
        "revision",
        "root_ended",
        "spans",
        "trace_id",
    )

    def __init__(self, trace_id: int, now: float, revision: int = 1) -> None:
        self.trace_id = trace_id
        self.spans: list[S] = []
        self.ids: set[int] = set()
        self.missing: set[int] = set()  # parent ids referenced but not seen yet
        self.root_ended = False
        self.ended_on = False
        self.first = now
        self.last = now
        self.bytes = 0
        self.dropped = 0
        self.revision = revision

    @property
    def structurally_complete(self) -> bool:
        return self.ended_on or (self.root_ended and not self.missing)


class TraceAssembler(Generic[S]):
    """Traces in flight for the rules that share one completion setting.

    Args:
        completion: when a trace is complete, and the fallback timers.
        bounds: what may be held at once, and what happens when it is full.
        late: ``ignore`` (late spans are counted and dropped) or ``reevaluate`` (a late span
            reopens its trace, evaluated again as the next revision once it settles again).
    """

    def __init__(
        self,
        completion: Completion | None = None,
        bounds: AssemblyBounds | None = None,
        late: str = "ignore",
    ) -> None:
        if late not in ("ignore", "reevaluate"):
            raise ValueError(f"late must be 'ignore' or 'reevaluate', got {late!r}")
        self.completion = completion or Completion()
        self.bounds = bounds or AssemblyBounds()
        self.late = late
        self.counts = AssemblyCounts()
        self.bytes = 0
        # Every trace in flight, in order of first span (max_wait and eviction read the front).
        self._open: dict[int, _Trace[S]] = {}
        # The same traces, in order of last span (idle reads the front).
        self._quiet: OrderedDict[int, _Trace[S]] = OrderedDict()
        # Traces whose structure says complete, in order of last span (settle reads the front).
        self._settling: OrderedDict[int, _Trace[S]] = OrderedDict()
        # Evaluated traces: revision (late: ignore), or the trace with its spans (reevaluate).
        self._done: OrderedDict[int, int | _Trace[S]] = OrderedDict()
        # The ids in _done that still hold their spans, oldest first, and those spans' bytes.
        self._kept: OrderedDict[int, None] = OrderedDict()
        self._kept_bytes = 0

    def __len__(self) -> int:
        """Traces in flight."""
        return len(self._open)

    # -- intake -------------------------------------------------------------------------------

    def add(self, span: S, size: int, now: float) -> Sequence[TraceUnit[S]]:
        """Buffer one ended span of ``size`` bytes; returns the traces evicted to make room
        (with ``on_full: evaluate``), usually none."""
        tid = span.trace_id
        trace = self._open.get(tid)
        evicted: list[TraceUnit[S]] = []
        if trace is None:
            done = self._done.get(tid)
            if done is not None:
                self.counts.late += 1
                if not isinstance(done, _Trace):
                    return ()  # late: ignore (or its spans were let go)
            if len(self._open) >= self.bounds.max_traces:
                self._evict_oldest(evicted, "max_traces")
            if isinstance(done, _Trace):
                self.counts.reopened += 1
                trace = self._reopen(done, now)
            else:
                trace = _Trace(tid, now)
                self._open[tid] = trace
                self._quiet[tid] = trace
        sid = span.span_id
        if sid in trace.ids:
            self.counts.duplicates += 1
            return evicted
        trace.ids.add(sid)
        missing = trace.missing
        missing.discard(sid)
        parent = span.parent_span_id
        if parent is None or (span.parent_is_remote and self.completion.local_roots):
            trace.root_ended = True
        elif parent not in trace.ids:
            missing.add(parent)
        if span.name in self.completion.end_on:
            trace.ended_on = True
        if len(trace.spans) < self.bounds.max_spans_per_trace:
            trace.spans.append(span)
            trace.bytes += size
            self.bytes += size
            self.counts.spans += 1
        else:
            trace.dropped += 1
            self.counts.dropped_spans += 1
        trace.last = now
        self._quiet.move_to_end(tid)
        if trace.structurally_complete:
            self._settling[tid] = trace
            self._settling.move_to_end(tid)
        else:
            self._settling.pop(tid, None)  # a new span's parent is missing: not settled now
        if self.bytes + self._kept_bytes > self.bounds.max_bytes:
            self._make_room(evicted)
        return evicted

    def _reopen(self, trace: _Trace[S], now: float) -> _Trace[S]:
        """An evaluated trace whose late span arrived (late: reevaluate): in flight again."""
        tid = trace.trace_id
        if tid in self._kept:  # else let go just now, by the eviction that made room for it
            del self._kept[tid]
            self._kept_bytes -= trace.bytes
        self._done.pop(tid, None)
        self.bytes += trace.bytes
        trace.revision += 1
        trace.first = now  # its timers start again from the late span
        self._open[tid] = trace
        self._quiet[tid] = trace
        return trace

    def _make_room(self, evicted: list[TraceUnit[S]]) -> None:
        """Forget kept evaluated traces, then evict the oldest in flight, until under max_bytes."""
        limit = self.bounds.max_bytes
        done, kept = self._done, self._kept
        while kept and self.bytes + self._kept_bytes > limit:
            tid, _ = kept.popitem(last=False)
            old = done[tid]
            assert isinstance(old, _Trace)
            self._kept_bytes -= old.bytes
            done[tid] = old.revision  # its spans are let go; it is still known as evaluated
        while self._open and self.bytes > limit:
            self._evict_oldest(evicted, "max_bytes")

    def _evict_oldest(self, evicted: list[TraceUnit[S]], bound: str) -> None:
        self.counts.evicted[bound] = self.counts.evicted.get(bound, 0) + 1
        self._release_into(evicted, next(iter(self._open.values())), "evicted")

    def _remember(self, trace: _Trace[S], keep: bool) -> None:
        """Recognise the trace's late spans; with ``keep`` (reevaluate), keep its spans too."""
        done = self._done
        if keep and self.late == "reevaluate":
            done[trace.trace_id] = trace
            self._kept[trace.trace_id] = None
            self._kept_bytes += trace.bytes
        else:
            done[trace.trace_id] = trace.revision
        while len(done) > self.bounds.remember:
            tid, old = done.popitem(last=False)
            if isinstance(old, _Trace):
                del self._kept[tid]
                self._kept_bytes -= old.bytes

    # -- release ------------------------------------------------------------------------------

    def next_due(self) -> float | None:
        """The earliest time at which :meth:`due` has something to hand on; None when empty."""
        c = self.completion
        times = []
        if self._settling:
            times.append(next(iter(self._settling.values())).last + c.settle_s)
        if self._quiet:
            times.append(next(iter(self._quiet.values())).last + c.idle_s)
        if self._open:
            times.append(next(iter(self._open.values())).first + c.max_wait_s)
        return min(times) if times else None

    def due(self, now: float) -> list[TraceUnit[S]]:
        """Hand on every trace whose time has come: settled, idle or waited too long."""
        c = self.completion
        out: list[TraceUnit[S]] = []
        settling, quiet, open_ = self._settling, self._quiet, self._open
        while settling:
            trace = next(iter(settling.values()))
            if trace.last + c.settle_s > now:
                break
            reason = "complete" if trace.root_ended and not trace.missing else "end_on"
            self._release_into(out, trace, reason)
        while quiet:
            trace = next(iter(quiet.values()))
            if trace.last + c.idle_s > now:
                break
            self._release_into(out, trace, "idle")
        while open_:
            trace = next(iter(open_.values()))
            if trace.first + c.max_wait_s > now:
                break
            self._release_into(out, trace, "max_wait")
        return out

    def drain(self, end_of_input: bool = False) -> list[TraceUnit[S]]:
        """Hand on every trace in flight, complete or not: reason ``shutdown``; or, at the end
        of a file (``end_of_input``), where no more spans can come, ``complete`` (or
        ``end_on``) for a trace whose structure says so and ``end_of_input`` for the rest."""
        out: list[TraceUnit[S]] = []
        while self._open:
            trace = next(iter(self._open.values()))
            reason = "shutdown"
            if end_of_input:
                reason = "end_of_input"
                if trace.root_ended and not trace.missing:
                    reason = "complete"
                elif trace.ended_on:
                    reason = "end_on"
            self._release_into(out, trace, reason)
        return out

    def _release_into(self, out: list[TraceUnit[S]], trace: _Trace[S], reason: str) -> None:
        unit = self._release(trace, reason)
        if unit is not None:
            out.append(unit)

    def _release(self, trace: _Trace[S], reason: str) -> TraceUnit[S] | None:
        tid = trace.trace_id
        del self._open[tid]
        del self._quiet[tid]
        self._settling.pop(tid, None)
        self.bytes -= trace.bytes
        released = self.counts.released
        drop = reason == "evicted" and self.bounds.on_full == "drop"
        if drop:
            self.counts.dropped_traces += 1
        else:
            released[reason] = released.get(reason, 0) + 1
        unit = (
            None
            if drop
            else TraceUnit(
                tid, tuple(trace.spans), reason, trace.revision, trace.dropped, trace.bytes
            )
        )
        self._remember(trace, keep=reason != "evicted")  # evicted for room: let its spans go
        return unit
