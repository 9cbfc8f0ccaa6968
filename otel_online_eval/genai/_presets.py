"""One reader per convention: a span in, the fields it found (or None when it has nothing of
that convention) out. Readers never raise on odd values; :func:`extract` guards them anyway."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from otel_online_eval.genai._model import GenAIFields, Message, ToolCall, ToolResult, as_text
from otel_online_eval.genai._values import (
    indexed,
    input_text,
    int_or_none,
    interpret,
    listify,
    loads,
    message,
    messages,
    output_text,
    parse_json,
    str_or_none,
    tool_call,
    tool_definition,
    unflatten,
)

if TYPE_CHECKING:
    from otel_online_eval.spanview import EventView, SpanView

__all__ = ["PRESETS", "READERS", "ROOTS", "Span", "maybe_genai"]

Attrs = Mapping[str, Any]


def _build(
    convention: str,
    *,
    input_messages: Sequence[Message] = (),
    output_messages: Sequence[Message] = (),
    input: str | None = None,
    output: str | None = None,
    system: str | None = None,
    model: Any = None,
    operation: Any = None,
    input_tokens: Any = None,
    output_tokens: Any = None,
    tool_calls: Sequence[ToolCall] | None = None,
    tool_definitions: Sequence[Mapping[str, Any]] = (),
) -> GenAIFields:
    """Fields from messages; the texts are derived from the messages unless given."""
    ins = tuple(input_messages)
    outs = tuple(output_messages)
    if input is None:
        input = input_text(ins)
    if output is None:
        output = output_text(outs)
    if tool_calls is None:
        tool_calls = [c for m in outs for c in m.tool_calls]
    return GenAIFields(
        input=input,
        output=output,
        model=str_or_none(model),
        operation=str_or_none(operation),
        system_instructions=system or None,
        input_messages=ins,
        output_messages=outs,
        input_tokens=int_or_none(input_tokens),
        output_tokens=int_or_none(output_tokens),
        convention=convention,
        tool_calls=tuple(tool_calls),
        tool_definitions=tuple(tool_definitions),
    )


def _get(attrs: Attrs, *keys: str) -> Any:
    for key in keys:
        value = attrs.get(key)
        if value is not None and value != "":
            return value
    return None


def _system_text(value: Any) -> str | None:
    """System instructions: a string, or a list of parts / messages."""
    data = loads(value)
    if data is None:
        return None
    if isinstance(data, str):
        return data or None
    if isinstance(data, Mapping):
        data = [data]
    if isinstance(data, (list, tuple)):
        texts = []
        for item in data:
            if isinstance(item, str):
                texts.append(item)
            elif isinstance(item, Mapping):
                as_message = item if "role" in item or "parts" in item else {"parts": [item]}
                found = message(as_message, "system")
                if found is not None and found.text:
                    texts.append(found.text)
        return "\n".join(texts) or None
    return as_text(data) or None


def _tool_definitions(value: Any) -> list[Mapping[str, Any]]:
    data = loads(value)
    if isinstance(data, Mapping):
        data = [data]
    if not isinstance(data, (list, tuple)):
        return []
    return [d for d in (tool_definition(item) for item in data) if d is not None]


def _model(attrs: Attrs) -> Any:
    return _get(attrs, "gen_ai.response.model", "gen_ai.request.model")


class Span:
    """What the readers see of a span: its attributes as a plain dict (the SDK's mapping is
    slow to read key by key), its events (read once, when asked), and which key families it
    has (so flattened conventions are scanned only when present)."""

    __slots__ = ("_events", "_heads", "_view", "attributes")

    def __init__(self, view: SpanView) -> None:
        self._view = view
        attrs = view.attributes
        self.attributes: dict[str, Any] = dict(attrs) if isinstance(attrs, Mapping) else {}
        self._events: Sequence[EventView] | None = None
        self._heads: frozenset[str] | None = None

    @property
    def events(self) -> Sequence[EventView]:
        if self._events is None:
            self._events = tuple(self._view.events or ())
        return self._events

    @property
    def heads(self) -> frozenset[str]:
        """The first one and two dotted segments of every key (``gen_ai``, ``gen_ai.prompt``)."""
        if self._heads is None:
            heads = set()
            for key in self.attributes:
                if isinstance(key, str):
                    parts = key.split(".", 2)
                    heads.add(parts[0])
                    heads.add(".".join(parts[:2]))
            self._heads = frozenset(heads)
        return self._heads

    def has(self, head: str) -> bool:
        """True when a key starts with ``head`` + "." (``head``: one or two dotted segments)."""
        return head in self.heads

    def __repr__(self) -> str:
        return repr(self._view)


# -- OpenTelemetry GenAI semantic conventions, current ----------------------------------------

_DETAILS_EVENT = "gen_ai.client.inference.operation.details"


def _genai(span: Span) -> GenAIFields | None:
    """``gen_ai.input.messages`` / ``gen_ai.output.messages`` / ``gen_ai.system_instructions``
    (JSON with ``parts``), ``execute_tool`` spans, the same keys on an inference-details event."""
    attrs = span.attributes
    raw_in = attrs.get("gen_ai.input.messages")
    raw_out = attrs.get("gen_ai.output.messages")
    raw_system = attrs.get("gen_ai.system_instructions")
    source: Attrs = attrs
    if raw_in is None and raw_out is None:
        for event in span.events:
            if event.name == _DETAILS_EVENT:
                source = event.attributes
                raw_in = source.get("gen_ai.input.messages")
                raw_out = source.get("gen_ai.output.messages")
                raw_system = raw_system or source.get("gen_ai.system_instructions")
                break
    common: dict[str, Any] = {
        "model": _model(attrs) or _model(source),
        "operation": attrs.get("gen_ai.operation.name"),
        "input_tokens": _get(attrs, "gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens"),
        "output_tokens": _get(
            attrs, "gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens"
        ),
        "system": _system_text(raw_system),
        "tool_definitions": _tool_definitions(attrs.get("gen_ai.tool.definitions")),
    }
    if raw_in is not None or raw_out is not None:
        ins = messages(raw_in, "user") if raw_in is not None else ()
        outs = messages(raw_out, "assistant") if raw_out is not None else ()
        fields = _build("genai", input_messages=ins, output_messages=outs, **common)
        # Not messages (a plain string, truncated JSON): the raw value is the text. Parsed
        # again only then: the prompt is often the largest value on the span.
        data_in = loads(raw_in) if not ins else None
        if data_in is not None and not isinstance(data_in, (list, tuple)):
            fields = _replace(fields, input=as_text(data_in) or None)
        data_out = loads(raw_out) if not outs else None
        if data_out is not None and not isinstance(data_out, (list, tuple)):
            fields = _replace(fields, output=as_text(data_out))
        return fields
    tool_name = attrs.get("gen_ai.tool.name")
    raw_args = attrs.get("gen_ai.tool.call.arguments")
    raw_result = attrs.get("gen_ai.tool.call.result")
    if tool_name is not None and (raw_args is not None or raw_result is not None):
        return _tool_span(
            "genai",
            str(tool_name),
            str_or_none(attrs.get("gen_ai.tool.call.id")),
            raw_args,
            raw_result,
            common,
        )
    if (
        any(v is not None for k, v in common.items() if k != "tool_definitions")
        or common["tool_definitions"]
    ):
        return _build("genai", **common)
    return None


def _tool_message(data: Any) -> Mapping[str, Any] | None:
    """The fields of a serialized LangChain ``ToolMessage`` (``{"type": "tool", "data": {...}}``
    or ``{"lc": 1, "type": "constructor", "id": [..., "ToolMessage"], "kwargs": {...}}``), which
    carry the tool's result as ``content``; None for any other value (``data``: decoded)."""
    if not isinstance(data, Mapping):
        return None
    inner = data.get("data")
    if data.get("type") == "tool" and isinstance(inner, Mapping) and "content" in inner:
        return inner
    inner = data.get("kwargs")
    path = data.get("id")
    if (
        data.get("type") == "constructor"
        and isinstance(inner, Mapping)
        and "content" in inner
        and (
            inner.get("type") == "tool" or (isinstance(path, list) and path[-1:] == ["ToolMessage"])
        )
    ):
        return inner
    return None


