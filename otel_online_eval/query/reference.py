"""A plain tree-walking evaluator of the filter language, for testing the compiler.

It shares nothing with :mod:`otel_online_eval.query._compiler` but the syntax tree: values are
classified by kind and every rule of the language is written out once more, the obvious way
(LIKE by dynamic programming, regexes through RE2's ``str`` interface, no constant folding, no
specialisation). It is slow and meant to be obviously right; the property tests check that the
compiled closures agree with it on random expressions and spans.

Unlike the compiled forms, it lets exceptions escape, so a test notices them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

import re2

from otel_online_eval.query import ast
from otel_online_eval.spanview import SpanView

__all__ = ["evaluate", "truthy"]

_ABSENT: Any = object()


def truthy(value: Any) -> bool:
    """Whether a value counts as TRUE when used as a condition: only the boolean TRUE does."""
    return value is True


def evaluate(node: ast.Node, view: SpanView) -> Any:
    """The value of ``node`` for ``view``: None for NULL, a bool for conditions."""
    match node:
        case ast.Literal(value=value):
            return value
        case ast.Field(name=name):
            return _field(name, view)
        case ast.AttributeRef(source=source, parts=parts, dotted=dotted):
            mapping = view.attributes if source == "attributes" else view.resource
            if not dotted:
                return mapping.get(parts[0])
            for cut in range(len(parts), 0, -1):
                key = ".".join(parts[:cut])
                if key in mapping:
                    value = mapping[key]
                    for name in parts[cut:]:
                        value = _member(value, name)
                    return value
            return None
        case ast.Member(target=target, name=name):
            return _member(evaluate(target, view), name)
        case ast.Subscript(target=target, index=index):
            return _index(evaluate(target, view), evaluate(index, view))
        case ast.Call(name=name, args=args):
            return _call(name, [evaluate(a, view) for a in args])
        case ast.Interval(nanos=nanos):
            return nanos
        case ast.Neg(operand=operand):
            value = evaluate(operand, view)
            return -value if _kind(value) == "number" else None
        case ast.BinaryOp(op=op, left=left, right=right):
            return _arithmetic(op, evaluate(left, view), evaluate(right, view))
        case ast.Compare(op=op, left=left, right=right):
            a = evaluate(left, view)
            b = evaluate(right, view)
            if op == "=":
                return _equal(a, b)
            if op == "!=":
                return not _equal(a, b)
            return _order(op, a, b)
        case ast.IsNull(operand=operand, negated=negated):
            return (evaluate(operand, view) is None) != negated
        case ast.In(operand=operand, options=options, negated=negated):
            value = evaluate(operand, view)
            found = any(_equal(value, evaluate(option, view)) for option in options)
            return found != negated
        case ast.Like(operand=operand, pattern=pattern, negated=negated, case_insensitive=ci):
            text = evaluate(operand, view)
            pat = evaluate(pattern, view)
            ok = isinstance(text, str) and isinstance(pat, str)
            if ok and ci:
                text, pat = text.lower(), pat.lower()
            return (ok and _like(text, pat)) != negated
        case ast.Match(operand=operand, pattern=pattern, negated=negated):
            text = evaluate(operand, view)
            ok = isinstance(text, str) and re2.search(str(pattern.value), text) is not None
            return ok != negated
        case ast.Contains(operand=operand, item=item, negated=negated):
            return _contains(evaluate(operand, view), evaluate(item, view)) != negated
        case ast.Not(operand=operand):
            return not truthy(evaluate(operand, view))
        case ast.And(operands=operands):
            return all(truthy(evaluate(o, view)) for o in operands)
        case ast.Or(operands=operands):
            return any(truthy(evaluate(o, view)) for o in operands)
    raise TypeError(f"not a filter node: {node!r}")


def _field(name: str, view: SpanView) -> Any:
    if name.startswith("trace."):
        return _trace_field(name, view)
    if name == "name":
        return view.name
    if name == "kind":
        return view.kind
    if name == "status.code":
        return view.status_code
    if name == "status.message":
        return view.status_message
    if name == "duration_ms":
        return (view.end_time_ns - view.start_time_ns) / 1e6
    if name == "start_time":
        return view.start_time_ns
    if name == "end_time":
        return view.end_time_ns
    if name == "is_root":
        return view.parent_span_id is None
    if name == "trace_id":
        return format(view.trace_id, "032x")
    if name == "span_id":
        return format(view.span_id, "016x")
    if name == "parent_span_id":
        parent = view.parent_span_id
        return None if parent is None else format(parent, "016x")
    if name == "input":
        return view.genai.input
    if name == "output":
        return view.genai.output
    if name == "model":
        return view.genai.model
    if name == "scope.name":
        return view.scope_name
    if name == "scope.version":
        return view.scope_version
    if name == "events":
        return tuple(e.name for e in view.events)
    raise KeyError(name)


def _trace_field(name: str, view: SpanView) -> Any:
    """A ``trace.*`` field worked out from the trace's spans where it can be; the model and
    tool calls come from the trace view, as their finding is the extraction presets' job."""
    trace = getattr(view, "trace", None)
    if trace is None:
        return None
    spans = sorted(trace.spans, key=lambda s: (s.start_time_ns, s.end_time_ns))
    if name == "trace.span_count":
        return len(spans)
    if name == "trace.error_count":
        return len([s for s in spans if s.status_code == "ERROR"])
    if name == "trace.duration_ms":
        return (max(s.end_time_ns for s in spans) - min(s.start_time_ns for s in spans)) / 1e6
    if name == "trace.llm_calls":
        return len(trace.llm_calls)
    if name == "trace.tool_calls":
        return len(trace.tool_calls)
    if name in ("trace.input_tokens", "trace.output_tokens"):
        which = "input_tokens" if name == "trace.input_tokens" else "output_tokens"
        counts = [getattr(c, which) for c in trace.llm_calls]
        known = [n for n in counts if n is not None]
        return sum(known) if known else None
    if name == "trace.span_names":
        names: list[str] = []
        for span in spans:  # each name once, in start order
            if span.name not in names:
                names.append(span.name)
        return tuple(names)
    if name == "trace.complete":
        return trace.complete
    raise KeyError(name)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if value is True or value is False:
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "list"
    if isinstance(value, Mapping):
        return "object"
    return "other:" + type(value).__qualname__


