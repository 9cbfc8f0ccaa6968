"""Reference-free text heuristics: ``valid_json``, ``json_schema``, ``regex``, ``contains``,
``not_contains``, ``one_of``, ``length`` and ``not_empty``.

Each type is a factory that reads and checks its options once (compiling regexes and schemas
there) and returns a small scorer whose ``score`` is sync and CPU-only. Scores are 1 / ``pass``
or 0 / ``fail``, except ``one_of`` whose label is the category found.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from itertools import islice
from pathlib import Path
from typing import Any

import re2
import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, ValidationError
from jsonschema.protocols import Validator
from jsonschema.validators import validator_for
from referencing import Registry
from referencing.exceptions import Unresolvable

from otel_online_eval._errors import ScorerError
from otel_online_eval._validate import Issues, Reader, join_path
from otel_online_eval.scorers._fields import (
    FAIL,
    PASS,
    Field,
    as_text,
    builtin_type,
    describe,
    quote_list,
    read_field,
    require_any,
    text_values,
)
from otel_online_eval.scorers.base import EvalInput, Score

__all__ = [
    "ContainsScorer",
    "JsonSchemaScorer",
    "LengthScorer",
    "NotEmptyScorer",
    "OneOfScorer",
    "RegexScorer",
    "ValidJsonScorer",
    "compile_re2",
]


def compile_re2(pattern: str, *, ignore_case: bool = False) -> re2._Regexp[str]:
    """Compile with RE2 (linear time, no logging to stderr).

    Raises:
        re2.error: with RE2's message as text.
    """
    options = re2.Options()
    options.log_errors = False
    options.case_sensitive = not ignore_case
    try:
        return re2.compile(pattern, options)
    except re2.error as exc:
        message = exc.args[0] if exc.args else "invalid pattern"
        if isinstance(message, bytes):
            message = message.decode("utf-8", "replace")
        raise re2.error(str(message)) from None


# --- valid_json -----------------------------------------------------------------------------

_JSON_TYPES = {
    dict: "object",
    list: "array",
    str: "string",
    bool: "boolean",
    int: "number",
    float: "number",
    type(None): "null",
}


def _json_type(doc: Any) -> str:
    return _JSON_TYPES.get(type(doc), type(doc).__name__)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed in JSON")


def _parse_json(text: str) -> tuple[Any, str | None, dict[str, Any]]:
    """(document, None, {}) or (None, why it failed, metadata)."""
    try:
        return json.loads(text, parse_constant=_reject_constant), None, {}
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno}, column {exc.colno}"
        return (
            None,
            f"not valid JSON: {exc.msg} at {where}",
            {"error_line": exc.lineno, "error_column": exc.colno},
        )
    except ValueError as exc:
        return None, f"not valid JSON: {exc}", {}
    except RecursionError:
        return None, "not valid JSON: nested too deeply to parse", {}


@dataclass(slots=True, eq=False)
class ValidJsonScorer:
    """1 / pass when the text parses as JSON (of the required kind); the explanation says
    where parsing failed."""

    name: str
    field: Field
    require: str = "any"

    def score(self, inp: EvalInput) -> Score:
        doc, error, meta = _parse_json(self.field.text(inp))
        if error is not None:
            return Score(0.0, FAIL, error, meta)
        kind = _json_type(doc)
        if self.require != "any" and kind != self.require:
            why = f"valid JSON, but {_article(kind)} where {_article(self.require)} is required"
            return Score(0.0, FAIL, why, {"json_type": kind})
        return Score(1.0, PASS, f"valid JSON {kind}", {"json_type": kind})


def _article(kind: str) -> str:
    return f"an {kind}" if kind[:1] in "aeiou" else f"a {kind}"


@builtin_type("valid_json")
def build_valid_json(name: str, opts: Reader) -> ValidJsonScorer | None:
    """``valid_json``: ``field``, ``require: any|object|array``."""
    field = read_field(opts)
    require = opts.choice("require", ("any", "object", "array"), "any")
    return ValidJsonScorer(name, field, require)


# --- json_schema ----------------------------------------------------------------------------

_MAX_ERRORS = 50
_SHOWN_ERRORS = 3


def _shorten(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(slots=True, eq=False)
class JsonSchemaScorer:
    """1 / pass when the value (JSON text, or already structured) validates against the
    schema; the explanation lists the first errors with their JSON paths."""

    name: str
    field: Field
    validator: Validator

    def score(self, inp: EvalInput) -> Score:
        value = self.field.value(inp)
        if isinstance(value, (str, bytes, bytearray)):
            value, error, meta = _parse_json(as_text(value))
            if error is not None:
                return Score(0.0, FAIL, error, meta)
        elif isinstance(value, (Mapping, list, tuple)):
            value = json.loads(as_text(value))
        try:
            errors: list[ValidationError] = list(
                islice(self.validator.iter_errors(value), _MAX_ERRORS + 1)
            )
        except Unresolvable as exc:
            raise ScorerError(
                f"the schema has a $ref that cannot be resolved (remote "
                f"references are never fetched): {exc}"
            ) from exc
        if not errors:
            return Score(1.0, PASS, "matches the schema", {"errors": 0})
        count = len(errors)
        shown = "; ".join(f"{e.json_path}: {_shorten(e.message)}" for e in errors[:_SHOWN_ERRORS])
        total = f"more than {_MAX_ERRORS}" if count > _MAX_ERRORS else str(count)
        more = f"; and {count - _SHOWN_ERRORS} more" if count > _SHOWN_ERRORS else ""
        noun = "error" if count == 1 else "errors"
        return Score(
            0.0, FAIL, f"{total} schema {noun}: {shown}{more}", {"errors": min(count, _MAX_ERRORS)}
        )


def _resolve_path(text: str, issues: Issues) -> Path:
    """A path relative to the config file's directory (or the working directory)."""
    path = Path(text).expanduser()
    if not path.is_absolute() and issues.file and not issues.file.startswith("<"):
        path = Path(issues.file).parent / path
    return path


