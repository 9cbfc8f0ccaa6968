"""Agent traces made with the real SDK for the trace tests: one in the GenAI conventions, one in
OpenInference's, each with two tools, one of which fails once."""

from __future__ import annotations

import json
from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode, Tracer

from otel_online_eval.spanview import SdkSpanView

QUESTION = "What is the weather in Paris, in Fahrenheit?"
ANSWER = "It is 68°F in Paris."


def text_message(role: str, text: str) -> dict[str, Any]:
    return {"role": role, "parts": [{"type": "text", "content": text}]}


def call_message(call_id: str, name: str, args: dict[str, Any]) -> dict[str, Any]:
    return {
        "role": "assistant",
        "parts": [{"type": "tool_call", "id": call_id, "name": name, "arguments": args}],
    }


def response_message(call_id: str, response: Any) -> dict[str, Any]:
    return {
        "role": "tool",
        "parts": [{"type": "tool_call_response", "id": call_id, "response": response}],
    }


def chat(tracer: Tracer, inputs: list[dict[str, Any]], output: dict[str, Any], tokens: int) -> None:
    with tracer.start_as_current_span(
        "chat gpt-test",
        attributes={
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "gpt-test",
            "gen_ai.input.messages": json.dumps(inputs),
            "gen_ai.output.messages": json.dumps([output]),
            "gen_ai.usage.input_tokens": tokens,
            "gen_ai.usage.output_tokens": 10,
        },
    ):
        pass


def tool(tracer: Tracer, call_id: str, name: str, args: dict[str, Any], result: Any) -> None:
    attrs = {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": name,
        "gen_ai.tool.call.id": call_id,
        "gen_ai.tool.call.arguments": json.dumps(args),
    }
    with tracer.start_as_current_span(f"execute_tool {name}", attributes=attrs) as span:
        if isinstance(result, Exception):
            span.record_exception(result)
            span.set_status(Status(StatusCode.ERROR))
        else:
            span.set_attribute("gen_ai.tool.call.result", json.dumps(result))


def spans_of(make: Any) -> list[SdkSpanView]:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    make(provider.get_tracer("test"))
    return [SdkSpanView(s) for s in memory.get_finished_spans()]


def genai_agent(tracer: Tracer) -> None:
    user = text_message("user", QUESTION)
    c1 = call_message("c1", "get_weather", {"city": "Paris"})
    c2 = call_message("c2", "get_weather", {"city": "Paris"})
    c3 = call_message("c3", "to_fahrenheit", {"celsius": 20})
    with tracer.start_as_current_span(
        "invoke_agent weather",
        attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.request.model": "gpt-test"},
    ):
        chat(tracer, [user], c1, 50)
        tool(tracer, "c1", "get_weather", {"city": "Paris"}, TimeoutError("upstream timed out"))
        err = response_message("c1", "error: upstream timed out")
        chat(tracer, [user, c1, err], c2, 80)
        tool(tracer, "c2", "get_weather", {"city": "Paris"}, {"celsius": 20})
        r2 = response_message("c2", {"celsius": 20})
        chat(tracer, [user, c1, err, c2, r2], c3, 110)
        tool(tracer, "c3", "to_fahrenheit", {"celsius": 20}, 68)
        r3 = response_message("c3", 68)
        chat(tracer, [user, c1, err, c2, r2, c3, r3], text_message("assistant", ANSWER), 140)


def openinference_agent(tracer: Tracer) -> None:
    with tracer.start_as_current_span(
        "Agent workflow",
        attributes={"openinference.span.kind": "AGENT", "input.value": QUESTION},
    ) as root:
        for i, (name, args, result) in enumerate(
            [
                ("get_weather", {"city": "Paris"}, ValueError("no such city")),
                ("get_weather", {"city": "Paris"}, {"celsius": 20}),
                ("to_fahrenheit", {"celsius": 20}, 68),
            ]
        ):
            with tracer.start_as_current_span(
                "response",
                attributes={
                    "openinference.span.kind": "LLM",
                    "llm.model_name": "gpt-test",
                    "llm.input_messages.0.message.role": "user",
                    "llm.input_messages.0.message.content": QUESTION,
                    "llm.output_messages.0.message.role": "assistant",
                    "llm.output_messages.0.message.tool_calls.0.tool_call.function.name": name,
                    "llm.output_messages.0.message.tool_calls.0.tool_call.function.arguments": (
                        json.dumps(args)
                    ),
                    "llm.token_count.prompt": 40 + i,
                    "llm.token_count.completion": 5,
                },
            ):
                pass
            with tracer.start_as_current_span(
                name,
                attributes={
                    "openinference.span.kind": "TOOL",
                    "tool.name": name,
                    "input.value": json.dumps(args),
                },
            ) as tool:
                if isinstance(result, Exception):
                    tool.set_status(Status(StatusCode.ERROR, str(result)))
                else:
                    tool.set_attribute("output.value", json.dumps(result))
        root.set_attribute("output.value", ANSWER)


def conversation_turn(
    tracer: Tracer,
    conversation: str | None,
    question: str,
    answer: str,
    root_attrs: dict[str, Any] | None = None,
) -> int:
    """One turn of a conversation: an agent root with the conversation id (none when None)
    and a model call under it; returns the root's span id."""
    attrs: dict[str, Any] = {"gen_ai.operation.name": "invoke_agent", **(root_attrs or {})}
    if conversation is not None:
        attrs["gen_ai.conversation.id"] = conversation
    with tracer.start_as_current_span("invoke_agent support", attributes=attrs) as root:
        with tracer.start_as_current_span(
            "chat gpt-test",
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.input.messages": json.dumps([text_message("user", question)]),
                "gen_ai.output.messages": json.dumps([text_message("assistant", answer)]),
                "gen_ai.usage.input_tokens": 10,
                "gen_ai.usage.output_tokens": 5,
            },
        ):
            pass
    return root.get_span_context().span_id
