"""Spans that look like a GenAI operation but carry no prompt or answer: content capture is off.

The instrumentations record message content only when told to (it is personal data), and by
default they are not: ``opentelemetry-instrumentation-openai-v2`` as its README sets it up makes
chat spans with the model, the token usage and the finish reasons, and no messages. A rule
whose scorers read the input or the output then has nothing to score, and its filter
(``output IS NOT NULL``) or its scorers ("output is missing") say so only obliquely.
:func:`no_content` recognises such a span, so that the engine counts it and says why once, and
``test`` / ``explain`` show the reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from otel_online_eval.spanview import SpanView

__all__ = ["CONTENT_CAPTURE_HINT", "no_content"]

CONTENT_CAPTURE_HINT = (
    "Content capture is probably off in the instrumentation that made it; turn it on with "
    "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=span_only "
    "(opentelemetry-instrumentation-openai-v2 and the other opentelemetry-util-genai "
    "instrumentations; their older releases take true, some with "
    "OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental), "
    "TRACELOOP_TRACE_CONTENT=true (OpenLLMetry), "
    "OPENINFERENCE_HIDE_INPUTS and OPENINFERENCE_HIDE_OUTPUTS unset or false (OpenInference), "
    "or experimental_telemetry recordInputs / recordOutputs true (Vercel AI SDK)."
)
"""What to do about it, naming the switch of every instrumentation the presets know."""

# Attributes every GenAI instrumentation sets whether or not it records content.
_MARKERS = (
    "gen_ai.operation.name",
    "gen_ai.system",
    "gen_ai.provider.name",
    "gen_ai.request.model",
    "llm.request.type",  # OpenLLMetry
    "ai.operationId",  # Vercel AI SDK
    "ai.model.id",
)
_OPENINFERENCE_KINDS = frozenset({"LLM", "AGENT", "CHAIN"})
# Operations that have no prompt or answer text even with content capture on.
_NO_TEXT_OPERATIONS = frozenset({"embeddings", "embedding", "create_embedding"})


def _marker(attrs: Mapping[str, Any]) -> str | None:
    kind = attrs.get("openinference.span.kind")
    if isinstance(kind, str) and kind.upper() in _OPENINFERENCE_KINDS:
        return f"openinference.span.kind={kind!r}"
    operation = attrs.get("gen_ai.operation.name", attrs.get("llm.request.type"))
    if isinstance(operation, str) and operation.lower() in _NO_TEXT_OPERATIONS:
        return None
    for key in _MARKERS:
        value = attrs.get(key)
        if value is not None and value != "":
            return f"{key}={value!r}"
    return None


def no_content(view: SpanView) -> str | None:
    """The GenAI marker of a span that looks like an LLM operation yet has no content.

    Args:
        view: the span.

    Returns:
        None when the span has an input, an output or messages (in any preset the view
        extracts with), or does not look like a GenAI operation; otherwise the attribute that
        makes it look like one, e.g. ``gen_ai.operation.name='chat'``.
    """
    if view.genai.has_content:
        return None
    attrs = view.attributes
    if not isinstance(attrs, Mapping):
        return None
    return _marker(attrs)
