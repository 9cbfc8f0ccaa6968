"""The filter language's ``trace.*`` fields, on real agent traces: each field's value, CONTAINS
on the span names, NULL for a span without its trace, the errors for unknown trace fields, and
``uses_trace_fields``."""

from __future__ import annotations

from typing import Any

import pytest

from otel_online_eval._errors import FilterSyntaxError
from otel_online_eval.query import compile_filter, compile_value, parse, uses_trace_fields
from otel_online_eval.query._fields import TRACE_FIELDS
from otel_online_eval.query.reference import evaluate
from otel_online_eval.spanview import SdkSpanView, SpanView
from otel_online_eval.traceview import TraceView
from tests.agent_traces import genai_agent, openinference_agent, spans_of
from tests.spans import view


class Anchored(SdkSpanView):
    """An SDK span seen with a trace (or None), the way a ``scope: trace`` rule's anchor is."""

    __slots__ = ("_trace",)

    def __init__(self, span: SdkSpanView, trace: TraceView | None) -> None:
        super().__init__(span.span)
        self._trace = trace

    @property
    def trace(self) -> TraceView | None:
        return self._trace


def anchored(spans: list[SdkSpanView], complete: bool = True) -> Anchored:
    """The trace's root, carrying the whole trace."""
    trace = TraceView(spans, complete=complete, reason="complete" if complete else "idle")
    root = trace.root
    assert isinstance(root, SdkSpanView)
    return Anchored(root, trace)


@pytest.fixture(scope="module")
def genai() -> Anchored:
    return anchored(spans_of(genai_agent))


@pytest.fixture(scope="module")
def openinference() -> Anchored:
    return anchored(spans_of(openinference_agent), complete=False)


def run(text: str, v: SpanView) -> bool:
    """The compiled filter's answer, checked against the reference evaluator."""
    f = compile_filter(text)
    got = f(v)
    assert got is (evaluate(parse(text), v) is True), text
    assert f.errors == 0
    return got


def value(text: str, v: SpanView) -> Any:
    got = compile_value(text)(v)
    expected = evaluate(parse(text), v)
    assert got == expected and type(got) is type(expected), (text, got, expected)
    return got


# -- values -----------------------------------------------------------------------------------


def test_the_fields_of_a_genai_agent_trace(genai: Anchored) -> None:
    trace = genai.trace
    assert trace is not None
    assert value("trace.span_count", genai) == 8
    assert value("trace.error_count", genai) == 1  # the get_weather call that timed out
    assert value("trace.duration_ms", genai) == trace.duration_ms > 0
    assert value("trace.llm_calls", genai) == 4
    assert value("trace.tool_calls", genai) == 3
    assert value("trace.input_tokens", genai) == 50 + 80 + 110 + 140
    assert value("trace.output_tokens", genai) == 4 * 10
    assert value("trace.span_names", genai) == (
        "invoke_agent weather",
        "chat gpt-test",
        "execute_tool get_weather",
        "execute_tool to_fahrenheit",
    )
    assert value("trace.complete", genai) is True


def test_the_fields_of_an_openinference_agent_trace(openinference: Anchored) -> None:
    assert value("trace.span_count", openinference) == 7
    assert value("trace.error_count", openinference) == 1
    assert value("trace.llm_calls", openinference) == 3
    assert value("trace.tool_calls", openinference) == 3
    assert value("trace.input_tokens", openinference) == 40 + 41 + 42
    assert value("trace.output_tokens", openinference) == 3 * 5
    assert value("trace.span_names", openinference) == (
        "Agent workflow",
        "response",
        "get_weather",
        "to_fahrenheit",
    )
    assert value("trace.complete", openinference) is False


def test_the_token_counts_are_null_when_no_model_call_reports_usage() -> None:
    alone = Anchored(view("handle"), TraceView([view("handle")]))
    assert value("trace.llm_calls", alone) == 0
    assert value("trace.input_tokens", alone) is None
    assert value("trace.output_tokens", alone) is None
    assert run("trace.input_tokens IS NULL AND trace.span_count = 1", alone)


