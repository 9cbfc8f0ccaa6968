"""The test receivers themselves: what they accept, what they refuse, and that they stop."""

from __future__ import annotations

import gzip
import socket
import urllib.error
import urllib.request

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import TraceServiceStub
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_online_eval.otlp_json import encode_spans_json
from tests import otlp_receiver
from tests.otlp_receiver import OtlpGrpcReceiver, OtlpHttpReceiver, attrs, value

otlp_grpc_receiver = otlp_receiver.otlp_grpc_receiver
otlp_http_receiver = otlp_receiver.otlp_http_receiver


def _spans(n: int = 2) -> list[ReadableSpan]:
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "rx", "n": 3}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("rx.scope")
    for i in range(n):
        with tracer.start_as_current_span(f"s{i}", attributes={"i": i, "xs": [1.5, 2.5]}):
            pass
    provider.shutdown()
    return list(memory.get_finished_spans())


def _post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()


def test_grpc_receiver_collects_and_flattens(otlp_grpc_receiver: OtlpGrpcReceiver) -> None:
    spans = _spans()
    with grpc.insecure_channel(otlp_grpc_receiver.endpoint) as channel:
        TraceServiceStub(channel).Export(encode_spans(spans), metadata=(("x-k", "v"),), timeout=5)
    got = otlp_grpc_receiver.wait_for_spans(2)
    assert [(res["service.name"], res["n"], scope, span.name) for res, scope, span in got] == [
        ("rx", 3, "rx.scope", "s0"),
        ("rx", 3, "rx.scope", "s1"),
    ]
    assert attrs(got[1][2].attributes) == {"i": 1, "xs": [1.5, 2.5]}
    assert otlp_grpc_receiver.headers[0]["x-k"] == "v"
    assert otlp_grpc_receiver.attempts == 1
    otlp_grpc_receiver.clear()
    assert otlp_grpc_receiver.spans() == [] and otlp_grpc_receiver.attempts == 0


def test_grpc_receiver_answers_errors(otlp_grpc_receiver: OtlpGrpcReceiver) -> None:
    otlp_grpc_receiver.fail_with(grpc.StatusCode.UNAVAILABLE, times=2, details="busy")
    with grpc.insecure_channel(otlp_grpc_receiver.endpoint) as channel:
        stub = TraceServiceStub(channel)
        for _ in range(2):
            with pytest.raises(grpc.RpcError) as info:
                stub.Export(encode_spans(_spans(1)), timeout=5)
            assert info.value.code() is grpc.StatusCode.UNAVAILABLE
            assert info.value.details() == "busy"
        stub.Export(encode_spans(_spans(1)), timeout=5)
    assert otlp_grpc_receiver.attempts == 3
    assert len(otlp_grpc_receiver.wait_for_spans(1)) == 1


