"""The trace rules' side of the engine: an assembler per rule, one timer, the units that are due.

Everything here runs on the engine's loop (no locks). A sampled span of a trace rule goes to
that rule's :class:`~otel_online_eval.assembly.TraceAssembler`; one ``call_at`` timer is kept
at the earliest time any assembler has something due, and re-armed when that time moves
earlier. The engine evaluates what comes out (:class:`Due`). One assembler per rule keeps each
rule's counts exact; the spans themselves are shared between them (the same view objects).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import OrderedDict
from collections.abc import Callable, Sequence

from opentelemetry.trace import SpanContext, TraceFlags

from otel_online_eval.assembly import (
    AssemblyBounds,
    AssemblyCounts,
    Completion,
    SessionAssembler,
    SessionCounts,
    SessionSettings,
    SessionUnit,
    TraceAssembler,
    Turn,
)
from otel_online_eval.assembly import TraceUnit as _TraceUnit
from otel_online_eval.metrics import Tally
from otel_online_eval.rules import Rule
from otel_online_eval.spanview import SpanView

__all__ = ["Due", "SessionDue", "TraceRuleCounts", "TraceRules"]

TraceUnit = _TraceUnit[SpanView]
Due = tuple[Rule, TraceUnit]
SessionDue = tuple[Rule, SessionUnit]


class TraceRuleCounts:
    """What a trace rule counted besides the span counts every rule has (any thread reads)."""

    __slots__ = ("lost", "skipped_incomplete", "turns")

    def __init__(self) -> None:
        self.skipped_incomplete = Tally()
        self.lost: dict[str, Tally] = {r: Tally() for r in ("error", "shutdown", "overload")}
        # Session rules: what became of each assembled trace.
        self.turns: dict[str, Tally] = {
            o: Tally() for o in ("added", "handed_off", "no_key", "sampled_out", "filtered_out")
        }


class TraceRules:
    """The assemblers of an engine's trace rules and the timer that hands their traces on.

    Args:
        rules: every rule of the engine (the trace rules are picked out).
        bounds: ``engine.assembly``, shared out evenly between the trace rules.
        local_roots: a span with a remote parent counts as its trace's root (in-process).
        release: called on the loop with the traces that are due (a session rule's become
            turns there: see :meth:`add_turn`).
        release_sessions: called on the loop with the conversations that are due.
    """

    def __init__(
        self,
        rules: Sequence[Rule],
        bounds: AssemblyBounds,
        local_roots: bool,
        release: Callable[[list[Due]], None],
        release_sessions: Callable[[list[SessionDue]], None],
    ) -> None:
        trace_rules = [r for r in rules if r.is_trace]
        share = _share(bounds, len(trace_rules))
        self._assemblers: dict[str, TraceAssembler[SpanView]] = {}
        for rule in trace_rules:
            completion = rule.completion or Completion()
            if local_roots and not completion.local_roots:
                completion = dataclasses.replace(completion, local_roots=True)
            self._assemblers[rule.name] = TraceAssembler(completion, share, rule.late)
        self._rules = {r.name: r for r in trace_rules}
        session_rules = [r for r in trace_rules if r.is_session]
        per_rule = max(1, bounds.max_sessions // max(1, len(session_rules)))
        self._sessions = {
            r.name: SessionAssembler(r.session or SessionSettings(), per_rule)
            for r in session_rules
        }
        self._release_sessions = release_sessions
        self.counts = {r.name: TraceRuleCounts() for r in trace_rules}
        self._release = release
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        # The eval span of each trace's latest revision, for the link of the next one.
        self._latest: OrderedDict[tuple[str, int], int] = OrderedDict()
        self._remember = share.remember

    def __bool__(self) -> bool:
        return bool(self._assemblers)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._timer = None

    def add(self, rule: Rule, view: SpanView, size: int) -> None:
        """Buffer a sampled span of ``rule``'s; evicted traces are released at once."""
        loop = self._loop
        assert loop is not None
        evicted = self._assemblers[rule.name].add(view, size, loop.time())
        if evicted:
            self._release([(rule, unit) for unit in evicted])

    def arm(self) -> None:
        """Make sure the timer fires when the earliest trace is due (after a batch of adds)."""
        loop = self._loop
        if loop is None:
            return
        times = [t for a in self._assemblers.values() if (t := a.next_due()) is not None]
        times += [t for a in self._sessions.values() if (t := a.next_due()) is not None]
        if not times:
            return
        when = min(times)
        timer = self._timer
        if timer is not None and not timer.cancelled() and timer.when() <= when:
            return
        if timer is not None:
            timer.cancel()
        self._timer = loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self.release_due()
        self.arm()

    def release_due(self) -> None:
        """Hand on every trace whose time has come (also at a flush, before it waits)."""
        loop = self._loop
        if loop is None:
            return
        now = loop.time()
        out: list[Due] = []
        for name, assembler in self._assemblers.items():
            rule = self._rules[name]
            out.extend((rule, unit) for unit in assembler.due(now))
        if out:
            self._release(out)
        sessions: list[SessionDue] = []
        for name, conversations in self._sessions.items():
            rule = self._rules[name]
            sessions.extend((rule, unit) for unit in conversations.due(now))
        if sessions:
            self._release_sessions(sessions)

    def drain(self, end_of_input: bool = False) -> None:
        """Hand on every trace in flight (reason ``shutdown``; see ``TraceAssembler.drain``
        for ``end_of_input``)."""
        out: list[Due] = []
        for name, assembler in self._assemblers.items():
            rule = self._rules[name]
            out.extend((rule, unit) for unit in assembler.drain(end_of_input))
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if out:
            self._release(out)  # a session rule's traces become turns now, then:
        reason = "end_of_input" if end_of_input else "shutdown"
        sessions: list[SessionDue] = []
        for name, conversations in self._sessions.items():
            rule = self._rules[name]
            sessions.extend((rule, unit) for unit in conversations.drain(reason))
        if sessions:
            self._release_sessions(sessions)

    def add_turn(self, rule: Rule, key: str, turn: Turn) -> None:
        """A session rule's assembled trace, as a turn of its conversation."""
        loop = self._loop
        assert loop is not None
        self.counts[rule.name].turns["added"].add()
        out = self._sessions[rule.name].add(key, turn, loop.time())
        if out:
            self._release_sessions([(rule, unit) for unit in out])

    def supersedes(self, rule: str, trace_id: int) -> SpanContext | None:
        """The eval span the next revision of this trace replaces, if any."""
        span_id = self._latest.get((rule, trace_id))
        if span_id is None:
            return None
        return SpanContext(trace_id, span_id, False, TraceFlags(TraceFlags.SAMPLED))

    def evaluated(self, rule: Rule, trace_id: int, eval_span_id: int) -> None:
        """Remember a trace's eval span (rules that re-evaluate late traces only)."""
        if rule.late != "reevaluate":
            return
        latest = self._latest
        latest[(rule.name, trace_id)] = eval_span_id
        latest.move_to_end((rule.name, trace_id))
        while len(latest) > self._remember:
            latest.popitem(last=False)

    def assembly_counts(self) -> dict[str, AssemblyCounts]:
        """Each trace rule's assembly counts (a copy: the loop keeps changing them)."""
        out = {}
        for name, a in self._assemblers.items():
            c = a.counts
            out[name] = dataclasses.replace(c, released=dict(c.released), evicted=dict(c.evicted))
        return out

    def session_counts(self) -> dict[str, SessionCounts]:
        out = {}
        for name, a in self._sessions.items():
            out[name] = dataclasses.replace(a.counts, released=dict(a.counts.released))
        return out

    def in_flight(self) -> dict[str, tuple[int, int]]:
        """Each trace rule's (traces, bytes) buffered now."""
        return {name: (len(a), a.bytes) for name, a in self._assemblers.items()}


def _share(bounds: AssemblyBounds, n: int) -> AssemblyBounds:
    """Each of ``n`` rules' part of the bounds: together they stay within them."""
    if n <= 1:
        return bounds
    return dataclasses.replace(
        bounds,
        max_traces=max(1, bounds.max_traces // n),
        max_bytes=max(1, bounds.max_bytes // n),
        remember=max(1, bounds.remember // n),
    )
