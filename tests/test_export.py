"""Exporters end to end: real SDK spans through each built exporter to real receivers, the
OTLP/JSON encoding, and the ``export:`` config errors."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from otel_online_eval._errors import ConfigError
from otel_online_eval._validate import Issues, Reader
from otel_online_eval.export import (
    BatchConfig,
    ConsoleExportConfig,
    ExportConfig,
    FileExportConfig,
    OtlpExportConfig,
    OtlpJsonFileExporter,
    build_exporter,
    build_span_processor,
    read_export_config,
    resolve_protocol,
)
from otel_online_eval.otlp_json import (
    decode_request_dict,
    decode_request_json,
    encode_spans_dict,
    encode_spans_json,
    request_to_dict,
)
from tests import otlp_receiver
from tests.otlp_receiver import OtlpGrpcReceiver, OtlpHttpReceiver, ReceivedSpan, attrs

# The receiver fixtures (also offered to the whole suite by tests/conftest.py).
otlp_grpc_receiver = otlp_receiver.otlp_grpc_receiver
otlp_http_receiver = otlp_receiver.otlp_http_receiver

# --------------------------------------------------------------------------- helpers


@pytest.fixture(autouse=True)
def _clean_otel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No OTEL_* setting of the machine running the tests leaks into them."""
    for name in list(os.environ):
        if name.startswith(("OTEL_EXPORTER_OTLP_", "OTEL_BSP_", "OTEL_PYTHON_EXPORTER_OTLP_")):
            monkeypatch.delenv(name)


def make_spans() -> list[ReadableSpan]:
    """Real SDK spans: two resources, two scopes, a parent with an event, a linked child
    with an error status, and attributes of every type."""
    spans: list[ReadableSpan] = []
    for service in ("svc-a", "svc-b"):
        memory = InMemorySpanExporter()
        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        provider.add_span_processor(SimpleSpanProcessor(memory))
        tracer = provider.get_tracer("app.scope", "1.2.3")
        other = provider.get_tracer("other.scope")
        with tracer.start_as_current_span(
            f"{service} parent",
            kind=SpanKind.SERVER,
            attributes={
                "str": "hé",
                "int": 2**62,
                "float": 0.25,
                "bool": True,
                "list": ["a", "b"],
                "ints": [1, 2, 3],
            },
        ) as parent:
            parent.add_event("started", {"n": 1})
            with tracer.start_as_current_span(
                "child", links=[Link(parent.get_span_context(), {"why": "scored"})]
            ) as child:
                child.set_status(Status(StatusCode.ERROR, "bad answer"))
            with other.start_as_current_span("other", kind=SpanKind.CLIENT):
                pass
        provider.shutdown()
        spans.extend(memory.get_finished_spans())
    return spans


def assert_received(received: Sequence[ReceivedSpan], spans: Sequence[ReadableSpan]) -> None:
    """The received protobuf spans are the SDK spans: ids, names, times, attributes."""
    by_id = {
        int.from_bytes(span.span_id, "big"): (res, scope, span) for res, scope, span in received
    }
    assert len(by_id) == len(spans) == len(received)
    for sdk in spans:
        ctx = sdk.get_span_context()
        resource, scope, pb = by_id[ctx.span_id]
        assert int.from_bytes(pb.trace_id, "big") == ctx.trace_id
        parent = int.from_bytes(pb.parent_span_id, "big") if pb.parent_span_id else None
        assert parent == (sdk.parent.span_id if sdk.parent else None)
        assert pb.name == sdk.name
        assert pb.start_time_unix_nano == sdk.start_time
        assert pb.end_time_unix_nano == sdk.end_time
        assert attrs(pb.attributes) == {
            k: list(v) if isinstance(v, tuple) else v for k, v in (sdk.attributes or {}).items()
        }
        assert resource["service.name"] == sdk.resource.attributes["service.name"]
        assert sdk.instrumentation_scope is not None
        assert scope == sdk.instrumentation_scope.name
        assert pb.status.code == sdk.status.status_code.value
        assert [e.name for e in pb.events] == [e.name for e in sdk.events]
        assert [int.from_bytes(lk.span_id, "big") for lk in pb.links] == [
            lk.context.span_id for lk in sdk.links
        ]


@pytest.fixture
def spans() -> list[ReadableSpan]:
    return make_spans()


@pytest.fixture
def built() -> Iterator[list[SpanExporter]]:
    """Exporters appended here are shut down after the test."""
    exporters: list[SpanExporter] = []
    yield exporters
    for exporter in exporters:
        exporter.shutdown()


