"""The sidecar's logs door: ``LogsService/Export`` and ``POST /v1/logs``.

An app instrumented by ``opentelemetry-instrumentation-openai-v2`` in event mode sends its
spans (no content) and its log records (the prompt and the answer) through the SDK's own OTLP
exporters, in either order, over gRPC or HTTP: the sidecar joins them and scores the answers.
And the door's answers: partial success for bad ids, 400 for undecodable bodies (protobuf,
JSON), gzip, the bearer token, the forwarding of log requests to ``forward:``'s logs endpoint.
"""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import openai
import pytest
import requests
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.exporter.otlp.proto.http._log_exporter import (
    OTLPLogExporter as HttpLogExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.trace import ReadableSpan

from tests.fake_openai import FakeOpenAI
from tests.instrumentation.harness import instrumented, is_app, responder
from tests.otlp_receiver import OtlpGrpcReceiver, attrs, otlp_grpc_receiver
from tests.pki import Pki
from tests.sidecar_helpers import (
    Sidecar,
    eventually,
    export_to,
    forward_to,
    running_sidecar,
    sidecar_config,
)

__all__ = ["otlp_grpc_receiver"]

LOGS_METHOD = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
ENV = {
    "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "event_only",
    "OTEL_SEMCONV_STABILITY_OPT_IN": "gen_ai_latest_experimental",
}
RULES = [{"name": "answers", "filter": "output IS NOT NULL", "scorers": ["nonempty"]}]
SCORERS = {"nonempty": {"type": "not_empty"}}


@pytest.fixture(scope="module")
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        fake.respond_with(responder)
        yield fake


@pytest.fixture(scope="module")
def app_signals(server: FakeOpenAI) -> tuple[list[ReadableSpan], list[Any]]:
    """Two chat calls of an event-mode app: its model spans and its log records."""
    memory = InMemoryLogRecordExporter()
    logs = LoggerProvider()
    logs.add_log_record_processor(SimpleLogRecordProcessor(memory))
    with instrumented(OpenAIInstrumentor, ENV, logger_provider=logs) as capture:
        with openai.OpenAI(base_url=server.base_url, api_key="test", max_retries=0) as client:
            for question in ("Capital of France?", "Capital of Italy?"):
                client.chat.completions.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": question}]
                )
        spans = [s for s in capture.take() if not is_app(s)]
    logs.shutdown()
    records = list(memory.get_finished_logs())
    assert len(spans) == 2 and all(not s.events for s in spans)  # no content on the spans
    assert len(records) == 2 and all(r.log_record.span_id for r in records)
    return spans, records


def _config(rx: OtlpGrpcReceiver, **kw: Any) -> dict[str, Any]:
    return sidecar_config(export=export_to(rx), rules=RULES, scorers=SCORERS, **kw)


def _send(
    sc: Sidecar,
    protocol: str,
    spans: Sequence[ReadableSpan],
    records: Sequence[Any],
    spans_first: bool,
) -> None:
    if protocol == "grpc":
        span_exporter: Any = OTLPSpanExporter(endpoint=sc.grpc_endpoint, insecure=True)
        log_exporter: Any = OTLPLogExporter(endpoint=sc.grpc_endpoint, insecure=True)
    else:
        span_exporter = HttpSpanExporter(endpoint=sc.url("/v1/traces"))
        log_exporter = HttpLogExporter(endpoint=sc.url("/v1/logs"))
    steps = [lambda: span_exporter.export(spans), lambda: log_exporter.export(records)]
    for step in steps if spans_first else reversed(steps):
        assert step().name == "SUCCESS"
        # Records that came before the engine looked at their spans would be joined at
        # once: give it the time to park them (well within join_s), so that they wait.
        time.sleep(0.5 if spans_first else 0)
    span_exporter.shutdown()
    log_exporter.shutdown()


def _scores(rx: OtlpGrpcReceiver, n: int) -> list[dict[str, Any]]:
    got = rx.wait_for_spans(n, timeout=15)
    return [attrs(s.attributes) for _, _, s in got if s.name == "score nonempty"]


