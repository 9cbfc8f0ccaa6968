"""Assembly: the spans of a trace (and, later, the traces of a session) held until the unit is
complete, then handed to evaluation whole (see ``docs/architecture.md``)."""

from otel_online_eval.assembly._sessions import (
    SESSION_REASONS,
    SessionAssembler,
    SessionCounts,
    SessionSettings,
    SessionUnit,
    Turn,
)
from otel_online_eval.assembly._settings import REASONS, AssemblyBounds, Completion
from otel_online_eval.assembly._traces import AssemblyCounts, TraceAssembler, TraceSpan, TraceUnit

__all__ = [
    "REASONS",
    "SESSION_REASONS",
    "AssemblyBounds",
    "AssemblyCounts",
    "Completion",
    "SessionAssembler",
    "SessionCounts",
    "SessionSettings",
    "SessionUnit",
    "TraceAssembler",
    "TraceSpan",
    "TraceUnit",
    "Turn",
]
