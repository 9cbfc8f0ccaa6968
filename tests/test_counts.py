"""Counts that add up and a flush that tells the truth, in-process: the identities of
docs/metrics.md read from a real MeterProvider while the engine's queue overflows and the
exporter fails, and ``force_flush`` against an unreachable and a reachable OTLP backend."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from otel_online_eval import EvalInput, OnlineEvalSpanProcessor, Rule
from otel_online_eval._batch import ExportBatcher
from otel_online_eval.config import EngineConfig
from tests.otlp_receiver import OtlpGrpcReceiver
from tests.sidecar_helpers import answer_attrs


class FlakyExporter(SpanExporter):
    """Keeps what it exports; every second call fails, and each takes a little while (so that
    the batcher's queue fills up)."""

    def __init__(self) -> None:
        self.kept = InMemorySpanExporter()
        self.calls = 0
        self.lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self.lock:
            self.calls += 1
            failing = self.calls % 2 == 0
        time.sleep(0.05)
        if failing:
            return SpanExportResult.FAILURE
        return self.kept.export(spans)

    def shutdown(self) -> None:
        self.kept.shutdown()


def metric_points(
    reader: InMemoryMetricReader,
) -> dict[str, dict[tuple[tuple[str, Any], ...], Any]]:
    data = reader.get_metrics_data()
    assert data is not None
    out: dict[str, dict[tuple[tuple[str, Any], ...], Any]] = {}
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                points = out.setdefault(metric.name, {})
                for p in metric.data.data_points:
                    key = tuple(sorted((p.attributes or {}).items()))
                    points[key] = getattr(p, "value", None)
    return out


def per_rule(points: dict[tuple[tuple[str, Any], ...], Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for key, value in points.items():
        rule = dict(key)["rule"]
        out[rule] = out.get(rule, 0) + value
    return out


def test_the_identities_hold_with_a_full_queue_and_a_failing_exporter() -> None:
    def slowish(inp: EvalInput) -> float:
        time.sleep(0.005)
        return 1.0

    rules = [
        Rule.create(
            "chats", [slowish], span_names=["chat"], sampling=0.5, filter="output IS NOT NULL"
        ),
        Rule.create("roots", [slowish], root_spans=True, sampling=0.7, sampling_seed=7),
        Rule.create("everything", [lambda inp: 1.0], sampling=0.3),
    ]
    exporter = FlakyExporter()
    reader = InMemoryMetricReader()
    processor = OnlineEvalSpanProcessor(
        {"export": {"console": {}, "batch": {"max_queue_size": 4, "max_export_batch_size": 2}}},
        rules=rules,
        exporter=exporter,
        meter_provider=MeterProvider(metric_readers=[reader]),
        engine=EngineConfig(queue_size=8, max_concurrent_evals=2, threads=1),
    )
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("app")
    for _ in range(150):
        with tracer.start_as_current_span("POST /support", kind=SpanKind.SERVER):
            with tracer.start_as_current_span("chat", attributes=answer_attrs("billing")):
                pass
            attrs = answer_attrs("x")
            del attrs["gen_ai.output.messages"]
            with tracer.start_as_current_span("chat", attributes=attrs):
                pass
            with tracer.start_as_current_span("db"):
                pass
    assert processor.force_flush(30_000) is False  # spans were dropped and exports failed
    m = metric_points(reader)
    seen = m["online_eval.spans.seen"][()]
    assert seen == 600
    selected = per_rule(m["online_eval.spans.selected"])
    not_selected = per_rule(m["online_eval.spans.not_selected"])
    sampled = per_rule(m["online_eval.spans.sampled"])
    sampled_out = per_rule(m["online_eval.spans.sampled_out"])
    filtered_out = per_rule(m["online_eval.spans.filtered_out"])
    evals = per_rule(m["online_eval.evals"])
    dropped = per_rule(m["online_eval.spans.dropped"])
    assert selected == {"chats": 300, "roots": 150, "everything": 600}
    for rule in ("chats", "roots", "everything"):
        assert seen == selected[rule] + not_selected[rule], rule
        assert selected[rule] == sampled[rule] + sampled_out[rule], rule
        assert sampled[rule] == filtered_out[rule] + evals[rule] + dropped[rule], rule
    assert sum(dropped.values()) > 0  # the queue did overflow
    assert dict(m["online_eval.spans.dropped"]).keys() >= {
        (("reason", "queue_full"), ("rule", "chats"))
    }
    assert filtered_out["chats"] > 0 and filtered_out["roots"] == 0
    scheduled = m["online_eval.eval_spans.scheduled"][()]
    exported = m["online_eval.eval_spans.exported"][()]
    export_dropped = {dict(k)["reason"]: v for k, v in m["online_eval.eval_spans.dropped"].items()}
    assert scheduled == 2 * sum(evals.values())  # an eval span and one score span each
    assert scheduled == exported + sum(export_dropped.values())
    assert export_dropped["failed"] > 0 and export_dropped["queue_full"] > 0
    assert exported == len(exporter.kept.get_finished_spans())
    processor.shutdown()
    provider.shutdown()


CONFIG = """
scorers:
  nonempty: {type: not_empty}
rules:
  - name: answers
    apply_to: {span_names: [chat]}
    scorers: [nonempty]
engine: {shutdown_timeout_s: 1}
"""


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when we return: nothing listens


def _readme_app(tmp_path: Path, endpoint: str) -> tuple[OnlineEvalSpanProcessor, TracerProvider]:
    """The README's "Use it in your app" snippet, with the backend's address."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(CONFIG)
    provider = TracerProvider()
    processor = OnlineEvalSpanProcessor.from_yaml(
        rules, exporter=OTLPSpanExporter(endpoint=endpoint, insecure=True)
    )
    provider.add_span_processor(processor)
    with provider.get_tracer("app").start_as_current_span("chat", attributes=answer_attrs("hi")):
        pass
    return processor, provider


def test_force_flush_is_false_and_in_time_when_the_backend_is_unreachable(
    tmp_path: Path,
) -> None:
    processor, provider = _readme_app(tmp_path, f"http://127.0.0.1:{_closed_port()}")
    started = time.monotonic()
    ok = processor.force_flush(1500)
    took = time.monotonic() - started
    assert ok is False
    assert took < 2.5, took  # its timeout, not the exporter's retries
    started = time.monotonic()
    processor.shutdown()  # gives up on the export within engine.shutdown_timeout_s
    provider.shutdown()
    assert time.monotonic() - started < 5


def test_force_flush_is_true_when_the_backend_is_up(
    tmp_path: Path, otlp_grpc_receiver: OtlpGrpcReceiver
) -> None:
    processor, provider = _readme_app(tmp_path, otlp_grpc_receiver.url)
    assert processor.force_flush(10_000) is True
    names = sorted(s.name for _, _, s in otlp_grpc_receiver.spans())
    assert names == ["eval answers", "score nonempty"]
    processor.shutdown()
    provider.shutdown()


def test_a_flush_after_a_loss_is_false_once_then_true_again() -> None:
    exporter = FlakyExporter()
    batcher = ExportBatcher(exporter, max_queue_size=8, schedule_delay_ms=10_000)
    span = ReadableSpan("x")
    batcher.on_end(span)
    assert batcher.force_flush(5000) is True  # the first call succeeds
    batcher.on_end(span)
    assert batcher.force_flush(5000) is False  # the second fails
    batcher.on_end(span)
    assert batcher.force_flush(5000) is True
    assert (batcher.exported, batcher.dropped["failed"]) == (2, 1)
    batcher.shutdown()


def _proto_emitter(endpoint: str) -> Any:
    from otel_online_eval.export import OtlpExportConfig, resolve_otlp
    from otel_online_eval.sidecar.config import RetryConfig
    from otel_online_eval.sidecar.emit_proto import ProtoEmitter
    from otel_online_eval.sidecar.shipper import Shipper, make_sender

    target = resolve_otlp(
        OtlpExportConfig(protocol="grpc", endpoint=endpoint, insecure=True, timeout_s=1), {}
    )
    retry = RetryConfig(initial_backoff_s=0.05, max_backoff_s=0.1, max_elapsed_s=0.5)
    return ProtoEmitter(Shipper("export", make_sender(target), 1 << 20, retry), 0.05)


def test_the_sidecar_emitter_flush_is_false_when_the_export_gave_up(
    otlp_grpc_receiver: OtlpGrpcReceiver,
) -> None:
    from opentelemetry.proto.resource.v1.resource_pb2 import Resource as ProtoResource

    from otel_online_eval.emit import Target

    down = _proto_emitter(f"127.0.0.1:{_closed_port()}")
    down.emit(Target(1, 2, None, ProtoResource()), "r", [], [], 1, 2)
    assert down.force_flush(10_000) is False  # given up on after its retries
    counts = down.export_counts()
    assert (counts.scheduled, counts.exported, dict(counts.dropped)) == (
        1,
        0,
        {"queue_full": 0, "failed": 1},
    )
    down.shutdown(1000)
    up = _proto_emitter(otlp_grpc_receiver.endpoint)
    up.emit(Target(1, 2, None, ProtoResource()), "r", [], [], 1, 2)
    assert up.force_flush(10_000) is True
    assert up.export_counts().exported == 1
    assert [s.name for _, _, s in otlp_grpc_receiver.spans()] == ["eval r"]
    up.shutdown(1000)
