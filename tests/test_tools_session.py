"""The tools with session rules (``scope: session``), each run as a subprocess on turns made
with the real SDK and written as OTLP/JSON lines: a conversation ``c1`` of three turns (one of
them marked internal), a trace without a session key, and a conversation ``c2`` of one turn.
In a file every conversation ends at the end of the input (reason ``end_of_input``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan

from otel_online_eval.engine._deciding import session_hash
from otel_online_eval.sampling import FULL
from tests.agent_traces import conversation_turn
from tests.test_tools_support import read_spans, run_cli, span_attrs, span_hex, write_with_exporter
from tests.test_tools_trace import agent_spans, root_of


def turn(conversation: str | None, question: str, answer: str, internal: bool = False) -> Any:
    """One turn (see ``conversation_turn``) for a file."""

    def make(tracer: trace.Tracer) -> None:
        conversation_turn(
            tracer, conversation, question, answer, {"app.internal": True} if internal else None
        )

    return make


def _rate_between(low: str, high: str) -> float:
    """A rate that keeps the conversation ``low`` and samples ``high`` out (by key hash)."""
    return (session_hash(low, 0) + session_hash(high, 0)) / 2 / FULL


class Data:
    def __init__(self, base: Path) -> None:
        self.c1 = [
            agent_spans(turn("c1", "my order is late", "sorry, checking"), 31),
            agent_spans(turn("c1", "order 42", "it ships today", internal=True), 32),
            agent_spans(turn("c1", "thanks", "you are welcome"), 33),
        ]
        self.no_key = agent_spans(turn(None, "hello", "hi"), 34)
        self.c2 = [agent_spans(turn("c2", "reset my password", "done"), 35)]
        kept, out = sorted(["c1", "c2"], key=lambda k: session_hash(k, 0))
        self.kept, self.out = kept, out
        config = {
            "scorers": {
                "turns": {"type": "session_turns", "max_turns": 2},
                "nonempty": {"type": "not_empty"},
            },
            "rules": [
                {"name": "conversation", "scope": "session", "scorers": ["turns", "nonempty"]},
                {
                    "name": "external",
                    "scope": "session",
                    "filter": "attributes['app.internal'] IS NULL",
                    "scorers": ["turns"],
                },
                {
                    "name": "sampled",
                    "scope": "session",
                    "sampling": _rate_between(kept, out),
                    "scorers": ["turns"],
                },
            ],
        }
        self.config = base / "rules.yaml"
        self.config.write_text(yaml.safe_dump(config))
        self.spans = write_with_exporter(
            base / "spans.jsonl", [*self.c1[:2], self.no_key, *self.c1[2:], *self.c2]
        )
        self.evals = base / "evals.jsonl"
        self.score = _json(
            "score", "-c", self.config, "--rule", "conversation", "--out", self.evals, self.spans
        )


def _ok(proc: Any, code: int = 0) -> Any:
    assert proc.returncode == code, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def _json(*args: Any) -> Any:
    return json.loads(_ok(run_cli(*args, "--json")).stdout)


def _tid(spans: list[ReadableSpan]) -> str:
    ctx = spans[0].context
    assert ctx is not None
    return f"{ctx.trace_id:032x}"


def _chat(spans: list[ReadableSpan]) -> ReadableSpan:
    (chat,) = [s for s in spans if s.parent is not None]
    return chat


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Data:
    return Data(tmp_path_factory.mktemp("tools-session"))


# -- test ----------------------------------------------------------------------------------------


def test_test_shows_one_row_per_conversation(data: Data) -> None:
    doc = _json("test", "-c", data.config, "--rule", "conversation", data.spans)
    assert doc["scope"] == "session"
    c1, c2 = doc["conversations"]
    assert c1["session"] == {
        "key": "c1",
        "turns": 3,
        "reason": "end_of_input",
        "turn_trace_ids": [_tid(t) for t in data.c1],
    }
    last = root_of(data.c1[2])
    assert c1["trace_id"] == _tid(data.c1[2]) and c1["span_id"] == span_hex(last)
    assert c1["outcome"] == "scored"
    assert c1["scores"]["turns"]["value"] == 0.0  # 3 turns, max_turns 2
    assert c1["scores"]["nonempty"]["value"] == 1.0
    assert c2["session"]["key"] == "c2" and c2["session"]["turns"] == 1
    assert c2["scores"]["turns"]["value"] == 1.0
    assert doc["summary"] == {
        "conversations": 2,
        "turns": 4,
        "traces": 5,
        "no_key": 1,
        "sampled_out": 0,
        "filtered_out": 0,
        "scored": 2,
        "no_content": 0,
        "eval_spans_ignored": 0,
        "bad_input_skipped": 0,
    }

    out = _ok(run_cli("test", "-c", data.config, "--rule", "conversation", data.spans)).stdout
    assert "  scope:      session; key gen_ai.conversation.id, else session.id;" in out
    (row,) = [ln for ln in out.splitlines() if ln.startswith("c1 ")]
    assert row.split()[:6] == [
        "c1",
        "3",
        _tid(data.c1[2]),
        "invoke_agent",
        "support",
        span_hex(last),
    ]
    assert "end_of_input" in row and "turns = 0 (fail)" in row
    assert "2 conversation(s) (4 turn(s) of 5 trace(s)): 2 scored; 1 trace(s) without a" in out


def test_test_counts_traces_filtered_or_sampled_out(data: Data) -> None:
    doc = _json("test", "-c", data.config, "--rule", "external", data.spans)
    c1 = doc["conversations"][0]
    assert c1["session"]["turns"] == 2
    assert c1["session"]["turn_trace_ids"] == [_tid(data.c1[0]), _tid(data.c1[2])]
    assert c1["scores"]["turns"]["value"] == 1.0
    assert doc["summary"]["filtered_out"] == 1 and doc["summary"]["no_key"] == 1

    doc = _json("test", "-c", data.config, "--rule", "sampled", data.spans)
    assert [c["session"]["key"] for c in doc["conversations"]] == [data.kept]
    assert doc["summary"]["sampled_out"] == (3 if data.out == "c1" else 1)
    doc = _json("test", "-c", data.config, "--rule", "sampled", "--ignore-sampling", data.spans)
    assert len(doc["conversations"]) == 2 and doc["summary"]["sampled_out"] == 0


# -- score ---------------------------------------------------------------------------------------


def test_score_evaluates_each_conversation_through_the_engine(data: Data, tmp_path: Path) -> None:
    tally = data.score["rules"]["conversation"]
    assert tally["scope"] == "session" and tally["no_key"] == 1
    assert tally["selected"] == 4 and tally["to_score"] == 2
    assert data.score["evaluations"] == {"planned": 2, "done": 2, "dropped": 0}
    assert data.score["conversations_scored"] == 2 and data.score["traces_scored"] == 0
    evals = {
        span_attrs(s)["online_eval.session.turns"]: s
        for _, s in read_spans(data.evals)
        if s.name == "eval conversation"
    }
    assert sorted(evals) == [1, 3]
    c1 = evals[3]
    attrs = span_attrs(c1)
    assert attrs["online_eval.scope"] == "session"
    assert attrs["online_eval.session.reason"] == "end_of_input"
    assert attrs["online_eval.backfill"] is True
    assert c1.trace_id.hex() == _tid(data.c1[2])
    assert c1.parent_span_id.hex() == span_hex(root_of(data.c1[2]))
    linked = {link.span_id.hex() for link in c1.links}
    assert {span_hex(root_of(t)) for t in data.c1} <= linked
    assert evals[1].trace_id.hex() == _tid(data.c2[0])
    scores = [
        span_attrs(s)
        for _, s in read_spans(data.evals)
        if s.name.startswith("score ") and s.parent_span_id == c1.span_id
    ]
    assert sorted(a["gen_ai.evaluation.score.label"] for a in scores) == ["fail", "pass"]

    # Run again with the output among the inputs: both conversations are scored already.
    again = _json(
        "score",
        "-c",
        data.config,
        "--rule",
        "conversation",
        "--out",
        tmp_path / "more.jsonl",
        data.spans,
        data.evals,
    )
    assert again["rules"]["conversation"]["already_scored"] == 2
    assert again["evaluations"]["planned"] == 0


# -- explain -------------------------------------------------------------------------------------


def _rules(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["rule"]: r for r in doc["rules"]}


def test_explain_says_which_conversation_a_trace_is_a_turn_of(data: Data) -> None:
    chat = span_hex(_chat(data.c1[1]))
    rules = _rules(_json("explain", "-c", data.config, "--span-id", chat, data.spans, data.evals))
    conv = rules["conversation"]
    assert conv["scope"] == "session" and conv["would_score"] and conv["session_key"] == "c1"
    assert conv["conversation"] == {
        "key": "c1",
        "turns": 3,
        "this_turn": 2,
        "reason": "end_of_input",
        "last_trace_id": _tid(data.c1[2]),
        "last_anchor_span_id": span_hex(root_of(data.c1[2])),
    }
    assert conv["evals_in_input"] == 1  # the eval span in the last turn links to this turn
    ext = rules["external"]
    assert not ext["would_score"] and ext["stage"] == "filter"
    assert ext["verdict"].startswith("not a turn of 'c1': filter false")

    root = span_hex(root_of(data.no_key))
    rules = _rules(_json("explain", "-c", data.config, "--span-id", root, data.spans))
    assert rules["conversation"]["stage"] == "no_key"
    assert rules["conversation"]["verdict"].startswith("not a turn: the trace has no session key")

    out_trace = data.c1[0] if data.out == "c1" else data.c2[0]
    root = span_hex(root_of(out_trace))
    rules = _rules(_json("explain", "-c", data.config, "--span-id", root, data.spans))
    assert rules["sampled"]["stage"] == "sampling"
    assert rules["sampled"]["sampling"]["sampled"] is False
    assert (
        "sampled out" in rules["sampled"]["verdict"] and "(by key)" in rules["sampled"]["verdict"]
    )

    text = _ok(run_cli("explain", "-c", data.config, "--span-id", chat, data.spans)).stdout
    assert "conversation 'c1': turn 2 of 3, ends end_of_input" in text


# -- report --------------------------------------------------------------------------------------


def test_report_counts_one_evaluation_per_conversation(data: Data) -> None:
    doc = _json("report", data.evals)
    assert doc["evaluations"] == {"conversation": 2}
    assert doc["sessions"] == {"conversation": {"conversations": 2, "turns": 4}}
    by = {s["scorer"]: s for s in doc["scorers"]}
    assert by["turns"]["count"] == 2 and by["nonempty"]["count"] == 2
    out = _ok(run_cli("report", data.evals)).stdout
    assert "(conversation: 2 conversation(s), 4 turn(s))" in out
