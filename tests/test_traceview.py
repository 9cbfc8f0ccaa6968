"""TraceView over real SDK spans: an agent trace in the GenAI conventions, and one in
OpenInference's, each with two tools, one of which fails once."""

from __future__ import annotations

import json
from typing import Any

import pytest
from opentelemetry.trace import Tracer

from otel_online_eval.traceview import TraceView
from tests.agent_traces import (
    ANSWER,
    QUESTION,
    call_message,
    genai_agent,
    openinference_agent,
    spans_of,
    text_message,
    tool,
)


def test_a_genai_agent_trace() -> None:
    trace = TraceView(spans_of(genai_agent))
    assert trace.span_count == 8 and trace.error_count == 1
    assert trace.root.name == "invoke_agent weather"
    assert trace.span_names[0] == "invoke_agent weather"
    assert set(trace.span_names) == {
        "invoke_agent weather",
        "chat gpt-test",
        "execute_tool get_weather",
        "execute_tool to_fahrenheit",
    }
    assert [(t.name, t.arguments, t.result) for t in trace.tool_calls] == [
        ("get_weather", {"city": "Paris"}, None),
        ("get_weather", {"city": "Paris"}, {"celsius": 20}),
        ("to_fahrenheit", {"celsius": 20}, 68),
    ]
    failed = trace.tool_calls[0]
    assert failed.error is not None and "upstream timed out" in failed.error
    assert [t.id for t in trace.tool_calls] == ["c1", "c2", "c3"]
    # The agent span names a model but is not a call to it.
    assert len(trace.llm_calls) == 4
    assert all(c.model == "gpt-test" for c in trace.llm_calls)
    assert (trace.input_tokens, trace.output_tokens) == (50 + 80 + 110 + 140, 40)
    assert trace.input == QUESTION
    assert trace.output == ANSWER
    assert [m.role for m in trace.messages] == [
        "user", "assistant", "tool", "assistant", "tool", "assistant", "tool", "assistant",
    ]  # fmt: skip
    assert trace.messages[-1].text == ANSWER
    assert len(trace.find("chat gpt-test")) == 4 and trace.find("nothing") == ()
    assert trace.duration_ms == pytest.approx(trace.root.duration_ms)
    starts = [s.start_time_ns for s in trace.spans]
    assert starts == sorted(starts)


def test_an_openinference_agent_trace() -> None:
    trace = TraceView(spans_of(openinference_agent))
    assert trace.root.name == "Agent workflow" and trace.span_count == 7
    assert [(t.name, t.error) for t in trace.tool_calls] == [
        ("get_weather", "no such city"),
        ("get_weather", None),
        ("to_fahrenheit", None),
    ]
    assert trace.tool_calls[1].result == {"celsius": 20}
    assert len(trace.llm_calls) == 3
    assert trace.input_tokens == 40 + 41 + 42 and trace.output_tokens == 15
    assert trace.input == QUESTION
    assert trace.output == ANSWER


def test_a_trace_seen_in_part_has_its_earliest_local_root() -> None:
    spans = [s for s in spans_of(genai_agent) if s.parent_span_id is not None]
    trace = TraceView(spans, complete=False, reason="idle")
    assert trace.root.name == "chat gpt-test"  # the first span whose parent did not arrive
    assert (trace.complete, trace.reason) == (False, "idle")
    assert trace.output == ANSWER  # no root: the last model call's answer


def test_an_empty_trace_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one span"):
        TraceView([])


def test_the_transcript_is_put_together_when_the_last_call_was_not_sent_it() -> None:
    """Instrumentations that record only each call's answer: the first call's input, then
    every answer and tool result in order."""

    def answers_only(tracer: Tracer) -> None:
        with tracer.start_as_current_span(
            "invoke_agent", attributes={"gen_ai.operation.name": "invoke_agent"}
        ):
            _chat_out(
                tracer,
                [text_message("user", QUESTION)],
                call_message("c1", "to_fahrenheit", {"celsius": 20}),
            )
            tool(tracer, "c1", "to_fahrenheit", {"celsius": 20}, 68)
            _chat_out(tracer, None, text_message("assistant", ANSWER))

    trace = TraceView(spans_of(answers_only))
    assert [m.role for m in trace.messages] == ["user", "assistant", "tool", "assistant"]
    assert trace.messages[2].text == "68"
    assert (trace.input, trace.output) == (QUESTION, ANSWER)


