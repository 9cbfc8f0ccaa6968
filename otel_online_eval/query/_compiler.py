"""Compile a checked AST into a tree of closures over a ``SpanView``.

Everything that does not depend on the span is done here, once: regexes and LIKE patterns are
compiled, constant sub-expressions are folded, ``IN`` lists become sets, and the common shapes
(``field = 'literal'``, ``x IS NOT NULL``, ``a AND b``) get closures of their own. Per span, a
filter is a few Python calls and no allocation beyond what the view itself does.

The semantics (the reference evaluator in :mod:`otel_online_eval.query.reference` implements
the same rules independently; ``docs/filter-language.md`` is the user-facing statement):

- NULL is Python ``None``; a missing field, attribute, key or index is NULL.
- ``=`` is false when either side is NULL or the kinds differ (string, number, boolean, list,
  object; int and float are both numbers, bool is not); lists and objects compare element-wise,
  and inside them NULL equals NULL. ``!=`` is exactly ``NOT =``.
- ``< <= > >=`` order two numbers or two strings; anything else is false.
- Arithmetic needs two numbers; otherwise, on division by zero or on overflow, it is NULL.
- A condition is TRUE only when its value is the boolean TRUE (two-valued logic).
"""

from __future__ import annotations

import functools
import json
import operator
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from otel_online_eval.query import ast
from otel_online_eval.query._regex import compile_regex
from otel_online_eval.spanview import SpanView

if TYPE_CHECKING:
    from otel_online_eval.traceview import TraceView

__all__ = ["Getter", "Pred", "compile_cond", "compile_getter", "like_matcher"]

Getter = Callable[[SpanView], Any]
Pred = Callable[[SpanView], bool]

_MISSING: Any = object()
_SEQ = (list, tuple)
_NUM = (int, float)


# -- value semantics -------------------------------------------------------------------------


def _num(x: Any) -> bool:
    return isinstance(x, _NUM) and x.__class__ is not bool


def _deep_eq(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, str):
        return isinstance(b, str) and a == b
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, _NUM):
        return isinstance(b, _NUM) and a == b
    if isinstance(a, _SEQ):
        return (
            isinstance(b, _SEQ)
            and len(a) == len(b)
            and all(_deep_eq(x, y) for x, y in zip(a, b, strict=True))
        )
    if isinstance(a, Mapping):
        if not isinstance(b, Mapping) or len(a) != len(b):
            return False
        for key, value in a.items():
            other = b.get(key, _MISSING)
            if other is _MISSING or not _deep_eq(value, other):
                return False
        return True
    if isinstance(b, (str, _NUM, _SEQ, Mapping)):
        return False
    return type(a) is type(b) and bool(a == b)


def _eq(a: Any, b: Any) -> bool:
    """The language's ``=``."""
    if a is None or b is None:
        return False
    return _deep_eq(a, b)


def _ordered(op: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def compare(a: Any, b: Any) -> bool:
        if isinstance(a, str):
            return isinstance(b, str) and op(a, b)
        if _num(a):
            return _num(b) and op(a, b)
        return False

    return compare


_ORDERED: dict[str, Callable[[Any, Any], bool]] = {
    "<": _ordered(operator.lt),
    "<=": _ordered(operator.le),
    ">": _ordered(operator.gt),
    ">=": _ordered(operator.ge),
}
_FLIPPED = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "=": "=", "!=": "!="}


def _arith(op: str) -> Callable[[Any, Any], Any]:
    fn: Callable[[Any, Any], Any] = {
        "+": operator.add,
        "-": operator.sub,
        "*": operator.mul,
        "/": operator.truediv,
    }[op]
    divide = op == "/"

    def apply(a: Any, b: Any) -> Any:
        if not (_num(a) and _num(b)):
            return None
        if divide and b == 0:
            return None
        try:
            return fn(a, b)
        except OverflowError:
            return None

    return apply


def _subscript(target: Any, key: Any) -> Any:
    if isinstance(key, str):
        return target.get(key) if isinstance(target, Mapping) else None
    if isinstance(key, int) and not isinstance(key, bool) and isinstance(target, _SEQ):
        try:
            return target[key]
        except IndexError:
            return None
    return None