def _load_schema_file(opts: Reader, text: str) -> Any:
    path = _resolve_path(text, opts.issues)
    try:
        raw = path.read_text(encoding="utf-8")
    except OSError as exc:
        opts.error("schema_file", f"cannot read {str(path)!r}: {exc.strerror or exc}")
        return None
    except UnicodeDecodeError as exc:
        opts.error("schema_file", f"cannot read {str(path)!r}: not UTF-8 ({exc.reason})")
        return None
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            return yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            opts.error("schema_file", f"{str(path)!r} is not valid YAML: {exc}")
            return None
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        opts.error(
            "schema_file",
            f"{str(path)!r} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}",
        )
        return None


def compile_schema(opts: Reader, key: str, schema: Any) -> Validator | None:
    """Check ``schema`` and build its validator, or record why not at ``key``.

    The draft is the one ``$schema`` names, Draft 2020-12 by default. Remote ``$ref`` are never
    fetched.
    """
    if not isinstance(schema, (Mapping, bool)):
        opts.error(key, f"must be a JSON Schema (a mapping), got {describe(schema)}")
        return None
    cls: type[Validator] = Draft202012Validator
    if isinstance(schema, Mapping) and "$schema" in schema:
        named = validator_for(schema, default=None)  # type: ignore[arg-type]
        if named is None:
            opts.error(
                key,
                f"unknown $schema {schema['$schema']!r}; use a JSON Schema draft "
                "URI such as https://json-schema.org/draft/2020-12/schema",
            )
            return None
        cls = named
    try:
        cls.check_schema(schema)  # type: ignore[arg-type]
    except SchemaError as exc:
        where = f" (at {exc.json_path})" if exc.path else ""
        opts.error(key, f"not a valid JSON Schema: {_shorten(exc.message)}{where}")
        return None
    validator: Validator = cls(schema, registry=Registry())
    return validator


@builtin_type("json_schema")
def build_json_schema(name: str, opts: Reader) -> JsonSchemaScorer | None:
    """``json_schema``: ``field``, ``schema`` (inline) or ``schema_file`` (JSON or YAML file)."""
    field = read_field(opts)
    inline = opts.raw("schema")
    file_text = opts.str("schema_file")
    if inline is not None and opts.has("schema_file"):
        opts.error("schema_file", "give either 'schema' or 'schema_file', not both")
        return None
    if inline is not None:
        validator = compile_schema(opts, "schema", inline)
    elif file_text is not None:
        schema = _load_schema_file(opts, file_text)
        validator = compile_schema(opts, "schema_file", schema) if schema is not None else None
    else:
        if not opts.has("schema_file"):
            opts.issues.add(
                opts.path, "needs 'schema' (an inline JSON Schema) or 'schema_file' (a path)"
            )
        return None
    return JsonSchemaScorer(name, field, validator) if validator is not None else None


