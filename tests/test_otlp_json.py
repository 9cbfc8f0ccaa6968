"""The OTLP/JSON decoder and encoder against protobuf's own JSON mapping (``json_format``):
the same messages from valid input in every spelling, errors that name the place otherwise,
and the encoder's objects equal to the library's, object for object."""

from __future__ import annotations

import base64
import copy
import json
import math
from typing import Any

import pytest
from google.protobuf import json_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState

from otel_online_eval.otlp import (
    decode_logs_json,
    decode_request_dict,
    decode_request_json,
    encode_spans_dict,
    encode_spans_json,
    request_to_dict,
)
from otel_online_eval.otlp._jsondec import MAX_DEPTH
from tests.otlp_strategies import json_spellings, requests, to_base64_ids, to_otlp_json

SETTINGS = settings(
    derandomize=True,
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _library(data: Any) -> ExportTraceServiceRequest:
    """What protobuf's parser makes of OTLP/JSON (ids back to base64 first: OTLP's change)."""
    try:
        proto3_json = to_base64_ids(data)
    except ValueError as exc:  # an id that is not hex
        raise json_format.ParseError(str(exc)) from exc
    return json_format.ParseDict(
        proto3_json, ExportTraceServiceRequest(), ignore_unknown_fields=True
    )


def _same(a: ExportTraceServiceRequest, b: ExportTraceServiceRequest) -> bool:
    # Serialized: NaN doubles compare unequal as messages.
    return a.SerializeToString(deterministic=True) == b.SerializeToString(deterministic=True)


# -- decoding: the library's messages ---------------------------------------------------------


@SETTINGS
@given(requests(), st.data())
def test_decoder_matches_the_library_on_every_spelling(
    request: ExportTraceServiceRequest, pick: st.DataObject
) -> None:
    data = json_spellings(request, pick)
    before = copy.deepcopy(data)
    assert _same(_library(data), request)  # the spelling is valid for the library too
    assert _same(decode_request_dict(data), request)
    assert data == before  # not modified
    text = json.dumps(data)
    assert _same(decode_request_json(text), request)
    assert _same(decode_request_json(text.encode() + b"\n", any_id_length=True), request)


def _schema_paths() -> list[tuple[list[str], Any]]:
    """Every (message type, field) of the request schema, with a path of JSON keys to it."""
    out: list[tuple[list[str], Any]] = []
    seen: set[str] = set()

    def walk(descriptor: Any, path: list[str]) -> None:
        if descriptor.full_name in seen:
            return
        seen.add(descriptor.full_name)
        for field in descriptor.fields:
            out.append((path, field))
            if field.message_type is not None:
                walk(field.message_type, [*path, field.json_name])

    walk(ExportTraceServiceRequest.DESCRIPTOR, [])
    return out


def _sample(field: Any) -> Any:
    if field.name in ("trace_id",):
        return "ab" * 16
    if field.name in ("span_id", "parent_span_id"):
        return "cd" * 8
    kinds = {
        field.TYPE_STRING: "x",
        field.TYPE_BYTES: "eHk=",
        field.TYPE_BOOL: True,
        field.TYPE_DOUBLE: 1.5,
        field.TYPE_ENUM: 1,
        field.TYPE_MESSAGE: {},
    }
    value = kinds.get(field.type, "7" if field.type in (3, 4, 6, 16, 18) else 7)
    return [value] if field.is_repeated else value


@pytest.mark.parametrize("proto_names", [False, True])
def test_every_field_of_the_schema_is_decoded(proto_names: bool) -> None:
    """A field added to the protos later and missed here fails this test (field by field)."""
    repeated_on_path = {"resourceSpans", "scopeSpans", "spans", "events", "links", "attributes"}
    repeated_on_path |= {"values", "entityRefs"}
    for path, field in _schema_paths():
        leaf: dict[str, Any] = {(field.name if proto_names else field.json_name): _sample(field)}
        data: Any = leaf
        for key in reversed(path):
            data = {key: [data] if key in repeated_on_path else data}
        assert _same(decode_request_dict(data), _library(data)), (path, field.name)


# -- decoding: the cases the tools' tests always had -------------------------------------------


def _base() -> dict[str, Any]:
    provider = TracerProvider(resource=Resource({"service.name": "s", "n": 3}))
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("app", "1.0")
    with tracer.start_as_current_span("root", kind=SpanKind.SERVER) as root:
        root.set_attribute("int", 5)
        with tracer.start_as_current_span("chat", attributes={"s": "v", "f": 0.5}) as chat:
            chat.add_event("e", {"k": "v"})
    provider.shutdown()
    return encode_spans_dict(exporter.get_finished_spans())


def _span0(d: dict[str, Any]) -> dict[str, Any]:
    span: dict[str, Any] = d["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    return span


EDITS = [
    lambda s: s.update(traceId=s["traceId"].upper()),
    lambda s: s.update(trace_id=s.pop("traceId")),
    lambda s: s.update(kind="SPAN_KIND_SERVER"),
    lambda s: s.update(kind="SPAN_KIND_FROM_THE_FUTURE"),
    lambda s: s.update(kind=None),
    lambda s: s.update(kind="3"),
    lambda s: s.update(kind=2.0),
    lambda s: s.update(status={"code": "STATUS_CODE_ERROR", "message": "m"}),
    lambda s: s.update(status={"code": 2}),
    lambda s: s.update(status=None),
    lambda s: s.update(endTimeUnixNano=12345),
    lambda s: s.update(endTimeUnixNano="1e3"),
    lambda s: s.update(endTimeUnixNano=1e3),
    lambda s: s.update(endTimeUnixNano="-5"),
    lambda s: s.update(endTimeUnixNano=1.5),
    lambda s: s.update(endTimeUnixNano=2**64),
    lambda s: s.update(flags=True),
    lambda s: s.update(spanId="zz" * 8),
    lambda s: s.update(parentSpanId=""),
    lambda s: s.update(name=5),
    lambda s: s.update(attributes=[{"key": "b", "value": {"bytesValue": "aGk="}}]),
    lambda s: s.update(attributes=[{"key": "b", "value": {"bytesValue": "aGk"}}]),
    lambda s: s.update(attributes=[{"key": "b", "value": {"bytesValue": "-_8"}}]),
    lambda s: s.update(attributes=[{"key": "d", "value": {"doubleValue": "NaN"}}]),
    lambda s: s.update(attributes=[{"key": "d", "value": {"doubleValue": "-Infinity"}}]),
    lambda s: s.update(attributes=[{"key": "d", "value": {"doubleValue": "2.5e3"}}]),
    lambda s: s.update(attributes=[{"key": "d", "value": {"doubleValue": 3}}]),
    lambda s: s.update(attributes=[{"key": "i", "value": {"intValue": "-42"}}]),
    lambda s: s.update(attributes=[{"key": "i", "value": {"intValue": 2**70}}]),
    lambda s: s.update(attributes=[{"key": "e", "value": {}}]),
    lambda s: s.update(attributes=[{"key": "e"}]),
    lambda s: s.update(attributes=[{"key": "n", "value": None}]),
    lambda s: s.update(attributes=[{"key": "s", "value": {"string_value": "snake"}}]),
    lambda s: s.update(
        attributes=[{"key": "two", "value": {"stringValue": "a", "boolValue": True}}]
    ),
    lambda s: s.update(attributes=[{"key": "null-member", "value": {"stringValue": None}}]),
    lambda s: s.update(
        attributes=[
            {
                "key": "deep",
                "value": {
                    "kvlistValue": {
                        "values": [
                            {"key": "x", "value": {"arrayValue": {"values": [{"intValue": 1}]}}}
                        ]
                    }
                },
            }
        ]
    ),
    lambda s: s.update(attributes=[{"key": "a", "value": {"arrayValue": {}}}]),
    lambda s: s.update(attributes=[None]),
    lambda s: s.update(events=[{"timeUnixNano": "7", "name": "e", "attributes": []}]),
    lambda s: s.update(links=[{"traceId": "1" * 32, "spanId": "2" * 16, "flags": 256}]),
    lambda s: s.update(links="nope"),
    lambda s: s.update(droppedAttributesCount=-1),
    lambda s: s.update(newSpanField={"x": [1]}),
]


def _variants() -> list[Any]:
    base = _base()
    out: list[Any] = [base]
    for edit in EDITS:
        d = copy.deepcopy(base)
        edit(_span0(d))
        out.append(d)
    d = copy.deepcopy(base)
    d["resourceSpans"][0]["resource"] = None
    out.append(d)
    d = copy.deepcopy(base)
    d["resourceSpans"][0]["scopeSpans"][0]["scope"] = {"name": "s", "version": 3}
    out.append(d)
    out.extend([{}, {"resourceSpans": []}, {"resourceSpans": None}, {"resource_spans": []}])
    return out


@pytest.mark.parametrize("variant", _variants())
def test_decoder_accepts_what_the_library_accepts_and_refuses_the_rest(variant: Any) -> None:
    try:
        expected = _library(variant)
    except json_format.ParseError:
        with pytest.raises(ValueError):
            decode_request_dict(variant)
        return
    assert _same(decode_request_dict(variant), expected)


# -- decoding: errors name the place -----------------------------------------------------------

SPAN = '{"resourceSpans":[{"scopeSpans":[{"spans":[%s]}]}]}'
ATTR = SPAN % '{"attributes":[{"key":"k","value":%s}]}'
AT_SPAN = "resourceSpans[0].scopeSpans[0].spans[0]"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # The bodies, which made protobuf's parser raise OverflowError / SystemError.
        (SPAN % '{"kind":1e400}', f"{AT_SPAN}.kind: must be an enum name or an int32, got a "),
        (SPAN % '{"status":{"code":1e400}}', f"{AT_SPAN}.status.code: must be an enum name"),
        ('{"resourceSpans\\ud800":[]}', "resourceSpans\\ud800: a key that is not valid Unicode"),
        (SPAN % '{"startTimeUnixNano":1e400}', f"{AT_SPAN}.startTimeUnixNano: must be a uint64"),
        (SPAN % '{"name":"a\\udc00"}', f"{AT_SPAN}.name: not valid Unicode: a lone surrogate"),
        (SPAN % '{"x\\ud800y":1}', f"{AT_SPAN}.x\\ud800y: a key that is not valid Unicode"),
        (ATTR % '{"doubleValue":1e400}', f"{AT_SPAN}.attributes[0].value.doubleValue: must be"),
        (ATTR % '{"doubleValue":NaN}', "not valid JSON: NaN is not a JSON number"),
        (ATTR % '{"intValue":"12 "}', f"{AT_SPAN}.attributes[0].value.intValue: must be an int64"),
        (ATTR % '{"boolValue":"true"}', "value.boolValue: must be true or false, got 'true'"),
        (ATTR % '{"bytesValue":"a!b="}', "value.bytesValue: must be base64"),
        (
            ATTR % '{"stringValue":"a","intValue":1}',
            "value: holds both 'stringValue' and 'intValue'",
        ),
        (SPAN % '{"flags":4294967296}', f"{AT_SPAN}.flags: must be a uint32"),
        (SPAN % '{"kind":true}', f"{AT_SPAN}.kind: must be an enum name or an int32, got true"),
        (SPAN % '{"spanId":"%s","span_id":"%s"}' % ("a" * 16, "b" * 16), "has both 'spanId'"),
        (SPAN % '{"traceId":"0011"}', f"{AT_SPAN}.traceId: trace_id must be empty or 16 bytes"),
        (SPAN % '{"traceId":"00 1"}', f"{AT_SPAN}.traceId: trace_id must be 32 hex digits"),
        (SPAN % "null", f"{AT_SPAN}: must be an object, got null"),
        ('{"resourceSpans":{}}', "resourceSpans: must be an array, got an object"),
        ("[]", "an OTLP/JSON trace request must be a JSON object, got an array"),
        ("{", "not valid JSON: Expecting property name"),
        ("[" * 100_000, "not valid JSON"),
        (b'{"resourceSpans":"\xff"}', "not UTF-8 text: invalid start byte at byte 18"),
        ("1" * 5000, "not valid JSON"),
    ],
)
def test_decoder_errors_name_the_place_and_the_problem(text: str | bytes, message: str) -> None:
    with pytest.raises(ValueError) as raised:
        decode_request_json(text)
    assert message in str(raised.value)
    str(raised.value).encode("utf-8")  # a message a protobuf Status can carry


