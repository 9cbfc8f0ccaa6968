"""The ``extract:`` section: presets, the project's own keys, validation, and how the settings
reach extraction through the span processor."""

from __future__ import annotations

import json
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_online_eval import ConfigError, EvalInput, OnlineEvalSpanProcessor, Rule, parse_config
from otel_online_eval.config import ExtractConfig
from otel_online_eval.genai import extract
from tests.spans import view


def extract_config(section: Any) -> ExtractConfig:
    return parse_config(f"extract: {json.dumps(section)}\n").extract


def problems(section: Any) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(f"extract: {json.dumps(section)}\n", source="c.yaml")
    return [f"{i.path}: {i.message}" for i in caught.value.issues]


def test_defaults() -> None:
    cfg = parse_config("rules: []\n").extract
    assert cfg == ExtractConfig(None, (), (), "last_user")
    assert cfg.is_default


def test_every_key() -> None:
    cfg = extract_config(
        {
            "presets": ["openinference", "genai"],
            "input": ["app.question", "app.prompt"],
            "output": "app.answer",
            "input_text": "conversation",
        }
    )
    assert cfg == ExtractConfig(
        ("openinference", "genai"), ("app.question", "app.prompt"), ("app.answer",), "conversation"
    )
    assert not cfg.is_default


def test_own_keys_without_presets() -> None:
    cfg = extract_config({"presets": [], "input": ["app.q"]})
    assert (cfg.presets, cfg.input) == ((), ("app.q",))
    g = extract(view(attributes={"app.q": "mine", "gen_ai.prompt": "not read"}), cfg)
    assert (g.input, g.convention) == ("mine", "custom")


def test_unknown_preset_lists_the_known_ones() -> None:
    [message] = problems({"presets": ["genai", "openlmetry"]})
    assert message == (
        "extract.presets[1]: unknown preset 'openlmetry'; known presets: genai, genai_legacy, "
        "openllmetry, openinference, vercel_ai, braintrust, langfuse, logfire"
    )


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ({"presets": ["genai", "genai"]}, ["extract.presets[1]: preset 'genai' is listed twice"]),
        ({"presets": []}, ["extract.presets: must name at least one preset (or give 'input'/"]),
        ({"presets": "genai"}, ["extract.presets: must be a list, got a string"]),
        ({"input": ["ok", 3]}, ["extract.input[1]: must be a string, got a number"]),
        ({"output": [""]}, ["extract.output[0]: must be an attribute key, got an empty string"]),
        ({"input_text": "first"}, ["extract.input_text: unknown value 'first'; expected one of"]),
        ({"inputs": ["x"]}, ["extract.inputs: unknown key 'inputs'; expected one of: input,"]),
    ],
)
def test_invalid_sections_name_the_path(section: Any, expected: list[str]) -> None:
    found = problems(section)
    assert len(found) == len(expected), found
    for message, start in zip(found, expected, strict=True):
        assert message.startswith(start), message


def test_errors_have_file_and_line() -> None:
    text = "rules: []\nextract:\n  presets: [genai, nope]\n"
    with pytest.raises(ConfigError, match=r"c\.yaml:3:\d+: extract\.presets\[1\]: unknown preset"):
        parse_config(text, source="c.yaml")


def test_the_processor_extracts_with_the_configured_keys() -> None:
    seen: list[tuple[str | None, str | None]] = []

    def record(inp: EvalInput) -> float:
        seen.append((inp.input, inp.output))
        return 1.0

    config = parse_config(
        {"extract": {"presets": ["genai"], "input": ["app.question"], "output": ["app.answer"]}}
    )
    rule = Rule.create("r", [record], span_names=["chat"], filter="input = 'from the app'")
    processor = OnlineEvalSpanProcessor(config, rules=[rule], exporter=InMemorySpanExporter())
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("test")
    try:
        with tracer.start_as_current_span("chat") as span:
            span.set_attribute("app.question", "from the app")
            span.set_attribute("app.answer", "the answer")
            span.set_attribute("gen_ai.prompt", "legacy prompt, not a configured preset")
        with tracer.start_as_current_span("chat") as span:
            span.set_attribute("gen_ai.prompt", "filtered out: no app.question")
        assert processor.force_flush(10_000)
    finally:
        provider.shutdown()
    assert seen == [("from the app", "the answer")]
