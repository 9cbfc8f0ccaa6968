"""llm_judge from YAML to eval spans through OnlineEvalSpanProcessor, config errors with
file:line, and judge HTTP calls that never trace themselves back into the evaluation."""

from __future__ import annotations

import asyncio
import json
import re
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from otel_online_eval import ConfigError, OnlineEvalSpanProcessor, load_config
from tests.fake_openai import FakeOpenAI, Reply, error, quiet, text, tool_call

QUESTION = "What is the capital of France?"
ANSWER = "Paris is the capital of France."


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


def chat_attrs(prompt: str = QUESTION, output: str = ANSWER) -> dict[str, Any]:
    return {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "app-model",
        "gen_ai.input.messages": json.dumps(
            [{"role": "user", "parts": [{"type": "text", "content": prompt}]}]
        ),
        "gen_ai.output.messages": json.dumps(
            [{"role": "assistant", "parts": [{"type": "text", "content": output}]}]
        ),
    }


def config_text(base_url: str, judge_options: str = "", scorer_timeout: str = "") -> str:
    return textwrap.dedent(
        f"""\
        scorers:
          relevance:
            type: llm_judge
            base_url: {base_url}
            model: judge-1
            api_key: ${{env:JUDGE_KEY}}
            template: relevance
        {textwrap.indent(judge_options, "    ")}
        {scorer_timeout}
        rules:
          - name: quality
            apply_to: {{span_names: [chat]}}
            scorers: [relevance]
        """
    )


@contextmanager
def processor_for(
    tmp_path: Path, text_: str, env: dict[str, str] | None = None
) -> Iterator[tuple[TracerProvider, OnlineEvalSpanProcessor, InMemorySpanExporter]]:
    path = tmp_path / "judge.yaml"
    path.write_text(text_)
    config = load_config(path, env=env if env is not None else {"JUDGE_KEY": "sk-e2e-secret"})
    evals = InMemorySpanExporter()
    processor = OnlineEvalSpanProcessor(
        config, exporter=evals, span_processor=SimpleSpanProcessor(evals)
    )
    provider = TracerProvider(resource=Resource.create({"service.name": "judged-app"}))
    provider.add_span_processor(processor)
    try:
        yield provider, processor, evals
    finally:
        provider.shutdown()


def score_spans(evals: InMemorySpanExporter) -> list[ReadableSpan]:
    return [s for s in evals.get_finished_spans() if s.name.startswith("score ")]


def test_yaml_judge_to_score_span(tmp_path: Path, server: FakeOpenAI) -> None:
    server.script(
        tool_call(
            "select_choice",
            {"reasons": "It names the capital.", "choice": "relevant"},
            model="judge-1-0613",
            prompt_tokens=120,
            completion_tokens=9,
        )
    )
    with processor_for(tmp_path, config_text(server.base_url)) as (provider, processor, evals):
        with provider.get_tracer("app").start_as_current_span("chat", attributes=chat_attrs()):
            pass
        assert processor.force_flush(10_000)
        (score,) = score_spans(evals)
        attrs = dict(score.attributes or {})
        assert score.status.status_code is StatusCode.UNSET
        assert attrs["gen_ai.evaluation.name"] == "relevance"
        assert attrs["gen_ai.evaluation.score.value"] == 1.0
        assert attrs["gen_ai.evaluation.score.label"] == "relevant"
        assert attrs["gen_ai.evaluation.explanation"] == "It names the capital."
        assert attrs["online_eval.judge.request.model"] == "judge-1"
        assert attrs["online_eval.judge.response.model"] == "judge-1-0613"
        assert attrs["online_eval.judge.usage.input_tokens"] == 120
        assert attrs["online_eval.judge.usage.output_tokens"] == 9
        assert attrs["online_eval.metadata.template"] == "relevance"
        tokens = processor.stats().tokens
        assert tokens == {
            ("quality", "relevance", "judge-1", "input"): 120,
            ("quality", "relevance", "judge-1", "output"): 9,
        }
    (request,) = server.requests
    assert request.headers["authorization"] == "Bearer sk-e2e-secret"
    user = request.body["messages"][1]["content"]
    assert QUESTION in user and ANSWER in user


def test_judge_failures_and_skips_on_score_spans(tmp_path: Path, server: FakeOpenAI) -> None:
    server.script(error(401, "bad key"))
    options = "limits: {auth_pause_s: 60}"
    with processor_for(tmp_path, config_text(server.base_url, options)) as (p, processor, evals):
        tracer = p.get_tracer("app")
        for _ in range(3):
            with tracer.start_as_current_span("chat", attributes=chat_attrs()):
                pass
            assert processor.force_flush(10_000)
        first, *rest = score_spans(evals)
        assert first.status.status_code is StatusCode.ERROR
        assert "HTTP 401" in (first.status.description or "")
        for span in rest:
            assert span.status.status_code is StatusCode.UNSET
            assert "paused" in str((span.attributes or {})["online_eval.skipped"])
        scores = processor.stats().scores
        assert scores[("quality", "relevance", "error")] == 1
        assert scores[("quality", "relevance", "skipped")] == 2
    assert len(server.requests) == 1


