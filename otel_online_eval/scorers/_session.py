"""Scorers over a conversation (``EvalInput.session``, rules with ``scope: session``)."""

from __future__ import annotations

from dataclasses import dataclass

from otel_online_eval._errors import ScorerError
from otel_online_eval._validate import Reader
from otel_online_eval.scorers._fields import FAIL, PASS, builtin_type
from otel_online_eval.scorers.base import EvalInput, Score

__all__ = ["SessionTurnsScorer"]


@dataclass(slots=True, eq=False)
class SessionTurnsScorer:
    """Passes when the conversation took between ``min_turns`` and ``max_turns`` turns: a
    support chat that needs 30 turns, or that ends after one, is worth a look."""

    name: str
    max_turns: int
    min_turns: int = 1

    def score(self, inp: EvalInput) -> Score:
        if inp.session is None:
            raise ScorerError(
                f"{self.name} scores a conversation, and this evaluation is not of one "
                "(use it in a rule with scope: session)"
            )
        n = inp.session.turn_count
        ok = self.min_turns <= n <= self.max_turns
        why = f"{n} turns ({'within' if ok else 'outside'} {self.min_turns}..{self.max_turns})"
        return Score(1.0 if ok else 0.0, PASS if ok else FAIL, why, {"turns": n})


@builtin_type("session_turns")
def build_session_turns(name: str, opts: Reader) -> SessionTurnsScorer | None:
    """``session_turns``: ``max_turns`` (required), ``min_turns`` (default 1)."""
    max_turns = opts.number("max_turns", None, lo=1, integer=True, required=True)
    min_turns = int(opts.number("min_turns", 1, lo=1, integer=True))
    if max_turns is None:
        return None
    if min_turns > max_turns:
        opts.error("min_turns", f"must not exceed max_turns ({max_turns}), got {min_turns}")
        return None
    return SessionTurnsScorer(name, int(max_turns), min_turns)
