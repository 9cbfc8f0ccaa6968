"""Rules with ``scope: trace`` in-process: a trace's spans are buffered until it is complete, then
scored once, with the real SDK, the real processor and an in-memory exporter."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from otel_online_eval import ConfigError, EvalInput, OnlineEvalSpanProcessor, Rule, parse_config
from otel_online_eval.assembly import Completion
from otel_online_eval.traceview import TraceView
from tests.agent_traces import ANSWER, QUESTION, genai_agent

FAST = Completion(settle_s=0.05, idle_s=0.5, max_wait_s=2.0)


@dataclass
class Rig:
    provider: TracerProvider
    tracer: trace.Tracer
    evals: InMemorySpanExporter
    processor: OnlineEvalSpanProcessor

    def eval_spans(self, n: int, timeout_s: float = 5.0) -> list[ReadableSpan]:
        """Waits until ``n`` eval spans were exported (traces are evaluated on a timer)."""
        deadline = time.monotonic() + timeout_s
        while True:
            assert self.processor.force_flush(5_000)
            found = [s for s in self.evals.get_finished_spans() if s.name.startswith("eval ")]
            if len(found) >= n or time.monotonic() > deadline:
                return found
            time.sleep(0.02)


@contextmanager
def rig(config: Any = None, rules: tuple[Rule, ...] = ()) -> Iterator[Rig]:
    evals = InMemorySpanExporter()
    processor = OnlineEvalSpanProcessor(config, rules=rules, exporter=evals)
    provider = TracerProvider(resource=Resource.create({"service.name": "agent"}))
    provider.add_span_processor(processor)
    try:
        yield Rig(provider, provider.get_tracer("test"), evals, processor)
    finally:
        provider.shutdown()


class Capture:
    """A scorer that keeps what it was given."""

    name = "capture"

    def __init__(self) -> None:
        self.inputs: list[EvalInput] = []

    def score(self, inp: EvalInput) -> float:
        self.inputs.append(inp)
        return 1.0


def wait_for(r: Rig, done: Any, timeout_s: float = 5.0) -> Any:
    """The processor's stats once ``done(stats)`` holds (evaluations finish on the loop)."""
    deadline = time.monotonic() + timeout_s
    while True:
        stats = r.processor.stats()
        if done(stats) or time.monotonic() > deadline:
            return stats
        time.sleep(0.02)


def trace_rule(name: str = "agent", **kwargs: Any) -> tuple[Rule, Capture]:
    capture = Capture()
    kwargs.setdefault("completion", FAST)
    return Rule.create(name, [capture], scope="trace", **kwargs), capture


def root_of(spans: list[ReadableSpan]) -> ReadableSpan:
    (root,) = [s for s in spans if s.parent is None]
    return root


def test_a_whole_agent_trace_is_scored_once_on_its_root() -> None:
    rule, capture = trace_rule()
    with rig(rules=(rule,)) as r:
        genai_agent(r.tracer)
        (ev,) = r.eval_spans(1)
        time.sleep(0.2)  # nothing else comes: one evaluation per trace
        assert len(r.eval_spans(1)) == 1
    (inp,) = capture.inputs
    tv = inp.trace
    assert isinstance(tv, TraceView)
    assert tv.span_count == 8 and tv.complete and tv.reason == "complete"
    assert (inp.input, inp.output) == (QUESTION, ANSWER)
    assert inp.span is tv.root and tv.root.name == "invoke_agent weather"
    assert len(tv.tool_calls) == 3 and len(tv.llm_calls) == 4
    attrs = ev.attributes or {}
    assert attrs["online_eval.scope"] == "trace"
    assert attrs["online_eval.trace.span_count"] == 8
    assert attrs["online_eval.trace.complete"] is True
    assert attrs["online_eval.trace.reason"] == "complete"
    assert attrs["online_eval.revision"] == 1
    # Child of and linked to the anchor (the root).
    assert ev.parent is not None and ev.parent.span_id == tv.root.span_id
    assert ev.context is not None and ev.context.trace_id == tv.trace_id
    assert [link.context.span_id for link in ev.links] == [tv.root.span_id]


def test_yaml_trace_rule_with_trace_fields_in_its_filter_and_a_trace_scorer() -> None:
    config = parse_config(
        """
scorers:
  tool_errors: {type: tool_errors}
rules:
  - name: agent-task
    scope: trace
    filter: "trace.tool_calls > 0 AND trace.span_names CONTAINS 'chat gpt-test'"
    completion: {settle_s: 0.05, idle_s: 1, max_wait_s: 5}
    scorers: [tool_errors]
  - name: big-only
    scope: trace
    filter: "trace.span_count > 100"
    completion: {settle_s: 0.05, idle_s: 1, max_wait_s: 5}
    scorers: [tool_errors]
"""
    )
    with rig(config) as r:
        genai_agent(r.tracer)
        (ev,) = r.eval_spans(1)
        stats = wait_for(r, lambda st: st.filtered_out["big-only"] == 1)
    score = [s for s in r.evals.get_finished_spans() if s.name == "score tool_errors"]
    assert (ev.attributes or {})["online_eval.rule"] == "agent-task"
    assert len(score) == 1
    value = (score[0].attributes or {})["gen_ai.evaluation.score.value"]
    assert value == pytest.approx(2 / 3)  # one tool call of three failed
    assert stats.evals == {"agent-task": 1, "big-only": 0}
    assert stats.filtered_out["big-only"] == 1  # a trace, filtered on its trace fields
    assert stats.assembly_traces[("agent-task", "complete")] == 1
    assert stats.assembly_spans[("agent-task", "buffered")] == 8
    assert stats.sampled["agent-task"] == 8  # spans: every span of a sampled trace


