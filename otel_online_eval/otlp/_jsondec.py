"""OTLP/JSON trace requests to protobuf: the one decoder, for the sidecar and the tools.

OTLP/JSON is the proto3 JSON mapping of ``ExportTraceServiceRequest`` with the OTLP changes:
ids (``traceId``, ``spanId``, ``parentSpanId``, also in links) are hex strings, not base64.
What a receiver must accept, this accepts, as protobuf's own JSON parser does:

- field names in lowerCamelCase (``startTimeUnixNano``) or as in the ``.proto``
  (``start_time_unix_nano``); the same field under both names is an error;
- 64-bit (and 32-bit) integers as numbers or decimal strings, also in exponent form when the
  value is whole (``"1e3"``);
- doubles as numbers, numeric strings, or ``"NaN"``, ``"Infinity"``, ``"-Infinity"``;
- enums (``kind``, ``status.code``) as integers or names (an unknown name leaves the field
  unset, as protobuf's parser does when told to ignore unknown fields);
- ``bytesValue`` as base64, standard or URL-safe, padded or not;
- ``null`` for any field: the field's default;
- unknown fields: ignored (OTLP asks receivers to), though their names must be valid Unicode.

It is strict where protobuf must be: a lone surrogate (``"\\ud800"``) in a string, a number out
of its field's range, ``1e400`` (infinite) anywhere, JSON's non-standard ``NaN`` literals, or
messages nested more than 100 deep (protobuf's own limit, so that what is accepted here can be
forwarded as protobuf) are errors. Every error is a ``ValueError`` whose message names the
place and the problem, e.g. ``resourceSpans[0].scopeSpans[0].spans[2].kind: must be an enum
name or an int32, got inf``. Duplicate keys in one object are not detected (the last one
counts, as with Python's and Go's JSON readers).

The request is built straight from the parsed JSON (about 10 µs per span, against about 175 µs
through ``google.protobuf.json_format``); tests/test_otlp_json.py checks it against
``json_format.ParseDict`` on valid requests.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from otel_online_eval.otlp._ids import SPAN_ID_BYTES, TRACE_ID_BYTES, hex_id

__all__ = ["MAX_DEPTH", "decode_logs_json", "decode_request_dict", "decode_request_json"]

MAX_DEPTH = 100
"""Messages nested deeper than this (the request itself is 1) are refused, as protobuf does."""

Handler = Callable[[Any, Any], None]

_U32 = (1 << 32) - 1
_U64 = (1 << 64) - 1
_I32 = (-(1 << 31), (1 << 31) - 1)
_I64 = (-(1 << 63), (1 << 63) - 1)
_INT_TEXT = re.compile(r"[-+]?[0-9]+")
_NUMBER_TEXT = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?")
_SPECIAL_DOUBLES = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
_SURROGATE = re.compile("[\ud800-\udfff]")
_URLSAFE = str.maketrans("-_", "+/")


class _Invalid(Exception):
    """A problem at a place; the place is filled in as the exception travels up."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.path: list[str] = []

    def at(self, segment: str) -> _Invalid:
        if segment:
            self.path.append(segment)
        return self

    def text(self) -> str:
        path = "".join(reversed(self.path)).lstrip(".")
        text = f"{path}: {self.message}" if path else self.message
        if not text.isascii():  # a key with a lone surrogate: say it, in valid UTF-8
            text = text.encode("utf-8", "backslashreplace").decode("utf-8")
        return text


# -- values -------------------------------------------------------------------------------


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, float) and not math.isfinite(value):
        return f"a number out of range ({value})"
    return f"{value!r:.60}"


def _str(value: Any) -> str:
    if type(value) is not str:
        raise _Invalid(f"must be a string, got {_show(value)}")
    return value


def _bool(value: Any) -> bool:
    if value is True or value is False:
        return value
    raise _Invalid(f"must be true or false, got {_show(value)}")


