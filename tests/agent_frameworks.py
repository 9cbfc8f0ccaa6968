"""Real agent frameworks run against ``tests.fake_openai``, for tests of trace-scope evaluation.

Each ``run_*_agent(server, tracer_provider)`` builds the same agent in one framework, with that
framework's own OpenTelemetry instrumentation sending its spans to ``tracer_provider`` (never the
global provider), scripts ``server`` and runs the agent once. The agent has two tools,
``get_weather`` and ``to_fahrenheit``; ``to_fahrenheit`` fails on its first call and succeeds on
the retry, so the model is made to ask for::

    get_weather {"city": "Paris"}     -> {"celsius": 20}
    to_fahrenheit {"celsius": 20}     -> fails: "converter busy, try again"
    to_fahrenheit {"celsius": 20}     -> 68.0
    and then answers ANSWER

Frameworks (the ``agent-tests`` extra pins them):

- ``pydantic-ai``: its built-in instrumentation (the ``Instrumentation`` capability with
  ``InstrumentationSettings(tracer_provider=..., include_content=True)``); GenAI conventions.
- ``openai-agents``: ``openinference-instrumentation-openai-agents``; OpenInference conventions.
  The instrumentor replaces the SDK's own trace processors (which export to OpenAI's platform)
  with its own for the run, and puts them back afterwards, so nothing leaves 127.0.0.1.
- ``langgraph``: a graph of a ``ChatOpenAI`` node and a ``ToolNode``, traced by
  ``openinference-instrumentation-langchain``; OpenInference conventions.

:func:`capture` runs one on a fresh provider and fake server, and returns a :class:`Run`::

    run = capture(run_pydantic_ai_agent)   # run.spans, run.answer, run.requests

Other tests pass a provider of their own (e.g. with an ``OnlineEvalSpanProcessor`` on it)::

    with FakeOpenAI() as server:
        run_openai_agents_agent(server, provider)

The runners make their own event loop (``asyncio.run``): call them from synchronous code.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
import threading
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.fake_openai import FakeOpenAI, Request, text, tool_call

__all__ = [
    "ANSWER",
    "FAILURE",
    "FRAMEWORKS",
    "INSTRUCTIONS",
    "MODEL",
    "QUESTION",
    "RESULTS",
    "TOOL_CALLS",
    "AgentRunner",
    "FlakyConverter",
    "Run",
    "capture",
    "dump",
    "loopback_only",
    "run_langgraph_agent",
    "run_openai_agents_agent",
    "run_pydantic_ai_agent",
    "script",
]

MODEL = "gpt-4o-mini"
AGENT_NAME = "weather"
INSTRUCTIONS = "You answer questions about the weather."
QUESTION = "What is the weather in Paris, in Fahrenheit?"
ANSWER = "It is 68°F in Paris."
FAILURE = "converter busy, try again"
"""The failing tool call's error message."""

TOOL_CALLS: tuple[tuple[str, dict[str, Any], str], ...] = (
    ("get_weather", {"city": "Paris"}, "call_1"),
    ("to_fahrenheit", {"celsius": 20}, "call_2"),  # fails
    ("to_fahrenheit", {"celsius": 20}, "call_3"),  # the retry
)
"""The tool calls the model asks for, in order: (name, arguments, call id)."""

RESULTS: tuple[Any, ...] = ({"celsius": 20}, None, 68.0)
"""What each of TOOL_CALLS returns (None: it fails)."""


class AgentRunner(Protocol):
    def __call__(
        self, server: FakeOpenAI, tracer_provider: TracerProvider, *, stream: bool = False
    ) -> str: ...


def script(server: FakeOpenAI) -> None:
    """Make ``server`` ask for the tool calls of TOOL_CALLS in turn, then answer ANSWER."""
    replies = [tool_call(name, args, call_id) for name, args, call_id in TOOL_CALLS]
    server.script(*replies, text(ANSWER))


