"""Read-only access to a whole trace: its spans, root, model calls, tool calls and transcript.

Trace scorers read a trace through :class:`TraceView`, whatever made it: the model and tool
calls are found through the GenAI extraction presets (``gen_ai.operation.name`` ``chat`` /
``execute_tool``, OpenInference ``LLM`` / ``TOOL`` spans, and the others the presets read), so
one scorer serves every instrumentation. Everything is computed once, on first access.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from otel_online_eval.genai import Message, ToolCall
from otel_online_eval.genai._model import as_text
from otel_online_eval.spanview import EventView, LinkView, SpanView

if TYPE_CHECKING:
    from opentelemetry.sdk.resources import Resource

    from otel_online_eval.genai import GenAIFields

__all__ = ["LlmCall", "ToolCallRecord", "TraceAnchor", "TraceView"]

TOOL_OPERATIONS = frozenset({"execute_tool", "tool"})
"""Operations of a span that runs a tool (GenAI conventions; OpenInference's kind, lowered)."""

NOT_MODEL_CALLS = frozenset(
    {"invoke_agent", "create_agent", "agent", "chain", "workflow", "embeddings", "retriever"}
    | TOOL_OPERATIONS
)
"""Operations of spans that may name a model but are not a call to it."""


@dataclass(frozen=True, slots=True)
class ToolCallRecord:
    """One tool execution in the trace.

    Attributes:
        name: the tool's name.
        arguments: its arguments (parsed JSON where the span carried JSON), or None.
        result: what it returned, or None (also when it failed).
        error: why it failed (the span's status message, else its exception event's), or
            None when its span's status is not ERROR.
        id: the tool call id, when the span has one.
        span: the tool's span.
    """

    name: str
    arguments: Any
    result: Any
    error: str | None
    id: str | None
    span: SpanView


@dataclass(frozen=True, slots=True)
class LlmCall:
    """One model call in the trace.

    Attributes:
        model: the model that answered (else the one asked for), when known.
        input_tokens: its input token usage, when the span says.
        output_tokens: its output token usage, when the span says.
        error: why it failed, or None when its span's status is not ERROR.
        span: the call's span (its ``genai`` has the messages).
    """

    model: str | None
    input_tokens: int | None
    output_tokens: int | None
    error: str | None
    span: SpanView

    @property
    def output(self) -> str | None:
        """The model's answer text (its tool calls as JSON when it only called tools)."""
        return self.span.genai.output


def _error(span: SpanView) -> str | None:
    if span.status_code != "ERROR":
        return None
    if span.status_message:
        return span.status_message
    for event in span.events:
        if event.name == "exception":
            kind = event.attributes.get("exception.type")
            message = event.attributes.get("exception.message")
            return ": ".join(str(x) for x in (kind, message) if x) or "error"
    return "error"


def _asked_for(call: ToolCall, asked: Sequence[ToolCall]) -> ToolCall | None:
    """The model's call (with a JSON object as arguments) that ``call`` runs: the one with its
    id; without an id, the first with its name whose arguments' one value is ``call``'s."""
    candidates = [c for c in asked if c.name == call.name and isinstance(c.arguments, Mapping)]
    if call.id is not None:
        return next((c for c in candidates if c.id == call.id), None)
    for candidate in candidates:
        values = list(candidate.arguments.values())
        if call.arguments is None or (
            len(values) == 1 and as_text(values[0]) == as_text(call.arguments)
        ):
            return candidate
    return None


class TraceView:
    """A trace, as far as its spans reached this process.

    Args:
        spans: the trace's spans, in any order.
        complete: whether completion was read from the trace (root ended, no parent missing)
            rather than decided by a timer, a bound or shutdown.
        reason: why the trace was evaluated when it was (``complete``, ``end_on``, ``idle``,
            ``max_wait``, ``evicted``, ``shutdown``).
    """

    def __init__(
        self, spans: Sequence[SpanView], complete: bool = True, reason: str = "complete"
    ) -> None:
        if not spans:
            raise ValueError("a trace view needs at least one span")
        self.spans: tuple[SpanView, ...] = tuple(
            sorted(spans, key=lambda s: (s.start_time_ns, s.end_time_ns))
        )
        """The spans ordered by start time."""
        self.complete = complete
        self.reason = reason

    @property
    def trace_id(self) -> int:
        return self.spans[0].trace_id

    @cached_property
    def root(self) -> SpanView:
        """The span with no parent; else the earliest whose parent is not in the trace."""
        for span in self.spans:
            if span.parent_span_id is None:
                return span
        ids = {s.span_id for s in self.spans}
        for span in self.spans:
            if span.parent_span_id not in ids:
                return span
        return self.spans[0]  # a cycle of parents: malformed, but never raise

    @property
    def span_count(self) -> int:
        return len(self.spans)

    @cached_property
    def span_names(self) -> tuple[str, ...]:
        """Each span name once, in the order of the spans' starts."""
        return tuple(dict.fromkeys(s.name for s in self.spans))

    @cached_property
    def error_count(self) -> int:
        """Spans whose status is ERROR."""
        return sum(1 for s in self.spans if s.status_code == "ERROR")

    @cached_property
    def duration_ms(self) -> float:
        """From the first span's start to the last span's end."""
        start = min(s.start_time_ns for s in self.spans)
        end = max(s.end_time_ns for s in self.spans)
        return (end - start) / 1e6

    def find(self, name: str) -> tuple[SpanView, ...]:
        """The spans named ``name``, in start order."""
        return tuple(s for s in self.spans if s.name == name)

    @cached_property
    def tool_calls(self) -> tuple[ToolCallRecord, ...]:
        """The tools run in the trace, in start order.

        A tool span whose arguments are not a JSON object (an instrumentation that records a
        one-key input as its bare value) gets the arguments of the model's call that asked for
        it: among the tool calls of the model call before it, the one with its id, else the
        next one with its name whose one value is the span's.
        """
        out = []
        model_spans = {id(c.span) for c in self.llm_calls}
        asked: list[ToolCall] = []  # the last model call's tool calls not yet matched
        for span in self.spans:
            g = span.genai
            if id(span) in model_spans:
                asked = list(g.tool_calls)
                continue
            if g.operation not in TOOL_OPERATIONS or not g.tool_calls:
                continue
            call = g.tool_calls[0]
            arguments = call.arguments
            if not isinstance(arguments, Mapping):
                found = _asked_for(call, asked)
                if found is not None:
                    asked.remove(found)
                    arguments = found.arguments
            error = _error(span)
            if error is None and g.extra.get("tool_error") is not None:
                error = as_text(g.extra["tool_error"]) or "error"
            result = None
            if error is None:
                results = [r for m in g.output_messages for r in m.tool_results]
                result = results[0].result if results else g.output
            out.append(ToolCallRecord(call.name, arguments, result, error, call.id, span))
        return tuple(out)

    @cached_property
    def llm_calls(self) -> tuple[LlmCall, ...]:
        """The model calls in the trace, in start order."""
        out = []
        for span in self.spans:
            g = span.genai
            if g.operation in NOT_MODEL_CALLS:
                continue
            if not (g.input_messages or g.output_messages) and g.input_tokens is None:
                continue  # no messages and no usage: nothing shows a call to a model
            out.append(LlmCall(g.model, g.input_tokens, g.output_tokens, _error(span), span))
        return tuple(out)

    @cached_property
    def input_tokens(self) -> int | None:
        """Input tokens over every model call; None when no call says."""
        values = [c.input_tokens for c in self.llm_calls if c.input_tokens is not None]
        return sum(values) if values else None

    @cached_property
    def output_tokens(self) -> int | None:
        """Output tokens over every model call; None when no call says."""
        values = [c.output_tokens for c in self.llm_calls if c.output_tokens is not None]
        return sum(values) if values else None

    @cached_property
    def messages(self) -> tuple[Message, ...]:
        """The transcript (system, user, assistant and tool messages).

        Chat APIs send the conversation so far with every call, so this is what the last model
        call was sent plus its answer. When that call's input was not recorded, the transcript
        is put together from the calls: the first call's input, then each call's answer and
        each tool's result, in start order.
        """
        calls = self.llm_calls
        if not calls:
            return self.root.genai.messages
        last = calls[-1].span.genai
        if last.input_messages:
            return last.input_messages + last.output_messages
        out: list[Message] = list(calls[0].span.genai.input_messages)
        model_spans = {id(c.span) for c in calls}
        for span in self.spans:
            g = span.genai
            if g.operation in TOOL_OPERATIONS:
                out.extend(m for m in g.output_messages if m.role == "tool")
            elif id(span) in model_spans:
                out.extend(g.output_messages)
        return tuple(out)

    @cached_property
    def input(self) -> str | None:
        """The trace's first user message, else the root's input."""
        for message in self.messages:
            if message.role == "user" and message.text:
                return message.text
        return self.root.genai.input

    @cached_property
    def output(self) -> str | None:
        """The trace's final answer: the root's output, else the last model call's (also when
        the root is itself a model or tool call, as in a trace seen in part)."""
        root = self.root
        if root.genai.operation not in TOOL_OPERATIONS and all(
            c.span is not root for c in self.llm_calls
        ):
            if root.genai.output is not None:
                return root.genai.output
        for call in reversed(self.llm_calls):
            if call.output is not None:
                return call.output
        return None

    def __repr__(self) -> str:
        return f"<TraceView {self.trace_id:032x}: {self.span_count} spans, {self.reason}>"


class TraceAnchor(SpanView):
    """The span that anchors a trace rule's evaluation, seen with its trace: what the rule's
    filter reads (the span's own fields as they are, and ``trace.*`` from :attr:`trace`)."""

    __slots__ = ("_anchor", "_trace")

    def __init__(self, anchor: SpanView, trace: TraceView) -> None:
        super().__init__()
        self._anchor = anchor
        self._trace = trace
        for name in _PLAIN_FIELDS:
            setattr(self, name, getattr(anchor, name))

    @property
    def anchor(self) -> SpanView:
        return self._anchor

    @property
    def trace(self) -> TraceView:
        return self._trace

    @property
    def attributes(self) -> Mapping[str, Any]:
        return self._anchor.attributes

    @property
    def resource(self) -> Mapping[str, Any]:
        return self._anchor.resource

    @property
    def events(self) -> Sequence[EventView]:
        return self._anchor.events

    @property
    def links(self) -> Sequence[LinkView]:
        return self._anchor.links

    def sdk_resource(self) -> Resource:
        return self._anchor.sdk_resource()

    @property
    def genai(self) -> GenAIFields:
        return self._anchor.genai


_PLAIN_FIELDS = (
    "trace_id",
    "span_id",
    "parent_span_id",
    "parent_is_remote",
    "name",
    "kind",
    "start_time_ns",
    "end_time_ns",
    "status_code",
    "status_message",
    "scope_name",
    "scope_version",
)