def _member_step(name: str) -> Callable[[Any], Any]:
    """``.name``: a key of an object, or (all digits) an index into a list."""
    index = int(name) if name.isascii() and name.isdigit() else None

    def step(value: Any) -> Any:
        if isinstance(value, Mapping):
            return value.get(name)
        if index is not None and isinstance(value, _SEQ):
            try:
                return value[index]
            except IndexError:
                return None
        return None

    return step


def _json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except (ValueError, RecursionError):
            return None
    return value


def _contains(container: Any, item: Any) -> bool:
    if item is None:
        return False
    if isinstance(container, str):
        return isinstance(item, str) and item in container
    if isinstance(container, _SEQ):
        return any(_eq(member, item) for member in container)
    return False


# -- LIKE ------------------------------------------------------------------------------------

_PERCENT: Any = object()
_UNDERSCORE: Any = object()


def _like_tokens(pattern: str) -> list[Any]:
    """Literal runs (str) and the wildcards; ``\\`` escapes the next character, and a trailing
    backslash stands for itself. Consecutive ``%`` collapse."""
    tokens: list[Any] = []
    run: list[str] = []
    i = 0
    n = len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\":
            run.append(pattern[i + 1] if i + 1 < n else "\\")
            i += 2
            continue
        if c in "%_":
            if run:
                tokens.append("".join(run))
                run = []
            if c == "_":
                tokens.append(_UNDERSCORE)
            elif not tokens or tokens[-1] is not _PERCENT:
                tokens.append(_PERCENT)
        else:
            run.append(c)
        i += 1
    if run:
        tokens.append("".join(run))
    return tokens


@functools.lru_cache(maxsize=256)
def like_matcher(pattern: str) -> Callable[[str], bool]:
    """A function telling whether a string matches the LIKE ``pattern`` (case-sensitive)."""
    tokens = _like_tokens(pattern)
    shape = tuple("%" if t is _PERCENT else "_" if t is _UNDERSCORE else "s" for t in tokens)
    if shape == ():
        return lambda s: s == ""
    if shape == ("s",):
        exact: str = tokens[0]
        return lambda s: s == exact
    if shape == ("%",):
        return lambda s: True
    if shape == ("s", "%"):
        prefix: str = tokens[0]
        return lambda s: s.startswith(prefix)
    if shape == ("%", "s"):
        suffix: str = tokens[1]
        return lambda s: s.endswith(suffix)
    if shape == ("%", "s", "%"):
        infix: str = tokens[1]
        return lambda s: infix in s
    if shape == ("s", "%", "s"):
        head: str = tokens[0]
        tail: str = tokens[2]
        size = len(head) + len(tail)
        return lambda s: len(s) >= size and s.startswith(head) and s.endswith(tail)
    parts = ["(?s)^"]
    for token in tokens:
        if token is _PERCENT:
            parts.append(".*")
        elif token is _UNDERSCORE:
            parts.append(".")
        else:
            parts.append(re2_escape(token))
    parts.append("$")
    regex = compile_regex("".join(parts))

    def match(s: str) -> bool:
        return regex.search(s.encode("utf-8", "surrogatepass")) is not None

    return match


def re2_escape(text: str) -> str:
    """``text`` as an RE2 literal: ASCII punctuation and controls escaped as ``\\x{..}``."""
    return "".join(c if (c.isalnum() or ord(c) > 127) else f"\\x{{{ord(c):x}}}" for c in text)


# -- fields ----------------------------------------------------------------------------------


def _events(view: SpanView) -> tuple[str, ...]:
    return tuple(event.name for event in view.events)


def _trace_field(read: Callable[[TraceView], Any]) -> Getter:
    """A ``trace.*`` field: ``read`` of the view's trace, NULL when the view has none."""

    def get(view: SpanView) -> Any:
        # getattr: a view of a span evaluated alone may have no ``trace`` attribute at all.
        trace = getattr(view, "trace", None)
        return None if trace is None else read(trace)

    return get