def _whole(value: Any) -> int | None:
    """An integer from a JSON number or string, None if it is not one."""
    kind = type(value)
    if kind is int:
        return value  # type: ignore[no-any-return]
    if kind is str:
        if value.isdigit() and value.isascii():
            return int(value)
        if _INT_TEXT.fullmatch(value):
            return int(value)
        if _NUMBER_TEXT.fullmatch(value):
            value = float(value)
            kind = float
    if kind is float and value.is_integer():
        return int(value)
    return None


def _int_in(low: int, high: int, name: str) -> Callable[[Any], int]:
    article = "an" if name.startswith("i") else "a"

    def convert(value: Any) -> int:
        n = _whole(value)
        if n is None or not low <= n <= high:
            raise _Invalid(
                f"must be {article} {name} (a whole number or a decimal string, {low} to {high}), "
                f"got {_show(value)}"
            )
        return n

    return convert


_uint32 = _int_in(0, _U32, "uint32")
_uint64 = _int_in(0, _U64, "uint64")
_int32 = _int_in(*_I32, "int32")
_int64 = _int_in(*_I64, "int64")


def _double(value: Any) -> float:
    kind = type(value)
    if kind is float:
        if math.isfinite(value):
            return value  # type: ignore[no-any-return]
    elif kind is int:
        try:
            return float(value)
        except OverflowError:
            pass
    elif kind is str:
        special = _SPECIAL_DOUBLES.get(value)
        if special is not None:
            return special
        if _NUMBER_TEXT.fullmatch(value):
            number = float(value)
            if math.isfinite(number):
                return number
    raise _Invalid(
        'must be a finite number, a numeric string, "NaN", "Infinity" or "-Infinity", '
        f"got {_show(value)}"
    )


def _base64(value: Any) -> bytes:
    if type(value) is str:
        text = value.translate(_URLSAFE)
        try:
            return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        except (binascii.Error, ValueError):
            pass
    raise _Invalid(f"must be base64 (standard or URL-safe), got {_show(value)}")


def _enum(descriptor: Any) -> Callable[[Any], int | None]:
    names: dict[str, int] = {v.name: v.number for v in descriptor.values}
    low, high = _I32

    def convert(value: Any) -> int | None:
        if type(value) is str:
            number = names.get(value)
            if number is not None:
                return number
            if not _NUMBER_TEXT.fullmatch(value):
                return None  # an unknown name: left unset
        n = _whole(value)
        if n is None or not low <= n <= high or value is True or value is False:
            raise _Invalid(f"must be an enum name or an int32, got {_show(value)}")
        return n

    return convert


def _unknown(key: str) -> None:
    """An unknown field is ignored, but its name must be text (protobuf strings are UTF-8)."""
    if not key.isascii() and _SURROGATE.search(key):
        raise _Invalid("a key that is not valid Unicode (it holds a lone surrogate)")


def _array(value: Any) -> list[Any]:
    if type(value) is not list:
        raise _Invalid(f"must be an array, got {_show(value)}")
    return value


def _object(value: Any) -> dict[str, Any]:
    if type(value) is not dict:
        raise _Invalid(f"must be an object, got {_show(value)}")
    return value


def _index(items: list[Any], item: Any) -> str:
    for i, x in enumerate(items):
        if x is item:
            return f"[{i}]"
    return ""


def _upb_problem(exc: Exception) -> _Invalid:
    """protobuf's own refusal of a value we passed on (a string it cannot encode)."""
    if isinstance(exc, UnicodeEncodeError):
        char = exc.object[exc.start : exc.start + 1]
        return _Invalid(f"not valid Unicode: a lone surrogate {char!r} at character {exc.start}")
    return _Invalid(f"rejected by protobuf: {exc}")


# -- messages -----------------------------------------------------------------------------


