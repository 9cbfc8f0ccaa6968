"""Where a span keeps its prompt, answer, model and token usage.

This module reads the OpenTelemetry GenAI semantic conventions (current form):
``gen_ai.input.messages`` / ``gen_ai.output.messages`` / ``gen_ai.system_instructions`` as JSON
with ``parts``, ``gen_ai.request.model`` / ``gen_ai.response.model``, ``gen_ai.usage.*`` and
``gen_ai.operation.name``; plus the plain-string ``gen_ai.prompt`` / ``gen_ai.completion`` of the
older form. Each convention is a *preset*: a function from a span to the fields it found, tried
in order until one finds content.

The input text is the text of the last user message; the output text is the text of the
assistant's output messages joined by blank lines. Values that are JSON strings or already
structured both work; invalid JSON falls back to the raw string, never an exception.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from otel_online_eval.spanview import SpanView

__all__ = ["PRESETS", "GenAIFields", "Message", "extract"]


@dataclass(frozen=True, slots=True)
class Message:
    """One chat message: its role, its text and (for tool calls) the raw parts."""

    role: str
    text: str
    parts: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class GenAIFields:
    """What a convention says about a span; every field may be None."""

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


def _loads(value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip()
        if text[:1] in ("[", "{"):
            try:
                return json.loads(text)
            except ValueError:
                return value
    return value


def _part_text(part: Any) -> str:
    if isinstance(part, str):
        return part
    if isinstance(part, Mapping):
        kind = part.get("type")
        if kind in (None, "text") and isinstance(part.get("content"), str):
            return str(part["content"])
        if isinstance(part.get("text"), str):
            return str(part["text"])
    return ""


def _messages(value: Any, default_role: str) -> tuple[Message, ...]:
    """Messages from the current convention's JSON (a list of {role, parts})."""
    data = _loads(value)
    if isinstance(data, str):
        return (Message(default_role, data),)
    if isinstance(data, Mapping):
        data = [data]
    if not isinstance(data, list):
        return ()
    out = []
    for item in data:
        if not isinstance(item, Mapping):
            continue
        role = str(item.get("role") or default_role)
        parts = item.get("parts")
        if isinstance(parts, list):
            dict_parts = tuple(p for p in parts if isinstance(p, Mapping))
            text = "\n".join(t for t in (_part_text(p) for p in parts) if t)
            out.append(Message(role, text, dict_parts))
        elif isinstance(item.get("content"), str):
            out.append(Message(role, str(item["content"])))
    return tuple(out)


def _system_text(value: Any) -> str | None:
    data = _loads(value)
    if isinstance(data, str):
        return data
    if isinstance(data, list):
        text = "\n".join(t for t in (_part_text(p) for p in data) if t)
        return text or None
    return None


def _last_user_text(messages: Sequence[Message]) -> str | None:
    for message in reversed(messages):
        if message.role == "user":
            return message.text
    return messages[-1].text if messages else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _genai_current(attrs: Mapping[str, Any]) -> GenAIFields | None:
    raw_in = attrs.get("gen_ai.input.messages")
    raw_out = attrs.get("gen_ai.output.messages")
    legacy_in = attrs.get("gen_ai.prompt")
    legacy_out = attrs.get("gen_ai.completion")
    if raw_in is None and raw_out is None and legacy_in is None and legacy_out is None:
        return None
    in_msgs = _messages(raw_in, "user") if raw_in is not None else ()
    out_msgs = _messages(raw_out, "assistant") if raw_out is not None else ()
    input_text = _last_user_text(in_msgs)
    if input_text is None and isinstance(legacy_in, str):
        input_text = _last_user_text(_messages(legacy_in, "user"))
    output_text: str | None = "\n\n".join(m.text for m in out_msgs) if out_msgs else None
    if output_text is None and isinstance(legacy_out, str):
        output_text = "\n\n".join(m.text for m in _messages(legacy_out, "assistant")) or None
    model = attrs.get("gen_ai.response.model") or attrs.get("gen_ai.request.model")
    input_tokens = _int(attrs.get("gen_ai.usage.input_tokens"))
    output_tokens = _int(attrs.get("gen_ai.usage.output_tokens"))
    return GenAIFields(
        input=input_text,
        output=output_text,
        model=str(model) if model is not None else None,
        operation=_str_or_none(attrs.get("gen_ai.operation.name")),
        system_instructions=_system_text(attrs.get("gen_ai.system_instructions")),
        input_messages=in_msgs,
        output_messages=out_msgs,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        convention="genai",
    )


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def _genai_preset(view: SpanView) -> GenAIFields | None:
    return _genai_current(view.attributes)


PRESETS: dict[str, Callable[[SpanView], GenAIFields | None]] = {
    "genai": _genai_preset,
}
"""Preset name -> reader. A reader returns None when the span has nothing of its convention."""

_EMPTY_FIELDS = GenAIFields()


def _usage_only(attrs: Mapping[str, Any]) -> GenAIFields:
    model = attrs.get("gen_ai.response.model") or attrs.get("gen_ai.request.model")
    return GenAIFields(
        model=_str_or_none(model),
        operation=_str_or_none(attrs.get("gen_ai.operation.name")),
        input_tokens=_int(attrs.get("gen_ai.usage.input_tokens")),
        output_tokens=_int(attrs.get("gen_ai.usage.output_tokens")),
    )


def extract(view: SpanView, presets: Sequence[str] | None = None) -> GenAIFields:
    """Read a span's GenAI fields with the first preset that finds content.

    Args:
        view: the span.
        presets: preset names in the order to try; all known presets when None.

    Returns:
        The fields found; model, operation and usage alone when no preset finds messages.
    """
    for name in presets if presets is not None else PRESETS:
        found = PRESETS[name](view)
        if found is not None:
            return found
    attrs = view.attributes
    if not attrs:
        return _EMPTY_FIELDS
    return _usage_only(attrs)