def get_weather(city: str) -> dict[str, int]:
    """The weather in a city, in degrees Celsius."""
    return {"celsius": 20}


class FlakyConverter:
    """``to_fahrenheit``, which fails on its first call (with FAILURE) and works after."""

    def __init__(self, error: Callable[[str], Exception] = RuntimeError) -> None:
        self.calls = 0
        self._error = error
        self._lock = threading.Lock()

    def __call__(self, celsius: float) -> float:
        with self._lock:
            self.calls += 1
            first = self.calls == 1
        if first:
            raise self._error(FAILURE)
        return celsius * 9 / 5 + 32


# --- pydantic-ai -----------------------------------------------------------------------------


def run_pydantic_ai_agent(
    server: FakeOpenAI,
    tracer_provider: TracerProvider,
    *,
    stream: bool = False,
    version: int | None = None,
) -> str:
    """Run the agent in pydantic-ai, traced by its own instrumentation into ``tracer_provider``
    (content included); returns the agent's answer.

    The failing call raises ``ModelRetry``, pydantic-ai's way for a tool to ask the model to try
    again (any other exception ends the run). ``stream`` streams the model's answers (through an
    event stream handler); ``version`` is ``InstrumentationSettings``' data format (default: the
    library's, 5; 6 gives tool results the ``tool`` role).
    """
    from openai import AsyncOpenAI
    from pydantic_ai import Agent, ModelRetry
    from pydantic_ai.capabilities import Instrumentation
    from pydantic_ai.models.instrumented import InstrumentationSettings
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    script(server)
    settings_kwargs: dict[str, Any] = {} if version is None else {"version": version}
    settings = InstrumentationSettings(
        tracer_provider=tracer_provider,
        meter_provider=NoOpMeterProvider(),  # not the global one
        include_content=True,
        **settings_kwargs,
    )
    converter = FlakyConverter(ModelRetry)

    def to_fahrenheit(celsius: float) -> float:
        """Degrees Celsius in Fahrenheit."""
        return converter(celsius)

    async def run() -> str:
        async with AsyncOpenAI(base_url=server.base_url, api_key="dummy") as client:
            model = OpenAIChatModel(MODEL, provider=OpenAIProvider(openai_client=client))
            agent = Agent(
                model,
                name=AGENT_NAME,
                instructions=INSTRUCTIONS,
                tools=[get_weather, to_fahrenheit],
                capabilities=[Instrumentation(settings=settings)],
            )
            if stream:

                async def drain(_ctx: Any, events: Any) -> None:
                    async for _ in events:
                        pass

                result = await agent.run(QUESTION, event_stream_handler=drain)
            else:
                result = await agent.run(QUESTION)
            return str(result.output)

    return asyncio.run(run())


# --- openai-agents ---------------------------------------------------------------------------


def run_openai_agents_agent(
    server: FakeOpenAI, tracer_provider: TracerProvider, *, stream: bool = False
) -> str:
    """Run the agent in openai-agents (the chat completions model), traced by OpenInference's
    instrumentor into ``tracer_provider`` (content included); returns the agent's answer.

    The instrumentor is a process-wide singleton: it is instrumented for this run only, and must
    not be instrumented already. In its (default) exclusive mode it takes the SDK's own trace
    processors, which export to OpenAI's platform, out for the run; they get no trace. The
    failing tool raises; its ``failure_error_function`` gives the model (and the trace) the
    error's message, where the SDK's default one says only that the tool failed.
    ``OPENAI_AGENTS_DISABLE_TRACING`` must not be set: it turns off the spans too.
    """
    from agents import Agent, OpenAIChatCompletionsModel, RunConfig, Runner, function_tool
    from openai import AsyncOpenAI
    from openinference.instrumentation.openai_agents import OpenAIAgentsInstrumentor

    script(server)
    converter = FlakyConverter()

    def tool_error(_ctx: Any, error: Exception) -> str:
        return f"Error: {error}"

    @function_tool(name_override="to_fahrenheit", failure_error_function=tool_error)
    def to_fahrenheit(celsius: float) -> float:
        """Degrees Celsius in Fahrenheit."""
        return converter(celsius)

    async def run() -> str:
        async with AsyncOpenAI(base_url=server.base_url, api_key="dummy") as client:
            agent = Agent(
                name=AGENT_NAME,
                instructions=INSTRUCTIONS,
                model=OpenAIChatCompletionsModel(model=MODEL, openai_client=client),
                tools=[function_tool(get_weather), to_fahrenheit],
            )
            config = RunConfig(tracing_disabled=False, trace_include_sensitive_data=True)
            if stream:
                streamed = Runner.run_streamed(agent, QUESTION, run_config=config)
                async for _ in streamed.stream_events():
                    pass
                return str(streamed.final_output)
            result = await Runner.run(agent, QUESTION, run_config=config)
            return str(result.final_output)

    return _instrumented(OpenAIAgentsInstrumentor(), "openai-agents", tracer_provider, run)


