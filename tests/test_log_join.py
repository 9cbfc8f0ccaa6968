"""Log records joined to their spans in-process: ``opentelemetry-instrumentation-openai-v2``
in event mode (``EVENT_ONLY``, latest conventions) writes the prompt and the answer in a log
record (``gen_ai.client.inference.operation.details``) while its span has none;
``processor.log_processor`` on the app's real ``LoggerProvider`` hands it to the engine, which
evaluates the span with it. And the join store's own bounds: records wait ``join_s``, the
oldest go past the cap."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_online_eval import OnlineEvalSpanProcessor, parse_config
from otel_online_eval.engine._joins import JoinStore
from otel_online_eval.spanview import EventView
from tests.fake_openai import FakeOpenAI
from tests.instrumentation.harness import instrumented, is_app, responder

# Event mode: content only in log records, none on the span.
ENV = {
    "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "event_only",
    "OTEL_SEMCONV_STABILITY_OPT_IN": "gen_ai_latest_experimental",
}
CONFIG = """
scorers:
  nonempty: {type: not_empty}
rules:
  - name: answers
    filter: "output IS NOT NULL"
    scorers: [nonempty]
"""


@pytest.fixture(scope="module")
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        fake.respond_with(responder)
        yield fake


def _score_chats(server: FakeOpenAI, tmp_path: Path, join_logs: bool) -> list[dict[str, object]]:
    """Two chat calls through the event-mode instrumentation; the eval spans' attributes."""
    config = tmp_path / "rules.yaml"
    config.write_text(CONFIG)
    exporter = InMemorySpanExporter()
    logs = LoggerProvider()
    with instrumented(OpenAIInstrumentor, ENV, logger_provider=logs) as capture:
        processor = OnlineEvalSpanProcessor.from_yaml(config, exporter=exporter)
        if join_logs:
            logs.add_log_record_processor(processor.log_processor)
        capture.provider.add_span_processor(processor)
        with openai.OpenAI(base_url=server.base_url, api_key="test", max_retries=0) as client:
            for question in ("Capital of France?", "Capital of Italy?"):
                client.chat.completions.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": question}]
                )
        assert processor.force_flush(10_000)
        spans = [s for s in capture.take() if not is_app(s)]
        assert len(spans) == 2
        # the instrumentation really is in event mode: no content on its spans
        assert all(not (s.events or ()) for s in spans)
        assert all("gen_ai.input.messages" not in (s.attributes or {}) for s in spans)
        processor.shutdown()
    logs.shutdown()
    return [dict(s.attributes or {}) for s in exporter.get_finished_spans()]


def test_event_mode_spans_are_scored_with_their_joined_log_records(
    server: FakeOpenAI, tmp_path: Path
) -> None:
    evals = _score_chats(server, tmp_path, join_logs=True)
    scores = [a for a in evals if a.get("gen_ai.evaluation.name") == "nonempty"]
    assert len(scores) == 2, evals
    assert all(a["gen_ai.evaluation.score.value"] == 1.0 for a in scores)


def test_without_the_log_processor_the_same_spans_have_no_output(
    server: FakeOpenAI, tmp_path: Path
) -> None:
    evals = _score_chats(server, tmp_path, join_logs=False)
    assert not [a for a in evals if a.get("gen_ai.evaluation.name") == "nonempty"]


def _event(n: int) -> EventView:
    return EventView("gen_ai.choice", n, {"body": {"message": {"content": str(n)}}})


def test_records_wait_for_their_span_and_are_taken_once() -> None:
    store = JoinStore(ttl_s=2.0)
    store.offer(_event(1), 7, 70)
    store.offer(_event(2), 7, 70)
    store.offer(_event(3), 7, 71)
    assert [e.time_ns for e in store.take(7, 70)] == [1, 2]
    assert store.take(7, 70) == ()
    assert (store.joined, store.joined_spans) == (2, 1)


def test_records_whose_span_never_comes_expire_counted() -> None:
    now = [0.0]
    store = JoinStore(ttl_s=2.0, clock=lambda: now[0])
    store.offer(_event(1), 1, 10)
    now[0] = 1.0
    store.offer(_event(2), 1, 11)
    now[0] = 2.5  # the first is past its 2 s, the second is not
    assert store.take(1, 12) == ()
    assert store.expired == 1
    assert [e.time_ns for e in store.take(1, 11)] == [2]


