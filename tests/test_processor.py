"""OnlineEvalSpanProcessor with the real SDK: selection, sampling, eval spans, failures,
lifecycle."""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from otel_online_eval import (
    EvalInput,
    OnlineEvalSpanProcessor,
    Rule,
    Score,
    ScorerSkipped,
    evaluate,
)
from otel_online_eval.config import EngineConfig
from otel_online_eval.rules import ApplyTo


@dataclass
class Rig:
    provider: TracerProvider
    tracer: trace.Tracer
    evals: InMemorySpanExporter
    app: InMemorySpanExporter
    processor: OnlineEvalSpanProcessor

    def flush(self) -> list[ReadableSpan]:
        assert self.processor.force_flush(10_000)
        return list(self.evals.get_finished_spans())

    def eval_spans(self) -> list[ReadableSpan]:
        return [s for s in self.flush() if s.name.startswith("eval ")]

    def score_spans(self) -> list[ReadableSpan]:
        return [s for s in self.flush() if s.name.startswith("score ")]


@contextmanager
def rig(config: Any = None, rules: Sequence[Rule] = (), **kwargs: Any) -> Iterator[Rig]:
    evals = InMemorySpanExporter()
    app = InMemorySpanExporter()
    processor = OnlineEvalSpanProcessor(config, rules=rules, exporter=evals, **kwargs)
    provider = TracerProvider(resource=Resource.create({"service.name": "app-under-test"}))
    provider.add_span_processor(SimpleSpanProcessor(app))
    provider.add_span_processor(processor)
    try:
        yield Rig(provider, provider.get_tracer("test"), evals, app, processor)
    finally:
        provider.shutdown()


def chat_attrs(
    output: str | None = "Paris is the capital.", prompt: str = "Capital of France?"
) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.usage.input_tokens": 12,
        "gen_ai.usage.output_tokens": 7,
        "gen_ai.input.messages": json.dumps(
            [{"role": "user", "parts": [{"type": "text", "content": prompt}]}]
        ),
    }
    if output is not None:
        attrs["gen_ai.output.messages"] = json.dumps(
            [{"role": "assistant", "parts": [{"type": "text", "content": output}]}]
        )
    return attrs


def request_with_children(tracer: trace.Tracer) -> dict[str, int]:
    """A root 'request' with children 'chat' and 'other'; returns span ids by name."""
    ids = {}
    with tracer.start_as_current_span("request", kind=SpanKind.SERVER) as root:
        with tracer.start_as_current_span("chat", attributes=chat_attrs()) as chat:
            ids["chat"] = chat.get_span_context().span_id
        with tracer.start_as_current_span("other") as other:
            ids["other"] = other.get_span_context().span_id
        ids["request"] = root.get_span_context().span_id
    return ids


def always(inp: EvalInput) -> float:
    return 1.0


@pytest.mark.parametrize(
    ("apply_to", "expected"),
    [
        (ApplyTo(), {"request", "chat", "other"}),
        (ApplyTo(root_spans=True), {"request"}),
        (ApplyTo(span_names=frozenset({"chat"})), {"chat"}),
        (ApplyTo(root_spans=True, span_names=frozenset({"chat"})), {"request", "chat"}),
    ],
    ids=["neither", "root", "names", "both"],
)
def test_apply_to_combinations(apply_to: ApplyTo, expected: set[str]) -> None:
    rule = Rule(name="r", scorers=Rule.create("x", [always]).scorers, apply_to=apply_to)
    with rig(rules=[rule]) as r:
        ids = request_with_children(r.tracer)
        parents = {s.parent.span_id for s in r.eval_spans() if s.parent}
        assert parents == {ids[n] for n in expected}
        stats = r.processor.stats()
        assert stats.seen == 3 and stats.selected["r"] == len(expected)


def test_local_root_spans_include_remote_parents() -> None:
    rule = Rule.create("r", [always], local_root_spans=True)
    remote = trace.SpanContext(
        0x1234, 0x99, is_remote=True, trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED)
    )
    with rig(rules=[rule]) as r:
        ctx = trace.set_span_in_context(trace.NonRecordingSpan(remote))
        with r.tracer.start_as_current_span("entry", context=ctx):
            with r.tracer.start_as_current_span("inner"):
                pass
        (ev,) = r.eval_spans()
        assert ev.attributes is not None and ev.attributes["online_eval.span.name"] == "entry"


