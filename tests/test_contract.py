"""The small contracts: result normalisation, GenAI field extraction, rule decisions."""

from __future__ import annotations

import json
import math
import random
from typing import Any

import pytest

from otel_online_eval import Rule, Score, ScorerError, Stage
from otel_online_eval.genai import extract
from otel_online_eval.sampling import is_sampled
from otel_online_eval.scorers.base import to_score
from tests.spans import view


@pytest.mark.parametrize(
    ("result", "scale", "expected"),
    [
        (True, 1.0, Score(1.0, "pass")),
        (False, 1.0, Score(0.0, "fail")),
        (0.25, 1.0, Score(0.25)),
        (1, 1.0, Score(1.0)),
        (85, 100.0, Score(0.85)),
        ({"score": 0.5, "label": "meh", "explanation": "so-so"}, 1.0, Score(0.5, "meh", "so-so")),
        ({"value": 70, "metadata": {"k": 1}}, 100.0, Score(0.7, None, None, {"k": 1})),
        ({"score": True}, 1.0, Score(1.0, "pass")),
        ({"label": "billing"}, 1.0, Score(None, "billing")),
        (Score(0.9, "ok"), 1.0, Score(0.9, "ok")),
        (Score(90.0, "ok"), 100.0, Score(0.9, "ok")),
    ],
)
def test_results_normalise(result: Any, scale: float, expected: Score) -> None:
    got = to_score(result, scale)
    assert (got.value, got.label, got.explanation, dict(got.metadata)) == (
        expected.value,
        expected.label,
        expected.explanation,
        dict(expected.metadata),
    )


@pytest.mark.parametrize(
    ("result", "message"),
    [
        (None, "returned None"),
        (math.nan, "NaN"),
        ("great", "returned a string 'great'"),
        (1.5, "1.5 is outside [0, 1]"),
        (-0.1, "outside [0, 1]"),
        ({"score": 0.5, "extra": 1}, "unknown keys ['extra']"),
        ({"explanation": "x"}, "neither a score nor a label"),
        ({"score": "high"}, "score must be a number, got str"),
        ({"score": 0.5, "label": 3}, "label must be a string"),
        (Score(None), "neither a value nor a label"),
        ([0.5], "returned list"),
    ],
)
def test_bad_results_are_errors(result: Any, message: str) -> None:
    with pytest.raises(ScorerError, match=message.replace("[", r"\[").replace("(", r"\(")):
        to_score(result)


def test_scale_bounds_are_named() -> None:
    with pytest.raises(ScorerError, match=r"outside \[0, 100\]"):
        to_score(120, 100.0)


def _messages(role: str, *texts: str) -> str:
    return json.dumps([{"role": role, "parts": [{"type": "text", "content": t}]} for t in texts])


def test_genai_current_convention() -> None:
    conversation = json.dumps(
        [
            {"role": "user", "parts": [{"type": "text", "content": "first question"}]},
            {"role": "assistant", "parts": [{"type": "text", "content": "first answer"}]},
            {"role": "user", "parts": [{"type": "text", "content": "second question"}]},
        ]
    )
    v = view(
        attributes={
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
            "gen_ai.usage.input_tokens": 10,
            "gen_ai.usage.output_tokens": 3,
            "gen_ai.input.messages": conversation,
            "gen_ai.output.messages": _messages("assistant", "an answer"),
            "gen_ai.system_instructions": json.dumps([{"type": "text", "content": "be brief"}]),
        }
    )
    g = extract(v)
    assert g.input == "second question"  # the last user message
    assert g.output == "an answer"
    assert g.model == "gpt-4o-mini-2024-07-18"  # the response model wins
    assert (g.input_tokens, g.output_tokens, g.operation) == (10, 3, "chat")
    assert g.system_instructions == "be brief"
    assert [m.role for m in g.input_messages] == ["user", "assistant", "user"]
    assert g.convention == "genai"


def test_genai_legacy_strings_and_broken_json() -> None:
    g = extract(view(attributes={"gen_ai.prompt": "plain prompt", "gen_ai.completion": "done"}))
    assert (g.input, g.output) == ("plain prompt", "done")
    broken = extract(view(attributes={"gen_ai.output.messages": '[{"role": "assistant", "par'}))
    assert broken.output == '[{"role": "assistant", "par'  # raw string, never an exception
    nothing = extract(view(attributes={"http.route": "/x"}))
    assert (nothing.input, nothing.output, nothing.model) == (None, None, None)


def test_rule_decisions_say_why() -> None:
    rule = Rule.create(
        "r",
        [lambda inp: 1.0],
        span_names=["chat"],
        filter="output IS NOT NULL AND kind = 'CLIENT'",
        sampling=0.5,
    )
    ids = [random.Random(5).getrandbits(128) for _ in range(1)] + [
        random.Random(s).getrandbits(128) for s in range(6, 40)
    ]
    tid_in = next(t for t in ids if is_sampled(t, 0.5))
    tid_out = next(t for t in ids if not is_sampled(t, 0.5))

    wrong_name = rule.decide(view("other", trace_id=tid_in))
    assert (wrong_name.matched, wrong_name.stage) == (False, Stage.SELECTION)
    assert "named 'other' is not named one of ['chat']" in wrong_name.reason

    sampled_out = rule.decide(view("chat", trace_id=tid_out))
    assert (sampled_out.stage, sampled_out.reason) == (
        Stage.SAMPLING,
        "trace sampled out at rate 0.5",
    )
    assert rule.decide(view("chat", trace_id=tid_out), ignore_sampling=True).stage is Stage.FILTER

    attrs = {"gen_ai.output.messages": _messages("assistant", "hi")}
    filtered = rule.decide(view("chat", trace_id=tid_in, attributes=attrs))
    assert (filtered.stage, filtered.detail) == (Stage.FILTER, "kind = 'CLIENT'")

    ok = rule.decide(view("chat", trace_id=tid_in, attributes=attrs, kind="CLIENT"))
    assert ok.matched and ok.stage is None
