"""``extract``: the presets tried in order, the project's own keys first, one result."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from otel_online_eval.genai._model import ExtractSettings, GenAIFields
from otel_online_eval.genai._presets import PRESETS, READERS, Span, maybe_genai
from otel_online_eval.genai._values import (
    conversation_text,
    input_text,
    interpret,
    loads,
    output_text,
)

if TYPE_CHECKING:
    from otel_online_eval.spanview import SpanView

__all__ = ["extract"]

logger = logging.getLogger("otel_online_eval.genai")

_EMPTY_FIELDS = GenAIFields()
_FILLED = ("model", "operation", "input_tokens", "output_tokens", "system_instructions")
_warned: set[str] = set()


def _settings(
    presets: Sequence[str] | ExtractSettings | None,
) -> tuple[Sequence[str], Sequence[str], Sequence[str], str]:
    if presets is None:
        return tuple(PRESETS), (), (), "last_user"
    if isinstance(presets, str):  # one name
        return (presets,), (), (), "last_user"
    if isinstance(presets, (list, tuple)):
        return presets, (), (), "last_user"
    settings: Any = presets
    names = settings.presets
    return (
        tuple(PRESETS) if names is None else names,
        tuple(settings.input or ()),
        tuple(settings.output or ()),
        str(settings.input_text or "last_user"),
    )


def extract(view: SpanView, presets: Sequence[str] | ExtractSettings | None = None) -> GenAIFields:
    """Read a span's input, output, messages, model and usage, whatever library made it.

    The presets are read in order: the first that finds content (an input, an output or
    messages) gives the content and the convention, and the fields it lacks (model, operation,
    usage, system instructions, tool definitions) are taken from the other presets that have
    them. The project's own keys (``input`` / ``output`` of the settings) take precedence over
    any preset. Never raises: a span it cannot read gives empty fields.

    Args:
        view: the span.
        presets: preset names in the order to try, or settings (``ExtractConfig``,
            ``ExtractOptions``); every preset in the default order when None. Unknown names are
            skipped (the config loader rejects them).

    Returns:
        The fields found; empty fields when the span says nothing of an LLM call.
    """
    try:
        names, input_keys, output_keys, mode = _settings(presets)
        span = Span(view)
        fields = _from_presets(span, names) if maybe_genai(span) else _EMPTY_FIELDS
        if input_keys or output_keys:
            fields = _apply_keys(span, fields, input_keys, output_keys)
        if mode == "conversation" and fields.input_messages:
            text = conversation_text(fields.input_messages, fields.system_instructions)
            fields = replace(fields, input=text)
        return fields
    except Exception:  # a bug in a reader must not cost the evaluation
        logger.debug("GenAI extraction failed for %r", view, exc_info=True)
        return _EMPTY_FIELDS


def _from_presets(span: Span, names: Sequence[str]) -> GenAIFields:
    primary: GenAIFields | None = None
    others: list[GenAIFields] = []
    for name in names:
        reader = READERS.get(name)
        if reader is None:
            if name not in _warned:
                _warned.add(name)
                logger.warning(
                    "Unknown GenAI preset %r skipped; known presets: %s", name, ", ".join(PRESETS)
                )
            continue
        try:
            found = reader(span)
        except Exception:
            logger.debug("GenAI preset %r failed for %r", name, span, exc_info=True)
            continue
        if found is None:
            continue
        if primary is None and found.has_content:
            primary = found
            if _complete(found):
                break  # nothing left for the other presets to fill in
        else:
            others.append(found)
    if primary is None:
        if not others:
            return _EMPTY_FIELDS
        primary, others = others[0], others[1:]
    return _fill(primary, others)


def _complete(fields: GenAIFields) -> bool:
    return (
        fields.model is not None
        and fields.input_tokens is not None
        and fields.output_tokens is not None
        and fields.operation is not None
    )


def _fill(primary: GenAIFields, others: Sequence[GenAIFields]) -> GenAIFields:
    changes: dict[str, Any] = {}
    for name in _FILLED:
        if getattr(primary, name) is None:
            for other in others:
                value = getattr(other, name)
                if value is not None:
                    changes[name] = value
                    break
    if not primary.tool_definitions:
        for other in others:
            if other.tool_definitions:
                changes["tool_definitions"] = other.tool_definitions
                break
    if primary.system_instructions is None and "system_instructions" not in changes:
        system = [m.text for m in primary.input_messages if m.role == "system" and m.text]
        if system:
            changes["system_instructions"] = "\n".join(system)
    return replace(primary, **changes) if changes else primary


def _apply_keys(
    span: Span,
    fields: GenAIFields,
    input_keys: Sequence[str],
    output_keys: Sequence[str],
) -> GenAIFields:
    """The project's own keys: the first present key of each list sets the text; its messages
    replace the preset's when the value is structured (or the preset found none)."""
    attrs = span.attributes
    changes: dict[str, Any] = {}
    for key in input_keys:
        value = attrs.get(key)
        if value is not None:
            found, text = interpret(value, "user")
            changes["input"] = input_text(found) if found else text
            if found and (not isinstance(loads(value), str) or not fields.input_messages):
                changes["input_messages"] = found
            break
    for key in output_keys:
        value = attrs.get(key)
        if value is not None:
            found, text = interpret(value, "assistant")
            changes["output"] = output_text(found) if found else text
            if found and (not isinstance(loads(value), str) or not fields.output_messages):
                changes["output_messages"] = found
                changes["tool_calls"] = tuple(c for m in found for c in m.tool_calls)
            break
    if not changes:
        return fields
    if not fields.has_content:
        changes["convention"] = "custom"
    return replace(fields, **changes)