def test_eval_span_format() -> None:
    def labelled(inp: EvalInput) -> Score:
        return Score(0.75, "good", "because", {"judge": "x", "gen_ai.usage.input_tokens": 5})

    rule = Rule.create("quality", [labelled, (always, 0.0)], description="d", span_names=["chat"])
    with rig(rules=[rule]) as r:
        ids = request_with_children(r.tracer)
        app_chat = next(s for s in r.app.get_finished_spans() if s.name == "chat")
        spans = r.flush()
        (ev,) = [s for s in spans if s.name == "eval quality"]
        (sc,) = [s for s in spans if s.name.startswith("score ")]
        assert ev.context and ev.parent and sc.context and sc.parent and app_chat.context
        # Child of the scored span, same trace, and linked to it.
        assert ev.context.trace_id == app_chat.context.trace_id
        assert ev.parent.span_id == ids["chat"]
        assert [link.context.span_id for link in ev.links] == [ids["chat"]]
        assert ev.resource.attributes["service.name"] == "app-under-test"
        assert ev.attributes == {
            "online_eval.rule": "quality",
            "online_eval.span.name": "chat",
            "online_eval.rule.description": "d",
            "online_eval.sampling.rate": 1.0,
            "online_eval.scorers.total": 2,
            "online_eval.scorers.ran": 1,
            "online_eval.scorers.sampled_out": 1,
            "online_eval.scorers.failed": 0,
            "online_eval.scorers.skipped": 0,
        }
        (event,) = ev.events
        assert event.name == "gen_ai.evaluation.result"
        assert dict(event.attributes or {}) == {
            "gen_ai.evaluation.name": "labelled",
            "gen_ai.evaluation.score.value": 0.75,
            "gen_ai.evaluation.score.label": "good",
            "gen_ai.evaluation.explanation": "because",
        }
        assert sc.name == "score labelled" and sc.parent.span_id == ev.context.span_id
        assert sc.context.trace_id == ev.context.trace_id
        assert sc.attributes is not None
        assert sc.attributes["online_eval.scorer"] == "labelled"
        assert sc.attributes["gen_ai.evaluation.score.value"] == 0.75
        assert sc.attributes["online_eval.metadata.judge"] == "x"
        # A scorer's gen_ai.* metadata is namespaced: no backend reads it as the app's usage.
        assert "gen_ai.usage.input_tokens" not in sc.attributes
        assert sc.attributes["online_eval.metadata.gen_ai.usage.input_tokens"] == 5
        assert sc.status.status_code is StatusCode.UNSET
        # Eval spans never pass through the app's own processors.
        assert not [s for s in r.app.get_finished_spans() if s.name.startswith(("eval", "score"))]


def test_filter_and_input_output_reach_scorers() -> None:
    seen: list[tuple[str | None, str | None, str]] = []

    def record(inp: EvalInput) -> bool:
        assert inp.span is not None
        seen.append((inp.input, inp.output, inp.span.name))
        return True

    rule = Rule.create("r", [record], filter="output IS NOT NULL AND model = 'gpt-4o-mini'")
    with rig(rules=[rule]) as r:
        with r.tracer.start_as_current_span("chat", attributes=chat_attrs()):
            pass
        with r.tracer.start_as_current_span("chat", attributes=chat_attrs(output=None)):
            pass
        r.flush()
        assert seen == [("Capital of France?", "Paris is the capital.", "chat")]
        stats = r.processor.stats()
        assert stats.sampled["r"] == 2 and stats.filtered_out["r"] == 1 and stats.evals["r"] == 1


def test_sampling_rates_and_nesting() -> None:
    rules = [
        Rule.create("half", [always], sampling=0.5),
        Rule.create("tenth", [always], sampling=0.1),
        Rule.create("never", [always], sampling=0.0),
        Rule.create("tenth-own-seed", [always], sampling=0.1, sampling_seed=3),
    ]
    with rig(rules=rules) as r:
        for _ in range(2000):
            with r.tracer.start_as_current_span("chat"):
                pass
        by_rule: dict[str, set[int]] = {}
        for s in r.eval_spans():
            assert s.attributes is not None and s.context is not None
            by_rule.setdefault(str(s.attributes["online_eval.rule"]), set()).add(s.context.trace_id)
        assert 850 < len(by_rule["half"]) < 1150
        assert 140 < len(by_rule["tenth"]) < 260
        assert "never" not in by_rule
        assert by_rule["tenth"] <= by_rule["half"]  # nested
        own = by_rule["tenth-own-seed"]
        assert 140 < len(own) < 260 and len(own & by_rule["tenth"]) < 60  # independent


def half(inp: EvalInput) -> float:
    return 0.5


