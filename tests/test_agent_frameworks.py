"""TraceView over traces that real agent frameworks make (``tests.agent_frameworks``): pydantic-ai
with its own instrumentation (GenAI conventions), openai-agents and LangGraph with OpenInference's,
each running an agent whose model asks for ``get_weather``, ``to_fahrenheit`` (which fails), then
``to_fahrenheit`` again, and answers; against the fake OpenAI server, plain and streamed.

Checks where TraceView misreads what a framework emits are strict xfails (see MISREADS): they
start passing, and so fail here, when the extraction learns the shape."""

from __future__ import annotations

import json
from typing import Any

import pytest
from opentelemetry import trace as trace_api

from otel_online_eval.spanview import SdkSpanView
from otel_online_eval.traceview import TraceView
from tests.agent_frameworks import (
    ANSWER,
    FAILURE,
    INSTRUCTIONS,
    MODEL,
    QUESTION,
    RESULTS,
    TOOL_CALLS,
    Run,
    capture,
    dump,
    loopback_only,
    run_langgraph_agent,
    run_openai_agents_agent,
    run_pydantic_ai_agent,
)

CASES: dict[str, tuple[Any, dict[str, Any]]] = {
    "pydantic_ai": (run_pydantic_ai_agent, {}),
    "pydantic_ai-stream": (run_pydantic_ai_agent, {"stream": True}),
    "pydantic_ai-v6": (run_pydantic_ai_agent, {"version": 6}),
    "openai_agents": (run_openai_agents_agent, {}),
    "openai_agents-stream": (run_openai_agents_agent, {"stream": True}),
    "langgraph": (run_langgraph_agent, {}),
    "langgraph-stream": (run_langgraph_agent, {"stream": True}),
}

MISREADS: dict[tuple[str, str], str] = {}
for _case in ("langgraph", "langgraph-stream"):
    MISREADS[(_case, "tool_ids")] = (
        "LangGraph TOOL spans have no tool_call.id; the id is in output.value's "
        "data.tool_call_id (the ToolMessage), which TraceView does not read"
    )
"""(case, check) -> what TraceView gets wrong there: those checks are strict xfails."""


def cases(check: str) -> list[Any]:
    """The cases as parameters, the ones TraceView misreads for ``check`` marked xfail."""
    out = []
    for name in CASES:
        reason = MISREADS.get((name, check))
        marks = (
            [pytest.mark.xfail(strict=True, raises=AssertionError, reason=reason)] if reason else []
        )
        out.append(pytest.param(name, marks=marks, id=name))
    return out


def framework(case: str) -> str:
    return case.split("-")[0]


_runs: dict[str, tuple[Run, list[Any]]] = {}


def run_of(case: str) -> tuple[Run, list[Any]]:
    """The case's run (made once per session), with the addresses it connected to."""
    if case not in _runs:
        run, kwargs = CASES[case]
        with loopback_only() as attempts:
            _runs[case] = (capture(run, **kwargs), list(attempts))
    return _runs[case]


def view(case: str) -> TraceView:
    run = run_of(case)[0]
    return TraceView([SdkSpanView(s) for s in run.spans], complete=True, reason="complete")


@pytest.mark.parametrize("case", cases("run"))
def test_the_agent_ran_the_script_on_127_0_0_1(case: str) -> None:
    run, attempts = run_of(case)
    assert run.answer == ANSWER
    assert len(run.requests) == 4
    assert all(r.path == "/v1/chat/completions" for r in run.requests)
    assert all(bool(r.body.get("stream")) == ("stream" in case) for r in run.requests)
    assert attempts, "the guard saw no connection at all"
    assert all(address[0] == "127.0.0.1" for address in attempts), attempts


@pytest.mark.parametrize("case", cases("root"))
def test_one_root(case: str) -> None:
    run = run_of(case)[0]
    roots = [s for s in run.spans if s.parent is None]
    assert len(roots) == 1, dump(run.spans)
    assert len({s.context.trace_id for s in run.spans}) == 1
    trace = view(case)
    assert trace.root.span_id == roots[0].context.span_id
    expected = {
        "pydantic_ai": "invoke_agent weather",
        "openai_agents": "Agent workflow",
        "langgraph": "LangGraph",
    }
    assert trace.root.name == expected[framework(case)]
    assert trace.error_count == 1  # the failed tool call


@pytest.mark.parametrize("case", cases("tool_calls"))
def test_tool_calls(case: str) -> None:
    calls = view(case).tool_calls
    assert [c.name for c in calls] == [n for n, _, _ in TOOL_CALLS], dump(run_of(case)[0].spans)
    assert calls[0].error is None and calls[2].error is None
    assert calls[1].error is not None and FAILURE in calls[1].error
    assert calls[1].result is None
    assert all(c.span.name.endswith(c.name) for c in calls)


@pytest.mark.parametrize("case", cases("tool_arguments"))
def test_tool_call_arguments(case: str) -> None:
    calls = view(case).tool_calls
    assert [c.arguments for c in calls] == [a for _, a, _ in TOOL_CALLS]


