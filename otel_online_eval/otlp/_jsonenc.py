"""SDK spans as OTLP/JSON: the one encoder, for the ``file`` exporter and ``score --out``.

:func:`encode_spans_dict` builds the JSON object of an ``ExportTraceServiceRequest`` straight
from ``ReadableSpan``s (about 10 µs per span; through the SDK's protobuf encoder and protobuf's
``json_format`` it costs about 180 µs). The output is what that library path writes, object for
object (tests/test_otlp_json.py compares them): grouped by resource then scope as the SDK's
``encode_spans`` groups them, empty fields left out, ids in lower-case hex, 64-bit integers as
decimal strings, enums as integers, ``bytes`` as base64, lowerCamelCase names. Attribute values
the SDK cannot encode (an int outside int64, an object of another type) are dropped as the SDK
drops them, and logged; a lone surrogate in a string (not valid Unicode, so not writable as
UTF-8) is replaced by U+FFFD in the line :func:`encode_spans_json` returns.

:func:`request_to_dict` is the same mapping for a protobuf request, through ``json_format``.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan

__all__ = [
    "encode_spans_dict",
    "encode_spans_json",
    "request_to_dict",
    "request_to_json",
]

logger = logging.getLogger(__name__)

_HAS_IS_REMOTE = 0x100
_IS_REMOTE = 0x200
_KIND = {"INTERNAL": 1, "SERVER": 2, "CLIENT": 3, "PRODUCER": 4, "CONSUMER": 5}
_I64_MIN, _I64_MAX = -(1 << 63), (1 << 63) - 1
_SURROGATE = re.compile("[\ud800-\udfff]")
_ID_FIELDS = ("traceId", "spanId", "parentSpanId")


def _value(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, str):
        return {"stringValue": value}
    if isinstance(value, int):
        if not _I64_MIN <= value <= _I64_MAX:
            raise TypeError(f"{value} is outside int64")
        return {"intValue": str(value)}
    if isinstance(value, float):
        if math.isnan(value):
            return {"doubleValue": "NaN"}
        if math.isinf(value):
            return {"doubleValue": "Infinity" if value > 0 else "-Infinity"}
        return {"doubleValue": value}
    if isinstance(value, bytes):
        return {"bytesValue": base64.b64encode(value).decode("ascii")}
    if isinstance(value, Sequence):
        values = [_value(v) for v in value]
        return {"arrayValue": {"values": values} if values else {}}
    if isinstance(value, Mapping):
        kvs = [_kv(str(k), v) for k, v in value.items()]
        return {"kvlistValue": {"values": kvs} if kvs else {}}
    raise TypeError(f"cannot encode a {type(value).__name__} attribute value")


def _kv(key: str, value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if key:
        out["key"] = key
    out["value"] = _value(value)
    return out


_CACHE: dict[tuple[str, type, Any], dict[str, Any]] = {}
_CACHE_SIZE = 4096
_CACHED_TYPES = (str, bool, int)


def _attributes(attrs: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    if not attrs:
        return []
    out = []
    cache = _CACHE
    for key, value in attrs.items():
        # Eval spans repeat the same short attributes (rule, scorer, label): encode them once.
        # The cached objects are only ever serialised, never changed.
        cacheable = type(value) in _CACHED_TYPES and (type(value) is not str or len(value) <= 64)
        if cacheable:
            ckey = (key, type(value), value)
            hit = cache.get(ckey)
            if hit is not None:
                out.append(hit)
                continue
        try:
            encoded = _kv(key, value)
        except TypeError as exc:
            logger.warning("Cannot encode attribute %r: %s; it is left out.", key, exc)
            continue
        if cacheable:
            if len(cache) >= _CACHE_SIZE:
                cache.clear()
            cache[ckey] = encoded
        out.append(encoded)
    return out


def _flags(parent: Any) -> int:
    flags = _HAS_IS_REMOTE
    if parent is not None and parent.is_remote:
        flags |= _IS_REMOTE
    return flags


def _span(span: ReadableSpan) -> dict[str, Any]:
    ctx = span.get_span_context()
    assert ctx is not None
    out: dict[str, Any] = {"traceId": f"{ctx.trace_id:032x}", "spanId": f"{ctx.span_id:016x}"}
    if ctx.trace_state:
        out["traceState"] = ",".join(f"{k}={v}" for k, v in ctx.trace_state.items())
    parent = span.parent
    if parent:
        out["parentSpanId"] = f"{parent.span_id:016x}"
    out["flags"] = _flags(parent)
    if span.name:
        out["name"] = span.name
    out["kind"] = _KIND[span.kind.name]
    if span.start_time:
        out["startTimeUnixNano"] = str(span.start_time)
    if span.end_time:
        out["endTimeUnixNano"] = str(span.end_time)
    attrs = _attributes(span.attributes)
    if attrs:
        out["attributes"] = attrs
    if span.dropped_attributes:
        out["droppedAttributesCount"] = span.dropped_attributes
    events = []
    for event in span.events:
        e: dict[str, Any] = {}
        if event.timestamp:
            e["timeUnixNano"] = str(event.timestamp)
        if event.name:
            e["name"] = event.name
        eattrs = _attributes(event.attributes)
        if eattrs:
            e["attributes"] = eattrs
        if event.dropped_attributes:
            e["droppedAttributesCount"] = event.dropped_attributes
        events.append(e)
    if events:
        out["events"] = events
    if span.dropped_events:
        out["droppedEventsCount"] = span.dropped_events
    links = []
    for link in span.links:
        lk: dict[str, Any] = {
            "traceId": f"{link.context.trace_id:032x}",
            "spanId": f"{link.context.span_id:016x}",
        }
        lattrs = _attributes(link.attributes)
        if lattrs:
            lk["attributes"] = lattrs
        if link.dropped_attributes:
            lk["droppedAttributesCount"] = link.dropped_attributes
        lk["flags"] = _flags(link.context)
        links.append(lk)
    if links:
        out["links"] = links
    if span.dropped_links:
        out["droppedLinksCount"] = span.dropped_links
    status = span.status
    if status is not None:
        st: dict[str, Any] = {}
        if status.description:
            st["message"] = status.description
        if status.status_code.value:
            st["code"] = status.status_code.value
        out["status"] = st
    return out


def encode_spans_dict(spans: Sequence[ReadableSpan]) -> dict[str, Any]:
    """Encode SDK spans as an OTLP/JSON ``ExportTraceServiceRequest`` object.

    Args:
        spans: ended SDK spans, from any number of resources and scopes.

    Returns:
        A JSON-ready dict: ``{"resourceSpans": [...]}`` (``{}`` for no spans).
    """
    groups: dict[Any, dict[Any, list[dict[str, Any]]]] = {}
    for span in spans:
        scopes = groups.setdefault(span.resource, {})
        scopes.setdefault(span.instrumentation_scope or None, []).append(_span(span))
    out = []
    for resource, scopes in groups.items():
        scope_spans = []
        for scope, encoded in scopes.items():
            sc: dict[str, Any] = {}
            if scope is not None:
                if scope.name:
                    sc["name"] = scope.name
                if scope.version:
                    sc["version"] = scope.version
                sattrs = _attributes(scope.attributes)
                if sattrs:
                    sc["attributes"] = sattrs
            entry: dict[str, Any] = {"scope": sc, "spans": encoded}
            if scope is not None and scope.schema_url:
                entry["schemaUrl"] = scope.schema_url
            scope_spans.append(entry)
        rattrs = _attributes(resource.attributes)
        rs: dict[str, Any] = {
            "resource": {"attributes": rattrs} if rattrs else {},
            "scopeSpans": scope_spans,
        }
        if resource.schema_url:
            rs["schemaUrl"] = resource.schema_url
        out.append(rs)
    return {"resourceSpans": out} if out else {}


def encode_spans_json(spans: Sequence[ReadableSpan]) -> str:
    """Encode SDK spans as one compact OTLP/JSON line (without the trailing newline)."""
    return _dumps(encode_spans_dict(spans))


def request_to_dict(request: ExportTraceServiceRequest) -> dict[str, Any]:
    """Convert a protobuf ``ExportTraceServiceRequest`` to its OTLP/JSON object."""
    data: dict[str, Any] = json_format.MessageToDict(
        request, preserving_proto_field_name=False, use_integers_for_enums=True
    )
    for rs in data.get("resourceSpans", ()):
        for ss in rs.get("scopeSpans", ()):
            for span in ss.get("spans", ()):
                _hex_ids(span)
                for link in span.get("links", ()):
                    _hex_ids(link)
    return data


def request_to_json(request: ExportTraceServiceRequest) -> str:
    """Convert a protobuf ``ExportTraceServiceRequest`` to one compact OTLP/JSON line."""
    return _dumps(request_to_dict(request))


def _hex_ids(obj: dict[str, Any]) -> None:
    for key in _ID_FIELDS:
        if key in obj:
            obj[key] = base64.b64decode(obj[key]).hex()


def _dumps(data: dict[str, Any]) -> str:
    # Compact and UTF-8 like the Collector; NaN and the infinities are strings already.
    line = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    if not line.isascii() and _SURROGATE.search(line):
        line = _SURROGATE.sub("\ufffd", line)
    return line
