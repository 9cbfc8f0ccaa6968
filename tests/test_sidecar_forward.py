"""Forwarding when the downstream is down, slow to accept, or refusing: retries, a bounded
buffer that refuses with a retry hint when full, and nothing acknowledged lost."""

from __future__ import annotations

import threading
from pathlib import Path

import grpc
import pytest
from google.rpc.status_pb2 import Status as RpcStatus
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcSpanExporter,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.trace.export import SpanExportResult

from tests.otlp_receiver import OtlpGrpcReceiver, OtlpHttpReceiver
from tests.sidecar_helpers import (
    RawGrpcReceiver,
    eval_spans,
    export_to,
    forward_to,
    free_port,
    make_trace,
    post_http,
    request_bytes,
    retry_info,
    running_sidecar,
    send_grpc,
    sidecar_config,
    wait_until,
)

ALL_SPANS = [{"name": "every-span", "scorers": ["nonempty"]}]


@pytest.mark.slow
def test_buffered_spans_arrive_when_the_downstream_comes_up(
    tmp_path: Path, otlp_grpc_receiver: OtlpGrpcReceiver
) -> None:
    port = free_port()  # nothing listens there yet
    config = sidecar_config(
        export=export_to(otlp_grpc_receiver), forward=forward_to(f"127.0.0.1:{port}")
    )
    bodies = [request_bytes(make_trace(f"app-{i}").spans) for i in range(6)]
    with running_sidecar(tmp_path, config) as sc:
        for i, body in enumerate(bodies):  # acknowledged: the buffer has room
            if i % 2:
                assert post_http(sc, body).status_code == 200
            else:
                assert send_grpc(sc.grpc_endpoint, body) == ExportTraceServiceResponse()
        wait_until(
            lambda: (
                sc.metrics().value("online_eval_shipper_failures_total", pipeline="forward") >= 3
            ),
            what="forwarding attempts to fail",
        )
        # Evaluation does not wait for forwarding.
        otlp_grpc_receiver.wait_for_spans(6 * 6)
        with RawGrpcReceiver(port) as downstream:
            assert downstream.wait_for_bodies(6, timeout=15) == bodies  # in order, unchanged
            m = wait_until(
                lambda: (m := sc.metrics()).value("online_eval_shipper_queued_bytes") == 0 and m
            )
            assert m.value("online_eval_shipper_sent_spans_total", pipeline="forward") == 18
            assert m.value("online_eval_shipper_retries_total", pipeline="forward") >= 3
            assert m.value("online_eval_shipper_dropped_spans_total", pipeline="forward") == 0
            assert len(downstream.bodies) == 6  # each once
        assert sc.stop() == 0