_FIELD_GETTERS: dict[str, Getter] = {
    "name": operator.attrgetter("name"),
    "kind": operator.attrgetter("kind"),
    "status.code": operator.attrgetter("status_code"),
    "status.message": operator.attrgetter("status_message"),
    "duration_ms": operator.attrgetter("duration_ms"),
    "start_time": operator.attrgetter("start_time_ns"),
    "end_time": operator.attrgetter("end_time_ns"),
    "is_root": operator.attrgetter("is_root"),
    "trace_id": operator.attrgetter("trace_id_hex"),
    "span_id": operator.attrgetter("span_id_hex"),
    "parent_span_id": operator.attrgetter("parent_span_id_hex"),
    "input": operator.attrgetter("genai.input"),
    "output": operator.attrgetter("genai.output"),
    "model": operator.attrgetter("genai.model"),
    "scope.name": operator.attrgetter("scope_name"),
    "scope.version": operator.attrgetter("scope_version"),
    "events": _events,
    "trace.span_count": _trace_field(operator.attrgetter("span_count")),
    "trace.error_count": _trace_field(operator.attrgetter("error_count")),
    "trace.duration_ms": _trace_field(operator.attrgetter("duration_ms")),
    "trace.llm_calls": _trace_field(lambda trace: len(trace.llm_calls)),
    "trace.tool_calls": _trace_field(lambda trace: len(trace.tool_calls)),
    "trace.input_tokens": _trace_field(operator.attrgetter("input_tokens")),
    "trace.output_tokens": _trace_field(operator.attrgetter("output_tokens")),
    "trace.span_names": _trace_field(operator.attrgetter("span_names")),
    "trace.complete": _trace_field(operator.attrgetter("complete")),
}


def _attribute_getter(node: ast.AttributeRef) -> Getter:
    mapping = operator.attrgetter(node.source)
    parts = node.parts
    if len(parts) == 1:
        key = parts[0]
        if node.source == "attributes":

            def attribute(view: SpanView) -> Any:
                return view.attributes.get(key)

            return attribute

        def resource(view: SpanView) -> Any:
            return view.resource.get(key)

        return resource
    # Longest existing key first; the rest of the parts is a path into its value.
    candidates = tuple(
        (".".join(parts[:i]), tuple(_member_step(p) for p in parts[i:]))
        for i in range(len(parts), 0, -1)
    )

    def dotted(view: SpanView) -> Any:
        attrs = mapping(view)
        for key, steps in candidates:
            value = attrs.get(key, _MISSING)
            if value is not _MISSING:
                for step in steps:
                    value = step(value)
                return value
        return None

    return dotted


# -- the compiler ----------------------------------------------------------------------------


def _is_static(node: ast.Node) -> bool:
    """True when ``node`` does not depend on the span or the clock."""
    if isinstance(node, (ast.Field, ast.AttributeRef)):
        return False
    if isinstance(node, ast.Call) and node.name == "now":
        return False
    return all(_is_static(child) for child in ast.children(node))


def _constant(value: Any) -> Getter:
    return lambda view: value


def compile_getter(node: ast.Node) -> Getter:
    """A function from a span to the value of ``node``; may raise only on a broken view."""
    if _is_static(node) and not isinstance(node, ast.Literal):
        return _constant(_getter(node)(_NO_VIEW))
    return _getter(node)


def compile_cond(node: ast.Node) -> Pred:
    """A function from a span to whether ``node`` is TRUE; returns a real ``bool``."""
    if _is_static(node):
        value = _getter(node)(_NO_VIEW) is True
        return lambda view: value
    return _cond(node)


class _NoView(SpanView):
    """Stands in for a span while folding constants; never read."""

    __slots__ = ()


_NO_VIEW = _NoView()


def _static_value(node: ast.Node) -> tuple[bool, Any]:
    if _is_static(node):
        return True, _getter(node)(_NO_VIEW)
    return False, None


