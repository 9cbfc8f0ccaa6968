"""A read-only view of one ended span, whatever carried it.

Rules, filters and scorers read spans only through :class:`SpanView`. The in-process
processor wraps the SDK's ``ReadableSpan`` (:class:`SdkSpanView`); the sidecar wraps the OTLP
protobuf ``Span``. Views are built on the workers, never on the application's thread.

Enumerations are exposed as the SDK's short upper-case names: ``kind`` is one of ``INTERNAL``,
``SERVER``, ``CLIENT``, ``PRODUCER``, ``CONSUMER``; ``status_code`` one of ``UNSET``, ``OK``,
``ERROR``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan

if TYPE_CHECKING:
    from otel_online_eval.genai import ExtractSettings, GenAIFields
    from otel_online_eval.traceview import TraceView

__all__ = ["EventView", "LinkView", "SdkSpanView", "SpanView"]

_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class EventView:
    """A span event: name, time (ns since the epoch) and attributes."""

    name: str
    time_ns: int
    attributes: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)


@dataclass(frozen=True, slots=True)
class LinkView:
    """A span link: the linked span's ids and the link's attributes."""

    trace_id: int
    span_id: int
    attributes: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)


class SpanView:
    """Read-only access to an ended span. Subclasses fill the plain fields in ``__init__``
    and implement the mappings, which may be decoded lazily."""

    __slots__ = (
        "_genai",
        "_joined",
        "_presets",
        "end_time_ns",
        "kind",
        "name",
        "parent_is_remote",
        "parent_span_id",
        "scope_name",
        "scope_version",
        "span_id",
        "start_time_ns",
        "status_code",
        "status_message",
        "trace_id",
    )

    trace_id: int
    span_id: int
    parent_span_id: int | None
    parent_is_remote: bool
    name: str
    kind: str
    start_time_ns: int
    end_time_ns: int
    status_code: str
    status_message: str
    scope_name: str
    scope_version: str

    def __init__(self, presets: Sequence[str] | ExtractSettings | None = None) -> None:
        """``presets``: how :attr:`genai` is extracted: preset names in order, or extraction
        settings (``ExtractConfig``); None for the defaults."""
        self._genai: GenAIFields | None = None
        self._presets = presets
        self._joined: tuple[EventView, ...] = ()

    @property
    def attributes(self) -> Mapping[str, Any]:
        """The span's attributes."""
        raise NotImplementedError

    @property
    def resource(self) -> Mapping[str, Any]:
        """The attributes of the resource that produced the span."""
        raise NotImplementedError

    @property
    def events(self) -> Sequence[EventView]:
        """The span's events, in the order they were added."""
        raise NotImplementedError

    @property
    def links(self) -> Sequence[LinkView]:
        """The span's links."""
        raise NotImplementedError

    def sdk_resource(self) -> Resource:
        """The resource as an SDK object, for eval spans that share it."""
        raise NotImplementedError

    @property
    def trace(self) -> TraceView | None:
        """The whole trace, when the span anchors a trace rule's evaluation (the filter's
        ``trace.*`` fields read it); None for a span evaluated on its own."""
        return None

    @property
    def is_root(self) -> bool:
        """True when the span has no parent: it starts its trace."""
        return self.parent_span_id is None

    @property
    def duration_ms(self) -> float:
        return (self.end_time_ns - self.start_time_ns) / 1e6

    @property
    def trace_id_hex(self) -> str:
        return f"{self.trace_id:032x}"

    @property
    def span_id_hex(self) -> str:
        return f"{self.span_id:016x}"

    @property
    def parent_span_id_hex(self) -> str | None:
        return None if self.parent_span_id is None else f"{self.parent_span_id:016x}"

    @property
    def joined(self) -> tuple[EventView, ...]:
        """The log records joined to this span (see :meth:`join`)."""
        return self._joined

    def join(self, records: Sequence[EventView]) -> None:
        """Add log records of this span (OpenTelemetry events, from the logs signal) after its
        own events: :attr:`events`, and the GenAI fields read from them, include them."""
        if records:
            self._joined += tuple(records)
            self._genai = None

    @property
    def genai(self) -> GenAIFields:
        """Input, output, model and usage read from the GenAI conventions, computed once."""
        if self._genai is None:
            from otel_online_eval.genai import extract

            self._genai = extract(self, self._presets)
        return self._genai

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} {self.trace_id_hex}/{self.span_id_hex}>"


class SdkSpanView(SpanView):
    """A view over the SDK's ``ReadableSpan`` (the span an ``on_end`` receives)."""

    __slots__ = ("_attributes", "_span")

    def __init__(
        self, span: ReadableSpan, presets: Sequence[str] | ExtractSettings | None = None
    ) -> None:
        super().__init__(presets)
        self._span = span
        self._attributes: Mapping[str, Any] | None = None
        ctx = span.context
        self.trace_id = ctx.trace_id if ctx is not None else 0
        self.span_id = ctx.span_id if ctx is not None else 0
        parent = span.parent
        if parent is not None and parent.is_valid:
            self.parent_span_id = parent.span_id
            self.parent_is_remote = bool(parent.is_remote)
        else:
            self.parent_span_id = None
            self.parent_is_remote = False
        self.name = span.name
        self.kind = span.kind.name
        self.start_time_ns = span.start_time or 0
        self.end_time_ns = span.end_time or self.start_time_ns
        self.status_code = span.status.status_code.name
        self.status_message = span.status.description or ""
        scope = span.instrumentation_scope
        self.scope_name = scope.name if scope is not None else ""
        self.scope_version = (scope.version or "") if scope is not None else ""

    @property
    def span(self) -> ReadableSpan:
        """The underlying SDK span."""
        return self._span

    @property
    def attributes(self) -> Mapping[str, Any]:
        if self._attributes is None:  # the SDK builds a new proxy on every access
            self._attributes = self._span.attributes or _EMPTY
        return self._attributes

    @property
    def resource(self) -> Mapping[str, Any]:
        return self._span.resource.attributes

    @property
    def events(self) -> Sequence[EventView]:
        own = tuple(
            EventView(e.name, e.timestamp, e.attributes or _EMPTY) for e in self._span.events
        )
        return own + self._joined if self._joined else own

    @property
    def links(self) -> Sequence[LinkView]:
        return tuple(
            LinkView(link.context.trace_id, link.context.span_id, link.attributes or _EMPTY)
            for link in self._span.links
        )

    def sdk_resource(self) -> Resource:
        return self._span.resource