def build(cfg: ExportConfig, keep: list[SpanExporter]) -> SpanExporter:
    exporter = build_exporter(cfg)
    keep.append(exporter)
    return exporter


def read_config(data: Any) -> tuple[ExportConfig | None, list[str]]:
    issues = Issues()
    cfg = read_export_config(Reader(data, "export", issues))
    return cfg, [f"{i.path}: {i.message}" for i in issues.items]


# --------------------------------------------------------------------------- OTLP/JSON


def test_otlp_json_follows_the_otlp_json_encoding(spans: list[ReadableSpan]) -> None:
    data = encode_spans_dict(spans)
    assert list(data) == ["resourceSpans"]
    # Grouped by resource, then by scope.
    assert len(data["resourceSpans"]) == 2
    for rs in data["resourceSpans"]:
        assert [ss["scope"]["name"] for ss in rs["scopeSpans"]] == ["app.scope", "other.scope"]
        assert rs["scopeSpans"][0]["scope"]["version"] == "1.2.3"
    first = data["resourceSpans"][0]["scopeSpans"][0]["spans"]
    child, parent = first  # the child ends first
    sdk_child = next(s for s in spans if s.name == "child")
    ctx = sdk_child.get_span_context()
    # Ids: lower-case hex, not base64.
    assert child["traceId"] == f"{ctx.trace_id:032x}"
    assert child["spanId"] == f"{ctx.span_id:016x}"
    assert sdk_child.parent is not None
    assert child["parentSpanId"] == f"{sdk_child.parent.span_id:016x}"
    assert child["links"][0]["spanId"] == child["parentSpanId"]
    assert child["links"][0]["traceId"] == child["traceId"]
    assert "parentSpanId" not in parent
    # Enums as integers, int64 as decimal strings, lowerCamelCase names.
    assert parent["kind"] == 2 and child["kind"] == 1
    assert child["status"] == {"message": "bad answer", "code": 2}
    assert child["startTimeUnixNano"] == str(sdk_child.start_time)
    assert child["endTimeUnixNano"] == str(sdk_child.end_time)
    values = {kv["key"]: kv["value"] for kv in parent["attributes"]}
    assert values["int"] == {"intValue": str(2**62)}
    assert values["float"] == {"doubleValue": 0.25}
    assert values["bool"] == {"boolValue": True}
    assert values["str"] == {"stringValue": "hé"}
    assert values["ints"] == {
        "arrayValue": {"values": [{"intValue": "1"}, {"intValue": "2"}, {"intValue": "3"}]}
    }
    assert parent["events"][0]["name"] == "started"
    assert isinstance(parent["events"][0]["timeUnixNano"], str)


def test_otlp_json_line_round_trips(spans: list[ReadableSpan]) -> None:
    line = encode_spans_json(spans)
    assert "\n" not in line
    assert json.loads(line) == encode_spans_dict(spans)
    assert decode_request_json(line) == encode_spans(spans)
    assert decode_request_json(line.encode() + b"\n") == encode_spans(spans)
    assert request_to_dict(decode_request_json(line)) == json.loads(line)


def test_decode_accepts_numbers_enum_names_and_unknown_fields() -> None:
    line = json.dumps(
        {
            "resourceSpans": [
                {
                    "resource": {"attributes": [{"key": "k", "value": {"intValue": 7}}]},
                    "scopeSpans": [
                        {
                            "scope": {"name": "s"},
                            "spans": [
                                {
                                    "traceId": "5B8EFFF798038103D269B633813FC60C",
                                    "spanId": "eee19b7ec3c1b174",
                                    "parentSpanId": "",
                                    "name": "n",
                                    "kind": "SPAN_KIND_CLIENT",
                                    "startTimeUnixNano": 1544712660000000000,
                                    "endTimeUnixNano": "1544712661000000000",
                                    "aFieldFromTheFuture": {"x": 1},
                                }
                            ],
                        }
                    ],
                }
            ]
        }
    )
    request = decode_request_json(line)
    span = request.resource_spans[0].scope_spans[0].spans[0]
    assert span.trace_id.hex() == "5b8efff798038103d269b633813fc60c"
    assert span.span_id.hex() == "eee19b7ec3c1b174"
    assert span.parent_span_id == b""
    assert span.kind == 3
    assert span.start_time_unix_nano == 1544712660000000000
    assert span.end_time_unix_nano == 1544712661000000000
    assert attrs(request.resource_spans[0].resource.attributes) == {"k": 7}