def _getter(node: ast.Node) -> Getter:
    if isinstance(node, ast.Literal):
        return _constant(node.value)
    if isinstance(node, ast.Field):
        return _FIELD_GETTERS[node.name]
    if isinstance(node, ast.AttributeRef):
        return _attribute_getter(node)
    if isinstance(node, ast.Member):
        target = compile_getter(node.target)
        step = _member_step(node.name)
        return lambda view: step(target(view))
    if isinstance(node, ast.Subscript):
        target = compile_getter(node.target)
        static, key = _static_value(node.index)
        if static:
            if isinstance(key, str) or (isinstance(key, int) and not isinstance(key, bool)):
                return lambda view: _subscript(target(view), key)
            return _constant(None)  # a float, boolean or NULL index never finds anything
        index = compile_getter(node.index)
        return lambda view: _subscript(target(view), index(view))
    if isinstance(node, ast.Call):
        return _call(node)
    if isinstance(node, ast.Interval):
        return _constant(node.nanos)
    if isinstance(node, ast.Neg):
        operand = compile_getter(node.operand)

        def negate(view: SpanView) -> Any:
            x = operand(view)
            return -x if _num(x) else None

        return negate
    if isinstance(node, ast.BinaryOp):
        left = compile_getter(node.left)
        right = compile_getter(node.right)
        apply = _arith(node.op)
        return lambda view: apply(left(view), right(view))
    return _cond(node)


def _call(node: ast.Call) -> Getter:
    if node.name == "now":
        return lambda view: time.time_ns()
    arg = compile_getter(node.args[0])
    if node.name == "json":
        return lambda view: _json(arg(view))
    if node.name == "lower":

        def lower(view: SpanView) -> Any:
            x = arg(view)
            return x.lower() if isinstance(x, str) else None

        return lower
    if node.name == "upper":

        def upper(view: SpanView) -> Any:
            x = arg(view)
            return x.upper() if isinstance(x, str) else None

        return upper
    if node.name == "length":

        def length(view: SpanView) -> Any:
            x = arg(view)
            return len(x) if isinstance(x, (str, list, tuple)) else None

        return length
    raise ValueError(f"unknown function {node.name}")  # pragma: no cover - parse() checks


def _cond(node: ast.Node) -> Pred:
    if isinstance(node, ast.And):
        return _all([compile_cond(op) for op in node.operands])
    if isinstance(node, ast.Or):
        return _any([compile_cond(op) for op in node.operands])
    if isinstance(node, ast.Not):
        inner = compile_cond(node.operand)
        return lambda view: not inner(view)
    if isinstance(node, ast.Compare):
        pred = _compare(node)
        if node.op == "!=":
            return lambda view: not pred(view)
        return pred
    if isinstance(node, ast.IsNull):
        operand = compile_getter(node.operand)
        if node.negated:
            return lambda view: operand(view) is not None
        return lambda view: operand(view) is None
    if isinstance(node, ast.In):
        return _negate(_in(node), node.negated)
    if isinstance(node, ast.Like):
        return _negate(_like(node), node.negated)
    if isinstance(node, ast.Match):
        return _negate(_match(node), node.negated)
    if isinstance(node, ast.Contains):
        return _negate(_contains_pred(node), node.negated)
    getter = compile_getter(node)
    return lambda view: getter(view) is True


def _negate(pred: Pred, negated: bool) -> Pred:
    if negated:
        return lambda view: not pred(view)
    return pred


def _all(preds: list[Pred]) -> Pred:
    if len(preds) == 2:
        a, b = preds
        return lambda view: a(view) and b(view)
    if len(preds) == 3:
        a, b, c = preds
        return lambda view: a(view) and b(view) and c(view)
    items = tuple(preds)

    def every(view: SpanView) -> bool:
        for pred in items:
            if not pred(view):
                return False
        return True

    return every


def _any(preds: list[Pred]) -> Pred:
    if len(preds) == 2:
        a, b = preds
        return lambda view: a(view) or b(view)
    items = tuple(preds)

    def some(view: SpanView) -> bool:
        for pred in items:
            if pred(view):
                return True
        return False

    return some


def _compare(node: ast.Compare) -> Pred:
    """``=`` (also for ``!=``, which the caller negates) and the orderings."""
    op: str = "=" if node.op == "!=" else node.op
    left_node, right_node = node.left, node.right
    static, const = _static_value(right_node)
    if not static:
        static, const = _static_value(left_node)
        if static:
            left_node, right_node = right_node, left_node
            op = _FLIPPED[op]
    if static:
        return _compare_const(op, compile_getter(left_node), const)
    left = compile_getter(left_node)
    right = compile_getter(right_node)
    if op == "=":
        return lambda view: _eq(left(view), right(view))
    fn = _ORDERED[op]
    return lambda view: fn(left(view), right(view))