def test_unsampled_traces_are_never_buffered() -> None:
    rule, capture = trace_rule(sampling=0.0)
    with rig(rules=(rule,)) as r:
        for _ in range(5):
            genai_agent(r.tracer)
        assert r.processor.force_flush(5_000)
        stats = r.processor.stats()
    assert capture.inputs == []
    assert stats.assembly_spans.get(("agent", "buffered"), 0) == 0
    assert stats.sampled_out["agent"] == 40 and stats.sampled["agent"] == 0


def test_apply_to_picks_the_anchor_span() -> None:
    rule, capture = trace_rule(span_names=["execute_tool to_fahrenheit"])
    missing, missed = trace_rule("missing", span_names=["no such span"])
    with rig(rules=(rule, missing)) as r:
        genai_agent(r.tracer)
        (ev,) = r.eval_spans(1)
        stats = wait_for(r, lambda st: st.filtered_out["missing"] == 1)
    (inp,) = capture.inputs
    assert inp.span is not None and inp.span.name == "execute_tool to_fahrenheit"
    assert ev.parent is not None and ev.parent.span_id == inp.span.span_id
    assert missed.inputs == [] and stats.filtered_out["missing"] == 1


def _child_of_unended_parent(tracer: trace.Tracer) -> None:
    """A trace whose root never ends: only a child arrives."""
    root = tracer.start_span("never-ends")
    with tracer.start_as_current_span("child", context=trace.set_span_in_context(root)):
        pass


def test_a_trace_whose_root_never_ends_is_scored_when_idle_and_marked_incomplete() -> None:
    rule, capture = trace_rule(completion=Completion(settle_s=0.05, idle_s=0.2, max_wait_s=5))
    skip, skipped = trace_rule(
        "skip", completion=Completion(settle_s=0.05, idle_s=0.2, max_wait_s=5), on_incomplete="skip"
    )
    with rig(rules=(rule, skip)) as r:
        _child_of_unended_parent(r.tracer)
        (ev,) = r.eval_spans(1)
        stats = wait_for(r, lambda st: st.assembly_skipped_incomplete["skip"] == 1)
    (inp,) = capture.inputs
    assert inp.trace is not None and not inp.trace.complete
    attrs = ev.attributes or {}
    assert (attrs["online_eval.trace.complete"], attrs["online_eval.trace.reason"]) == (
        False,
        "idle",
    )
    assert skipped.inputs == [] and stats.assembly_skipped_incomplete["skip"] == 1


def test_end_on_completes_a_trace_without_its_root() -> None:
    rule, capture = trace_rule(
        completion=Completion(settle_s=0.05, idle_s=30, max_wait_s=60, end_on=frozenset({"child"}))
    )
    with rig(rules=(rule,)) as r:
        _child_of_unended_parent(r.tracer)
        (ev,) = r.eval_spans(1)
    assert (ev.attributes or {})["online_eval.trace.reason"] == "end_on"
    assert capture.inputs[0].trace is not None and capture.inputs[0].trace.complete


def test_a_span_with_a_remote_parent_is_the_local_root_in_process() -> None:
    rule, capture = trace_rule()
    remote = SpanContext(0xABC, 0x123, True, TraceFlags(TraceFlags.SAMPLED))
    with rig(rules=(rule,)) as r:
        ctx = trace.set_span_in_context(NonRecordingSpan(remote))
        with r.tracer.start_as_current_span("handler", context=ctx):
            with r.tracer.start_as_current_span("inner"):
                pass
        (ev,) = r.eval_spans(1)
    assert (ev.attributes or {})["online_eval.trace.reason"] == "complete"
    (inp,) = capture.inputs
    assert inp.span is not None and inp.span.name == "handler"


