"""The trace and session rules' side of the engine: spans buffered per rule, traces handed on
when complete (waiting for a slot, within ``max_bytes``), turns of conversations, and their
evaluations and eval spans."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator, Sequence
from typing import Any

from opentelemetry.trace import SpanContext, TraceFlags

from otel_online_eval.emit import ScorerRun, Target
from otel_online_eval.engine._core import EngineCore, link_to, response_id, rule_attrs
from otel_online_eval.engine._deciding import (
    decide_trace,
    decide_turn,
    make_turn,
    session_hash,
    trace_input,
)
from otel_online_eval.engine._routing import Route
from otel_online_eval.engine._traces import (
    Due,
    SessionDue,
    TraceUnit,
)
from otel_online_eval.rules import Rule
from otel_online_eval.scorers.base import EvalInput
from otel_online_eval.sessionview import SessionView
from otel_online_eval.spanview import SpanView
from otel_online_eval.traceview import TraceView

__all__ = ["MAX_TURN_LINKS", "UnitRules"]

MAX_TURN_LINKS = 32
"""A session's eval span links to its last turn's anchor and to at most this many earlier
turns' (the latest ones); how many were left out is on the span."""


_TURN_OUTCOMES = {"no_key": "no_key", "sampling": "sampled_out", "filter": "filtered_out"}
"""A session rule's decision stage -> its ``online_eval.assembly.turns`` outcome."""