def _tool_span(
    convention: str,
    name: str,
    call_id: str | None,
    raw_args: Any,
    raw_result: Any,
    common: Mapping[str, Any],
) -> GenAIFields:
    """A tool execution: the input is the arguments, the output the result.

    A result that is a serialized tool message gives its content as the result, its
    ``tool_call_id`` when the span has no call id, and with ``status: error`` the content as
    ``extra["tool_error"]``."""
    extra: dict[str, Any] = {}
    result = parse_json(raw_result) if raw_result is not None else None
    found = _tool_message(result)
    if found is not None:
        raw_result = found.get("content")
        result = parse_json(raw_result) if raw_result is not None else None
        call_id = call_id or str_or_none(found.get("tool_call_id"))
        if found.get("status") == "error":
            extra["tool_error"] = as_text(result) or "error"
    args = parse_json(raw_args) if raw_args is not None else None
    call = ToolCall(name, args, call_id)
    ins = (
        Message(
            "assistant",
            "",
            ({"type": "tool_call", "id": call_id, "name": name, "arguments": args},),
            (call,),
        ),
    )
    outs: tuple[Message, ...] = ()
    output = None
    if raw_result is not None:
        tool_result = ToolResult(result, call_id, name)
        output = tool_result.text
        outs = (
            Message(
                "tool",
                output,
                ({"type": "tool_call_response", "id": call_id, "response": result},),
                (),
                (tool_result,),
            ),
        )
    fields = _build(
        convention,
        input_messages=ins,
        output_messages=outs,
        input=as_text(args) if raw_args is not None else None,
        output=output,
        tool_calls=(call,),
        **common,
    )
    return _replace(fields, extra=extra) if extra else fields


