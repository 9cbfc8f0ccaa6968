"""Trace rules in the tools: a file's traces, assembled as the engine assembles them, and a trace
rule's decision for one of them, in the engine's order.

A file is complete: no span of it comes later. Its spans are assembled per trace by the same
:class:`~otel_online_eval.assembly.TraceAssembler` the engine uses (each trace rule's
``completion``; the tools' own clock stands still, so no timer hands a trace on early), and
every trace is handed on at the end of the input, as :meth:`Engine.end_of_input
<otel_online_eval.engine.Engine.end_of_input>` does: reason ``complete`` (or ``end_on``) when
its structure says so, else ``end_of_input``. Traces are kept whole (``engine.assembly``'s
``max_traces`` and ``max_bytes`` bound what a live process buffers, not a file);
``max_spans_per_trace`` applies.

:func:`decide_trace` is the engine's decision for a trace rule (``Engine._buffer`` samples by
trace id, ``Engine._evaluate_trace`` skips incomplete traces with ``on_incomplete: skip``, finds
the anchor with :func:`~otel_online_eval.engine._engine.trace_anchor` and runs the filter on the
:class:`~otel_online_eval.traceview.TraceAnchor`), with the reason in words.

A session rule (``scope: session``) is assembled the same way; each of its traces becomes a
turn of a conversation as ``UnitRules._add_turn`` makes it (:func:`decide_turn`: the session
key, sampling by the key's hash, the filter; :func:`make_turn` mirrors its ``Turn``), and every
conversation ends at the end of the input (:func:`collect_sessions`: the engine's
:class:`~otel_online_eval.assembly.SessionAssembler`, drained with reason ``end_of_input``, so
``max_turns`` splits a conversation as it does in production).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from otel_online_eval.assembly import (
    AssemblyBounds,
    Completion,
    SessionAssembler,
    SessionSettings,
    TraceAssembler,
    TraceUnit,
)
from otel_online_eval.engine._deciding import (
    TraceDecision,
    TurnDecision,
    anchor_words,
    decide_trace,
    decide_turn,
    make_turn,
    trace_input,
)
from otel_online_eval.otlp import ProtoSpanView
from otel_online_eval.rules import Rule
from otel_online_eval.scorers.base import EvalInput
from otel_online_eval.sessionview import SessionView
from otel_online_eval.tools._input import FileSpan, Where
from otel_online_eval.traceview import TraceView

__all__ = [
    "FileSession",
    "FileTrace",
    "SessionScan",
    "TraceCollector",
    "TraceDecision",
    "TurnDecision",
    "anchor_words",
    "collect_sessions",
    "decide_trace",
    "decide_turn",
    "file_bounds",
    "is_session_rule",
    "is_trace_rule",
    "make_turn",
    "session_input",
    "trace_input",
    "trace_state",
]

_UNBOUNDED = 1 << 40


def is_trace_rule(rule: Rule) -> bool:
    """A rule that assembles whole traces (``scope: trace`` or ``session``)."""
    return rule.is_trace


def is_session_rule(rule: Rule) -> bool:
    """A rule that scores conversations (``scope: session``)."""
    return rule.is_session


def file_bounds(bounds: AssemblyBounds) -> AssemblyBounds:
    """``engine.assembly`` as the tools apply it to a file: every trace whole (its spans are in
    memory already), at most ``max_spans_per_trace`` spans each, every conversation held."""
    return dataclasses.replace(
        bounds, max_traces=_UNBOUNDED, max_bytes=_UNBOUNDED, max_sessions=_UNBOUNDED
    )


def trace_state(trace: TraceView) -> str:
    """``complete``, ``end_on``, or ``incomplete (reason)``."""
    return trace.reason if trace.complete else f"incomplete ({trace.reason})"


@dataclass(slots=True)
class FileTrace:
    """One trace of the input, as one completion setting assembled it.

    Attributes:
        unit: what assembly handed on (its spans, reason, spans over the limit).
        view: the trace as scorers and filters read it.
        order: where its first span was in the input (0, 1, ...).
        where: the line or message of its first span.
        spans_read: every span read for it, duplicates included (what the engine is fed).
    """

    unit: TraceUnit[ProtoSpanView]
    view: TraceView
    order: int
    where: Where
    spans_read: list[ProtoSpanView]

    @property
    def trace_id(self) -> int:
        return self.unit.trace_id

    @property
    def span_count(self) -> int:
        """Spans of the trace, those over ``max_spans_per_trace`` included (as eval spans
        count them)."""
        return len(self.unit.spans) + self.unit.dropped_spans

    @property
    def end_ns(self) -> int:
        """When its last span ended."""
        return max(s.end_time_ns for s in self.unit.spans)


class TraceCollector:
    """The input's spans by trace, for the trace rules given.

    Args:
        rules: the rules (the trace rules among them are assembled for).
        bounds: ``engine.assembly`` (see :func:`file_bounds`).
        only: keep only this trace (``explain --trace-id``), None for every trace.
    """

    def __init__(
        self, rules: Iterable[Rule], bounds: AssemblyBounds, only: int | None = None
    ) -> None:
        self._bounds = file_bounds(bounds)
        self._only = only
        # One assembler per completion setting: rules that share one see the same traces.
        self._assemblers: dict[Completion, TraceAssembler[ProtoSpanView]] = {}
        for rule in rules:
            if is_trace_rule(rule):
                completion = rule.completion or Completion()
                if completion not in self._assemblers:
                    self._assemblers[completion] = TraceAssembler(completion, self._bounds)
        self._first: dict[int, tuple[int, Where]] = {}
        self._read: dict[int, list[ProtoSpanView]] = {}
        self._added = 0
        self._done: dict[Completion, dict[int, FileTrace]] | None = None

    def __bool__(self) -> bool:
        return bool(self._assemblers)

    @property
    def whole_input(self) -> bool:
        """Every trace of the input is kept (no ``only``): conversations can be made."""
        return self._only is None

    def add(self, fs: FileSpan, order: int | None = None) -> None:
        """One span of the input (eval spans are not part of any trace here); ``order``: its
        place in the input (the count of spans added when None)."""
        if not self._assemblers or fs.is_eval:
            return
        view = fs.view
        tid = view.trace_id
        if self._only is not None and tid != self._only:
            return
        if self._done is not None:
            raise RuntimeError("the traces were handed on already")
        self._added += 1
        read = self._read.get(tid)
        if read is None:
            self._first[tid] = (self._added - 1 if order is None else order, fs.where)
            read = self._read[tid] = []
        read.append(view)
        for assembler in self._assemblers.values():
            assembler.add(view, 1, 0.0)  # a clock that stands still: nothing is due early

    def _end(self) -> dict[Completion, dict[int, FileTrace]]:
        if self._done is None:
            self._done = {}
            for completion, assembler in self._assemblers.items():
                traces: dict[int, FileTrace] = {}
                for unit in assembler.drain(end_of_input=True):
                    order, where = self._first[unit.trace_id]
                    traces[unit.trace_id] = FileTrace(
                        unit,
                        TraceView(unit.spans, unit.complete, unit.reason),
                        order,
                        where,
                        self._read[unit.trace_id],
                    )
                self._done[completion] = traces
        return self._done

    def traces(self, rule: Rule) -> Sequence[FileTrace]:
        """The input's traces as ``rule`` sees them, in the order of their first spans."""
        found = self._end().get(rule.completion or Completion(), {})
        return sorted(found.values(), key=lambda t: t.order)

    def trace(self, rule: Rule, trace_id: int) -> FileTrace | None:
        """One trace as ``rule`` sees it."""
        return self._end().get(rule.completion or Completion(), {}).get(trace_id)