def _compare_const(op: str, get: Getter, const: Any) -> Pred:
    """``get(view) <op> const`` with the type test done once, here."""
    if const is None:
        return lambda view: False
    if op == "=":
        if isinstance(const, str):
            return lambda view: get(view) == const
        if isinstance(const, bool):
            return lambda view: get(view) is const
        if isinstance(const, _NUM):

            def num_eq(view: SpanView) -> bool:
                x = get(view)
                return x == const and x.__class__ is not bool and isinstance(x, _NUM)

            return num_eq
        return lambda view: _eq(get(view), const)
    fn = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}[op]
    if isinstance(const, str):

        def str_order(view: SpanView) -> bool:
            x = get(view)
            return isinstance(x, str) and fn(x, const)

        return str_order
    if _num(const):

        def num_order(view: SpanView) -> bool:
            x = get(view)
            return isinstance(x, _NUM) and x.__class__ is not bool and fn(x, const)

        return num_order
    return lambda view: False


def _in(node: ast.In) -> Pred:
    get = compile_getter(node.operand)
    strs: set[str] = set()
    nums: set[int | float] = set()
    bools: set[bool] = set()
    others: list[Any] = []
    dynamic: list[Getter] = []
    for option in node.options:
        static, value = _static_value(option)
        if not static:
            dynamic.append(compile_getter(option))
        elif value is None:
            continue
        elif isinstance(value, str):
            strs.add(value)
        elif isinstance(value, bool):
            bools.add(value)
        elif _num(value) and value == value:  # NaN never equals anything
            nums.add(value)
        elif not _num(value):
            others.append(value)
    str_set = frozenset(strs)
    num_set = frozenset(nums)
    bool_set = frozenset(bools)
    other_values = tuple(others)
    dynamic_getters = tuple(dynamic)
    if not (nums or bools or others or dynamic):

        def in_strings(view: SpanView) -> bool:
            x = get(view)
            return isinstance(x, str) and x in str_set

        return in_strings

    def is_in(view: SpanView) -> bool:
        x = get(view)
        if x is None:
            return False
        if isinstance(x, str):
            if x in str_set:
                return True
        elif isinstance(x, bool):
            if x in bool_set:
                return True
        elif isinstance(x, _NUM):
            if x in num_set:
                return True
        else:
            for value in other_values:
                if _eq(x, value):
                    return True
        for option in dynamic_getters:
            if _eq(x, option(view)):
                return True
        return False

    return is_in


def _like(node: ast.Like) -> Pred:
    get = compile_getter(node.operand)
    folded = node.case_insensitive
    static, pattern = _static_value(node.pattern)
    if static:
        if not isinstance(pattern, str):
            return lambda view: False
        matcher = like_matcher(pattern.lower() if folded else pattern)
        if folded:

            def ilike(view: SpanView) -> bool:
                x = get(view)
                return isinstance(x, str) and matcher(x.lower())

            return ilike

        def like(view: SpanView) -> bool:
            x = get(view)
            return isinstance(x, str) and matcher(x)

        return like
    get_pattern = compile_getter(node.pattern)

    def like_dynamic(view: SpanView) -> bool:
        x = get(view)
        if not isinstance(x, str):
            return False
        p = get_pattern(view)
        if not isinstance(p, str):
            return False
        if folded:
            return like_matcher(p.lower())(x.lower())
        return like_matcher(p)(x)

    return like_dynamic


def _match(node: ast.Match) -> Pred:
    get = compile_getter(node.operand)
    pattern = node.pattern.value
    assert isinstance(pattern, str)
    regex = compile_regex(pattern)

    def match(view: SpanView) -> bool:
        x = get(view)
        return isinstance(x, str) and regex.search(x.encode("utf-8", "surrogatepass")) is not None

    return match


def _contains_pred(node: ast.Contains) -> Pred:
    get = compile_getter(node.operand)
    static, item = _static_value(node.item)
    if static:
        if item is None:
            return lambda view: False
        if isinstance(item, str):

            def contains_str(view: SpanView) -> bool:
                x = get(view)
                if isinstance(x, str):
                    return item in x
                if isinstance(x, _SEQ):
                    return item in x  # only an equal string is == to a string
                return False

            return contains_str
        return lambda view: _contains(get(view), item)
    get_item = compile_getter(node.item)
    return lambda view: _contains(get(view), get_item(view))