def test_decode_request_dict_leaves_its_argument_alone(spans: list[ReadableSpan]) -> None:
    data = encode_spans_dict(spans)
    before = json.dumps(data)
    assert decode_request_dict(data) == encode_spans(spans)
    assert json.dumps(data) == before


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('{"resourceSpans": 3}', "resourceSpans: must be an array, got 3"),
        (
            # base64, as a plain protobuf JSON printer would write it
            '{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"W47/95gDgQPSabYzgT/GDA=="}]}]}]}',
            "resourceSpans[0].scopeSpans[0].spans[0].traceId: trace_id must be 32 hex digits "
            "(got 'W47/95gDgQPSabYzgT/GDA==')",
        ),
        (
            '{"resourceSpans":[{"scopeSpans":[{"spans":[{"links":[{"spanId":"abc"}]}]}]}]}',
            "resourceSpans[0].scopeSpans[0].spans[0].links[0].spanId: span_id must be 16 hex "
            "digits",
        ),
    ],
)
def test_decode_rejects_what_is_not_otlp_json(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=None) as info:
        decode_request_json(text)
    assert message in str(info.value)


# --------------------------------------------------------------------------- OTLP gRPC / HTTP


def test_grpc_insecure_with_headers_and_gzip(
    otlp_grpc_receiver: OtlpGrpcReceiver, spans: list[ReadableSpan], built: list[SpanExporter]
) -> None:
    cfg = ExportConfig(
        otlp=OtlpExportConfig(
            protocol="grpc",
            endpoint=otlp_grpc_receiver.endpoint,
            insecure=True,
            headers={"X-Tenant": "acme"},
            compression="gzip",
            timeout_s=5,
        )
    )
    exporter = build(cfg, built)
    assert isinstance(exporter, GrpcSpanExporter)
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    assert_received(otlp_grpc_receiver.wait_for_spans(len(spans)), spans)
    assert otlp_grpc_receiver.headers[0]["x-tenant"] == "acme"


def test_grpc_http_url_endpoint_means_plaintext(
    otlp_grpc_receiver: OtlpGrpcReceiver, spans: list[ReadableSpan], built: list[SpanExporter]
) -> None:
    cfg, problems = read_config({"otlp": {"protocol": "grpc", "endpoint": otlp_grpc_receiver.url}})
    assert problems == [] and cfg is not None
    assert build(cfg, built).export(spans) is SpanExportResult.SUCCESS
    assert_received(otlp_grpc_receiver.wait_for_spans(len(spans)), spans)


def test_http_gzip_and_custom_header(
    otlp_http_receiver: OtlpHttpReceiver, spans: list[ReadableSpan], built: list[SpanExporter]
) -> None:
    # A base URL gets /v1/traces appended.
    cfg, problems = read_config(
        {
            "otlp": {
                "protocol": "http/protobuf",
                "endpoint": otlp_http_receiver.base_url,
                "headers": {"X-Api-Key": "s3cret"},
                "compression": "gzip",
            }
        }
    )
    assert problems == [] and cfg is not None
    exporter = build(cfg, built)
    assert isinstance(exporter, HttpSpanExporter)
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    assert_received(otlp_http_receiver.wait_for_spans(len(spans)), spans)
    headers = otlp_http_receiver.headers[0]
    assert headers["x-api-key"] == "s3cret"
    assert headers["content-encoding"] == "gzip"
    assert headers["content-type"] == "application/x-protobuf"


def test_http_full_traces_url_is_used_as_is(
    otlp_http_receiver: OtlpHttpReceiver, spans: list[ReadableSpan], built: list[SpanExporter]
) -> None:
    cfg = ExportConfig(
        otlp=OtlpExportConfig(protocol="http/protobuf", endpoint=otlp_http_receiver.endpoint)
    )
    assert build(cfg, built).export(spans) is SpanExportResult.SUCCESS
    assert_received(otlp_http_receiver.wait_for_spans(len(spans)), spans)
    assert "content-encoding" not in otlp_http_receiver.headers[0]


