"""The scorer contract: what a scorer receives, what it returns, and how results are checked.

A scorer is anything with a ``name`` and a ``score(EvalInput)`` method, sync or async. It may
return a :class:`Score`, a bool (pass/fail), a number in [0, 1], or a dict with ``score``
(or ``value``), ``label``, ``explanation`` and ``metadata``. :func:`to_score` turns every one of
those into a :class:`Score` and everything else (None, NaN, a string, a number out of range)
into a :class:`~otel_online_eval.ScorerError` that the engine records on the score span.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from otel_online_eval._errors import ScorerError

if TYPE_CHECKING:
    from otel_online_eval.sessionview import SessionView
    from otel_online_eval.spanview import SpanView
    from otel_online_eval.traceview import TraceView

__all__ = [
    "JUDGE_MODEL",
    "EvalInput",
    "FunctionScorer",
    "Score",
    "Scorer",
    "is_async_scorer",
    "to_score",
]

JUDGE_MODEL = "online_eval.judge.request.model"
"""The judge's model in a score's metadata. A judge's model and usage are recorded under
``online_eval.judge.*`` (``request.model``, ``response.model``, ``usage.input_tokens``,
``usage.output_tokens``), never under the GenAI names: a GenAI-aware backend would show a score
span as a model call and add the judge's tokens to the application's."""

_NO_METADATA: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Score:
    """One scorer's result.

    Attributes:
        value: the score in [0, 1]; None only for a purely categorical result with a label.
        label: a category such as ``pass`` / ``fail`` or the judge's choice.
        explanation: why, in words (the judge's rationale).
        metadata: anything else worth keeping; recorded as ``online_eval.metadata.<key>``
            (keys that start with ``online_eval.``, the judge's usage, as they are).
    """

    value: float | None
    label: str | None = None
    explanation: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=lambda: _NO_METADATA)


@dataclass(frozen=True, slots=True)
class EvalInput:
    """What every scorer receives.

    Attributes:
        input: the prompt text (last user message), or None.
        output: the answer text, or None.
        span: the scored span, or None for direct ``evaluate()`` calls without one.
        rule: the name of the rule (or direct evaluation) being run.
        model: the model that answered, when known.
        metadata: free-form values passed to ``evaluate()``.
        trace: the whole trace, for an evaluation of one (None for a span's).
        session: the conversation, for a session rule's evaluation (None otherwise).
    """

    input: str | None
    output: str | None
    span: SpanView | None
    rule: str
    model: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=lambda: _NO_METADATA)
    trace: TraceView | None = None
    session: SessionView | None = None

    @property
    def attributes(self) -> Mapping[str, Any]:
        """The scored span's attributes (empty without a span)."""
        return self.span.attributes if self.span is not None else _NO_METADATA


@runtime_checkable
class Scorer(Protocol):
    """A scorer: a name and a sync or async ``score``.

    ``score`` may block (it then runs in the engine's thread pool) or be a coroutine function
    (it then runs on the engine's event loop and must not block it).
    """

    name: str

    def score(self, inp: EvalInput) -> Any: ...


def is_async_scorer(scorer: Scorer) -> bool:
    """True when ``scorer.score`` is a coroutine function."""
    return inspect.iscoroutinefunction(scorer.score)


class FunctionScorer:
    """Adapts a plain callable ``fn(EvalInput)`` (sync or async) to the Scorer protocol.

    Args:
        fn: the callable.
        name: the scorer's name; the function's ``__name__`` when omitted.
    """

    def __init__(self, fn: Callable[[EvalInput], Any], name: str | None = None) -> None:
        self.fn = fn
        self.name: str = name or str(getattr(fn, "__name__", "scorer"))
        if inspect.iscoroutinefunction(fn):
            self.score = self._score_async  # type: ignore[method-assign]

    def score(self, inp: EvalInput) -> Any:
        return self.fn(inp)

    async def _score_async(self, inp: EvalInput) -> Any:
        return await self.fn(inp)

    def __repr__(self) -> str:
        return f"FunctionScorer({self.name!r})"


def _check_value(value: Any, scale: float, what: str) -> float:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if not isinstance(value, (int, float)):
        raise ScorerError(f"{what} must be a number, got {type(value).__name__} {value!r:.80}")
    number = float(value)
    if math.isnan(number):
        raise ScorerError(f"{what} is NaN")
    number /= scale
    if not 0.0 <= number <= 1.0:
        bounds = "[0, 1]" if scale == 1.0 else f"[0, {scale:g}]"
        raise ScorerError(f"{what} {value!r} is outside {bounds}")
    return number


def to_score(result: Any, scale: float = 1.0) -> Score:
    """Normalise what a scorer returned.

    Args:
        result: the scorer's return value.
        scale: the top of the scorer's scale (100 for 0-100 scores); values are divided by it.

    Returns:
        A Score whose value is in [0, 1] (or None with a label).

    Raises:
        ScorerError: for None, NaN, strings, values out of range and unknown shapes.
    """
    if isinstance(result, Score):
        if result.value is None:
            if result.label is None:
                raise ScorerError("returned a Score with neither a value nor a label")
            return result
        value = _check_value(result.value, scale, "score")
        if value == result.value:
            return result
        return Score(value, result.label, result.explanation, result.metadata)
    if isinstance(result, bool):
        return Score(1.0 if result else 0.0, "pass" if result else "fail")
    if isinstance(result, (int, float)):
        return Score(_check_value(result, scale, "score"))
    if isinstance(result, Mapping):
        return _from_mapping(result, scale)
    if result is None:
        raise ScorerError("returned None; return a number, a bool, a Score or a dict")
    if isinstance(result, str):
        raise ScorerError(
            f"returned a string {result!r:.80}; return a number, a bool, a Score or a dict"
        )
    raise ScorerError(
        f"returned {type(result).__name__}; expected a number, a bool, a Score or a dict"
    )


_MAPPING_KEYS = {"score", "value", "label", "explanation", "metadata"}


def _from_mapping(result: Mapping[Any, Any], scale: float) -> Score:
    unknown = set(result) - _MAPPING_KEYS
    if unknown:
        raise ScorerError(
            f"returned a dict with unknown keys {sorted(map(str, unknown))}; "
            f"expected {sorted(_MAPPING_KEYS)}"
        )
    raw = result.get("score", result.get("value"))
    label = result.get("label")
    if label is not None and not isinstance(label, str):
        raise ScorerError(f"label must be a string, got {type(label).__name__}")
    explanation = result.get("explanation")
    if explanation is not None and not isinstance(explanation, str):
        raise ScorerError(f"explanation must be a string, got {type(explanation).__name__}")
    metadata = result.get("metadata") or {}
    if not isinstance(metadata, Mapping):
        raise ScorerError(f"metadata must be a dict, got {type(metadata).__name__}")
    if raw is None:
        if label is None:
            raise ScorerError("returned a dict with neither a score nor a label")
        value = None
    else:
        value = _check_value(raw, scale, "score")
        if isinstance(raw, bool) and label is None:
            label = "pass" if raw else "fail"
    return Score(value, label, explanation, MappingProxyType(dict(metadata)))