def test_scorer_sampling_is_a_fraction_of_the_rule_sample() -> None:
    rule = Rule.create("r", [always, (half, 0.5), (_nan, 0.0)], sampling=0.5)
    with rig(rules=[rule]) as r:
        for _ in range(1000):
            with r.tracer.start_as_current_span("chat"):
                pass
        evals = r.eval_spans()
        ran = [s.attributes["online_eval.scorers.ran"] for s in evals if s.attributes]
        assert 400 < len(evals) < 600
        with_second = sum(1 for n in ran if n == 2)
        assert 0.35 < with_second / len(evals) < 0.65
        assert all(n in (1, 2) for n in ran)  # the rate-0 scorer never runs
        outcomes = r.processor.stats().scores
        assert outcomes[("r", "_nan", "sampled_out")] == len(evals)
        assert ("r", "_nan", "error") not in outcomes


def test_callable_sampling_sync_and_async() -> None:
    async def only_paris(inp: str | None, out: str | None) -> bool:
        await asyncio.sleep(0)
        return out is not None and "Paris" in out

    rules = [
        Rule.create("sync", [always], sampling=lambda i, o: i == "keep"),
        Rule.create("async", [always], sampling=only_paris),
    ]
    with rig(rules=rules) as r:
        with r.tracer.start_as_current_span("chat", attributes=chat_attrs(prompt="keep")):
            pass
        with r.tracer.start_as_current_span("chat", attributes=chat_attrs(output="Rome")):
            pass
        names = sorted(
            str(s.attributes["online_eval.rule"]) for s in r.eval_spans() if s.attributes
        )
        assert names == ["async", "sync"]


def _raise(inp: EvalInput) -> float:
    raise ValueError("scorer exploded")


def _nan(inp: EvalInput) -> float:
    return math.nan


def _string(inp: EvalInput) -> str:
    return "great"


def _none(inp: EvalInput) -> None:
    return None


def _too_big(inp: EvalInput) -> float:
    return 7.0


async def _async_hang(inp: EvalInput) -> float:
    await asyncio.sleep(60)
    return 1.0


def test_every_scorer_failure_is_recorded_and_the_rest_still_score() -> None:
    release = threading.Event()

    def sync_hang(inp: EvalInput) -> float:
        release.wait(30)
        return 1.0

    scorers = [_raise, _nan, _string, _none, _too_big, _async_hang, sync_hang, always]
    rule = Rule.create("r", scorers, timeout_s=0.3)
    try:
        with rig(rules=[rule]) as r:
            with r.tracer.start_as_current_span("chat"):
                pass
            spans = r.flush()
            by_name = {s.name: s for s in spans}
            expected = {
                "score _raise": ("ValueError", "scorer exploded"),
                "score _nan": ("ScorerError", "NaN"),
                "score _string": ("ScorerError", "returned a string 'great'"),
                "score _none": ("ScorerError", "returned None"),
                "score _too_big": ("ScorerError", "outside [0, 1]"),
                "score _async_hang": ("timeout", "timed out after 0.3s"),
                "score sync_hang": ("timeout", "timed out after 0.3s"),
            }
            for name, (error_type, message) in expected.items():
                span = by_name[name]
                assert span.status.status_code is StatusCode.ERROR, name
                assert message in (span.status.description or ""), name
                assert span.attributes is not None and span.attributes["error.type"] == error_type
                (exc,) = [e for e in span.events if e.name == "exception"]
                assert exc.attributes and message in str(exc.attributes["exception.message"])
            assert by_name["score always"].status.status_code is StatusCode.UNSET
            ev = by_name["eval r"]
            assert ev.attributes is not None
            assert ev.attributes["online_eval.scorers.failed"] == 7
            assert ev.attributes["online_eval.scorers.ran"] == 8
            assert ev.status.status_code is StatusCode.ERROR
            outcomes = r.processor.stats().scores
            assert outcomes[("r", "_async_hang", "timeout")] == 1
            assert outcomes[("r", "_raise", "error")] == 1
            assert outcomes[("r", "always", "ok")] == 1
    finally:
        release.set()


def test_queue_overflow_is_counted_and_never_blocks() -> None:
    gate = threading.Event()

    def slow(inp: EvalInput) -> float:
        gate.wait(10)
        return 1.0

    rule = Rule.create("r", [slow])
    engine = EngineConfig(queue_size=5, max_concurrent_evals=1, threads=1)
    try:
        with rig(rules=[rule], engine=engine) as r:
            started = time.monotonic()
            for _ in range(50):
                with r.tracer.start_as_current_span("chat"):
                    pass
            assert time.monotonic() - started < 2.0  # the app never waited for the scorer
            stats = r.processor.stats()
            assert stats.seen == 50
            assert stats.dropped["queue_full"] >= 40
            gate.set()
            # Everything left is evaluated, but the dropped spans were not: flush says so once.
            assert r.processor.force_flush(10_000) is False
            evals = r.eval_spans()
            assert len(evals) + r.processor.stats().dropped["queue_full"] == 50
    finally:
        gate.set()