def _chat_out(tracer: Tracer, inputs: list[dict[str, Any]] | None, output: dict[str, Any]) -> None:
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "gpt-test",
        "gen_ai.output.messages": json.dumps([output]),
    }
    if inputs is not None:
        attrs["gen_ai.input.messages"] = json.dumps(inputs)
    with tracer.start_as_current_span("chat", attributes=attrs):
        pass


def _langgraph_like(tracer: Tracer) -> None:
    """The shapes openinference-instrumentation-langchain gives a LangGraph agent: the model's
    calls in llm.output_messages.*, TOOL spans with a one-key input as its bare value and a
    serialized ToolMessage as output.value (or none when the tool raised)."""

    def llm(*calls: tuple[str, str, dict[str, Any]]) -> None:
        attrs: dict[str, Any] = {
            "openinference.span.kind": "LLM",
            "llm.model_name": "gpt-test",
            "llm.input_messages.0.message.role": "user",
            "llm.input_messages.0.message.content": QUESTION,
            "llm.output_messages.0.message.role": "assistant",
        }
        for n, (call_id, name, args) in enumerate(calls):
            key = f"llm.output_messages.0.message.tool_calls.{n}.tool_call"
            attrs[f"{key}.id"] = call_id
            attrs[f"{key}.function.name"] = name
            attrs[f"{key}.function.arguments"] = json.dumps(args)
        if not calls:
            attrs["llm.output_messages.0.message.content"] = ANSWER
        with tracer.start_as_current_span("ChatOpenAI", attributes=attrs):
            pass

    def run(name: str, value: str, call_id: str | None, content: str, status: str) -> None:
        attrs = {"openinference.span.kind": "TOOL", "tool.name": name, "input.value": value}
        if call_id is not None:  # the tool's ToolMessage, which names the call it answers
            message = {"content": content, "tool_call_id": call_id, "status": status}
            attrs["output.value"] = json.dumps({"type": "tool", "data": message})
        with tracer.start_as_current_span(name, attributes=attrs):
            pass

    with tracer.start_as_current_span("LangGraph", attributes={"openinference.span.kind": "CHAIN"}):
        # Two calls to one tool in one answer, run in the other order; a third call by name.
        llm(("a", "get_weather", {"city": "Paris"}), ("b", "get_weather", {"city": "Rome"}))
        run("get_weather", "Rome", "b", '{"celsius": 25}', "success")
        run("get_weather", "Paris", None, "", "")  # no ToolMessage: matched by name and value
        llm(("c", "to_fahrenheit", {"celsius": 20}), ("d", "get_weather", {"city": "Oslo"}))
        run("to_fahrenheit", "20", "c", "Error: busy", "error")  # the span itself is OK
        run("get_weather", "Lima", None, "", "")  # its value is not the call's: kept as it is
        llm()


def test_tool_spans_with_bare_arguments_get_the_model_s_call_arguments() -> None:
    trace = TraceView(spans_of(_langgraph_like))
    assert [(t.name, t.arguments, t.id) for t in trace.tool_calls] == [
        ("get_weather", {"city": "Rome"}, "b"),  # by id
        ("get_weather", {"city": "Paris"}, None),  # by name, the one call left
        ("to_fahrenheit", {"celsius": 20}, "c"),
        ("get_weather", "Lima", None),
    ]
    assert trace.tool_calls[0].result == {"celsius": 25}
    # A ToolMessage with status "error" is a failed call, whatever the span's status.
    failed = trace.tool_calls[2]
    assert (failed.error, failed.result, failed.span.status_code) == ("Error: busy", None, "UNSET")
    assert trace.output == ANSWER


def test_arguments_that_are_objects_are_kept() -> None:
    def agent(tracer: Tracer) -> None:
        with tracer.start_as_current_span(
            "chat", attributes={"gen_ai.operation.name": "chat", "gen_ai.request.model": "m"}
        ) as chat:
            message = call_message("c1", "get_weather", {"city": "Paris", "unit": "C"})
            chat.set_attribute("gen_ai.output.messages", json.dumps([message]))
        tool(tracer, "c1", "get_weather", {"city": "Paris"}, {"celsius": 20})

    (call,) = TraceView(spans_of(agent)).tool_calls
    assert (call.arguments, call.id) == ({"city": "Paris"}, "c1")