def _replace(fields: GenAIFields, **changes: Any) -> GenAIFields:
    return replace(fields, **changes)


# -- OpenTelemetry GenAI semantic conventions, older forms ------------------------------------

_INPUT_EVENTS = {
    "gen_ai.system.message": "system",
    "gen_ai.user.message": "user",
    "gen_ai.assistant.message": "assistant",
    "gen_ai.tool.message": "tool",
}
_BODY_KEYS = ("gen_ai.event.content", "event.body", "body")
_EVENT_META = frozenset({"gen_ai.system", "gen_ai.provider.name", "event.name"})


def _event_body(attributes: Attrs) -> Mapping[str, Any]:
    """An event's body: a JSON body attribute, or the attributes themselves (unflattened)."""
    for key in _BODY_KEYS:
        if key in attributes:
            body = loads(attributes[key])
            if isinstance(body, Mapping):
                return body
            if isinstance(body, str):
                return {"content": body}
    tree = listify(unflatten({k: v for k, v in attributes.items() if k not in _EVENT_META}, ""))
    if not isinstance(tree, Mapping):
        return {}
    return {k: _decode_body_value(k, v) for k, v in tree.items()}


def _decode_body_value(key: str, value: Any) -> Any:
    if key in ("message", "tool_calls"):
        value = loads(value)
        if isinstance(value, (list, tuple)):  # a sequence of JSON strings (span attributes)
            return [loads(v) for v in value]
    if key == "content" and isinstance(value, str):
        data = loads(value)
        if isinstance(data, list) and all(isinstance(p, Mapping) and "type" in p for p in data):
            return data
    return value


def event_message(name: str, attributes: Attrs) -> tuple[str, Message | None, int]:
    """A legacy GenAI event as ("input" | "output" | "", message, choice index)."""
    if name in _INPUT_EVENTS:
        body = _event_body(attributes)
        role = str(body.get("role") or _INPUT_EVENTS[name])
        found = message({**body, "role": role}, role)
        if found is not None and not found.parts and not found.tool_calls and role != "tool":
            found = None
        return "input", found, 0
    if name == "gen_ai.choice":
        body = _event_body(attributes)
        inner = body.get("message")
        if isinstance(inner, Mapping):
            choice = {"message": inner, "finish_reason": body.get("finish_reason")}
            found = message(choice, "assistant")
        else:
            found = message({**body, "role": body.get("role") or "assistant"}, "assistant")
        index = int_or_none(body.get("index")) or 0
        return "output", found, index
    return "", None, 0


