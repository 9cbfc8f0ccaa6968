"""Conversations: the turns (one trace each) that share a session key, held until the
conversation goes quiet, reaches ``max_turns`` or has waited ``max_wait_s``.

A turn is a compact record of its trace (ids, input, output, times, errors, tokens), never the
trace: a conversation of 200 turns holds 200 small records. Like trace assembly, it is driven by
one thread with the time passed in, and its deadlines are kept in dicts in deadline order.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "SESSION_REASONS",
    "SessionAssembler",
    "SessionCounts",
    "SessionSettings",
    "SessionUnit",
    "Turn",
]

SESSION_REASONS = ("idle", "max_turns", "max_wait", "evicted", "shutdown", "end_of_input")
"""Why a conversation was handed to evaluation. A conversation that reaches ``max_turns`` is
evaluated then; its later turns start the next one under the same key."""


@dataclass(frozen=True, slots=True)
class SessionSettings:
    """When a conversation is evaluated.

    Args:
        key: the filter-language expression of its key (None: ``gen_ai.conversation.id``,
            else ``session.id``, on a span or its resource).
        idle_s: the quiet time after the last turn.
        max_turns: a conversation with this many turns is evaluated at once.
        max_wait_s: the longest a conversation is held, from its first turn.
    """

    key: str | None = None
    idle_s: float = 900.0
    max_turns: int = 200
    max_wait_s: float = 86_400.0

    def __post_init__(self) -> None:
        for name in ("idle_s", "max_wait_s"):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"session {name} must be a finite number above 0, got {value!r}")
        if self.max_turns < 1:
            raise ValueError(f"session max_turns must be at least 1, got {self.max_turns!r}")


@dataclass(frozen=True, slots=True)
class Turn:
    """One trace of a conversation, kept small.

    Attributes:
        trace_id, span_id: the trace and its anchor span (where the turn's eval would attach).
        input: the user's message; output: the answer.
        start_ns, end_ns: the trace's first start and last end.
        error_count: spans with an error status.
        input_tokens, output_tokens: token totals (None when no span reported them).
        complete: whether the trace was complete when it became a turn.
        resource: what the eval span is reported under when this is the last turn.
    """

    trace_id: int
    span_id: int
    input: str | None
    output: str | None
    start_ns: int
    end_ns: int
    error_count: int = 0
    input_tokens: int | None = None
    output_tokens: int | None = None
    complete: bool = True
    resource: Any = None


@dataclass(frozen=True, slots=True)
class SessionUnit:
    """A conversation handed to evaluation: its turns in start order and why now."""

    key: str
    turns: tuple[Turn, ...]
    reason: str


@dataclass(slots=True)
class SessionCounts:
    """Turns added, conversations released by reason, turns over max_turns, evictions."""

    turns: int = 0
    released: dict[str, int] = field(default_factory=dict)
    evicted: int = 0


class _Session:
    __slots__ = ("first", "key", "last", "turns")

    def __init__(self, key: str, now: float) -> None:
        self.key = key
        self.turns: list[Turn] = []
        self.first = now
        self.last = now


class SessionAssembler:
    """Conversations in flight for one session rule.

    Args:
        settings: the rule's ``session:``.
        max_sessions: conversations held at once; past it the oldest is evaluated early
            (reason ``evicted``).
    """

    def __init__(self, settings: SessionSettings, max_sessions: int = 10_000) -> None:
        if max_sessions < 1:
            raise ValueError(f"max_sessions must be at least 1, got {max_sessions!r}")
        self.settings = settings
        self.max_sessions = max_sessions
        self.counts = SessionCounts()
        self._open: dict[str, _Session] = {}  # by first turn (max_wait, eviction)
        self._quiet: OrderedDict[str, _Session] = OrderedDict()  # by last turn (idle)

    def __len__(self) -> int:
        return len(self._open)

    def add(self, key: str, turn: Turn, now: float) -> list[SessionUnit]:
        """Add a turn; returns conversations handed on at once (evicted, or at max_turns)."""
        out: list[SessionUnit] = []
        session = self._open.get(key)
        if session is None:
            if len(self._open) >= self.max_sessions:
                self.counts.evicted += 1
                self._release_into(out, next(iter(self._open.values())), "evicted")
            session = _Session(key, now)
            self._open[key] = session
            self._quiet[key] = session
        session.turns.append(turn)
        session.last = now
        self._quiet.move_to_end(key)
        self.counts.turns += 1
        if len(session.turns) >= self.settings.max_turns:
            self._release_into(out, session, "max_turns")
        return out

    def next_due(self) -> float | None:
        times = []
        if self._quiet:
            times.append(next(iter(self._quiet.values())).last + self.settings.idle_s)
        if self._open:
            times.append(next(iter(self._open.values())).first + self.settings.max_wait_s)
        return min(times) if times else None

    def due(self, now: float) -> list[SessionUnit]:
        out: list[SessionUnit] = []
        while self._quiet:
            session = next(iter(self._quiet.values()))
            if session.last + self.settings.idle_s > now:
                break
            self._release_into(out, session, "idle")
        while self._open:
            session = next(iter(self._open.values()))
            if session.first + self.settings.max_wait_s > now:
                break
            self._release_into(out, session, "max_wait")
        return out

    def drain(self, reason: str = "shutdown") -> list[SessionUnit]:
        out: list[SessionUnit] = []
        while self._open:
            self._release_into(out, next(iter(self._open.values())), reason)
        return out

    def _release_into(self, out: list[SessionUnit], session: _Session, reason: str) -> None:
        del self._open[session.key]
        del self._quiet[session.key]
        released = self.counts.released
        released[reason] = released.get(reason, 0) + 1
        turns = tuple(sorted(session.turns, key=lambda t: (t.start_ns, t.end_ns)))
        out.append(SessionUnit(session.key, turns, reason))
