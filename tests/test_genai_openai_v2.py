"""The official OpenTelemetry instrumentation (``opentelemetry-instrumentation-openai-v2``):
GenAI semantic conventions, content on the span (``gen_ai.input.messages`` and
``gen_ai.output.messages``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

from tests.instrumentation.harness import Capture, ClientContract, instrumented

ENV = {
    # Content on spans; the latest conventions (the library's own switch for them).
    "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "span_only",
    "OTEL_SEMCONV_STABILITY_OPT_IN": "gen_ai_latest_experimental",
}


@pytest.fixture(scope="module")
def capture() -> Iterator[Capture]:
    with instrumented(OpenAIInstrumentor, ENV) as cap:
        yield cap


class TestOpenAIV2(ClientContract):
    convention = "genai"
    records_tools = False  # it does not record gen_ai.tool.definitions