def test_grpc_endpoint_headers_and_compression_from_env(
    monkeypatch: pytest.MonkeyPatch,
    otlp_grpc_receiver: OtlpGrpcReceiver,
    spans: list[ReadableSpan],
    built: list[SpanExporter],
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", otlp_grpc_receiver.url)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "x-from-env=yes")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "gzip")
    cfg, problems = read_config({"otlp": {}})
    assert problems == []
    assert cfg == ExportConfig(otlp=OtlpExportConfig())
    exporter = build(cfg, built)
    assert isinstance(exporter, GrpcSpanExporter)
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    assert_received(otlp_grpc_receiver.wait_for_spans(len(spans)), spans)
    assert otlp_grpc_receiver.headers[0]["x-from-env"] == "yes"


def test_http_protocol_and_endpoint_from_env(
    monkeypatch: pytest.MonkeyPatch,
    otlp_http_receiver: OtlpHttpReceiver,
    spans: list[ReadableSpan],
    built: list[SpanExporter],
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", otlp_http_receiver.endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-from-env=yes")
    exporter = build(ExportConfig(), built)  # the default: OTLP, all from the environment
    assert isinstance(exporter, HttpSpanExporter)
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    assert_received(otlp_http_receiver.wait_for_spans(len(spans)), spans)
    assert otlp_http_receiver.headers[0]["x-from-env"] == "yes"


def test_config_wins_over_env(
    monkeypatch: pytest.MonkeyPatch,
    otlp_grpc_receiver: OtlpGrpcReceiver,
    spans: list[ReadableSpan],
    built: list[SpanExporter],
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:9/v1/traces")
    cfg = ExportConfig(
        otlp=OtlpExportConfig(protocol="grpc", endpoint=otlp_grpc_receiver.endpoint, insecure=True)
    )
    assert build(cfg, built).export(spans) is SpanExportResult.SUCCESS
    assert len(otlp_grpc_receiver.wait_for_spans(len(spans))) == len(spans)


def test_protocol_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_protocol(OtlpExportConfig()) == "grpc"
    assert resolve_protocol(
        OtlpExportConfig(), {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}
    ) == ("http/protobuf")
    env = {
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc",
    }
    assert resolve_protocol(OtlpExportConfig(), env) == "grpc"
    assert resolve_protocol(OtlpExportConfig(protocol="http/protobuf"), env) == "http/protobuf"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json")
    with pytest.raises(ConfigError) as info:
        build_exporter(ExportConfig())
    assert (
        "export.otlp.protocol: OTEL_EXPORTER_OTLP_TRACES_PROTOCOL='http/json': unknown value "
        "'http/json'; expected one of: grpc, http/protobuf" in str(info.value)
    )


def test_no_export_section_means_otlp_from_the_environment() -> None:
    exporter = build_exporter(None)
    try:
        assert isinstance(exporter, GrpcSpanExporter)
    finally:
        exporter.shutdown()
    processor = build_span_processor(None)
    processor.shutdown()


def test_env_protocol_that_does_not_suit_the_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    with pytest.raises(ConfigError) as info:
        build_exporter(ExportConfig(otlp=OtlpExportConfig(endpoint="collector:4317")))
    assert "export.otlp.endpoint: must be an http:// or https:// URL" in str(info.value)


def test_bad_env_value_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "brotli")
    with pytest.raises(ConfigError) as info:
        build_exporter(ExportConfig(otlp=OtlpExportConfig(endpoint="127.0.0.1:4317")))
    assert (
        "export.otlp.compression: OTEL_EXPORTER_OTLP_TRACES_COMPRESSION='brotli': unknown value "
        "'brotli'; expected one of: gzip, none"
    ) in str(info.value)


def test_grpc_retries_unavailable_then_succeeds(
    otlp_grpc_receiver: OtlpGrpcReceiver, spans: list[ReadableSpan], built: list[SpanExporter]
) -> None:
    otlp_grpc_receiver.fail_with(grpc.StatusCode.UNAVAILABLE, times=1, retry_delay_s=0)
    cfg = ExportConfig(otlp=OtlpExportConfig(endpoint=otlp_grpc_receiver.url, timeout_s=5))
    assert build(cfg, built).export(spans) is SpanExportResult.SUCCESS
    assert otlp_grpc_receiver.attempts == 2
    assert len(otlp_grpc_receiver.wait_for_spans(len(spans))) == len(spans)


def test_grpc_permanent_error_is_a_failed_export(
    otlp_grpc_receiver: OtlpGrpcReceiver, spans: list[ReadableSpan], built: list[SpanExporter]
) -> None:
    otlp_grpc_receiver.fail_with(grpc.StatusCode.INVALID_ARGUMENT)
    cfg = ExportConfig(otlp=OtlpExportConfig(endpoint=otlp_grpc_receiver.url, timeout_s=5))
    assert build(cfg, built).export(spans) is SpanExportResult.FAILURE
    assert otlp_grpc_receiver.attempts == 1
    assert otlp_grpc_receiver.spans() == []


def test_http_retries_503_then_succeeds(
    otlp_http_receiver: OtlpHttpReceiver, spans: list[ReadableSpan], built: list[SpanExporter]
) -> None:
    otlp_http_receiver.fail_with(503, times=1, retry_after_s=0)
    cfg = ExportConfig(
        otlp=OtlpExportConfig(
            protocol="http/protobuf", endpoint=otlp_http_receiver.base_url, timeout_s=5
        )
    )
    assert build(cfg, built).export(spans) is SpanExportResult.SUCCESS
    assert otlp_http_receiver.attempts == 2
    assert len(otlp_http_receiver.wait_for_spans(len(spans))) == len(spans)


def test_http_client_error_is_a_failed_export(
    otlp_http_receiver: OtlpHttpReceiver, spans: list[ReadableSpan], built: list[SpanExporter]
) -> None:
    otlp_http_receiver.fail_with(400)
    cfg = ExportConfig(
        otlp=OtlpExportConfig(protocol="http/protobuf", endpoint=otlp_http_receiver.base_url)
    )
    assert build(cfg, built).export(spans) is SpanExportResult.FAILURE
    assert otlp_http_receiver.attempts == 1


def test_batch_processor_in_front_of_grpc(
    otlp_grpc_receiver: OtlpGrpcReceiver, spans: list[ReadableSpan]
) -> None:
    cfg = ExportConfig(
        otlp=OtlpExportConfig(endpoint=otlp_grpc_receiver.endpoint, insecure=True),
        batch=BatchConfig(max_queue_size=64, schedule_delay_ms=10_000, max_export_batch_size=4),
    )
    processor = build_span_processor(cfg)
    assert isinstance(processor, BatchSpanProcessor)
    try:
        for span in spans:
            processor.on_end(span)
        assert processor.force_flush(5_000)
        assert_received(otlp_grpc_receiver.wait_for_spans(len(spans)), spans)
        # 6 spans in batches of at most 4.
        assert [
            sum(len(ss.spans) for rs in r.resource_spans for ss in rs.scope_spans)
            for r in otlp_grpc_receiver.requests
        ] == [4, 2]
    finally:
        processor.shutdown()


def test_batch_sizes_that_do_not_fit_the_defaults(tmp_path: Any) -> None:
    cfg = ExportConfig(
        file=FileExportConfig(str(tmp_path / "x.jsonl")),
        batch=BatchConfig(max_export_batch_size=5000),  # the default queue holds 2048
    )
    with pytest.raises(ConfigError) as info:
        build_span_processor(cfg)
    assert (
        "export.batch.max_export_batch_size: 5000 (from the config) must be at most "
        "max_queue_size 2048 (from the default)"
    ) in str(info.value)


# --------------------------------------------------------------------------- console and file


def test_console(capsys: pytest.CaptureFixture[str], spans: list[ReadableSpan]) -> None:
    cfg, problems = read_config({"console": None})
    assert problems == [] and cfg == ExportConfig(console=ConsoleExportConfig())
    exporter = build_exporter(cfg)
    assert isinstance(exporter, ConsoleSpanExporter)
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    exporter.shutdown()
    out = capsys.readouterr().out
    for span in spans:
        assert f'"name": "{span.name}"' in out
        assert f"0x{span.get_span_context().span_id:016x}" in out


def test_file_writes_one_otlp_json_line_per_export(
    tmp_path: Any, spans: list[ReadableSpan]
) -> None:
    path = tmp_path / "evals.jsonl"
    cfg, problems = read_config({"file": {"path": str(path)}})
    assert problems == [] and cfg is not None
    exporter = build_exporter(cfg)
    assert isinstance(exporter, OtlpJsonFileExporter)
    assert exporter.export(spans[:2]) is SpanExportResult.SUCCESS
    assert exporter.export(spans[2:]) is SpanExportResult.SUCCESS
    assert exporter.export([]) is SpanExportResult.SUCCESS  # writes nothing
    # Flushed at each export: readable before shutdown.
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2
    requests = [decode_request_json(line) for line in lines]
    assert requests == [encode_spans(spans[:2]), encode_spans(spans[2:])]
    received = [
        (attrs(rs.resource.attributes), ss.scope.name, span)
        for request in requests
        for rs in request.resource_spans
        for ss in rs.scope_spans
        for span in ss.spans
    ]
    assert_received(received, spans)
    # Ids are hex in the file.
    first = json.loads(lines[0])["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert first["traceId"] == f"{spans[0].get_span_context().trace_id:032x}"

    assert exporter.force_flush() is True
    exporter.shutdown()
    exporter.shutdown()  # twice is fine
    assert exporter.export(spans) is SpanExportResult.FAILURE
    assert len(path.read_text(encoding="utf-8").splitlines()) == 2


def test_file_appends_to_an_existing_file(tmp_path: Any, spans: list[ReadableSpan]) -> None:
    path = tmp_path / "evals.jsonl"
    path.write_text(encode_spans_json(spans[:1]) + "\n", encoding="utf-8")
    exporter = OtlpJsonFileExporter(path)
    assert exporter.path == str(path)
    assert exporter.export(spans[1:]) is SpanExportResult.SUCCESS
    exporter.shutdown()
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [decode_request_json(line) for line in lines] == [
        encode_spans(spans[:1]),
        encode_spans(spans[1:]),
    ]


def test_file_is_thread_safe(tmp_path: Any, spans: list[ReadableSpan]) -> None:
    path = tmp_path / "evals.jsonl"
    exporter = OtlpJsonFileExporter(path)
    results: list[SpanExportResult] = []
    lock = threading.Lock()

    def work() -> None:
        for _ in range(25):
            result = exporter.export(spans)
            with lock:
                results.append(result)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    exporter.shutdown()
    assert results == [SpanExportResult.SUCCESS] * 200
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 200
    expected = encode_spans(spans)
    assert all(decode_request_json(line) == expected for line in lines)


def test_file_that_cannot_be_opened(tmp_path: Any) -> None:
    cfg = ExportConfig(file=FileExportConfig(str(tmp_path / "missing-dir" / "evals.jsonl")))
    with pytest.raises(ConfigError) as info:
        build_exporter(cfg)
    assert "export.file.path: cannot open" in str(info.value)
    assert "No such file or directory" in str(info.value)


def test_file_export_that_cannot_be_encoded_fails_without_raising(
    tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    exporter = OtlpJsonFileExporter(tmp_path / "evals.jsonl")
    try:
        assert exporter.export([object()]) is SpanExportResult.FAILURE  # type: ignore[list-item]
    finally:
        exporter.shutdown()
    assert "Cannot encode 1 spans as OTLP/JSON" in caplog.text


# --------------------------------------------------------------------------- config


def test_absent_section_reads_as_none() -> None:
    assert read_config(None) == (None, [])


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"otlp": None}, ExportConfig(otlp=OtlpExportConfig())),
        (
            {
                "otlp": {
                    "protocol": "grpc",
                    "endpoint": "collector:4317",
                    "headers": {"Authorization": "Bearer x"},
                    "insecure": True,
                    "compression": "none",
                    "timeout_s": 2.5,
                },
                "batch": {
                    "max_queue_size": 100,
                    "schedule_delay_ms": 500,
                    "max_export_batch_size": 10,
                    "export_timeout_ms": 1000,
                },
            },
            ExportConfig(
                otlp=OtlpExportConfig(
                    protocol="grpc",
                    endpoint="collector:4317",
                    headers={"Authorization": "Bearer x"},
                    insecure=True,
                    compression="none",
                    timeout_s=2.5,
                ),
                batch=BatchConfig(100, 500, 10, 1000),
            ),
        ),
        (
            {"otlp": {"protocol": "http/protobuf", "endpoint": "https://otel.example.com"}},
            ExportConfig(
                otlp=OtlpExportConfig(protocol="http/protobuf", endpoint="https://otel.example.com")
            ),
        ),
        (
            {"otlp": {"endpoint": "[::1]:4317"}},
            ExportConfig(otlp=OtlpExportConfig(endpoint="[::1]:4317")),
        ),
        ({"console": {}}, ExportConfig(console=ConsoleExportConfig())),
        (
            {"file": {"path": "out/evals.jsonl"}},
            ExportConfig(file=FileExportConfig("out/evals.jsonl")),
        ),
    ],
)
def test_valid_configs(data: Any, expected: ExportConfig) -> None:
    assert read_config(data) == (expected, [])