def test_ids_of_any_length_are_left_to_the_span_check_when_asked() -> None:
    text = SPAN % '{"traceId":"0011","spanId":"","parentSpanId":"abcdef"}'
    span = decode_request_json(text, any_id_length=True).resource_spans[0].scope_spans[0].spans[0]
    assert (span.trace_id, span.span_id, span.parent_span_id) == (b"\x00\x11", b"", b"\xab\xcd\xef")
    with pytest.raises(ValueError, match=r"spans\[0\]\.traceId: trace_id must be hex digits"):
        decode_request_json(SPAN % '{"traceId":"001"}', any_id_length=True)


def _nested(levels: int) -> dict[str, Any]:
    """A request whose deepest message is ``levels`` deep (the request is 1): AnyValue arrays."""
    # request > resourceSpans > scopeSpans > spans > attributes > value: an AnyValue at 6,
    # and each arrayValue around it two more (ArrayValue, AnyValue).
    wraps, odd = divmod(levels - 6, 2)
    value: dict[str, Any] = {"arrayValue": {}} if odd else {}
    for _ in range(wraps):
        value = {"arrayValue": {"values": [value]}}
    return json.loads(SPAN % json.dumps({"attributes": [{"key": "k", "value": value}]}))


def test_nesting_is_bounded_as_protobuf_bounds_it() -> None:
    for levels in (99, 100):
        request = decode_request_dict(_nested(levels))
        assert _same(request, _library(_nested(levels)))
        # ...and what is accepted can be forwarded: protobuf parses it back.
        assert _same(ExportTraceServiceRequest.FromString(request.SerializeToString()), request)
    for levels in (101, 102, 300):
        with pytest.raises(ValueError, match=f"nested more than {MAX_DEPTH} messages deep"):
            decode_request_dict(_nested(levels))
        with pytest.raises(json_format.ParseError, match="too deep"):
            _library(_nested(levels))