def test_force_flush_times_out_and_then_completes() -> None:
    gate = threading.Event()

    def blocked(inp: EvalInput) -> float:
        gate.wait(10)
        return 1.0

    with rig(rules=[Rule.create("r", [blocked])]) as r:
        with r.tracer.start_as_current_span("chat"):
            pass
        assert r.processor.force_flush(200) is False
        gate.set()
        assert r.processor.force_flush(10_000) is True
        assert len([s for s in r.evals.get_finished_spans() if s.name == "eval r"]) == 1


def test_shutdown_drains_is_idempotent_and_later_spans_are_counted() -> None:
    def slowish(inp: EvalInput) -> float:
        time.sleep(0.05)
        return 1.0

    evals = InMemorySpanExporter()
    processor = OnlineEvalSpanProcessor(rules=[Rule.create("r", [slowish])], exporter=evals)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("t")
    for _ in range(20):
        with tracer.start_as_current_span("chat"):
            pass
    processor.shutdown()
    assert len([s for s in evals.get_finished_spans() if s.name == "eval r"]) == 20
    processor.shutdown()  # twice is fine
    with tracer.start_as_current_span("late"):
        pass  # no exception reaches the app
    assert processor.stats().dropped["shutdown"] == 1
    provider.shutdown()


class _ExplodingSelection(ApplyTo):
    def selects(self, name: str, parent: int) -> bool:
        raise RuntimeError("selection bug")


def test_no_exception_ever_reaches_span_end(caplog: pytest.LogCaptureFixture) -> None:
    rule = Rule(
        name="r", scorers=Rule.create("x", [always]).scorers, apply_to=_ExplodingSelection()
    )
    with rig(rules=[rule]) as r:
        for _ in range(3):
            with r.tracer.start_as_current_span("chat"):
                pass  # span.end() runs the processor: it must not raise
        assert "could not look at a span" in caplog.text
        assert caplog.text.count("could not look at a span") == 1  # rate-limited


def test_direct_evaluate_inside_and_outside_a_span() -> None:
    def exact(inp: EvalInput) -> bool:
        return inp.output == "4"

    with rig(rules=[]) as r:
        with r.tracer.start_as_current_span("handler") as handler:
            future = r.processor.evaluate("math", input="2+2?", output="4", scorers=[exact])
        result = future.result(10)
        assert result.scores["exact"].value == 1.0 and result.scores["exact"].label == "pass"
        outside = evaluate("math", input="2+2?", output="5", scorers=[exact])
        assert outside.result(10).scores["exact"].value == 0.0
        spans = r.eval_spans()
        inside_span = next(s for s in spans if s.context and s.context.span_id == result.span_id)
        ctx = handler.get_span_context()
        assert inside_span.parent is not None and inside_span.parent.span_id == ctx.span_id
        assert inside_span.context is not None
        assert inside_span.context.trace_id == ctx.trace_id
        assert [link.context.span_id for link in inside_span.links] == [ctx.span_id]
        other = next(s for s in spans if s.context and s.context.span_id != result.span_id)
        assert other.parent is None and not other.links


def test_direct_evaluate_is_awaitable_and_uses_configured_scorers() -> None:
    config = {"scorers": {"nonempty": {"type": "not_empty"}}, "rules": []}
    with rig(config) as r:

        async def main() -> float | None:
            result = await r.processor.evaluate("x", output="hello", scorers=["nonempty"])
            return result.scores["nonempty"].value

        assert asyncio.run(main()) == 1.0
        with pytest.raises(ValueError, match="unknown scorer 'nope'; scorers defined: nonempty"):
            r.processor.evaluate("x", output="y", scorers=["nope"])


def test_async_scorers_run_on_the_loop_concurrently() -> None:
    async def slow(inp: EvalInput) -> float:
        await asyncio.sleep(0.2)
        return 1.0

    with rig(rules=[Rule.create("r", [slow])]) as r:
        started = time.monotonic()
        for _ in range(30):
            with r.tracer.start_as_current_span("chat"):
                pass
        assert len(r.eval_spans()) == 30
        assert time.monotonic() - started < 2.0  # 30 x 0.2 s would be 6 s one at a time


