"""Trace rules on traces that real agent frameworks make, in-process: the framework's spans go
through OnlineEvalSpanProcessor on the same provider, a trace rule scores the whole run with the
built-in trace scorers and a judge over the transcript (a second local fake OpenAI server)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_online_eval import OnlineEvalSpanProcessor, parse_config
from tests.agent_frameworks import (
    ANSWER,
    QUESTION,
    run_langgraph_agent,
    run_openai_agents_agent,
    run_pydantic_ai_agent,
)
from tests.fake_openai import FakeOpenAI, tool_call

pytestmark = pytest.mark.slow

RUNNERS = {
    "pydantic-ai": run_pydantic_ai_agent,
    "openai-agents": run_openai_agents_agent,
    "langgraph": run_langgraph_agent,
}


def config(judge_url: str) -> Any:
    return parse_config(
        f"""
scorers:
  tool_errors: {{type: tool_errors}}
  no_loops: {{type: loop, max_repeats: 3}}
  steps: {{type: step_budget, max_llm_calls: 6, max_tool_calls: 5}}
  task_done:
    type: llm_judge
    template: task_completion
    base_url: {judge_url}
    model: judge-1
rules:
  - name: agent-task
    scope: trace
    filter: "trace.tool_calls > 0 AND trace.llm_calls >= 2"
    completion: {{settle_s: 0.1, idle_s: 5, max_wait_s: 30}}
    scorers: [tool_errors, no_loops, steps, task_done]
"""
    )


def scores_of(spans: list[ReadableSpan]) -> dict[str, Any]:
    return {
        s.name.removeprefix("score "): (s.attributes or {}).get("gen_ai.evaluation.score.value")
        for s in spans
        if s.name.startswith("score ")
    }


@pytest.mark.parametrize("framework", sorted(RUNNERS))
def test_a_trace_rule_scores_a_real_agent_run_once(framework: str) -> None:
    evals = InMemorySpanExporter()
    with FakeOpenAI() as judge_server, FakeOpenAI() as model_server:
        judge_server.script(tool_call("select_choice", {"reasons": "Done.", "choice": "completed"}))
        processor = OnlineEvalSpanProcessor(config(judge_server.base_url), exporter=evals)
        provider = TracerProvider()
        provider.add_span_processor(processor)
        answer = RUNNERS[framework](model_server, provider)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert processor.force_flush(10_000)
            if any(s.name == "eval agent-task" for s in evals.get_finished_spans()):
                break
            time.sleep(0.05)
        time.sleep(0.3)  # past settle_s again: no second evaluation comes
        assert processor.force_flush(10_000)
        stats = processor.stats()
        provider.shutdown()
        judged = [r.body for r in judge_server.requests]
    assert answer == ANSWER
    spans = list(evals.get_finished_spans())
    (ev,) = [s for s in spans if s.name == "eval agent-task"]
    attrs = ev.attributes or {}
    assert attrs["online_eval.scope"] == "trace"
    assert attrs["online_eval.trace.complete"] is True
    assert attrs["online_eval.trace.reason"] == "complete"
    assert attrs["online_eval.trace.span_count"] == stats.assembly_spans[("agent-task", "buffered")]
    assert ev.parent is not None and [link.context.span_id for link in ev.links] == [
        ev.parent.span_id
    ]
    scores = scores_of(spans)
    # Three tool runs, one of which failed; no call repeated three times; within the budget;
    # and the judge's verdict.
    assert scores["tool_errors"] == pytest.approx(2 / 3)
    assert scores["no_loops"] == 1.0
    assert scores["steps"] == 1.0
    assert scores["task_done"] == 1.0
    # The judge was shown the run's transcript: the question, the tool failure and the answer.
    (request,) = judged
    prompt = json.dumps(request["messages"], ensure_ascii=False)
    assert QUESTION in prompt and "converter busy" in prompt and "68" in prompt
    assert stats.evals == {"agent-task": 1}
    assert stats.assembly_traces[("agent-task", "complete")] == 1