# -- encoding: the library's objects -----------------------------------------------------------

VALUES: dict[str, Any] = {
    "str": "hé",
    "empty str": "",
    "bool": True,
    "int": -(2**63),
    "big int": 2**63 - 1,
    "float": 0.25,
    "nan": math.nan,
    "inf": -math.inf,
    "strs": ("a", ""),
    "bools": (True, False),
    "ints": (1, -2, 3),
    "floats": (1.5, 2.0),
    "empty": (),
}


def _sdk_spans() -> list[ReadableSpan]:
    """Real SDK spans with every feature the encoders write."""
    exporter = InMemorySpanExporter()
    resources = [Resource({"service.name": "a", **VALUES}, "https://schema/1"), Resource({})]
    for resource in resources:
        provider = TracerProvider(resource=resource)
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        scoped = provider.get_tracer("scope.a", "1.2.3", "https://schema/s", {"scope.attr": 7})
        plain = provider.get_tracer("scope.b")
        remote = SpanContext(0xABC, 0xDEF, True, TraceFlags(1), TraceState([("k", "v")]))
        link = Link(SpanContext(0x123, 0x456, False, TraceFlags(0)), {"l": "v", "n": 2})
        with scoped.start_as_current_span(
            "root", kind=SpanKind.SERVER, attributes=VALUES, links=[link]
        ) as root:
            root.add_event("started", {"at": 1, "list": ("x",)})
            with plain.start_as_current_span("child", kind=SpanKind.CLIENT) as child:
                child.set_status(Status(StatusCode.ERROR, "bad answer"))
                try:
                    raise ValueError("boom")
                except ValueError as exc:
                    child.record_exception(exc)
            with scoped.start_as_current_span("ok", kind=SpanKind.PRODUCER) as ok:
                ok.set_status(Status(StatusCode.OK))
        from opentelemetry import context, trace

        token = context.attach(trace.set_span_in_context(trace.NonRecordingSpan(remote)))
        try:
            with plain.start_as_current_span("remote child", kind=SpanKind.CONSUMER):
                pass
        finally:
            context.detach(token)
        provider.shutdown()
    return list(exporter.get_finished_spans())


