"""Read-only access to a conversation: its turns (one trace each) in order, and its transcript."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property

from otel_online_eval.assembly import Turn
from otel_online_eval.genai import Message

__all__ = ["SessionView"]


class SessionView:
    """A conversation as session rules see it.

    Args:
        key: the session key the turns share.
        turns: the turns, in any order (kept ordered by start).
        reason: why it was evaluated when it was (``idle``, ``max_turns``, ``max_wait``,
            ``evicted``, ``shutdown``, ``end_of_input``).
    """

    def __init__(self, key: str, turns: Sequence[Turn], reason: str = "idle") -> None:
        if not turns:
            raise ValueError("a session view needs at least one turn")
        self.key = key
        self.turns: tuple[Turn, ...] = tuple(sorted(turns, key=lambda t: (t.start_ns, t.end_ns)))
        self.reason = reason

    @property
    def turn_count(self) -> int:
        return len(self.turns)

    @cached_property
    def messages(self) -> tuple[Message, ...]:
        """The transcript: each turn's user message and answer, in order."""
        out: list[Message] = []
        for turn in self.turns:
            if turn.input:
                out.append(Message("user", turn.input))
            if turn.output:
                out.append(Message("assistant", turn.output))
        return tuple(out)

    @property
    def input(self) -> str | None:
        """The conversation's first user message."""
        return next((t.input for t in self.turns if t.input), None)

    @property
    def output(self) -> str | None:
        """The last answer."""
        return next((t.output for t in reversed(self.turns) if t.output), None)

    @property
    def error_count(self) -> int:
        return sum(t.error_count for t in self.turns)

    @property
    def duration_ms(self) -> float:
        return (max(t.end_ns for t in self.turns) - self.turns[0].start_ns) / 1e6

    def __repr__(self) -> str:
        return f"<SessionView {self.key!r}: {self.turn_count} turns, {self.reason}>"
