"""Helpers for the tools' tests (test / score / explain / report), and the scorers their configs
reference by ``ref: "tests.test_tools_support:..."``.

Spans come from a real SDK ``TracerProvider`` with fixed trace ids (so sampling decisions are
known: the shared sampling hash of a small id is the id itself, tiny, always sampled in; the
hash of ``2**61 - 2`` is just under 1, sampled out at any rate below 1) and fixed times, and
are written to files by real exporters: the project's ``OtlpJsonFileExporter`` or
``otlp_json.encode_spans_json``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import SpanKind

from otel_online_eval.export import OtlpJsonFileExporter
from otel_online_eval.otlp_json import decode_request_json

ROOT = Path(__file__).parent.parent
SAMPLED_OUT_TRACE = (1 << 61) - 2
"""A trace id whose sampling hash is just under 1: sampled out at any rate below 1."""

CONFIG = """
scorers:
  nonempty: {type: not_empty}
  category: {type: one_of, values: [billing, shipping]}
  judge:
    type: llm_judge
    base_url: "http://127.0.0.1:9/v1"
    model: judge-model
    api_key: test
    template: relevance
    limits: {timeout_s: 2, retries: 0}
rules:
  - name: chat-quality
    description: chat answers are a known category
    apply_to: {span_names: [chat]}
    filter: "attributes['gen_ai.operation.name'] = 'chat' AND output IS NOT NULL"
    scorers: [nonempty, category]
  - name: sampled
    apply_to: {span_names: [chat]}
    sampling: 0.5
    scorers: [nonempty, judge]
  - name: roots
    apply_to: {root_spans: true}
    scorers: [nonempty]
"""


def answer_attrs(text: str | None, operation: str = "chat") -> dict[str, Any]:
    """GenAI (current semconv) attributes of a chat call that answered ``text``."""
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": operation,
        "gen_ai.request.model": "gpt-test",
        "gen_ai.input.messages": json.dumps(
            [{"role": "user", "parts": [{"type": "text", "content": "where is my parcel?"}]}]
        ),
        "gen_ai.usage.input_tokens": 12,
        "gen_ai.usage.output_tokens": 3,
    }
    if text is not None:
        attrs["gen_ai.output.messages"] = json.dumps(
            [{"role": "assistant", "parts": [{"type": "text", "content": text}]}]
        )
    return attrs


class _Ids(RandomIdGenerator):
    def __init__(self) -> None:
        self.next_trace: int | None = None

    def generate_trace_id(self) -> int:
        if self.next_trace is not None:
            return self.next_trace
        return super().generate_trace_id()


@dataclass
class Trace:
    trace_id: int
    root: ReadableSpan
    chats: list[ReadableSpan]

    @property
    def spans(self) -> list[ReadableSpan]:
        return [*self.chats, self.root]


def make_traces(
    answers: Sequence[Sequence[str | None]],
    trace_ids: Sequence[int] | None = None,
    start_ns: int | None = None,
    step_ns: int = 60 * 10**9,
    operation: str = "chat",
) -> list[Trace]:
    """One ``POST /support`` root per entry of ``answers``, with one ``chat`` child per answer
    (None: a chat span without output). Trace ``i`` starts at ``start_ns + i * step_ns``."""
    exporter = InMemorySpanExporter()
    ids = _Ids()
    provider = TracerProvider(
        resource=Resource.create({"service.name": "support-bot"}),
        id_generator=ids,
        shutdown_on_exit=False,
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("tests.tools", "1.0")
    start = time.time_ns() - len(answers) * step_ns if start_ns is None else start_ns
    out = []
    for i, texts in enumerate(answers):
        ids.next_trace = trace_ids[i] if trace_ids is not None else None
        t0 = start + i * step_ns
        root = tracer.start_span("POST /support", kind=SpanKind.SERVER, start_time=t0)
        ctx = trace.set_span_in_context(root)
        for j, text in enumerate(texts):
            chat = tracer.start_span(
                "chat",
                context=ctx,
                kind=SpanKind.CLIENT,
                attributes=answer_attrs(text, operation),
                start_time=t0 + (j + 1) * 10**6,
            )
            chat.end(end_time=t0 + (j + 2) * 10**6)
        root.end(end_time=t0 + (len(texts) + 3) * 10**6)
        finished = exporter.get_finished_spans()
        exporter.clear()
        root_span = finished[-1]
        assert root_span.context is not None
        out.append(Trace(root_span.context.trace_id, root_span, list(finished[:-1])))
    provider.shutdown()
    return out


def write_with_exporter(path: Path, batches: Sequence[Sequence[ReadableSpan]]) -> Path:
    """Each batch as one line, written by the project's OTLP/JSON file exporter."""
    exporter = OtlpJsonFileExporter(path)
    for batch in batches:
        exporter.export(list(batch))
    exporter.shutdown()
    return path


def span_hex(span: ReadableSpan) -> str:
    assert span.context is not None
    return f"{span.context.span_id:016x}"


def trace_hex(span: ReadableSpan) -> str:
    assert span.context is not None
    return f"{span.context.trace_id:032x}"


def run_cli(
    *args: str | Path,
    input: bytes | None = None,
    timeout: float = 60,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``python -m otel_online_eval.cli ARGS`` in the repository root; stdout/stderr as text."""
    proc = subprocess.run(
        [sys.executable, "-m", "otel_online_eval.cli", *map(str, args)],
        input=input.decode() if input is not None else None,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        check=False,
    )
    return proc


def read_spans(path: Path) -> list[tuple[dict[str, Any], Any]]:
    """Every span of an OTLP/JSON lines file, with its resource attributes."""
    from tests.otlp_receiver import attrs

    out = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        request = decode_request_json(line)
        for rs in request.resource_spans:
            resource = attrs(rs.resource.attributes)
            for ss in rs.scope_spans:
                for span in ss.spans:
                    out.append((resource, span))
    return out


def span_attrs(span: Any) -> dict[str, Any]:
    from tests.otlp_receiver import attrs

    return attrs(span.attributes)


# -- scorers referenced from the tests' configs ------------------------------------------------


def slow_score(inp: Any) -> float:
    """A sync ``python`` scorer that takes 50 ms (runs in the engine's thread pool)."""
    time.sleep(0.05)
    return 1.0


def length_score(inp: Any) -> dict[str, Any]:
    """Scores by the output's length; reports judge-like token usage."""
    text = inp.output or ""
    value = min(len(text) / 10, 1.0)
    return {
        "score": value,
        "label": "long" if value >= 0.5 else "short",
        "metadata": {
            "online_eval.judge.request.model": "judge-1",
            "online_eval.judge.usage.input_tokens": 100,
            "online_eval.judge.usage.output_tokens": 7,
        },
    }


def test_make_traces_fixes_ids_and_times() -> None:
    traces = make_traces([["billing", None]], trace_ids=[7], start_ns=10**18)
    (t,) = traces
    assert t.trace_id == 7
    assert [s.name for s in t.spans] == ["chat", "chat", "POST /support"]
    assert t.root.start_time == 10**18
    assert all(s.context is not None and s.context.trace_id == 7 for s in t.spans)
