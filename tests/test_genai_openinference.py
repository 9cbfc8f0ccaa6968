"""Arize's OpenInference instrumentation (``openinference-instrumentation-openai``):
``llm.input_messages.{i}.message.*``, ``input.value`` / ``output.value``, ``llm.token_count.*``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from openinference.instrumentation.openai import OpenAIInstrumentor

from otel_online_eval.genai import GenAIFields, ToolCall, ToolResult, extract
from tests.instrumentation.harness import Capture, ClientContract, instrumented
from tests.spans import view

ENV = {"OPENINFERENCE_HIDE_INPUTS": "false", "OPENINFERENCE_HIDE_OUTPUTS": "false"}


@pytest.fixture(scope="module")
def capture() -> Iterator[Capture]:
    with instrumented(OpenAIInstrumentor, ENV) as cap:
        yield cap


class TestOpenInference(ClientContract):
    convention = "openinference"


# -- hand-built spans of shapes the agent frameworks emit (tests/test_agent_frameworks.py) -----


def _response(*output: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI Responses API object, as openai-agents records it."""
    return {"id": "__fake_id__", "object": "response", "model": "gpt-4o-mini", "output": [*output]}


def _function_call(call_id: str, name: str, args: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "function_call",
        "call_id": call_id,
        "name": name,
        "arguments": json.dumps(args),
    }


def _answer(text: str) -> dict[str, Any]:
    return {
        "type": "message",
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }


def _llm(output: Any) -> GenAIFields:
    """An openai-agents ``generation`` span: input.value messages, output.value, no
    llm.input_messages / llm.output_messages."""
    question = [{"role": "user", "content": "Weather in Paris?"}]
    return extract(
        view(
            "generation",
            attributes={
                "openinference.span.kind": "LLM",
                "llm.model_name": "gpt-4o-mini",
                "input.value": json.dumps(question),
                "input.mime_type": "application/json",
                "output.value": json.dumps(output),
                "output.mime_type": "application/json",
            },
        )
    )


WEATHER_CALL = ToolCall("get_weather", {"city": "Paris"}, "call_1")


@pytest.mark.parametrize("wrap", [False, True], ids=["object", "in_a_list"])
def test_a_responses_api_object_in_output_value(wrap: bool) -> None:
    """openai-agents streamed over chat completions puts its response in a one-element list."""
    calls = _response(_function_call("call_1", "get_weather", {"city": "Paris"}))
    answer = _response(_answer("It is sunny."))
    g = _llm([calls] if wrap else calls)
    assert g.tool_calls == (WEATHER_CALL,)
    assert [(m.role, m.tool_calls) for m in g.output_messages] == [("assistant", (WEATHER_CALL,))]
    assert json.loads(g.output or "") == [{"name": "get_weather", "arguments": {"city": "Paris"}}]
    assert (g.input, g.operation) == ("Weather in Paris?", "llm")
    g = _llm([answer] if wrap else answer)
    assert (g.output, g.tool_calls) == ("It is sunny.", ())
    assert [(m.role, m.text) for m in g.output_messages] == [("assistant", "It is sunny.")]


def test_a_list_of_responses_api_objects_is_read_in_order() -> None:
    first = _response(_function_call("call_1", "get_weather", {"city": "Paris"}))
    g = _llm([first, _response(_answer("It is sunny."))])
    assert g.tool_calls == (WEATHER_CALL,)
    assert [m.role for m in g.output_messages] == ["assistant", "assistant"]
    assert g.output == "It is sunny."


def test_other_lists_in_output_value_stay_text() -> None:
    odd = [{"id": "x", "output": [_answer("hi")]}, {"a": 1}]  # no model; not all responses
    assert _llm(odd).output == json.dumps(odd, ensure_ascii=False)
    assert _llm([]).output == "[]"


def _tool(output: Any, **attributes: Any) -> GenAIFields:
    """A LangGraph TOOL span (openinference-instrumentation-langchain)."""
    attrs = {
        "openinference.span.kind": "TOOL",
        "tool.name": "get_weather",
        "input.value": "Paris",
        **attributes,
    }
    if output is not None:
        attrs["output.value"] = json.dumps(output)
        attrs["output.mime_type"] = "application/json"
    return extract(view("get_weather", attributes=attrs))


def _tool_message(content: str, status: str = "success", lc: bool = False) -> dict[str, Any]:
    fields = {
        "content": content,
        "type": "tool",
        "name": "get_weather",
        "id": None,
        "tool_call_id": "call_1",
        "artifact": None,
        "status": status,
    }
    if lc:
        return {
            "lc": 1,
            "type": "constructor",
            "id": ["langchain", "schema", "messages", "ToolMessage"],
            "kwargs": fields,
        }
    return {"type": "tool", "data": {**fields, "additional_kwargs": {}, "response_metadata": {}}}


@pytest.mark.parametrize("lc", [False, True], ids=["dumpd", "lc_constructor"])
def test_a_langchain_tool_message_as_a_tool_result(lc: bool) -> None:
    g = _tool(_tool_message('{"celsius": 20}', lc=lc))
    result = ToolResult({"celsius": 20}, "call_1", "get_weather")
    assert [m.tool_results for m in g.output_messages] == [(result,)]
    assert g.output == '{"celsius": 20}'
    # The one-key input as the instrumentation records it: the bare value (TraceView recovers
    # the arguments from the model's call).
    assert g.tool_calls == (ToolCall("get_weather", "Paris", "call_1"),)
    assert g.extra == {}
    plain = _tool(_tool_message("68.0", lc=lc))
    assert plain.output_messages[0].tool_results[0].result == 68.0
    text = _tool(_tool_message("sunny", lc=lc))
    assert text.output == "sunny"


def test_a_tool_message_s_id_does_not_override_the_span_s() -> None:
    g = _tool(_tool_message("sunny"), **{"tool_call.id": "own"})
    assert g.tool_calls[0].id == "own"
    assert g.output_messages[0].tool_results[0].id == "own"


def test_a_tool_message_with_status_error_names_the_error() -> None:
    error = "Error: RuntimeError('busy')\n Please fix your mistakes."
    g = _tool(_tool_message(error, status="error"))
    assert g.extra == {"tool_error": error}
    assert g.output == error


def test_mappings_that_are_not_tool_messages_stay_results() -> None:
    for value in (
        {"type": "tool", "data": "x"},
        {"type": "tool", "data": {"no_content": 1}},
        {"lc": 1, "type": "constructor", "id": ["x", "AIMessage"], "kwargs": {"content": "c"}},
        {"type": "constructor", "kwargs": "x"},
    ):
        g = _tool(value)
        assert g.output_messages[0].tool_results[0].result == value
        assert g.tool_calls[0].id is None and g.extra == {}
