"""Property test: the compiled filter agrees with the reference evaluator.

Random expressions (built with their static types in mind, so the checker accepts them) run on
random real SDK spans whose attributes have mixed types and missing keys, some of them carrying a
random trace (for the ``trace.*`` fields) and some not. For each one:
``compile_filter(text)(view)`` is the reference's TRUE, ``compile_value(text)(view)`` is the
reference's value, and ``why_false`` names a part of the text that is false on its own.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otel_online_eval._errors import FilterSyntaxError
from otel_online_eval.query import compile_filter, compile_value, parse
from otel_online_eval.query.reference import evaluate
from otel_online_eval.spanview import SdkSpanView
from otel_online_eval.traceview import TraceView
from tests.spans import view
from tests.test_query_trace import Anchored

# -- spans ------------------------------------------------------------------------------------

ALPHABET = "ab%_\\A. '\né"
KEYS = ["a", "b", "s", "n", "f", "flag", "a.b", "a.b.c", "js", "tags", "nums", "pat", "obj"]

texts = st.text(alphabet=ALPHABET, max_size=6)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.floats(-10, 10, allow_nan=False) | texts,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from(["a", "b", "0", "role"]), children, max_size=3)
    ),
    max_leaves=6,
)
scalars = st.one_of(
    texts,
    st.integers(-5, 5),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(-5, 5),
    st.booleans(),
)
attribute_values = st.one_of(
    scalars,
    st.lists(texts, max_size=3).map(tuple),
    st.lists(st.integers(-3, 3), max_size=3).map(tuple),
    st.lists(st.floats(-3, 3), max_size=3).map(tuple),
    st.lists(st.booleans(), max_size=3).map(tuple),
    json_values.map(json.dumps),
    st.dictionaries(st.sampled_from(["b", "c", "0"]), scalars, max_size=2),
    st.sampled_from(["{bad json", "[1, 2", "42", "null", "true", '"str"']),
)


@st.composite
def spans(draw: st.DrawFn) -> dict[str, Any]:
    """Arguments for ``view()``; the span is built in the test (the SDK draws random ids)."""
    attributes = draw(
        st.dictionaries(st.sampled_from(KEYS), attribute_values, min_size=3, max_size=10)
    )
    if draw(st.booleans()):
        attributes["gen_ai.output.messages"] = json.dumps(
            [{"role": "assistant", "parts": [{"type": "text", "content": draw(texts)}]}]
        )
    start = draw(st.integers(1_600_000_000_000_000_000, 1_700_000_000_000_000_000))
    return dict(
        name=draw(st.sampled_from(["chat", "Chat a_b", "tool%", ""])),
        attributes=attributes,
        parent=draw(st.sampled_from([None, "root"])),
        kind=draw(st.sampled_from(["INTERNAL", "CLIENT", "SERVER"])),
        status=draw(st.sampled_from([None, "OK", "ERROR"])),
        events=draw(st.lists(st.sampled_from(["exception", "a", "b"]), max_size=3)),
        resource={"service.name": draw(st.sampled_from(["svc", "a"]))},
        start_time=start,
        end_time=start + draw(st.integers(0, 5_000_000_000)),
    )


@st.composite
def trace_spans(draw: st.DrawFn) -> dict[str, Any]:
    """A span of the trace: like ``spans()``, sometimes a model call (with or without token
    usage) or a tool call, so that every trace field varies."""
    span = draw(spans())
    attributes = span["attributes"]
    role = draw(st.sampled_from(["plain", "chat", "tool"]))
    if role == "chat":
        attributes["gen_ai.operation.name"] = "chat"
        for key in ("gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens"):
            tokens = draw(st.none() | st.integers(0, 100))
            if tokens is not None:
                attributes[key] = tokens
    elif role == "tool":
        attributes["gen_ai.operation.name"] = "execute_tool"
        attributes["gen_ai.tool.name"] = draw(st.sampled_from(["get_weather", "search"]))
        attributes["gen_ai.tool.call.arguments"] = "{}"  # what makes the span a tool call
    return span


@st.composite
def scenes(draw: st.DrawFn) -> dict[str, Any]:
    """An anchor span and what it carries: no ``trace`` attribute value at all (``plain``), a
    None trace, or a trace of the anchor and 0 to 3 more spans."""
    carries = draw(st.sampled_from(["plain", "none", "trace", "trace"]))
    trace = None
    if carries == "trace":
        trace = {
            "others": draw(st.lists(trace_spans(), max_size=3)),
            "complete": draw(st.booleans()),
        }
    return {"anchor": draw(spans()), "carries": carries, "trace": trace}


def build(scene: dict[str, Any]) -> SdkSpanView:
    """The scene's view; built in the test, as the SDK draws random ids."""
    anchor = view(**scene["anchor"])
    if scene["carries"] == "plain":
        return anchor
    if scene["trace"] is None:
        return Anchored(anchor, None)
    others = [view(**other) for other in scene["trace"]["others"]]
    return Anchored(anchor, TraceView([anchor, *others], complete=scene["trace"]["complete"]))