def _fields(table: Mapping[str, Handler], aliases: Mapping[str, str]) -> Handler:
    """A decoder of one message kind: ``table`` maps JSON keys (both spellings) to handlers."""
    alias_keys = frozenset(aliases)

    def decode(target: Any, value: Any) -> None:
        d = _object(value)
        key = ""
        try:
            for key, item in d.items():
                handler = table.get(key)
                if handler is None:
                    _unknown(key)
                elif item is not None:
                    handler(target, item)
        except _Invalid as exc:
            raise exc.at("." + key) from None
        except (ValueError, TypeError) as exc:
            raise _upb_problem(exc).at("." + key) from None
        if not alias_keys.isdisjoint(d):
            for snake, camel in aliases.items():
                if snake in d and camel in d:
                    raise _Invalid(f"has both {camel!r} and {snake!r}: one field, two names")

    return decode


def _table(
    fields: Mapping[str, tuple[str, Handler]],
) -> tuple[dict[str, Handler], dict[str, str]]:
    """The dispatch table and the aliases for ``{camelName: (snake_name, handler)}``."""
    table: dict[str, Handler] = {}
    aliases: dict[str, str] = {}
    for camel, (snake, handler) in fields.items():
        table[camel] = handler
        if snake != camel:
            table[snake] = handler
            aliases[snake] = camel
    return table, aliases


def _scalar(field: str, convert: Callable[[Any], Any]) -> tuple[str, Handler]:
    def handle(target: Any, value: Any) -> None:
        setattr(target, field, convert(value))

    return field, handle


def _enum_field(field: str, descriptor: Any) -> tuple[str, Handler]:
    convert = _enum(descriptor)

    def handle(target: Any, value: Any) -> None:
        number = convert(value)
        if number is not None:
            setattr(target, field, number)

    return field, handle


def _id(field: str, size: int | None) -> tuple[str, Handler]:
    def handle(target: Any, value: Any) -> None:
        try:
            raw = hex_id(value, field, size)
        except ValueError as exc:
            raise _Invalid(str(exc)) from None
        setattr(target, field, raw)

    return field, handle


def _strings(field: str) -> tuple[str, Handler]:
    def handle(target: Any, value: Any) -> None:
        items = _array(value)
        out = getattr(target, field)
        item = None
        try:
            for item in items:
                out.append(_str(item))
        except _Invalid as exc:
            raise exc.at(_index(items, item)) from None

    return field, handle


def _message(field: str, decode: Handler) -> tuple[str, Handler]:
    def handle(target: Any, value: Any) -> None:
        sub = getattr(target, field)
        sub.SetInParent()
        decode(sub, value)

    return field, handle


def _repeated(field: str, decode: Handler) -> tuple[str, Handler]:
    def handle(target: Any, value: Any) -> None:
        items = _array(value)
        add = getattr(target, field).add
        item = None
        try:
            for item in items:
                decode(add(), item)
        except _Invalid as exc:
            raise exc.at(_index(items, item)) from None

    return field, handle


def _attributes(depth: int) -> tuple[str, Handler]:
    """``attributes`` of a message whose KeyValues sit at message depth ``depth``."""

    def handle(target: Any, value: Any) -> None:
        _key_values(target.attributes, value, depth)

    return "attributes", handle


def _key_values(target: Any, value: Any, depth: int) -> None:
    items = _array(value)
    if items and depth > MAX_DEPTH:
        raise _Invalid(f"nested more than {MAX_DEPTH} messages deep")
    add = target.add
    item = None
    try:
        for item in items:
            _key_value(add(), item, depth)
    except _Invalid as exc:
        raise exc.at(_index(items, item)) from None


def _key_value(target: Any, value: Any, depth: int) -> None:
    if type(value) is not dict:
        raise _Invalid(f"must be an object, got {_show(value)}")
    key = ""
    try:
        for key, item in value.items():
            if key == "key":
                if item is not None:
                    target.key = _str(item)
            elif key == "value":
                if item is not None:
                    _any(target.value, item, depth + 1)
            elif key == "keyStrindex" or key == "key_strindex":
                if item is not None:
                    target.key_strindex = _int32(item)
            else:
                _unknown(key)
    except _Invalid as exc:
        raise exc.at("." + key) from None
    except (ValueError, TypeError) as exc:
        raise _upb_problem(exc).at("." + key) from None


