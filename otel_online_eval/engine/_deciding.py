"""A trace or session rule's decisions, in one place for the engine and the tools: which
span anchors a trace's evaluation, whether the trace is evaluated (and why not, in words), what
the scorers get, and a conversation's key and sampling hash."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from otel_online_eval.assembly import Turn
from otel_online_eval.rules import Rule, parent_state
from otel_online_eval.sampling import sample_hash
from otel_online_eval.scorers.base import EvalInput
from otel_online_eval.spanview import SpanView
from otel_online_eval.traceview import TraceAnchor, TraceView

__all__ = [
    "TraceDecision",
    "TurnDecision",
    "anchor_words",
    "decide_trace",
    "decide_turn",
    "make_turn",
    "session_hash",
    "session_key",
    "trace_anchor",
    "trace_input",
    "trace_model",
]


def trace_anchor(rule: Rule, trace: TraceView) -> SpanView | None:
    """The span a trace rule's evaluation is attached to: the first (by start) that its
    ``apply_to`` selects, the trace's root when it sets none; None when no span is selected."""
    if rule.apply_to.everything:
        return trace.root
    selects = rule.apply_to.selects
    for span in trace.spans:
        if selects(span.name, parent_state(span)):
            return span
    return None


def trace_model(trace: TraceView) -> str | None:
    for call in reversed(trace.llm_calls):
        if call.model:
            return call.model
    return trace.root.genai.model


@dataclass(frozen=True, slots=True)
class TraceDecision:
    """A trace rule's verdict on one trace.

    Attributes:
        rule: the rule's name.
        matched: True when the trace is to be evaluated.
        stage: the step that turned it away, in the engine's order: ``sampling`` (by trace
            id), ``incomplete`` (``on_incomplete: skip``), ``selection`` (no span for the
            anchor), ``filter``; None when matched.
        reason: the reason in words.
        detail: for the filter step, the sub-expression that was false.
        anchor: the span the evaluation is (or would be) attached to, None when ``apply_to``
            selects no span of the trace.
    """

    rule: str
    matched: bool
    stage: str | None = None
    reason: str = "matched"
    detail: str | None = None
    anchor: SpanView | None = None


def anchor_words(rule: Rule) -> str:
    """Which span anchors the rule's evaluation of a trace, in words."""
    if rule.apply_to.everything:
        return "the trace's root"
    return "the first span that is " + rule.apply_to.wanted()


def decide_trace(rule: Rule, trace: TraceView, ignore_sampling: bool = False) -> TraceDecision:
    """The engine's decision for ``rule`` on ``trace``: sampling by trace id, then
    ``on_incomplete: skip``, then the anchor, then the filter on the anchor with its trace.

    Args:
        rule: a trace rule.
        trace: the trace, with its completeness and reason.
        ignore_sampling: decide as if the rule's rate were 1.
    """
    anchor = trace_anchor(rule, trace)
    if not ignore_sampling and rule.hash(trace.trace_id) >= rule.bound:
        return TraceDecision(
            rule.name, False, "sampling", f"trace sampled out at rate {rule.rate:g}", None, anchor
        )
    if not trace.complete and rule.on_incomplete == "skip":
        return TraceDecision(
            rule.name,
            False,
            "incomplete",
            f"the trace is incomplete ({trace.reason}) and on_incomplete is skip",
            None,
            anchor,
        )
    if anchor is None:
        return TraceDecision(
            rule.name,
            False,
            "selection",
            f"no anchor: none of its {trace.span_count} span(s) is {rule.apply_to.wanted()}",
        )
    checked = rule.check_filter(TraceAnchor(anchor, trace))
    if not checked.matched:
        return TraceDecision(rule.name, False, "filter", checked.reason, checked.detail, anchor)
    return TraceDecision(rule.name, True, anchor=anchor)


def trace_input(rule: Rule, trace: TraceView, anchor: SpanView) -> EvalInput:
    """What the engine gives a trace rule's scorers for ``trace``."""
    return EvalInput(trace.input, trace.output, anchor, rule.name, trace_model(trace), trace=trace)


_DEFAULT_SESSION_KEYS = ("gen_ai.conversation.id", "session.id")


def session_key(rule: Rule, trace: TraceView) -> str | None:
    """The trace's session key: ``session.key`` (or the default attributes, on a span or its
    resource) read from the root first, then from each span in start order."""
    root = trace.root
    for span in (root, *(s for s in trace.spans if s is not root)):
        if rule.session_key is not None:
            value = rule.session_key(span)
        else:
            value = next(
                (
                    v
                    for key in _DEFAULT_SESSION_KEYS
                    for v in (span.attributes.get(key), span.resource.get(key))
                    if v is not None and v != ""
                ),
                None,
            )
        if value is not None and value != "":
            return str(value)
    return None


def session_hash(key: str, salt: int) -> int:
    """The sampling hash of a session key: the trace sampling hash of its digest, so rates
    nest as they do for traces."""
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=16).digest()
    return sample_hash(int.from_bytes(digest, "big"), salt)


@dataclass(frozen=True, slots=True)
class TurnDecision:
    """Whether a session rule's trace is a turn of a conversation, and why not.

    Attributes:
        key: the trace's session key (None: it has none).
        stage: None for a turn, else ``no_key``, ``sampling`` (by the key's hash) or
            ``filter`` (the filter is false, or no span anchors the trace).
        reason: the reason in words.
        trace: the trace rule decision (sampling ignored) behind ``filter`` and the anchor.
    """

    key: str | None
    stage: str | None
    reason: str
    trace: TraceDecision | None = None

    @property
    def is_turn(self) -> bool:
        return self.stage is None


def decide_turn(rule: Rule, trace: TraceView, ignore_sampling: bool = False) -> TurnDecision:
    """The engine's steps for a session rule's trace: its key, sampling by the key's hash
    (``session_hash(key, salt) >= bound``), then the filter on its anchor."""
    key = session_key(rule, trace)
    if key is None:
        return TurnDecision(None, "no_key", "no session key on the trace")
    if not ignore_sampling and session_hash(key, rule.salt) >= rule.bound:
        return TurnDecision(
            key, "sampling", f"conversation {key!r} sampled out at rate {rule.rate:g} (by key)"
        )
    decision = decide_trace(rule, trace, ignore_sampling=True)
    if not decision.matched or decision.anchor is None:
        why = decision.detail or decision.reason
        return TurnDecision(key, "filter", f"not a turn: {why}", decision)
    return TurnDecision(key, None, f"a turn of conversation {key!r}", decision)


def make_turn(trace: TraceView, anchor: SpanView, complete: bool, resource: object = None) -> Turn:
    """A session rule's trace as the compact turn its conversation keeps."""
    return Turn(
        trace.trace_id,
        anchor.span_id,
        trace.input,
        trace.output,
        trace.spans[0].start_time_ns,
        max(s.end_time_ns for s in trace.spans),
        trace.error_count,
        trace.input_tokens,
        trace.output_tokens,
        complete,
        resource,
    )