def _genai_legacy(span: Span) -> GenAIFields | None:
    """Span events ``gen_ai.{system,user,assistant,tool}.message`` / ``gen_ai.choice`` and
    ``gen_ai.content.prompt`` / ``.completion``; ``gen_ai.prompt`` / ``gen_ai.completion`` strings;
    ``gen_ai.usage.prompt_tokens`` / ``completion_tokens``."""
    attrs = span.attributes
    ins: list[Message] = []
    choices: list[tuple[int, int, Message]] = []
    raw_prompt = attrs.get("gen_ai.prompt")
    raw_completion = attrs.get("gen_ai.completion")
    for n, event in enumerate(span.events):
        if event.name == "gen_ai.content.prompt" and raw_prompt is None:
            raw_prompt = event.attributes.get("gen_ai.prompt")
        elif event.name == "gen_ai.content.completion" and raw_completion is None:
            raw_completion = event.attributes.get("gen_ai.completion")
        else:
            side, found, index = event_message(event.name, event.attributes)
            if found is None:
                continue
            if side == "input":
                ins.append(found)
            elif side == "output":
                choices.append((index, n, found))
    if raw_prompt is not None and not ins:
        ins = list(interpret(raw_prompt, "user")[0])
    outs = [m for _, _, m in sorted(choices, key=lambda c: (c[0], c[1]))]
    output = None
    if raw_completion is not None and not outs:
        found_out, text = interpret(raw_completion, "assistant")
        outs = list(found_out)
        output = text
    common: dict[str, Any] = {
        "model": _model(attrs),
        "operation": attrs.get("gen_ai.operation.name"),
        "input_tokens": _get(attrs, "gen_ai.usage.prompt_tokens", "gen_ai.usage.input_tokens"),
        "output_tokens": _get(
            attrs, "gen_ai.usage.completion_tokens", "gen_ai.usage.output_tokens"
        ),
    }
    if not ins and not outs and output is None:
        if attrs.get("gen_ai.usage.prompt_tokens") is not None or (
            attrs.get("gen_ai.usage.completion_tokens") is not None
        ):
            return _build("genai_legacy", **common)
        return None
    return _build("genai_legacy", input_messages=ins, output_messages=outs, output=output, **common)


# -- OpenLLMetry / Traceloop ------------------------------------------------------------------


def _flat_messages(span: Span, prefix: str, role: str) -> list[Message]:
    if not span.has(prefix[:-1]):
        return []
    attrs = span.attributes
    out = []
    for item in indexed(listify(unflatten(attrs, prefix))):
        if not isinstance(item, Mapping):
            continue
        item = dict(item)
        content = item.get("content")
        if isinstance(content, str):  # list content is written as a JSON string
            data = loads(content)
            if isinstance(data, list) and all(isinstance(p, Mapping) and "type" in p for p in data):
                item["content"] = data
        elif content is None and isinstance(item.get("refusal"), str):
            item["content"] = item["refusal"]
        found = message(item, role)
        if found is not None:
            out.append(found)
    return out


def _flat_tools(span: Span, head: str, prefix: str) -> list[Mapping[str, Any]]:
    if not span.has(head):
        return []
    found = (tool_definition(t) for t in indexed(listify(unflatten(span.attributes, prefix))))
    return [d for d in found if d is not None]


def _openllmetry(span: Span) -> GenAIFields | None:
    """``gen_ai.prompt.{i}.*`` / ``gen_ai.completion.{i}.*`` (older: ``llm.prompts.{i}`` /
    ``llm.completions.{i}``), ``llm.request.functions.{i}.*``, ``traceloop.entity.input`` /
    ``.output``."""
    attrs = span.attributes
    ins = _flat_messages(span, "gen_ai.prompt.", "user") or _flat_messages(
        span, "llm.prompts.", "user"
    )
    outs = _flat_messages(span, "gen_ai.completion.", "assistant") or _flat_messages(
        span, "llm.completions.", "assistant"
    )
    tools = _flat_tools(span, "llm.request", "llm.request.functions.")
    common: dict[str, Any] = {
        "model": _get(
            attrs,
            "gen_ai.response.model",
            "gen_ai.request.model",
            "llm.response.model",
            "llm.request.model",
        ),
        "operation": _get(
            attrs, "gen_ai.operation.name", "llm.request.type", "traceloop.span.kind"
        ),
        "input_tokens": _get(
            attrs,
            "gen_ai.usage.input_tokens",
            "gen_ai.usage.prompt_tokens",
            "llm.usage.prompt_tokens",
        ),
        "output_tokens": _get(
            attrs,
            "gen_ai.usage.output_tokens",
            "gen_ai.usage.completion_tokens",
            "llm.usage.completion_tokens",
        ),
        "tool_definitions": tools,
    }
    if ins or outs:
        return _build("openllmetry", input_messages=ins, output_messages=outs, **common)
    raw_in = attrs.get("traceloop.entity.input")
    raw_out = attrs.get("traceloop.entity.output")
    if raw_in is None and raw_out is None:
        if tools or attrs.get("llm.request.type") is not None or "traceloop.span.kind" in attrs:
            return _build("openllmetry", **common)
        return None
    return _generic("openllmetry", raw_in, raw_out, common)


