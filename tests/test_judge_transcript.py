"""Judge templates over a whole trace or session ({{transcript}}, {{tool_calls}}), against the
fake OpenAI-compatible server."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry.trace import Tracer

from otel_online_eval import ScorerError
from otel_online_eval._validate import Issues, Reader
from otel_online_eval.genai import Message
from otel_online_eval.scorers import SCORER_TYPES
from otel_online_eval.scorers.base import EvalInput, Score
from otel_online_eval.scorers.judge import BUILTIN_TEMPLATES, FENCE_TAG, LLMJudge, llm_judge
from otel_online_eval.traceview import TraceView
from tests.agent_traces import ANSWER, QUESTION, chat, genai_agent, spans_of, text_message
from tests.fake_openai import FakeOpenAI, Reply, quiet, tool_call

NEW = (
    "task_completion",
    "tool_use",
    "answer_grounded_in_tools",
    "conversation_resolved",
    "user_frustration",
)

TRANSCRIPT = f"""\
user: {QUESTION}

assistant: [calls get_weather {{"city": "Paris"}}]

tool (get_weather): error: upstream timed out

assistant: [calls get_weather {{"city": "Paris"}}]

tool (get_weather): {{"celsius": 20}}

assistant: [calls to_fahrenheit {{"celsius": 20}}]

tool (to_fahrenheit): 68

assistant: {ANSWER}"""

TOOL_CALLS = """\
1. get_weather
   arguments: {"city": "Paris"}
   error: TimeoutError: upstream timed out
2. get_weather
   arguments: {"city": "Paris"}
   result: {"celsius": 20}
