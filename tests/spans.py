"""Build real SDK spans for tests.

Every span comes out of a real ``TracerProvider`` and ``InMemorySpanExporter``, so tests see exactly
what ``SpanProcessor.on_end`` would receive::

    span = make_span("chat", attributes={"gen_ai.operation.name": "chat"}, parent="root")
    v = view("chat", status="ERROR", events=["exception"])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode

from otel_online_eval.spanview import SdkSpanView

__all__ = ["make_span", "view"]

EventSpec = str | tuple[str, Mapping[str, Any]]


def make_span(
    name: str = "chat",
    *,
    attributes: Mapping[str, Any] | None = None,
    parent: str | SpanContext | None = None,
    kind: SpanKind | str = SpanKind.INTERNAL,
    status: StatusCode | str | None = None,
    status_message: str | None = None,
    events: Sequence[EventSpec] = (),
    resource: Mapping[str, Any] | None = None,
    scope: tuple[str, str | None] = ("tests", "1.0.0"),
    start_time: int | None = None,
    end_time: int | None = None,
    trace_id: int | None = None,
) -> ReadableSpan:
    """One ended span, as the SDK hands it to ``on_end``.

    Args:
        name: the span name.
        attributes: span attributes (the SDK validates them as it does for an app).
        parent: None for a root span; ``"root"`` to make it the child of a fresh root span; a
            ``SpanContext`` for an explicit (possibly remote) parent.
        kind: a ``SpanKind`` or its name (``"CLIENT"``).
        status: a ``StatusCode`` or its name (``"ERROR"``); UNSET when None.
        status_message: the status description (kept by the SDK only for ERROR).
        events: event names, or (name, attributes) pairs.
        resource: resource attributes, merged over the SDK defaults (``Resource.create``).
        scope: the instrumentation scope's (name, version).
        start_time: start, ns since the epoch; now when None.
        end_time: end, ns since the epoch; now when None.
        trace_id: force the trace id (only for a root span or a ``"root"`` parent).

    Returns:
        The ended ``ReadableSpan``.
    """
    exporter = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource.create(dict(resource or {})),
        shutdown_on_exit=False,
        id_generator=_FixedTraceId(trace_id) if trace_id is not None else None,
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer(scope[0], scope[1])
    context = None
    root = None
    if parent == "root":
        root = tracer.start_span("root")
        context = trace.set_span_in_context(root)
    elif isinstance(parent, SpanContext):
        context = trace.set_span_in_context(trace.NonRecordingSpan(parent))
    elif parent is not None:
        raise ValueError(f"parent must be None, 'root' or a SpanContext, got {parent!r}")
    span_kind = SpanKind[kind] if isinstance(kind, str) else kind
    span = tracer.start_span(
        name, context=context, kind=span_kind, attributes=attributes, start_time=start_time
    )
    for event in events:
        if isinstance(event, str):
            span.add_event(event)
        else:
            span.add_event(event[0], attributes=event[1])
    if status is not None:
        code = StatusCode[status] if isinstance(status, str) else status
        span.set_status(Status(code, status_message))
    span.end(end_time=end_time)
    if root is not None:
        root.end()
    provider.shutdown()
    wanted = span.get_span_context().span_id
    for finished in exporter.get_finished_spans():
        if finished.context is not None and finished.context.span_id == wanted:
            return finished
    raise AssertionError("the span was not exported")


class _FixedTraceId(RandomIdGenerator):
    """Random span ids, one fixed trace id."""

    def __init__(self, trace_id: int) -> None:
        self._trace_id = trace_id

    def generate_trace_id(self) -> int:
        return self._trace_id


def view(name: str = "chat", **kwargs: Any) -> SdkSpanView:
    """``make_span(...)`` wrapped in an ``SdkSpanView``; same arguments."""
    return SdkSpanView(make_span(name, **kwargs))
