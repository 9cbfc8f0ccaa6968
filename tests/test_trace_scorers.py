"""The trace scorers over agent traces made with the SDK (tests/agent_traces.py)."""

from __future__ import annotations

import pytest
from opentelemetry.trace import Tracer

from otel_online_eval import ScorerError
from otel_online_eval.scorers._trace import (
    LoopScorer,
    Price,
    StepBudgetScorer,
    ToolErrorsScorer,
    TraceLatencyScorer,
    TraceTokenBudgetScorer,
)
from otel_online_eval.scorers.base import EvalInput
from otel_online_eval.traceview import TraceView
from tests.agent_traces import genai_agent, openinference_agent, spans_of


def _inp(trace: TraceView | None) -> EvalInput:
    return EvalInput(
        trace.input if trace else None,
        trace.output if trace else None,
        trace.root if trace else None,
        "agent-task",
        trace=trace,
    )


@pytest.fixture(scope="module")
def agent() -> TraceView:
    return TraceView(spans_of(genai_agent))


def test_tool_errors_scores_the_share_that_succeeded_and_names_the_failures(
    agent: TraceView,
) -> None:
    strict = ToolErrorsScorer("tools").score(_inp(agent))
    assert strict.value == pytest.approx(2 / 3) and strict.label == "fail"
    assert strict.explanation is not None
    assert "1 of 3 tool runs failed (get_weather: " in strict.explanation
    assert "upstream timed out" in strict.explanation
    assert dict(strict.metadata) == {"tool_calls": 3, "tool_errors": 1}
    lenient = ToolErrorsScorer("tools", max_error_rate=0.5).score(_inp(agent))
    assert lenient.label == "pass"
    oi = ToolErrorsScorer("tools").score(_inp(TraceView(spans_of(openinference_agent))))
    assert oi.explanation is not None and "get_weather: no such city" in oi.explanation


def test_tool_errors_without_tools_passes() -> None:
    def no_tools(tracer: Tracer) -> None:
        with tracer.start_as_current_span("root"):
            pass

    score = ToolErrorsScorer("tools").score(_inp(TraceView(spans_of(no_tools))))
    assert (score.value, score.label, score.explanation) == (1.0, "pass", "no tool was run")


def test_loop_fails_on_the_same_call_repeated(agent: TraceView) -> None:
    # get_weather(city=Paris) ran twice: a loop at 2, not at 3.
    assert LoopScorer("loop", max_repeats=3).score(_inp(agent)).label == "pass"
    looped = LoopScorer("loop", max_repeats=2).score(_inp(agent))
    assert (looped.value, looped.label) == (0.0, "fail")
    assert looped.explanation == 'get_weather ran 2 times with the same arguments {"city": "Paris"}'


def test_step_budget(agent: TraceView) -> None:
    ok = StepBudgetScorer("steps", max_llm_calls=4, max_tool_calls=3).score(_inp(agent))
    assert ok.label == "pass" and dict(ok.metadata) == {"llm_calls": 4, "tool_calls": 3}
    over = StepBudgetScorer("steps", max_llm_calls=3).score(_inp(agent))
    assert (over.label, over.explanation) == ("fail", "4 llm calls, over 3")
    with pytest.raises(ValueError, match="needs max_llm_calls, max_tool_calls or both"):
        StepBudgetScorer("steps")


def test_trace_latency_is_the_whole_trace(agent: TraceView) -> None:
    took = agent.duration_ms
    assert TraceLatencyScorer("lat", max_ms=took + 1000).score(_inp(agent)).label == "pass"
    assert TraceLatencyScorer("lat", max_ms=took / 2).score(_inp(agent)).label == "fail"


def test_trace_token_budget_sums_every_model_call_and_prices_them(agent: TraceView) -> None:
    # 380 input and 40 output tokens over four calls.
    assert TraceTokenBudgetScorer("tok", max_total=420).score(_inp(agent)).label == "pass"
    over = TraceTokenBudgetScorer("tok", max_input=300).score(_inp(agent))
    assert (over.label, over.explanation) == ("fail", "input 380 tokens, over the maximum 300")
    prices = {"gpt-test": Price(input_per_mtok=1000.0, output_per_mtok=5000.0)}
    # 380 * 1000 / 1e6 + 40 * 5000 / 1e6 = 0.38 + 0.2
    cheap = TraceTokenBudgetScorer("tok", prices=prices, max_cost=1.0).score(_inp(agent))
    assert cheap.label == "pass" and cheap.metadata["cost"] == pytest.approx(0.58)
    dear = TraceTokenBudgetScorer("tok", prices=prices, max_cost=0.5, max_total=1000)
    score = dear.score(_inp(agent))
    assert score.label == "fail" and score.explanation is not None
    assert score.explanation.endswith("cost 0.58, over the maximum 0.5")
    unpriced = TraceTokenBudgetScorer("tok", prices={"other": Price(1, 1)}, max_cost=1)
    with pytest.raises(ScorerError, match="no price for the model 'gpt-test' \\(priced: other\\)"):
        unpriced.score(_inp(agent))
    with pytest.raises(ValueError, match="max_cost needs prices"):
        TraceTokenBudgetScorer("tok", max_cost=1)


@pytest.mark.parametrize(
    "scorer",
    [
        ToolErrorsScorer("s"),
        LoopScorer("s"),
        StepBudgetScorer("s", max_llm_calls=1),
        TraceLatencyScorer("s", max_ms=1),
        TraceTokenBudgetScorer("s", max_total=1),
    ],
)
def test_every_trace_scorer_needs_a_trace(scorer: object) -> None:
    with pytest.raises(ScorerError, match=r"scores a whole trace.*scope: trace"):
        scorer.score(_inp(None))  # type: ignore[attr-defined]