# AnyValue's members under both names -> one name each (the oneof allows one).
_ANY_KINDS = {
    name: camel
    for camel, snake in (
        ("stringValue", "string_value"),
        ("boolValue", "bool_value"),
        ("intValue", "int_value"),
        ("doubleValue", "double_value"),
        ("arrayValue", "array_value"),
        ("kvlistValue", "kvlist_value"),
        ("bytesValue", "bytes_value"),
        ("stringValueStrindex", "string_value_strindex"),
    )
    for name in (camel, snake)
}


def _any(target: Any, value: Any, depth: int) -> None:
    """An AnyValue at message depth ``depth`` (present in its parent even when empty)."""
    d = _object(value)
    if depth > MAX_DEPTH:
        raise _Invalid(f"nested more than {MAX_DEPTH} messages deep")
    if len(d) == 1:  # most attributes: a string alone
        text = d.get("stringValue")
        if type(text) is str:
            target.string_value = text
            return
    target.SetInParent()
    found = ""
    key = ""
    try:
        for key, item in d.items():
            kind = _ANY_KINDS.get(key)
            if kind is None:
                _unknown(key)
                continue
            if item is None:
                continue
            if found:
                key = ""
                raise _Invalid(f"holds both {found!r} and {kind!r}; an AnyValue holds one value")
            found = kind
            if kind == "stringValue":
                target.string_value = _str(item)
            elif kind == "intValue":
                target.int_value = _int64(item)
            elif kind == "boolValue":
                target.bool_value = _bool(item)
            elif kind == "doubleValue":
                target.double_value = _double(item)
            elif kind == "arrayValue":
                target.array_value.SetInParent()
                _values(item, depth + 1, lambda v: _any_values(target.array_value.values, v, depth))
            elif kind == "kvlistValue":
                target.kvlist_value.SetInParent()
                _values(
                    item, depth + 1, lambda v: _key_values(target.kvlist_value.values, v, depth + 2)
                )
            elif kind == "bytesValue":
                target.bytes_value = _base64(item)
            else:
                target.string_value_strindex = _int32(item)
    except _Invalid as exc:
        raise exc.at("." + key if key else "") from None
    except (ValueError, TypeError) as exc:
        raise _upb_problem(exc).at("." + key) from None


def _values(value: Any, depth: int, decode: Callable[[Any], None]) -> None:
    """An ArrayValue or KeyValueList (``{"values": [...]}``) at message depth ``depth``."""
    d = _object(value)
    if depth > MAX_DEPTH:
        raise _Invalid(f"nested more than {MAX_DEPTH} messages deep")
    key = ""
    try:
        for key, item in d.items():
            if key == "values":
                if item is not None:
                    decode(item)
            else:
                _unknown(key)
    except _Invalid as exc:
        raise exc.at("." + key) from None


def _any_values(target: Any, value: Any, depth: int) -> None:
    """The AnyValues of an ArrayValue that sits under an AnyValue at ``depth``."""
    items = _array(value)
    add = target.add
    item = None
    try:
        for item in items:
            _any(add(), item, depth + 2)
    except _Invalid as exc:
        raise exc.at(_index(items, item)) from None


