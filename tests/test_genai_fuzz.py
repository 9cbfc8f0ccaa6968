"""Extraction never raises, whatever a span carries: property tests over random attributes,
events and message-shaped JSON. Each preset's reader is called directly too, so a bug cannot
hide behind extract()'s safety net."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otel_online_eval.genai import PRESETS, ExtractOptions, GenAIFields, extract
from otel_online_eval.genai._presets import Span, maybe_genai
from tests.spans import view
from tests.test_genai import DictView

KEYS = [
    "gen_ai.input.messages",
    "gen_ai.output.messages",
    "gen_ai.system_instructions",
    "gen_ai.tool.definitions",
    "gen_ai.request.model",
    "gen_ai.response.model",
    "gen_ai.operation.name",
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.prompt_tokens",
    "gen_ai.usage.completion_tokens",
    "gen_ai.prompt",
    "gen_ai.completion",
    "gen_ai.tool.name",
    "gen_ai.tool.call.id",
    "gen_ai.tool.call.arguments",
    "gen_ai.tool.call.result",
    "gen_ai.prompt.0.role",
    "gen_ai.prompt.0.content",
    "gen_ai.prompt.1.tool_calls.0.name",
    "gen_ai.prompt.1.tool_calls.0.arguments",
    "gen_ai.completion.0.content",
    "gen_ai.completion.0.tool_calls.0.name",
    "gen_ai.completion.0.refusal",
    "gen_ai.prompt.0",
    "llm.prompts.0.content",
    "llm.request.functions.0.name",
    "llm.request.functions.0.parameters",
    "llm.request.type",
    "traceloop.entity.input",
    "traceloop.entity.output",
    "traceloop.span.kind",
    "input.value",
    "output.value",
    "llm.input_messages.0.message.role",
    "llm.input_messages.0.message.content",
    "llm.input_messages.0.message.contents.0.message_content.text",
    "llm.input_messages.0.message.tool_calls.0.tool_call.function.name",
    "llm.output_messages.0.message.content",
    "llm.output_messages.0.message",
    "llm.output_messages.1.message.tool_calls.0.tool_call.function.arguments",
    "llm.tools.0.tool.json_schema",
    "llm.model_name",
    "llm.token_count.prompt",
    "llm.prompts",
    "openinference.span.kind",
    "tool.name",
    "ai.prompt",
    "ai.prompt.messages",
    "ai.prompt.tools",
    "ai.response.text",
    "ai.response.toolCalls",
    "ai.response.object",
    "ai.model.id",
    "ai.usage.promptTokens",
    "ai.usage.inputTokens",
    "ai.toolCall.name",
    "ai.toolCall.args",
    "ai.toolCall.result",
    "braintrust.input_json",
    "braintrust.output",
    "braintrust.metadata",
    "braintrust.metrics",
    "langfuse.observation.input",
    "langfuse.observation.output",
    "langfuse.observation.usage_details",
    "request_data",
    "response_data",
    "events",
    "app.in",
]
EVENTS = [
    "gen_ai.system.message",
    "gen_ai.user.message",
    "gen_ai.assistant.message",
    "gen_ai.tool.message",
    "gen_ai.choice",
    "gen_ai.content.prompt",
    "gen_ai.content.completion",
    "gen_ai.client.inference.operation.details",
    "exception",
]
WORDS = [
    "role",
    "content",
    "parts",
    "type",
    "text",
    "tool_calls",
    "tool_call",
    "function",
    "name",
    "arguments",
    "id",
    "message",
    "messages",
    "choices",
    "index",
    "finish_reason",
    "response",
    "output",
    "input",
    "args",
    "kwargs",
    "inputs",
    "outputs",
    "toolCallId",
    "toolName",
    "value",
    "functionCall",
    "functionResponse",
    "system",
    "prompt",
    "model",
    "usage",
    "prompt_tokens",
    "json_schema",
    "event.name",
    "gen_ai.event.content",
    "combined_chunk_content",
    "contents",
    "tool_call_response",
    "tool-call",
    "tool-result",
    "tool_use",
    "user",
    "assistant",
    "tool",
    "instructions",
    "call_id",
    "function_call",
    "function_call_output",
    "result",
    "parameters",
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(WORDS),
    st.text(max_size=12),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(WORDS), st.text(max_size=5)), inner, max_size=5),
    ),
    max_leaves=15,
)


def _encoded(value: Any, cut: int) -> Any:
    text = json.dumps(value, default=str)
    return text[: max(len(text) - cut, 0)] if cut else text


attr_values = st.one_of(
    json_values,  # structured, as the OTLP receiver decodes kvlists and arrays
    st.builds(_encoded, json_values, st.just(0)),  # JSON strings
    st.builds(_encoded, json_values, st.integers(1, 8)),  # truncated JSON
    st.binary(max_size=8),
    st.tuples(st.text(max_size=6), st.text(max_size=6)),
)
attributes = st.dictionaries(
    st.one_of(st.sampled_from(KEYS), st.text(max_size=10)), attr_values, max_size=8
)
events = st.lists(st.tuples(st.sampled_from(EVENTS), attributes), max_size=4)
options = st.one_of(
    st.none(),
    st.lists(st.sampled_from([*PRESETS, "unknown"]), max_size=4),
    st.builds(
        ExtractOptions,
        presets=st.none(),
        input=st.just(("app.in", "request_data")),
        output=st.just(("app.in",)),
        input_text=st.sampled_from(["last_user", "conversation"]),
    ),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(attributes, events, options)
def test_no_preset_raises_on_any_attributes(attrs: Any, evs: Any, opts: Any) -> None:
    span = DictView(attrs, evs)
    relevant = maybe_genai(Span(span))
    for name, reader in PRESETS.items():
        found = reader(span)
        assert found is None or found.convention == name
        assert relevant or found is None, f"{name} reads a key outside ROOTS"
    result = extract(DictView(attrs, evs), opts)
    assert isinstance(result, GenAIFields)
    assert result.input is None or isinstance(result.input, str)
    assert result.output is None or isinstance(result.output, str)


sdk_values = st.one_of(
    st.text(max_size=20),
    st.builds(_encoded, json_values, st.integers(0, 4)),
    st.integers(min_value=-(2**62), max_value=2**62),
    st.floats(allow_nan=False),
    st.booleans(),
    st.lists(st.text(max_size=8), max_size=3).map(tuple),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(st.sampled_from(KEYS), sdk_values, max_size=8),
    st.lists(
        st.tuples(
            st.sampled_from(EVENTS), st.dictionaries(st.sampled_from(WORDS), sdk_values, max_size=4)
        ),
        max_size=3,
    ),
)
def test_extract_never_raises_on_sdk_spans(attrs: Any, evs: Any) -> None:
    span = view(attributes=attrs, events=evs)
    for reader in PRESETS.values():
        reader(span)
    assert isinstance(extract(span), GenAIFields)


# -- the same conversation in every convention reads back the same ------------------------------

conversations = st.lists(
    st.tuples(
        st.sampled_from(["system", "user", "assistant"]),
        st.text(max_size=15).filter(lambda t: not t.lstrip().startswith("[")),
    ),
    min_size=1,
    max_size=5,
)


def _encodings(convo: list[tuple[str, str]], answer: str) -> dict[str, tuple[dict[str, Any], Any]]:
    """The conversation and the answer as each preset's convention writes them."""
    semconv = [{"role": r, "parts": [{"type": "text", "content": t}]} for r, t in convo]
    openai_style = [{"role": r, "content": t} for r, t in convo]
    flat_llmetry: dict[str, Any] = {}
    flat_oi: dict[str, Any] = {}
    for i, (role, content) in enumerate(convo):
        flat_llmetry |= {f"gen_ai.prompt.{i}.role": role, f"gen_ai.prompt.{i}.content": content}
        flat_oi |= {
            f"llm.input_messages.{i}.message.role": role,
            f"llm.input_messages.{i}.message.content": content,
        }
    choice = {"index": 0, "message": {"role": "assistant", "content": answer}}
    return {
        "genai": (
            {
                "gen_ai.input.messages": json.dumps(semconv),
                "gen_ai.output.messages": json.dumps(
                    [{"role": "assistant", "parts": [{"type": "text", "content": answer}]}]
                ),
            },
            (),
        ),
        "genai_legacy": (
            {},
            [(f"gen_ai.{r}.message", {"content": t}) for r, t in convo]
            + [("gen_ai.choice", {"index": 0, "message": json.dumps(choice["message"])})],
        ),
        "openllmetry": (
            flat_llmetry
            | {"gen_ai.completion.0.role": "assistant", "gen_ai.completion.0.content": answer},
            (),
        ),
        "openinference": (
            flat_oi
            | {
                "llm.output_messages.0.message.role": "assistant",
                "llm.output_messages.0.message.content": answer,
            },
            (),
        ),
        "vercel_ai": (
            {
                "ai.prompt.messages": json.dumps(
                    [{"role": r, "content": [{"type": "text", "text": t}]} for r, t in convo]
                ),
                "ai.response.text": answer,
            },
            (),
        ),
        "braintrust": (
            {
                "braintrust.input_json": json.dumps(openai_style),
                "braintrust.output_json": json.dumps([choice]),
            },
            (),
        ),
        "langfuse": (
            {
                "langfuse.observation.input": json.dumps(openai_style),
                "langfuse.observation.output": json.dumps(choice["message"]),
            },
            (),
        ),
        "logfire": (
            {
                "request_data": json.dumps({"model": "m", "messages": openai_style}),
                "response_data": json.dumps({"message": choice["message"]}),
            },
            (),
        ),
    }


@settings(max_examples=60, deadline=None)
@given(conversations, st.text(max_size=15))
def test_every_convention_reads_the_same_conversation(
    convo: list[tuple[str, str]], answer: str
) -> None:
    users = [t for r, t in convo if r == "user"]
    expected_input = users[-1] if users else convo[-1][1]
    for name, (attrs, evs) in _encodings(convo, answer).items():
        g = extract(DictView(attrs, evs))
        assert g.convention == name
        assert [(m.role, m.text) for m in g.input_messages] == convo, name
        assert (g.input, g.output) == (expected_input, answer), name