def test_full_forward_buffer_refuses_with_a_retry_hint(
    tmp_path: Path, otlp_grpc_receiver: OtlpGrpcReceiver
) -> None:
    port = free_port()
    config = sidecar_config(
        export=export_to(otlp_grpc_receiver),
        forward=forward_to(f"127.0.0.1:{port}", max_bytes=1024, max_elapsed_s=120),
        rules=ALL_SPANS,
    )
    one_span = [request_bytes(make_trace(f"s{i}", answers=()).spans) for i in range(20)]
    assert all(len(b) < 400 for b in one_span)
    with running_sidecar(tmp_path, config) as sc:
        accepted: list[bytes] = []
        grpc_refused = http_refused = 0
        for i, body in enumerate(one_span):
            if i % 2 == 0:
                try:
                    send_grpc(sc.grpc_endpoint, body)
                    accepted.append(body)
                except grpc.RpcError as error:
                    assert error.code() == grpc.StatusCode.UNAVAILABLE
                    assert "forwarding buffer is full" in error.details()
                    assert retry_info(error) == 2.0
                    grpc_refused += 1
            else:
                response = post_http(sc, body)
                if response.status_code == 200:
                    accepted.append(body)
                else:
                    assert response.status_code == 503
                    assert response.headers["Retry-After"] == "2"
                    status = RpcStatus.FromString(response.content)
                    assert status.code == 14 and "buffer is full" in status.message
                    http_refused += 1
        assert 1 <= len(accepted) <= 1024 // 295
        assert grpc_refused >= 5 and http_refused >= 5
        refused = grpc_refused + http_refused
        m = sc.metrics()
        assert m.value("otlp_receiver_rejects_total", reason="forward_buffer_full") == refused
        assert m.value("online_eval_shipper_refused_spans_total", pipeline="forward") == refused
        assert m.value("otlp_receiver_requests_total", outcome="unavailable") == refused
        assert m.value("otlp_receiver_spans_total", result="accepted") == len(accepted)
        # Refused requests are not evaluated: the client will send them again.
        wait_until(lambda: len(eval_spans(otlp_grpc_receiver.spans())) == len(accepted))
        assert sc.metrics().value("online_eval_evals_total") == len(accepted)

        # A real client: the SDK's exporter retries the refusal until the buffer drains.
        trace = make_trace("sdk", answers=())
        exporter = GrpcSpanExporter(
            endpoint=f"http://{sc.grpc_endpoint}", insecure=True, timeout=15
        )
        result: list[SpanExportResult] = []
        thread = threading.Thread(target=lambda: result.append(exporter.export(trace.spans)))
        try:
            thread.start()
            wait_until(
                lambda: sc.metrics().value("otlp_receiver_rejects_total") > refused,
                what="the SDK exporter to be refused",
            )
            with RawGrpcReceiver(port) as downstream:
                thread.join(20)
                assert result == [SpanExportResult.SUCCESS]
                bodies = downstream.wait_for_bodies(len(accepted) + 1, timeout=15)
                assert bodies == [*accepted, request_bytes(trace.spans)]
        finally:
            thread.join(20)
            exporter.shutdown()


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_downstream_that_refuses_a_few_times_gets_everything_once(
    tmp_path: Path,
    otlp_grpc_receiver: OtlpGrpcReceiver,
    otlp_http_receiver: OtlpHttpReceiver,
    protocol: str,
) -> None:
    if protocol == "grpc":
        downstream: OtlpGrpcReceiver | OtlpHttpReceiver = otlp_grpc_receiver
        otlp_grpc_receiver.fail_with(grpc.StatusCode.UNAVAILABLE, times=3)
        forward = forward_to(otlp_grpc_receiver.endpoint)
        evals: OtlpGrpcReceiver | OtlpHttpReceiver = otlp_http_receiver
    else:
        downstream = otlp_http_receiver
        otlp_http_receiver.fail_with(503, times=3, retry_after_s=0)
        forward = forward_to(otlp_http_receiver.base_url, "http/protobuf")
        evals = otlp_grpc_receiver
    # The eval span export is refused twice too (its default backoff: 0.5 s, with jitter).
    if isinstance(evals, OtlpGrpcReceiver):
        evals.fail_with(grpc.StatusCode.UNAVAILABLE, times=2)
    else:
        evals.fail_with(503, times=2)
    trace = make_trace("flaky")
    body = request_bytes(trace.spans)
    with running_sidecar(tmp_path, sidecar_config(export=export_to(evals), forward=forward)) as sc:
        assert send_grpc(sc.grpc_endpoint, body) == ExportTraceServiceResponse()
        downstream.wait_for_spans(3)
        evals.wait_for_spans(6)
        m = wait_until(
            lambda: (m := sc.metrics()).value("online_eval_shipper_sent_spans_total") == 9 and m
        )
        assert downstream.attempts == 4
        assert [r.SerializeToString() for r in downstream.requests] == [body]
        assert evals.attempts == 2 + len(evals.requests)  # eval spans may come in 2 batches
        assert len(eval_spans(evals.spans(), trace.trace_id)) == 2
        for pipeline, failures in (("forward", 3), ("export", 2)):
            assert m.value("online_eval_shipper_retries_total", pipeline=pipeline) == failures
            assert m.value("online_eval_shipper_failures_total", pipeline=pipeline) == failures
            assert m.value("online_eval_shipper_dropped_spans_total", pipeline=pipeline) == 0


def test_a_non_retryable_answer_drops_that_request_and_counts_it(
    tmp_path: Path, otlp_http_receiver: OtlpHttpReceiver
) -> None:
    otlp_http_receiver.fail_with(400, times=1)
    config = sidecar_config(forward=forward_to(otlp_http_receiver.base_url, "http/protobuf"))
    first, second = make_trace("first"), make_trace("second")
    with running_sidecar(tmp_path, config) as sc:
        assert (
            send_grpc(sc.grpc_endpoint, request_bytes(first.spans)) == ExportTraceServiceResponse()
        )
        otlp_http_receiver.wait_for_attempts(1)
        assert (
            send_grpc(sc.grpc_endpoint, request_bytes(second.spans)) == ExportTraceServiceResponse()
        )
        otlp_http_receiver.wait_for_spans(3)
        m = wait_until(
            lambda: (m := sc.metrics()).value("online_eval_shipper_sent_spans_total") == 3 and m
        )
        assert m.value("online_eval_shipper_dropped_spans_total", pipeline="forward") == 3
        assert m.value("online_eval_shipper_retries_total", pipeline="forward") == 0
        assert otlp_http_receiver.attempts == 2
        [request] = otlp_http_receiver.requests
        assert request.SerializeToString() == request_bytes(second.spans)
        assert "dropping a request of 3 spans" in sc.stderr()