# --- regex ----------------------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class RegexScorer:
    """1 / pass when the RE2 pattern matches (``search`` anywhere or ``fullmatch``), or does
    not match when ``negate``."""

    name: str
    field: Field
    pattern: re2._Regexp[str]
    fullmatch: bool = False
    negate: bool = False

    def score(self, inp: EvalInput) -> Score:
        text = self.field.text(inp)
        found = self.pattern.fullmatch(text) if self.fullmatch else self.pattern.search(text)
        if found is None:
            why = "pattern did not match" + (" the whole text" if self.fullmatch else "")
        elif self.fullmatch:
            why = "pattern matched the whole text"
        else:
            start, end = found.span()
            why = f"pattern matched at characters {start}-{end}"
        if self.negate:
            why += " (negate: a match fails)"
        ok = (found is not None) != self.negate
        return Score(1.0 if ok else 0.0, PASS if ok else FAIL, why, {"matched": found is not None})


@builtin_type("regex")
def build_regex(name: str, opts: Reader) -> RegexScorer | None:
    """``regex``: ``field``, ``pattern`` (RE2), ``mode: search|fullmatch``, ``ignore_case``,
    ``negate``."""
    field = read_field(opts)
    pattern = opts.str("pattern", required=True)
    mode = opts.choice("mode", ("search", "fullmatch"), "search")
    ignore_case = opts.bool("ignore_case", False)
    negate = opts.bool("negate", False)
    if pattern is None:
        return None
    try:
        compiled = compile_re2(pattern, ignore_case=ignore_case)
    except re2.error as exc:
        opts.error("pattern", f"not a valid RE2 pattern: {exc.args[0]}")
        return None
    return RegexScorer(name, field, compiled, mode == "fullmatch", negate)


# --- contains / not_contains ----------------------------------------------------------------


@dataclass(slots=True, eq=False)
class ContainsScorer:
    """Substring checks. ``contains`` passes when any (``mode: any``) or every (``mode: all``)
    value occurs; ``not_contains`` is its exact negation: with ``any`` it passes when none
    occurs, with ``all`` when at least one is missing."""

    name: str
    field: Field
    values: tuple[str, ...]
    require_all: bool = False
    case_sensitive: bool = False
    negate: bool = False

    def score(self, inp: EvalInput) -> Score:
        text = self.field.text(inp)
        hay = text if self.case_sensitive else text.casefold()
        found = [v for v in self.values if (v if self.case_sensitive else v.casefold()) in hay]
        missing = [v for v in self.values if v not in found]
        hit = not missing if self.require_all else bool(found)
        ok = hit != self.negate
        if self.require_all:
            why = f"found all of {quote_list(found)}" if hit else f"missing {quote_list(missing)}"
        else:
            why = (
                f"found {quote_list(found)}" if hit else f"none of {quote_list(self.values)} found"
            )
        return Score(
            1.0 if ok else 0.0,
            PASS if ok else FAIL,
            why,
            {"found": len(found), "of": len(self.values)},
        )


def _build_contains(name: str, opts: Reader, negate: bool) -> ContainsScorer | None:
    field = read_field(opts)
    values = text_values(opts, "values", allow_scalar=True)
    mode = opts.choice("mode", ("any", "all"), "any")
    case_sensitive = opts.bool("case_sensitive", False)
    if values is None:
        return None
    return ContainsScorer(name, field, tuple(values), mode == "all", case_sensitive, negate)


@builtin_type("contains")
def build_contains(name: str, opts: Reader) -> ContainsScorer | None:
    """``contains``: ``field``, ``values``, ``mode: any|all``, ``case_sensitive``."""
    return _build_contains(name, opts, negate=False)


@builtin_type("not_contains")
def build_not_contains(name: str, opts: Reader) -> ContainsScorer | None:
    """``not_contains``: the negation of ``contains`` with the same options."""
    return _build_contains(name, opts, negate=True)


# --- one_of ---------------------------------------------------------------------------------

OTHER = "other"


def _one_of_key(value: str, case_sensitive: bool, strip: bool) -> str:
    if strip:
        value = value.strip()
    return value if case_sensitive else value.casefold()