def _generic(convention: str, raw_in: Any, raw_out: Any, common: Mapping[str, Any]) -> GenAIFields:
    """Fields from an input and an output value of unknown shape."""
    ins, in_text = interpret(raw_in, "user") if raw_in is not None else ((), None)
    outs, out_text = interpret(raw_out, "assistant") if raw_out is not None else ((), None)
    return _build(
        convention,
        input_messages=ins,
        output_messages=outs,
        input=in_text,
        output=out_text,
        **common,
    )


# -- OpenInference ----------------------------------------------------------------------------


def _oi_messages(span: Span, prefix: str, role: str) -> list[Message]:
    if not span.has(prefix[:-1]):
        return []
    attrs = span.attributes
    out = []
    for item in indexed(listify(unflatten(attrs, prefix))):
        if not isinstance(item, Mapping):
            continue
        body = item.get("message")
        if not isinstance(body, Mapping):
            continue
        body = dict(body)
        contents = body.pop("contents", None)
        if isinstance(contents, list) and body.get("content") is None:
            body["content"] = [
                c.get("message_content") if isinstance(c, Mapping) else c for c in contents
            ]
        found = message(body, role)
        if found is not None:
            out.append(found)
    return out


def _is_response(item: Any) -> bool:
    """An OpenAI Responses API object: ``{"object": "response", "model", "output": [items]}``."""
    return isinstance(item, Mapping) and isinstance(item.get("output"), list) and "model" in item


def _responses(value: Any) -> Any:
    """A JSON list of Responses API objects (openai-agents streaming puts its one response in
    a list) as one object, their output items in order; any other value as it is."""
    if not isinstance(value, (str, bytes, bytearray, list, tuple)):
        return value
    data = loads(value)
    if not isinstance(data, (list, tuple)) or not data or not all(map(_is_response, data)):
        return data
    if len(data) == 1:
        return data[0]
    return {**data[-1], "output": [item for r in data for item in r["output"]]}


def _openinference(span: Span) -> GenAIFields | None:
    """``llm.input_messages.{i}.message.*`` / ``llm.output_messages.{i}.message.*``,
    ``input.value`` / ``output.value``, ``llm.model_name``, ``llm.token_count.*``, tools."""
    attrs = span.attributes
    ins = _oi_messages(span, "llm.input_messages.", "user")
    outs = _oi_messages(span, "llm.output_messages.", "assistant")
    tools = _flat_tools(span, "llm.tools", "llm.tools.")
    kind = attrs.get("openinference.span.kind")
    common: dict[str, Any] = {
        "model": attrs.get("llm.model_name"),
        "operation": _get(attrs, "gen_ai.operation.name")
        or (str(kind).lower() if isinstance(kind, str) else None),
        "input_tokens": attrs.get("llm.token_count.prompt"),
        "output_tokens": attrs.get("llm.token_count.completion"),
        "tool_definitions": tools,
    }
    raw_in = attrs.get("input.value")
    raw_out = attrs.get("output.value")
    if kind == "TOOL" and attrs.get("tool.name") is not None:
        return _tool_span(
            "openinference",
            str(attrs["tool.name"]),
            str_or_none(attrs.get("tool_call.id")),
            raw_in,
            raw_out,
            {**common, "tool_definitions": ()},
        )
    if ins or outs:
        fields = _build("openinference", input_messages=ins, output_messages=outs, **common)
        if not outs and raw_out is not None:  # e.g. output messages not recorded
            found, text = interpret(_responses(raw_out), "assistant")
            fields = _replace(
                fields,
                output_messages=found,
                output=text if not found else output_text(found),
                tool_calls=tuple(c for m in found for c in m.tool_calls),
            )
        return fields
    if raw_in is None and raw_out is None:
        prompts = attrs.get("llm.prompts")
        if isinstance(prompts, (list, tuple)) and prompts:
            return _generic("openinference", list(prompts), None, common)
        if kind is not None or attrs.get("llm.model_name") is not None:
            return _build("openinference", **common)
        return None
    return _generic("openinference", raw_in, _responses(raw_out), common)


# -- Vercel AI SDK ----------------------------------------------------------------------------