def _span_decoder(id_size: bool) -> Handler:
    """Spans (with their events and links) at depth 4; ``id_size``: check the ids' length."""
    trace, span = (TRACE_ID_BYTES, SPAN_ID_BYTES) if id_size else (None, None)
    event = _fields(
        *_table(
            {
                "timeUnixNano": _scalar("time_unix_nano", _uint64),
                "name": _scalar("name", _str),
                "attributes": _attributes(6),
                "droppedAttributesCount": _scalar("dropped_attributes_count", _uint32),
            }
        )
    )
    link = _fields(
        *_table(
            {
                "traceId": _id("trace_id", trace),
                "spanId": _id("span_id", span),
                "traceState": _scalar("trace_state", _str),
                "attributes": _attributes(6),
                "droppedAttributesCount": _scalar("dropped_attributes_count", _uint32),
                "flags": _scalar("flags", _uint32),
            }
        )
    )
    status = _fields(
        *_table(
            {
                "message": _scalar("message", _str),
                "code": _enum_field("code", trace_pb2.Status.StatusCode.DESCRIPTOR),
            }
        )
    )
    return _fields(
        *_table(
            {
                "traceId": _id("trace_id", trace),
                "spanId": _id("span_id", span),
                "traceState": _scalar("trace_state", _str),
                "parentSpanId": _id("parent_span_id", span),
                "flags": _scalar("flags", _uint32),
                "name": _scalar("name", _str),
                "kind": _enum_field("kind", trace_pb2.Span.SpanKind.DESCRIPTOR),
                "startTimeUnixNano": _scalar("start_time_unix_nano", _uint64),
                "endTimeUnixNano": _scalar("end_time_unix_nano", _uint64),
                "attributes": _attributes(5),
                "droppedAttributesCount": _scalar("dropped_attributes_count", _uint32),
                "events": _repeated("events", event),
                "droppedEventsCount": _scalar("dropped_events_count", _uint32),
                "links": _repeated("links", link),
                "droppedLinksCount": _scalar("dropped_links_count", _uint32),
                "status": _message("status", status),
            }
        )
    )


def _resource_and_scope() -> tuple[Handler, Handler]:
    """Decoders of a Resource (at depth 3) and an InstrumentationScope (depth 4), which every
    signal's request shares."""
    entity_ref = _fields(
        *_table(
            {
                "schemaUrl": _scalar("schema_url", _str),
                "type": _scalar("type", _str),
                "idKeys": _strings("id_keys"),
                "descriptionKeys": _strings("description_keys"),
            }
        )
    )
    resource = _fields(
        *_table(
            {
                "attributes": _attributes(4),
                "droppedAttributesCount": _scalar("dropped_attributes_count", _uint32),
                "entityRefs": _repeated("entity_refs", entity_ref),
            }
        )
    )
    scope = _fields(
        *_table(
            {
                "name": _scalar("name", _str),
                "version": _scalar("version", _str),
                "attributes": _attributes(5),
                "droppedAttributesCount": _scalar("dropped_attributes_count", _uint32),
            }
        )
    )
    return resource, scope


def _request_decoder(id_size: bool) -> Handler:
    resource, scope = _resource_and_scope()
    scope_spans = _fields(
        *_table(
            {
                "scope": _message("scope", scope),
                "spans": _repeated("spans", _span_decoder(id_size)),
                "schemaUrl": _scalar("schema_url", _str),
            }
        )
    )
    resource_spans = _fields(
        *_table(
            {
                "resource": _message("resource", resource),
                "scopeSpans": _repeated("scope_spans", scope_spans),
                "schemaUrl": _scalar("schema_url", _str),
            }
        )
    )
    return _fields(*_table({"resourceSpans": _repeated("resource_spans", resource_spans)}))


def _body(target: Any, value: Any) -> None:
    _any(target, value, 5)


def _logs_decoder() -> Handler:
    """ExportLogsServiceRequest: log records at depth 4, their body at 5. Ids of any length
    are decoded (a receiver checks them record by record)."""
    resource, scope = _resource_and_scope()
    record = _fields(
        *_table(
            {
                "timeUnixNano": _scalar("time_unix_nano", _uint64),
                "observedTimeUnixNano": _scalar("observed_time_unix_nano", _uint64),
                "severityNumber": _enum_field(
                    "severity_number", logs_pb2.SeverityNumber.DESCRIPTOR
                ),
                "severityText": _scalar("severity_text", _str),
                "body": _message("body", _body),
                "attributes": _attributes(5),
                "droppedAttributesCount": _scalar("dropped_attributes_count", _uint32),
                "flags": _scalar("flags", _uint32),
                "traceId": _id("trace_id", None),
                "spanId": _id("span_id", None),
                "eventName": _scalar("event_name", _str),
            }
        )
    )
    scope_logs = _fields(
        *_table(
            {
                "scope": _message("scope", scope),
                "logRecords": _repeated("log_records", record),
                "schemaUrl": _scalar("schema_url", _str),
            }
        )
    )
    resource_logs = _fields(
        *_table(
            {
                "resource": _message("resource", resource),
                "scopeLogs": _repeated("scope_logs", scope_logs),
                "schemaUrl": _scalar("schema_url", _str),
            }
        )
    )
    return _fields(*_table({"resourceLogs": _repeated("resource_logs", resource_logs)}))


