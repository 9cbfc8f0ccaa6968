"""Arize's OpenInference instrumentation (``openinference-instrumentation-openai``):
``llm.input_messages.{i}.message.*``, ``input.value`` / ``output.value``, ``llm.token_count.*``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from openinference.instrumentation.openai import OpenAIInstrumentor

from tests.instrumentation.harness import Capture, ClientContract, instrumented

ENV = {"OPENINFERENCE_HIDE_INPUTS": "false", "OPENINFERENCE_HIDE_OUTPUTS": "false"}


@pytest.fixture(scope="module")
def capture() -> Iterator[Capture]:
    with instrumented(OpenAIInstrumentor, ENV) as cap:
        yield cap


class TestOpenInference(ClientContract):
    convention = "openinference"
