"""A fast path for decoding OTLP/JSON trace requests, with the library decoder as the fallback.

:func:`otel_online_eval.otlp_json.decode_request_dict` goes through protobuf's ``json_format``,
which costs about 175 µs per span; the tools read files of a hundred thousand spans, so this
module builds the protobuf request directly from the parsed JSON (about 15 µs per span).

It handles exactly what the Collector's ``file`` exporter and the SDK's encoders write:
lowerCamelCase field names, hex ids, integers as numbers or decimal strings, enums as integers,
and it ignores fields the protobuf schema does not know (as the OTLP specification asks). On
anything else (snake_case names, enum names, ``null``, ``bytesValue``, ``"NaN"``, an id of the
wrong length, a value of the wrong type, a schema field it does not handle) it gives up and
:func:`decode` falls back to the library decoder, which either accepts the input or raises the
error message with the path of the bad field. Both paths produce the same request: the tests
compare them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from google.protobuf.descriptor import Descriptor
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from otel_online_eval.otlp_json import decode_request_dict

__all__ = ["decode"]

_U32 = (1 << 32) - 1
_U64 = (1 << 64) - 1
_I64_MIN, _I64_MAX = -(1 << 63), (1 << 63) - 1


class _Fallback(Exception):
    """The fast path cannot decide: use the library decoder."""


def decode(data: Any) -> ExportTraceServiceRequest:
    """Decode a parsed OTLP/JSON trace request.

    Raises:
        ValueError: the request is not valid OTLP/JSON (the library decoder's message).
    """
    if isinstance(data, dict):
        try:
            return _request(data)
        except (_Fallback, ValueError, TypeError, AttributeError, KeyError, OverflowError):
            pass
    if not isinstance(data, dict):
        raise ValueError(f"an OTLP/JSON trace request must be a JSON object, got {data!r:.60}")
    return decode_request_dict(data)


def _schema_keys(descriptor: Descriptor, handled: set[str]) -> frozenset[str]:
    """Keys of a message that the schema knows but the fast path does not handle."""
    names = {f.json_name for f in descriptor.fields} | {f.name for f in descriptor.fields}
    return frozenset(names - handled)


def _check(d: Any, unhandled: frozenset[str]) -> dict[str, Any]:
    if not isinstance(d, dict):
        raise _Fallback
    for key in d:
        if key in unhandled:
            raise _Fallback
    return d


def _list(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise _Fallback
    return value


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise _Fallback
    return value


def _uint(value: Any, top: int) -> int:
    if type(value) is int:
        n = value
    elif isinstance(value, str) and value.isascii() and value.isdigit():
        n = int(value)
    else:
        raise _Fallback
    if not 0 <= n <= top:
        raise _Fallback
    return n


def _int64(value: Any) -> int:
    if type(value) is int:
        n = value
    elif isinstance(value, str):
        digits = value[1:] if value.startswith("-") else value
        if not (digits.isascii() and digits.isdigit()):
            raise _Fallback
        n = int(value)
    else:
        raise _Fallback
    if not _I64_MIN <= n <= _I64_MAX:
        raise _Fallback
    return n


def _id(value: Any, digits: int) -> bytes:
    if not isinstance(value, str):
        raise _Fallback
    if value == "":
        return b""
    if len(value) != digits:
        raise _Fallback
    raw = bytes.fromhex(value)  # ValueError on a non-hex digit: the fallback reports it
    if len(raw) * 2 != digits:  # fromhex skips whitespace
        raise _Fallback
    return raw


_ANY_KEYS = _schema_keys(
    common_pb2.AnyValue.DESCRIPTOR,
    {"stringValue", "boolValue", "intValue", "doubleValue", "arrayValue", "kvlistValue"},
)
_KV_KEYS = _schema_keys(common_pb2.KeyValue.DESCRIPTOR, {"key", "value"})


def _any(target: common_pb2.AnyValue, d: Any) -> None:
    _check(d, _ANY_KEYS)
    found = False
    for key, value in d.items():
        if key == "stringValue":
            target.string_value = _str(value)
        elif key == "intValue":
            target.int_value = _int64(value)
        elif key == "boolValue":
            if type(value) is not bool:
                raise _Fallback
            target.bool_value = value
        elif key == "doubleValue":
            if type(value) is int:
                value = float(value)
            elif type(value) is not float:
                raise _Fallback
            target.double_value = value
        elif key == "arrayValue":
            arr = _check(value, _VALUES_KEYS)
            target.array_value.SetInParent()
            values = target.array_value.values
            for item in _list(arr.get("values", [])):
                _any(values.add(), item)
        elif key == "kvlistValue":
            kvl = _check(value, _VALUES_KEYS)
            target.kvlist_value.SetInParent()
            _attributes(target.kvlist_value.values, kvl.get("values", []))
        else:
            continue  # unknown to the schema: ignored
        if found:  # two members of the oneof: let the library decoder report it
            raise _Fallback
        found = True


_VALUES_KEYS = _schema_keys(common_pb2.ArrayValue.DESCRIPTOR, {"values"})


def _attributes(target: Any, items: Any) -> None:
    for kv in _list(items):
        _check(kv, _KV_KEYS)
        n = target.add()
        key = kv.get("key")
        if key is not None:
            n.key = _str(key)
        value = kv.get("value")
        if value is not None:
            n.value.SetInParent()
            _any(n.value, value)
        elif "value" in kv:
            raise _Fallback


_SPAN_KEYS = _schema_keys(
    trace_pb2.Span.DESCRIPTOR,
    {
        "traceId",
        "spanId",
        "traceState",
        "parentSpanId",
        "flags",
        "name",
        "kind",
        "startTimeUnixNano",
        "endTimeUnixNano",
        "attributes",
        "droppedAttributesCount",
        "events",
        "droppedEventsCount",
        "links",
        "droppedLinksCount",
        "status",
    },
)
_EVENT_KEYS = _schema_keys(
    trace_pb2.Span.Event.DESCRIPTOR,
    {"timeUnixNano", "name", "attributes", "droppedAttributesCount"},
)
_LINK_KEYS = _schema_keys(
    trace_pb2.Span.Link.DESCRIPTOR,
    {"traceId", "spanId", "traceState", "attributes", "droppedAttributesCount", "flags"},
)
_STATUS_KEYS = _schema_keys(trace_pb2.Status.DESCRIPTOR, {"message", "code"})
_SCOPE_KEYS = _schema_keys(
    common_pb2.InstrumentationScope.DESCRIPTOR,
    {"name", "version", "attributes", "droppedAttributesCount"},
)
_RESOURCE_KEYS = _schema_keys(
    resource_pb2.Resource.DESCRIPTOR, {"attributes", "droppedAttributesCount"}
)
_SCOPE_SPANS_KEYS = _schema_keys(trace_pb2.ScopeSpans.DESCRIPTOR, {"scope", "spans", "schemaUrl"})
_RESOURCE_SPANS_KEYS = _schema_keys(
    trace_pb2.ResourceSpans.DESCRIPTOR, {"resource", "scopeSpans", "schemaUrl"}
)
_REQUEST_KEYS = _schema_keys(ExportTraceServiceRequest.DESCRIPTOR, {"resourceSpans"})


def _event(target: trace_pb2.Span.Event, d: dict[str, Any]) -> None:
    for key, value in d.items():
        if key == "timeUnixNano":
            target.time_unix_nano = _uint(value, _U64)
        elif key == "name":
            target.name = _str(value)
        elif key == "attributes":
            _attributes(target.attributes, value)
        elif key == "droppedAttributesCount":
            target.dropped_attributes_count = _uint(value, _U32)


def _link(target: trace_pb2.Span.Link, d: dict[str, Any]) -> None:
    for key, value in d.items():
        if key == "traceId":
            target.trace_id = _id(value, 32)
        elif key == "spanId":
            target.span_id = _id(value, 16)
        elif key == "traceState":
            target.trace_state = _str(value)
        elif key == "attributes":
            _attributes(target.attributes, value)
        elif key == "droppedAttributesCount":
            target.dropped_attributes_count = _uint(value, _U32)
        elif key == "flags":
            target.flags = _uint(value, _U32)


def _span(target: trace_pb2.Span, d: dict[str, Any]) -> None:
    for key, value in d.items():
        handler = _SPAN_FIELDS.get(key)
        if handler is not None:
            handler(target, value)


def _set_status(span: trace_pb2.Span, value: Any) -> None:
    _check(value, _STATUS_KEYS)
    span.status.SetInParent()
    for key, item in value.items():
        if key == "message":
            span.status.message = _str(item)
        elif key == "code":
            if type(item) is not int:
                raise _Fallback
            span.status.code = item  # type: ignore[assignment]


def _set_events(span: trace_pb2.Span, value: Any) -> None:
    for item in _list(value):
        _event(span.events.add(), _check(item, _EVENT_KEYS))


def _set_links(span: trace_pb2.Span, value: Any) -> None:
    for item in _list(value):
        _link(span.links.add(), _check(item, _LINK_KEYS))


def _set_kind(span: trace_pb2.Span, value: Any) -> None:
    if type(value) is not int:
        raise _Fallback
    span.kind = value  # type: ignore[assignment]


def _setter(field: str, convert: Callable[[Any], Any]) -> Callable[[Any, Any], None]:
    def set_field(span: Any, value: Any) -> None:
        setattr(span, field, convert(value))

    return set_field


_SPAN_FIELDS: dict[str, Callable[[trace_pb2.Span, Any], None]] = {
    "traceId": _setter("trace_id", lambda v: _id(v, 32)),
    "spanId": _setter("span_id", lambda v: _id(v, 16)),
    "parentSpanId": _setter("parent_span_id", lambda v: _id(v, 16)),
    "traceState": _setter("trace_state", _str),
    "flags": _setter("flags", lambda v: _uint(v, _U32)),
    "name": _setter("name", _str),
    "kind": _set_kind,
    "startTimeUnixNano": _setter("start_time_unix_nano", lambda v: _uint(v, _U64)),
    "endTimeUnixNano": _setter("end_time_unix_nano", lambda v: _uint(v, _U64)),
    "attributes": lambda span, v: _attributes(span.attributes, v),
    "droppedAttributesCount": _setter("dropped_attributes_count", lambda v: _uint(v, _U32)),
    "events": _set_events,
    "droppedEventsCount": _setter("dropped_events_count", lambda v: _uint(v, _U32)),
    "links": _set_links,
    "droppedLinksCount": _setter("dropped_links_count", lambda v: _uint(v, _U32)),
    "status": _set_status,
}


def _scope(target: common_pb2.InstrumentationScope, d: dict[str, Any]) -> None:
    for key, value in d.items():
        if key == "name":
            target.name = _str(value)
        elif key == "version":
            target.version = _str(value)
        elif key == "attributes":
            _attributes(target.attributes, value)
        elif key == "droppedAttributesCount":
            target.dropped_attributes_count = _uint(value, _U32)


def _resource(target: resource_pb2.Resource, d: dict[str, Any]) -> None:
    for key, value in d.items():
        if key == "attributes":
            _attributes(target.attributes, value)
        elif key == "droppedAttributesCount":
            target.dropped_attributes_count = _uint(value, _U32)


def _request(data: dict[str, Any]) -> ExportTraceServiceRequest:
    _check(data, _REQUEST_KEYS)
    request = ExportTraceServiceRequest()
    for rs in _list(data.get("resourceSpans", [])):
        _check(rs, _RESOURCE_SPANS_KEYS)
        out = request.resource_spans.add()
        for key, value in rs.items():
            if key == "resource":
                out.resource.SetInParent()
                _resource(out.resource, _check(value, _RESOURCE_KEYS))
            elif key == "schemaUrl":
                out.schema_url = _str(value)
            elif key == "scopeSpans":
                for ss in _list(value):
                    _check(ss, _SCOPE_SPANS_KEYS)
                    scope_out = out.scope_spans.add()
                    for skey, svalue in ss.items():
                        if skey == "scope":
                            scope_out.scope.SetInParent()
                            _scope(scope_out.scope, _check(svalue, _SCOPE_KEYS))
                        elif skey == "schemaUrl":
                            scope_out.schema_url = _str(svalue)
                        elif skey == "spans":
                            spans = scope_out.spans
                            for span in _list(svalue):
                                _span(spans.add(), _check(span, _SPAN_KEYS))
    return request