_DECODERS = {True: _request_decoder(True), False: _request_decoder(False)}
_LOGS_DECODER = _logs_decoder()


# -- entry points -------------------------------------------------------------------------


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number (a double field takes the string {name!r})")


_JSON = json.JSONDecoder(parse_constant=_no_constant)


def decode_request_dict(data: Any, *, any_id_length: bool = False) -> ExportTraceServiceRequest:
    """Decode a parsed OTLP/JSON trace request (``data`` is not modified).

    Args:
        data: what ``json.loads`` made of the request.
        any_id_length: accept hex ids of any number of bytes, as protobuf input can carry
            them, for a receiver that rejects such spans one by one; otherwise an id that is
            not empty must have its size (16 bytes for trace ids, 8 for span ids).

    Raises:
        ValueError: not an OTLP/JSON trace request; the message names the place.
    """
    if type(data) is not dict:
        raise ValueError(f"an OTLP/JSON trace request must be a JSON object, got {_show(data)}")
    request = ExportTraceServiceRequest()
    try:
        _DECODERS[not any_id_length](request, data)
    except _Invalid as exc:
        raise ValueError(exc.text()) from None
    return request


def decode_request_json(
    text: str | bytes, *, any_id_length: bool = False
) -> ExportTraceServiceRequest:
    """Parse one OTLP/JSON trace request, e.g. an HTTP body or a line of a Collector file.

    Args:
        text: the JSON text (UTF-8 when bytes); whitespace around it, such as the line's
            newline, is allowed.
        any_id_length: as for :func:`decode_request_dict`.

    Raises:
        ValueError: not UTF-8, not JSON, or not an OTLP/JSON trace request; the message
            names the place, e.g. ``resourceSpans[0].scopeSpans[0].spans[1].traceId``.
    """
    return decode_request_dict(_parse(text), any_id_length=any_id_length)


def decode_logs_json(text: str | bytes) -> ExportLogsServiceRequest:
    """Parse one OTLP/JSON logs request (``ExportLogsServiceRequest``), e.g. an HTTP body.

    The same mapping as for traces: hex ``traceId`` and ``spanId`` (of any length, or
    empty: a log record need not belong to a span), both field spellings, enums
    (``severityNumber``) as names or numbers, the ``body`` an AnyValue.

    Raises:
        ValueError: not UTF-8, not JSON, or not an OTLP/JSON logs request; the message names
            the place, e.g. ``resourceLogs[0].scopeLogs[0].logRecords[1].spanId``.
    """
    data = _parse(text)
    if type(data) is not dict:
        raise ValueError(f"an OTLP/JSON logs request must be a JSON object, got {_show(data)}")
    request = ExportLogsServiceRequest()
    try:
        _LOGS_DECODER(request, data)
    except _Invalid as exc:
        raise ValueError(exc.text()) from None
    return request


def _parse(text: str | bytes) -> Any:
    if not isinstance(text, str):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    try:
        return _JSON.decode(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON: {exc}") from None
    except RecursionError:
        raise ValueError("not valid JSON: nested too deeply to read") from None
    except ValueError as exc:  # a NaN literal, an integer of more than 4300 digits
        raise ValueError(f"not valid JSON: {exc}") from None
