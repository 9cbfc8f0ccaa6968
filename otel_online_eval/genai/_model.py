"""What extraction produces: messages, tool calls, tool results and the fields of a span."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = [
    "INPUT_TEXT_MODES",
    "ExtractOptions",
    "ExtractSettings",
    "GenAIFields",
    "Message",
    "ToolCall",
    "ToolResult",
    "as_text",
]

INPUT_TEXT_MODES = ("last_user", "conversation")
"""How the ``input`` text is made from the input messages: the last user message's text, or the
whole conversation (one ``role: text`` line per message)."""


def as_text(value: Any) -> str:
    """A value as text: strings as they are, None as "", anything else as compact JSON."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError, RecursionError):
        return str(value)


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A tool (function) the model asked to call.

    Attributes:
        name: the tool's name.
        arguments: the parsed JSON value when the span carried valid JSON (usually a dict), the
            raw string otherwise, None when the span had none.
        id: the call id that the tool result refers to, when the span has one.
    """

    name: str
    arguments: Any = None
    id: str | None = None


@dataclass(frozen=True, slots=True)
class ToolResult:
    """What a tool returned, as it was sent back to the model.

    Attributes:
        result: a string, or the structure the span carried.
        id: the id of the call it answers, when the span has one.
        name: the tool's name, when the span has one.
    """

    result: Any = None
    id: str | None = None
    name: str | None = None

    @property
    def text(self) -> str:
        return as_text(self.result)


@dataclass(frozen=True, slots=True)
class Message:
    """One chat message.

    Attributes:
        role: ``system``, ``user``, ``assistant``, ``tool``, ... as the span named it.
        text: its text parts joined by newlines; for a tool message without text, the text of
            its tool results.
        parts: the message as OpenTelemetry GenAI parts (``{"type": "text", "content": ...}``,
            ``{"type": "tool_call", "id", "name", "arguments"}``,
            ``{"type": "tool_call_response", "id", "response"}``; other parts as found).
        tool_calls: the tool calls it makes.
        tool_results: the tool results it carries.
        finish_reason: why the model stopped, for output messages that say so.
    """

    role: str
    text: str = ""
    parts: tuple[Mapping[str, Any], ...] = ()
    tool_calls: tuple[ToolCall, ...] = ()
    tool_results: tuple[ToolResult, ...] = ()
    finish_reason: str | None = None


@dataclass(frozen=True, slots=True)
class GenAIFields:
    """What a span says about its LLM call; every field may be empty.

    Attributes:
        input: the input text: the last user message unless configured otherwise.
        output: the output text: the assistant's text; when it only called tools, the calls as
            JSON (``[{"name": ..., "arguments": ...}]``).
        model: the response model, else the request model.
        operation: the operation (``chat``, ``execute_tool``, ``ai.generateText``, ...).
        system_instructions: the system prompt.
        input_messages: the whole conversation sent to the model.
        output_messages: what the model answered (one message per choice).
        input_tokens: input (prompt) token usage.
        output_tokens: output (completion) token usage.
        convention: the preset the content came from (``genai``, ``openinference``, ...;
            ``custom`` for the project's own keys).
        extra: convention-specific values. ``tool_error``: a tool span whose result says the
            tool failed (a LangChain ``ToolMessage`` with ``status: error``) has the result's
            text here.
        tool_calls: the tool calls in the output.
        tool_definitions: the tools offered to the model, ``{"name", "description",
            "parameters"}`` each, as far as the span says.
    """

    input: str | None = None
    output: str | None = None
    model: str | None = None
    operation: str | None = None
    system_instructions: str | None = None
    input_messages: tuple[Message, ...] = ()
    output_messages: tuple[Message, ...] = ()
    input_tokens: int | None = None
    output_tokens: int | None = None
    convention: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    tool_calls: tuple[ToolCall, ...] = ()
    tool_definitions: tuple[Mapping[str, Any], ...] = ()

    @property
    def messages(self) -> tuple[Message, ...]:
        """The input messages followed by the output messages."""
        return self.input_messages + self.output_messages

    @property
    def tool_results(self) -> tuple[ToolResult, ...]:
        """The tool results sent to the model (in the input messages)."""
        return tuple(r for m in self.input_messages for r in m.tool_results)

    @property
    def has_content(self) -> bool:
        """True when an input, an output or a message was found."""
        return (
            self.input is not None
            or self.output is not None
            or bool(self.input_messages)
            or bool(self.output_messages)
        )


class ExtractSettings(Protocol):
    """What :func:`~otel_online_eval.genai.extract` can be told (``ExtractConfig`` is one)."""

    @property
    def presets(self) -> Sequence[str] | None: ...

    @property
    def input(self) -> Sequence[str]: ...

    @property
    def output(self) -> Sequence[str]: ...

    @property
    def input_text(self) -> str: ...


@dataclass(frozen=True, slots=True)
class ExtractOptions:
    """Extraction settings for code (the YAML ``extract:`` section loads into ``ExtractConfig``).

    Attributes:
        presets: conventions to try, in order; None: every preset, in the default order.
        input: the project's own attribute keys holding the input, tried before any preset.
        output: the same for the output.
        input_text: ``last_user`` or ``conversation`` (see :data:`INPUT_TEXT_MODES`).
    """

    presets: tuple[str, ...] | None = None
    input: tuple[str, ...] = ()
    output: tuple[str, ...] = ()
    input_text: str = "last_user"
