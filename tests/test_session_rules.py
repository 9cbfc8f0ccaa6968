"""Rules with ``scope: session``: the traces (turns) of one conversation scored together, in-process
with the real SDK; the conversation's key read from ``gen_ai.conversation.id``."""

from __future__ import annotations

import time
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_online_eval import ConfigError, OnlineEvalSpanProcessor, Rule, parse_config
from otel_online_eval.assembly import Completion, SessionSettings
from otel_online_eval.sessionview import SessionView
from tests.agent_traces import conversation_turn as turn
from tests.test_trace_rules import Capture

FAST = Completion(settle_s=0.02, idle_s=0.5, max_wait_s=2.0)


def wait_until(done: Any, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not done() and time.monotonic() < deadline:
        time.sleep(0.02)


def run(rules: list[Rule], make: Any) -> tuple[InMemorySpanExporter, OnlineEvalSpanProcessor, Any]:
    evals = InMemorySpanExporter()
    processor = OnlineEvalSpanProcessor(rules=rules, exporter=evals)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    out = make(provider.get_tracer("test"))
    return evals, processor, (provider, out)


def test_a_conversation_of_three_traces_is_scored_once_in_its_last_turn() -> None:
    capture = Capture()
    rule = Rule.create(
        "conversation",
        [capture],
        scope="session",
        completion=FAST,
        session=SessionSettings(idle_s=0.3),
    )

    def make(tracer: trace.Tracer) -> list[int]:
        anchors = []
        for i in range(3):
            anchors.append(turn(tracer, "conv-1", f"question {i}", f"answer {i}"))
            time.sleep(0.05)
        turn(tracer, None, "no conversation", "ignored")  # no key: not a turn
        return anchors

    evals, processor, (provider, anchors) = run([rule], make)
    wait_until(lambda: capture.inputs)
    assert processor.force_flush(5_000)
    stats = processor.stats()
    provider.shutdown()
    (inp,) = capture.inputs
    session = inp.session
    assert isinstance(session, SessionView) and session.key == "conv-1"
    assert session.turn_count == 3 and session.reason == "idle"
    assert [m.text for m in session.messages] == [
        "question 0",
        "answer 0",
        "question 1",
        "answer 1",
        "question 2",
        "answer 2",
    ]
    assert (inp.input, inp.output, inp.trace) == ("question 0", "answer 2", None)
    (ev,) = [s for s in evals.get_finished_spans() if s.name == "eval conversation"]
    attrs = ev.attributes or {}
    assert attrs["online_eval.scope"] == "session"
    assert (attrs["online_eval.session.turns"], attrs["online_eval.session.reason"]) == (3, "idle")
    assert ev.parent is not None and ev.parent.span_id == anchors[-1]
    links = [(k.context.span_id, (k.attributes or {})["online_eval.link"]) for k in ev.links]
    assert links == [(anchors[2], "scored_span"), (anchors[0], "turn"), (anchors[1], "turn")]
    assert stats.assembly_turns[("conversation", "added")] == 3
    assert stats.assembly_turns[("conversation", "no_key")] == 1
    assert stats.assembly_sessions[("conversation", "idle")] == 1


def test_max_turns_and_shutdown_hand_conversations_on() -> None:
    capture = Capture()
    rule = Rule.create(
        "conversation",
        [capture],
        scope="session",
        completion=FAST,
        session=SessionSettings(idle_s=600, max_turns=2),
    )

    def make(tracer: trace.Tracer) -> None:
        for i in range(3):
            turn(tracer, "conv-2", f"q{i}", f"a{i}")

    _, _, (provider, _) = run([rule], make)
    wait_until(lambda: capture.inputs)
    provider.shutdown()  # the third turn's conversation is still open: scored at shutdown
    reasons = sorted((i.session.reason, i.session.turn_count) for i in capture.inputs if i.session)
    assert reasons == [("max_turns", 2), ("shutdown", 1)]


def test_sessions_are_sampled_by_their_key() -> None:
    kept, dropped = Capture(), Capture()
    rules = [
        Rule.create(
            "all", [kept], scope="session", completion=FAST, session=SessionSettings(idle_s=0.2)
        ),
        Rule.create(
            "none",
            [dropped],
            scope="session",
            completion=FAST,
            sampling=0.0,
            session=SessionSettings(idle_s=0.2),
        ),
    ]

    def make(tracer: trace.Tracer) -> None:
        for conversation in ("a", "b", "c"):
            turn(tracer, conversation, "q", "a")

    _, processor, (provider, _) = run(rules, make)
    wait_until(lambda: len(kept.inputs) == 3)
    stats = processor.stats()
    provider.shutdown()
    assert len(kept.inputs) == 3 and dropped.inputs == []
    assert stats.assembly_turns[("none", "sampled_out")] == 3


def test_session_config_from_yaml_with_a_key_expression_and_session_turns() -> None:
    config = parse_config(
        """
scorers:
  turns: {type: session_turns, max_turns: 5}
rules:
  - name: conversation
    scope: session
    session: {key: "attributes['app.thread']", idle_s: 0.2, max_turns: 50}
    completion: {settle_s: 0.02, idle_s: 1, max_wait_s: 5}
    scorers: [turns]
"""
    )
    (rule,) = config.rules
    assert rule.session == SessionSettings("attributes['app.thread']", 0.2, 50)
    evals = InMemorySpanExporter()
    processor = OnlineEvalSpanProcessor(config, exporter=evals)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("test")
    for _ in range(2):
        with tracer.start_as_current_span("turn", attributes={"app.thread": "t-1"}):
            pass
    wait_until(
        lambda: (
            processor.force_flush(5_000)
            and any(s.name == "score turns" for s in evals.get_finished_spans())
        )
    )
    provider.shutdown()
    (score,) = [s for s in evals.get_finished_spans() if s.name == "score turns"]
    assert (score.attributes or {})["gen_ai.evaluation.score.value"] == 1.0


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (
            {
                "name": "r",
                "scope": "session",
                "session": {"key": "attributes["},
                "scorers": ["turns"],
            },
            "rules[0].session.key: key does not parse",
        ),
        (
            {"name": "r", "session": {"idle_s": 5}, "scorers": ["ok"]},
            "rules[0].session: applies to rules with scope: session only",
        ),
        (
            {"name": "r", "scope": "trace", "scorers": ["turns"]},
            "scorer 'turns' (session_turns) scores a whole session",
        ),
        (
            {"name": "r", "scope": "session", "scorers": ["errors"]},
            "scorer 'errors' (tool_errors) scores a whole trace",
        ),
        (
            {"name": "r", "scope": "session", "late": "ignore", "scorers": ["turns"]},
            "rules[0].late: applies to rules with scope: trace only",
        ),
        (
            {"name": "r", "scope": "session", "session": {"idle": 5}, "scorers": ["turns"]},
            "rules[0].session.idle: unknown key 'idle'",
        ),
    ],
)
def test_session_config_errors_name_the_problem_and_where(
    rule: dict[str, Any], message: str
) -> None:
    config = {
        "scorers": {
            "ok": {"type": "not_empty"},
            "errors": {"type": "tool_errors"},
            "turns": {"type": "session_turns", "max_turns": 5},
        },
        "rules": [rule],
    }
    with pytest.raises(ConfigError) as info:
        parse_config(config)
    assert message in str(info.value)