# --- langgraph ---------------------------------------------------------------------------------


def run_langgraph_agent(
    server: FakeOpenAI, tracer_provider: TracerProvider, *, stream: bool = False
) -> str:
    """Run the agent as a LangGraph graph (a model node calling ``ChatOpenAI`` with the tools
    bound, a ``ToolNode``, ``tools_condition`` between them), traced by OpenInference's LangChain
    instrumentor into ``tracer_provider``; returns the agent's answer.

    The instrumentor is a process-wide singleton (it patches LangChain's callback manager): it
    is instrumented for this run only, and must not be instrumented already. The failing tool
    raises; ``ToolNode(handle_tool_errors=True)`` hands the model the error as the tool's
    result. LangSmith tracing is turned off for the run whatever the environment says.
    """
    import openai
    from langchain_core.messages import HumanMessage, SystemMessage
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI
    from langgraph.graph import START, MessagesState, StateGraph
    from langgraph.prebuilt import ToolNode, tools_condition
    from langsmith import tracing_context
    from openinference.instrumentation.langchain import LangChainInstrumentor
    from pydantic import SecretStr

    script(server)
    converter = FlakyConverter()

    @tool("to_fahrenheit")
    def to_fahrenheit(celsius: float) -> float:
        """Degrees Celsius in Fahrenheit."""
        return converter(celsius)

    tools = [tool(get_weather), to_fahrenheit]

    async def run() -> str:
        async with openai.DefaultAsyncHttpxClient() as http:
            with openai.DefaultHttpxClient() as sync_http:
                model = ChatOpenAI(
                    model=MODEL,
                    base_url=server.base_url,
                    api_key=SecretStr("dummy"),
                    streaming=stream,
                    http_client=sync_http,
                    http_async_client=http,
                ).bind_tools(tools)

                async def agent(state: MessagesState) -> dict[str, Any]:
                    prompt = [SystemMessage(INSTRUCTIONS), *state["messages"]]
                    return {"messages": [await model.ainvoke(prompt)]}

                graph = StateGraph(MessagesState)
                graph.add_node("agent", agent)
                graph.add_node("tools", ToolNode(tools, handle_tool_errors=True))
                graph.add_edge(START, "agent")
                graph.add_conditional_edges("agent", tools_condition)
                graph.add_edge("tools", "agent")
                with tracing_context(enabled=False):
                    state = await graph.compile().ainvoke({"messages": [HumanMessage(QUESTION)]})
                return str(state["messages"][-1].content)

    return _instrumented(LangChainInstrumentor(), "langchain", tracer_provider, run)


