"""Eval spans as OTLP protobuf, written by hand from the emitter's ``SpanPlan``s.

Building upb message objects from Python costs about 30 µs per eval span, most of it in
attribute KeyValues that repeat (rule, scorer, label...). Writing the wire format directly, with
the encoded KeyValues of short values cached, costs a few µs. The output parses to the same
message as the SDK's ``encode_spans`` of the ``ReadableSpan``s the in-process emitter makes of
the same plans (tests/test_otlp_parity.py), with one difference: the span and link ``flags``
also carry the W3C trace flags in their low 8 bits (sampled), as the OTLP specification asks
and the Python SDK does not yet do (open-telemetry/opentelemetry-python#4666).

Values the SDK cannot encode (an int outside int64, an object of another type) drop their
attribute, as the SDK does, and are logged once per key; strings that are not valid Unicode
(lone surrogates) are written with the bad characters replaced, where the SDK drops them.

Example::

    spans = [encode_span(plan) for plan in plans]
    body = encode_request([(resource, spans)], scope)   # ExportTraceServiceRequest bytes
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource as ProtoResource
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

if TYPE_CHECKING:
    from opentelemetry.trace import SpanContext

    from otel_online_eval._spanplan import SpanPlan

__all__ = [
    "encode_attributes",
    "encode_request",
    "encode_resource",
    "encode_scope",
    "encode_span",
]

logger = logging.getLogger(__name__)

_CACHE_LIMIT = 8192
_CACHEABLE_LEN = 64
_MAX_DEPTH = 8  # AnyValues nested deeper are written empty
_kv_cache: dict[tuple[bytes, str, type, Any], bytes] = {}
_pack_q = struct.Struct("<Q").pack
_pack_d = struct.Struct("<d").pack
_pack_i = struct.Struct("<I").pack
_I64_MIN, _I64_MAX = -(1 << 63), (1 << 63) - 1
_HAS_IS_REMOTE, _IS_REMOTE = 0x100, 0x200
# Span.flags (16, fixed32): W3C sampled; "has is_remote" set, is_remote clear: a local parent.
_FLAGS = b"\x85\x01" + _pack_i(0x01 | _HAS_IS_REMOTE)
_KIND_INTERNAL = b"\x30\x01"  # Span.kind (6), varint 1
_STATUS_UNSET = b"\x7a\x00"  # Span.status (15): present and empty, as the SDK writes it
_STATUS_ERROR = 2
_warned: set[str] = set()


class _Unencodable(Exception):
    """A value the OTLP AnyValue cannot hold (the SDK drops its attribute too)."""


def _varint(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _ld(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: its tag byte(s), the length, the payload."""
    return tag + _varint(len(payload)) + payload


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "replace")


def _any(value: Any, depth: int = 0) -> bytes:
    """An encoded AnyValue (without its own tag)."""
    if isinstance(value, str):
        return _ld(b"\x0a", _utf8(value))  # string_value (1)
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"  # bool_value (2)
    if isinstance(value, int):
        if not _I64_MIN <= value <= _I64_MAX:
            raise _Unencodable(f"{value} is outside int64")
        return b"\x18" + _varint(value & 0xFFFFFFFFFFFFFFFF)  # int_value (3)
    if isinstance(value, float):
        return b"\x21" + _pack_d(value)  # double_value (4)
    if value is None or depth > _MAX_DEPTH:
        return b""
    if isinstance(value, bytes):
        return _ld(b"\x3a", value)  # bytes_value (7)
    if isinstance(value, Mapping):
        kvs = b"".join(_ld(b"\x0a", _kv(str(k), v, depth + 1)) for k, v in value.items())
        return _ld(b"\x32", kvs)  # kvlist_value (6) > KeyValueList.values (1)
    if isinstance(value, Sequence):
        items = b"".join(_ld(b"\x0a", _any(v, depth + 1)) for v in value)
        return _ld(b"\x2a", items)  # array_value (5) > ArrayValue.values (1)
    raise _Unencodable(f"a {type(value).__name__} is not an attribute value")


def _kv(key: str, value: Any, depth: int = 0) -> bytes:
    """An encoded KeyValue (without its own tag)."""
    return _ld(b"\x0a", _utf8(key)) + _ld(b"\x12", _any(value, depth))


def _attributes(tag: bytes, attrs: Mapping[str, Any]) -> bytes:
    """Attribute fields under ``tag``; short scalar ones come from the cache."""
    out = []
    cache = _kv_cache
    for key, value in attrs.items():
        ck = (tag, key, type(value), value)
        try:
            hit = cache.get(ck)
        except TypeError:  # an unhashable value (a list)
            hit = None
        if hit is None:
            try:
                hit = _ld(tag, _kv(key, value))
            except _Unencodable as exc:
                _warn_once(key, exc)
                continue
            # Floats are not cached: scores take ever new values (and NaN never hits).
            if (
                len(cache) < _CACHE_LIMIT
                and isinstance(value, (str, bool, int))
                and (not isinstance(value, str) or len(value) <= _CACHEABLE_LEN)
            ):
                cache[ck] = hit
        out.append(hit)
    return b"".join(out)