_ONE_OF = "expected one of: grpc, http/protobuf"


@pytest.mark.parametrize(
    ("data", "messages"),
    [
        (
            {"otlp": {"protocol": "udp"}},
            [f"export.otlp.protocol: unknown value 'udp'; {_ONE_OF}"],
        ),
        (
            {"otlp": {}, "file": {"path": "x"}},
            ["export: set exactly one exporter of otlp, console, file; got otlp and file"],
        ),
        ({}, ["export: one exporter is required: otlp, console, file"]),
        ({"batch": {}}, ["export: one exporter is required: otlp, console, file"]),
        ("otlp", ["export: must be a mapping, got a string"]),
        (
            {"otlp": {}, "extra": 1},
            [
                "export.extra: unknown key 'extra'; "
                "expected one of: batch, console, file, otlp, phoenix"
            ],
        ),
        (
            {"otlp": {"endpont": "c:4317"}},
            [
                "export.otlp.endpont: unknown key 'endpont'; expected one of: certificate_file, "
                "client_certificate_file, client_key_file, compression, endpoint, headers, "
                "insecure, protocol, timeout_s"
            ],
        ),
        (
            {"otlp": {"client_key_file": "/no/such/client.key"}},
            [
                "export.otlp.client_key_file: needs client_certificate_file too: mutual TLS "
                "takes both or neither",
                "export.otlp.client_key_file: cannot read '/no/such/client.key': "
                "No such file or directory",
            ],
        ),
        (
            {"otlp": {"certificate_file": 5, "client_certificate_file": ""}},
            [
                "export.otlp.certificate_file: must be a string, got a number",
                "export.otlp.client_certificate_file: must be the path of a PEM file, got ''",
                "export.otlp.client_certificate_file: needs client_key_file too: mutual TLS "
                "takes both or neither",
            ],
        ),
        ({"console": {"colour": True}}, ["export.console.colour: unknown key 'colour'"]),
        ({"otlp": {"insecure": "yes"}}, ["export.otlp.insecure: must be true or false, got 'yes'"]),
        ({"otlp": {"timeout_s": "10s"}}, ["export.otlp.timeout_s: must be a number, got '10s'"]),
        (
            {"otlp": {"timeout_s": 0}},
            ["export.otlp.timeout_s: must be a number greater than 0, got 0"],
        ),
        ({"otlp": {"endpoint": 4317}}, ["export.otlp.endpoint: must be a string, got a number"]),
        (
            {"otlp": {"compression": "zstd"}},
            ["export.otlp.compression: unknown value 'zstd'; expected one of: gzip, none"],
        ),
        ({"otlp": {"headers": ["a"]}}, ["export.otlp.headers: must be a mapping, got a list"]),
        (
            {"otlp": {"headers": {"x-key": 5}}},
            ["export.otlp.headers.x-key: must be a string, got 5"],
        ),
        (
            {"otlp": {"headers": {"bad name": "v", "X-A": "1", "x-a": "2"}}},
            [
                "export.otlp.headers: invalid header name 'bad name'",
                "export.otlp.headers: header 'x-a' is given twice (as 'X-A')",
            ],
        ),
        (
            {"otlp": {"headers": {"x-a": "line\nbreak"}}},
            ["export.otlp.headers: header 'x-a' must not contain a line break or NUL"],
        ),
        (
            {"otlp": {"protocol": "http/protobuf", "endpoint": "collector:4318"}},
            [
                "export.otlp.endpoint: must be an http:// or https:// URL for protocol "
                "http/protobuf, got 'collector:4318'"
            ],
        ),
        (
            {"otlp": {"protocol": "grpc", "endpoint": "http://c:4318/v1/traces"}},
            [
                "export.otlp.endpoint: a gRPC endpoint has no path; got '/v1/traces' in "
                "'http://c:4318/v1/traces'"
            ],
        ),
        (
            {"otlp": {"endpoint": "ftp://c:21"}},
            ["export.otlp.endpoint: unknown scheme 'ftp' in 'ftp://c:21'; expected http or https"],
        ),
        (
            {"otlp": {"endpoint": "collector"}},
            [
                "export.otlp.endpoint: must be host:port or an http:// or https:// URL, "
                "got 'collector'"
            ],
        ),
        (
            {"otlp": {"endpoint": "http://c:99999"}},
            ["export.otlp.endpoint: has an invalid port: 'http://c:99999'"],
        ),
        ({"otlp": {"endpoint": ""}}, ["export.otlp.endpoint: must not be empty"]),
        (
            {"otlp": {"endpoint": "c:70000"}},
            [
                "export.otlp.endpoint: must be host:port or an http:// or https:// URL, "
                "got 'c:70000'"
            ],
        ),
        (
            {"otlp": {"protocol": "http/protobuf", "endpoint": "http://c:4318", "insecure": True}},
            [
                "export.otlp.insecure: applies to protocol grpc only; an http/protobuf endpoint "
                "uses TLS when it starts with https://"
            ],
        ),
        (
            {"otlp": {"endpoint": "https://c:4317", "insecure": True}},
            ["export.otlp.insecure: true contradicts the endpoint 'https://c:4317'"],
        ),
        (
            {"otlp": {"endpoint": "http://c:4317", "insecure": False}},
            ["export.otlp.insecure: false contradicts the endpoint 'http://c:4317'"],
        ),
        ({"file": {}}, ["export.file: 'path' is required"]),
        ({"file": {"path": ""}}, ["export.file.path: must not be empty"]),
        ({"file": {"path": None}}, ["export.file.path: must not be empty"]),
        ({"file": None}, ["export.file: 'path' is required"]),
        ({"file": "evals.jsonl"}, ["export.file: must be a mapping, got a string"]),
        (
            {"console": {}, "batch": {"max_queue_size": 0}},
            ["export.batch.max_queue_size: must be a whole number greater than 0, got 0"],
        ),
        (
            {"console": {}, "batch": {"max_queue_size": 1.5}},
            ["export.batch.max_queue_size: must be a whole number, got 1.5"],
        ),
        (
            {"console": {}, "batch": {"schedule_delay_ms": -1}},
            ["export.batch.schedule_delay_ms: must be a number greater than 0, got -1"],
        ),
        (
            {"console": {}, "batch": {"max_queue_size": 10, "max_export_batch_size": 20}},
            [
                "export.batch.max_export_batch_size: must be at most max_queue_size (10), got 20",
            ],
        ),
        (
            {"console": {}, "batch": {"max_batch": 5}},
            [
                "export.batch.max_batch: unknown key 'max_batch'; expected one of: "
                "export_timeout_ms, max_export_batch_size, max_queue_size, schedule_delay_ms"
            ],
        ),
        (
            # Every problem is reported, not just the first.
            {"otlp": {"protocol": "udp", "compression": "zstd", "timeout_s": -1}, "x": 1},
            [
                f"export.otlp.protocol: unknown value 'udp'; {_ONE_OF}",
                "export.otlp.compression: unknown value 'zstd'; expected one of: gzip, none",
                "export.otlp.timeout_s: must be a number greater than 0, got -1",
                "export.x: unknown key 'x'; expected one of: batch, console, file, otlp, phoenix",
            ],
        ),
    ],
)
def test_config_errors(data: Any, messages: list[str]) -> None:
    cfg, problems = read_config(data)
    assert cfg is None
    assert sorted(problems) == sorted(messages)