3. to_fahrenheit
   arguments: {"celsius": 20}
   result: 68"""


@pytest.fixture(scope="module")
def shared_server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        quiet(server)
        yield server


@pytest.fixture
def server(shared_server: FakeOpenAI) -> FakeOpenAI:
    shared_server.requests.clear()
    return shared_server


@pytest.fixture(scope="module")
def agent() -> TraceView:
    return TraceView(spans_of(genai_agent))


@dataclass(frozen=True)
class SessionInput(EvalInput):
    """An EvalInput with the ``session`` that EvalInput is gaining (read with getattr)."""

    session: Any = None


@dataclass(frozen=True)
class Session:
    messages: tuple[Message, ...]


def verdict(choice: str, reasons: str = "Because.") -> Reply:
    return tool_call("select_choice", {"reasons": reasons, "choice": choice})


def judge(server: FakeOpenAI, template: str, **options: Any) -> LLMJudge:
    return llm_judge(
        template, base_url=server.base_url, model="judge-1", template=template, **options
    )


def of_trace(trace: TraceView) -> EvalInput:
    return EvalInput(trace.input, trace.output, trace.root, "agent", trace=trace)


def run(scorer: LLMJudge, inp: EvalInput) -> Score:
    return asyncio.run(scorer.score(inp))


def fenced(name: str, value: str) -> str:
    return f'<{FENCE_TAG} name="{name}">\n{value}\n</{FENCE_TAG}>'


def sent(server: FakeOpenAI) -> str:
    (request,) = server.requests
    content = request.body["messages"][1]["content"]
    assert isinstance(content, str)
    return content


def test_the_new_templates_are_built_in_and_read_a_whole_trace(server: FakeOpenAI) -> None:
    assert set(NEW) <= set(BUILTIN_TEMPLATES)
    for name in NEW:
        # Selected the way every template is: type llm_judge, template: <name>.
        issues = Issues()
        opts = Reader(
            {"type": "llm_judge", "base_url": "http://127.0.0.1:9/v1", "model": "m"}
            | {"template": name},
            f"scorers.{name}",
            issues,
        )
        opts.raw("type")
        scorer = SCORER_TYPES["llm_judge"](name, opts)
        opts.done()
        assert issues.items == [] and isinstance(scorer, LLMJudge)
        template = scorer.template
        assert template.name == name and template.description and template.needs_trace
        assert all(0 <= v <= 1 for v in template.choice_scores.values())
        assert max(template.choice_scores.values()) == 1.0
        assert min(template.choice_scores.values()) == 0.0
    frustration = judge(server, "user_frustration").template  # 1.0: no frustration
    assert frustration.choice_scores["not_frustrated"] == 1.0
    assert frustration.choice_scores["frustrated"] == 0.0


def test_task_completion_sends_the_transcript_and_the_final_answer(
    server: FakeOpenAI, agent: TraceView
) -> None:
    server.script(verdict("partially_completed", "Gave the temperature, no units asked."))
    score = run(judge(server, "task_completion"), of_trace(agent))
    assert (score.value, score.label, score.explanation) == (
        0.5,
        "partially_completed",
        "Gave the temperature, no units asked.",
    )
    assert score.metadata["template"] == "task_completion"
    user = sent(server)
    assert fenced("transcript", TRANSCRIPT) in user
    assert fenced("output", ANSWER) in user
    assert user.index(fenced("transcript", TRANSCRIPT)) < user.index(fenced("output", ANSWER))


def test_tool_use_sends_every_tool_call_with_its_result_or_error(
    server: FakeOpenAI, agent: TraceView
) -> None:
    server.script(verdict("appropriate"))
    score = run(judge(server, "tool_use"), of_trace(agent))
    assert (score.value, score.label) == (1.0, "appropriate")
    user = sent(server)
    assert fenced("transcript", TRANSCRIPT) in user
    assert fenced("tool_calls", TOOL_CALLS) in user


def test_answer_grounded_in_tools(server: FakeOpenAI, agent: TraceView) -> None:
    server.script(verdict("ungrounded", "68 is not in any result."))
    score = run(judge(server, "answer_grounded_in_tools"), of_trace(agent))
    assert (score.value, score.label, score.explanation) == (
        0.0,
        "ungrounded",
        "68 is not in any result.",
    )
    user = sent(server)
    for name, value in (("input", QUESTION), ("tool_calls", TOOL_CALLS), ("output", ANSWER)):
        assert fenced(name, value) in user


def test_a_trace_without_tools_says_so(server: FakeOpenAI) -> None:
    def no_tools(tracer: Tracer) -> None:
        chat(tracer, [text_message("user", "Hi")], text_message("assistant", "Hello!"), 5)

    server.script(verdict("appropriate"))
    run(judge(server, "tool_use"), of_trace(TraceView(spans_of(no_tools))))
    user = sent(server)
    assert fenced("transcript", "user: Hi\n\nassistant: Hello!") in user
    assert fenced("tool_calls", "(no tool was run)") in user


def test_the_session_transcript_is_read_when_there_is_no_trace(server: FakeOpenAI) -> None:
    session = Session(
        (
            Message("user", "My order never arrived."),
            Message("assistant", "Sorry! Could you give me the order number?"),
            Message("user", "I ALREADY GAVE IT TWICE!!"),
        )
    )
    inp = SessionInput("I ALREADY GAVE IT TWICE!!", None, None, "support", session=session)
    server.script(verdict("frustrated", "Shouting, repeated request."))
    score = run(judge(server, "user_frustration"), inp)
    assert (score.value, score.label) == (0.0, "frustrated")
    expected = (
        "user: My order never arrived.\n\n"
        "assistant: Sorry! Could you give me the order number?\n\n"
        "user: I ALREADY GAVE IT TWICE!!"
    )
    assert fenced("transcript", expected) in sent(server)
    server.requests.clear()
    server.script(verdict("unresolved"))
    assert run(judge(server, "conversation_resolved"), inp).value == 0.0
    assert fenced("transcript", expected) in sent(server)


@pytest.mark.parametrize("name", NEW)
def test_without_a_trace_the_judge_says_which_scope_it_needs(server: FakeOpenAI, name: str) -> None:
    span_only = EvalInput(QUESTION, ANSWER, None, "chat-rule")
    with pytest.raises(ScorerError) as info:
        run(judge(server, name), span_only)
    message = str(info.value)
    assert f"template {name!r} uses {{{{" in message
    assert "this evaluation is of one span: use the judge in a rule with scope: trace" in message
    assert server.requests == []  # nothing was sent


def test_tool_calls_need_a_trace_even_with_a_session(server: FakeOpenAI) -> None:
    inp = SessionInput(QUESTION, ANSWER, None, "r", session=Session((Message("user", "Hi"),)))
    with pytest.raises(ScorerError, match=r"uses \{\{tool_calls\}\}.*with scope: trace$"):
        run(judge(server, "tool_use"), inp)
    assert server.requests == []


def test_a_trace_without_messages_is_a_missing_transcript(server: FakeOpenAI) -> None:
    def silent(tracer: Tracer) -> None:
        with tracer.start_as_current_span("job"):
            pass

    trace = TraceView(spans_of(silent))
    with pytest.raises(ScorerError, match="transcript is missing: the trace has no chat messages"):
        run(judge(server, "conversation_resolved"), of_trace(trace))
    assert server.requests == []


def test_a_long_transcript_keeps_its_start_and_its_end(server: FakeOpenAI) -> None:
    first = "Please summarise the attached report. " + "a" * 3000
    last = "Here is the summary: revenue grew 12%."

    def long_chat(tracer: Tracer) -> None:
        chat(tracer, [text_message("user", first)], text_message("assistant", last), 900)

    trace = TraceView(spans_of(long_chat))
    full = f"user: {first}\n\nassistant: {last}"
    server.script(verdict("completed"))
    assert run(judge(server, "task_completion", max_chars=200), of_trace(trace)).value == 1.0
    user = sent(server)
    start = user.index(f'<{FENCE_TAG} name="transcript">\n') + len(
        f'<{FENCE_TAG} name="transcript">\n'
    )
    shown = user[start : user.index(f"\n</{FENCE_TAG}>", start)]
    cut = len(full) - 200
    assert shown == f"{full[:100]}\n[... {cut} characters not shown ...]\n{full[-100:]}"
    assert shown.startswith("user: Please summarise the attached report.")
    assert shown.endswith(f"assistant: {last}")
    # Other values keep their start only, as before.
    assert fenced("output", last) in user


def test_tool_results_in_a_message_of_another_role_are_rendered() -> None:
    # pydantic-ai (GenAI data format 5) sends tool results back in a "user" message.
    from otel_online_eval.genai._model import ToolCall, ToolResult
    from otel_online_eval.scorers.judge._templates import render_messages

    messages = (
        Message("user", "Weather?"),
        Message("assistant", tool_calls=(ToolCall("get_weather", {"city": "Paris"}, "c1"),)),
        Message("user", tool_results=(ToolResult({"celsius": 20}, "c1"),)),
    )
    text = render_messages(messages)
    assert text is not None
    assert text.endswith('user (get_weather): {"celsius": 20}')
