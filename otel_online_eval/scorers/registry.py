"""Scorer types by the name used in YAML ``type:``, and the ``field`` option every built-in has.

A scorer type is a factory ``(name, options) -> Scorer | None``. It reads its own options from
the :class:`~otel_online_eval._validate.Reader` (recording every problem there, never raising)
and returns the scorer, or None when its options were wrong. The config loader reads the
options common to all types (``type``, ``timeout_s``, ``scale``) before calling it, and reports
unknown keys after.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from otel_online_eval._errors import FilterSyntaxError
from otel_online_eval._validate import Reader
from otel_online_eval.scorers.base import EvalInput, Scorer

__all__ = [
    "INLINE_TYPES",
    "SCORER_TYPES",
    "SESSION_TYPES",
    "TRACE_TYPES",
    "ScorerFactory",
    "field_getter",
    "register",
]

ScorerFactory = Callable[[str, Reader], "Scorer | None"]

SCORER_TYPES: dict[str, ScorerFactory] = {}
"""YAML ``type:`` -> factory. Filled by the modules of this package on import."""

INLINE_TYPES: set[str] = set()
"""Types whose scorers are sync, CPU-only and linear in their input: the engine calls them
directly on its event loop instead of handing them to the thread pool (which costs more than
the scoring). Their timeout is not enforced, since a running call cannot be interrupted."""

TRACE_TYPES: frozenset[str] = frozenset(
    {
        "tool_errors",
        "loop",
        "step_budget",
        "trace_latency",
        "trace_token_budget",
        # llm_judge templates (``template: task_completion``) over the trace's transcript
        "task_completion",
        "tool_use",
        "answer_grounded_in_tools",
    }
)
"""YAML types, and ``llm_judge`` built-in template names, that score a whole trace: they need a
rule with ``scope: trace`` and fail on every span of a ``scope: span`` rule."""

SESSION_TYPES: frozenset[str] = frozenset(
    {"session_turns", "conversation_resolved", "user_frustration"}
)
"""YAML types, and ``llm_judge`` built-in template names, that score a conversation of several
traces: they need a rule with ``scope: session`` (the two templates also read a single trace's
transcript, with ``scope: trace``)."""


def register(type_name: str, inline: bool = False) -> Callable[[ScorerFactory], ScorerFactory]:
    """Decorator that registers a factory under ``type_name``; ``inline``: see INLINE_TYPES."""

    def add(factory: ScorerFactory) -> ScorerFactory:
        SCORER_TYPES[type_name] = factory
        if inline:
            INLINE_TYPES.add(type_name)
        return factory

    return add


FieldGetter = Callable[[EvalInput], Any]


def _input(inp: EvalInput) -> Any:
    return inp.input


def _output(inp: EvalInput) -> Any:
    return inp.output


def field_getter(opts: Reader, key: str = "field", default: str = "output") -> FieldGetter:
    """Read the option that says which value a scorer looks at.

    ``input`` and ``output`` are the extracted prompt and answer; anything else is an
    expression of the filter language over the span (``attributes['gen_ai.system']``,
    ``json(attributes['x']).answer``, ``name``), None when there is no span.
    """
    text = opts.str(key, default)
    if text == "input":
        return _input
    if text == "output":
        return _output
    from otel_online_eval.query import compile_value

    try:
        getter = compile_value(text)
    except FilterSyntaxError as exc:
        opts.error(key, f"not a valid field expression: {exc.message}", exc.position)
        return _output

    def from_span(inp: EvalInput) -> Any:
        return getter(inp.span) if inp.span is not None else None

    return from_span