# -- expressions: (text, static type) ---------------------------------------------------------

STR, NUM, BOOL, LIST, ANY = "str", "num", "bool", "list", "any"
Expr = tuple[str, str]


def _quote(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


string_literals = texts.map(lambda s: (_quote(s), STR))
number_literals = st.one_of(
    st.integers(-5, 5), st.integers(-(2**70), 2**70), st.floats(-5, 5).map(lambda f: round(f, 3))
).map(lambda n: (repr(n), NUM))
bool_literals = st.sampled_from([("TRUE", BOOL), ("FALSE", BOOL)])

attribute_refs = st.one_of(
    st.sampled_from([*KEYS, "zz"]).map(lambda k: (f"attributes[{_quote(k)}]", ANY)),
    st.sampled_from(["a", "b", "a.b", "a.b.c", "obj.b", "obj.0", "tags.1", "n", "js"]).map(
        lambda k: (f"attributes.{k}", ANY)
    ),
    st.sampled_from(["resource['service.name']", "resource.service.name", "resource.zz"]).map(
        lambda t: (t, ANY)
    ),
)
postfix = st.lists(
    st.sampled_from(["[0]", "[1]", "[-1]", "['a']", "['role']", ".a", ".b", ".0", ".role"]),
    max_size=3,
).map("".join)
json_refs = st.tuples(st.sampled_from(["js", "s", "n", "obj", "tags", "zz"]), postfix).map(
    lambda t: (f"json(attributes[{_quote(t[0])}]){t[1]}", ANY)
)
typed_fields = st.sampled_from(
    [
        ("name", STR),
        ("status.message", STR),
        ("lower(kind)", STR),
        ("output", STR),
        ("input", STR),
        ("parent_span_id", STR),
        ("scope.name", STR),
        ("duration_ms", NUM),
        ("start_time", NUM),
        ("end_time - start_time", NUM),
        ("is_root", BOOL),
        ("events", LIST),
        ("events[0]", ANY),
    ]
)
trace_fields = st.sampled_from(
    [
        ("trace.span_count", NUM),
        ("trace.error_count", NUM),
        ("trace.duration_ms", NUM),
        ("trace.llm_calls", NUM),
        ("trace.tool_calls", NUM),
        ("trace.input_tokens", NUM),
        ("trace.output_tokens", NUM),
        ("trace.span_names", LIST),
        ("trace.span_names[0]", ANY),
        ("trace.complete", BOOL),
    ]
)
span_name_literals = st.sampled_from(["chat", "tool%", "Chat a_b", ""]).map(
    lambda s: (_quote(s), STR)  # names the spans have, so CONTAINS on trace.span_names hits
)
leaves: st.SearchStrategy[Expr] = st.one_of(
    attribute_refs,
    attribute_refs,
    json_refs,
    typed_fields,
    trace_fields,
    string_literals,
    span_name_literals,
    number_literals,
    bool_literals,
)


def _extend(children: st.SearchStrategy[Expr]) -> st.SearchStrategy[Expr]:
    def of(types: tuple[str, ...]) -> st.SearchStrategy[Expr]:
        return children.filter(lambda e: e[1] in types)

    numeric = of((NUM, ANY))
    return st.one_of(
        st.tuples(numeric, st.sampled_from(["+", "-", "*", "/"]), numeric).map(
            lambda t: (f"({t[0][0]}) {t[1]} ({t[2][0]})", NUM)
        ),
        numeric.map(lambda e: (f"-({e[0]})", NUM)),
        of((STR, ANY)).map(lambda e: (f"lower({e[0]})", STR)),
        of((STR, ANY)).map(lambda e: (f"upper({e[0]})", STR)),
        of((STR, LIST, ANY)).map(lambda e: (f"length({e[0]})", NUM)),
        children.map(lambda e: (f"json({e[0]})", ANY)),
        st.tuples(of((LIST, ANY)), st.sampled_from(["[0]", "[-1]", ".0", "['a']", ".a"])).map(
            lambda t: (f"({t[0][0]}){t[1]}", ANY)
        ),
    )


values: st.SearchStrategy[Expr] = st.one_of(leaves, st.recursive(leaves, _extend, max_leaves=4))


def _compatible(t: str) -> st.SearchStrategy[Expr]:
    """Values that may be compared with a value of type ``t`` without a static error."""
    if t == ANY:
        return values
    return values.filter(lambda e: e[1] in (t, ANY))


@st.composite
def comparisons(draw: st.DrawFn) -> str:
    left = draw(values)
    ops = ["=", "==", "!=", "<>"]
    if left[1] in (STR, NUM, ANY):
        ops += ["<", "<=", ">", ">="]
    op = draw(st.sampled_from(ops))
    right = draw(_compatible(left[1]))
    if op in ("<", "<=", ">", ">=") and right[1] not in (STR, NUM, ANY):
        op = "="
    return f"({left[0]}) {op} ({right[0]})"


@st.composite
def predicates(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["null", "in", "like", "match", "contains", "bare"]))
    if kind == "null":
        return f"({draw(values)[0]}) IS {draw(st.sampled_from(['', 'NOT ']))}NULL"
    if kind == "in":
        left = draw(values)
        options = draw(st.lists(_compatible(left[1]), min_size=1, max_size=3))
        negated = draw(st.sampled_from(["", "NOT "]))
        return f"({left[0]}) {negated}IN ({', '.join(o[0] for o in options)})"
    if kind == "like":
        left = draw(_compatible(STR))
        word = draw(st.sampled_from(["LIKE", "ILIKE", "NOT LIKE", "NOT ILIKE"]))
        pattern = draw(
            st.one_of(
                st.text(alphabet="ab%_\\A\n", max_size=5).map(_quote),
                st.just("attributes.pat"),
                st.just("lower(attributes['pat'])"),
            )
        )
        return f"({left[0]}) {word} {pattern}"
    if kind == "match":
        left = draw(_compatible(STR))
        word = draw(st.sampled_from(["MATCH", "NOT MATCH"]))
        regex = draw(st.sampled_from(["a", "^a", "b$", "(?i)A", "a.b", "\\d", "(a+)+$", "", "é"]))
        return f"({left[0]}) {word} {_quote(regex)}"
    if kind == "contains":
        left = draw(values.filter(lambda e: e[1] in (STR, LIST, ANY)))
        item = draw(_compatible(STR) if left[1] == STR else values)
        word = draw(st.sampled_from(["CONTAINS", "INCLUDES", "NOT CONTAINS"]))
        return f"({left[0]}) {word} ({item[0]})"
    return draw(values.filter(lambda e: e[1] in (BOOL, ANY)))[0]


