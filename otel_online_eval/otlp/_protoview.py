"""A SpanView over an OTLP protobuf ``Span``: fields read on demand, attributes decoded lazily.

The receiver only reads a span's ids, name and parent on the request path; a view is built on
the engine's workers for the few spans a rule may sample, and its attributes are decoded the
first time a filter or scorer asks. The resource is decoded once per ``ResourceSpans`` and shared
by all its spans.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource as ProtoResource
from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan
from opentelemetry.sdk.resources import Resource

from otel_online_eval.genai import ExtractSettings
from otel_online_eval.spanview import EventView, LinkView, SpanView

__all__ = ["ProtoSpanView", "SharedResource", "decode_attributes", "decode_value"]

_KINDS = ("INTERNAL", "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER")
_STATUS = ("UNSET", "OK", "ERROR")
_HAS_IS_REMOTE = 0x100
_IS_REMOTE = 0x200
MAX_DEPTH = 16
"""AnyValues nested deeper than this decode as the string ``'<nested too deeply>'``."""


def decode_value(value: AnyValue, depth: int = 0) -> Any:
    """The Python value of an AnyValue: str, bool, int, float, bytes, list or dict."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "int_value":
        return value.int_value
    if kind == "double_value":
        return value.double_value
    if kind == "bool_value":
        return value.bool_value
    if depth >= MAX_DEPTH:
        return "<nested too deeply>"
    if kind == "array_value":
        return tuple(decode_value(v, depth + 1) for v in value.array_value.values)
    if kind == "kvlist_value":
        return {kv.key: decode_value(kv.value, depth + 1) for kv in value.kvlist_value.values}
    if kind == "bytes_value":
        return value.bytes_value
    return None


def decode_attributes(kvs: Sequence[KeyValue]) -> Mapping[str, Any]:
    return MappingProxyType({kv.key: decode_value(kv.value) for kv in kvs})


class SharedResource:
    """One ``ResourceSpans``' resource, decoded at most once for all its spans."""

    __slots__ = ("_attributes", "_sdk", "proto")

    def __init__(self, proto: ProtoResource) -> None:
        self.proto = proto
        self._attributes: Mapping[str, Any] | None = None
        self._sdk: Resource | None = None

    @property
    def attributes(self) -> Mapping[str, Any]:
        if self._attributes is None:
            self._attributes = decode_attributes(self.proto.attributes)
        return self._attributes

    def sdk(self) -> Resource:
        if self._sdk is None:
            attrs = {k: v for k, v in self.attributes.items() if not isinstance(v, dict)}
            self._sdk = Resource(attrs)
        return self._sdk


class ProtoSpanView(SpanView):
    """A view over a received span; ``scope`` is (name, version)."""

    __slots__ = ("_attributes", "_resource", "_span")

    def __init__(
        self,
        span: ProtoSpan,
        resource: SharedResource,
        scope: tuple[str, str],
        presets: Sequence[str] | ExtractSettings | None = None,
    ) -> None:
        super().__init__(presets)
        self._span = span
        self._resource = resource
        self._attributes: Mapping[str, Any] | None = None
        self.trace_id = int.from_bytes(span.trace_id, "big")
        self.span_id = int.from_bytes(span.span_id, "big")
        parent = span.parent_span_id
        self.parent_span_id = int.from_bytes(parent, "big") if parent else None
        flags = span.flags
        self.parent_is_remote = bool(flags & _HAS_IS_REMOTE and flags & _IS_REMOTE)
        self.name = span.name
        kind = span.kind
        self.kind = _KINDS[kind] if 0 <= kind < len(_KINDS) else "INTERNAL"
        self.start_time_ns = span.start_time_unix_nano
        self.end_time_ns = span.end_time_unix_nano or self.start_time_ns
        code = span.status.code
        self.status_code = _STATUS[code] if 0 <= code < len(_STATUS) else "UNSET"
        self.status_message = span.status.message
        self.scope_name, self.scope_version = scope

    @property
    def proto(self) -> ProtoSpan:
        return self._span

    @property
    def proto_resource(self) -> ProtoResource:
        return self._resource.proto

    @property
    def attributes(self) -> Mapping[str, Any]:
        if self._attributes is None:
            self._attributes = decode_attributes(self._span.attributes)
        return self._attributes

    @property
    def resource(self) -> Mapping[str, Any]:
        return self._resource.attributes

    @property
    def events(self) -> Sequence[EventView]:
        own = tuple(
            EventView(e.name, e.time_unix_nano, decode_attributes(e.attributes))
            for e in self._span.events
        )
        return own + self._joined if self._joined else own

    @property
    def links(self) -> Sequence[LinkView]:
        return tuple(
            LinkView(
                int.from_bytes(link.trace_id, "big"),
                int.from_bytes(link.span_id, "big"),
                decode_attributes(link.attributes),
            )
            for link in self._span.links
        )

    def sdk_resource(self) -> Resource:
        return self._resource.sdk()