# -- session rules ---------------------------------------------------------------------------


@dataclass(slots=True)
class FileSession:
    """One conversation of the input, ended at the end of the input (or at ``max_turns``).

    Attributes:
        view: the conversation as scorers read it (key, turns in order, reason).
        traces: its turns' traces, in the turns' order.
    """

    view: SessionView
    traces: list[FileTrace]

    @property
    def key(self) -> str:
        return self.view.key

    @property
    def last(self) -> FileTrace:
        """The last turn's trace (the eval span is attached to its anchor)."""
        return self.traces[-1]

    @property
    def anchor_id(self) -> int:
        return self.view.turns[-1].span_id

    @property
    def order(self) -> int:
        return min(t.order for t in self.traces)

    @property
    def end_ns(self) -> int:
        return max(t.end_ns for t in self.traces)


@dataclass(slots=True)
class SessionScan:
    """A session rule's view of the input: its conversations and the traces that are not
    turns (with why)."""

    sessions: list[FileSession]
    not_turns: list[tuple[FileTrace, TurnDecision]]

    def count(self, stage: str) -> int:
        return sum(1 for _, d in self.not_turns if d.stage == stage)


def collect_sessions(
    rule: Rule,
    traces: Iterable[FileTrace],
    ignore_sampling: bool = False,
    keep: Callable[[FileTrace, TurnDecision], bool] | None = None,
) -> SessionScan:
    """The conversations a session rule makes of the input's traces (in input order).

    Args:
        rule: a session rule.
        traces: its traces (:meth:`TraceCollector.traces`).
        ignore_sampling: decide as if its rate were 1.
        keep: a further test of each turn (``score --filter``, ``--since``); a turn it rejects
            is left out silently.
    """
    assembler = SessionAssembler(rule.session or SessionSettings(), _UNBOUNDED)
    by_id: dict[int, FileTrace] = {}
    not_turns: list[tuple[FileTrace, TurnDecision]] = []
    units = []
    for ft in traces:
        decision = decide_turn(rule, ft.view, ignore_sampling)
        if not decision.is_turn:
            not_turns.append((ft, decision))
            continue
        if keep is not None and not keep(ft, decision):
            continue
        assert decision.key is not None and decision.trace is not None
        anchor = decision.trace.anchor
        assert anchor is not None
        by_id[ft.trace_id] = ft
        turn = make_turn(ft.view, anchor, ft.unit.complete)
        units.extend(assembler.add(decision.key, turn, 0.0))  # max_turns hands on at once
    units.extend(assembler.drain("end_of_input"))
    sessions = [
        FileSession(
            SessionView(u.key, u.turns, u.reason), [by_id[turn.trace_id] for turn in u.turns]
        )
        for u in units
    ]
    sessions.sort(key=lambda s: s.order)
    return SessionScan(sessions, not_turns)


def session_input(rule: Rule, session: SessionView) -> EvalInput:
    """What the engine gives a session rule's scorers (``UnitRules._evaluate_session``)."""
    return EvalInput(session.input, session.output, None, rule.name, session=session)
