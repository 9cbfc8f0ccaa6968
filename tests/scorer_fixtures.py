"""Importable scorers for the ``python`` scorer type's tests.

Referenced as ``ref: "tests.scorer_fixtures:<name>"``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from otel_online_eval.scorers import EvalInput, Score


def has_output(inp: EvalInput) -> Score:
    """Sync function: 1 when there is an output."""
    ok = bool(inp.output)
    return Score(1.0 if ok else 0.0, "pass" if ok else "fail", "checked the output")


async def half(inp: EvalInput) -> dict[str, Any]:
    """Async function returning a dict."""
    await asyncio.sleep(0)
    return {"score": 0.5, "label": "half", "explanation": f"rule {inp.rule}"}


def contains_word(inp: EvalInput, *, word: str = "hello") -> bool:
    """Sync function with a keyword argument bound from ``args``."""
    return word in (inp.output or "")


def takes_nothing() -> bool:
    """Cannot take the EvalInput."""
    return True


class KeywordScorer:
    """A class with constructor arguments and no ``name`` of its own."""

    def __init__(self, keyword: str, weight: float = 1.0) -> None:
        self.keyword = keyword
        self.weight = weight

    def score(self, inp: EvalInput) -> Score:
        found = self.keyword in (inp.output or "")
        return Score(self.weight if found else 0.0, "found" if found else "absent")


class NamedAsyncScorer:
    """A class with its own name and an async ``score``."""

    name = "named_async"

    async def score(self, inp: EvalInput) -> float:
        await asyncio.sleep(0)
        return 0.25


class SlottedScorer:
    """No ``name`` and no room for one: the loader must wrap it."""

    __slots__ = ()

    def score(self, inp: EvalInput) -> bool:
        return True


class NoScoreMethod:
    """Not a scorer."""

    def evaluate(self, inp: EvalInput) -> bool:
        return True


class BrokenInit:
    """Fails when instantiated."""

    def __init__(self) -> None:
        raise RuntimeError("cannot start\nsecond line")


class ScoreTakesNothing:
    """``score`` with the wrong signature."""

    name = "bad_signature"

    def score(self) -> bool:
        return True


READY = KeywordScorer("ready")
"""A ready-made scorer instance."""

NOT_CALLABLE = 42
