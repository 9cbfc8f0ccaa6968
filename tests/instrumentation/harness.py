"""Run the real ``openai`` client, instrumented by a real library, against ``tests.fake_openai``,
and check that :func:`otel_online_eval.genai.extract` reads back what the app sent and got.

A test module per library provides a module-scoped ``capture`` fixture built with
:func:`instrumented` (which instruments, sets the library's content-capture environment, and on
exit uninstruments and checks that nothing of the ``openai`` module stays patched), and a class
deriving from :class:`ClientContract` that names the convention the spans follow::

    @pytest.fixture(scope="module")
    def capture() -> Iterator[Capture]:
        with instrumented(OpenAIInstrumentor, {"SOME_CAPTURE_ENV": "true"}) as cap:
            yield cap

    class TestMyLibrary(ClientContract):
        convention = "openinference"
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import openai
import pytest
import wrapt
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from otel_online_eval.genai import GenAIFields, ToolCall, ToolResult, extract
from otel_online_eval.spanview import SdkSpanView
from tests.fake_openai import FakeOpenAI, Reply, Request, error, text, tool_call

__all__ = [
    "ANSWERS",
    "APP_SCOPE",
    "CALL",
    "WEATHER_TOOL",
    "Capture",
    "ClientContract",
    "extracted",
    "instrumented",
    "is_app",
    "responder",
]

APP_SCOPE = "app"
"""The instrumentation scope of the app's own spans (the parent span)."""

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
CALL = ToolCall("get_weather", {"city": "Paris"}, "call_1")

ANSWERS = {
    "Capital of France?": "Paris is the capital of France.",
    "Capital of Italy?": "Rome.",
    "Stream it": "Streamed answer here",
}


def _content_text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return str(content or "")


def responder(request: Request) -> Reply:
    """The fake server's answers, by the conversation's last message: a tool result gets a text
    answer, "Weather in ..." a tool call, "fail please" an HTTP 500, known questions their
    answers."""
    messages = request.body.get("messages") or []
    last = messages[-1] if messages else {}
    if last.get("role") == "tool":
        return text("It is sunny in Paris.")
    question = _content_text(last.get("content"))
    if question.startswith("Weather in"):
        return tool_call("get_weather", {"city": "Paris"})
    if question == "fail please":
        return error(500, "the model is down")
    return text(ANSWERS.get(question, "ok"))


def is_app(span: ReadableSpan) -> bool:
    """True for the app's own spans (not the library's)."""
    scope = span.instrumentation_scope
    return scope is not None and scope.name == APP_SCOPE


@dataclass
class Capture:
    """Where an instrumented app's spans go."""

    provider: TracerProvider
    exporter: InMemorySpanExporter

    @property
    def tracer(self) -> trace.Tracer:
        """The app's own tracer (for parent spans)."""
        return self.provider.get_tracer(APP_SCOPE)

    def take(self) -> list[ReadableSpan]:
        """The spans ended since the last call."""
        spans = list(self.exporter.get_finished_spans())
        self.exporter.clear()
        return spans

    def llm_span(self) -> ReadableSpan:
        """The one span the library made since the last call (the app's own are skipped)."""
        spans = [s for s in self.take() if not is_app(s)]
        assert len(spans) == 1, [s.name for s in spans]
        return spans[0]


_CLIENT_MODULES = frozenset({"openai", "openai._client", "openai._base_client"})


def _wrapped_leftovers() -> list[str]:
    """Undo every ``wrapt`` wrapper still on a class of ``openai``'s clients and resources
    (where the libraries patch); their names."""
    found = []
    for name, module in list(sys.modules.items()):
        if module is None or not (name in _CLIENT_MODULES or name.startswith("openai.resources")):
            continue
        for cls in list(vars(module).values()):
            # type(), not isinstance(): openai's lazy module proxies load on __class__.
            if not issubclass(type(cls), type) or not cls.__module__.startswith("openai"):
                continue
            for attr, value in list(vars(cls).items()):
                original = value
                while isinstance(original, wrapt.FunctionWrapper):
                    original = original.__wrapped__
                if original is not value:
                    setattr(cls, attr, original)
                    found.append(f"{cls.__module__}.{cls.__qualname__}.{attr}")
    return sorted(set(found))


@contextmanager
def instrumented(
    instrumentor: Callable[[], Any],
    env: Mapping[str, str],
    leaves_wrappers: bool = False,
    **kwargs: Any,
) -> Iterator[Capture]:
    """Instrument ``openai`` with a real library for the duration of the block.

    On exit the library uninstruments, and whatever it left wrapped is unwrapped here, so the
    next module starts from a clean ``openai``; a library that leaves wrappers fails the test
    unless ``leaves_wrappers`` says it is known to.

    Args:
        instrumentor: the library's instrumentor class (or a factory).
        env: environment variables the library reads (content capture), set for the block.
        leaves_wrappers: the library's ``uninstrument()`` is known to leave wrappers behind.
        kwargs: passed to ``instrument()`` with the block's tracer provider.
    """
    assert not _wrapped_leftovers(), "openai was already instrumented"
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        instance = instrumentor()
        instance.instrument(tracer_provider=provider, **kwargs)
        try:
            yield Capture(provider, exporter)
        finally:
            instance.uninstrument()
            provider.shutdown()
            leftovers = _wrapped_leftovers()
    assert leaves_wrappers or not leftovers, f"still wrapped after uninstrument(): {leftovers}"