@pytest.mark.parametrize("case", cases("tool_results"))
def test_tool_call_results(case: str) -> None:
    calls = view(case).tool_calls
    assert [c.result for c in calls] == list(RESULTS)


@pytest.mark.parametrize("case", cases("tool_ids"))
def test_tool_call_ids(case: str) -> None:
    calls = view(case).tool_calls
    if framework(case) == "openai_agents":  # its TOOL spans carry no tool call id at all
        assert [c.id for c in calls] == [None, None, None]
    else:
        assert [c.id for c in calls] == [i for _, _, i in TOOL_CALLS]


@pytest.mark.parametrize("case", cases("llm_calls"))
def test_llm_calls(case: str) -> None:
    trace = view(case)
    assert len(trace.llm_calls) == 4, dump(run_of(case)[0].spans)
    assert all(c.model == MODEL and c.error is None for c in trace.llm_calls)
    if case in ("openai_agents-stream", "langgraph-stream"):  # no stream_options: no usage
        assert (trace.input_tokens, trace.output_tokens) == (None, None)
    else:  # the fake server's 11 + 7 per call
        assert (trace.input_tokens, trace.output_tokens) == (4 * 11, 4 * 7)


@pytest.mark.parametrize("case", cases("llm_outputs"))
def test_llm_call_outputs(case: str) -> None:
    outputs = [c.output for c in view(case).llm_calls]
    calls = [[{"name": n, "arguments": a}] for n, a, _ in TOOL_CALLS]
    assert [json.loads(o) for o in outputs[:3] if o is not None] == calls
    assert outputs[3] == ANSWER


@pytest.mark.parametrize("case", cases("messages"))
def test_messages(case: str) -> None:
    trace = view(case)
    messages = trace.messages
    # pydantic-ai's default data format (version 5) sends tool results as user messages.
    tool_role = "user" if case in ("pydantic_ai", "pydantic_ai-stream") else "tool"
    roles = ["user"] + ["assistant", tool_role] * 3 + ["assistant"]
    if framework(case) != "pydantic_ai":  # the instructions as a system message
        roles = ["system", *roles]
        assert messages[0].text == INSTRUCTIONS
    else:  # the instructions in gen_ai.system_instructions, not in the transcript
        assert trace.llm_calls[-1].span.genai.system_instructions == INSTRUCTIONS
    assert [m.role for m in messages] == roles
    assert [m.text for m in messages if m.role == "user" and m.text] == [QUESTION]
    calls = [(c.name, c.arguments, c.id) for m in messages for c in m.tool_calls]
    assert calls == list(TOOL_CALLS)
    results = [r for m in messages for r in m.tool_results]
    assert [r.id for r in results] == [i for _, _, i in TOOL_CALLS]
    sent = {  # what each framework sent the model as the tool results
        "pydantic_ai": [{"celsius": 20}, FAILURE, 68.0],
        # str() of the result; the tool's failure_error_function's text
        "openai_agents": ["{'celsius': 20}", f"Error: {FAILURE}", "68.0"],
        # JSON of the result; ToolNode's error text
        "langgraph": [
            '{"celsius": 20}',
            f"Error: RuntimeError('{FAILURE}')\n Please fix your mistakes.",
            "68.0",
        ],
    }
    assert [r.result for r in results] == sent[framework(case)]
    assert messages[-1].role == "assistant" and messages[-1].text == ANSWER


@pytest.mark.parametrize("case", cases("output"))
def test_output(case: str) -> None:
    assert view(case).output == ANSWER


@pytest.mark.parametrize("case", cases("input"))
def test_input(case: str) -> None:
    assert view(case).input == QUESTION


@pytest.mark.parametrize(
    "runner", [run_pydantic_ai_agent, run_openai_agents_agent, run_langgraph_agent]
)
def test_runs_leave_the_global_provider_alone(runner: Any) -> None:
    before = trace_api.get_tracer_provider()
    assert capture(runner).spans
    assert trace_api.get_tracer_provider() is before


def test_openai_agents_own_trace_export_gets_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK's default processor, which exports to OpenAI's platform, is not given the run's
    traces or spans, and is registered again afterwards."""
    from agents import flush_traces
    from agents.tracing import get_trace_provider
    from agents.tracing.processors import default_processor

    seen: list[str] = []
    default = default_processor()
    for hook in ("on_trace_start", "on_trace_end", "on_span_start", "on_span_end"):
        monkeypatch.setattr(default, hook, lambda *_a, _h=hook: seen.append(_h))
    provider = get_trace_provider()
    with loopback_only() as attempts:
        run = capture(run_openai_agents_agent)
        flush_traces()
    assert run.spans and run.answer == ANSWER
    assert seen == []
    assert all(address[0] == "127.0.0.1" for address in attempts), attempts
    assert get_trace_provider() is provider
    # Afterwards a traced run would reach the default processor again, as before the run.
    from agents.tracing import trace as agents_trace

    with agents_trace("probe"):
        pass
    assert seen == ["on_trace_start", "on_trace_end"]
