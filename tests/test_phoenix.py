"""Scores as Phoenix span annotations (``export: {phoenix: ...}``), against a real Phoenix
(``phoenix serve`` from ``.venv-phoenix``): through the in-process processor with a heuristic
and an LLM judge (the fake OpenAI server), through the sidecar, idempotent rewrites, spans that
reach Phoenix after their scores, Phoenix down, and config errors."""

from __future__ import annotations

import json
import textwrap
import threading
import time
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanContext, TraceFlags

from otel_online_eval import ConfigError, OnlineEvalSpanProcessor, Score, load_config
from otel_online_eval.emit import Evaluation, ScorerRun
from otel_online_eval.export.config import PhoenixExportConfig
from otel_online_eval.sidecar.config import RetryConfig
from otel_online_eval.sinks import build_score_sinks
from otel_online_eval.sinks.phoenix import PhoenixSink, annotations_of
from tests.fake_openai import FakeOpenAI, quiet, tool_call
from tests.phoenix_server import PhoenixServer, phoenix
from tests.sidecar_helpers import (
    answer_attrs,
    eventually,
    forward_to,
    free_port,
    make_trace,
    post_http,
    request_bytes,
    running_sidecar,
    sidecar_config,
)

__all__ = ["phoenix"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def judge_server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        quiet(server)
        yield server


def by_name(annotations: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for a in annotations:
        assert a["name"] not in out, f"two annotations named {a['name']!r}: {annotations}"
        out[a["name"]] = a
    return out


def hex_id(span: ReadableSpan) -> str:
    assert span.context is not None
    return f"{span.context.span_id:016x}"


def send_to_phoenix(phoenix: PhoenixServer, name: str = "chat") -> ReadableSpan:
    """One real app span, exported synchronously to Phoenix's OTLP/HTTP endpoint."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "phoenix-test-app"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=phoenix.otlp_url)))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    with provider.get_tracer("tests").start_as_current_span(name, attributes=answer_attrs("ok")):
        pass
    provider.shutdown()
    (span,) = memory.get_finished_spans()
    return span


def evaluation_of(span_id: int, rule: str = "direct", eval_span_id: int = 0xE1) -> Evaluation:
    now = time.time_ns()
    scored = SpanContext(0xABC, span_id, False, TraceFlags(TraceFlags.SAMPLED))
    runs = [
        ScorerRun("exact", Score(1.0, "pass", "matches"), None, now, now, revision="r1"),
        ScorerRun("broken", None, ValueError("boom"), now, now, revision="r2"),
        ScorerRun("budget", None, None, now, now, skipped="budget exhausted"),
        ScorerRun("judge", Score(0.5, "partly", "half of it"), None, now, now, annotator="LLM"),
    ]
    return Evaluation(rule, scored, tuple(runs), 0xABC, eval_span_id)


# --------------------------------------------------------------------------- in-process


def test_in_process_scores_become_span_annotations(
    tmp_path: Path, phoenix: PhoenixServer, judge_server: FakeOpenAI
) -> None:
    judge_server.script(
        tool_call("select_choice", {"reasons": "It names the capital.", "choice": "relevant"})
    )
    path = tmp_path / "online-eval.yaml"
    path.write_text(
        textwrap.dedent(
            f"""\
            scorers:
              nonempty: {{type: not_empty}}
              category: {{type: one_of, values: [billing, shipping]}}
              relevance:
                type: llm_judge
                base_url: {judge_server.base_url}
                model: judge-1
                api_key: sk-test
                template: relevance
            rules:
              - name: chat-quality
                apply_to: {{span_names: [chat]}}
                scorers: [nonempty, category, relevance]
            export:
              otlp: {{protocol: http/protobuf, endpoint: "{phoenix.base_url}"}}
              batch: {{schedule_delay_ms: 100}}
              phoenix: {{endpoint: "{phoenix.base_url}", project: default, timeout_s: 5}}
            """
        )
    )
    processor = OnlineEvalSpanProcessor(load_config(path))
    app = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "in-process-app"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=phoenix.otlp_url)))
    provider.add_span_processor(SimpleSpanProcessor(app))
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("tests.app")
    try:
        for answer in ("billing", "weather"):
            with tracer.start_as_current_span("chat", attributes=answer_attrs(answer)):
                pass
        assert processor.force_flush(30_000)
        (sink,) = processor._engine.emitter.score_sinks  # type: ignore[attr-defined]
        counts = sink.export_counts()
        assert (counts.scheduled, counts.exported, dict(counts.dropped)) == (6, 6, {})
    finally:
        provider.shutdown()

    billing, weather = app.get_finished_spans()
    for span, category_score, category_label in ((billing, 1.0, "billing"), (weather, 0.0, None)):
        got = by_name(phoenix.span_annotations([hex_id(span)]))
        assert set(got) == {"nonempty", "category", "relevance"}
        for annotation in got.values():
            assert annotation["span_id"] == hex_id(span)
            assert annotation["identifier"].startswith("online_eval:chat-quality:")
            assert annotation["metadata"]["online_eval.rule"] == "chat-quality"
            assert annotation["metadata"]["online_eval.scorer.revision"]
        assert got["nonempty"]["annotator_kind"] == "CODE"
        assert got["nonempty"]["result"]["score"] == 1.0
        assert got["nonempty"]["result"]["label"] == "pass"
        assert got["category"]["annotator_kind"] == "CODE"
        assert got["category"]["result"]["score"] == category_score
        if category_label is not None:
            assert got["category"]["result"]["label"] == category_label
            assert "is one of" in got["category"]["result"]["explanation"]
        judge = got["relevance"]
        assert judge["annotator_kind"] == "LLM"
        assert judge["result"] == {
            "score": 1.0,
            "label": "relevant",
            "explanation": "It names the capital.",
        }
        assert judge["metadata"]["template"] == "relevance"
    # The eval spans went to Phoenix too, beside the annotations.
    names = eventually(lambda: _eval_names(phoenix, {hex_id(billing), hex_id(weather)}), timeout=20)
    assert names == ["eval chat-quality", "eval chat-quality"]


def _eval_names(phoenix: PhoenixServer, parents: set[str]) -> list[str]:
    names = sorted(
        s["name"]
        for s in phoenix.spans()
        if s["name"].startswith("eval ") and s["parent_id"] in parents
    )
    assert len(names) == 2, names
    return names


# --------------------------------------------------------------------------- the sidecar


def test_sidecar_forwards_spans_and_writes_annotations(
    tmp_path: Path, phoenix: PhoenixServer
) -> None:
    config = sidecar_config(
        export={
            "otlp": {"protocol": "http/protobuf", "endpoint": phoenix.base_url},
            "batch": {"schedule_delay_ms": 100},
            "phoenix": {"endpoint": phoenix.base_url},
        },
        forward=forward_to(phoenix.otlp_url, "http/protobuf"),
    )
    trace = make_trace("sidecar-app", ("billing", "weather"))
    chats = [s for s in trace.spans if s.name == "chat"]
    with running_sidecar(tmp_path, config) as sidecar:
        response = post_http(sidecar, request_bytes(trace.spans))
        assert response.status_code == 200, response.text

        def annotated() -> list[dict[str, dict[str, Any]]]:
            out = []
            for span in chats:
                got = by_name(phoenix.span_annotations([hex_id(span)]))
                assert set(got) == {"nonempty", "category"}, got
                out.append(got)
            return out

        billing, weather = eventually(annotated, timeout=40, interval=0.5)
    assert billing["category"]["result"]["score"] == 1.0
    assert billing["category"]["result"]["label"] == "billing"
    assert weather["category"]["result"]["score"] == 0.0
    for got in (billing, weather):
        assert got["nonempty"]["result"]["label"] == "pass"
        assert {a["annotator_kind"] for a in got.values()} == {"CODE"}
        assert {a["metadata"]["online_eval.rule"] for a in got.values()} == {"chat-quality"}
    # The app's spans were forwarded to Phoenix, the eval spans exported there.
    names = {s["name"] for s in phoenix.spans()}
    assert {"POST /support", "chat", "eval chat-quality"} <= names


# --------------------------------------------------------------------------- the sink itself


def test_writing_the_same_evaluation_twice_leaves_one_annotation(phoenix: PhoenixServer) -> None:
    span = send_to_phoenix(phoenix)
    assert span.context is not None
    evaluation = evaluation_of(span.context.span_id)
    first = PhoenixSink(phoenix.base_url, schedule_delay_s=0.05)
    second = PhoenixSink(phoenix.base_url, schedule_delay_s=0.05)  # a retry by another process
    try:
        first.write(evaluation)
        first.write(evaluation)
        assert first.force_flush(30_000)
        second.write(evaluation)
        assert second.force_flush(30_000)
    finally:
        first.shutdown(5000)
        second.shutdown(5000)
    assert (first.export_counts().scheduled, first.export_counts().exported) == (6, 6)
    annotations = phoenix.span_annotations([hex_id(span)])
    got = by_name(annotations)  # fails on a duplicate
    assert set(got) == {"exact", "broken", "judge"}  # the skipped run writes none
    assert got["exact"]["result"] == {"score": 1.0, "label": "pass", "explanation": "matches"}
    assert got["exact"]["annotator_kind"] == "CODE"
    assert got["exact"]["metadata"]["online_eval.scorer.revision"] == "r1"
    assert got["judge"]["annotator_kind"] == "LLM"
    assert got["broken"]["result"] == {
        "score": None,
        "label": "error",
        "explanation": "ValueError: boom",
    }
    assert got["broken"]["metadata"]["error.type"] == "ValueError"
    assert got["broken"]["metadata"]["online_eval.scorer.revision"] == "r2"
    assert {a["identifier"] for a in annotations} == {f"online_eval:direct:{0xE1:016x}"}


def test_an_annotation_waits_for_its_span_to_reach_phoenix(phoenix: PhoenixServer) -> None:
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "late-app"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    with provider.get_tracer("tests").start_as_current_span("chat"):
        pass
    (span,) = memory.get_finished_spans()
    assert span.context is not None
    never = evaluation_of(0x1234_5678_9ABC_DEF0, rule="never")  # no such span, ever
    sink = PhoenixSink(phoenix.base_url, schedule_delay_s=0.05, span_wait_s=3.0)
    try:
        sink.write(evaluation_of(span.context.span_id, rule="late"))
        sink.write(never)  # in the same request as the late one's
        time.sleep(1.0)  # refused at least once: Phoenix has not seen the span
        assert sink.export_counts().exported == 0
        exporter = OTLPSpanExporter(endpoint=phoenix.otlp_url)
        exporter.export([span])
        exporter.shutdown()
        assert not sink.force_flush(30_000)  # the one whose span never came was dropped
    finally:
        sink.shutdown(5000)
    counts = sink.export_counts()
    assert (counts.scheduled, counts.exported, dict(counts.dropped)) == (6, 3, {"failed": 3})
    assert set(by_name(phoenix.span_annotations([hex_id(span)]))) == {"exact", "broken", "judge"}


def test_phoenix_down_drops_and_counts_without_blocking() -> None:
    port = free_port()  # nothing listens there
    sink = PhoenixSink(
        f"http://127.0.0.1:{port}",
        timeout_s=1.0,
        schedule_delay_s=0.02,
        retry=RetryConfig(initial_backoff_s=0.02, max_backoff_s=0.1, max_elapsed_s=0.5),
    )
    try:
        started = time.monotonic()
        for i in range(20):
            sink.write(evaluation_of(i + 1, eval_span_id=i + 1))
        assert time.monotonic() - started < 0.5  # write only queues
        assert not sink.force_flush(20_000)  # every request was dropped after its retries
        counts = sink.export_counts()
        assert (counts.scheduled, counts.exported, dict(counts.dropped)) == (60, 0, {"failed": 60})
    finally:
        sink.shutdown(1000)


def test_a_full_queue_drops_and_shutdown_keeps_its_deadline() -> None:
    port = free_port()
    sink = PhoenixSink(
        f"http://127.0.0.1:{port}",
        max_queue_size=10,
        schedule_delay_s=60.0,  # nothing leaves on its own: the queue fills
        retry=RetryConfig(initial_backoff_s=0.05, max_backoff_s=1.0, max_elapsed_s=120.0),
    )
    for i in range(10):
        sink.write(evaluation_of(i + 1, eval_span_id=i + 1))  # 3 annotations each
    assert dict(sink.export_counts().dropped) == {"queue_full": 20}
    started = time.monotonic()
    sink.shutdown(500)  # Phoenix is down and retries would go on for two minutes
    took = time.monotonic() - started
    assert took < 2.0, took
    sink.write(evaluation_of(99))
    sink.shutdown(500)  # twice is fine
    counts = sink.export_counts()
    assert counts.scheduled == 33 and counts.exported == 0
    assert sum(counts.dropped.values()) == 33
    assert counts.dropped["queue_full"] == 20
    assert counts.dropped["shutdown"] >= 3  # the late write, and what was still queued


class _Flaky(BaseHTTPRequestHandler):
    """Answers 503 (Retry-After: 0) to the first two POSTs, then 200; records each body."""

    bodies: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).bodies.append({"path": self.path, "auth": self.headers["Authorization"], **body})
        ok = len(type(self).bodies) > 2
        self.send_response(200 if ok else 503)
        if not ok:
            self.send_header("Retry-After", "0")
        self.send_header("Content-Length", "11")
        self.end_headers()
        self.wfile.write(b'{"data":[]}')

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_batches_are_retried_after_a_5xx() -> None:
    _Flaky.bodies = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    sink = PhoenixSink(
        f"http://127.0.0.1:{server.server_address[1]}/prefix/",
        api_key="px-key",
        schedule_delay_s=0.2,
        max_batch_size=100,
    )
    try:
        for i in range(5):
            sink.write(evaluation_of(i + 1, eval_span_id=i + 1))
        assert sink.force_flush(10_000)
    finally:
        sink.shutdown(1000)
        server.shutdown()
        server.server_close()
    first, second, third = _Flaky.bodies  # one batch of all 15, sent three times
    assert first == second == third
    assert len(first["data"]) == 15
    assert first["path"] == "/prefix/v1/span_annotations?sync=true"
    assert first["auth"] == "Bearer px-key"
    counts = sink.export_counts()
    assert (counts.scheduled, counts.exported, dict(counts.dropped)) == (15, 15, {})


def test_annotations_of_an_evaluation() -> None:
    evaluation = evaluation_of(0xBEEF)
    annotations = annotations_of(evaluation)
    assert [a["name"] for a in annotations] == ["exact", "broken", "judge"]
    assert {a["span_id"] for a in annotations} == {f"{0xBEEF:016x}"}
    assert annotations_of(Evaluation("r", None, evaluation.runs, 1, 2)) == []


# --------------------------------------------------------------------------- config


def write(tmp_path: Path, phoenix_yaml: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(
        "rules: [{name: r, scorers: [ne]}]\n"
        "scorers: {ne: {type: not_empty}}\n"
        "export:\n"
        "  console: {}\n"
        f"  phoenix: {phoenix_yaml}\n"
    )
    return path


@pytest.mark.parametrize(
    ("phoenix_yaml", "message"),
    [
        ("{}", "export.phoenix: 'endpoint' is required"),
        ("{endpoint: 127.0.0.1:6006}", "export.phoenix.endpoint: must be an http:// or https://"),
        ("{endpoint: 'ftp://127.0.0.1:6006'}", "export.phoenix.endpoint: must be an http://"),
        ("{endpoint: 'http://127.0.0.1:99999'}", "export.phoenix.endpoint: has an invalid port"),
        ("{endpoint: 'http://:6006'}", "export.phoenix.endpoint: has no host"),
        (
            "{endpoint: 'http://127.0.0.1:6006/v1/span_annotations'}",
            "export.phoenix.endpoint: is Phoenix's base URL",
        ),
        ("{endpoint: 'http://127.0.0.1:6006?x=1'}", "export.phoenix.endpoint: must be a base URL"),
        ("{endpoint: 7}", "export.phoenix.endpoint: must be a string"),
        (
            "{endpoint: 'http://127.0.0.1:6006', api_key: 5}",
            "export.phoenix.api_key: must be a string",
        ),
        (
            '{endpoint: "http://127.0.0.1:6006", api_key: "a\\nb"}',
            "export.phoenix.api_key: must not contain a line break",
        ),
        (
            "{endpoint: 'http://127.0.0.1:6006', project: 'a/b'}",
            "export.phoenix.project: must not contain",
        ),
        ("{endpoint: 'http://127.0.0.1:6006', project: ''}", "export.phoenix.project: must be a"),
        (
            "{endpoint: 'http://127.0.0.1:6006', timeout_s: 0}",
            "export.phoenix.timeout_s: must be a number greater than 0",
        ),
        (
            "{endpoint: 'http://127.0.0.1:6006', max_queue_size: 1.5}",
            "export.phoenix.max_queue_size: must be a whole number",
        ),
        (
            "{endpoint: 'http://127.0.0.1:6006', batch: 3}",
            "export.phoenix.batch: unknown key 'batch'",
        ),
        ("[1]", "export.phoenix: must be a mapping"),
    ],
)
def test_config_errors_name_the_field(tmp_path: Path, phoenix_yaml: str, message: str) -> None:
    path = write(tmp_path, phoenix_yaml)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    text = str(info.value)
    assert message in text, text
    assert f"{path}:5:" in text, text  # file:line of the phoenix entry


def test_config_is_read_and_builds_a_sink(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '{endpoint: "http://127.0.0.1:6006/", api_key: "${env:PX_KEY:-}", timeout_s: 3}',
    )
    export = load_config(path, env={}).export
    assert export is not None and export.kind == "console"
    assert export.phoenix == PhoenixExportConfig("http://127.0.0.1:6006/", None, "default", 3)
    (sink,) = build_score_sinks(export)
    try:
        assert isinstance(sink, PhoenixSink)
        assert sink.name == "phoenix"
    finally:
        sink.shutdown(0)
    assert build_score_sinks(None) == []
    with pytest.raises(ValueError, match=r"phoenix\.endpoint"):
        PhoenixExportConfig("localhost:6006")