@pytest.mark.parametrize("protocol", ["grpc", "http"])
@pytest.mark.parametrize("spans_first", [False, True], ids=["records_first", "spans_first"])
def test_event_mode_app_is_scored_through_the_sidecar(
    tmp_path: Path,
    otlp_grpc_receiver: OtlpGrpcReceiver,
    app_signals: tuple[list[ReadableSpan], list[Any]],
    protocol: str,
    spans_first: bool,
) -> None:
    spans, records = app_signals
    with running_sidecar(tmp_path, _config(otlp_grpc_receiver)) as sc:
        _send(sc, protocol, spans, records, spans_first)
        scores = _scores(otlp_grpc_receiver, 4)  # an eval span and a score span per call
        assert len(scores) == 2, scores
        assert all(a["gen_ai.evaluation.score.value"] == 1.0 for a in scores)
        metrics = sc.metrics()
        assert metrics.value("otlp_receiver_log_records_total", result="accepted") == 2
        assert metrics.value("otlp_receiver_log_requests_total", transport=protocol) == 1
        assert metrics.value("online_eval_logs_records_total", outcome="joined") == 2
        assert metrics.value("online_eval_logs_joined_spans_total") == 2
        waited = metrics.value("online_eval_logs_span_waits_total", outcome="records")
        assert waited == (2 if spans_first else 0)


def test_without_records_the_spans_wait_join_s_then_have_no_output(
    tmp_path: Path,
    otlp_grpc_receiver: OtlpGrpcReceiver,
    app_signals: tuple[list[ReadableSpan], list[Any]],
) -> None:
    spans, _ = app_signals
    config = _config(otlp_grpc_receiver)
    config["extract"] = {"join_s": 0.3}
    with running_sidecar(tmp_path, config) as sc:
        exporter = OTLPSpanExporter(endpoint=sc.grpc_endpoint, insecure=True)
        assert exporter.export(spans).name == "SUCCESS"
        exporter.shutdown()

        def waited() -> None:
            assert sc.metrics().value("online_eval_logs_span_waits_total", outcome="timeout") == 2

        eventually(waited, timeout=10)
        metrics = sc.metrics()
        assert metrics.value("online_eval_spans_no_content_total") == 2
        assert metrics.value("online_eval_spans_filtered_out_total") == 2


def _raw_logs(body: bytes, endpoint: str, metadata: Sequence[tuple[str, str]] = ()) -> Any:
    with grpc.insecure_channel(endpoint) as channel:
        call = channel.unary_unary(LOGS_METHOD, request_serializer=None, response_deserializer=None)
        return ExportLogsServiceResponse.FromString(call(body, timeout=5, metadata=metadata))


def _logs_request(records: Sequence[Any]) -> ExportLogsServiceRequest:
    request: ExportLogsServiceRequest = encode_logs(records)
    return request


def _bad_id_request(records: Sequence[Any]) -> ExportLogsServiceRequest:
    request = _logs_request(records)
    request.resource_logs[0].scope_logs[0].log_records[0].span_id = b"\x01\x02\x03"
    return request


def test_answers_partial_success_invalid_and_forwards_what_it_accepts(
    tmp_path: Path,
    otlp_grpc_receiver: OtlpGrpcReceiver,
    app_signals: tuple[list[ReadableSpan], list[Any]],
) -> None:
    _, records = app_signals
    downstream = OtlpGrpcReceiver()
    try:
        config = _config(otlp_grpc_receiver, forward=forward_to(downstream.endpoint))
        with running_sidecar(tmp_path, config) as sc:
            # As received: forwarded unchanged to the logs endpoint.
            sent = _logs_request(records)
            assert not _raw_logs(sent.SerializeToString(), sc.grpc_endpoint).HasField(
                "partial_success"
            )
            # A record with a 3-byte span id: rejected alone, the other one goes on.
            answer = _raw_logs(_bad_id_request(records).SerializeToString(), sc.grpc_endpoint)
            assert answer.partial_success.rejected_log_records == 1
            assert "span_id must be empty or 8 bytes (got 3 bytes)" in (
                answer.partial_success.error_message
            )
            # Undecodable.
            with pytest.raises(grpc.RpcError) as info:
                _raw_logs(b"\xff\xff\xff", sc.grpc_endpoint)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "cannot decode the protobuf logs request" in str(info.value.details())

            got = downstream.wait_for_log_records(3)
            assert downstream.log_requests[0].request == sent
            assert (
                len(downstream.log_requests[1].request.resource_logs[0].scope_logs[0].log_records)
                == 1
            )
            assert [r.span_id for _, _, r in got[:2]] == [
                r.log_record.span_id.to_bytes(8, "big") for r in records
            ]
            assert downstream.spans() == []  # log requests go to the logs endpoint only
            metrics = sc.metrics()
            assert metrics.value("otlp_receiver_log_records_total", result="accepted") == 3
            assert metrics.value("otlp_receiver_log_records_total", result="rejected") == 1
            assert metrics.value("otlp_receiver_log_rejects_total", reason="invalid") == 1
            assert (
                metrics.value("online_eval_shipper_sent_spans_total", pipeline="forward_logs") == 3
            )
    finally:
        downstream.stop()


