"""The filter language: a SQL-like clause over one span, parsed once and compiled to closures.

::

    f = compile_filter("attributes['gen_ai.operation.name'] = 'chat' AND output IS NOT NULL")
    f(view)            # True / False, never raises
    f.why_false(view)  # "output IS NOT NULL" when that is what failed

    role = compile_value("json(attributes['gen_ai.input.messages'])[0].role")
    role(view)         # "user", or None when missing

    uses_trace_fields(compile_filter("trace.error_count > 0"))  # True: needs ``scope: trace``

Syntax and semantics: ``docs/filter-language.md``. Errors are
:class:`~otel_online_eval._errors.FilterSyntaxError` with the 0-based ``position`` of the
offending token. :func:`otel_online_eval.query.reference.evaluate` is a slow tree-walking
evaluator of the same language, kept to test the compiler against.
"""

from __future__ import annotations

from otel_online_eval.query._api import (
    CompiledFilter,
    compile_filter,
    compile_value,
    uses_trace_fields,
)
from otel_online_eval.query._parser import parse
from otel_online_eval.query.ast import Node

__all__ = [
    "CompiledFilter",
    "Node",
    "compile_filter",
    "compile_value",
    "parse",
    "uses_trace_fields",
]