def test_encoder_matches_the_library_object_for_object() -> None:
    spans = _sdk_spans()
    expected = json.loads(json.dumps(to_otlp_json(encode_spans(spans))))
    got = encode_spans_dict(spans)
    assert json.dumps(got, sort_keys=True) == json.dumps(expected, sort_keys=True)
    assert json.dumps(request_to_dict(encode_spans(spans)), sort_keys=True) == json.dumps(
        expected, sort_keys=True
    )
    line = encode_spans_json(spans)
    assert "\n" not in line
    assert _same(decode_request_json(line), encode_spans(spans))
    assert encode_spans_dict([]) == {}


def test_encoder_drops_what_the_sdk_drops_and_writes_valid_utf8() -> None:
    [span] = _spans_with({"ok": 1, "huge": 2**64, "nested huge": (1, 2**70), "bad": "a\ud800b"})
    sdk = encode_spans([span])  # the SDK leaves out the values protobuf cannot hold
    kept = {kv.key for kv in sdk.resource_spans[0].scope_spans[0].spans[0].attributes}
    assert kept == {"ok"}
    line = encode_spans_json([span])
    attrs = _span0(json.loads(line))["attributes"]
    assert {kv["key"] for kv in attrs} == {"ok", "bad"}  # the string is kept, made valid
    assert {"key": "bad", "value": {"stringValue": "a\ufffdb"}} in attrs
    line.encode("utf-8")


