"""The built-in scorer types, registered by YAML ``type:`` when this package is imported.

=================  ======================================================================
type               scores
=================  ======================================================================
``valid_json``     the text parses as JSON (``require: any|object|array``)
``json_schema``    the value validates against a JSON Schema (``schema`` / ``schema_file``)
``regex``          an RE2 pattern matches (``mode: search|fullmatch``, ``negate``)
``contains``       the text contains any / all of ``values``
``not_contains``   the negation of ``contains``
``one_of``         the text is one of ``values``; the label is the value (or ``other``)
``length``         the length in chars or words is within ``min`` / ``max``
``not_empty``      the value is present and not blank
``pii``            no email, phone, credit card, IBAN or IP address in the text
``refusal``        the model did not refuse (``pass_on: answered|refused``)
``latency``        the span's duration against ``max_ms`` / ``target_ms``
``token_usage``    the span's token usage against ``max_*_tokens``
``python``         your own function or class, ``ref: "package.module:attr"``
=================  ======================================================================

Over a whole trace (rules with ``scope: trace``; ``_trace.py``): ``tool_errors``, ``loop``,
``step_budget``, ``trace_latency``, ``trace_token_budget``. ``registry.TRACE_TYPES`` and
``registry.SESSION_TYPES`` name the types and judge templates that need a trace or a session.

Every text type has the ``field`` option (``output`` by default, ``input``, or a filter-language
expression over the span). docs/scorers.md is the user reference.
"""

from __future__ import annotations

from otel_online_eval.scorers import (
    _heuristics,
    _pii,
    _python_ref,
    _refusal,
    _session,
    _span_metrics,
    _trace,
)
from otel_online_eval.scorers import judge as _judge  # noqa: F401  (type llm_judge)
from otel_online_eval.scorers._autoevals import build_autoevals  # noqa: F401  (type autoevals)
from otel_online_eval.scorers._embeddings import build_embedding_similarity  # noqa: F401

__all__: list[str] = []

# Imported for the side effect of registering their types.
_MODULES = (_heuristics, _pii, _python_ref, _refusal, _session, _span_metrics, _trace)