GENAI_FILTERS: list[tuple[str, bool]] = [
    ("trace.span_count = 8", True),
    ("TRACE.SPAN_COUNT = 8", True),  # field names are case-insensitive
    ("trace.error_count > 0", True),
    ("trace.error_count = 0", False),
    ("trace.duration_ms < 60000", True),
    ("trace.llm_calls >= 4 AND trace.tool_calls = 3", True),
    ("trace.llm_calls > 10", False),
    ("trace.input_tokens > 300", True),
    ("trace.input_tokens + trace.output_tokens = 420", True),
    ("trace.output_tokens IS NOT NULL", True),
    ("trace.complete", True),
    ("NOT trace.complete", False),
    ("trace.complete = TRUE", True),
    ("trace.span_names CONTAINS 'chat gpt-test'", True),
    ("trace.span_names INCLUDES 'execute_tool to_fahrenheit'", True),
    ("trace.span_names CONTAINS 'chat'", False),  # a member, not a substring
    ("trace.span_names NOT CONTAINS 'nope'", True),
    ("trace.span_names NOT INCLUDES 'chat gpt-test'", False),
    ("trace.span_names CONTAINS name", True),  # the anchor's own name
    ("length(trace.span_names) = 4", True),
    ("trace.span_names[0] = 'invoke_agent weather'", True),
    ("trace.span_names[-1] LIKE 'execute_tool %'", True),
    ("trace.span_names[9] IS NULL", True),
    ("'chat gpt-test' IN (trace.span_names[1], 'x')", True),
    # anchor fields and trace fields together
    ("is_root AND name = 'invoke_agent weather' AND trace.tool_calls = 3", True),
    ("trace_id IS NOT NULL AND trace.span_count > 1", True),
    ("kind = 'CLIENT' OR trace.error_count = 1", True),
]


@pytest.mark.parametrize(("text", "expected"), GENAI_FILTERS)
def test_filters_on_a_trace(genai: Anchored, text: str, expected: bool) -> None:
    assert run(text, genai) is expected


def test_why_false_names_the_trace_condition(genai: Anchored) -> None:
    f = compile_filter("is_root AND trace.error_count = 0")
    assert f.why_false(genai) == "trace.error_count = 0"


# -- no trace: NULL -----------------------------------------------------------------------


@pytest.fixture(scope="module", params=["plain", "trace None"], ids=["plain span", "trace is None"])
def lone(request: pytest.FixtureRequest) -> SpanView:
    span = view("chat", status="ERROR")
    return span if request.param == "plain" else Anchored(span, None)


@pytest.mark.parametrize("field", sorted(TRACE_FIELDS))
def test_every_trace_field_is_null_without_a_trace(lone: SpanView, field: str) -> None:
    assert value(field, lone) is None
    assert run(f"{field} IS NULL", lone)
    assert not run(f"{field} IS NOT NULL", lone)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("trace.complete", False),
        ("NOT trace.complete", True),  # two-valued logic: NULL is not TRUE
        ("trace.complete = FALSE", False),
        ("trace.span_count > 0", False),
        ("trace.span_count != 1", True),  # != is exactly NOT =
        ("trace.span_names CONTAINS 'chat'", False),
        ("trace.span_names NOT CONTAINS 'chat'", True),
        ("length(trace.span_names) IS NULL", True),
        ("trace.input_tokens + 1 IS NULL", True),
        ("name = 'chat' AND trace.error_count IS NULL", True),
    ],
)
def test_filters_without_a_trace(lone: SpanView, text: str, expected: bool) -> None:
    assert run(text, lone) is expected


# -- errors -----------------------------------------------------------------------------------

KNOWN = "known trace fields: " + ", ".join(TRACE_FIELDS)