def _vercel_tool_calls(value: Any) -> list[ToolCall]:
    data = loads(value)
    if isinstance(data, Mapping):
        data = [data]
    if not isinstance(data, (list, tuple)):
        return []
    return [c for c in (tool_call(item) for item in data) if c is not None]


def _vercel(span: Span) -> GenAIFields | None:
    """``ai.prompt.messages`` / ``ai.prompt``, ``ai.response.text`` / ``.toolCalls`` /
    ``.object``, ``ai.model.id``, ``ai.usage.*``, ``ai.toolCall.*``."""
    attrs = span.attributes
    common: dict[str, Any] = {
        "model": _get(attrs, "ai.response.model", "gen_ai.response.model", "ai.model.id"),
        "operation": _get(attrs, "ai.operationId", "operation.name"),
        "input_tokens": _get(
            attrs, "ai.usage.inputTokens", "ai.usage.promptTokens", "gen_ai.usage.input_tokens"
        ),
        "output_tokens": _get(
            attrs,
            "ai.usage.outputTokens",
            "ai.usage.completionTokens",
            "gen_ai.usage.output_tokens",
        ),
        "tool_definitions": _tool_definitions(
            [loads(t) for t in attrs["ai.prompt.tools"]]
            if isinstance(attrs.get("ai.prompt.tools"), (list, tuple))
            else attrs.get("ai.prompt.tools")
        ),
    }
    tool_name = attrs.get("ai.toolCall.name")
    if tool_name is not None:
        return _tool_span(
            "vercel_ai",
            str(tool_name),
            str_or_none(attrs.get("ai.toolCall.id")),
            _get(attrs, "ai.toolCall.args", "ai.toolCall.input"),
            _get(attrs, "ai.toolCall.result", "ai.toolCall.output"),
            {**common, "tool_definitions": ()},
        )
    raw_in = attrs.get("ai.prompt.messages")
    if raw_in is None:
        raw_in = attrs.get("ai.prompt")
    text = attrs.get("ai.response.text")
    calls = _vercel_tool_calls(attrs.get("ai.response.toolCalls"))
    obj = attrs.get("ai.response.object")
    if raw_in is None and text is None and not calls and obj is None:
        if span.has("ai"):
            return _build("vercel_ai", **common)
        return None
    ins, in_text = interpret(raw_in, "user") if raw_in is not None else ((), None)
    system = None
    if ins and ins[0].role == "system":
        system = ins[0].text
    outs: tuple[Message, ...] = ()
    if text is not None or calls or obj is not None:
        body = as_text(obj) if text is None and obj is not None else as_text(text)
        parts: list[Mapping[str, Any]] = [{"type": "text", "content": body}] if body else []
        parts += [
            {"type": "tool_call", "id": c.id, "name": c.name, "arguments": c.arguments}
            for c in calls
        ]
        finish = str_or_none(attrs.get("ai.response.finishReason"))
        outs = (Message("assistant", body, tuple(parts), tuple(calls), (), finish),)
    return _build(
        "vercel_ai",
        input_messages=ins,
        output_messages=outs,
        input=in_text,
        system=system,
        **common,
    )


# -- Braintrust, Langfuse, Logfire --------------------------------------------------------------


def _braintrust(span: Span) -> GenAIFields | None:
    """``braintrust.input_json`` / ``.output_json``, ``braintrust.input`` / ``.output``,
    ``braintrust.metadata`` (model), ``braintrust.metrics`` (tokens)."""
    attrs = span.attributes
    raw_in = _get(attrs, "braintrust.input_json", "braintrust.input")
    raw_out = _get(attrs, "braintrust.output_json", "braintrust.output")
    metadata = loads(attrs.get("braintrust.metadata"))
    metrics = loads(attrs.get("braintrust.metrics"))
    metadata = metadata if isinstance(metadata, Mapping) else {}
    metrics = metrics if isinstance(metrics, Mapping) else {}
    if raw_in is None and raw_out is None and not metadata and not metrics:
        return None
    common: dict[str, Any] = {
        "model": metadata.get("model"),
        "input_tokens": _get(metrics, "prompt_tokens", "input_tokens"),
        "output_tokens": _get(metrics, "completion_tokens", "output_tokens"),
        "tool_definitions": _tool_definitions(metadata.get("tools")),
    }
    return _generic("braintrust", raw_in, raw_out, common)


