"""The identities of docs/metrics.md on a real sidecar's ``/metrics``, after an outage of the
forward target: real SDK clients (gRPC and HTTP) retrying what the sidecar refused, a real
downstream stopped and started again on its port, real eval-span export."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from tests.otlp_receiver import OtlpGrpcReceiver
from tests.sidecar_helpers import (
    Metrics,
    RawGrpcReceiver,
    export_to,
    forward_to,
    free_port,
    running_sidecar,
    sidecar_config,
    wait_until,
)
from tests.test_tools_support import make_traces

RULES = [
    {
        "name": "chats",
        "apply_to": {"span_names": ["chat"]},
        "sampling": 0.5,
        "filter": "output IS NOT NULL",
        "scorers": ["nonempty"],
    },
    {
        "name": "roots",
        "apply_to": {"root_spans": True},
        "sampling": 0.6,
        "sampling_seed": 3,
        "scorers": ["nonempty"],
    },
    {"name": "everything", "sampling": 0.3, "scorers": ["nonempty", "category"]},
]
BATCHES = 40  # per client


def _batch(i: int) -> list[ReadableSpan]:
    """A root with an answered chat span and a chat span without output; odd ones no root."""
    (trace,) = make_traces([["billing", None]])
    return trace.chats if i % 2 else trace.spans


def _client(
    exporter: SpanExporter, results: list[SpanExportResult], started: threading.Event
) -> None:
    for i in range(BATCHES):
        results.append(exporter.export(_batch(i)))
        if i == 5:
            started.set()
        time.sleep(0.02)


def _counters(m: Metrics) -> dict[str, float]:
    names = sorted(n for n in m.names() if n.endswith(("_total", "_bytes")))
    return {n: m.value(n) for n in names}


@pytest.mark.slow
def test_every_identity_holds_after_a_forward_outage(
    tmp_path: Path, otlp_grpc_receiver: OtlpGrpcReceiver
) -> None:
    port = free_port()
    downstream = RawGrpcReceiver(port)
    config = sidecar_config(
        export=export_to(otlp_grpc_receiver),
        # A small buffer (refusals while the target is down) and a short give-up (drops).
        forward=forward_to(f"127.0.0.1:{port}", max_bytes=6000, max_elapsed_s=0.8),
        rules=RULES,
    )
    try:
        with running_sidecar(tmp_path, config) as sc:
            started = threading.Event()
            results: dict[str, list[SpanExportResult]] = {"grpc": [], "http": []}
            exporters: dict[str, SpanExporter] = {
                "grpc": GrpcSpanExporter(endpoint=sc.grpc_endpoint, insecure=True, timeout=30),
                "http": HttpSpanExporter(endpoint=sc.url(), timeout=30),
            }
            threads = [
                threading.Thread(target=_client, args=(exporters[k], results[k], started))
                for k in exporters
            ]
            for t in threads:
                t.start()
            assert started.wait(20)
            before = downstream
            before.stop()  # the outage
            wait_until(
                lambda: sc.metrics().value(
                    "otlp_receiver_rejects_total", reason="forward_buffer_full"
                ),
                timeout=20,
                what="the sidecar to refuse requests while the target is down",
            )
            time.sleep(1.0)  # long enough for buffered requests to be given up on
            downstream = RawGrpcReceiver(port)  # back, on the same port
            for t in threads:
                t.join(90)
                assert not t.is_alive()
            for exporter in exporters.values():
                exporter.shutdown()
            assert all(r == [SpanExportResult.SUCCESS] * BATCHES for r in results.values())

            # Settled: nothing waits anywhere, and two scrapes a while apart agree.
            def settled() -> Metrics | None:
                m = sc.metrics()
                if m.value("online_eval_shipper_queued_bytes") or m.value("online_eval_queue_size"):
                    return None
                time.sleep(0.5)
                again = sc.metrics()
                return again if _counters(again) == _counters(m) else None

            m = wait_until(settled, timeout=30, what="the counts to settle")

            sent = 2 * sum(len(_batch(i)) for i in range(BATCHES))
            accepted = m.value("otlp_receiver_spans_total", result="accepted")
            assert accepted == sent  # every span once: the clients retried every refusal
            forwarded = m.value("online_eval_shipper_sent_spans_total", pipeline="forward")
            forward_dropped = m.value("online_eval_shipper_dropped_spans_total", pipeline="forward")
            assert m.value("otlp_receiver_rejects_total", reason="forward_buffer_full") > 0
            assert forward_dropped > 0  # the outage outlasted the retries of some requests
            assert accepted == forwarded + forward_dropped
            # At least: a request the target took as it stopped was not acknowledged to us.
            assert len(before.span_ids()) + len(downstream.span_ids()) >= forwarded

            seen = m.value("online_eval_spans_seen_total")
            assert seen == accepted, "seen counts refused (and retried) requests"
            for rule in ("chats", "roots", "everything"):

                def v(name: str, rule: str = rule) -> float:
                    return m.value(name, rule=rule)

                assert seen == v("online_eval_spans_selected_total") + v(
                    "online_eval_spans_not_selected_total"
                ), rule
                assert v("online_eval_spans_selected_total") == v(
                    "online_eval_spans_sampled_total"
                ) + v("online_eval_spans_sampled_out_total"), rule
                assert v("online_eval_spans_sampled_total") == v(
                    "online_eval_spans_filtered_out_total"
                ) + v("online_eval_evals_total") + v("online_eval_spans_dropped_total"), rule
                assert v("online_eval_evals_total") > 0
            assert m.value("online_eval_spans_filtered_out_total", rule="chats") > 0

            scheduled = m.value("online_eval_eval_spans_scheduled_total")
            exported = m.value("online_eval_eval_spans_exported_total")
            export_dropped = m.value("online_eval_eval_spans_dropped_total")
            assert scheduled == exported + export_dropped
            assert exported == m.value("online_eval_shipper_sent_spans_total", pipeline="export")
            evals = m.value("online_eval_evals_total")
            scores = m.value("online_eval_scores_total")
            assert scheduled == evals + scores  # an eval span and a span per score
            assert len(otlp_grpc_receiver.spans()) == exported
            assert sc.stop() == 0
    finally:
        downstream.stop()