def test_past_the_cap_the_oldest_records_are_dropped_counted() -> None:
    store = JoinStore(ttl_s=60, max_records=3)
    for n in range(5):
        store.offer(_event(n), 1, n)
    assert store.dropped == 2
    assert store.take(1, 0) == () and store.take(1, 1) == ()
    assert [e.time_ns for e in store.take(1, 4)] == [4]


def test_join_s_is_read_and_checked_at_load() -> None:
    assert parse_config({"extract": {"join_s": 5}}).extract.join_s == 5.0
    assert parse_config({}).extract.join_s == 2.0
    assert parse_config({"extract": {"join_s": 5}}).extract.is_default
    with pytest.raises(Exception, match=r"extract\.join_s"):
        parse_config({"extract": {"join_s": -1}})


def _late_record_run(sampling: float, flush_before_record: bool) -> tuple[Any, list[Any]]:
    """A chat span with no content, then its record after it ended (an instrumentation that
    emits late): the processor's counts and the eval spans."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    config = parse_config(
        {
            "scorers": {"nonempty": {"type": "not_empty"}},
            "rules": [
                {
                    "name": "answers",
                    "sampling": sampling,
                    "filter": "output IS NOT NULL",
                    "scorers": ["nonempty"],
                }
            ],
            "extract": {"join_s": 30},
        }
    )
    exporter = InMemorySpanExporter()
    processor = OnlineEvalSpanProcessor(config, exporter=exporter)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    logs = LoggerProvider()
    logs.add_log_record_processor(processor.log_processor)
    tracer, logger = provider.get_tracer("app"), logs.get_logger("app")
    with tracer.start_as_current_span("warm-up"):
        logger.emit(body="a record in use: spans may now wait")
    with tracer.start_as_current_span(
        "chat gpt-4o-mini", attributes={"gen_ai.operation.name": "chat"}
    ) as span:
        pass
    # The span must be parked before its record comes (else it takes it on arrival).
    deadline = time.monotonic() + 5
    while not processor._engine._parked and time.monotonic() < deadline:
        time.sleep(0.005)
    if flush_before_record:
        assert processor.force_flush(5000)  # ends the wait: evaluated without the record
    answer = '[{"role": "assistant", "parts": [{"type": "text", "content": "Paris"}]}]'
    logger.emit(
        event_name="gen_ai.client.inference.operation.details",
        attributes={"gen_ai.output.messages": answer},
        context=trace.set_span_in_context(span),
    )
    assert processor.force_flush(5000)
    stats = processor._engine.stats()
    processor.shutdown()
    logs.shutdown()
    evals = [dict(s.attributes or {}) for s in exporter.get_finished_spans()]
    return stats, evals


def test_a_span_waits_for_a_record_that_comes_after_it_ended() -> None:
    stats, evals = _late_record_run(1.0, flush_before_record=False)
    assert stats.span_waits["records"] == 1
    # the warm-up's record joined its span too
    assert stats.log_records["joined"] == 2 and stats.joined_spans == 2
    scores = [a for a in evals if a.get("gen_ai.evaluation.name") == "nonempty"]
    assert [a["gen_ai.evaluation.score.value"] for a in scores] == [1.0]


def test_a_flush_ends_the_wait_and_the_late_record_then_expires_unjoined() -> None:
    stats, evals = _late_record_run(1.0, flush_before_record=True)
    assert stats.span_waits["flush"] == 1 and stats.span_waits["records"] == 0
    assert stats.filtered_out["answers"] == 2  # the warm-up's, and the chat span's
    assert stats.joined_spans == 1  # the warm-up
    assert not [a for a in evals if a.get("gen_ai.evaluation.name") == "nonempty"]


def test_records_of_traces_no_rule_samples_are_not_held() -> None:
    stats, evals = _late_record_run(0.0, flush_before_record=False)
    assert stats.log_records["not_sampled"] == 2  # the warm-up's and the late one
    assert stats.span_waits == {"records": 0, "timeout": 0, "flush": 0, "full": 0}
    assert evals == []
