"""End to end: real exporters over the network (loopback), metrics, fork, the demo, the API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import otel_online_eval
from otel_online_eval import EvalInput, OnlineEvalSpanProcessor, Rule, Score, ScorerSkipped
from otel_online_eval.assembly import Completion
from otel_online_eval.metrics import METRICS
from tests.otlp_receiver import OtlpGrpcReceiver, OtlpHttpReceiver, attrs

ROOT = Path(__file__).parent.parent

CONFIG = """
scorers:
  category: {type: one_of, values: [billing, shipping]}
  nonempty: {type: not_empty}
rules:
  - name: category
    apply_to: {span_names: [categorize-message]}
    filter: output IS NOT NULL
    scorers: [category, nonempty]
export:
  otlp: {protocol: %(protocol)s, endpoint: "%(endpoint)s"%(extra)s}
  batch: {schedule_delay_ms: 50}
"""


def _answer(text: str) -> dict[str, Any]:
    return {
        "gen_ai.operation.name": "chat",
        "gen_ai.output.messages": json.dumps(
            [{"role": "assistant", "parts": [{"type": "text", "content": text}]}]
        ),
    }


def _run_app(tmp_path: Path, protocol: str, endpoint: str, extra: str = "") -> dict[str, int]:
    path = tmp_path / "rules.yaml"
    path.write_text(CONFIG % {"protocol": protocol, "endpoint": endpoint, "extra": extra})
    processor = OnlineEvalSpanProcessor.from_yaml(path)  # exporter from the YAML
    provider = TracerProvider(resource=Resource.create({"service.name": "e2e"}))
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("e2e")
    ids = {}
    with tracer.start_as_current_span("request"):
        for answer in ("billing", "weather"):
            with tracer.start_as_current_span(
                "categorize-message", attributes=_answer(answer)
            ) as s:
                ids[answer] = s.get_span_context().span_id
        trace_id = s.get_span_context().trace_id
    assert processor.force_flush(10_000)
    provider.shutdown()
    ids["trace"] = trace_id
    return ids


def _check_received(received: list[Any], ids: dict[str, int]) -> None:
    evals = [(res, span) for res, _, span in received if span.name == "eval category"]
    scores = [span for _, _, span in received if span.name.startswith("score ")]
    assert len(evals) == 2 and len(scores) == 4
    parents = {int.from_bytes(span.parent_span_id, "big") for _, span in evals}
    assert parents == {ids["billing"], ids["weather"]}
    for resource, span in evals:
        assert int.from_bytes(span.trace_id, "big") == ids["trace"]
        (link,) = span.links
        assert link.span_id == span.parent_span_id  # linked to the scored span too
        assert resource["service.name"] == "e2e"
        assert attrs(span.attributes)["online_eval.rule"] == "category"
        assert [e.name for e in span.events] == ["gen_ai.evaluation.result"] * 2
    labels = sorted(
        attrs(s.attributes)["gen_ai.evaluation.score.label"]
        for s in scores
        if s.name == "score category"
    )
    assert labels == ["billing", "other"]


def test_eval_spans_over_otlp_grpc(tmp_path: Path, otlp_grpc_receiver: OtlpGrpcReceiver) -> None:
    ids = _run_app(tmp_path, "grpc", otlp_grpc_receiver.endpoint, ", insecure: true")
    _check_received(otlp_grpc_receiver.wait_for_spans(6), ids)


def test_eval_spans_over_otlp_http(tmp_path: Path, otlp_http_receiver: OtlpHttpReceiver) -> None:
    ids = _run_app(tmp_path, "http/protobuf", otlp_http_receiver.base_url)
    _check_received(otlp_http_receiver.wait_for_spans(6), ids)


def test_self_metrics_are_published() -> None:
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])

    def boom(inp: EvalInput) -> float:
        raise RuntimeError("no")

    def judged(inp: EvalInput) -> Score:
        usage = {
            "online_eval.judge.request.model": "judge-1",
            "online_eval.judge.usage.input_tokens": 120,
            "online_eval.judge.usage.output_tokens": 9,
        }
        return Score(1.0, "yes", metadata=usage)

    def spent(inp: EvalInput) -> float:
        raise ScorerSkipped("token budget for this hour is spent")

    rules = [
        Rule.create("r", [boom, (lambda inp: 1.0, 0.0), judged, spent], span_names=["chat"]),
        # A trace rule, so that the assembly metrics have points too (each span is a trace).
        Rule.create("t", [lambda inp: 1.0], scope="trace", completion=Completion(settle_s=0)),
        # And a session rule (these spans carry no session key: no turns).
        Rule.create("s", [lambda inp: 1.0], scope="session", completion=Completion(settle_s=0)),
    ]
    processor = OnlineEvalSpanProcessor(
        rules=rules, exporter=InMemorySpanExporter(), meter_provider=meters
    )
    provider = TracerProvider()
    provider.add_span_processor(processor)
    logs = LoggerProvider()
    logs.add_log_record_processor(processor.log_processor)
    tracer = provider.get_tracer("t")
    for name in ("chat", "chat", "other"):
        with tracer.start_as_current_span(name):
            if name == "other":  # a record of the span, joined to it
                logs.get_logger("t").emit(event_name="gen_ai.choice", body={"index": 0})
    assert processor.force_flush(10_000)
    data = reader.get_metrics_data()
    assert data is not None
    points: dict[str, list[tuple[dict[str, Any], Any]]] = {}
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                points[metric.name] = [
                    (dict(p.attributes or {}), getattr(p, "value", getattr(p, "count", None)))
                    for p in metric.data.data_points
                ]
    assert set(points) == set(METRICS)
    assert points["online_eval.spans.seen"] == [({}, 3)]
    assert sorted(points["online_eval.logs.records"], key=str) == [
        ({"outcome": "dropped"}, 0),
        ({"outcome": "expired"}, 0),
        ({"outcome": "joined"}, 1),
        ({"outcome": "not_sampled"}, 0),
    ]
    assert points["online_eval.logs.joined_spans"] == [({}, 1)]
    assert sorted(points["online_eval.logs.span_waits"], key=str) == [
        ({"outcome": o}, 0) for o in ("flush", "full", "records", "timeout")
    ]
    # Every span is in the trace rule's route: it buffers whole traces.
    assert points["online_eval.spans.selected"] == [
        ({"rule": "r"}, 2),
        ({"rule": "t"}, 3),
        ({"rule": "s"}, 3),
    ]
    evals = [({"rule": "r"}, 2), ({"rule": "t"}, 3), ({"rule": "s"}, 0)]
    assert points["online_eval.evals"] == evals
    traces = {a["reason"]: v for a, v in points["online_eval.assembly.traces"] if a["rule"] == "t"}
    assert traces["complete"] == 3 and sum(traces.values()) == 3
    spans = {a["outcome"]: v for a, v in points["online_eval.assembly.spans"] if a["rule"] == "t"}
    turns = {a["outcome"]: v for a, v in points["online_eval.assembly.turns"]}
    assert turns == {"added": 0, "handed_off": 0, "no_key": 3, "sampled_out": 0, "filtered_out": 0}
    assert spans == {"buffered": 3, "duplicate": 0, "over_limit": 0}
    scores = {
        (a["scorer"], a["outcome"]): v for a, v in points["online_eval.scores"] if a["rule"] == "r"
    }
    assert scores == {
        ("boom", "error"): 2,
        ("<lambda>", "sampled_out"): 2,
        ("judged", "ok"): 2,
        ("spent", "skipped"): 2,
    }
    durations = {
        a["scorer"]: n for a, n in points["online_eval.scorer.duration"] if a["rule"] == "r"
    }
    assert durations == {"boom": 2, "judged": 2, "spent": 2}
    tokens = {a["gen_ai.token.type"]: v for a, v in points["online_eval.judge.tokens"]}
    assert tokens == {"input": 240, "output": 18}
    processor.shutdown()
    provider.shutdown()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_evaluation_works_in_a_forked_child() -> None:
    evals = InMemorySpanExporter()
    processor = OnlineEvalSpanProcessor(rules=[Rule.create("r", [lambda inp: 1.0])], exporter=evals)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("t")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its engine threads must be new ones
        try:
            for _ in range(5):
                with tracer.start_as_current_span("chat"):
                    pass
            ok = processor.force_flush(10_000)
            n = sum(s.name == "eval r" for s in evals.get_finished_spans())
            os.write(write, f"{ok} {n}".encode())
        finally:
            os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    answer = os.read(read, 100).decode()
    os.close(read)
    assert status == 0 and answer == "True 5"
    provider.shutdown()


def test_demo_runs_and_shows_tables() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "demo_app.py"), "--requests", "60"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "support-assistant: 60 requests traced" in out.stdout
    rules = ("support-category", "order-extraction", "chat-quality", "request-latency")
    for rule in (*rules, "support-request"):  # the last: a trace rule
        assert f"rule {rule}" in out.stdout
    assert "matched 60  sampled 60" in out.stdout  # support-category: every classifier span
    assert "└─ eval " in out.stdout and "└─ score " in out.stdout


def test_public_api_is_sorted_and_complete() -> None:
    names = otel_online_eval.__all__
    assert names == sorted(names)
    public = {n for n in dir(otel_online_eval) if not n.startswith("_")}
    modules = {
        "assembly",
        "config",
        "emit",
        "engine",
        "export",
        "genai",
        "logfeed",
        "metrics",
        "otlp",
        "otlp_json",
        "processor",
        "query",
        "rules",
        "sampling",
        "scorers",
        "sessionview",
        "sidecar",
        "sinks",
        "spanview",
        "tools",
        "traceview",
    }
    assert public - modules == set(names)
