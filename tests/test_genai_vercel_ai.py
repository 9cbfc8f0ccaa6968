"""The Vercel AI SDK (``ai`` 7 with ``@ai-sdk/openai`` and ``@ai-sdk/otel``) on Node, against the
fake OpenAI server, in both of its telemetry modes:

- ``legacy`` (``LegacyOpenTelemetry``): ``ai.*`` attributes, read by the ``vercel_ai`` preset;
- ``otel`` (``OpenTelemetry``): GenAI semantic conventions, read by the ``genai`` preset.

Needs ``node`` (skipped without it); the packages are installed by ``npm ci`` in
``tests/instrumentation/vercel_ai`` when missing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from otel_online_eval.genai import GenAIFields, ToolCall, ToolResult, extract
from otel_online_eval.spanview import SdkSpanView
from tests.fake_openai import FakeOpenAI
from tests.instrumentation.harness import ANSWERS, CALL, responder
from tests.instrumentation.vercel import NODE, Scenario, ensure_installed, run_app, sdk_span

pytestmark = pytest.mark.skipif(
    NODE is None, reason="node is not installed: the Vercel AI SDK tests run it on Node.js"
)


@dataclass(frozen=True)
class Mode:
    convention: str
    call: str  # the span of one model call
    stream_call: str
    outer: str  # the span of the whole generateText / streamText
    stream_outer: str
    tool: str  # the span of a tool's execution


MODES = {
    "legacy": Mode(
        "vercel_ai",
        "ai.generateText.doGenerate",
        "ai.streamText.doStream",
        "ai.generateText",
        "ai.streamText",
        "ai.toolCall",
    ),
    "otel": Mode(
        "genai",
        "chat gpt-4o-mini",
        "chat gpt-4o-mini",
        "invoke_agent gpt-4o-mini",
        "invoke_agent gpt-4o-mini",
        "execute_tool get_weather",
    ),
}


@pytest.fixture(scope="module")
def runs() -> Iterator[dict[str, dict[str, Scenario]]]:
    ensure_installed()
    with FakeOpenAI() as server:
        server.respond_with(responder)
        yield run_app(server.base_url, list(MODES))


@pytest.fixture(params=list(MODES))
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def read(record: dict[str, Any]) -> GenAIFields:
    return extract(SdkSpanView(sdk_span(record)))


def test_plain(runs: dict[str, dict[str, Scenario]], mode: str) -> None:
    names, run = MODES[mode], runs[mode]["plain"]
    received = run.result["text"]
    assert received == ANSWERS["Capital of France?"]
    for name in (names.call, names.outer):
        g = read(run.one(name))
        assert (g.input, g.output) == ("Capital of France?", received), name
        assert g.system_instructions == "be brief", name
        assert g.convention == names.convention, name
        assert g.model == "gpt-4o-mini", name
        assert (g.input_tokens, g.output_tokens) == (11, 7), name


def test_under_a_parent_span(runs: dict[str, dict[str, Scenario]], mode: str) -> None:
    names, run = MODES[mode], runs[mode]["parent"]
    parent = run.one("handle-request")
    outer = run.one(names.outer)
    assert outer["parentSpanId"] == parent["spanId"] == run.result["parentSpanId"]
    assert outer["traceId"] == parent["traceId"]
    call = run.one(names.call)
    assert call["traceId"] == parent["traceId"]
    g = read(call)
    assert (g.input, g.output) == ("Capital of Italy?", run.result["text"])
    assert not read(parent).has_content


def test_streaming(runs: dict[str, dict[str, Scenario]], mode: str) -> None:
    names, run = MODES[mode], runs[mode]["stream"]
    received = run.result["text"]
    assert received == ANSWERS["Stream it"]
    for name in {names.stream_call, names.stream_outer}:
        g = read(run.one(name))
        assert (g.input, g.output, g.convention) == ("Stream it", received, names.convention)


def test_tool_call(runs: dict[str, dict[str, Scenario]], mode: str) -> None:
    names, run = MODES[mode], runs[mode]["tools"]
    [call] = run.result["toolCalls"]
    received = ToolCall(call["name"], call["input"], call["id"])
    first = read(run.named(names.call)[0])
    assert first.tool_calls == (received,) == (CALL,)
    assert json.loads(first.output or "") == [{"name": "get_weather", "arguments": CALL.arguments}]
    assert first.input == "Weather in Paris?"
    [tool] = first.tool_definitions
    assert tool["name"] == "get_weather"
    assert tool["parameters"]["properties"] == {"city": {"type": "string"}}


def test_tool_result_follow_up(runs: dict[str, dict[str, Scenario]], mode: str) -> None:
    names, run = MODES[mode], runs[mode]["tools"]
    [result] = run.result["toolResults"]
    follow_up = read(run.named(names.call)[1])
    assert follow_up.input == "Weather in Paris?"
    assert [m.role for m in follow_up.input_messages] == ["user", "assistant", "tool"]
    assert follow_up.input_messages[1].tool_calls == (CALL,)
    [sent] = follow_up.tool_results
    assert (
        (sent.result, sent.id) == (result["output"], result["id"]) == ("sunny in Paris", "call_1")
    )
    assert follow_up.output == run.result["text"] == "It is sunny in Paris."
    whole = read(run.one(names.outer))
    assert (whole.input, whole.output) == ("Weather in Paris?", "It is sunny in Paris.")
    assert CALL in whole.tool_calls


def test_tool_execution_span(runs: dict[str, dict[str, Scenario]], mode: str) -> None:
    names, run = MODES[mode], runs[mode]["tools"]
    g = read(run.one(names.tool))
    assert g.tool_calls == (CALL,)
    assert json.loads(g.input or "") == CALL.arguments
    assert g.output == "sunny in Paris"
    [result] = g.output_messages[0].tool_results
    assert result == ToolResult("sunny in Paris", "call_1", "get_weather")


def test_http_500(runs: dict[str, dict[str, Scenario]], mode: str) -> None:
    names, run = MODES[mode], runs[mode]["error"]
    assert run.result["error"] == 500
    for name in (names.call, names.outer):
        span = sdk_span(run.one(name))
        assert span.status.status_code.name == "ERROR"
        g = extract(SdkSpanView(span))
        assert g.input == "fail please"
        assert (g.output, g.output_messages, g.tool_calls) == (None, (), ())
