"""Turning whatever a span carries into messages and text.

Every convention ends up here: chat messages in the OpenTelemetry GenAI form (``role`` +
``parts``), the OpenAI form (``role`` + ``content`` + ``tool_calls``), the Vercel AI SDK form
(``content`` parts ``text`` / ``tool-call`` / ``tool-result``), Anthropic content blocks, Gemini
parts, OpenAI responses (``choices``), request bodies (``messages``) and plain strings. Values
may be JSON strings or already structured; invalid JSON is kept as the raw string. Nothing here
raises on odd input: unknown shapes become text (compact JSON).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from otel_online_eval.genai._model import Message, ToolCall, ToolResult, as_text

__all__ = [
    "TOOL_ROLES",
    "USER_ROLES",
    "conversation_text",
    "indexed",
    "input_text",
    "int_or_none",
    "interpret",
    "loads",
    "message",
    "messages",
    "output_text",
    "parse_json",
    "str_or_none",
    "tool_call",
    "tool_definition",
    "unflatten",
]

USER_ROLES = frozenset({"user", "human"})
TOOL_ROLES = frozenset({"tool", "function", "ipython"})
_TEXT_TYPES = frozenset({None, "text", "input_text", "output_text"})
_CALL_TYPES = frozenset({"tool_call", "tool-call", "tool_use", "function_call", "function"})
_RESULT_TYPES = frozenset(
    {"tool_call_response", "tool-result", "tool_result", "function_call_output", "function_result"}
)
_MAX_DEPTH = 8
"""Deeper structures are not searched for messages; they become JSON text."""


def loads(value: Any) -> Any:
    """A JSON object, array or string decoded; anything else (and invalid JSON) as it is."""
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("utf-8", "replace")
    if isinstance(value, str):
        text = value.strip()
        if text[:1] in ("[", "{", '"'):
            try:
                return json.loads(text)
            except (ValueError, RecursionError):
                return value
    return value


def parse_json(value: Any) -> Any:
    """Any JSON value decoded from a string (``'42'``, ``'"x"'``, ``'{...}'``); else as it is."""
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("utf-8", "replace")
    if isinstance(value, str):
        try:
            return json.loads(value)
        except (ValueError, RecursionError):
            return value
    return value


def str_or_none(value: Any) -> str | None:
    if value is None or isinstance(value, (Mapping, list, tuple)):
        return None
    text = as_text(value)
    return text or None


def int_or_none(value: Any) -> int | None:
    """A token count: an int, an integral float or a string of digits; else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _is_index(value.strip()) and len(value) < 20:
        return int(value.strip())
    return None


def _is_index(key: Any) -> bool:
    """True for a string of ASCII digits (``"²".isdigit()`` is true, ``int("²")`` fails)."""
    return isinstance(key, str) and key.isascii() and key.isdigit() and len(key) < 10


def _first(mapping: Mapping[str, Any], *keys: str) -> Any:
    for key in keys:
        value = mapping.get(key)
        if value is not None:
            return value
    return None


