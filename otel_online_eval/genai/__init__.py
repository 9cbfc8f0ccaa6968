"""Where a span keeps its prompt, answer, tool calls, model and token usage.

Every instrumentation library writes them somewhere else. Each convention is a *preset*, a reader
from a span (attributes and events) to :class:`GenAIFields`; :func:`extract` tries the
project's own keys first, then the presets in order, and the first that finds content wins:

=================  ===============================================================================
``genai``          OpenTelemetry GenAI, current: ``gen_ai.input.messages`` / ``.output.messages`` /
                   ``gen_ai.system_instructions`` (JSON with ``parts``), ``gen_ai.tool.call.*``
``genai_legacy``   OpenTelemetry GenAI, older: span events ``gen_ai.user.message`` ...
                   ``gen_ai.choice``; ``gen_ai.prompt`` / ``gen_ai.completion`` strings
``openllmetry``    OpenLLMetry / Traceloop: ``gen_ai.prompt.{i}.*``, ``gen_ai.completion.{i}.*``,
                   ``llm.request.functions.{i}.*``, ``traceloop.entity.input`` / ``.output``
``openinference``  OpenInference (Arize Phoenix): ``llm.input_messages.{i}.message.*``,
                   ``input.value`` / ``output.value``, ``llm.token_count.*``
``vercel_ai``      Vercel AI SDK: ``ai.prompt.messages``, ``ai.response.text`` / ``.toolCalls``,
                   ``ai.toolCall.*``, ``ai.usage.*``
``braintrust``     ``braintrust.input_json`` / ``output_json`` / ``input`` / ``output``
``langfuse``       ``langfuse.observation.input`` / ``.output``
``logfire``        ``request_data`` / ``response_data``, ``events``
=================  ===============================================================================

The input text is the last user message (or the whole conversation, ``input_text:
conversation``); the output text is the assistant's text (its tool calls as JSON when it only
called tools). JSON strings, plain strings and structured values all work; invalid or truncated
JSON is kept as the raw string; nothing here raises on any span. See ``docs/conventions.md``.

:func:`no_content` tells a span that looks like an LLM call but carries no content (the
instrumentation's content capture is off) from one that is not an LLM call at all.
"""

from __future__ import annotations

from otel_online_eval.genai._content import CONTENT_CAPTURE_HINT, no_content
from otel_online_eval.genai._extract import extract
from otel_online_eval.genai._model import (
    INPUT_TEXT_MODES,
    ExtractOptions,
    ExtractSettings,
    GenAIFields,
    Message,
    ToolCall,
    ToolResult,
)
from otel_online_eval.genai._presets import PRESETS

__all__ = [
    "CONTENT_CAPTURE_HINT",
    "INPUT_TEXT_MODES",
    "PRESETS",
    "ExtractOptions",
    "ExtractSettings",
    "GenAIFields",
    "Message",
    "ToolCall",
    "ToolResult",
    "extract",
    "no_content",
]
