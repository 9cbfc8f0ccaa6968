"""Real instrumentation without content capture: ``opentelemetry-instrumentation-openai-v2`` set
up as the README shows, no content variables, against ``tests.fake_openai``. Its chat spans
carry a model and usage but no prompt or answer: counted per rule, warned about once per rule
(naming the variable that turns capture on), and shown as the reason by ``test`` and
``explain``. With capture on, none of that."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_online_eval import OnlineEvalSpanProcessor
from tests.fake_openai import FakeOpenAI
from tests.instrumentation.harness import instrumented, is_app, responder
from tests.test_tools_support import run_cli, span_hex, write_with_exporter

CAPTURE = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
CONFIG = """
scorers:
  nonempty: {type: not_empty}
rules:
  - name: answers
    filter: "attributes['gen_ai.operation.name'] = 'chat' AND output IS NOT NULL"
    scorers: [nonempty]
  - name: everything
    scorers: [nonempty]
"""


@pytest.fixture(scope="module")
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        fake.respond_with(responder)
        yield fake


def _chat_spans(
    server: FakeOpenAI, env: dict[str, str], config: Path, caplog: pytest.LogCaptureFixture
) -> tuple[list[ReadableSpan], OnlineEvalSpanProcessor]:
    """Three chat calls through the instrumented client, scored in-process."""
    with instrumented(OpenAIInstrumentor, env) as capture:
        processor = OnlineEvalSpanProcessor.from_yaml(config, exporter=InMemorySpanExporter())
        capture.provider.add_span_processor(processor)
        with openai.OpenAI(base_url=server.base_url, api_key="test", max_retries=0) as client:
            for question in ("Capital of France?", "Capital of Italy?", "Capital of France?"):
                client.chat.completions.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": question}]
                )
        with caplog.at_level(logging.WARNING, logger="otel_online_eval.engine"):
            assert processor.force_flush(10_000)
        spans = [s for s in capture.take() if not is_app(s)]
        processor.shutdown()
    return spans, processor


def test_without_capture_spans_are_counted_warned_once_per_rule_and_explained(
    server: FakeOpenAI,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.delenv(CAPTURE, raising=False)  # as the README sets the library up
    config = tmp_path / "rules.yaml"
    config.write_text(CONFIG)
    spans, processor = _chat_spans(server, {}, config, caplog)
    assert len(spans) == 3
    assert all("gen_ai.input.messages" not in (s.attributes or {}) for s in spans)

    stats = processor.stats()
    assert stats.no_content == {"answers": 3, "everything": 3}
    assert stats.filtered_out["answers"] == 3  # what the user saw before: nothing, silently
    warnings = [r.getMessage() for r in caplog.records if "no prompt or answer" in r.getMessage()]
    assert len(warnings) == 2  # once per rule
    assert {w.split("'")[1] for w in warnings} == {"answers", "everything"}
    for message in warnings:
        assert f"{CAPTURE}=span_only" in message
        assert "gen_ai.operation.name='chat'" in message
        assert "TRACELOOP_TRACE_CONTENT" in message and "OPENINFERENCE_HIDE_INPUTS" in message

    path = write_with_exporter(tmp_path / "spans.jsonl", [spans])
    test = run_cli("test", "-c", config, "--rule", "answers", path)
    assert test.returncode == 0, test.stderr
    rows = [line for line in test.stdout.splitlines() if span_hex(spans[0]) in line]
    assert len(rows) == 1 and "no prompt or answer on the span" in rows[0]
    assert "3 span(s) look like GenAI operations but carry no prompt or answer" in test.stdout
    assert f"{CAPTURE}=span_only" in test.stdout
    as_json = run_cli("test", "-c", config, "--rule", "everything", "--json", path)
    doc = json.loads(as_json.stdout)
    assert doc["summary"]["no_content"] == 3
    assert all(r["no_content"] == "gen_ai.operation.name='chat'" for r in doc["spans"])

    explain = run_cli("explain", "-c", config, "--span-id", span_hex(spans[0]), path)
    assert explain.returncode == 0, explain.stderr
    assert "no prompt or answer: the span looks like a GenAI operation" in explain.stdout
    assert f"{CAPTURE}=span_only" in explain.stdout
    assert "(no prompt or answer on the span: gen_ai.operation.name='chat')" in explain.stdout


def test_with_capture_on_nothing_is_said(
    server: FakeOpenAI, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = tmp_path / "rules.yaml"
    config.write_text(CONFIG)
    # What the installed opentelemetry-util-genai 1.1b0 reads: span_only (``true`` is refused).
    spans, processor = _chat_spans(server, {CAPTURE: "span_only"}, config, caplog)
    assert all("gen_ai.output.messages" in (s.attributes or {}) for s in spans)
    stats = processor.stats()
    assert stats.no_content == {"answers": 0, "everything": 0}
    assert stats.evals == {"answers": 3, "everything": 3}
    assert not [r for r in caplog.records if "no prompt or answer" in r.getMessage()]