def _structurally_equal(a: Any, b: Any) -> bool:
    kind = _kind(a)
    if kind != _kind(b):
        return False
    if kind == "list":
        if len(a) != len(b):
            return False
        return all(_structurally_equal(a[i], b[i]) for i in range(len(a)))
    if kind == "object":
        if set(a.keys()) != set(b.keys()):
            return False
        return all(_structurally_equal(a[k], b[k]) for k in a)
    if kind == "null":
        return True
    return bool(a == b)


def _equal(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return False
    return _structurally_equal(a, b)


def _order(op: str, a: Any, b: Any) -> bool:
    kind = _kind(a)
    if kind not in ("number", "string") or kind != _kind(b):
        return False
    if op == "<":
        return bool(a < b)
    if op == "<=":
        return bool(a <= b)
    if op == ">":
        return bool(a > b)
    return bool(a >= b)


def _arithmetic(op: str, a: Any, b: Any) -> Any:
    if _kind(a) != "number" or _kind(b) != "number":
        return None
    try:
        if op == "+":
            return a + b
        if op == "-":
            return a - b
        if op == "*":
            return a * b
        if b == 0:
            return None
        return a / b
    except OverflowError:
        return None


def _member(value: Any, name: str) -> Any:
    if isinstance(value, Mapping):
        return value[name] if name in value else None
    if isinstance(value, (list, tuple)) and name.isascii() and name.isdigit():
        position = int(name)
        return value[position] if position < len(value) else None
    return None


def _index(value: Any, key: Any) -> Any:
    kind = _kind(key)
    if kind == "string" and isinstance(value, Mapping):
        return value[key] if key in value else None
    if kind == "number" and isinstance(key, int) and isinstance(value, (list, tuple)):
        if -len(value) <= key < len(value):
            return value[key]
    return None


def _call(name: str, args: Sequence[Any]) -> Any:
    if name == "now":
        return time.time_ns()
    (arg,) = args
    if name == "json":
        if not isinstance(arg, str):
            return arg
        try:
            return json.loads(arg)
        except (ValueError, RecursionError):
            return None
    if name in ("lower", "upper"):
        if not isinstance(arg, str):
            return None
        return arg.lower() if name == "lower" else arg.upper()
    if name == "length":
        return len(arg) if _kind(arg) in ("string", "list") else None
    raise KeyError(name)


def _contains(container: Any, item: Any) -> bool:
    if item is None:
        return False
    kind = _kind(container)
    if kind == "string":
        return isinstance(item, str) and container.find(item) >= 0
    if kind == "list":
        return any(_equal(member, item) for member in container)
    return False


def _like(text: str, pattern: str) -> bool:
    """SQL LIKE by dynamic programming over (pattern element, text position)."""
    elements: list[tuple[str, str]] = []  # ("lit", c) | ("one", "") | ("any", "")
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            elements.append(("lit", pattern[i + 1] if i + 1 < len(pattern) else "\\"))
            i += 2
            continue
        if c == "%":
            elements.append(("any", ""))
        elif c == "_":
            elements.append(("one", ""))
        else:
            elements.append(("lit", c))
        i += 1
    n = len(text)
    # reachable[j]: the elements so far can match text[:j]
    reachable = [True] + [False] * n
    for kind, char in elements:
        following = [False] * (n + 1)
        if kind == "any":
            seen = False
            for j in range(n + 1):
                seen = seen or reachable[j]
                following[j] = seen
        else:
            for j in range(n):
                if reachable[j] and (kind == "one" or text[j] == char):
                    following[j + 1] = True
        reachable = following
    return reachable[n]
