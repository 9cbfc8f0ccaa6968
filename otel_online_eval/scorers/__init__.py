"""Scorers: the contract, the registry of YAML types, and the built-in types."""

from otel_online_eval.scorers import builtin as _builtin  # noqa: F401  (registers types)
from otel_online_eval.scorers.base import (
    EvalInput,
    FunctionScorer,
    Score,
    Scorer,
    is_async_scorer,
    to_score,
)
from otel_online_eval.scorers.registry import SCORER_TYPES, field_getter, register

__all__ = [
    "SCORER_TYPES",
    "EvalInput",
    "FunctionScorer",
    "Score",
    "Scorer",
    "field_getter",
    "is_async_scorer",
    "register",
    "to_score",
]