def test_http_json_gzip_and_errors_name_the_place(
    tmp_path: Path,
    otlp_grpc_receiver: OtlpGrpcReceiver,
    app_signals: tuple[list[ReadableSpan], list[Any]],
) -> None:
    from google.protobuf import json_format

    _, records = app_signals
    request = _logs_request(records)
    data = json_format.MessageToDict(request)
    for rl in data["resourceLogs"]:
        for sl in rl["scopeLogs"]:
            for rec in sl["logRecords"]:
                for key in ("traceId", "spanId"):
                    rec[key] = __import__("base64").b64decode(rec[key]).hex()
    body = json.dumps(data).encode()
    with running_sidecar(tmp_path, _config(otlp_grpc_receiver)) as sc:
        url = sc.url("/v1/logs")
        ok = requests.post(
            url,
            data=gzip.compress(body),
            headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
            timeout=10,
        )
        assert ok.status_code == 200, ok.text
        assert ok.json() == {}
        bad = json.loads(body)
        bad["resourceLogs"][0]["scopeLogs"][0]["logRecords"][1]["spanId"] = "xyz"
        refused = requests.post(
            url, data=json.dumps(bad), headers={"Content-Type": "application/json"}, timeout=10
        )
        assert refused.status_code == 400
        assert refused.json()["message"].startswith(
            "cannot decode the OTLP/JSON logs request: "
            "resourceLogs[0].scopeLogs[0].logRecords[1].spanId: span_id must be hex digits"
        )
        wrong_type = requests.post(
            url, data=b"x", headers={"Content-Type": "text/plain"}, timeout=10
        )
        assert wrong_type.status_code == 415
        assert requests.get(url, timeout=10).status_code == 405
        metrics = sc.metrics()
        assert metrics.value("otlp_receiver_log_records_total", result="accepted") == 2
        assert metrics.value("otlp_receiver_log_requests_total", outcome="invalid") == 1
        assert (
            metrics.value("otlp_receiver_log_requests_total", outcome="unsupported_media_type") == 1
        )


def test_the_bearer_token_guards_the_logs_door(
    tmp_path: Path,
    otlp_grpc_receiver: OtlpGrpcReceiver,
    app_signals: tuple[list[ReadableSpan], list[Any]],
) -> None:
    _, records = app_signals
    body = _logs_request(records).SerializeToString()
    config = _config(otlp_grpc_receiver, receiver={"auth": {"bearer_token": "s3cret"}})
    with running_sidecar(tmp_path, config, http_headers={"Authorization": "Bearer s3cret"}) as sc:
        with pytest.raises(grpc.RpcError) as info:
            _raw_logs(body, sc.grpc_endpoint)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert not _raw_logs(
            body, sc.grpc_endpoint, (("authorization", "Bearer s3cret"),)
        ).HasField("partial_success")
        denied = requests.post(
            sc.url("/v1/logs"),
            data=body,
            headers={"Content-Type": "application/x-protobuf"},
            timeout=10,
        )
        assert denied.status_code == 401
        metrics = sc.metrics()
        assert metrics.value("otlp_receiver_log_requests_total", outcome="unauthenticated") == 2
        assert metrics.value("otlp_receiver_log_records_total", result="accepted") == 2


@pytest.mark.usefixtures("no_ca_bundle_env")  # requests would trust that bundle instead
def test_log_exporters_over_tls(
    tmp_path: Path,
    pki: Pki,
    otlp_grpc_receiver: OtlpGrpcReceiver,
    app_signals: tuple[list[ReadableSpan], list[Any]],
) -> None:
    _, records = app_signals
    tls = {"cert_file": str(pki.server_crt), "key_file": str(pki.server_key)}
    config = _config(otlp_grpc_receiver, receiver={"tls": tls})
    with running_sidecar(tmp_path, config, scheme="https", ssl_verify=str(pki.ca)) as sc:
        creds = grpc.ssl_channel_credentials(root_certificates=pki.ca.read_bytes())
        over_grpc = OTLPLogExporter(endpoint=f"https://{sc.grpc_endpoint}", credentials=creds)
        over_http = HttpLogExporter(endpoint=sc.url("/v1/logs"), certificate_file=str(pki.ca))
        for exporter in (over_grpc, over_http):
            assert exporter.export(records).name == "SUCCESS"
            exporter.shutdown()
        metrics = sc.metrics()
        assert metrics.value("otlp_receiver_log_records_total", result="accepted") == 4
        with pytest.raises(grpc.RpcError) as plain:  # no plaintext next to TLS
            _raw_logs(_logs_request(records).SerializeToString(), sc.grpc_endpoint)
        assert plain.value.code() == grpc.StatusCode.UNAVAILABLE