def test_malformed_answer_is_recorded_as_an_error(tmp_path: Path, server: FakeOpenAI) -> None:
    server.script(text("I think it is relevant."))
    with processor_for(tmp_path, config_text(server.base_url)) as (provider, processor, evals):
        with provider.get_tracer("app").start_as_current_span("chat", attributes=chat_attrs()):
            pass
        assert processor.force_flush(10_000)
        (score,) = score_spans(evals)
        assert score.status.status_code is StatusCode.ERROR
        assert "did not call select_choice" in (score.status.description or "")
        assert "gen_ai.evaluation.score.value" not in (score.attributes or {})
        (event,) = score.events
        assert event.name == "exception"


def test_the_engine_timeout_caps_a_slow_judge(tmp_path: Path, server: FakeOpenAI) -> None:
    body = tool_call("select_choice", {"reasons": "x", "choice": "relevant"}).body
    server.script(Reply(body=body, delay_s=1.5))
    options = "limits: {timeout_s: 0.3, retries: 0}"
    text_ = config_text(server.base_url, options, "    timeout_s: 0.4")
    with processor_for(tmp_path, text_) as (provider, processor, evals):
        with provider.get_tracer("app").start_as_current_span("chat", attributes=chat_attrs()):
            pass
        assert processor.force_flush(10_000)
        (score,) = score_spans(evals)
        assert score.status.status_code is StatusCode.ERROR
        assert re.search(r"no answer from .* within 0\.\d+s", score.status.description or "")


def test_the_client_is_closed_at_shutdown(tmp_path: Path, server: FakeOpenAI) -> None:
    server.script(tool_call("select_choice", {"reasons": "x", "choice": "relevant"}))
    with processor_for(tmp_path, config_text(server.base_url)) as (provider, processor, _):
        with provider.get_tracer("app").start_as_current_span("chat", attributes=chat_attrs()):
            pass
        assert processor.force_flush(10_000)
        (judge,) = [u.spec.scorer for rule in processor.rules for u in rule.scorers]
        (state,) = judge._loops.values()  # type: ignore[attr-defined]
        transport = state.transport
        assert not transport.is_closed
    assert transport.is_closed  # the engine's loop closed its async generators
    assert not judge._loops  # type: ignore[attr-defined]


# --- config errors with file:line -----------------------------------------------------------


def load_errors(tmp_path: Path, text_: str) -> list[str]:
    path = tmp_path / "bad.yaml"
    path.write_text(text_)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={"JUDGE_KEY": "k"})
    return [str(issue) for issue in info.value.issues]


def test_unknown_template_is_reported_with_its_line(tmp_path: Path) -> None:
    text_ = config_text("http://127.0.0.1:9/v1").replace("template: relevance", "template: nope")
    (message,) = load_errors(tmp_path, text_)
    assert message.startswith(f"{tmp_path / 'bad.yaml'}:7:")
    assert "scorers.relevance.template: unknown template 'nope'; built-in templates:" in message
    assert "faithfulness" in message and "relevance" in message


@pytest.mark.parametrize(
    ("limits", "line", "message"),
    [
        ("{concurrency: 0}", 8, "limits.concurrency: must be between 1 and 10000, got 0"),
        ("{retries: many}", 8, "limits.retries: must be a whole number, got 'many'"),
        ("{burst: 3}", 8, "limits.burst: unknown key 'burst'; expected one of:"),
        ("{timeout_s: 45}", 8, "limits.timeout_s: one attempt (45s) may not take longer than"),
        ("{requests_per_second: -1}", 8, "limits.requests_per_second: must be at least"),
        ("{backoff_s: 2, max_backoff_s: 1}", 8, "limits.max_backoff_s: must be at least"),
    ],
)
def test_bad_limits_are_reported_with_their_line(
    tmp_path: Path, limits: str, line: int, message: str
) -> None:
    errors = load_errors(tmp_path, config_text("http://127.0.0.1:9/v1", f"limits: {limits}"))
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"{tmp_path / 'bad.yaml'}:{line}:")
    assert f"scorers.relevance.{message}" in errors[0]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            "mode: stream",
            "mode: unknown value 'stream'; expected one of: tools, json_schema",
        ),
        (
            "context: \"attributes['x' =\"",
            "context: not a valid field expression",
        ),
        (
            "variables: {input: \"attributes['x']\"}",
            "variables.input: 'input' is a built-in placeholder",
        ),
    ],
)
def test_bad_judge_options(tmp_path: Path, options: str, message: str) -> None:
    errors = load_errors(tmp_path, config_text("http://127.0.0.1:9/v1", options))
    assert any(f"scorers.relevance.{message}" in e for e in errors), errors