def _str(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return None


# -- flattened attribute keys -----------------------------------------------------------------


def unflatten(attrs: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """The keys under ``prefix`` as a tree: ``p.0.role`` -> ``{"0": {"role": ...}}``."""
    root: dict[str, Any] = {}
    size = len(prefix)
    for key, value in attrs.items():
        if not isinstance(key, str) or not key.startswith(prefix):
            continue
        node = root
        segments = key[size:].split(".")
        for segment in segments[:-1]:
            child = node.get(segment)
            if not isinstance(child, dict):
                child = {}
                node[segment] = child
            node = child
        last = segments[-1]
        if not isinstance(node.get(last), dict):  # a deeper key already claimed this path
            node[last] = value
    return root


def indexed(tree: Any) -> list[Any]:
    """The values of a tree node whose keys are indices, in index order (others are ignored)."""
    if isinstance(tree, list):
        return tree
    if not isinstance(tree, Mapping):
        return []
    keys = sorted((int(k), k) for k in tree if _is_index(k))
    return [tree[k] for _, k in keys]


def listify(tree: Any, depth: int = 0) -> Any:
    """Tree nodes whose keys are all indices become lists, recursively."""
    if depth > _MAX_DEPTH or not isinstance(tree, Mapping):
        return tree
    if tree and all(_is_index(k) for k in tree):
        return [listify(v, depth + 1) for v in indexed(tree)]
    return {k: listify(v, depth + 1) for k, v in tree.items()}


# -- tool calls and results -------------------------------------------------------------------


def _arguments(value: Any) -> Any:
    return parse_json(value) if isinstance(value, (str, bytes, bytearray)) else value


def tool_call(entry: Any) -> ToolCall | None:
    """A tool call in any of the known shapes, or None."""
    entry = loads(entry)
    if not isinstance(entry, Mapping):
        return None
    inner = entry.get("tool_call")  # OpenInference: tool_calls.N.tool_call.function.name
    if isinstance(inner, Mapping):
        entry = inner
    fn = entry.get("function")
    fn = fn if isinstance(fn, Mapping) else {}
    gemini = entry.get("functionCall")
    gemini = gemini if isinstance(gemini, Mapping) else {}
    name = _str(_first(entry, "name", "toolName", "tool_name")) or _str(
        _first(fn, "name") or _first(gemini, "name")
    )
    if not name:
        return None
    args = _first(entry, "arguments", "input", "args")
    if args is None:
        args = _first(fn, "arguments") if fn else _first(gemini, "args")
    call_id = _str(_first(entry, "id", "toolCallId", "call_id", "tool_call_id", "tool_use_id"))
    return ToolCall(name, _arguments(args), call_id)


def _unwrap_output(value: Any) -> Any:
    # Vercel AI SDK v5+: {"type": "text" | "json" | "error-text" | ..., "value": ...}
    if isinstance(value, Mapping) and "value" in value and isinstance(value.get("type"), str):
        return value["value"]
    return value


def tool_result(entry: Mapping[str, Any]) -> ToolResult:
    gemini = entry.get("functionResponse")
    gemini = gemini if isinstance(gemini, Mapping) else {}
    result = _first(entry, "response", "output", "result", "content")
    if result is None and gemini:
        result = gemini.get("response")
    if isinstance(result, list) and all(isinstance(p, Mapping) for p in result):
        texts = [t for t in (_text_of_part(p) for p in result) if t is not None]
        if texts and len(texts) == len(result):  # Anthropic: content blocks of text
            result = "\n".join(texts)
    return ToolResult(
        _unwrap_output(result),
        _str(_first(entry, "id", "toolCallId", "tool_call_id", "tool_use_id", "call_id")),
        _str(_first(entry, "name", "toolName", "tool_name")) or _str(gemini.get("name")),
    )


def tool_definition(entry: Any) -> Mapping[str, Any] | None:
    """A tool offered to the model, as ``{"name", "description", "parameters"}``."""
    entry = loads(entry)
    if not isinstance(entry, Mapping):
        return None
    inner = entry.get("tool")  # OpenInference: llm.tools.N.tool.json_schema
    if isinstance(inner, Mapping):
        entry = inner
    if "json_schema" in entry:
        return tool_definition(entry["json_schema"])
    fn = entry.get("function")
    if isinstance(fn, Mapping):
        entry = fn
    name = _str(entry.get("name"))
    if not name:
        return None
    out: dict[str, Any] = {"name": name}
    description = _str(entry.get("description"))
    if description is not None:
        out["description"] = description
    params = _first(entry, "parameters", "inputSchema", "input_schema", "parametersJsonSchema")
    if params is not None:
        out["parameters"] = loads(params)
    return out


# -- messages ---------------------------------------------------------------------------------


def _kind(item: Mapping[str, Any]) -> str | None:
    """The ``type`` of a part; "?" when it is not a string."""
    kind = item.get("type")
    return kind if kind is None or isinstance(kind, str) else "?"


def _text_of_part(part: Mapping[str, Any]) -> str | None:
    if _kind(part) not in _TEXT_TYPES:
        return None
    for key in ("content", "text"):
        value = part.get(key)
        if isinstance(value, str):
            return value
    return None


def _parts(
    raw: Sequence[Any],
) -> tuple[list[Mapping[str, Any]], list[str], list[ToolCall], list[ToolResult]]:
    parts: list[Mapping[str, Any]] = []
    texts: list[str] = []
    calls: list[ToolCall] = []
    results: list[ToolResult] = []
    for item in raw:
        if isinstance(item, str):
            parts.append({"type": "text", "content": item})
            texts.append(item)
            continue
        if not isinstance(item, Mapping):
            continue
        kind = _kind(item)
        text = _text_of_part(item)
        if text is not None:
            parts.append({"type": "text", "content": text})
            texts.append(text)
        elif kind in _CALL_TYPES or "functionCall" in item or "tool_call" in item:
            call = tool_call(item)
            if call is not None:
                calls.append(call)
                parts.append(
                    {
                        "type": "tool_call",
                        "id": call.id,
                        "name": call.name,
                        "arguments": call.arguments,
                    }
                )
            else:
                parts.append(dict(item))
        elif kind in _RESULT_TYPES or "functionResponse" in item:
            result = tool_result(item)
            results.append(result)
            parts.append({"type": "tool_call_response", "id": result.id, "response": result.result})
        else:
            parts.append(dict(item))
    return parts, texts, calls, results


def message(item: Any, default_role: str) -> Message | None:
    """One message in any of the known shapes (a choice's message included), or None."""
    if isinstance(item, str):
        return Message(default_role, item, ({"type": "text", "content": item},))
    if not isinstance(item, Mapping):
        return None
    inner = item.get("message")
    if isinstance(inner, Mapping) and "role" not in item:  # a choice: {message, finish_reason}
        found = message(inner, default_role)
        if found is None:
            return None
        finish = _str(item.get("finish_reason"))
        if finish is None:
            return found
        return Message(
            found.role, found.text, found.parts, found.tool_calls, found.tool_results, finish
        )
    kind = _kind(item)
    if kind == "function_call":  # OpenAI Responses API output item
        call = tool_call(item)
        if call is None:
            return None
        part = {"type": "tool_call", "id": call.id, "name": call.name, "arguments": call.arguments}
        return Message("assistant", "", (part,), (call,))
    if kind == "function_call_output":
        result = tool_result(item)
        part = {"type": "tool_call_response", "id": result.id, "response": result.result}
        return Message("tool", result.text, (part,), (), (result,))
    role = _str(item.get("role")) or default_role
    raw = item.get("parts")
    if raw is None:
        raw = item.get("content")
    calls: list[ToolCall] = []
    results: list[ToolResult] = []
    parts: list[Mapping[str, Any]] = []
    texts: list[str] = []
    if isinstance(raw, str):
        if role in TOOL_ROLES:
            result = ToolResult(
                raw,
                _str(_first(item, "tool_call_id", "toolCallId", "id")),
                _str(item.get("name")),
            )
            results.append(result)
            parts.append({"type": "tool_call_response", "id": result.id, "response": raw})
        else:
            parts.append({"type": "text", "content": raw})
        texts.append(raw)
    elif isinstance(raw, Mapping):
        parts, texts, calls, results = _parts([raw])
    elif isinstance(raw, (list, tuple)):
        parts, texts, calls, results = _parts(raw)
    elif raw is not None:
        text = as_text(raw)
        parts.append({"type": "text", "content": text})
        texts.append(text)
    raw_calls = loads(item.get("tool_calls"))
    if isinstance(raw_calls, (list, tuple)):
        for entry in raw_calls:
            call = tool_call(entry)
            if call is not None:
                calls.append(call)
                parts.append(
                    {
                        "type": "tool_call",
                        "id": call.id,
                        "name": call.name,
                        "arguments": call.arguments,
                    }
                )
    function_call = tool_call(item.get("function_call"))
    if function_call is not None:
        calls.append(function_call)
    if not (parts or calls or results or "role" in item):
        return None
    text = "\n".join(texts)
    if not text and role in TOOL_ROLES and results:
        text = "\n".join(r.text for r in results)
    finish = _str(item.get("finish_reason"))
    return Message(role, text, tuple(parts), tuple(calls), tuple(results), finish)


def _looks_like_message(item: Any) -> bool:
    return isinstance(item, Mapping) and (
        "role" in item
        or "parts" in item
        or isinstance(item.get("message"), Mapping)
        or item.get("type") in ("message", "function_call", "function_call_output")
    )


def messages(value: Any, default_role: str) -> tuple[Message, ...]:
    """Messages from a list (or one message); strings become messages of ``default_role``."""
    data = loads(value)
    if isinstance(data, Mapping):
        data = [data]
    if not isinstance(data, (list, tuple)):
        return ()
    out = []
    for item in data:
        if isinstance(item, str) or _looks_like_message(item):
            found = message(item, default_role)
            if found is not None:
                out.append(found)
    return tuple(out)


_WRAPPER_KEYS = ("inputs", "outputs")
_SINGLE_KEYS = frozenset(
    {
        "input",
        "output",
        "text",
        "content",
        "completion",
        "response",
        "result",
        "answer",
        "prompt",
        "query",
        "question",
        "message",
        "value",
    }
)


def interpret(value: Any, role: str, depth: int = 0) -> tuple[tuple[Message, ...], str | None]:
    """Messages and, when there are none, the text of a value of unknown shape.

    Returns:
        (messages, text): messages when the value is a conversation, a request or a response
        body, a message or a string; otherwise no messages and the value as text.
    """
    data = loads(value)
    if data is None:
        return (), None
    if isinstance(data, str):
        return (Message(role, data, ({"type": "text", "content": data},)),), None
    if depth > _MAX_DEPTH:
        return (), as_text(data)
    if isinstance(data, (list, tuple)):
        found = messages(data, role)
        if found:
            return found, None
        if data and all(isinstance(x, str) for x in data):
            return tuple(Message(role, x, ({"type": "text", "content": x},)) for x in data), None
        return (), as_text(data)
    if not isinstance(data, Mapping):
        return (), as_text(data)
    return _interpret_mapping(data, role, depth)


def _interpret_mapping(
    data: Mapping[str, Any], role: str, depth: int
) -> tuple[tuple[Message, ...], str | None]:
    # Requests and prompts: {"messages": [...]}, {"system", "prompt"}, {"input", "instructions"}.
    found: tuple[Message, ...] = ()
    if "messages" in data:
        found = messages(data["messages"], "user")
        prompt = data.get("prompt")
        if isinstance(prompt, str):
            found += (Message("user", prompt, ({"type": "text", "content": prompt},)),)
    elif "prompt" in data and ("system" in data or "model" in data):
        found = interpret(data["prompt"], "user", depth + 1)[0]
    elif "input" in data and ("model" in data or "instructions" in data):
        found = interpret(data["input"], "user", depth + 1)[0]
    elif "contents" in data and isinstance(data["contents"], list):  # Gemini
        found = messages(data["contents"], "user")
    if found or "messages" in data:
        system = _first(data, "system", "instructions")
        if isinstance(system, str) and system:
            found = (Message("system", system, ({"type": "text", "content": system},)), *found)
        return found, None
    # Responses: {"choices": [...]}, {"message": {...}}, {"output": [items]}.
    if isinstance(data.get("choices"), list):
        return messages(data["choices"], "assistant"), None
    if isinstance(data.get("message"), Mapping):
        one = message(data, "assistant")
        return ((one,) if one is not None else ()), None
    if isinstance(data.get("output"), list) and "model" in data:
        return messages(data["output"], "assistant"), None
    if "role" in data or "parts" in data:
        one = message(data, role)
        return ((one,) if one is not None else ()), None
    if isinstance(data.get("combined_chunk_content"), str):  # Logfire, streamed responses
        return interpret(data["combined_chunk_content"], role, depth + 1)
    # Wrappers: {"inputs": ...} (Traceloop), {"args": [...], "kwargs": {...}}, {"text": ...}.
    for key in _WRAPPER_KEYS:
        if key in data:
            return interpret(data[key], role, depth + 1)
    if "args" in data or "kwargs" in data:
        args = data.get("args")
        kwargs = data.get("kwargs")
        args = list(args) if isinstance(args, (list, tuple)) else ([] if args is None else [args])
        kwargs = kwargs if isinstance(kwargs, Mapping) else {}
        if len(args) == 1 and not kwargs:
            return interpret(args[0], role, depth + 1)
        if not args and len(kwargs) == 1:
            return interpret(next(iter(kwargs.values())), role, depth + 1)
        return (), as_text(data)
    if len(data) == 1:
        ((key, inner),) = data.items()
        if key in _SINGLE_KEYS:
            return interpret(inner, role, depth + 1)
    return (), as_text(data)


# -- texts --------------------------------------------------------------------------------------


def input_text(found: Sequence[Message]) -> str | None:
    """The last user message's text; the last message's when no message is from a user."""
    for m in reversed(found):
        if m.role in USER_ROLES:
            return m.text
    return found[-1].text if found else None


def conversation_text(found: Sequence[Message], system: str | None = None) -> str | None:
    """Every message as ``role: text`` lines (tool calls as ``role: -> name(arguments)``)."""
    lines = []
    if system and not any(m.role == "system" for m in found):
        lines.append(f"system: {system}")
    for m in found:
        if m.text:
            lines.append(f"{m.role}: {m.text}")
        for call in m.tool_calls:
            lines.append(f"{m.role}: -> {call.name}({as_text(call.arguments)})")
    return "\n".join(lines) if lines else None


def output_text(found: Sequence[Message]) -> str | None:
    """The output messages' texts joined by blank lines; their tool calls as JSON when they
    have no text; "" for an empty answer; None when there is no output message."""
    if not found:
        return None
    texts = [m.text for m in found if m.text]
    if texts:
        return "\n\n".join(texts)
    calls = [c for m in found for c in m.tool_calls]
    if calls:
        return as_text([{"name": c.name, "arguments": c.arguments} for c in calls])
    return ""
