"""The autoevals adapter, for real: heuristics locally, LLM scorers against the fake server."""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_online_eval import ConfigError, OnlineEvalSpanProcessor, ScorerError, parse_config
from otel_online_eval.scorers.base import EvalInput, Score
from tests.fake_openai import FakeOpenAI, Reply, Request, error, quiet, text, tool_call
from tests.spans import view

pytest.importorskip("autoevals")


@pytest.fixture(scope="module")
def shared_server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        quiet(server)
        yield server


@pytest.fixture
def server(shared_server: FakeOpenAI) -> FakeOpenAI:
    shared_server.script(text("ok"))
    shared_server.requests.clear()
    return shared_server


def scorer_from(options: dict[str, Any]) -> Any:
    config = parse_config(
        {
            "scorers": {"s": {"type": "autoevals", **options}},
            "rules": [{"name": "r", "scorers": ["s"]}],
        }
    )
    spec = config.scorers["s"]
    assert not spec.inline  # sync autoevals scorers run in the thread pool
    return spec.scorer


def errors_of(options: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        scorer_from(options)
    return [str(i) for i in info.value.issues]


def inp(question: str | None = "Capital of France?", answer: str | None = "Paris") -> EvalInput:
    return EvalInput(question, answer, None, "r")


def llm_options(server: FakeOpenAI, name: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "model": "judge-1",
        "base_url": server.base_url,
        "api_key": "sk-autoevals",
        "retries": 0,
        **extra,
    }


def test_valid_json_runs_locally() -> None:
    scorer = scorer_from({"name": "ValidJSON"})
    assert scorer.score(inp(answer='{"a": 1}')).value == 1
    assert scorer.score(inp(answer="{nope")).value == 0
    with pytest.raises(ScorerError, match="output is missing"):
        scorer.score(inp(answer=None))


def test_call_args_and_fields() -> None:
    scorer = scorer_from(
        {
            "name": "ValidJSON",
            "args": {"schema": {"type": "object", "required": ["a"]}},
        }
    )
    assert scorer.score(inp(answer='{"a": 1}')).value == 1
    assert scorer.score(inp(answer='{"b": 1}')).value == 0
    lev = scorer_from({"name": "Levenshtein", "fields": {"expected": "attributes['ref']"}})
    span = view(attributes={"ref": "Paris"})
    assert lev.score(EvalInput("q", "Paris", span, "r")).value == 1.0
    assert lev.score(EvalInput("q", "Parus", span, "r")).value == pytest.approx(0.8)
    with pytest.raises(ScorerError, match=r"attributes\['ref'\] is missing"):
        lev.score(EvalInput("q", "Paris", view(), "r"))


def test_factuality_against_the_fake_judge(server: FakeOpenAI) -> None:
    server.script(
        tool_call(
            "select_choice",
            {"reasons": "Same facts.", "choice": "C"},
            prompt_tokens=200,
            completion_tokens=12,
            model="judge-1-x",
        )
    )
    scorer = scorer_from(
        llm_options(server, "Factuality", fields={"expected": "attributes['ref']"})
    )
    span = view(attributes={"ref": "Paris is the capital of France."})
    score = scorer.score(EvalInput("Capital of France?", "Paris.", span, "r"))
    assert score == Score(
        1.0,
        "C",
        "Same facts.",
        {
            "online_eval.judge.request.model": "judge-1",
            "online_eval.judge.response.model": "judge-1-x",
            "online_eval.judge.usage.input_tokens": 200,
            "online_eval.judge.usage.output_tokens": 12,
        },
    )
    (request,) = server.requests
    assert request.headers["authorization"] == "Bearer sk-autoevals"
    body = request.body
    assert body["model"] == "judge-1"
    assert body["tool_choice"] == {"type": "function", "function": {"name": "select_choice"}}
    prompt = body["messages"][0]["content"]
    assert "Paris is the capital of France." in prompt and "Capital of France?" in prompt


def test_closed_qa_takes_criteria_as_a_call_argument(server: FakeOpenAI) -> None:
    server.script(tool_call("select_choice", {"reasons": "No.", "choice": "N"}))
    scorer = scorer_from(llm_options(server, "ClosedQA", args={"criteria": "Names a city"}))
    score = scorer.score(inp())
    assert (score.value, score.label, score.explanation) == (0.0, "N", "No.")
    assert "Names a city" in server.requests[0].body["messages"][0]["content"]


def test_faithfulness_reads_the_context(server: FakeOpenAI) -> None:
    def answer(request: Request) -> Reply:
        tool = request.body["tool_choice"]["function"]["name"]
        if tool == "extract_statements":
            return tool_call(tool, {"statements": ["Paris is the capital of France."]})
        verdicts = [{"statement": "Paris is the capital of France.", "reason": "ok", "verdict": 1}]
        return tool_call(tool, {"faithfulness": verdicts})

    server.respond_with(answer)
    scorer = scorer_from(
        llm_options(server, "Faithfulness", fields={"context": "attributes['docs']"})
    )
    span = view(attributes={"docs": "Paris is the capital and largest city of France."})
    score = scorer.score(EvalInput("Capital?", "Paris is the capital of France.", span, "r"))
    assert score.value == 1.0
    assert len(server.requests) == 2
    judged = server.requests[1].body["messages"][0]["content"]
    assert "Paris is the capital and largest city of France." in judged


def test_moderation_against_the_fake_server(server: FakeOpenAI) -> None:
    result = {
        "id": "modr-1",
        "model": "omni-moderation-latest",
        "results": [
            {
                "flagged": True,
                "categories": {"harassment": True},
                "category_scores": {"harassment": 0.91},
            }
        ],
    }
    server.script(Reply(body=result))
    scorer = scorer_from(
        {
            "name": "Moderation",
            "base_url": server.base_url,
            "api_key": "k",
            "retries": 0,
            "args": {"threshold": 0.5},
        }
    )
    score = scorer.score(inp(answer="you are awful"))
    assert score.value == 0
    assert score.metadata["category_scores"] == {"harassment": 0.91}
    assert server.requests[0].path == "/v1/moderations"


def test_a_rate_limited_llm_scorer_fails_instead_of_retrying_forever(server: FakeOpenAI) -> None:
    server.script(error(429, headers={"Retry-After": "0"}))
    scorer = scorer_from(llm_options(server, "Humor"))
    with pytest.raises(Exception, match="429"):
        scorer.score(inp())
    assert len(server.requests) == 1  # retries: 0, and autoevals' own loop is disarmed


def test_none_score_is_a_skip() -> None:
    from otel_online_eval import ScorerSkipped
    from otel_online_eval.scorers._autoevals import AutoevalsScorer, _Usage

    class Result:
        score = None
        metadata: dict[str, Any] = {}

    adapter = AutoevalsScorer("x", object(), {})
    with pytest.raises(ScorerSkipped, match="returned no score"):
        adapter._to_score(Result(), _Usage())


def test_through_the_processor_in_the_thread_pool(server: FakeOpenAI) -> None:
    config = parse_config(
        textwrap.dedent(
            """\
            scorers:
              json_ok: {type: autoevals, name: ValidJSON}
            rules: [{name: r, scorers: [json_ok], apply_to: {span_names: [chat]}}]
            """
        )
    )
    evals = InMemorySpanExporter()
    processor = OnlineEvalSpanProcessor(
        config, exporter=evals, span_processor=SimpleSpanProcessor(evals)
    )
    provider = TracerProvider()
    provider.add_span_processor(processor)
    out = json.dumps([{"role": "assistant", "parts": [{"type": "text", "content": '{"a": 1}'}]}])
    with provider.get_tracer("t").start_as_current_span(
        "chat", attributes={"gen_ai.output.messages": out}
    ):
        pass
    assert processor.force_flush(10_000)
    (score,) = [s for s in evals.get_finished_spans() if s.name == "score json_ok"]
    assert (score.attributes or {})["gen_ai.evaluation.score.value"] == 1.0
    provider.shutdown()


# --- configuration errors -------------------------------------------------------------------


def test_unknown_scorer_name() -> None:
    (message,) = errors_of({"name": "Nonsense"})
    assert "scorers.s.name: autoevals has no scorer 'Nonsense'; it has" in message
    assert "'Factuality'" in message and "'ValidJSON'" in message


def test_an_llm_scorer_needs_a_model_and_a_key(
    server: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    (message,) = errors_of({"name": "Factuality", "base_url": server.base_url, "api_key": "k"})
    assert "set 'model'" in message
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    (message,) = errors_of({"name": "Factuality", "model": "m", "base_url": server.base_url})
    assert "set 'api_key'" in message


def test_bad_args_and_fields() -> None:
    (message,) = errors_of({"name": "ValidJSON", "args": "schema"})
    assert "args: must be a mapping of arguments, got a string" in message
    (message,) = errors_of({"name": "ValidJSON", "fields": {"1x": "output"}})
    assert "fields.1x: argument name '1x' must be an identifier" in message
    (message,) = errors_of({"name": "Levenshtein", "fields": {"expected": "attributes['x' ="}})
    assert "fields.expected: not a valid field expression" in message
    (message,) = errors_of({"name": "ValidJSON", "model": "m"})
    assert "model: autoevals ValidJSON takes no model" in message


def test_missing_package_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "autoevals", None)
    (message,) = errors_of({"name": "ValidJSON"})
    assert "scorers.s.type:" in message
    assert "pip install 'otel-online-eval[autoevals]'" in message