def test_template_problems(tmp_path: Path) -> None:
    base = config_text("http://127.0.0.1:9/v1")
    faithfulness = base.replace("template: relevance", "template: faithfulness")
    (message,) = load_errors(tmp_path, faithfulness)
    assert "uses {{context}}: set the scorer's 'context' option" in message
    inline = base.replace(
        "template: relevance",
        'template: {prompt: "Is {{output}} ok? {{attributes[}}", choice_scores: {Y: 1, N: 2}}',
    )
    errors = load_errors(tmp_path, inline)
    assert any("the score of choice 'N' must be between 0 and 1, got 2" in e for e in errors)
    bad_expr = base.replace(
        "template: relevance",
        'template: {prompt: "Is {{output}} ok? {{nonsense field}}", choice_scores: {Y: 1}}',
    )
    (message,) = load_errors(tmp_path, bad_expr)
    assert "placeholder {{nonsense field}} is neither a known name" in message
    missing = base.replace("template: relevance", "template_file: missing.yaml")
    (message,) = load_errors(tmp_path, missing)
    assert "template_file: cannot read" in message and "missing.yaml" in message
    both = base.replace("template: relevance", "template: relevance\n    template_file: x.yaml")
    (message,) = load_errors(tmp_path, both)
    assert "give either 'template' or 'template_file', not both" in message


def test_missing_endpoint_and_model(tmp_path: Path) -> None:
    text_ = textwrap.dedent(
        """\
        scorers:
          judge: {type: llm_judge, template: relevance, base_url: "ftp://x"}
        rules: [{name: r, scorers: [judge]}]
        """
    )
    errors = load_errors(tmp_path, text_)
    assert any("scorers.judge: 'model' is required" in e for e in errors), errors
    assert any("base_url: must start with http:// or https://" in e for e in errors), errors


def test_template_file_relative_to_the_config(tmp_path: Path, server: FakeOpenAI) -> None:
    (tmp_path / "tone.yaml").write_text(
        textwrap.dedent(
            """\
            description: polite or not
            prompt: |
              Is this answer polite?
              {{output}}
            choice_scores: {polite: 1, rude: 0}
            """
        )
    )
    server.script(tool_call("select_choice", {"reasons": "Kind words.", "choice": "polite"}))
    text_ = config_text(server.base_url).replace("template: relevance", "template_file: tone.yaml")
    with processor_for(tmp_path, text_) as (provider, processor, evals):
        with provider.get_tracer("app").start_as_current_span("chat", attributes=chat_attrs()):
            pass
        assert processor.force_flush(10_000)
        (score,) = score_spans(evals)
        assert (score.attributes or {})["gen_ai.evaluation.score.label"] == "polite"
        assert (score.attributes or {})["online_eval.metadata.template"] == "tone"
    enum = server.requests[0].body["tools"][0]["function"]["parameters"]["properties"]["choice"]
    assert enum["enum"] == ["polite", "rude"]


@pytest.mark.parametrize(
    "name",
    [
        "relevance",
        "helpfulness",
        "toxicity",
        "safety",
        "coherence",
        "conciseness",
        "refusal",
        "language_match",
        "faithfulness",
    ],
)
def test_every_builtin_template_loads_and_renders(name: str, server: FakeOpenAI) -> None:
    import asyncio

    from otel_online_eval.scorers.base import EvalInput
    from otel_online_eval.scorers.judge import BUILTIN_TEMPLATES, llm_judge

    assert name in BUILTIN_TEMPLATES
    options: dict[str, Any] = {"template": name}
    if name == "faithfulness":
        options["context"] = "input"
    judge = llm_judge(name, base_url=server.base_url, model="m", **options)
    choice = judge.template.choices[0]
    server.script(tool_call("select_choice", {"reasons": "r", "choice": choice}))
    score = asyncio.run(judge.score(EvalInput(QUESTION, ANSWER, None, "r")))
    assert score.value == 1.0 and score.label == choice
    assert all(0 <= v <= 1 for v in judge.template.choice_scores.values())
    assert judge.template.description


# --- judge calls are never traced back into the evaluation ----------------------------------