atoms = st.one_of(comparisons(), predicates())
conditions: st.SearchStrategy[str] = st.recursive(
    atoms,
    lambda children: st.one_of(
        children.map(lambda c: f"NOT ({c})"),
        st.lists(children, min_size=2, max_size=4).map(lambda cs: " AND ".join(cs)),
        st.lists(children, min_size=2, max_size=3).map(lambda cs: f"({' AND '.join(cs)})"),
        st.lists(children, min_size=2, max_size=3).map(lambda cs: f"({' OR '.join(cs)})"),
    ),
    max_leaves=5,
)


# -- the properties ---------------------------------------------------------------------------


def _same(a: Any, b: Any) -> bool:
    """Equal, with the same types all the way down (1 is not 1.0 is not True); NaN is NaN."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, Mapping):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


SETTINGS = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@SETTINGS
@given(scene=scenes(), texts_=st.lists(conditions, min_size=1, max_size=4))
def test_compiled_filter_matches_reference(scene: dict[str, Any], texts_: list[str]) -> None:
    built = build(scene)
    for text in texts_:
        compiled = compile_filter(text)
        expected = evaluate(parse(text), built)
        assert compiled(built) is (expected is True), text
        assert _same(compile_value(text)(built), expected), text
        why = compiled.why_false(built)
        if expected is True:
            assert why is None, text
        else:
            assert why is not None and why in text, (text, why)
            assert compile_filter(why)(built) is False, (text, why)
        assert compiled.errors == 0


@SETTINGS
@given(scene=scenes(), exprs=st.lists(values, min_size=1, max_size=6))
def test_compiled_value_matches_reference(scene: dict[str, Any], exprs: list[Expr]) -> None:
    built = build(scene)
    for text, _ in exprs:
        expected = evaluate(parse(text), built)
        got = compile_value(text)(built)
        assert _same(got, expected), (text, got, expected)


@settings(max_examples=200, deadline=None)
@given(
    text=st.text(alphabet="ab%_\\\n", max_size=8), pattern=st.text(alphabet="ab%_\\", max_size=6)
)
def test_like_matches_reference(text: str, pattern: str) -> None:
    span = _plain_span()
    for word in ("LIKE", "ILIKE", "NOT LIKE"):
        clause = f"{_quote(text)} {word} {_quote(pattern)}"
        assert compile_filter(clause)(span) is evaluate(parse(clause), span), clause


_PLAIN: list[SdkSpanView] = []


def _plain_span() -> SdkSpanView:
    if not _PLAIN:
        _PLAIN.append(view("plain"))
    return _PLAIN[0]


TOKENS = [
    "name",
    "kind",
    "attributes",
    "resource",
    "status",
    "scope",
    "events",
    "is_root",
    "trace",
    "trace.span_names",
    "trace.complete",
    "json",
    "lower",
    "length",
    "now",
    "INTERVAL",
    "hour",
    "AND",
    "OR",
    "NOT",
    "IS",
    "NULL",
    "IN",
    "LIKE",
    "ILIKE",
    "MATCH",
    "CONTAINS",
    "TRUE",
    "FALSE",
    "(",
    ")",
    "[",
    "]",
    ",",
    ".",
    "=",
    "!=",
    "<",
    ">=",
    "+",
    "-",
    "*",
    "/",
    "'a%'",
    "'('",
    '"x"',
    "'",
    "1",
    "2.5",
    "1e999",
    "0",
    "x",
    "a.b",
]


@settings(max_examples=500, deadline=None)
@given(parts=st.lists(st.sampled_from(TOKENS), max_size=12), sep=st.sampled_from([" ", ""]))
def test_any_text_either_compiles_or_raises_a_filter_syntax_error(
    parts: list[str], sep: str
) -> None:
    text = sep.join(parts)
    try:
        f = compile_filter(text)
    except FilterSyntaxError as error:
        assert 0 <= error.position <= len(text)
        return
    span = _plain_span()
    assert f(span) in (True, False)
    assert f.errors == 0
    why = f.why_false(span)
    assert why is None or why in text
