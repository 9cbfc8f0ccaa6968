"""The names the filter language knows: span fields, functions, INTERVAL units, keywords."""

from __future__ import annotations

import enum
from types import MappingProxyType

__all__ = [
    "ENUM_VALUES",
    "FIELDS",
    "FIELD_ALIASES",
    "FUNCTIONS",
    "INTERVAL_UNITS",
    "KEYWORDS",
    "KNOWN_FIELDS_TEXT",
    "KNOWN_TRACE_FIELDS_TEXT",
    "TRACE_FIELDS",
    "Type",
]


class Type(enum.Enum):
    """The static type of an expression, as far as the checker can tell."""

    STR = "a string"
    NUM = "a number"
    BOOL = "a boolean"
    LIST = "a list"
    NULL = "NULL"
    ANY = "any value"


TRACE_FIELDS: MappingProxyType[str, Type] = MappingProxyType(
    {
        "trace.span_count": Type.NUM,
        "trace.error_count": Type.NUM,
        "trace.duration_ms": Type.NUM,
        "trace.llm_calls": Type.NUM,
        "trace.tool_calls": Type.NUM,
        "trace.input_tokens": Type.NUM,
        "trace.output_tokens": Type.NUM,
        "trace.span_names": Type.LIST,
        "trace.complete": Type.BOOL,
    }
)
"""The fields of the whole trace a ``scope: trace`` rule evaluates (read from its anchor's
``trace``). All are NULL on a span evaluated alone; ``trace.input_tokens`` and
``trace.output_tokens`` are also NULL when no model call reports its usage."""

FIELDS: MappingProxyType[str, Type] = MappingProxyType(
    {
        "name": Type.STR,
        "kind": Type.STR,
        "status.code": Type.STR,
        "status.message": Type.STR,
        "duration_ms": Type.NUM,
        "start_time": Type.NUM,
        "end_time": Type.NUM,
        "is_root": Type.BOOL,
        "trace_id": Type.STR,
        "span_id": Type.STR,
        "parent_span_id": Type.STR,
        "input": Type.STR,
        "output": Type.STR,
        "model": Type.STR,
        "scope.name": Type.STR,
        "scope.version": Type.STR,
        "events": Type.LIST,
        **TRACE_FIELDS,
    }
)
"""Canonical field name -> static type. ``parent_span_id``, ``input``, ``output``, ``model`` and
the trace fields may also be NULL; every other field is always present."""

FIELD_ALIASES: MappingProxyType[str, str] = MappingProxyType({"status": "status.code"})

ENUM_VALUES: MappingProxyType[str, tuple[str, ...]] = MappingProxyType(
    {
        "kind": ("INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER"),
        "status.code": ("UNSET", "OK", "ERROR"),
    }
)
"""Fields whose value is one of a fixed set: comparing them with another literal is an error."""

KNOWN_FIELDS_TEXT = ", ".join(
    [
        "name",
        "kind",
        "status",
        "status.code",
        "status.message",
        "duration_ms",
        "start_time",
        "end_time",
        "is_root",
        "trace_id",
        "span_id",
        "parent_span_id",
        "input",
        "output",
        "model",
        "attributes['key']",
        "attributes.key",
        "resource['key']",
        "resource.key",
        "scope.name",
        "scope.version",
        "events",
        "trace.* (rules with scope: trace)",
    ]
)

KNOWN_TRACE_FIELDS_TEXT = ", ".join(TRACE_FIELDS)

FUNCTIONS: MappingProxyType[str, int] = MappingProxyType(
    {"json": 1, "length": 1, "lower": 1, "now": 0, "upper": 1}
)
"""Function name -> number of arguments."""

_NS = {
    "ms": 1_000_000,
    "millisecond": 1_000_000,
    "milliseconds": 1_000_000,
    "second": 1_000_000_000,
    "seconds": 1_000_000_000,
    "minute": 60_000_000_000,
    "minutes": 60_000_000_000,
    "hour": 3_600_000_000_000,
    "hours": 3_600_000_000_000,
    "day": 86_400_000_000_000,
    "days": 86_400_000_000_000,
}
INTERVAL_UNITS: MappingProxyType[str, int] = MappingProxyType(_NS)
"""INTERVAL unit (lower case) -> nanoseconds."""

KEYWORDS = frozenset(
    {
        "AND",
        "CONTAINS",
        "FALSE",
        "ILIKE",
        "IN",
        "INCLUDES",
        "INTERVAL",
        "IS",
        "LIKE",
        "MATCH",
        "NOT",
        "NULL",
        "OR",
        "TRUE",
    }
)