def test_judge_http_calls_are_not_traced_even_with_httpx_instrumented(
    tmp_path: Path, server: FakeOpenAI
) -> None:
    import httpx
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    server.script(tool_call("select_choice", {"reasons": "r", "choice": "relevant"}))
    # Every span is evaluated (no apply_to): an httpx span from a judge call would itself be
    # judged, and so on.
    text_ = config_text(server.base_url).replace("    apply_to: {span_names: [chat]}\n", "")
    app = InMemorySpanExporter()
    instrumentor = HTTPXClientInstrumentor()
    with processor_for(tmp_path, text_) as (provider, processor, evals):
        provider.add_span_processor(SimpleSpanProcessor(app))
        instrumentor.instrument(tracer_provider=provider)
        try:
            # The instrumentation works: the application's own httpx call is traced...
            httpx.post(server.base_url + "/chat/completions", json={"model": "app"})
            assert processor.force_flush(10_000)
            (client_span,) = app.get_finished_spans()
            assert client_span.name == "POST"
            app.clear()
            evals.clear()
            server.requests.clear()
            # ...but the judge's calls are not, whichever loop or thread makes them.
            tracer = provider.get_tracer("app")
            for _ in range(3):
                with tracer.start_as_current_span("chat", attributes=chat_attrs()):
                    pass
            assert processor.force_flush(10_000)
        finally:
            instrumentor.uninstrument()
        assert [s.name for s in app.get_finished_spans()] == ["chat"] * 3
        scored = {
            (s.attributes or {}).get("online_eval.span.name")
            for s in evals.get_finished_spans()
            if s.name.startswith("eval ")
        }
        assert scored == {"chat"}
        assert len(score_spans(evals)) == 3
        assert len(server.requests) == 3


def test_judge_http_calls_are_not_traced_even_with_aiohttp_instrumented(
    tmp_path: Path, server: FakeOpenAI
) -> None:
    """The judge's transport is aiohttp: with the application's aiohttp client instrumented,
    the application's own calls are traced and the judge's are not."""
    aiohttp = pytest.importorskip("aiohttp")
    instrumentation = pytest.importorskip("opentelemetry.instrumentation.aiohttp_client")

    async def app_call() -> int:
        async with aiohttp.ClientSession() as session:
            url = server.base_url + "/chat/completions"
            async with session.post(url, json={"model": "app"}) as response:
                await response.read()
                return response.status

    server.script(tool_call("select_choice", {"reasons": "r", "choice": "relevant"}))
    text_ = config_text(server.base_url).replace("    apply_to: {span_names: [chat]}\n", "")
    app = InMemorySpanExporter()
    instrumentor = instrumentation.AioHttpClientInstrumentor()
    with processor_for(tmp_path, text_) as (provider, processor, evals):
        provider.add_span_processor(SimpleSpanProcessor(app))
        instrumentor.instrument(tracer_provider=provider)
        try:
            # The instrumentation works: the application's own aiohttp call is traced...
            assert asyncio.run(app_call()) == 200
            assert processor.force_flush(10_000)
            (client_span,) = app.get_finished_spans()
            assert client_span.name == "POST"
            app.clear()
            evals.clear()
            server.requests.clear()
            # ...but the judge's calls are not.
            tracer = provider.get_tracer("app")
            for _ in range(3):
                with tracer.start_as_current_span("chat", attributes=chat_attrs()):
                    pass
            assert processor.force_flush(10_000)
        finally:
            instrumentor.uninstrument()
        assert [s.name for s in app.get_finished_spans()] == ["chat"] * 3
        assert len(score_spans(evals)) == 3
        assert all(s.status.status_code is not StatusCode.ERROR for s in score_spans(evals))
        assert len(server.requests) == 3


def test_the_judges_session_drops_the_aiohttp_instrumentation_even_without_suppression(
    server: FakeOpenAI,
) -> None:
    """Called outside the engine (no suppression in the context), the transport still makes no
    span: it removes the instrumentation's trace config from its session."""
    instrumentation = pytest.importorskip("opentelemetry.instrumentation.aiohttp_client")
    from otel_online_eval.scorers.judge._http import AiohttpTransport

    app = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(app))
    instrumentor = instrumentation.AioHttpClientInstrumentor()

    async def post() -> int:
        transport = AiohttpTransport(
            server.base_url + "/chat/completions", concurrency=1, max_body=1 << 20
        )
        try:
            return (await transport.post(b'{"model": "m"}', 5)).status
        finally:
            await transport.aclose()

    instrumentor.instrument(tracer_provider=provider)
    try:
        assert asyncio.run(post()) == 200
    finally:
        instrumentor.uninstrument()
        provider.shutdown()
    assert app.get_finished_spans() == ()
    assert len(server.requests) == 1
