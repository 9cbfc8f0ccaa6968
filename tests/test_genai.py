"""GenAI extraction, one preset at a time, on hand-made spans (real SDK spans from tests.spans)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan

from otel_online_eval.genai import (
    PRESETS,
    ExtractOptions,
    GenAIFields,
    Message,
    ToolCall,
    ToolResult,
    extract,
)
from otel_online_eval.otlp import ProtoSpanView, SharedResource
from otel_online_eval.spanview import EventView, SpanView
from tests.spans import make_span, view

WEATHER = {"city": "Paris"}
CALL = ToolCall("get_weather", WEATHER, "call_1")


def semconv(role: str, *parts: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"role": role, "parts": list(parts), **extra}


def text(content: str) -> dict[str, Any]:
    return {"type": "text", "content": content}


class DictView(SpanView):
    """A span view over plain values: attributes of any shape, as the OTLP receiver decodes
    them (kvlists become dicts, arrays lists)."""

    __slots__ = ("_attrs", "_events")

    def __init__(
        self,
        attributes: Mapping[str, Any],
        events: Sequence[tuple[str, Mapping[str, Any]]] = (),
        presets: Any = None,
    ) -> None:
        super().__init__(presets)
        self._attrs = attributes
        self._events = tuple(EventView(n, 0, a) for n, a in events)
        self.trace_id, self.span_id, self.parent_span_id = 1, 2, None
        self.name, self.kind, self.status_code, self.status_message = "chat", "CLIENT", "UNSET", ""
        self.start_time_ns = self.end_time_ns = 0
        self.scope_name = self.scope_version = ""
        self.parent_is_remote = False

    @property
    def attributes(self) -> Mapping[str, Any]:
        return self._attrs

    @property
    def events(self) -> Sequence[EventView]:
        return self._events


def fields(attributes: Mapping[str, Any], events: Any = (), presets: Any = None) -> GenAIFields:
    """extract() over a real SDK span with these attributes and events."""
    return extract(view(attributes=attributes, events=events), presets)


# -- OpenTelemetry GenAI, current ---------------------------------------------------------------


def test_genai_current_messages_tools_and_usage() -> None:
    conversation = [
        semconv("user", text("Weather in Paris?")),
        semconv(
            "assistant",
            {"type": "tool_call", "id": "call_1", "name": "get_weather", "arguments": WEATHER},
        ),
        semconv("tool", {"type": "tool_call_response", "id": "call_1", "response": "sunny"}),
    ]
    g = fields(
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
            "gen_ai.usage.input_tokens": 10,
            "gen_ai.usage.output_tokens": 3,
            "gen_ai.input.messages": json.dumps(conversation),
            "gen_ai.output.messages": json.dumps(
                [semconv("assistant", text("Sunny, 20C."), finish_reason="stop")]
            ),
            "gen_ai.system_instructions": json.dumps([text("be brief")]),
            "gen_ai.tool.definitions": json.dumps(
                [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]
            ),
        }
    )
    assert (g.input, g.output, g.convention) == ("Weather in Paris?", "Sunny, 20C.", "genai")
    assert (g.model, g.operation, g.input_tokens, g.output_tokens) == (
        "gpt-4o-mini-2024-07-18",
        "chat",
        10,
        3,
    )
    assert g.system_instructions == "be brief"
    assert [m.role for m in g.input_messages] == ["user", "assistant", "tool"]
    assert g.input_messages[1].tool_calls == (CALL,)
    assert g.tool_results == (ToolResult("sunny", "call_1"),)
    assert g.input_messages[2].text == "sunny"  # a tool message reads as its result
    assert g.output_messages[0].finish_reason == "stop"
    assert g.tool_calls == ()
    assert g.tool_definitions == ({"name": "get_weather", "parameters": {"type": "object"}},)


def test_genai_output_tool_call_only_is_output_as_json() -> None:
    out = [
        semconv(
            "assistant",
            {"type": "tool_call", "id": "call_1", "name": "get_weather", "arguments": WEATHER},
            finish_reason="tool_calls",
        )
    ]
    g = fields({"gen_ai.output.messages": json.dumps(out)})
    assert g.tool_calls == (CALL,)
    assert json.loads(g.output or "") == [{"name": "get_weather", "arguments": WEATHER}]
    assert g.output_messages[0].parts == (
        {"type": "tool_call", "id": "call_1", "name": "get_weather", "arguments": WEATHER},
    )


def test_genai_structured_values_work_like_json_strings() -> None:
    attrs = {
        "gen_ai.input.messages": [semconv("user", text("hi"))],
        "gen_ai.output.messages": [semconv("assistant", text("hello"))],
        "gen_ai.system_instructions": "plain system text",
    }
    g = extract(DictView(attrs))
    assert (g.input, g.output, g.system_instructions) == ("hi", "hello", "plain system text")


def test_genai_execute_tool_span() -> None:
    g = fields(
        {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": "get_weather",
            "gen_ai.tool.call.id": "call_1",
            "gen_ai.tool.call.arguments": '{"city":"Paris"}',
            "gen_ai.tool.call.result": '"sunny in Paris"',
        }
    )
    assert (g.input, g.output, g.operation) == (
        '{"city": "Paris"}',
        "sunny in Paris",
        "execute_tool",
    )
    assert g.tool_calls == (CALL,)
    assert g.output_messages[0].tool_results == (
        ToolResult("sunny in Paris", "call_1", "get_weather"),
    )


def test_genai_inference_details_event() -> None:
    details = {
        "gen_ai.input.messages": json.dumps([semconv("user", text("q"))]),
        "gen_ai.output.messages": json.dumps([semconv("assistant", text("a"))]),
    }
    g = fields(
        {"gen_ai.request.model": "m"},
        events=[("gen_ai.client.inference.operation.details", details)],
    )
    assert (g.input, g.output, g.model, g.convention) == ("q", "a", "m", "genai")


def test_genai_usage_only() -> None:
    g = fields({"gen_ai.request.model": "m", "gen_ai.usage.input_tokens": 4})
    assert (g.input, g.output, g.model, g.input_tokens, g.convention) == (
        None,
        None,
        "m",
        4,
        "genai",
    )


# -- OpenTelemetry GenAI, older forms ----------------------------------------------------------


def test_legacy_span_events_with_flattened_bodies() -> None:
    tool_calls = json.dumps(
        [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            }
        ]
    )
    events = [
        ("gen_ai.system.message", {"gen_ai.system": "openai", "content": "be brief"}),
        ("gen_ai.user.message", {"gen_ai.system": "openai", "content": "Weather in Paris?"}),
        ("gen_ai.assistant.message", {"gen_ai.system": "openai", "tool_calls": tool_calls}),
        ("gen_ai.tool.message", {"gen_ai.system": "openai", "content": "sunny", "id": "call_1"}),
        (
            "gen_ai.choice",
            {
                "gen_ai.system": "openai",
                "index": 0,
                "finish_reason": "stop",
                "message": json.dumps({"role": "assistant", "content": "Sunny."}),
            },
        ),
    ]
    g = fields(
        {
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.usage.prompt_tokens": 9,
            "gen_ai.usage.completion_tokens": 2,
        },
        events=events,
    )
    assert (g.input, g.output, g.convention) == ("Weather in Paris?", "Sunny.", "genai_legacy")
    assert [m.role for m in g.input_messages] == ["system", "user", "assistant", "tool"]
    assert g.input_messages[2].tool_calls == (CALL,)
    assert g.tool_results == (ToolResult("sunny", "call_1"),)
    assert g.system_instructions == "be brief"
    assert (g.model, g.input_tokens, g.output_tokens) == ("gpt-4o", 9, 2)
    assert g.output_messages[0].finish_reason == "stop"


def test_legacy_events_with_json_body_and_choice_tool_calls() -> None:
    # Azure AI Inference style: the event body as JSON in gen_ai.event.content.
    choice = {
        "index": 0,
        "finish_reason": "tool_calls",
        "message": {
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ]
        },
    }
    events = [
        (
            "gen_ai.user.message",
            {"gen_ai.event.content": json.dumps({"role": "user", "content": "hello?"})},
        ),
        ("gen_ai.choice", {"gen_ai.event.content": json.dumps(choice)}),
    ]
    g = fields({}, events=events)
    assert g.input == "hello?"
    assert g.tool_calls == (CALL,)
    assert g.output_messages[0].finish_reason == "tool_calls"


def test_legacy_choices_are_ordered_by_index() -> None:
    events = [
        ("gen_ai.choice", {"index": 1, "message.content": "second"}),
        ("gen_ai.choice", {"index": 0, "message.content": "first"}),
    ]
    g = fields({}, events=events)
    assert g.output == "first\n\nsecond"


def test_legacy_content_events_and_strings() -> None:
    events = [
        (
            "gen_ai.content.prompt",
            {
                "gen_ai.prompt": json.dumps(
                    [{"role": "system", "content": "sys"}, {"role": "user", "content": "question"}]
                )
            },
        ),
        (
            "gen_ai.content.completion",
            {"gen_ai.completion": json.dumps([{"role": "assistant", "content": "answer"}])},
        ),
    ]
    g = fields({}, events=events)
    assert (g.input, g.output, g.system_instructions) == ("question", "answer", "sys")
    plain = fields({"gen_ai.prompt": "plain prompt", "gen_ai.completion": "done"})
    assert (plain.input, plain.output, plain.convention) == ("plain prompt", "done", "genai_legacy")


# -- OpenLLMetry / Traceloop --------------------------------------------------------------------


def test_openllmetry_flattened_messages_and_functions() -> None:
    g = fields(
        {
            "llm.request.type": "chat",
            "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.prompt.0.role": "system",
            "gen_ai.prompt.0.content": "be brief",
            "gen_ai.prompt.1.role": "user",
            "gen_ai.prompt.1.content": json.dumps([{"type": "text", "text": "Weather in Paris?"}]),
            "gen_ai.prompt.2.role": "assistant",
            "gen_ai.prompt.2.tool_calls.0.id": "call_1",
            "gen_ai.prompt.2.tool_calls.0.name": "get_weather",
            "gen_ai.prompt.2.tool_calls.0.arguments": '{"city": "Paris"}',
            "gen_ai.prompt.3.role": "tool",
            "gen_ai.prompt.3.content": "sunny",
            "gen_ai.prompt.3.tool_call_id": "call_1",
            "gen_ai.prompt.prompt_filter_results": "[]",
            "gen_ai.completion.0.role": "assistant",
            "gen_ai.completion.0.finish_reason": "tool_calls",
            "gen_ai.completion.0.tool_calls.0.id": "call_2",
            "gen_ai.completion.0.tool_calls.0.name": "get_time",
            "gen_ai.completion.0.tool_calls.0.arguments": "{}",
            "llm.request.functions.0.name": "get_weather",
            "llm.request.functions.0.description": "w",
            "llm.request.functions.0.parameters": '{"type": "object"}',
            "llm.usage.total_tokens": 18,
            "gen_ai.usage.input_tokens": 11,
            "gen_ai.usage.output_tokens": 7,
        }
    )
    assert (g.input, g.convention, g.operation) == ("Weather in Paris?", "openllmetry", "chat")
    assert [m.role for m in g.input_messages] == ["system", "user", "assistant", "tool"]
    assert g.input_messages[2].tool_calls == (CALL,)
    assert g.tool_results == (ToolResult("sunny", "call_1"),)
    assert g.tool_calls == (ToolCall("get_time", {}, "call_2"),)
    assert g.tool_definitions == (
        {"name": "get_weather", "description": "w", "parameters": {"type": "object"}},
    )
    assert (g.model, g.input_tokens, g.output_tokens) == ("gpt-4o-mini", 11, 7)


def test_openllmetry_indices_sort_numerically_and_refusals_count() -> None:
    attrs = {f"gen_ai.prompt.{i}.content": f"m{i}" for i in range(12)}
    attrs |= {f"gen_ai.prompt.{i}.role": "user" for i in range(12)}
    attrs["gen_ai.completion.0.refusal"] = "I can't help with that."
    g = fields(attrs)
    assert [m.text for m in g.input_messages] == [f"m{i}" for i in range(12)]
    assert (g.input, g.output) == ("m11", "I can't help with that.")


def test_openllmetry_older_llm_prompts_keys() -> None:
    g = fields(
        {
            "llm.prompts.0.role": "user",
            "llm.prompts.0.content": "q",
            "llm.completions.0.content": "a",
        }
    )
    assert (g.input, g.output, g.convention) == ("q", "a", "openllmetry")


def test_traceloop_entity_input_output() -> None:
    decorator = fields(
        {
            "traceloop.span.kind": "workflow",
            "traceloop.entity.input": json.dumps({"args": ["What is 2+2?"], "kwargs": {}}),
            "traceloop.entity.output": json.dumps("4"),
        }
    )
    assert (decorator.input, decorator.output, decorator.operation) == (
        "What is 2+2?",
        "4",
        "workflow",
    )
    langchain = fields(
        {
            "traceloop.entity.input": json.dumps(
                {"inputs": {"question": "q?", "context": "c"}, "tags": [], "metadata": {}}
            ),
            "traceloop.entity.output": json.dumps({"outputs": {"text": "an answer"}}),
        }
    )
    assert json.loads(langchain.input or "") == {"question": "q?", "context": "c"}
    assert langchain.output == "an answer"


# -- OpenInference ------------------------------------------------------------------------------


def test_openinference_messages_contents_and_tools() -> None:
    g = fields(
        {
            "openinference.span.kind": "LLM",
            "llm.model_name": "gpt-4o",
            "llm.input_messages.0.message.role": "system",
            "llm.input_messages.0.message.content": "be brief",
            "llm.input_messages.1.message.role": "user",
            "llm.input_messages.1.message.contents.0.message_content.type": "text",
            "llm.input_messages.1.message.contents.0.message_content.text": "What is in",
            "llm.input_messages.1.message.contents.1.message_content.type": "image",
            "llm.input_messages.1.message.contents.1.message_content.image.image.url": "http://x",
            "llm.input_messages.1.message.contents.2.message_content.type": "text",
            "llm.input_messages.1.message.contents.2.message_content.text": "this picture?",
            "llm.output_messages.0.message.role": "assistant",
            "llm.output_messages.0.message.tool_calls.0.tool_call.id": "call_1",
            "llm.output_messages.0.message.tool_calls.0.tool_call.function.name": "get_weather",
            "llm.output_messages.0.message.tool_calls.0.tool_call.function.arguments": (
                '{"city": "Paris"}'
            ),
            "llm.tools.0.tool.json_schema": json.dumps(
                {"type": "function", "function": {"name": "get_weather", "parameters": {}}}
            ),
            "llm.token_count.prompt": 5,
            "llm.token_count.completion": 6,
            "input.value": "ignored when messages exist",
        }
    )
    assert (g.input, g.convention, g.operation, g.model) == (
        "What is in\nthis picture?",
        "openinference",
        "llm",
        "gpt-4o",
    )
    assert g.input_messages[1].parts[1]["type"] == "image"
    assert g.tool_calls == (CALL,)
    assert g.tool_definitions == ({"name": "get_weather", "parameters": {}},)
    assert (g.input_tokens, g.output_tokens, g.system_instructions) == (5, 6, "be brief")


def test_openinference_values_only() -> None:
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "from the body"}]}
    response = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "yes"}}]}
    g = fields(
        {
            "input.value": json.dumps(body),
            "input.mime_type": "application/json",
            "output.value": json.dumps(response),
            "output.mime_type": "application/json",
        }
    )
    assert (g.input, g.output, g.convention) == ("from the body", "yes", "openinference")
    plain = fields({"input.value": "a question", "output.value": "an answer"})
    assert (plain.input, plain.output) == ("a question", "an answer")


def test_openinference_tool_span() -> None:
    g = fields(
        {
            "openinference.span.kind": "TOOL",
            "tool.name": "get_weather",
            "input.value": '{"city": "Paris"}',
            "output.value": "sunny",
        }
    )
    assert (g.input, g.output, g.operation) == ('{"city": "Paris"}', "sunny", "tool")
    assert g.tool_calls == (ToolCall("get_weather", WEATHER, None),)


# -- Vercel AI SDK ------------------------------------------------------------------------------


def test_vercel_do_generate_with_tool_calls_v4_args() -> None:
    g = fields(
        {
            "ai.operationId": "ai.generateText.doGenerate",
            "ai.model.id": "gpt-4o-mini",
            "ai.prompt.messages": json.dumps(
                [
                    {"role": "system", "content": "be brief"},
                    {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]},
                ]
            ),
            "ai.prompt.tools": (
                json.dumps(
                    {"type": "function", "name": "get_weather", "parameters": {"type": "object"}}
                ),
            ),
            "ai.response.text": "",
            "ai.response.toolCalls": json.dumps(
                [
                    {
                        "toolCallType": "function",
                        "toolCallId": "call_1",
                        "toolName": "get_weather",
                        "args": '{"city":"Paris"}',
                    }
                ]
            ),
            "ai.response.finishReason": "tool-calls",
            "ai.usage.promptTokens": 11,
            "ai.usage.completionTokens": 7,
        }
    )
    assert (g.input, g.convention, g.operation, g.model) == (
        "Weather in Paris?",
        "vercel_ai",
        "ai.generateText.doGenerate",
        "gpt-4o-mini",
    )
    assert g.tool_calls == (CALL,)
    assert json.loads(g.output or "") == [{"name": "get_weather", "arguments": WEATHER}]
    assert (g.input_tokens, g.output_tokens, g.system_instructions) == (11, 7, "be brief")
    assert g.tool_definitions == ({"name": "get_weather", "parameters": {"type": "object"}},)


def test_vercel_follow_up_with_tool_result_v5_input_output() -> None:
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]},
        {
            "role": "assistant",
            "content": [
                {
                    "type": "tool-call",
                    "toolCallId": "call_1",
                    "toolName": "get_weather",
                    "input": WEATHER,
                }
            ],
        },
        {
            "role": "tool",
            "content": [
                {
                    "type": "tool-result",
                    "toolCallId": "call_1",
                    "toolName": "get_weather",
                    "output": {"type": "text", "value": "sunny"},
                }
            ],
        },
    ]
    g = fields(
        {
            "ai.prompt.messages": json.dumps(messages),
            "ai.response.text": "Sunny.",
            "ai.usage.inputTokens": 3,
            "ai.usage.outputTokens": 1,
        }
    )
    assert (g.input, g.output, g.input_tokens, g.output_tokens) == (
        "Weather in Paris?",
        "Sunny.",
        3,
        1,
    )
    assert g.input_messages[1].tool_calls == (CALL,)
    assert g.tool_results == (ToolResult("sunny", "call_1", "get_weather"),)


def test_vercel_outer_span_prompt_and_object() -> None:
    g = fields(
        {
            "ai.prompt": json.dumps({"system": "sys", "prompt": "Name a color"}),
            "ai.response.object": json.dumps({"color": "red"}),
        }
    )
    assert (g.input, g.system_instructions) == ("Name a color", "sys")
    assert json.loads(g.output or "") == {"color": "red"}
    only_prompt = fields({"ai.prompt": json.dumps({"prompt": "hi"}), "ai.response.text": "hey"})
    assert (only_prompt.input, only_prompt.output) == ("hi", "hey")


def test_vercel_tool_call_span() -> None:
    g = fields(
        {
            "ai.operationId": "ai.toolCall",
            "ai.toolCall.name": "get_weather",
            "ai.toolCall.id": "call_1",
            "ai.toolCall.args": '{"city":"Paris"}',
            "ai.toolCall.result": '"sunny in Paris"',
        }
    )
    assert (g.input, g.output) == ('{"city": "Paris"}', "sunny in Paris")
    assert g.tool_calls == (CALL,)


# -- Braintrust, Langfuse, Logfire --------------------------------------------------------------


def test_braintrust_json_and_plain() -> None:
    g = fields(
        {
            "braintrust.input_json": json.dumps(
                [{"role": "system", "content": "sys"}, {"role": "user", "content": "q"}]
            ),
            "braintrust.output_json": json.dumps(
                [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": "a"},
                    }
                ]
            ),
            "braintrust.metadata": json.dumps({"model": "gpt-4o", "provider": "openai"}),
            "braintrust.metrics": json.dumps({"prompt_tokens": 3, "completion_tokens": 4}),
        }
    )
    assert (g.input, g.output, g.model, g.input_tokens, g.output_tokens, g.convention) == (
        "q",
        "a",
        "gpt-4o",
        3,
        4,
        "braintrust",
    )
    plain = fields({"braintrust.input": "question", "braintrust.output": "answer"})
    assert (plain.input, plain.output) == ("question", "answer")


def test_langfuse_observation() -> None:
    g = fields(
        {
            "langfuse.observation.type": "generation",
            "langfuse.observation.input": json.dumps([{"role": "user", "content": "q"}]),
            "langfuse.observation.output": json.dumps({"role": "assistant", "content": "a"}),
            "langfuse.observation.model.name": "claude",
            "langfuse.observation.usage_details": json.dumps({"input": 8, "output": 9}),
        }
    )
    assert (g.input, g.output, g.model, g.input_tokens, g.output_tokens, g.operation) == (
        "q",
        "a",
        "claude",
        8,
        9,
        "generation",
    )


def test_logfire_request_and_response_data() -> None:
    request = {
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": "q"}],
        "tools": [{"type": "function", "function": {"name": "get_weather"}}],
    }
    response = {
        "message": {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        "usage": {"prompt_tokens": 2, "completion_tokens": 3},
    }
    g = fields({"request_data": json.dumps(request), "response_data": json.dumps(response)})
    assert (g.input, g.model, g.input_tokens, g.output_tokens, g.convention) == (
        "q",
        "gpt-4o",
        2,
        3,
        "logfire",
    )
    assert g.tool_calls == (CALL,)
    assert g.tool_definitions == ({"name": "get_weather"},)
    streamed = fields(
        {
            "request_data": json.dumps(request),
            "response_data": json.dumps({"combined_chunk_content": "all", "chunk_count": 3}),
        }
    )
    assert streamed.output == "all"


def test_logfire_events_attribute() -> None:
    events = [
        {"event.name": "gen_ai.system.message", "content": "sys", "role": "system"},
        {"event.name": "gen_ai.user.message", "content": "q", "role": "user"},
        {
            "event.name": "gen_ai.choice",
            "index": 0,
            "message": {"role": "assistant", "content": "a"},
        },
    ]
    g = fields({"events": json.dumps(events), "gen_ai.request.model": "gpt-4o"})
    assert (g.input, g.output, g.model, g.system_instructions) == ("q", "a", "gpt-4o", "sys")
    assert g.convention == "logfire"


# -- choosing among presets, settings -----------------------------------------------------------


def test_first_preset_with_content_wins_and_the_others_fill_the_gaps() -> None:
    attrs = {
        "gen_ai.request.model": "from-genai",
        "gen_ai.usage.input_tokens": 1,
        "llm.input_messages.0.message.role": "user",
        "llm.input_messages.0.message.content": "oi input",
        "ai.prompt.messages": json.dumps([{"role": "user", "content": "vercel input"}]),
    }
    g = fields(attrs)
    assert (g.input, g.convention, g.model, g.input_tokens) == (
        "oi input",
        "openinference",
        "from-genai",
        1,
    )
    assert fields(attrs, presets=["vercel_ai", "openinference"]).input == "vercel input"
    only = fields(attrs, presets=("vercel_ai",))
    assert (only.input, only.model) == ("vercel input", None)


def test_unknown_preset_names_are_skipped() -> None:
    g = fields({"gen_ai.prompt": "q"}, presets=["nope", "genai_legacy"])
    assert g.input == "q"


def test_nothing_of_any_convention() -> None:
    g = fields({"http.route": "/x", "input": "not ours"})
    assert g == GenAIFields()
    assert not g.has_content


def test_project_keys_are_tried_first() -> None:
    attrs = {
        "app.question": "my question",
        "app.answer": json.dumps({"choices": [{"message": {"role": "assistant", "content": "A"}}]}),
        "gen_ai.input.messages": json.dumps([semconv("user", text("semconv question"))]),
    }
    options = ExtractOptions(input=("missing", "app.question"), output=("app.answer",))
    g = fields(attrs, presets=options)
    assert (g.input, g.output, g.convention) == ("my question", "A", "genai")
    assert [m.text for m in g.input_messages] == ["semconv question"]  # a plain string: text only
    assert g.output_messages[0].text == "A"
    custom = fields({"app.question": "q"}, presets=ExtractOptions(input=("app.question",)))
    assert (custom.input, custom.output, custom.convention) == ("q", None, "custom")
    assert custom.input_messages == (Message("user", "q", ({"type": "text", "content": "q"},)),)


def test_conversation_input_text() -> None:
    conversation = [
        semconv("user", text("first")),
        semconv("assistant", text("reply")),
        semconv("user", text("second")),
    ]
    g = fields(
        {
            "gen_ai.input.messages": json.dumps(conversation),
            "gen_ai.system_instructions": "be brief",
        },
        presets=ExtractOptions(input_text="conversation"),
    )
    assert g.input == "system: be brief\nuser: first\nassistant: reply\nuser: second"


def test_presets_are_all_known_and_ordered() -> None:
    assert list(PRESETS) == [
        "genai",
        "genai_legacy",
        "openllmetry",
        "openinference",
        "vercel_ai",
        "braintrust",
        "langfuse",
        "logfire",
    ]


# -- broken values --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "gen_ai.input.messages",
        "gen_ai.prompt",
        "ai.prompt.messages",
        "braintrust.input_json",
        "langfuse.observation.input",
        "input.value",
        "request_data",
        "traceloop.entity.input",
    ],
)
def test_truncated_json_falls_back_to_the_raw_string(key: str) -> None:
    raw = '[{"role": "user", "content": "trunc'
    g = fields({key: raw})
    assert g.input == raw


def test_truncated_output_json_is_the_raw_string() -> None:
    broken = fields({"gen_ai.output.messages": '[{"role": "assistant", "par'})
    assert broken.output == '[{"role": "assistant", "par'


def test_odd_values_do_not_raise() -> None:
    odd: dict[str, Any] = {
        "gen_ai.input.messages": [1, None, {"role": None, "parts": "x"}, {"parts": [None, 3]}],
        "gen_ai.output.messages": {"role": "assistant", "parts": [{"type": "tool_call"}]},
        "gen_ai.tool.definitions": [None, {"function": 3}],
        "llm.input_messages.x.message.role": "user",
        "llm.input_messages.0": "scalar where a tree was expected",
        "llm.input_messages.0.message.content": "deeper",
        "ai.response.toolCalls": "{not json",
        "braintrust.metrics": [1, 2],
        "gen_ai.usage.input_tokens": True,
    }
    g = extract(DictView(odd, events=[("gen_ai.choice", {"message": 5})]))
    assert isinstance(g, GenAIFields)
    assert g.input_tokens is None  # a boolean is not a count


# -- the sidecar's view of the same spans ---------------------------------------------------------


def _proto_view(span: Any) -> SpanView:
    [resource_spans] = encode_spans([span]).resource_spans
    [scope_spans] = resource_spans.scope_spans
    [proto] = scope_spans.spans
    scope = (scope_spans.scope.name, scope_spans.scope.version)
    return ProtoSpanView(proto, SharedResource(resource_spans.resource), scope)


@pytest.mark.parametrize(
    ("attributes", "events"),
    [
        (
            {
                "gen_ai.input.messages": json.dumps([semconv("user", text("q"))]),
                "gen_ai.output.messages": json.dumps([semconv("assistant", text("a"))]),
                "gen_ai.usage.input_tokens": 3,
            },
            [],
        ),
        (
            {"gen_ai.request.model": "m"},
            [
                ("gen_ai.user.message", {"content": "q"}),
                ("gen_ai.choice", {"message.content": "a"}),
            ],
        ),
        (
            {
                "llm.input_messages.0.message.role": "user",
                "llm.input_messages.0.message.content": "q",
                "llm.output_messages.0.message.content": "a",
                "ai.prompt.tools": ('{"name": "t"}', '{"name": "u"}'),
            },
            [],
        ),
    ],
)
def test_the_otlp_view_reads_what_the_sdk_view_reads(attributes: Any, events: Any) -> None:
    span = make_span(attributes=attributes, events=events)
    from_sdk = extract(view(attributes=attributes, events=events))
    from_otlp = extract(_proto_view(span))
    assert from_otlp == from_sdk
    assert (from_otlp.input, from_otlp.output) == ("q", "a")


def test_otlp_kvlist_and_array_values() -> None:
    def kv(key: str, value: AnyValue) -> KeyValue:
        return KeyValue(key=key, value=value)

    def s(v: str) -> AnyValue:
        return AnyValue(string_value=v)

    def kvlist(**items: AnyValue) -> AnyValue:
        return AnyValue(kvlist_value=KeyValueList(values=[kv(k, v) for k, v in items.items()]))

    def array(*values: AnyValue) -> AnyValue:
        return AnyValue(array_value=ArrayValue(values=list(values)))

    message = kvlist(role=s("user"), parts=array(kvlist(type=s("text"), content=s("structured"))))
    proto = ProtoSpan(
        trace_id=b"\x01" * 16,
        span_id=b"\x02" * 8,
        name="chat",
        attributes=[kv("gen_ai.input.messages", array(message))],
    )
    g = extract(ProtoSpanView(proto, SharedResource(Resource()), ("s", "1")))
    assert (g.input, g.convention) == ("structured", "genai")


def test_zero_counts_and_empty_lists_are_kept_apart() -> None:
    g = fields(
        {
            "request_data": json.dumps(
                {"model": "m", "messages": [{"role": "user", "content": "q"}]}
            ),
            "response_data": json.dumps(
                {"message": {"role": "assistant", "content": ""}, "usage": {"completion_tokens": 0}}
            ),
        }
    )
    assert (g.output, g.output_tokens) == ("", 0)  # an empty answer, zero tokens: not absent
    empty = fields({"gen_ai.input.messages": "[]", "gen_ai.output.messages": "[]"})
    assert (empty.input, empty.output, empty.convention) == (None, None, "genai")