def test_http_receiver_accepts_protobuf_json_gzip_and_deflate(
    otlp_http_receiver: OtlpHttpReceiver,
) -> None:
    spans = _spans(1)
    proto = encode_spans(spans).SerializeToString()
    url = otlp_http_receiver.endpoint
    assert _post(url, proto, {"Content-Type": "application/x-protobuf"})[0] == 200
    gz = {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"}
    assert _post(url, gzip.compress(proto), gz)[0] == 200
    status, body = _post(
        url, encode_spans_json(spans).encode(), {"Content-Type": "application/json"}
    )
    assert (status, body) == (200, b"{}")
    assert len(otlp_http_receiver.wait_for_spans(3)) == 3
    assert all(r == encode_spans(spans) for r in otlp_http_receiver.requests)


@pytest.mark.parametrize(
    ("path", "headers", "body", "status"),
    [
        ("/v1/metrics", {"Content-Type": "application/x-protobuf"}, b"", 404),
        ("/v1/traces", {"Content-Type": "text/plain"}, b"hi", 415),
        (
            "/v1/traces",
            {"Content-Type": "application/x-protobuf", "Content-Encoding": "br"},
            b"",
            415,
        ),
        ("/v1/traces", {"Content-Type": "application/x-protobuf"}, b"\xff\xff\xff", 400),
        ("/v1/traces", {"Content-Type": "application/json"}, b"{", 400),
    ],
)
def test_http_receiver_refuses_what_is_not_otlp(
    otlp_http_receiver: OtlpHttpReceiver,
    path: str,
    headers: dict[str, str],
    body: bytes,
    status: int,
) -> None:
    assert _post(otlp_http_receiver.base_url + path, body, headers)[0] == status
    assert otlp_http_receiver.requests == []


def test_http_receiver_answers_errors(otlp_http_receiver: OtlpHttpReceiver) -> None:
    otlp_http_receiver.fail_with(503, times=1, retry_after_s=0)
    proto = ExportTraceServiceRequest().SerializeToString()
    request = urllib.request.Request(
        otlp_http_receiver.endpoint,
        data=proto,
        headers={"Content-Type": "application/x-protobuf"},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=5)
    with info.value:
        assert info.value.code == 503
        assert info.value.headers["Retry-After"] == "0"
    assert (
        _post(otlp_http_receiver.endpoint, proto, {"Content-Type": "application/x-protobuf"})[0]
        == 200
    )
    assert otlp_http_receiver.attempts == 2


def test_wait_for_spans_is_bounded(otlp_http_receiver: OtlpHttpReceiver) -> None:
    with pytest.raises(AssertionError, match=r"expected 1 spans within 0\.05s, got 0"):
        otlp_http_receiver.wait_for_spans(1, timeout=0.05)
    with pytest.raises(AssertionError, match="expected 1 export attempts"):
        otlp_http_receiver.wait_for_attempts(1, timeout=0.05)


def test_receivers_stop_and_free_their_ports() -> None:
    with OtlpGrpcReceiver() as g, OtlpHttpReceiver() as h:
        ports = (g.port, h.port)
    g.stop()  # twice is fine
    h.stop()
    for port in ports:
        with socket.socket() as s, pytest.raises(OSError):
            s.settimeout(1)
            s.connect(("127.0.0.1", port))


def test_value_of_an_empty_any_value() -> None:
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue

    assert value(AnyValue()) is None
    assert value(AnyValue(bytes_value=b"\x01")) == b"\x01"


def _emit_logs(exporter: object) -> None:
    """Two log records, one of them in a span, through a real LoggerProvider and ``exporter``."""
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor

    provider = LoggerProvider(resource=Resource.create({"service.name": "rx"}))
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))  # type: ignore[arg-type]
    logger = provider.get_logger("rx.logs")
    tracer_provider = TracerProvider()
    with tracer_provider.get_tracer("t").start_as_current_span("in-span"):
        logger.emit(event_name="gen_ai.choice", body={"message": {"content": "hi"}})
    logger.emit(body="outside")
    provider.shutdown()


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_receivers_collect_log_records(
    protocol: str, otlp_grpc_receiver: OtlpGrpcReceiver, otlp_http_receiver: OtlpHttpReceiver
) -> None:
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter

        rx: OtlpGrpcReceiver | OtlpHttpReceiver = otlp_grpc_receiver
        _emit_logs(OTLPLogExporter(endpoint=otlp_grpc_receiver.endpoint, insecure=True))
    else:
        from opentelemetry.exporter.otlp.proto.http._log_exporter import (
            OTLPLogExporter as HttpLogExporter,
        )

        rx = otlp_http_receiver
        _emit_logs(HttpLogExporter(endpoint=otlp_http_receiver.logs_endpoint))
    got = rx.wait_for_log_records(2)
    assert [(res["service.name"], scope) for res, scope, _ in got] == [("rx", "rx.logs")] * 2
    first, second = got[0][2], got[1][2]
    assert first.event_name == "gen_ai.choice"
    assert value(first.body) == {"message": {"content": "hi"}}
    assert len(first.span_id) == 8 and len(first.trace_id) == 16
    assert value(second.body) == "outside" and not second.span_id
    assert rx.spans() == []  # logs are not spans