def test_config_issue_points_at_the_yaml_line() -> None:
    from otel_online_eval._validate import Mark

    issues = Issues(file="eval.yaml", marks={"export.otlp.protocol": Mark(12, 15)})
    read_export_config(Reader({"otlp": {"protocol": "udp"}}, "export", issues))
    assert [str(i) for i in issues.items] == [
        f"eval.yaml:12:15: export.otlp.protocol: unknown value 'udp'; {_ONE_OF}"
    ]


def test_dataclasses_check_themselves() -> None:
    with pytest.raises(ValueError, match=r"otlp\.protocol: unknown value 'udp'"):
        OtlpExportConfig(protocol="udp")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"otlp\.timeout_s"):
        OtlpExportConfig(timeout_s=-1)
    with pytest.raises(ValueError, match=r"otlp\.client_key_file: needs client_certificate_file"):
        OtlpExportConfig(client_key_file="client.key")
    with pytest.raises(ValueError, match=r"otlp\.insecure: true contradicts the TLS client"):
        OtlpExportConfig(insecure=True, certificate_file="ca.pem")
    with pytest.raises(ValueError, match="set exactly one exporter, got otlp and console"):
        ExportConfig(otlp=OtlpExportConfig(), console=ConsoleExportConfig())
    with pytest.raises(ValueError, match=r"file\.path"):
        FileExportConfig("")
    with pytest.raises(ValueError, match=r"batch\.max_export_batch_size: must be at most"):
        BatchConfig(max_queue_size=1, max_export_batch_size=2)
    default = ExportConfig()
    assert default.kind == "otlp" and default.exporter == OtlpExportConfig()
    assert ExportConfig(file=FileExportConfig("a")).kind == "file"
    headers = {"a": "1"}
    cfg = OtlpExportConfig(headers=headers)
    headers["b"] = "2"
    assert cfg.headers == {"a": "1"}
    with pytest.raises(TypeError):
        cfg.headers["c"] = "3"  # type: ignore[index]