def _instrumented(
    instrumentor: Any,
    what: str,
    tracer_provider: TracerProvider,
    run: Callable[[], Coroutine[Any, Any, str]],
) -> str:
    """Run ``run`` with an OpenInference instrumentor on (content included) for its duration:
    the instrumentors are process-wide, so one that is on already is refused."""
    from openinference.instrumentation import TraceConfig

    if instrumentor.is_instrumented_by_opentelemetry:
        raise RuntimeError(f"{what} is instrumented already; its spans would go elsewhere")
    instrumentor.instrument(
        tracer_provider=tracer_provider,
        config=TraceConfig(
            hide_inputs=False,
            hide_outputs=False,
            hide_input_messages=False,
            hide_output_messages=False,
        ),
    )
    try:
        return asyncio.run(run())
    finally:
        instrumentor.uninstrument()


FRAMEWORKS: dict[str, AgentRunner] = {
    "pydantic_ai": run_pydantic_ai_agent,
    "openai_agents": run_openai_agents_agent,
    "langgraph": run_langgraph_agent,
}


@dataclass
class Run:
    """One captured run: the finished spans, the agent's answer, the requests the model got."""

    spans: list[ReadableSpan]
    answer: str
    requests: list[Request]


def capture(run: Callable[..., str], **kwargs: Any) -> Run:
    """Run ``run`` (one of the ``run_*_agent``, with ``kwargs``) against a fresh fake server,
    with a fresh provider whose only processor sends spans to an in-memory exporter."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    try:
        with FakeOpenAI() as server:
            answer = run(server, provider, **kwargs)
        return Run(list(exporter.get_finished_spans()), answer, list(server.requests))
    finally:
        provider.shutdown()


@contextmanager
def loopback_only() -> Iterator[list[Any]]:
    """Refuse, and record, every IP connection to an address off 127.0.0.0/8 and ::1 made in
    the block (in any thread); yields the list of IP addresses connected to or refused, each as
    given to ``connect``. Other families (Unix sockets) pass unrecorded."""
    attempts: list[Any] = []
    original = socket.socket.connect
    original_ex = socket.socket.connect_ex

    def allowed(sock: socket.socket, address: Any) -> bool:
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            return True
        attempts.append(address)
        try:
            return ipaddress.ip_address(str(address[0]).split("%")[0]).is_loopback
        except ValueError:  # a host name: never resolved here
            return False

    def connect(sock: socket.socket, address: Any) -> None:
        if not allowed(sock, address):
            raise ConnectionRefusedError(f"test: no connection off 127.0.0.1 ({address!r})")
        original(sock, address)

    def connect_ex(sock: socket.socket, address: Any) -> int:
        if not allowed(sock, address):
            raise ConnectionRefusedError(f"test: no connection off 127.0.0.1 ({address!r})")
        return original_ex(sock, address)

    socket.socket.connect = connect  # type: ignore[method-assign,assignment]
    socket.socket.connect_ex = connect_ex  # type: ignore[method-assign,assignment]
    try:
        yield attempts
    finally:
        socket.socket.connect = original  # type: ignore[method-assign]
        socket.socket.connect_ex = original_ex  # type: ignore[method-assign]


def dump(spans: list[ReadableSpan], width: int = 300) -> str:
    """The spans as text (name, scope, status, attributes, events), for a failing test's report
    or a look at what a framework emits."""
    lines = []
    for s in sorted(spans, key=lambda s: s.start_time or 0):
        parent = f"{s.parent.span_id:016x}" if s.parent else "-"
        scope = s.instrumentation_scope.name if s.instrumentation_scope else "?"
        lines.append(
            f"{s.name!r} [{scope}] {s.status.status_code.name} {s.status.description or ''}"
            f" span={s.context.span_id:016x} parent={parent}"
        )
        for key, value in (s.attributes or {}).items():
            shown = value if isinstance(value, str) else json.dumps(value, default=str)
            lines.append(f"    {key} = {shown[:width]}")
        for event in s.events:
            attrs = {k: str(v)[:80] for k, v in (event.attributes or {}).items()}
            lines.append(f"    event {event.name} {attrs}")
    return "\n".join(lines)
