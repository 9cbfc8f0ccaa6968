"""What a trace rule says about completion and what assembly may hold (checked on creation)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = ["REASONS", "AssemblyBounds", "Completion"]

REASONS = ("complete", "end_on", "idle", "max_wait", "evicted", "shutdown", "end_of_input")
"""Why a trace was handed to evaluation: the first two mean complete, the others that it may
not be (``online_eval.trace.complete = false``); ``end_of_input``: the tools, at the end of a
file, for a trace whose root or some span's parent is not in it."""


def _positive(name: str, value: float, allow_zero: bool = True) -> None:
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        need = "at least 0" if allow_zero else "more than 0"
        raise ValueError(f"completion {name} must be a finite number {need}, got {value!r}")


@dataclass(frozen=True, slots=True)
class Completion:
    """When a buffered trace is evaluated.

    Structural first: once the root has ended and no span's parent is missing, the trace is
    complete ``settle_s`` after its last span arrived (a later span restarts the wait). A span
    named in ``end_on`` completes it when it arrives. Fallbacks: ``idle_s`` with no new span,
    then ``max_wait_s`` from the first span.

    Args:
        settle_s: the quiet time after structural completion.
        idle_s: the quiet time after which a trace that is not complete is evaluated anyway.
        max_wait_s: the longest a trace is held, counted from its first span.
        end_on: span names whose arrival completes the trace.
        local_roots: a span whose parent is remote counts as the root (in-process, where
            the upstream service's spans never arrive).
    """

    settle_s: float = 2.0
    idle_s: float = 30.0
    max_wait_s: float = 300.0
    end_on: frozenset[str] = field(default_factory=frozenset)
    local_roots: bool = False

    def __post_init__(self) -> None:
        _positive("settle_s", self.settle_s)
        _positive("idle_s", self.idle_s, allow_zero=False)
        _positive("max_wait_s", self.max_wait_s, allow_zero=False)
        if self.settle_s > self.idle_s:
            raise ValueError(
                f"completion settle_s ({self.settle_s:g}) must not exceed idle_s "
                f"({self.idle_s:g}): a complete trace would wait longer than an incomplete one"
            )


@dataclass(frozen=True, slots=True)
class AssemblyBounds:
    """What the buffers may hold at once.

    Args:
        max_traces: traces buffered at once.
        max_spans_per_trace: spans kept per trace; later ones are dropped and counted.
        max_bytes: the spans' sizes (as the caller measures them) buffered at once.
        on_full: when a bound would be passed, the oldest trace is evaluated early
            (``evaluate``, reason ``evicted``) or dropped (``drop``); counted either way.
        remember: how many evaluated traces are remembered, so that their late spans are
            recognised (as late, not as a new trace).
        max_sessions: conversations session rules hold at once (their turns are small
            records, not counted in ``max_bytes``); past it the oldest is evaluated early.
    """

    max_traces: int = 10_000
    max_spans_per_trace: int = 1_000
    max_bytes: int = 256 << 20
    on_full: str = "evaluate"
    remember: int = 100_000
    max_sessions: int = 10_000

    def __post_init__(self) -> None:
        for name in ("max_traces", "max_spans_per_trace", "max_bytes", "remember", "max_sessions"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(
                    f"assembly {name} must be a whole number of at least 1, got {value!r}"
                )
        if self.on_full not in ("evaluate", "drop"):
            raise ValueError(f"assembly on_full must be 'evaluate' or 'drop', got {self.on_full!r}")
