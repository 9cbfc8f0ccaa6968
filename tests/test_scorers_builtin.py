"""The built-in scorer types: options, scores, labels, explanations and every config issue."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jsonschema import Draft7Validator, Draft202012Validator

from otel_online_eval._errors import ScorerError
from otel_online_eval._validate import Issues, Reader
from otel_online_eval.scorers import (
    SCORER_TYPES,
    EvalInput,
    FunctionScorer,
    Score,
    Scorer,
    is_async_scorer,
    to_score,
)
from otel_online_eval.scorers._fields import as_text
from otel_online_eval.scorers._pii import find_pii, iban_ok, luhn_ok
from otel_online_eval.scorers._refusal import REFUSAL_PATTERNS
from otel_online_eval.spanview import SpanView
from tests.spans import view

BUILTIN_TYPES = {
    "valid_json",
    "json_schema",
    "regex",
    "contains",
    "not_contains",
    "one_of",
    "length",
    "not_empty",
    "pii",
    "refusal",
    "latency",
    "token_usage",
    "python",
}


# --- helpers --------------------------------------------------------------------------------


def build_with(
    type_name: str, options: Mapping[str, Any], file: str = "<config>", name: str = "s"
) -> tuple[Any, list[tuple[str, str]]]:
    """Run a factory the way the loader does; returns (scorer, [(path, message)])."""
    issues = Issues(file=file)
    opts = Reader({"type": type_name, **options}, f"scorers.{name}", issues)
    opts.raw("type")
    scorer = SCORER_TYPES[type_name](name, opts)
    opts.done()  # every option a test passes must have been read by the factory
    return scorer, [(i.path, i.message) for i in issues.items]


def build(type_name: str, **options: Any) -> Any:
    scorer, issues = build_with(type_name, options)
    assert issues == []
    assert scorer is not None
    assert isinstance(scorer, Scorer)
    assert scorer.name == "s"
    return scorer


def issues_of(type_name: str, **options: Any) -> list[tuple[str, str]]:
    scorer, issues = build_with(type_name, options)
    assert scorer is None, "a scorer with bad options must not be built"
    assert issues
    return issues


def one_issue(type_name: str, **options: Any) -> tuple[str, str]:
    issues = issues_of(type_name, **options)
    assert len(issues) == 1, issues
    return issues[0]


def inp(
    output: str | None = "", input: str | None = None, span: SpanView | None = None, rule: str = "r"
) -> EvalInput:
    return EvalInput(input=input, output=output, span=span, rule=rule)


def run(scorer: Any, value: EvalInput | str | None) -> Score:
    """Score, and check the result survives normalisation unchanged."""
    evald = value if isinstance(value, EvalInput) else inp(value)
    result = scorer.score(evald)
    if asyncio.iscoroutine(result):
        result = asyncio.run(result)
    normal = to_score(result)
    if isinstance(result, Score):
        assert normal == result
        for key, meta in result.metadata.items():
            assert isinstance(key, str)
            assert isinstance(meta, (str, bool, int, float)), (key, meta)
    return normal


def test_every_builtin_type_is_registered() -> None:
    assert BUILTIN_TYPES <= set(SCORER_TYPES)


# --- missing values and fields ---------------------------------------------------------------


@pytest.mark.parametrize(
    "type_name,options",
    [
        ("valid_json", {}),
        ("json_schema", {"schema": {"type": "object"}}),
        ("regex", {"pattern": "x"}),
        ("contains", {"values": "x"}),
        ("not_contains", {"values": "x"}),
        ("one_of", {"values": ["x"]}),
        ("length", {"max": 3}),
        ("pii", {}),
        ("refusal", {}),
    ],
)
def test_missing_output_is_a_scorer_error_with_a_hint(
    type_name: str, options: dict[str, Any]
) -> None:
    scorer = build(type_name, **options)
    with pytest.raises(ScorerError, match=r"^output is missing: .*`field:`"):
        scorer.score(inp(None))


def test_input_field_reads_the_prompt() -> None:
    scorer = build("contains", field="input", values=["refund"])
    assert run(scorer, inp("no", input="I want a refund")).value == 1.0
    with pytest.raises(ScorerError, match=r"^input is missing"):
        scorer.score(inp("x", input=None))


def test_field_must_be_a_string() -> None:
    assert one_issue("contains", field=3, values="x") == (
        "scorers.s.field",
        "must be a string, got a number",
    )


def test_attribute_expression_field() -> None:
    scorer = build("contains", field="attributes['gen_ai.response.finish_reasons']", values="stop")
    span = view("chat", attributes={"gen_ai.response.finish_reasons": ("stop",)})
    result = run(scorer, inp(None, span=span))
    assert (result.value, result.label) == (1.0, "pass")
    with pytest.raises(
        ScorerError,
        match=r"attributes\['gen_ai.response.finish_reasons'\] "
        "is missing",
    ):
        scorer.score(inp("stop", span=view("chat")))
    with pytest.raises(ScorerError, match="no span"):
        scorer.score(inp("stop"))


def test_attribute_expression_field_that_does_not_parse() -> None:
    _, issues = build_with("valid_json", {"field": "attributes['x"})
    assert [path for path, _ in issues] == ["scorers.s.field"]
    assert issues[0][1].startswith("not a valid field expression")


@pytest.mark.parametrize(
    "value,text",
    [
        ("plain", "plain"),
        ({"a": [1, 2]}, '{"a": [1, 2]}'),
        (("stop", "length"), '["stop", "length"]'),
        ([{"k": ("v",)}], '[{"k": ["v"]}]'),
        (42, "42"),
        (1.5, "1.5"),
        (True, "true"),
        (b"caf\xc3\xa9", "café"),
        ({"é": "ü"}, '{"é": "ü"}'),
    ],
)
def test_values_become_text(value: Any, text: str) -> None:
    assert as_text(value) == text


# --- valid_json ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,require,value,explanation",
    [
        ('{"a": 1}', "any", 1.0, "valid JSON object"),
        ("[1, 2]", "any", 1.0, "valid JSON array"),
        ("42", "any", 1.0, "valid JSON number"),
        ('"x"', "any", 1.0, "valid JSON string"),
        ("null", "any", 1.0, "valid JSON null"),
        ('{"a": 1}', "object", 1.0, "valid JSON object"),
        ("[1]", "array", 1.0, "valid JSON array"),
        ("[1]", "object", 0.0, "valid JSON, but an array where an object is required"),
        ('{"a": 1}', "array", 0.0, "valid JSON, but an object where an array is required"),
        ("42", "object", 0.0, "valid JSON, but a number where an object is required"),
    ],
)
def test_valid_json(text: str, require: str, value: float, explanation: str) -> None:
    result = run(build("valid_json", require=require), text)
    assert result.value == value
    assert result.label == ("pass" if value else "fail")
    assert result.explanation == explanation


@pytest.mark.parametrize(
    "text,explanation",
    [
        ("", "not valid JSON: Expecting value at line 1, column 1"),
        (
            '{"a": 1,}',
            "not valid JSON: Expecting property name enclosed in double quotes at line 1, column 9",
        ),
        ('{\n  "a": 1\n  "b": 2\n}', "not valid JSON: Expecting ',' delimiter at line 3, column 3"),
        ('Sure! {"a": 1}', "not valid JSON: Expecting value at line 1, column 1"),
        ('{"a": 1} trailing', "not valid JSON: Extra data at line 1, column 10"),
        ('{"a": NaN}', "not valid JSON: NaN is not allowed in JSON"),
        ("[-Infinity]", "not valid JSON: -Infinity is not allowed in JSON"),
        ("[" * 100_000, "not valid JSON: nested too deeply to parse"),
    ],
)
def test_invalid_json_says_where(text: str, explanation: str) -> None:
    result = run(build("valid_json"), text)
    assert (result.value, result.label) == (0.0, "fail")
    assert result.explanation == explanation


def test_invalid_json_metadata_has_the_position() -> None:
    result = run(build("valid_json"), '{\n  "a": 1\n  "b": 2\n}')
    assert dict(result.metadata) == {"error_line": 3, "error_column": 3}


def test_valid_json_bad_require() -> None:
    assert one_issue("valid_json", require="dict") == (
        "scorers.s.require",
        "unknown value 'dict'; expected one of: any, object, array",
    )


# --- json_schema -----------------------------------------------------------------------------

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer", "minimum": 0},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}


def test_json_schema_pass() -> None:
    result = run(build("json_schema", schema=PERSON), '{"name": "Ann", "age": 3}')
    assert (result.value, result.label, result.explanation) == (1.0, "pass", "matches the schema")
    assert dict(result.metadata) == {"errors": 0}


def test_json_schema_errors_have_paths() -> None:
    scorer = build("json_schema", schema=PERSON)
    result = run(scorer, '{"name": 5, "age": -1, "tags": ["a", 2]}')
    assert (result.value, result.label) == (0.0, "fail")
    assert result.explanation is not None
    assert result.explanation.startswith("3 schema errors: ")
    for fragment in (
        "$.name: 5 is not of type 'string'",
        "$.age: -1 is less than the minimum",
        "$.tags[1]: 2 is not of type 'string'",
    ):
        assert fragment in result.explanation
    assert dict(result.metadata) == {"errors": 3}


def test_json_schema_lists_the_first_three_errors_only() -> None:
    schema = {"type": "object", "properties": {k: {"type": "string"} for k in "abcde"}}
    result = run(build("json_schema", schema=schema), json.dumps({k: 1 for k in "abcde"}))
    assert result.explanation is not None
    assert result.explanation.startswith("5 schema errors: ")
    assert result.explanation.endswith("; and 2 more")
    assert result.explanation.count("is not of type") == 3


def test_json_schema_caps_the_error_count() -> None:
    schema = {"type": "array", "items": {"type": "string"}}
    result = run(build("json_schema", schema=schema), json.dumps(list(range(500))))
    assert result.explanation is not None
    assert result.explanation.startswith("more than 50 schema errors: ")
    assert result.metadata["errors"] == 50


def test_json_schema_on_text_that_is_not_json() -> None:
    result = run(build("json_schema", schema=PERSON), "name: Ann")
    assert (result.value, result.label) == (0.0, "fail")
    assert result.explanation == "not valid JSON: Expecting value at line 1, column 1"


def test_json_schema_true_schema() -> None:
    assert run(build("json_schema", schema=True), "[1]").value == 1.0


def test_json_schema_file_json_relative_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "person.json").write_text(json.dumps(PERSON))
    scorer, issues = build_with(
        "json_schema", {"schema_file": "schemas/person.json"}, file=str(tmp_path / "config.yaml")
    )
    assert issues == []
    assert run(scorer, '{"name": "Ann", "age": 3}').value == 1.0
    assert run(scorer, '{"name": "Ann"}').value == 0.0


def test_json_schema_file_yaml(tmp_path: Path) -> None:
    path = tmp_path / "schema.yaml"
    path.write_text("type: object\nrequired: [answer]\n")
    scorer = build("json_schema", schema_file=str(path))
    assert run(scorer, '{"answer": 1}').value == 1.0
    result = run(scorer, "{}")
    assert result.explanation == "1 schema error: $: 'answer' is a required property"


def test_json_schema_honours_dollar_schema() -> None:
    draft7 = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "array",
        "items": [{"type": "string"}],
        "additionalItems": False,
    }
    scorer = build("json_schema", schema=draft7)
    assert isinstance(scorer.validator, Draft7Validator)
    assert run(scorer, '["a"]').value == 1.0
    assert run(scorer, '["a", 1]').value == 0.0
    assert isinstance(
        build("json_schema", schema={"type": "string"}).validator, Draft202012Validator
    )


def test_json_schema_local_refs_resolve_remote_refs_are_never_fetched() -> None:
    local = {"$defs": {"n": {"type": "integer"}}, "type": "array", "items": {"$ref": "#/$defs/n"}}
    scorer = build("json_schema", schema=local)
    assert run(scorer, "[1, 2]").value == 1.0
    assert run(scorer, '[1, "x"]').value == 0.0
    remote = build("json_schema", schema={"$ref": "https://example.invalid/schema.json"})
    with pytest.raises(ScorerError, match="cannot be resolved"):
        remote.score(inp("{}"))


@pytest.mark.parametrize(
    "options,path,message",
    [
        ({}, "scorers.s", "needs 'schema' (an inline JSON Schema) or 'schema_file' (a path)"),
        (
            {"schema": {"type": "object"}, "schema_file": "x.json"},
            "scorers.s.schema_file",
            "give either 'schema' or 'schema_file', not both",
        ),
        ({"schema": ["type"]}, "scorers.s.schema", "must be a JSON Schema (a mapping), got a list"),
        ({"schema": {"type": "objekt"}}, "scorers.s.schema", "not a valid JSON Schema: "),
        (
            {"schema": {"properties": {"a": {"minimum": "zero"}}}},
            "scorers.s.schema",
            "(at $.properties.a.minimum)",
        ),
        (
            {"schema": {"$schema": "https://example.com/my-draft", "type": "object"}},
            "scorers.s.schema",
            "unknown $schema 'https://example.com/my-draft'",
        ),
        ({"schema_file": 5}, "scorers.s.schema_file", "must be a string, got a number"),
        (
            {"schema_file": "/nonexistent/schema.json"},
            "scorers.s.schema_file",
            "cannot read '/nonexistent/schema.json': No such file or directory",
        ),
    ],
)
def test_json_schema_bad_options(options: dict[str, Any], path: str, message: str) -> None:
    got_path, got = one_issue("json_schema", **options)
    assert got_path == path
    assert message in got


def test_json_schema_file_that_does_not_parse(tmp_path: Path) -> None:
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"type": "object",}')
    path, message = one_issue("json_schema", schema_file=str(bad_json))
    assert path == "scorers.s.schema_file"
    assert message == (
        f"{str(bad_json)!r} is not valid JSON: Expecting property name enclosed "
        "in double quotes at line 1, column 19"
    )
    bad_yaml = tmp_path / "bad.yml"
    bad_yaml.write_text("type: [object\n")
    path, message = one_issue("json_schema", schema_file=str(bad_yaml))
    assert message.startswith(f"{str(bad_yaml)!r} is not valid YAML:")
    invalid = tmp_path / "invalid.json"
    invalid.write_text('{"type": 12}')
    path, message = one_issue("json_schema", schema_file=str(invalid))
    assert (path, message.split(":")[0]) == ("scorers.s.schema_file", "not a valid JSON Schema")


# --- regex -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options,text,value,explanation",
    [
        ({"pattern": r"\d{3}"}, "call 555 now", 1.0, "pattern matched at characters 5-8"),
        ({"pattern": r"\d{3}"}, "no digits", 0.0, "pattern did not match"),
        (
            {"pattern": r"\d{3}", "mode": "fullmatch"},
            "call 555",
            0.0,
            "pattern did not match the whole text",
        ),
        ({"pattern": r"\d{3}", "mode": "fullmatch"}, "555", 1.0, "pattern matched the whole text"),
        ({"pattern": "hello"}, "HELLO", 0.0, "pattern did not match"),
        (
            {"pattern": "hello", "ignore_case": True},
            "HELLO there",
            1.0,
            "pattern matched at characters 0-5",
        ),
        (
            {"pattern": "sorry", "negate": True},
            "sure thing",
            1.0,
            "pattern did not match (negate: a match fails)",
        ),
        (
            {"pattern": "sorry", "negate": True},
            "so sorry",
            0.0,
            "pattern matched at characters 3-8 (negate: a match fails)",
        ),
        ({"pattern": "é+"}, "café", 1.0, "pattern matched at characters 3-4"),
    ],
)
def test_regex(options: dict[str, Any], text: str, value: float, explanation: str) -> None:
    result = run(build("regex", **options), text)
    assert result.value == value
    assert result.label == ("pass" if value else "fail")
    assert result.explanation == explanation


def test_regex_is_linear_time() -> None:
    scorer = build("regex", pattern="(a+)+$")
    assert run(scorer, "a" * 50_000 + "!").value == 0.0


@pytest.mark.parametrize(
    "options,path,message",
    [
        ({}, "scorers.s", "'pattern' is required"),
        ({"pattern": None}, "scorers.s.pattern", "must not be empty"),
        (
            {"pattern": "(unclosed"},
            "scorers.s.pattern",
            "not a valid RE2 pattern: missing ): (unclosed",
        ),
        (
            {"pattern": "(?=ahead)x"},
            "scorers.s.pattern",
            "not a valid RE2 pattern: invalid perl operator: (?=",
        ),
        (
            {"pattern": r"(a)\1"},
            "scorers.s.pattern",
            "not a valid RE2 pattern: invalid escape sequence: \\1",
        ),
        (
            {"pattern": "x", "mode": "match"},
            "scorers.s.mode",
            "unknown value 'match'; expected one of: search, fullmatch",
        ),
        (
            {"pattern": "x", "ignore_case": "yes"},
            "scorers.s.ignore_case",
            "must be true or false, got 'yes'",
        ),
    ],
)
def test_regex_bad_options(options: dict[str, Any], path: str, message: str) -> None:
    scorer, issues = build_with("regex", options)
    assert issues == [(path, message)]
    if options.get("pattern") is not None and path == "scorers.s.pattern":
        assert scorer is None


# --- contains / not_contains -----------------------------------------------------------------


@pytest.mark.parametrize(
    "type_name,options,text,value,explanation",
    [
        ("contains", {"values": "refund"}, "A Refund is due", 1.0, "found 'refund'"),
        (
            "contains",
            {"values": "refund", "case_sensitive": True},
            "A Refund is due",
            0.0,
            "none of 'refund' found",
        ),
        ("contains", {"values": ["a1", "b2"]}, "has B2", 1.0, "found 'b2'"),
        ("contains", {"values": ["a1", "b2"], "mode": "all"}, "has B2", 0.0, "missing 'a1'"),
        (
            "contains",
            {"values": ["a1", "b2"], "mode": "all"},
            "b2 and A1",
            1.0,
            "found all of 'a1', 'b2'",
        ),
        ("contains", {"values": [1, 2]}, "rated 2", 1.0, "found '2'"),
        ("contains", {"values": ["Straße"]}, "STRASSE", 1.0, "found 'Straße'"),
        (
            "not_contains",
            {"values": ["password", "secret"]},
            "all good",
            1.0,
            "none of 'password', 'secret' found",
        ),
        (
            "not_contains",
            {"values": ["password", "secret"]},
            "the Secret is",
            0.0,
            "found 'secret'",
        ),
        ("not_contains", {"values": ["a", "b"], "mode": "all"}, "only a", 1.0, "missing 'b'"),
        (
            "not_contains",
            {"values": ["a", "b"], "mode": "all"},
            "a and b",
            0.0,
            "found all of 'a', 'b'",
        ),
    ],
)
def test_contains(
    type_name: str, options: dict[str, Any], text: str, value: float, explanation: str
) -> None:
    result = run(build(type_name, **options), text)
    assert (result.value, result.label, result.explanation) == (
        value,
        "pass" if value else "fail",
        explanation,
    )


def test_contains_names_at_most_five_values() -> None:
    result = run(build("contains", values=[f"v{i}" for i in range(8)]), "none")
    assert result.explanation == "none of 'v0', 'v1', 'v2', 'v3', 'v4' and 3 more found"
    assert dict(result.metadata) == {"found": 0, "of": 8}


@pytest.mark.parametrize("type_name", ["contains", "not_contains"])
@pytest.mark.parametrize(
    "options,issues",
    [
        ({}, [("scorers.s", "'values' is required")]),
        ({"values": []}, [("scorers.s.values", "must not be empty")]),
        ({"values": {"a": 1}}, [("scorers.s.values", "must be a list, got a mapping")]),
        ({"values": ["a", ""]}, [("scorers.s.values[1]", "must not be an empty string")]),
        (
            {"values": ["a", None, 1.5]},
            [
                ("scorers.s.values[1]", "must be a string, got null"),
                ("scorers.s.values[2]", "must be a string, got a number"),
            ],
        ),
        (
            {"values": "a", "mode": "most"},
            [("scorers.s.mode", "unknown value 'most'; expected one of: any, all")],
        ),
        (
            {"values": "a", "case_sensitive": 1},
            [("scorers.s.case_sensitive", "must be true or false, got 1")],
        ),
    ],
)
def test_contains_bad_options(
    type_name: str, options: dict[str, Any], issues: list[tuple[str, str]]
) -> None:
    assert build_with(type_name, options)[1] == issues


# --- one_of ----------------------------------------------------------------------------------

CATEGORIES = ["support", "complaint", "spam", "unknown"]


@pytest.mark.parametrize(
    "options,text,value,label",
    [
        ({}, "support", 1.0, "support"),
        ({}, "  spam\n", 1.0, "spam"),
        ({"strip": False}, "  spam\n", 0.0, "other"),
        ({}, "Support", 0.0, "other"),
        ({"case_sensitive": False}, "SUPPORT ", 1.0, "support"),
        ({}, "support, probably", 0.0, "other"),
    ],
)
def test_one_of(options: dict[str, Any], text: str, value: float, label: str) -> None:
    result = run(build("one_of", values=CATEGORIES, **options), text)
    assert (result.value, result.label) == (value, label)
    if value:
        assert result.explanation == f"{label!r} is one of the 4 allowed values"
    else:
        assert result.explanation == "not one of 'support', 'complaint', 'spam', 'unknown'"


def test_one_of_numbers_are_text() -> None:
    scorer = build("one_of", values=[1, 2, 3, 4, 5])
    assert run(scorer, "4").label == "4"
    assert run(scorer, "4.0").label == "other"


@pytest.mark.parametrize(
    "options,issues",
    [
        ({}, [("scorers.s", "'values' is required")]),
        ({"values": "spam"}, [("scorers.s.values", "must be a list, got a string")]),
        ({"values": []}, [("scorers.s.values", "must not be empty")]),
        (
            {"values": ["a", "b", "a"]},
            [("scorers.s.values[2]", "'a' is the same value as values[0]")],
        ),
        (
            {"values": ["Spam", "spam"], "case_sensitive": False},
            [
                (
                    "scorers.s.values[1]",
                    "'spam' is the same value as values[0] (case_sensitive is false)",
                )
            ],
        ),
        (
            {"values": ["a"], "strip": "no"},
            [("scorers.s.strip", "must be true or false, got 'no'")],
        ),
    ],
)
def test_one_of_bad_options(options: dict[str, Any], issues: list[tuple[str, str]]) -> None:
    assert build_with("one_of", options)[1] == issues


# --- length ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options,text,value,explanation",
    [
        ({"max": 5}, "hello", 1.0, "5 characters, at most 5"),
        ({"max": 5}, "hello!", 0.0, "6 characters, more than the maximum 5"),
        ({"min": 2}, "a", 0.0, "1 character, fewer than the minimum 2"),
        ({"min": 2, "max": 4}, "abc", 1.0, "3 characters, at least 2 and at most 4"),
        (
            {"unit": "words", "max": 3},
            "one two  three\nfour",
            0.0,
            "4 words, more than the maximum 3",
        ),
        ({"unit": "words", "min": 1}, "   ", 0.0, "0 words, fewer than the minimum 1"),
        ({"unit": "words", "min": 1}, "word", 1.0, "1 word, at least 1"),
        ({"min": 0, "max": 0}, "", 1.0, "0 characters, at least 0 and at most 0"),
    ],
)
def test_length(options: dict[str, Any], text: str, value: float, explanation: str) -> None:
    result = run(build("length", **options), text)
    assert (result.value, result.label, result.explanation) == (
        value,
        "pass" if value else "fail",
        explanation,
    )
    assert set(result.metadata) == {"length"}


@pytest.mark.parametrize(
    "options,issues",
    [
        ({}, [("scorers.s", "needs at least one of 'min', 'max'")]),
        ({"min": -1}, [("scorers.s.min", "must be at least 0, got -1")]),
        ({"max": 2.5}, [("scorers.s.max", "must be a whole number, got 2.5")]),
        ({"min": 5, "max": 3}, [("scorers.s.min", "must not be greater than max (3), got 5")]),
        (
            {"max": 3, "unit": "tokens"},
            [("scorers.s.unit", "unknown value 'tokens'; expected one of: chars, words")],
        ),
    ],
)
def test_length_bad_options(options: dict[str, Any], issues: list[tuple[str, str]]) -> None:
    assert build_with("length", options)[1] == issues


# --- not_empty -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,value,explanation",
    [
        ("answer", 1.0, "output is not empty"),
        ("", 0.0, "output is empty"),
        (" \n\t", 0.0, "output is only whitespace"),
        (None, 0.0, "output is missing"),
    ],
)
def test_not_empty(text: str | None, value: float, explanation: str) -> None:
    result = run(build("not_empty"), inp(text))
    assert (result.value, result.label, result.explanation) == (
        value,
        "pass" if value else "fail",
        explanation,
    )


def test_not_empty_on_a_structured_attribute() -> None:
    scorer = build("not_empty", field="attributes['tool.calls']")
    assert run(scorer, inp(None, span=view(attributes={"tool.calls": ("a",)}))).value == 1.0
    assert run(scorer, inp(None, span=view())).explanation == (
        "attributes['tool.calls'] is missing"
    )


# --- pii -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,kinds",
    [
        ("write to jane.doe+work@example.co.uk today", {"email": 1}),
        ("a@b.c is too short, .bad.@x.com is malformed", {}),
        ("call +44 20 7946 0958 or +1 (555) 123-4567", {"phone": 2}),
        ("call (555) 123-4567, 555-123-4567 or 555.123.4567", {"phone": 3}),
        ("ring 020 7946 0958", {"phone": 1}),
        ("order 1234567890 shipped on 2024-01-15", {}),
        ("card 4111 1111 1111 1111 expires soon", {"credit_card": 1}),
        ("card 4111-1111-1111-1111", {"credit_card": 1}),
        ("card 4111111111111111", {"credit_card": 1}),
        ("card 5500 0000 0000 0004", {"credit_card": 1}),
        ("card 378282246310005 (amex)", {"credit_card": 1}),
        ("card 4111 1111 1111 1112 fails Luhn", {}),
        ("zeros 0000 0000 0000 0000", {}),
        ("IBAN GB82 WEST 1234 5698 7654 32.", {"iban": 1}),
        ("IBAN GB82WEST12345698765432", {"iban": 1}),
        ("pay DE89 3704 0044 0532 0130 00 NOW please", {"iban": 1}),
        ("IBAN GB82 WEST 1234 5698 7654 33 has a bad checksum", {}),
        ("server 192.168.1.10 and 10.0.0.255", {"ipv4": 2}),
        ("not ips: 999.1.1.1, version 1.2.3.4.5", {}),
        ("host 2001:db8::8a2e:370:7334 and fe80::1", {"ipv6": 2}),
        ("mapped ::ffff:192.168.1.10", {"ipv6": 1}),
        ("at 12:30:45 use std::vector and ::1, mac 00:1a:2b:3c:4d:5e", {}),
        (
            "mix: bob@example.com, +33 1 23 45 67 89, 4111111111111111",
            {"email": 1, "phone": 1, "credit_card": 1},
        ),
        ("", {}),
    ],
)
def test_find_pii(text: str, kinds: dict[str, int]) -> None:
    found = find_pii(text)
    assert {k: len(v) for k, v in found.items()} == kinds


def test_pii_score_reports_kinds_and_counts_never_values() -> None:
    text = "Email bob@example.com or amy@example.org, card 4111 1111 1111 1111, ip 10.1.2.3"
    result = run(build("pii"), text)
    assert (result.value, result.label) == (0.0, "fail")
    assert dict(result.metadata) == {"kinds": "email,credit_card,ipv4", "count": 4}
    assert result.explanation == ("found 2 email addresses, 1 credit card number, 1 IPv4 address")
    for secret in ("bob", "example", "4111", "10.1.2.3"):
        assert secret not in str(result)


def test_pii_pass() -> None:
    result = run(build("pii", kinds=["email", "iban"]), "call 555-123-4567")
    assert (result.value, result.label) == (1.0, "pass")
    assert result.explanation == "no PII found (checked: email, iban)"
    assert dict(result.metadata) == {"kinds": "", "count": 0}


def test_pii_kinds_as_one_string() -> None:
    scorer = build("pii", kinds="phone")
    assert scorer.kinds == ("phone",)
    assert run(scorer, "bob@example.com").value == 1.0


@pytest.mark.parametrize(
    "options,issues",
    [
        (
            {"kinds": ["email", "ssn"]},
            [
                (
                    "scorers.s.kinds[1]",
                    "unknown kind 'ssn'; expected one "
                    "of: email, phone, credit_card, iban, ipv4, ipv6",
                )
            ],
        ),
        (
            {"kinds": []},
            [("scorers.s.kinds", "must not be empty; leave it out to check every kind")],
        ),
        ({"kinds": [3]}, [("scorers.s.kinds[0]", "must be a string, got a number")]),
        ({"kinds": {"email": True}}, [("scorers.s.kinds", "must be a list, got a mapping")]),
    ],
)
def test_pii_bad_options(options: dict[str, Any], issues: list[tuple[str, str]]) -> None:
    scorer, got = build_with("pii", options)
    assert scorer is None
    assert got == issues


def _with_luhn_digit(body: str) -> str:
    for d in "0123456789":
        if luhn_ok(body + d):
            return body + d
    raise AssertionError


@given(st.text(alphabet="0123456789", min_size=12, max_size=18))
def test_every_luhn_valid_number_is_found(body: str) -> None:
    number = _with_luhn_digit(body)
    if not number.strip("0"):
        return
    assert {k: len(v) for k, v in find_pii(f"pay with {number} now").items()} == {"credit_card": 1}


@given(st.text(max_size=300))
def test_pii_never_raises(text: str) -> None:
    found = find_pii(text)
    for spans in found.values():
        for start, end in spans:
            assert 0 <= start < end <= len(text)


def test_luhn_and_iban_checks() -> None:
    assert luhn_ok("79927398713") and not luhn_ok("79927398710")
    assert iban_ok("GB82WEST12345698765432") and not iban_ok("GB82WEST12345698765433")
    assert iban_ok("NO9386011117947")  # the shortest IBAN: 15 characters
    assert not iban_ok("GB82")
    assert not iban_ok("GB82WEST1234569876543²")


def test_pii_is_fast_on_hostile_text() -> None:
    scorer = build("pii")
    assert run(scorer, "a" * 200_000 + "@").value == 1.0
    assert run(scorer, "1 " * 100_000).value == 1.0


# --- refusal ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,phrase",
    [
        ("I'm sorry, but I can't help with that.", "I'm sorry, but I can't"),
        ("I\u2019m sorry, but I can\u2019t do that.", "I\u2019m sorry, but I can\u2019t"),
        ("I am sorry, I cannot share that.", "I am sorry, I cannot"),
        ("Sorry, but I won't do that", "Sorry, but I won't"),
        ("I cannot help with requests like this.", "I cannot help with"),
        ("I can't assist you with that request.", "I can't assist you with"),
        ("As an AI language model, I do not have opinions.", "As an AI language model"),
        ("As an AI, I don't browse the web.", "As an AI,"),
        ("I am unable to provide medical advice.", "I am unable to provide"),
        ("I'm unable to\n  comply.", "I'm unable to comply"),
        ("I am unable to find it.", "I am unable to"),
        ("I won't be able to help here.", "I won't be able to"),
        ("Unfortunately, I cannot open links.", "Unfortunately, I cannot"),
        ("I apologise, but I can't continue.", "I apologise, but I can't"),
        ("I'm afraid I can't do that, Dave.", "I'm afraid I can't"),
        ("I must respectfully decline.", "I must respectfully decline"),
        ("I'll have to decline this one.", "I'll have to decline"),
        ("It would be inappropriate for me to guess.", "It would be inappropriate for me to"),
        ("I don't feel comfortable writing that.", "I don't feel comfortable"),
        ("That's not something I can help with.", "That's not something I can help"),
        ("That goes against my guidelines.", "against my guidelines"),
        ("I'm not able to access your account.", "I'm not able to"),
        ("I am not allowed to discuss that.", "I am not allowed to"),
        ("I can't and won't write malware.", "I can't and won't"),
        ("I'm just an AI, so no.", "I'm just an AI"),
        ("I cannot provide that information.", "I cannot provide"),
        ("I CANNOT HELP WITH THAT", "I CANNOT HELP WITH"),
    ],
)
def test_refusal_phrasings(text: str, phrase: str) -> None:
    result = run(build("refusal"), text)
    assert (result.value, result.label) == (0.0, "refused")
    assert result.explanation is not None
    assert result.explanation.startswith(f'refusal phrasing "{phrase}" at character')


@pytest.mark.parametrize(
    "text",
    [
        "Sure! Here is the recipe you asked for.",
        "The capital of France is Paris.",
        "You can't go wrong with a good night's sleep.",
        "I can help with that: first, open the settings.",
        "Artificial intelligence, or AI, is a field of computer science.",
        "",
    ],
)
def test_refusal_answered(text: str) -> None:
    result = run(build("refusal"), text)
    assert (result.value, result.label, result.explanation) == (
        1.0,
        "answered",
        "no refusal phrasing found",
    )


def test_refusal_pass_on_refused() -> None:
    scorer = build("refusal", pass_on="refused")
    assert (run(scorer, "I cannot help with that").value, run(scorer, "Here you go").value) == (
        1.0,
        0.0,
    )
    assert run(scorer, "I cannot help with that").label == "refused"


def test_refusal_has_about_twenty_patterns() -> None:
    assert len(REFUSAL_PATTERNS) >= 20


def test_refusal_bad_pass_on() -> None:
    assert one_issue("refusal", pass_on="pass") == (
        "scorers.s.pass_on",
        "unknown value 'pass'; expected one of: answered, refused",
    )


# --- latency ---------------------------------------------------------------------------------

T0 = 1_700_000_000_000_000_000


def timed(ms: float) -> EvalInput:
    return inp("x", span=view("chat", start_time=T0, end_time=T0 + int(ms * 1_000_000)))


@pytest.mark.parametrize(
    "options,ms,value,label",
    [
        ({"max_ms": 1000}, 999, 1.0, "pass"),
        ({"max_ms": 1000}, 1000, 1.0, "pass"),
        ({"max_ms": 1000}, 1001, 0.0, "fail"),
        ({"max_ms": 1000, "target_ms": 500}, 400, 1.0, "pass"),
        ({"max_ms": 1000, "target_ms": 500}, 500, 1.0, "pass"),
        ({"max_ms": 1000, "target_ms": 500}, 750, 0.5, "pass"),
        ({"max_ms": 1000, "target_ms": 500}, 900, pytest.approx(0.2), "pass"),
        ({"max_ms": 1000, "target_ms": 500}, 1000, 0.0, "pass"),
        ({"max_ms": 1000, "target_ms": 500}, 5000, 0.0, "fail"),
        ({"max_ms": 2.5, "target_ms": 0}, 1.25, 0.5, "pass"),
    ],
)
def test_latency(options: dict[str, Any], ms: float, value: Any, label: str) -> None:
    result = run(build("latency", **options), timed(ms))
    assert result.value == value
    assert result.label == label
    assert result.metadata["duration_ms"] == pytest.approx(ms)


def test_latency_explanations() -> None:
    scorer = build("latency", max_ms=1000, target_ms=500)
    assert run(scorer, timed(812)).explanation == (
        "took 812 ms, over the target but within the maximum (max 1000 ms, target 500 ms)"
    )
    assert run(scorer, timed(1500)).explanation == (
        "took 1500 ms, over the maximum (max 1000 ms, target 500 ms)"
    )
    assert run(build("latency", max_ms=1000), timed(3.5)).explanation == (
        "took 3.5 ms, within (max 1000 ms)"
    )


def test_latency_needs_a_span() -> None:
    with pytest.raises(ScorerError, match="latency needs the scored span"):
        build("latency", max_ms=10).score(inp("x"))


@pytest.mark.parametrize(
    "options,issues",
    [
        ({}, [("scorers.s", "'max_ms' is required")]),
        ({"max_ms": 0}, [("scorers.s.max_ms", "must be greater than 0, got 0")]),
        ({"max_ms": -5}, [("scorers.s.max_ms", "must be at least 0, got -5")]),
        ({"max_ms": "1s"}, [("scorers.s.max_ms", "must be a number, got '1s'")]),
        (
            {"max_ms": 100, "target_ms": 100},
            [("scorers.s.target_ms", "must be less than max_ms (100), got 100")],
        ),
        ({"max_ms": 100, "target_ms": -1}, [("scorers.s.target_ms", "must be at least 0, got -1")]),
        (
            {"max_ms": 100, "field": "output"},
            [("scorers.s.field", "unknown key 'field'; expected one of: max_ms, target_ms, type")],
        ),
    ],
)
def test_latency_bad_options(options: dict[str, Any], issues: list[tuple[str, str]]) -> None:
    assert build_with("latency", options)[1] == issues


# --- token_usage -----------------------------------------------------------------------------


def usage(input_tokens: int | None = None, output_tokens: int | None = None) -> EvalInput:
    attrs: dict[str, Any] = {"gen_ai.operation.name": "chat"}
    if input_tokens is not None:
        attrs["gen_ai.usage.input_tokens"] = input_tokens
    if output_tokens is not None:
        attrs["gen_ai.usage.output_tokens"] = output_tokens
    return inp("x", span=view("chat", attributes=attrs))


@pytest.mark.parametrize(
    "options,used,value,explanation",
    [
        ({"max_input_tokens": 1000}, (900, 50), 1.0, "within the token limits: input 900 <= 1000"),
        ({"max_input_tokens": 1000}, (1200, 50), 0.0, "input 1200 tokens, over the maximum 1000"),
        (
            {"max_output_tokens": 100, "max_total_tokens": 1000},
            (950, 120),
            0.0,
            "output 120 tokens, over the maximum 100; total 1070 tokens, over the maximum 1000",
        ),
        (
            {"max_total_tokens": 1000},
            (500, 500),
            1.0,
            "within the token limits: total 1000 <= 1000",
        ),
        ({"max_output_tokens": 10}, (None, 3), 1.0, "within the token limits: output 3 <= 10"),
    ],
)
def test_token_usage(
    options: dict[str, Any], used: tuple[int | None, int | None], value: float, explanation: str
) -> None:
    result = run(build("token_usage", **options), usage(*used))
    assert (result.value, result.label, result.explanation) == (
        value,
        "pass" if value else "fail",
        explanation,
    )
    expected = {
        k: v for k, v in zip(("input_tokens", "output_tokens"), used, strict=True) if v is not None
    }
    assert dict(result.metadata) == expected


def test_token_usage_missing() -> None:
    scorer = build("token_usage", max_total_tokens=10)
    with pytest.raises(ScorerError, match=r"the span has no gen_ai\.usage\.output_tokens$"):
        scorer.score(usage(5))
    with pytest.raises(ScorerError, match=r"input_tokens or gen_ai\.usage\.output_tokens"):
        scorer.score(usage())
    with pytest.raises(ScorerError, match="token_usage needs the scored span"):
        scorer.score(inp("x"))


@pytest.mark.parametrize(
    "options,issues",
    [
        (
            {},
            [
                (
                    "scorers.s",
                    "needs at least one of 'max_input_tokens', 'max_output_tokens', "
                    "'max_total_tokens'",
                )
            ],
        ),
        (
            {"max_input_tokens": 1.5},
            [("scorers.s.max_input_tokens", "must be a whole number, got 1.5")],
        ),
        ({"max_total_tokens": -1}, [("scorers.s.max_total_tokens", "must be at least 0, got -1")]),
    ],
)
def test_token_usage_bad_options(options: dict[str, Any], issues: list[tuple[str, str]]) -> None:
    assert build_with("token_usage", options)[1] == issues


# --- python ----------------------------------------------------------------------------------

FIX = "tests.scorer_fixtures"


def test_python_sync_function() -> None:
    scorer = build("python", ref=f"{FIX}:has_output")
    assert isinstance(scorer, FunctionScorer)
    assert not is_async_scorer(scorer)
    assert run(scorer, "yes") == Score(1.0, "pass", "checked the output")
    assert run(scorer, "").value == 0.0


def test_python_async_function() -> None:
    scorer = build("python", ref=f"{FIX}:half")
    assert is_async_scorer(scorer)
    assert run(scorer, inp("x", rule="my-rule")) == Score(0.5, "half", "rule my-rule")


def test_python_function_with_args() -> None:
    scorer = build("python", ref=f"{FIX}:contains_word", args={"word": "bye"})
    assert run(scorer, "goodbye").value == 1.0
    assert run(scorer, "hello").value == 0.0


def test_python_class_with_args_gets_the_yaml_name() -> None:
    scorer = build("python", ref=f"{FIX}:KeywordScorer", args={"keyword": "x", "weight": 0.5})
    assert type(scorer).__name__ == "KeywordScorer"
    assert run(scorer, "xyz") == Score(0.5, "found")


def test_python_class_with_its_own_name_keeps_it() -> None:
    scorer, issues = build_with("python", {"ref": f"{FIX}:NamedAsyncScorer"})
    assert issues == []
    assert scorer.name == "named_async"
    assert is_async_scorer(scorer)
    assert run(scorer, "x") == Score(0.25)


def test_python_slotted_class_is_wrapped_with_the_name() -> None:
    scorer = build("python", ref=f"{FIX}:SlottedScorer")
    assert run(scorer, "x") == Score(1.0, "pass")


def test_python_ready_instance() -> None:
    scorer = build("python", ref=f"{FIX}:READY")
    assert run(scorer, "ready now").label == "found"


@pytest.mark.parametrize(
    "options,issue",
    [
        ({}, ("scorers.s", "'ref' is required")),
        (
            {"ref": "no_such_module_xyz:fn"},
            (
                "scorers.s.ref",
                "cannot import module 'no_such_module_xyz': No module named 'no_such_module_xyz'",
            ),
        ),
        ({"ref": f"{FIX}:nope"}, ("scorers.s.ref", f"'{FIX}' has no attribute 'nope'")),
        (
            {"ref": f"{FIX}:KeywordScorer.nope"},
            ("scorers.s.ref", f"'{FIX}:KeywordScorer' has no attribute 'nope'"),
        ),
        (
            {"ref": f"{FIX}:NOT_CALLABLE"},
            (
                "scorers.s.ref",
                f"{FIX}:NOT_CALLABLE is a number, not a function, a class or a scorer",
            ),
        ),
        (
            {"ref": "tests:scorer_fixtures"},
            (
                "scorers.s.ref",
                "tests:scorer_fixtures is a module, not a function, a class or a scorer",
            ),
        ),
        (
            {"ref": f"{FIX}.has_output"},
            (
                "scorers.s.ref",
                "must look like 'package.module:function' or 'package.module:Class', "
                f"got '{FIX}.has_output'",
            ),
        ),
        (
            {"ref": "bad module:fn"},
            (
                "scorers.s.ref",
                "must look like 'package.module:function' or 'package.module:Class', "
                "got 'bad module:fn'",
            ),
        ),
        (
            {"ref": f"{FIX}:takes_nothing"},
            (
                "scorers.s.ref",
                f"{FIX}:takes_nothing cannot be called as {FIX}:takes_nothing(inp): "
                "too many positional arguments",
            ),
        ),
        (
            {"ref": f"{FIX}:contains_word", "args": {"colour": "red"}},
            (
                "scorers.s.args",
                f"{FIX}:contains_word cannot be called as {FIX}:contains_word(inp, "
                "**args): got an unexpected keyword argument 'colour'",
            ),
        ),
        (
            {"ref": f"{FIX}:KeywordScorer"},
            (
                "scorers.s.ref",
                f"{FIX}:KeywordScorer() failed: TypeError: KeywordScorer.__init__() "
                "missing 1 required positional argument: 'keyword'",
            ),
        ),
        (
            {"ref": f"{FIX}:KeywordScorer", "args": {"kw": 1}},
            (
                "scorers.s.args",
                f"{FIX}:KeywordScorer(**args) failed: TypeError: "
                "KeywordScorer.__init__() got an unexpected keyword argument 'kw'",
            ),
        ),
        (
            {"ref": f"{FIX}:BrokenInit"},
            ("scorers.s.ref", f"{FIX}:BrokenInit() failed: RuntimeError: cannot start"),
        ),
        (
            {"ref": f"{FIX}:NoScoreMethod"},
            (
                "scorers.s.ref",
                f"{FIX}:NoScoreMethod made a NoScoreMethod with no score(inp) method",
            ),
        ),
        (
            {"ref": f"{FIX}:ScoreTakesNothing"},
            (
                "scorers.s.ref",
                "ScoreTakesNothing.score cannot be called as ScoreTakesNothing.score(inp):"
                " too many positional arguments",
            ),
        ),
        (
            {"ref": f"{FIX}:READY", "args": {"keyword": "x"}},
            ("scorers.s.args", f"{FIX}:READY is already a scorer instance, so it takes no args"),
        ),
        (
            {"ref": f"{FIX}:has_output", "args": ["x"]},
            ("scorers.s.args", "must be a mapping of keyword arguments, got a list"),
        ),
        (
            {"ref": f"{FIX}:has_output", "args": {"not valid": 1}},
            ("scorers.s.args", "keys must be Python identifiers, got 'not valid'"),
        ),
    ],
)
def test_python_bad_refs(options: dict[str, Any], issue: tuple[str, str]) -> None:
    assert issues_of("python", **options) == [issue]


def test_python_module_that_fails_to_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "oee_fixture_raises.py").write_text("raise RuntimeError('no config here')\n")
    (tmp_path / "oee_fixture_missing_dep.py").write_text("import oee_not_installed_xyz\n")
    (tmp_path / "oee_fixture_syntax.py").write_text("def broken(:\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert issues_of("python", ref="oee_fixture_raises:fn") == [
        (
            "scorers.s.ref",
            "importing module 'oee_fixture_raises' failed: RuntimeError: no config here",
        )
    ]
    assert issues_of("python", ref="oee_fixture_missing_dep:fn") == [
        (
            "scorers.s.ref",
            "cannot import module 'oee_fixture_missing_dep': "
            "No module named 'oee_not_installed_xyz'",
        )
    ]
    ((path, message),) = issues_of("python", ref="oee_fixture_syntax:fn")
    assert path == "scorers.s.ref"
    assert message.startswith("importing module 'oee_fixture_syntax' failed: SyntaxError: ")