@dataclass(slots=True, eq=False)
class OneOfScorer:
    """A classifier's answer is one of a closed set: label = the value as configured (or
    ``other``), score 1 / 0."""

    name: str
    field: Field
    values: tuple[str, ...]
    case_sensitive: bool = True
    strip: bool = True
    _lookup: dict[str, str] = dataclass_field(init=False, repr=False)
    _allowed: str = dataclass_field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._lookup = {}
        for value in self.values:
            self._lookup.setdefault(_one_of_key(value, self.case_sensitive, self.strip), value)
        self._allowed = quote_list(self.values, 10)

    def score(self, inp: EvalInput) -> Score:
        text = self.field.text(inp)
        value = self._lookup.get(_one_of_key(text, self.case_sensitive, self.strip))
        if value is None:
            return Score(0.0, OTHER, f"not one of {self._allowed}")
        return Score(1.0, value, f"{value!r} is one of the {len(self.values)} allowed values")


@builtin_type("one_of")
def build_one_of(name: str, opts: Reader) -> OneOfScorer | None:
    """``one_of``: ``field``, ``values``, ``case_sensitive`` (default true), ``strip``
    (default true)."""
    field = read_field(opts)
    values = text_values(opts, "values")
    case_sensitive = opts.bool("case_sensitive", True)
    strip = opts.bool("strip", True)
    if values is None:
        return None
    first: dict[str, int] = {}
    for i, value in enumerate(values):
        key = _one_of_key(value, case_sensitive, strip)
        if key in first:
            note = "" if case_sensitive else " (case_sensitive is false)"
            opts.issues.add(
                join_path(opts.at("values"), i),
                f"{value!r} is the same value as values[{first[key]}]{note}",
            )
        first.setdefault(key, i)
    return OneOfScorer(name, field, tuple(values), case_sensitive, strip)


# --- length ---------------------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class LengthScorer:
    """1 / pass when the length in characters or words is within [min, max]."""

    name: str
    field: Field
    unit: str = "chars"
    min: int | None = None
    max: int | None = None

    def score(self, inp: EvalInput) -> Score:
        text = self.field.text(inp)
        length = len(text.split()) if self.unit == "words" else len(text)
        noun = ("word" if self.unit == "words" else "character") + ("" if length == 1 else "s")
        if self.min is not None and length < self.min:
            return Score(
                0.0, FAIL, f"{length} {noun}, fewer than the minimum {self.min}", {"length": length}
            )
        if self.max is not None and length > self.max:
            return Score(
                0.0, FAIL, f"{length} {noun}, more than the maximum {self.max}", {"length": length}
            )
        lo = "" if self.min is None else f"at least {self.min}"
        hi = "" if self.max is None else f"at most {self.max}"
        bounds = " and ".join(b for b in (lo, hi) if b)
        return Score(1.0, PASS, f"{length} {noun}, {bounds}", {"length": length})


@builtin_type("length")
def build_length(name: str, opts: Reader) -> LengthScorer | None:
    """``length``: ``field``, ``unit: chars|words``, ``min``, ``max`` (at least one)."""
    field = read_field(opts)
    unit = opts.choice("unit", ("chars", "words"), "chars")
    before = len(opts.issues.items)
    lo = opts.number("min", None, lo=0, integer=True)
    hi = opts.number("max", None, lo=0, integer=True)
    if len(opts.issues.items) > before:
        return None
    if not require_any(opts, ("min", "max"), (lo, hi)):
        return None
    if lo is not None and hi is not None and lo > hi:
        opts.error("min", f"must not be greater than max ({hi}), got {lo}")
        return None
    return LengthScorer(name, field, unit, lo, hi)


# --- not_empty ------------------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class NotEmptyScorer:
    """1 / pass when the value is present and not blank; a missing value scores 0 / fail."""

    name: str
    field: Field

    def score(self, inp: EvalInput) -> Score:
        value = self.field.get(inp)
        if value is None:
            return Score(0.0, FAIL, f"{self.field.label} is missing", {"length": 0})
        if isinstance(value, (Mapping, list, tuple)) and not value:
            return Score(0.0, FAIL, f"{self.field.label} is empty", {"length": 0})
        text = as_text(value)
        if not text.strip():
            what = "empty" if not text else "only whitespace"
            return Score(0.0, FAIL, f"{self.field.label} is {what}", {"length": len(text)})
        return Score(1.0, PASS, f"{self.field.label} is not empty", {"length": len(text)})


@builtin_type("not_empty")
def build_not_empty(name: str, opts: Reader) -> NotEmptyScorer | None:
    """``not_empty``: ``field``."""
    return NotEmptyScorer(name, read_field(opts))