class UnitRules(EngineCore):
    """Trace and session rules: buffering, release, turns, evaluation."""

    def _buffer(self, payload: Any, view: SpanView, route: Route, hash_: int) -> None:
        """Hand a span to the assembly of each trace rule whose sampling keeps its trace."""
        size = -1
        for rule in route.trace_rules:
            counts = self._counts[rule.name]
            rule_hash = hash_ if not rule.salt else rule.hash(view.trace_id)
            if rule_hash >= rule.bound and not rule.is_session:  # sessions: by key, later
                counts.sampled_out.add()
                continue
            counts.sampled.add()
            try:
                if size < 0:
                    size = self._size_of(payload)
                self._traces.add(rule, view, size)
            except Exception as exc:  # a bug: the span is lost to this rule, counted
                self._rule_lost(rule, "error", exc)
        if not self._arm_pending:  # the timer is looked at once per batch of spans
            self._arm_pending = True
            self._loop.call_soon(self._arm)

    def _arm(self) -> None:
        self._arm_pending = False
        self._traces.arm()

    def _release_traces(self, due: list[Due]) -> None:
        """Traces handed on by assembly: a session rule's become turns at once; a trace rule's
        wait for a slot, within ``max_bytes`` (past it the oldest waiting is lost, counted)."""
        waiting = self._waiting
        limit = self.config.assembly.max_bytes
        joins = self._joins
        for rule, unit in due:
            if joins.held:  # records that came after their span was buffered
                for span in unit.spans:
                    span.join(joins.take(span.trace_id, span.span_id))
            if rule.is_session:
                self._add_turn(rule, unit)
                continue
            self._units_released += 1
            waiting.append((rule, unit))
            self._waiting_bytes += unit.size
            while self._waiting_bytes > limit and len(waiting) > 1:
                old_rule, old = waiting.popleft()
                self._waiting_bytes -= old.size
                self._units_finished += 1
                self._traces.counts[old_rule.name].lost["overload"].add()
                self._log_limited(
                    "trace_overload",
                    "Traces are due faster than they are evaluated; dropping the oldest "
                    "waiting one (online_eval.assembly.lost{reason=overload}).",
                )
        self._pump_traces(self.config.max_concurrent_evals)

    def _pump_traces(self, limit: int) -> None:
        waiting = self._waiting
        while waiting and self._inflight < limit:
            rule, unit = waiting.popleft()
            self._waiting_bytes -= unit.size
            self._inflight += 1
            self._start_task(self._evaluate_trace(rule, unit), counts_inflight=True)

    def _add_turn(self, rule: Rule, unit: TraceUnit) -> None:
        """A session rule's trace: its key, the session's sampling, the filter, then a turn."""
        turns = self._traces.counts[rule.name].turns
        try:
            trace = TraceView(unit.spans, unit.complete, unit.reason)
            decision = decide_turn(rule, trace)
            key, anchor = decision.key, decision.trace.anchor if decision.trace else None
            if decision.stage is not None or key is None or anchor is None:
                turns[_TURN_OUTCOMES[decision.stage or "filter"]].add()
                return
            turn = make_turn(trace, anchor, unit.complete, self.emitter.resource_of(anchor))
            owner = self.turn_owner
            # Another worker holds this conversation (the sidecar's --workers); at shutdown
            # the peers stop listening first, so the turns left are evaluated here.
            if owner is not None and not self._closed and owner(rule, key, turn):
                turns["handed_off"].add()
                return
            self._traces.add_turn(rule, key, turn)
        except Exception as exc:  # a bug: this turn is lost, counted
            self._traces.counts[rule.name].lost["error"].add()
            self._log_limited("engine_error", "Session rule %r failed: %r", rule.name, exc)

    def _release_sessions(self, due: list[SessionDue]) -> None:
        for rule, unit in due:
            self._start_task(
                self._evaluate_session(rule, SessionView(unit.key, unit.turns, unit.reason))
            )

    async def _evaluate_session(self, rule: Rule, session: SessionView) -> None:
        with self._counting_losses(rule):
            start = time.time_ns()
            last = session.turns[-1]
            inp = EvalInput(session.input, session.output, None, rule.name, session=session)
            runs, sampled_out = await self._runner.run_all(
                rule.name, rule.scorers, inp, rule, session_hash(session.key, rule.salt)
            )
            earlier = session.turns[:-1][-MAX_TURN_LINKS:]
            target = Target(
                last.trace_id,
                last.span_id,
                _context(last.trace_id, last.span_id),
                last.resource,
                None,
                tuple((_context(t.trace_id, t.span_id), "turn") for t in earlier),
            )
            attrs: dict[str, Any] = {
                "online_eval.scope": "session",
                "online_eval.session.turns": session.turn_count,
                "online_eval.session.reason": session.reason,
            }
            if session.turn_count - 1 > len(earlier):
                attrs["online_eval.session.turn_links_dropped"] = (
                    session.turn_count - 1 - len(earlier)
                )
            attrs.update(rule_attrs(rule))
            self.emitter.emit(target, rule.name, runs, sampled_out, start, time.time_ns(), attrs)
            self._counts[rule.name].evals.add()

    async def _evaluate_trace(self, rule: Rule, unit: TraceUnit) -> None:
        try:
            with self._counting_losses(rule):
                await self._score_trace(rule, unit)
        finally:
            self._units_finished += 1

    async def _score_trace(self, rule: Rule, unit: TraceUnit) -> None:
        if not unit.complete and rule.on_incomplete == "skip":
            self._traces.counts[rule.name].skipped_incomplete.add()
            return
        start = time.time_ns()
        trace = TraceView(unit.spans, unit.complete, unit.reason)
        # Sampled already, by trace id, when its first span came; skip is decided above.
        decision = decide_trace(rule, trace, ignore_sampling=True)
        anchor = decision.anchor
        if not decision.matched or anchor is None:
            self._counts[rule.name].filtered_out.add()
            return
        inp = trace_input(rule, trace, anchor)
        runs, sampled_out = await self._runner.run_all(
            rule.name, rule.scorers, inp, rule, rule.hash(unit.trace_id)
        )
        self._emit_trace(anchor, rule, unit, runs, sampled_out, start)

    @contextlib.contextmanager
    def _counting_losses(self, rule: Rule) -> Iterator[None]:
        """A trace's or conversation's evaluation that does not finish is counted as lost."""
        lost = self._traces.counts[rule.name].lost
        try:
            yield
        except asyncio.CancelledError:
            lost["shutdown"].add()
            raise
        except Exception as exc:
            lost["error"].add()
            self._log_limited(
                "engine_error", "Evaluation of rule %r failed: %r", rule.name, exc, exc_info=True
            )

    def _emit_trace(
        self,
        anchor: SpanView,
        rule: Rule,
        unit: TraceUnit,
        runs: Sequence[ScorerRun],
        sampled_out: Sequence[str],
        start: int,
    ) -> None:
        replaced = self._traces.supersedes(rule.name, unit.trace_id) if unit.revision > 1 else None
        target = Target(
            anchor.trace_id,
            anchor.span_id,
            link_to(anchor),
            self.emitter.resource_of(anchor),
            anchor.name,
            ((replaced, "supersedes"),) if replaced is not None else (),
            response_id(anchor),
        )
        attrs: dict[str, Any] = {
            "online_eval.scope": "trace",
            "online_eval.trace.span_count": len(unit.spans) + unit.dropped_spans,
            "online_eval.trace.complete": unit.complete,
            "online_eval.trace.reason": unit.reason,
            "online_eval.revision": unit.revision,
        }
        if unit.dropped_spans:
            attrs["online_eval.trace.dropped_spans"] = unit.dropped_spans
        attrs.update(rule_attrs(rule))
        result = self.emitter.emit(
            target, rule.name, runs, sampled_out, start, time.time_ns(), attrs
        )
        self._counts[rule.name].evals.add()
        self._traces.evaluated(rule, unit.trace_id, result.span_id)


def _context(trace_id: int, span_id: int) -> SpanContext:
    return SpanContext(trace_id, span_id, False, TraceFlags(TraceFlags.SAMPLED))