def _spans_with(attributes: dict[str, Any]) -> list[ReadableSpan]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    # BoundedAttributes keeps ints of any size; the encoders decide.
    with provider.get_tracer("t").start_as_current_span("s") as span:
        for key, value in attributes.items():
            span.set_attribute(key, value)
    provider.shutdown()
    return list(exporter.get_finished_spans())


def _logs_request() -> Any:
    """A logs request as the SDK's OTLP exporters encode it: records in and out of spans."""
    from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor

    memory = InMemoryLogRecordExporter()
    provider = LoggerProvider(resource=Resource.create({"service.name": "logs"}))
    provider.add_log_record_processor(SimpleLogRecordProcessor(memory))
    logger = provider.get_logger("json.logs", "1.0")
    with TracerProvider().get_tracer("t").start_as_current_span("s"):
        logger.emit(
            event_name="gen_ai.choice",
            body={"index": 0, "message": {"content": "hi", "parts": [1, 2.5, True]}},
            attributes={"gen_ai.system": "openai"},
        )
    logger.emit(body=b"\x00\x01", severity_text="WARN")
    provider.shutdown()
    return encode_logs(memory.get_finished_logs())


def _hex_ids(data: Any) -> Any:
    """protobuf's JSON (base64 ids) made OTLP/JSON (hex ids)."""
    if isinstance(data, dict):
        return {
            k: (base64.b64decode(v).hex() if k in ("traceId", "spanId") else _hex_ids(v))
            for k, v in data.items()
        }
    if isinstance(data, list):
        return [_hex_ids(v) for v in data]
    return data


def test_logs_request_round_trips_through_otlp_json() -> None:
    request = _logs_request()
    text = json.dumps(_hex_ids(json_format.MessageToDict(request)))
    decoded = decode_logs_json(text)
    assert decoded == request
    record = decoded.resource_logs[0].scope_logs[0].log_records[0]
    assert record.event_name == "gen_ai.choice" and len(record.span_id) == 8


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ("[]", "an OTLP/JSON logs request must be a JSON object, got an array"),
        (
            '{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"spanId": "xyz"}]}]}]}',
            "resourceLogs[0].scopeLogs[0].logRecords[0].spanId: span_id must be hex digits",
        ),
        (
            '{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"body": {"intValue": "x"}}]}]}]}',
            "resourceLogs[0].scopeLogs[0].logRecords[0].body.intValue: must be an int64",
        ),
        ('{"resourceLogs": [', "not valid JSON"),
    ],
)
def test_logs_json_errors_name_the_place(body: str, problem: str) -> None:
    with pytest.raises(ValueError) as info:
        decode_logs_json(body)
    assert str(info.value).startswith(problem)