def _langfuse(span: Span) -> GenAIFields | None:
    """``langfuse.observation.input`` / ``.output`` (else ``langfuse.trace.*``), the model
    and ``usage_details``."""
    attrs = span.attributes
    raw_in = _get(attrs, "langfuse.observation.input", "langfuse.trace.input")
    raw_out = _get(attrs, "langfuse.observation.output", "langfuse.trace.output")
    usage = loads(_get(attrs, "langfuse.observation.usage_details", "langfuse.observation.usage"))
    usage = usage if isinstance(usage, Mapping) else {}
    model = attrs.get("langfuse.observation.model.name")
    if raw_in is None and raw_out is None and model is None and not usage:
        return None
    common: dict[str, Any] = {
        "model": model,
        "operation": attrs.get("langfuse.observation.type"),
        "input_tokens": _get(usage, "input", "prompt_tokens", "input_tokens", "promptTokens"),
        "output_tokens": _get(
            usage, "output", "completion_tokens", "output_tokens", "completionTokens"
        ),
    }
    return _generic("langfuse", raw_in, raw_out, common)


def _logfire(span: Span) -> GenAIFields | None:
    """``request_data`` / ``response_data`` (the OpenAI request and response), and the
    ``events`` / ``all_messages_events`` lists of GenAI events."""
    attrs = span.attributes
    raw_events = _get(attrs, "events", "all_messages_events")
    request = loads(attrs.get("request_data"))
    response = loads(attrs.get("response_data"))
    if raw_events is None and request is None and response is None:
        return None
    request_map = request if isinstance(request, Mapping) else {}
    response_map = response if isinstance(response, Mapping) else {}
    usage = response_map.get("usage")
    usage = usage if isinstance(usage, Mapping) else {}
    common: dict[str, Any] = {
        "model": _get(attrs, "gen_ai.response.model", "gen_ai.request.model")
        or response_map.get("model")
        or request_map.get("model"),
        "operation": attrs.get("gen_ai.operation.name"),
        "input_tokens": _get(
            {**attrs, **usage}, "prompt_tokens", "input_tokens", "gen_ai.usage.input_tokens"
        ),
        "output_tokens": _get(
            {**attrs, **usage}, "completion_tokens", "output_tokens", "gen_ai.usage.output_tokens"
        ),
        "tool_definitions": _tool_definitions(request_map.get("tools")),
    }
    events = loads(raw_events)
    if isinstance(events, (list, tuple)) and events:
        ins: list[Message] = []
        outs: list[Message] = []
        for item in events:
            item = loads(item)
            if not isinstance(item, Mapping):
                continue
            name = item.get("event.name")
            side, found, _ = event_message(str(name), {k: v for k, v in item.items()})
            if found is None:
                continue
            (ins if side == "input" else outs).append(found)
        if ins or outs:
            return _build("logfire", input_messages=ins, output_messages=outs, **common)
    return _generic("logfire", request, response, common)


Reader = Callable[[Span], "GenAIFields | None"]

READERS: dict[str, Reader] = {
    "genai": _genai,
    "genai_legacy": _genai_legacy,
    "openllmetry": _openllmetry,
    "openinference": _openinference,
    "vercel_ai": _vercel,
    "braintrust": _braintrust,
    "langfuse": _langfuse,
    "logfire": _logfire,
}


ROOTS = frozenset(
    {
        "gen_ai",
        "llm",
        "traceloop",
        "input",
        "output",
        "openinference",
        "tool",
        "tool_call",
        "ai",
        "braintrust",
        "langfuse",
        "request_data",
        "response_data",
        "events",
        "all_messages_events",
    }
)
"""The first dotted segment of every key a reader looks at: a span with none of them and no
events has nothing for any preset (tests/test_genai_fuzz.py checks it)."""


def maybe_genai(span: Span) -> bool:
    """False when no reader can find anything on the span (a cheap test, before reading)."""
    return not ROOTS.isdisjoint(span.heads) or bool(span.events)


def _preset(reader: Reader) -> Callable[[SpanView], GenAIFields | None]:
    def read(view: SpanView) -> GenAIFields | None:
        return reader(Span(view))

    read.__name__ = read.__qualname__ = reader.__name__.lstrip("_")
    read.__doc__ = reader.__doc__
    return read


PRESETS: dict[str, Callable[[SpanView], GenAIFields | None]] = {
    name: _preset(reader) for name, reader in READERS.items()
}
"""Preset name -> reader, in the default order. A reader returns None when the span has nothing
of its convention, and fields without content (model, usage) when it has only those."""