def test_late_spans_are_ignored_or_reevaluated_as_the_next_revision() -> None:
    ignore, ignored = trace_rule("ignore")
    again, reevaluated = trace_rule("again", late="reevaluate")
    with rig(rules=(ignore, again)) as r:
        root = r.tracer.start_span("root")
        ctx = trace.set_span_in_context(root)
        with r.tracer.start_as_current_span("early", context=ctx):
            pass
        root.end()
        first = r.eval_spans(2)
        with r.tracer.start_as_current_span("late", context=ctx):
            pass
        evs = r.eval_spans(3)
        time.sleep(0.2)  # a second re-evaluation would have come by now
        stats = r.processor.stats()
    assert len(ignored.inputs) == 1 and stats.assembly_late["ignore"] == 1
    assert [i.trace.span_count for i in reevaluated.inputs if i.trace] == [2, 3]
    (old,) = [s for s in first if (s.attributes or {})["online_eval.rule"] == "again"]
    (new,) = [
        s
        for s in evs
        if (s.attributes or {})["online_eval.rule"] == "again"
        and (s.attributes or {})["online_eval.revision"] == 2
    ]
    links = {
        (link.attributes or {})["online_eval.link"]: link.context.span_id for link in new.links
    }
    assert old.context is not None and links["supersedes"] == old.context.span_id
    assert stats.evals == {"ignore": 1, "again": 2}


def test_shutdown_scores_buffered_traces_as_incomplete() -> None:
    rule, capture = trace_rule(completion=Completion(settle_s=10, idle_s=60, max_wait_s=600))
    evals = InMemorySpanExporter()
    processor = OnlineEvalSpanProcessor(rules=(rule,), exporter=evals)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    genai_agent(provider.get_tracer("test"))
    assert processor.force_flush(5_000)
    assert capture.inputs == []  # settling: a flush does not cut it short
    provider.shutdown()
    (inp,) = capture.inputs
    assert inp.trace is not None and inp.trace.reason == "shutdown" and not inp.trace.complete
    (ev,) = [s for s in evals.get_finished_spans() if s.name == "eval agent"]
    assert (ev.attributes or {})["online_eval.trace.reason"] == "shutdown"


def test_max_traces_evicts_the_oldest_trace_early() -> None:
    config = parse_config(
        {
            "scorers": {"errors": {"type": "tool_errors"}},
            "rules": [
                {
                    "name": "agent",
                    "scope": "trace",
                    "completion": {"settle_s": 30, "idle_s": 60, "max_wait_s": 600},
                    "scorers": ["errors"],
                }
            ],
            "engine": {"assembly": {"max_traces": 2}},
        }
    )
    with rig(config) as r:
        for _ in range(3):
            genai_agent(r.tracer)
        evs = r.eval_spans(1)
        stats = r.processor.stats()
    assert [(s.attributes or {})["online_eval.trace.reason"] for s in evs] == ["evicted"]
    assert stats.assembly_evicted[("agent", "max_traces")] == 1
    assert stats.assembly_buffered_traces["agent"] == 2


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (
            {"name": "r", "filter": "trace.span_count > 1", "scorers": ["ok"]},
            "rules[0].filter: trace.* fields are known only to rules with scope: trace or session",
        ),
        (
            {"name": "r", "scorers": ["errors"]},
            "rules[0].scorers[0]: scorer 'errors' (tool_errors) scores a whole trace",
        ),
        (
            {"name": "r", "completion": {"settle_s": 1}, "scorers": ["ok"]},
            "rules[0].completion: applies to rules with scope: trace or session only",
        ),
        (
            {
                "name": "r",
                "scope": "trace",
                "completion": {"settle_s": 5, "idle_s": 1},
                "scorers": ["ok"],
            },
            "rules[0].completion.settle_s: must not exceed idle_s",
        ),
        (
            {"name": "r", "scope": "trace", "completion": {"settle": 5}, "scorers": ["ok"]},
            "rules[0].completion.settle: unknown key 'settle'",
        ),
        (
            {"name": "r", "scope": "tree", "scorers": ["ok"]},
            "rules[0].scope: unknown value 'tree'; expected one of: span, trace, session",
        ),
        (
            {"name": "r", "scope": "trace", "late": "again", "scorers": ["ok"]},
            "rules[0].late: unknown value 'again'",
        ),
        (
            {"name": "r", "scope": "trace", "filter": "trace.spans > 1", "scorers": ["ok"]},
            "unknown field 'trace.spans'",
        ),
    ],
)
def test_trace_rule_config_errors_name_the_problem_and_where(
    rule: dict[str, Any], message: str
) -> None:
    config = {
        "scorers": {"ok": {"type": "not_empty"}, "errors": {"type": "tool_errors"}},
        "rules": [rule],
    }
    with pytest.raises(ConfigError) as info:
        parse_config(config)
    assert message in str(info.value)


def test_engine_assembly_is_read_and_checked() -> None:
    config = parse_config(
        {
            "scorers": {"ok": {"type": "not_empty"}},
            "rules": [{"name": "r", "scorers": ["ok"]}],
            "engine": {"assembly": {"max_traces": 5, "max_bytes": 1000, "on_full": "drop"}},
        }
    )
    bounds = config.engine.assembly
    assert (bounds.max_traces, bounds.max_bytes, bounds.on_full) == (5, 1000, "drop")
    with pytest.raises(ConfigError, match=r"engine.assembly.max_traces: must be at least 1"):
        parse_config(
            {
                "scorers": {"ok": {"type": "not_empty"}},
                "rules": [{"name": "r", "scorers": ["ok"]}],
                "engine": {"assembly": {"max_traces": 0}},
            }
        )