def extracted(span: ReadableSpan) -> GenAIFields:
    return extract(SdkSpanView(span))


class ClientContract:
    """The app scenarios every instrumentation of the ``openai`` client must pass through to
    :func:`extract`: plain chat, chat under a parent span, streaming, a tool call, the follow-up
    with the tool's result, a streamed tool call, and an HTTP 500."""

    convention: str
    """The preset the library's spans are read with."""
    records_tools: bool = True
    """Whether the library records the tool definitions it was given."""

    @pytest.fixture(scope="class")
    @classmethod
    def server(cls) -> Iterator[FakeOpenAI]:
        with FakeOpenAI() as fake:
            fake.respond_with(responder)
            yield fake

    @pytest.fixture
    def client(self, server: FakeOpenAI, capture: Capture) -> Iterator[openai.OpenAI]:
        capture.take()
        with openai.OpenAI(base_url=server.base_url, api_key="test", max_retries=0) as client:
            yield client

    def test_plain_chat(self, client: openai.OpenAI, capture: Capture, server: FakeOpenAI) -> None:
        sent = [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "Capital of France?"},
        ]
        response = client.chat.completions.create(model="gpt-4o-mini", messages=sent)  # type: ignore[arg-type]
        g = extracted(capture.llm_span())
        assert server.requests[-1].body["messages"] == sent
        assert g.input == sent[-1]["content"]
        assert g.output == response.choices[0].message.content == ANSWERS["Capital of France?"]
        assert g.system_instructions == "be brief"
        assert [(m.role, m.text) for m in g.input_messages] == [
            (m["role"], m["content"]) for m in sent
        ]
        assert g.model == response.model == "gpt-4o-mini"
        assert response.usage is not None
        assert (g.input_tokens, g.output_tokens) == (
            response.usage.prompt_tokens,
            response.usage.completion_tokens,
        )
        assert g.convention == self.convention
        assert g.tool_calls == ()

    def test_chat_under_a_parent_span(self, client: openai.OpenAI, capture: Capture) -> None:
        with capture.tracer.start_as_current_span("handle-request") as parent:
            response = client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "Capital of Italy?"}]
            )
        spans = capture.take()
        [app] = [s for s in spans if is_app(s)]
        [llm] = [s for s in spans if not is_app(s)]
        assert llm.parent is not None and llm.parent.span_id == parent.get_span_context().span_id
        assert llm.context is not None and app.context is not None
        assert llm.context.trace_id == app.context.trace_id
        g = extracted(llm)
        assert (g.input, g.output) == ("Capital of Italy?", response.choices[0].message.content)
        assert not extracted(app).has_content

    def test_streaming(self, client: openai.OpenAI, capture: Capture) -> None:
        stream = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "Stream it"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        received = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        g = extracted(capture.llm_span())
        assert received == ANSWERS["Stream it"]
        assert (g.input, g.output) == ("Stream it", received)
        assert (g.input_tokens, g.output_tokens) == (11, 7)

    def test_tool_call(self, client: openai.OpenAI, capture: Capture) -> None:
        response = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "Weather in Paris?"}],
            tools=[WEATHER_TOOL],  # type: ignore[list-item]
        )
        g = extracted(capture.llm_span())
        [call] = response.choices[0].message.tool_calls or []
        received = ToolCall(call.function.name, json.loads(call.function.arguments), call.id)  # type: ignore[union-attr]
        assert g.tool_calls == (received,) == (CALL,)
        assert g.output_messages[0].tool_calls == (CALL,)
        assert json.loads(g.output or "") == [{"name": "get_weather", "arguments": CALL.arguments}]
        assert g.input == "Weather in Paris?"
        if self.records_tools:
            [tool] = g.tool_definitions
            assert tool["name"] == "get_weather"
            assert tool["parameters"] == WEATHER_TOOL["function"]["parameters"]  # type: ignore[index]

    def test_tool_result_follow_up(self, client: openai.OpenAI, capture: Capture) -> None:
        sent: list[Any] = [
            {"role": "user", "content": "Weather in Paris?"},
            {
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
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 20C"},
        ]
        response = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=sent,
            tools=[WEATHER_TOOL],  # type: ignore[list-item]
        )
        g = extracted(capture.llm_span())
        assert g.input == "Weather in Paris?"
        assert [m.role for m in g.input_messages] == ["user", "assistant", "tool"]
        assert g.input_messages[1].tool_calls == (CALL,)
        assert g.tool_results == (ToolResult("sunny, 20C", "call_1"),)
        assert g.output == response.choices[0].message.content == "It is sunny in Paris."
        assert g.tool_calls == ()

    def test_streamed_tool_call(self, client: openai.OpenAI, capture: Capture) -> None:
        stream = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "Weather in Paris?"}],
            tools=[WEATHER_TOOL],  # type: ignore[list-item]
            stream=True,
        )
        chunks: list[Any] = list(stream)
        assert any(c.choices and c.choices[0].delta.tool_calls for c in chunks)
        g = extracted(capture.llm_span())
        assert g.tool_calls == (CALL,)
        assert g.input == "Weather in Paris?"

    def test_http_500(self, client: openai.OpenAI, capture: Capture) -> None:
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "fail please"}]
            )
        span = capture.llm_span()
        assert span.status.status_code is StatusCode.ERROR
        g = extracted(span)
        assert g.input == "fail please"
        assert (g.output, g.output_messages, g.tool_calls) == (None, (), ())
