"""Traceloop's OpenLLMetry instrumentation (``opentelemetry-instrumentation-openai``) at 0.54.0,
the last release that writes the flattened keys ``gen_ai.prompt.{i}.*`` /
``gen_ai.completion.{i}.*`` (0.55 moved to ``gen_ai.input.messages``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.instrumentation.openai import OpenAIInstrumentor

from tests.instrumentation.harness import Capture, ClientContract, instrumented

ENV = {"TRACELOOP_TRACE_CONTENT": "true"}


@pytest.fixture(scope="module")
def capture() -> Iterator[Capture]:
    # 0.54.0's uninstrument() unwraps nothing: it calls the instrumentation utils' unwrap()
    # with ("module", "Class.method") where ("module.Class", "method") is expected; the
    # harness removes the wrappers it leaves.
    with instrumented(OpenAIInstrumentor, ENV, leaves_wrappers=True) as cap:
        yield cap


class TestOpenLLMetry(ClientContract):
    convention = "openllmetry"