TRACE_ERRORS: list[tuple[str, str, int]] = [
    ("trace.foo = 1", f"unknown field 'trace.foo'; {KNOWN}", 1),
    ("is_root AND trace.spancount > 1", "did you mean 'trace.span_count'?", 13),
    ("trace.duration > 1", "unknown field 'trace.duration'", 1),
    ("trace.duration > 1", "did you mean 'trace.duration_ms'?", 1),
    ("trace.Errors > 1", "unknown field 'trace.Errors'; known trace fields", 1),
    ("trace = 'x'", "unknown field 'trace'; a trace field is written trace.<name>; " + KNOWN, 1),
    ("trace = 'x'", "did you mean 'trace_id'?", 1),
    ("name = 'a' OR trace IS NULL", "unknown field 'trace'", 15),
    ("trace.0 = 1", "unknown field 'trace'; a trace field is written", 1),
    ("span_count > 1", "unknown field 'span_count'; known fields: name, kind", 1),
    ("span_count > 1", "trace.* (rules with scope: trace); did you mean 'trace.span_count'?", 1),
    # the static types
    ("trace.span_count", "a filter must be a condition, but trace.span_count is a number", 1),
    ("trace.complete = 1", "cannot compare trace.complete (a boolean) with 1 (a number)", 18),
    ("trace.span_count = '8'", "cannot compare trace.span_count (a number) with '8'", 20),
    ("trace.span_names = 'chat'", "cannot compare trace.span_names (a list)", 20),
    ("trace.span_names < 'a'", "'<' orders numbers or strings, but trace.span_names is a list", 1),
    ("trace.span_names LIKE 'a%'", "LIKE needs a string, but trace.span_names is a list", 1),
    ("trace.span_names CONTAINS NULL", "CONTAINS NULL is never true; use IS NULL", 27),
    ("trace.error_count CONTAINS 1", "CONTAINS needs a string or a list, but trace.error_count", 1),
    ("trace.complete > FALSE", "'>' orders numbers or strings, but trace.complete is a boolean", 1),
    ("trace.llm_calls[0] = 1", "cannot index trace.llm_calls: it is a number", 1),
    (
        "lower(trace.tool_calls) = 'a'",
        "lower() needs a string, but trace.tool_calls is a number",
        7,
    ),
]


@pytest.mark.parametrize(("text", "message", "column"), TRACE_ERRORS)
def test_trace_field_errors(text: str, message: str, column: int) -> None:
    with pytest.raises(FilterSyntaxError) as info:
        compile_filter(text)
    error = info.value
    assert message in error.message, error.message
    assert error.column == column, (error.column, error.message)
    assert error.position == column - 1


# -- uses_trace_fields ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("trace.complete", True),
        ("is_root AND trace.error_count > 0", True),
        ("NOT (name = 'a' OR trace.span_names CONTAINS 'x')", True),
        ("length(trace.span_names) > 2", True),
        ("name IN ('a', trace.span_names[0])", True),
        ("json(attributes.x)[trace.span_count] IS NULL", True),
        ("-trace.duration_ms < 0", True),
        ("is_root", False),
        ("trace_id = 'abc' AND attributes.trace.complete = TRUE", False),  # not trace fields
        ("attributes['trace.span_count'] > 1", False),
        ("duration_ms > 1 AND status = 'ERROR' AND events CONTAINS 'exception'", False),
    ],
)
def test_uses_trace_fields(text: str, expected: bool) -> None:
    compiled = compile_filter(text)
    assert uses_trace_fields(compiled) is expected
    assert uses_trace_fields(compiled.node) is expected
    assert uses_trace_fields(parse(text)) is expected


def test_uses_trace_fields_on_values_and_deep_expressions() -> None:
    assert uses_trace_fields(parse("trace.span_names"))
    assert not uses_trace_fields(parse("name"))
    deep = "NOT " * 40 + "(" * 40 + "is_root OR (trace.complete)" + ")" * 40
    assert uses_trace_fields(compile_filter(deep))
    assert not uses_trace_fields(compile_filter(deep.replace("trace.complete", "is_root")))
