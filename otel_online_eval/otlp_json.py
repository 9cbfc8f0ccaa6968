"""OTLP/JSON for traces: the encoding the Collector's ``file`` exporter writes, one request a line.

The OTLP/JSON encoding is the proto3 JSON mapping of ``ExportTraceServiceRequest`` with the
changes the OTLP specification makes to it:

- field names are lowerCamelCase (``resourceSpans``, ``startTimeUnixNano``);
- ``traceId``, ``spanId`` and ``parentSpanId`` (also in links) are lower-case hex strings
  (32 and 16 digits), not base64; an absent id is left out;
- enums (``kind``, ``status.code``) are integers;
- 64-bit integers (times, ``intValue``) are decimal strings; other ``bytes`` (``bytesValue``)
  stay base64.

Encoding goes through the SDK's own protobuf encoder (``encode_spans``), so spans are grouped
by resource and then by instrumentation scope exactly as the OTLP exporters send them.
Decoding accepts what the specification asks a receiver to accept: integers as numbers or
strings, enums as integers or names, and unknown fields (ignored).

Example::

    line = encode_spans_json(spans)            # one line, no newline
    request = decode_request_json(line)        # ExportTraceServiceRequest
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)
from opentelemetry.sdk.trace import ReadableSpan

__all__ = [
    "decode_request_dict",
    "decode_request_json",
    "encode_spans_dict",
    "encode_spans_json",
    "request_to_dict",
    "request_to_json",
]

# Hex digits of each id field: the byte length times two.
_ID_DIGITS = {"traceId": 32, "spanId": 16, "parentSpanId": 16}
# The same fields under their proto names, which the proto3 JSON parser also accepts.
_PROTO_NAMES = {"traceId": "trace_id", "spanId": "span_id", "parentSpanId": "parent_span_id"}
_HEX = re.compile(r"[0-9a-fA-F]*")


def encode_spans_dict(spans: Sequence[ReadableSpan]) -> dict[str, Any]:
    """Encode SDK spans as an OTLP/JSON ``ExportTraceServiceRequest`` object.

    Args:
        spans: ended SDK spans, from any number of resources and scopes.

    Returns:
        A JSON-ready dict: ``{"resourceSpans": [...]}``.
    """
    return request_to_dict(encode_spans(spans))


def encode_spans_json(spans: Sequence[ReadableSpan]) -> str:
    """Encode SDK spans as one compact OTLP/JSON line (without the trailing newline)."""
    return _dumps(encode_spans_dict(spans))


def request_to_dict(request: ExportTraceServiceRequest) -> dict[str, Any]:
    """Convert a protobuf ``ExportTraceServiceRequest`` to its OTLP/JSON object."""
    data: dict[str, Any] = json_format.MessageToDict(
        request,
        preserving_proto_field_name=False,
        use_integers_for_enums=True,
    )
    _rewrite_ids(data, _base64_to_hex)
    return data


def request_to_json(request: ExportTraceServiceRequest) -> str:
    """Convert a protobuf ``ExportTraceServiceRequest`` to one compact OTLP/JSON line."""
    return _dumps(request_to_dict(request))


def decode_request_json(
    line: str | bytes, *, any_id_length: bool = False
) -> ExportTraceServiceRequest:
    """Parse one OTLP/JSON trace request, e.g. a line of a Collector ``file`` exporter output.

    Args:
        line: the JSON text of one ``ExportTraceServiceRequest`` (surrounding whitespace,
            including the newline, is allowed).
        any_id_length: accept ids of any whole number of bytes (still hex), as protobuf
            input can carry them, for a receiver that rejects such spans one by one.

    Returns:
        The protobuf request.

    Raises:
        ValueError: the text is not JSON, not a trace request, or has an id that is not
            hex of the right length; the message names the place, e.g.
            ``resourceSpans[0].scopeSpans[0].spans[1].traceId``.
    """
    if isinstance(line, bytes):
        line = line.decode("utf-8")
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON: {exc}") from exc
    return _decode(data, any_id_length)


def decode_request_dict(data: Mapping[str, Any]) -> ExportTraceServiceRequest:
    """Like :func:`decode_request_json`, for an already parsed JSON object (not modified)."""
    return _decode(copy.deepcopy(dict(data)))


def _decode(data: Any, any_id_length: bool = False) -> ExportTraceServiceRequest:
    if not isinstance(data, dict):
        raise ValueError(f"an OTLP/JSON trace request must be a JSON object, got {data!r:.60}")
    _rewrite_ids(data, _hex_any_length_to_base64 if any_id_length else _hex_to_base64)
    request = ExportTraceServiceRequest()
    try:
        json_format.ParseDict(data, request, ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        raise ValueError(f"not an OTLP/JSON trace request: {exc}") from exc
    return request


def _dumps(data: dict[str, Any]) -> str:
    # Compact and UTF-8 like the Collector; allow_nan stays on for proto3's "NaN" strings only.
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def _items(obj: Mapping[str, Any], camel: str, snake: str) -> list[tuple[str, Any]]:
    """The (key, value) pairs of ``obj`` under either spelling of one field."""
    return [(key, obj[key]) for key in (camel, snake) if key in obj]


def _rewrite_ids(request: dict[str, Any], convert: Callable[[Any, str, int], str]) -> None:
    """Convert every id field in place with ``convert(value, path, hex_digits)``."""
    for rs_key, resource_spans in _items(request, "resourceSpans", "resource_spans"):
        for i, rs in _enumerate_dicts(resource_spans):
            for ss_key, scope_spans in _items(rs, "scopeSpans", "scope_spans"):
                for j, ss in _enumerate_dicts(scope_spans):
                    for k, span in _enumerate_dicts(ss.get("spans")):
                        path = f"{rs_key}[{i}].{ss_key}[{j}].spans[{k}]"
                        _rewrite_span_ids(
                            span, convert, path, ("traceId", "spanId", "parentSpanId")
                        )
                        for m, link in _enumerate_dicts(span.get("links")):
                            _rewrite_span_ids(
                                link, convert, f"{path}.links[{m}]", ("traceId", "spanId")
                            )


def _enumerate_dicts(value: Any) -> list[tuple[int, dict[str, Any]]]:
    # Anything that is not a list of objects is left for the protobuf parser to reject.
    if not isinstance(value, list):
        return []
    return [(i, item) for i, item in enumerate(value) if isinstance(item, dict)]


def _rewrite_span_ids(
    obj: dict[str, Any],
    convert: Callable[[Any, str, int], str],
    path: str,
    fields: tuple[str, ...],
) -> None:
    for camel in fields:
        for key in (camel, _PROTO_NAMES[camel]):
            if key in obj:
                obj[key] = convert(obj[key], f"{path}.{key}", _ID_DIGITS[camel])


def _base64_to_hex(value: Any, path: str, digits: int) -> str:
    return base64.b64decode(value).hex()


def _hex_any_length_to_base64(value: Any, path: str, digits: int) -> str:
    if isinstance(value, str) and len(value) % 2 == 0 and _HEX.fullmatch(value):
        return base64.b64encode(binascii.unhexlify(value)).decode("ascii")
    return _hex_to_base64(value, path, digits)  # not hex: its error


def _hex_to_base64(value: Any, path: str, digits: int) -> str:
    if value is None or value == "":
        return ""
    if not isinstance(value, str) or len(value) != digits or not _HEX.fullmatch(value):
        raise ValueError(f"{path}: expected {digits} hex digits, got {value!r}")
    try:
        raw = binascii.unhexlify(value)
    except binascii.Error as exc:  # pragma: no cover - the regex already checked
        raise ValueError(f"{path}: expected {digits} hex digits, got {value!r}") from exc
    return base64.b64encode(raw).decode("ascii")
