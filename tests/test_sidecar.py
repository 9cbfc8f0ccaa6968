"""The sidecar end to end, as a subprocess, against the OpenTelemetry Python SDK's own exporters.

``otel-online-eval serve`` receives OTLP/gRPC and OTLP/HTTP (protobuf, JSON, gzip), forwards
what it received to a downstream receiver byte for byte, and exports eval spans to another.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest
import requests
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.sdk.trace.export import SpanExportResult

from otel_online_eval.otlp_json import decode_request_json, encode_spans_json
from tests.otlp_receiver import OtlpGrpcReceiver, OtlpHttpReceiver, ReceivedSpan, attrs
from tests.sidecar_helpers import (
    Metrics,
    RawGrpcReceiver,
    TraceSpans,
    eval_spans,
    eventually,
    export_to,
    forward_to,
    grpc_health,
    make_trace,
    post_http,
    request_bytes,
    running_sidecar,
    send_grpc,
    sidecar_config,
    wait_until,
)

RULE = "chat-quality"
TRACE_SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"


@pytest.fixture
def forward_rx() -> Any:
    with RawGrpcReceiver() as rx:
        yield rx


def _check_evals(received: list[ReceivedSpan], trace: TraceSpans) -> None:
    """One ``eval chat-quality`` per chat span: child of and linked to it, same trace, same
    resource; two score children each, with the category labels."""
    chat = {s.context.span_id: s for s in trace.named("chat") if s.context is not None}
    evals = eval_spans(received, trace.trace_id)
    assert len(evals) == len(chat)
    by_parent = {
        int.from_bytes(span.parent_span_id, "big"): (res, scope, span) for res, scope, span in evals
    }
    assert set(by_parent) == set(chat)
    for parent_id, (resource, scope, span) in by_parent.items():
        scored = chat[parent_id]
        assert span.name == f"eval {RULE}"
        assert scope == "otel_online_eval"
        assert int.from_bytes(span.trace_id, "big") == trace.trace_id
        (link,) = span.links
        assert int.from_bytes(link.trace_id, "big") == trace.trace_id
        assert int.from_bytes(link.span_id, "big") == parent_id
        assert resource == dict(scored.resource.attributes)
        a = attrs(span.attributes)
        assert a["online_eval.rule"] == RULE and a["online_eval.span.name"] == "chat"
        assert [e.name for e in span.events] == ["gen_ai.evaluation.result"] * 2
    eval_ids = {span.span_id for _, _, span in evals}
    scores = [
        span
        for _, _, span in received
        if span.name.startswith("score ") and span.parent_span_id in eval_ids
    ]
    assert sorted(s.name for s in scores) == sorted(
        ["score category", "score nonempty"] * len(chat)
    )
    labels = sorted(
        attrs(s.attributes)["gen_ai.evaluation.score.label"]
        for s in scores
        if s.name == "score category"
    )
    assert labels == ["billing", "other"]


def _check_counters(m: Metrics, transport: str, requests_ok: int, spans: int, evals: int) -> None:
    assert m.value("online_eval_shipper_sent_spans_total", pipeline="export") == 3 * evals
    assert m.value("otlp_receiver_requests_total", transport=transport, outcome="ok") == requests_ok
    assert m.value("otlp_receiver_spans_total", result="accepted") == spans
    assert m.value("otlp_receiver_spans_total", result="rejected") == 0
    assert m.value("online_eval_spans_seen_total") == spans
    assert m.value("online_eval_spans_selected_total", rule=RULE) == evals
    assert m.value("online_eval_evals_total", rule=RULE) == evals
    assert m.value("online_eval_scores_total", rule=RULE, outcome="ok") == 2 * evals
    assert m.value("online_eval_shipper_sent_spans_total", pipeline="forward") == spans
    assert m.value("online_eval_shipper_dropped_spans_total") == 0
    assert m.value("otlp_receiver_bytes_total", transport=transport) > 0


def test_python_grpc_exporter_is_evaluated_and_forwarded_byte_for_byte(
    tmp_path: Path, otlp_grpc_receiver: OtlpGrpcReceiver, forward_rx: RawGrpcReceiver
) -> None:
    config = sidecar_config(
        export=export_to(otlp_grpc_receiver), forward=forward_to(forward_rx.endpoint)
    )
    trace = make_trace("py-grpc-app", extra_resource={"deployment.environment": "test"})
    with running_sidecar(tmp_path, config) as sc:
        assert grpc_health(sc.grpc_endpoint) == "SERVING"
        assert grpc_health(sc.grpc_endpoint, TRACE_SERVICE) == "SERVING"
        health = sc.get("/healthz")
        assert (health.status_code, health.text) == (200, "ok\n")

        exporter = GrpcSpanExporter(endpoint=f"http://{sc.grpc_endpoint}", insecure=True, timeout=5)
        try:
            assert exporter.export(trace.spans) == SpanExportResult.SUCCESS
        finally:
            exporter.shutdown()

        # The SDK serializes encode_spans(spans): the downstream got those very bytes.
        [body] = forward_rx.wait_for_bodies(1)
        assert body == request_bytes(trace.spans)
        _check_evals(otlp_grpc_receiver.wait_for_spans(6), trace)

        eventually(lambda: _check_counters(sc.metrics(), "grpc", 1, spans=3, evals=2))
    assert sc.proc.returncode == 0


@pytest.mark.parametrize("compression", [Compression.NoCompression, Compression.Gzip])
def test_python_http_exporter_is_evaluated_and_forwarded_byte_for_byte(
    tmp_path: Path,
    otlp_http_receiver: OtlpHttpReceiver,
    forward_rx: RawGrpcReceiver,
    compression: Compression,
) -> None:
    config = sidecar_config(
        export=export_to(otlp_http_receiver), forward=forward_to(forward_rx.endpoint)
    )
    trace = make_trace("py-http-app")
    with running_sidecar(tmp_path, config) as sc:
        exporter = HttpSpanExporter(endpoint=sc.url(), timeout=5, compression=compression)
        try:
            assert exporter.export(trace.spans) == SpanExportResult.SUCCESS
        finally:
            exporter.shutdown()
        [body] = forward_rx.wait_for_bodies(1)
        assert body == request_bytes(trace.spans)  # decompressed, otherwise untouched
        _check_evals(otlp_http_receiver.wait_for_spans(6), trace)
        eventually(lambda: _check_counters(sc.metrics(), "http", 1, spans=3, evals=2))


def test_otlp_json_over_http(
    tmp_path: Path, otlp_grpc_receiver: OtlpGrpcReceiver, forward_rx: RawGrpcReceiver
) -> None:
    config = sidecar_config(
        export=export_to(otlp_grpc_receiver), forward=forward_to(forward_rx.endpoint)
    )
    trace = make_trace("py-json-app")
    body = encode_spans_json(trace.spans).encode()
    with running_sidecar(tmp_path, config) as sc:
        response = post_http(sc, body, "application/json")
        assert response.status_code == 200, response.text
        assert response.headers["Content-Type"] == "application/json"
        assert json.loads(response.text) == {}
        # JSON is forwarded as the same request in protobuf.
        [forwarded] = forward_rx.wait_for_bodies(1)
        request = ExportTraceServiceRequest.FromString(forwarded)
        assert request == decode_request_json(body)
        assert request == ExportTraceServiceRequest.FromString(request_bytes(trace.spans))
        _check_evals(otlp_grpc_receiver.wait_for_spans(6), trace)
        # gzip JSON too
        response = post_http(
            sc, gzip.compress(body), "application/json", {"Content-Encoding": "gzip"}
        )
        assert response.status_code == 200, response.text
        forward_rx.wait_for_bodies(2)
        assert (
            sc.metrics().value("otlp_receiver_requests_total", transport="http", outcome="ok") == 2
        )


def _non_canonical(body: bytes) -> bytes:
    """The same request, encoded the way no protobuf library would write it: an unknown field
    first, and the first ResourceSpans' fields in reverse order. Parsing and re-serializing
    changes these bytes, so only a forwarder that never re-encodes passes them on as they are."""
    request = ExportTraceServiceRequest.FromString(body)
    rs = request.resource_spans[0]
    resource = rs.resource.SerializeToString()
    scopes = b"".join(
        b"\x12" + _varint(len(s)) + s for s in (x.SerializeToString() for x in rs.scope_spans)
    )
    reordered = scopes + b"\x0a" + _varint(len(resource)) + resource
    out: bytes = b"\xf8\x07\x2a"  # field 127, varint 42: unknown to every OTLP version
    out += b"\x0a" + _varint(len(reordered)) + reordered
    for other in request.resource_spans[1:]:
        data = other.SerializeToString()
        out += b"\x0a" + _varint(len(data)) + data
    assert ExportTraceServiceRequest.FromString(out).SerializeToString() != out
    return out


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def test_forwarding_never_re_encodes(
    tmp_path: Path, otlp_grpc_receiver: OtlpGrpcReceiver, forward_rx: RawGrpcReceiver
) -> None:
    config = sidecar_config(
        export=export_to(otlp_grpc_receiver), forward=forward_to(forward_rx.endpoint)
    )
    grpc_trace, http_trace = make_trace("raw-grpc"), make_trace("raw-http")
    grpc_body = _non_canonical(request_bytes(grpc_trace.spans))
    http_body = _non_canonical(request_bytes(http_trace.spans))
    with running_sidecar(tmp_path, config) as sc:
        response = send_grpc(sc.grpc_endpoint, grpc_body)
        assert response == ExportTraceServiceResponse()
        assert not response.HasField("partial_success")
        assert post_http(sc, http_body).status_code == 200
        bodies = forward_rx.wait_for_bodies(2)
        assert bodies == [grpc_body, http_body]
        # ...and they were still understood: both traces evaluated.
        got = otlp_grpc_receiver.wait_for_spans(12)
        _check_evals(got, grpc_trace)
        _check_evals(got, http_trace)


@pytest.mark.parametrize("compression", [None, "gzip"])
def test_forwarding_over_http_to_an_http_backend(
    tmp_path: Path,
    otlp_grpc_receiver: OtlpGrpcReceiver,
    otlp_http_receiver: OtlpHttpReceiver,
    compression: str | None,
) -> None:
    config = sidecar_config(
        export=export_to(otlp_grpc_receiver),
        forward=forward_to(otlp_http_receiver.base_url, "http/protobuf", compression=compression),
    )
    trace = make_trace("to-http")
    sent = request_bytes(trace.spans)
    with running_sidecar(tmp_path, config) as sc:
        assert send_grpc(sc.grpc_endpoint, sent) == ExportTraceServiceResponse()
        otlp_http_receiver.wait_for_spans(3)
        [received] = otlp_http_receiver.received
        assert received.headers["content-type"] == "application/x-protobuf"
        assert received.headers.get("content-encoding") == compression
        assert received.request.SerializeToString() == sent
        _check_evals(otlp_grpc_receiver.wait_for_spans(6), trace)


def test_gzip_forwarding_over_grpc_delivers_the_same_bytes(
    tmp_path: Path, forward_rx: RawGrpcReceiver
) -> None:
    config = sidecar_config(forward=forward_to(forward_rx.endpoint, compression="gzip"))
    sent = _non_canonical(request_bytes(make_trace("gz").spans))
    with running_sidecar(tmp_path, config) as sc:
        assert post_http(sc, gzip.compress(sent), headers={"Content-Encoding": "gzip"}).ok
        assert forward_rx.wait_for_bodies(1) == [sent]


def _eval_marked_request() -> tuple[bytes, set[int]]:
    """Two kinds of eval spans that would match the rule if they were ordinary spans."""
    in_scope = make_trace("evals-a", ("billing",), scope="otel_online_eval")
    marked = make_trace("evals-b", ("billing",), chat_attrs={"online_eval.rule": "elsewhere"})
    spans = in_scope.spans + marked.named("chat")  # the marked trace's root is an ordinary span
    return request_bytes(spans), in_scope.ids() | marked.ids("chat")


def test_eval_spans_are_forwarded_but_never_evaluated(
    tmp_path: Path, otlp_grpc_receiver: OtlpGrpcReceiver, forward_rx: RawGrpcReceiver
) -> None:
    config = sidecar_config(
        export=export_to(otlp_grpc_receiver),
        forward=forward_to(forward_rx.endpoint),
        rules=[  # a rule that picks everything with an output, and one for every span
            {
                "name": RULE,
                "apply_to": {"span_names": ["chat"]},
                "scorers": ["nonempty", "category"],
            },
            {"name": "all", "scorers": ["nonempty"]},
        ],
    )
    body, eval_ids = _eval_marked_request()
    ordinary = make_trace("ordinary", ("billing",))
    with running_sidecar(tmp_path, config) as sc:
        assert send_grpc(sc.grpc_endpoint, body) == ExportTraceServiceResponse()
        assert post_http(sc, body).status_code == 200
        # An ordinary trace afterwards: once its evals are out, those of the first would be.
        assert (
            send_grpc(sc.grpc_endpoint, request_bytes(ordinary.spans))
            == ExportTraceServiceResponse()
        )
        forward_rx.wait_for_bodies(3)
        assert forward_rx.bodies[:2] == [body, body]
        assert eval_ids <= set(forward_rx.span_ids())
        got = otlp_grpc_receiver.wait_for_spans(2 + 1 + 3)  # 2 chat evals + root eval + scores
        m = wait_until(
            lambda: (m := sc.metrics()).value("online_eval_evals_total") == 3 and m,
            what="the ordinary trace's evaluations",
        )
        assert m.value("online_eval_evals_total", rule=RULE) == 1
        assert m.value("online_eval_evals_total", rule="all") == 2
        assert m.value("otlp_receiver_spans_total", result="accepted") == 2 * len(eval_ids) + 2
        parents = {int.from_bytes(s.parent_span_id, "big") for _, _, s in eval_spans(got)}
        assert parents == ordinary.ids()
        assert not parents & eval_ids
        # The sidecar's own output, sent back in, is not evaluated either.
        own = ExportTraceServiceRequest(
            resource_spans=otlp_grpc_receiver.requests[0].resource_spans
        )
        assert send_grpc(sc.grpc_endpoint, own.SerializeToString()) == ExportTraceServiceResponse()
        forward_rx.wait_for_bodies(4)
        sc_metrics = sc.metrics()
        assert sc_metrics.value("online_eval_evals_total") == 3
        assert sc_metrics.value("online_eval_queue_size") == 0


def test_deeply_nested_attribute_that_decodes_is_evaluated(
    tmp_path: Path, otlp_grpc_receiver: OtlpGrpcReceiver
) -> None:
    """45 levels of arrays in an attribute the rule's filter reads: still evaluated."""
    value = AnyValue(string_value="leaf")
    for _ in range(45):
        outer = AnyValue()
        outer.array_value.values.append(value)
        value = outer
    trace = make_trace("deep", ("billing",))
    request = ExportTraceServiceRequest.FromString(request_bytes(trace.spans))
    for rs in request.resource_spans:
        for ss in rs.scope_spans:
            for span in ss.spans:
                span.attributes.append(KeyValue(key="deep", value=value))
    config = sidecar_config(
        export=export_to(otlp_grpc_receiver),
        rules=[
            {
                "name": RULE,
                "apply_to": {"span_names": ["chat"]},
                "filter": "attributes['deep'] IS NOT NULL AND output IS NOT NULL",
                "scorers": ["nonempty"],
            }
        ],
    )
    with running_sidecar(tmp_path, config) as sc:
        assert (
            send_grpc(sc.grpc_endpoint, request.SerializeToString()) == ExportTraceServiceResponse()
        )
        got = otlp_grpc_receiver.wait_for_spans(2)
        assert {
            int.from_bytes(s.parent_span_id, "big") for _, _, s in eval_spans(got)
        } == trace.ids("chat")
        m = sc.metrics()
        assert m.value("online_eval_spans_dropped_total", reason="error") == 0


def test_metrics_page_declares_every_family(tmp_path: Path) -> None:
    with running_sidecar(tmp_path, sidecar_config()) as sc:
        response = sc.get("/metrics")
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        families = {
            line.split()[2] for line in response.text.splitlines() if line.startswith("# TYPE")
        }
        assert {
            "online_eval_spans_seen_total",
            "online_eval_evals_total",
            "online_eval_spans_dropped_total",
            "online_eval_queue_size",
            "otlp_receiver_requests_total",
            "otlp_receiver_spans_total",
            "otlp_receiver_rejects_total",
            "online_eval_shipper_sent_spans_total",
            "online_eval_shipper_refused_spans_total",
        } <= families
        assert sc.get("/nope").status_code == 404
        assert requests.post(sc.url("/v1/metrics"), data=b"", timeout=5).status_code == 404
