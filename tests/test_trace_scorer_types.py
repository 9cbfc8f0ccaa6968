"""The trace scorers as YAML types: registration, options, defaults and every config issue."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from otel_online_eval import ConfigError, parse_config
from otel_online_eval._validate import Issues, Reader
from otel_online_eval.scorers import SCORER_TYPES
from otel_online_eval.scorers._trace import (
    LoopScorer,
    Price,
    StepBudgetScorer,
    ToolErrorsScorer,
    TraceLatencyScorer,
    TraceTokenBudgetScorer,
)
from otel_online_eval.scorers.base import EvalInput
from otel_online_eval.scorers.judge import BUILTIN_TEMPLATES
from otel_online_eval.scorers.registry import INLINE_TYPES, SESSION_TYPES, TRACE_TYPES
from otel_online_eval.traceview import TraceView
from tests.agent_traces import genai_agent, spans_of

TYPES = ("tool_errors", "loop", "step_budget", "trace_latency", "trace_token_budget")
TEMPLATES = ("task_completion", "tool_use", "answer_grounded_in_tools")


def build_with(type_name: str, options: Mapping[str, Any]) -> tuple[Any, list[tuple[str, str]]]:
    """Run a factory the way the loader does; returns (scorer, [(path, message)])."""
    issues = Issues()
    opts = Reader({"type": type_name, **options}, "scorers.s", issues)
    opts.raw("type")
    scorer = SCORER_TYPES[type_name]("s", opts)
    opts.done()
    return scorer, [(i.path, i.message) for i in issues.items]


def build(type_name: str, **options: Any) -> Any:
    scorer, issues = build_with(type_name, options)
    assert issues == [] and scorer is not None and scorer.name == "s"
    return scorer


def issues_of(type_name: str, **options: Any) -> list[tuple[str, str]]:
    scorer, issues = build_with(type_name, options)
    assert scorer is None, "a scorer with bad options must not be built"
    assert issues
    return issues


@pytest.fixture(scope="module")
def agent() -> EvalInput:
    trace = TraceView(spans_of(genai_agent))
    return EvalInput(trace.input, trace.output, trace.root, "agent", trace=trace)


def test_the_types_are_registered_inline_and_named_as_needing_a_trace() -> None:
    assert set(TYPES) <= set(SCORER_TYPES)
    assert set(TYPES) <= INLINE_TYPES  # sync, CPU-only, linear in the trace
    assert TRACE_TYPES == {*TYPES, *TEMPLATES}
    assert SESSION_TYPES == {"session_turns", "conversation_resolved", "user_frustration"}
    assert not TRACE_TYPES & SESSION_TYPES
    # The names that are not scorer types are built-in judge templates.
    templates = {*TEMPLATES, "conversation_resolved", "user_frustration"}
    assert templates <= set(BUILTIN_TEMPLATES)
    assert not templates & set(SCORER_TYPES)


def test_defaults(agent: EvalInput) -> None:
    tools = build("tool_errors")
    assert isinstance(tools, ToolErrorsScorer) and tools.max_error_rate == 0.0
    assert tools.score(agent).label == "fail"  # one of three tool runs failed
    loop = build("loop")
    assert isinstance(loop, LoopScorer) and loop.max_repeats == 3
    assert loop.score(agent).label == "pass"  # get_weather(Paris) ran twice


def test_options_reach_the_scorers(agent: EvalInput) -> None:
    assert build("tool_errors", max_error_rate=0.5).score(agent).label == "pass"
    assert build("loop", max_repeats=2).score(agent).label == "fail"
    steps = build("step_budget", max_tool_calls=3)
    assert isinstance(steps, StepBudgetScorer)
    assert (steps.max_llm_calls, steps.max_tool_calls) == (None, 3)
    assert build("step_budget", max_llm_calls=3).score(agent).explanation == "4 llm calls, over 3"
    latency = build("trace_latency", max_ms=60_000, target_ms=30_000)
    assert isinstance(latency, TraceLatencyScorer)
    assert (latency.max_ms, latency.target_ms) == (60_000.0, 30_000.0)
    assert latency.score(agent).label == "pass"
    tokens = build("trace_token_budget", max_input_tokens=300, max_total_tokens=1000)
    assert isinstance(tokens, TraceTokenBudgetScorer)
    assert (tokens.max_input, tokens.max_output, tokens.max_total) == (300, None, 1000)
    assert tokens.score(agent).explanation == "input 380 tokens, over the maximum 300"


def test_token_budget_prices_the_trace(agent: EvalInput) -> None:
    prices = {"gpt-test": {"input_per_mtok": 1000, "output_per_mtok": 5000}}
    dear = build("trace_token_budget", max_cost=0.5, prices=prices)
    assert dear.prices == {"gpt-test": Price(1000.0, 5000.0)} and dear.max_cost == 0.5
    score = dear.score(agent)
    # 380 * 1000 / 1e6 + 40 * 5000 / 1e6
    assert (score.label, score.explanation) == ("fail", "cost 0.58, over the maximum 0.5")
    # A price table without max_cost: the cost is reported, the tokens decide.
    reported = build("trace_token_budget", max_total_tokens=1000, prices=prices).score(agent)
    assert reported.label == "pass" and reported.metadata["cost"] == pytest.approx(0.58)
    assert reported.explanation is not None and reported.explanation.endswith("; cost 0.58")


@pytest.mark.parametrize(
    ("type_name", "options", "expected"),
    [
        (
            "tool_errors",
            {"max_error_rate": 1.5},
            ("scorers.s.max_error_rate", "must be between 0 and 1, got 1.5"),
        ),
        ("loop", {"max_repeats": 1}, ("scorers.s.max_repeats", "must be at least 2, got 1")),
        (
            "loop",
            {"max_repeats": 2.5},
            ("scorers.s.max_repeats", "must be a whole number, got 2.5"),
        ),
        (
            "step_budget",
            {},
            ("scorers.s", "needs at least one of 'max_llm_calls', 'max_tool_calls'"),
        ),
        (
            "step_budget",
            {"max_llm_calls": -1},
            ("scorers.s.max_llm_calls", "must be at least 0, got -1"),
        ),
        ("trace_latency", {}, ("scorers.s", "'max_ms' is required")),
        (
            "trace_latency",
            {"max_ms": 100, "target_ms": 100},
            ("scorers.s.target_ms", "must be less than max_ms (100), got 100"),
        ),
        (
            "trace_token_budget",
            {},
            (
                "scorers.s",
                "needs at least one of 'max_input_tokens', 'max_output_tokens', "
                "'max_total_tokens', 'max_cost'",
            ),
        ),
        (
            "trace_token_budget",
            {"max_cost": 1},
            (
                "scorers.s.max_cost",
                "needs 'prices': model -> {input_per_mtok, output_per_mtok} for every model called",
            ),
        ),
        (
            "trace_token_budget",
            {"max_cost": 1, "prices": {}},
            (
                "scorers.s.prices",
                "must not be empty: give model -> {input_per_mtok, output_per_mtok}",
            ),
        ),
        (
            "trace_token_budget",
            {"max_cost": 1, "prices": ["gpt-4o"]},
            ("scorers.s.prices", "must be a mapping, got a list"),
        ),
        (
            "trace_token_budget",
            {"max_cost": 1, "prices": {"gpt-4o": 2.5}},
            (
                "scorers.s.prices.gpt-4o",
                "must be a mapping with input_per_mtok and output_per_mtok, got a number",
            ),
        ),
        (
            "trace_token_budget",
            {"max_cost": 1, "prices": {"gpt-4o": {"input_per_mtok": 2.5}}},
            ("scorers.s.prices.gpt-4o", "'output_per_mtok' is required"),
        ),
        (
            "trace_token_budget",
            {"max_cost": 1, "prices": {"m": {"input_per_mtok": -1, "output_per_mtok": 1}}},
            ("scorers.s.prices.m.input_per_mtok", "must be at least 0, got -1"),
        ),
        (
            "trace_token_budget",
            {"max_cost": 1, "prices": {"m": {"input_per_mtok": 1, "output": 1}}},
            ("scorers.s.prices.m", "'output_per_mtok' is required"),
        ),
    ],
)
def test_wrong_options_are_reported(
    type_name: str, options: dict[str, Any], expected: tuple[str, str]
) -> None:
    assert expected in issues_of(type_name, **options)


def test_a_misspelt_option_is_an_unknown_key() -> None:
    _, issues = build_with("loop", {"max_repeat": 2})  # the loader refuses the config
    assert issues == [
        ("scorers.s.max_repeat", "unknown key 'max_repeat'; expected one of: max_repeats, type")
    ]


def test_unknown_keys_in_a_price_are_reported() -> None:
    prices = {"m": {"input_per_mtok": 1, "output_per_mtok": 1, "cached_per_mtok": 0.5}}
    issues = issues_of("trace_token_budget", max_cost=1, prices=prices)
    assert issues == [
        (
            "scorers.s.prices.m.cached_per_mtok",
            "unknown key 'cached_per_mtok'; expected one of: input_per_mtok, output_per_mtok",
        )
    ]


CONFIG = """\
scorers:
  tools: {type: tool_errors, max_error_rate: 2}
  loops:
    type: loop
    max_repeats: 1
  budget:
    type: trace_token_budget
    max_cost: 0.1
    prices:
      gpt-4o: {input_per_mtok: 2.5, output_per_mtok: ten}
rules:
  - name: agent
    scorers: [tools, loops, budget]
"""


def test_config_errors_have_file_line_and_column() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(CONFIG, source="agent.yaml")
    text = str(info.value)
    for expected in (
        "agent.yaml:2:46: scorers.tools.max_error_rate: must be between 0 and 1, got 2",
        "agent.yaml:5:18: scorers.loops.max_repeats: must be at least 2, got 1",
        "agent.yaml:10:54: scorers.budget.prices.gpt-4o.output_per_mtok: must be a number, "
        "got 'ten'",
    ):
        assert expected in text, text