def test_yaml_config_through_the_processor(tmp_path: Any) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(
        "scorers:\n"
        "  category: {type: one_of, values: [billing, shipping]}\n"
        "rules:\n"
        "  - name: cat\n"
        "    apply_to: {span_names: [categorize-message]}\n"
        "    filter: output IS NOT NULL\n"
        "    scorers: [category]\n"
    )
    evals = InMemorySpanExporter()
    processor = OnlineEvalSpanProcessor.from_yaml(path, exporter=evals)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("t")
    for answer in ["billing", "weather"]:
        with tracer.start_as_current_span("categorize-message", attributes=chat_attrs(answer)):
            pass
    assert processor.force_flush(10_000)
    labels = sorted(
        str(s.attributes["gen_ai.evaluation.score.label"])
        for s in evals.get_finished_spans()
        if s.name == "score category" and s.attributes
    )
    assert labels == ["billing", "other"]
    provider.shutdown()


class _InlineBoom:
    """A code scorer that declares itself cheap enough to run on the engine's loop."""

    name = "inline_boom"
    inline = True

    def score(self, inp: EvalInput) -> float:
        raise KeyError("inline failure")


def test_inline_scorers_record_failures_like_the_others() -> None:
    config = {
        "scorers": {
            "json": {"type": "valid_json"},
            "schema": {"type": "json_schema", "schema": {"type": "object"}, "field": "input"},
        },
        "rules": [{"name": "r", "scorers": ["json", "schema"]}],
    }
    rule = Rule.create("code", [_InlineBoom()])
    assert rule.inline and rule.scorers[0].spec.inline
    with rig(config, rules=[rule]) as r:
        assert all(rule.inline for rule in r.processor.rules)
        with r.tracer.start_as_current_span("chat", attributes=chat_attrs(output="{not json")):
            pass
        by_name = {s.name: s for s in r.flush()}
        json_attrs = by_name["score json"].attributes or {}
        assert json_attrs["gen_ai.evaluation.score.label"] == "fail"
        # The prompt is not JSON: the schema scorer says so as a score, not a crash.
        assert by_name["score schema"].attributes is not None
        boom = by_name["score inline_boom"]
        assert boom.status.status_code is StatusCode.ERROR
        assert "inline failure" in (boom.status.description or "")
        assert r.processor.stats().scores[("code", "inline_boom", "error")] == 1


def test_a_skipped_scorer_is_recorded_as_a_skip_not_an_error() -> None:
    def spent(inp: EvalInput) -> float:
        raise ScorerSkipped("budget spent")

    with rig(rules=[Rule.create("r", [spent, always])]) as r:
        with r.tracer.start_as_current_span("chat"):
            pass
        result = r.processor.evaluate("direct", output="x", scorers=[spent]).result(10)
        assert result.skipped == {"spent": "budget spent"} and not result.errors
        by_name = {s.name: s for s in r.flush() if s.parent is not None}
        skip = by_name["score spent"]
        assert skip.status.status_code is StatusCode.UNSET
        assert (
            skip.attributes is not None and skip.attributes["online_eval.skipped"] == "budget spent"
        )
        assert "gen_ai.evaluation.score.value" not in skip.attributes
        ev = by_name["eval r"]
        assert ev.attributes is not None and ev.attributes["online_eval.scorers.skipped"] == 1
        assert ev.attributes["online_eval.scorers.failed"] == 0
        assert ev.status.status_code is StatusCode.UNSET
        assert [e.attributes["gen_ai.evaluation.name"] for e in ev.events if e.attributes] == [
            "always"
        ]


def test_scorers_run_without_the_apps_context_and_with_tracing_suppressed() -> None:
    from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, get_value

    seen: list[tuple[str, object, bool]] = []

    def look(where: str) -> float:
        current = trace.get_current_span().get_span_context().is_valid
        seen.append((where, get_value(_SUPPRESS_INSTRUMENTATION_KEY), current))
        return 1.0

    class Inline:
        name, inline = "inline", True

        def score(self, inp: EvalInput) -> float:
            return look("inline")

    def in_pool(inp: EvalInput) -> float:
        return look("pool")

    async def on_loop(inp: EvalInput) -> float:
        return look("async")

    with rig(rules=[Rule.create("a", [Inline()]), Rule.create("b", [in_pool, on_loop])]) as r:
        # Spans end while the app has a current span: scorers must not inherit it.
        with r.tracer.start_as_current_span("request"):
            for _ in range(3):
                with r.tracer.start_as_current_span("chat"):
                    pass
        r.flush()
    assert {w for w, _, _ in seen} == {"inline", "pool", "async"}
    assert all(suppressed is True and not current for _, suppressed, current in seen), seen