def _warn_once(key: str, exc: Exception) -> None:
    if key not in _warned and len(_warned) < 256:
        _warned.add(key)
        logger.warning("Eval span attribute %r dropped: %s (logged once per key).", key, exc)


_LINK_ATTRS = _attributes(b"\x22", {"online_eval.link": "scored_span"})  # Link.attributes (4)


def _link_flags(link: SpanContext) -> bytes:
    flags = int(link.trace_flags) & 0xFF | _HAS_IS_REMOTE | (_IS_REMOTE if link.is_remote else 0)
    return b"\x35" + _pack_i(flags)  # Link.flags (6), fixed32


def _link(link: SpanContext, attrs: bytes) -> bytes:
    # links (13) > trace_id (1), span_id (2), attributes (4), flags (6)
    body = (
        b"\x0a\x10"
        + link.trace_id.to_bytes(16, "big")
        + b"\x12\x08"
        + link.span_id.to_bytes(8, "big")
        + attrs
        + _link_flags(link)
    )
    return _ld(b"\x6a", body)


def encode_span(plan: SpanPlan) -> bytes:
    """An encoded ``Span`` message (without its own tag) of an eval or score span."""
    parts = [
        b"\x0a\x10" + plan.trace_id.to_bytes(16, "big"),  # trace_id (1)
        b"\x12\x08" + plan.span_id.to_bytes(8, "big"),  # span_id (2)
    ]
    if plan.parent_span_id is not None:
        parts.append(b"\x22\x08" + plan.parent_span_id.to_bytes(8, "big"))  # parent_span_id (4)
    parts.append(_ld(b"\x2a", _utf8(plan.name)))  # name (5)
    parts.append(_KIND_INTERNAL)
    parts.append(b"\x39" + _pack_q(plan.start_ns))  # start_time_unix_nano (7), fixed64
    parts.append(b"\x41" + _pack_q(plan.end_ns))  # end_time_unix_nano (8), fixed64
    parts.append(_attributes(b"\x4a", plan.attributes))  # attributes (9)
    for name, time_ns, attrs in plan.events:  # events (11) > time (1), name (2), attributes (3)
        event = b"\x09" + _pack_q(time_ns) + _ld(b"\x12", _utf8(name))
        parts.append(_ld(b"\x5a", event + _attributes(b"\x1a", attrs)))
    if plan.link is not None:
        parts.append(_link(plan.link, _LINK_ATTRS))
    for link, what in plan.more_links:
        parts.append(_link(link, _attributes(b"\x22", {"online_eval.link": what})))
    code, message = plan.status
    if code == "ERROR":  # status (15) > message (2), code (3)
        status = b"\x18" + _varint(_STATUS_ERROR)
        if message:
            status = _ld(b"\x12", _utf8(message)) + status
        parts.append(_ld(b"\x7a", status))
    else:
        parts.append(_STATUS_UNSET)
    parts.append(_FLAGS)
    return b"".join(parts)


def encode_scope(scope: InstrumentationScope) -> bytes:
    """An encoded ``InstrumentationScope`` (without its own tag): name, version, attributes."""
    out = b""
    if scope.name:
        out += _ld(b"\x0a", _utf8(scope.name))
    if scope.version:
        out += _ld(b"\x12", _utf8(scope.version))
    if scope.attributes:
        out += _attributes(b"\x1a", scope.attributes)
    return out


def encode_request(groups: Iterable[tuple[ProtoResource, Sequence[bytes]]], scope: bytes) -> bytes:
    """An encoded ``ExportTraceServiceRequest`` of spans grouped by resource, in one scope.

    Args:
        groups: (resource, encoded spans) pairs, one ``ResourceSpans`` each, in order.
        scope: the encoded instrumentation scope of every span (:func:`encode_scope`).
    """
    # ExportTraceServiceRequest.resource_spans (1) > ResourceSpans: resource (1),
    # scope_spans (2) > ScopeSpans: scope (1), spans (2).
    scope_field = _ld(b"\x0a", scope)
    return b"".join(
        _ld(
            b"\x0a",
            _ld(b"\x0a", resource.SerializeToString())
            + _ld(b"\x12", scope_field + b"".join(_ld(b"\x12", s) for s in spans)),
        )
        for resource, spans in groups
    )


def encode_attributes(attrs: Mapping[str, Any]) -> list[KeyValue]:
    """Attributes as protobuf KeyValue messages (values the SDK cannot encode are dropped)."""
    return [KeyValue.FromString(_kv(k, v)) for k, v in _encodable(attrs)]


def encode_resource(resource: Resource) -> ProtoResource:
    """An SDK resource as a protobuf ``Resource``."""
    return ProtoResource(attributes=encode_attributes(dict(resource.attributes)))


def _encodable(attrs: Mapping[str, Any]) -> list[tuple[str, Any]]:
    out = []
    for key, value in attrs.items():
        try:
            _any(value)
        except _Unencodable as exc:
            _warn_once(key, exc)
            continue
        out.append((key, value))
    return out
