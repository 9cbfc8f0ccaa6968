"""Scorers over what the span measured rather than what it says: ``latency`` and
``token_usage``. Both need the scored span; without one they raise ScorerError.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from otel_online_eval._errors import ScorerError
from otel_online_eval._validate import Reader
from otel_online_eval.scorers._fields import FAIL, PASS, builtin_type, require_any
from otel_online_eval.scorers.base import EvalInput, Score

if TYPE_CHECKING:
    from otel_online_eval.spanview import SpanView

__all__ = ["LatencyScorer", "TokenUsageScorer", "duration_score", "token_score"]


def _span(inp: EvalInput, scorer: str) -> SpanView:
    if inp.span is None:
        raise ScorerError(f"{scorer} needs the scored span, and this evaluation has none")
    return inp.span


def _ms(value: float) -> str:
    return f"{value:.0f} ms" if value >= 10 else f"{value:.3g} ms"


@dataclass(slots=True, eq=False)
class LatencyScorer:
    """The span's duration against ``max_ms`` (and ``target_ms``).

    Without a target: 1 up to ``max_ms``, 0 above. With one: 1 up to ``target_ms``, falling in
    a straight line to 0 at ``max_ms``, 0 above. The label is pass / fail against ``max_ms``.
    """

    name: str
    max_ms: float
    target_ms: float | None = None

    def score(self, inp: EvalInput) -> Score:
        return duration_score(_span(inp, "latency").duration_ms, self.max_ms, self.target_ms)


def duration_score(took: float, max_ms: float, target_ms: float | None) -> Score:
    """A duration against ``max_ms`` (and ``target_ms``), as :class:`LatencyScorer` scores it."""
    meta = {"duration_ms": took}
    target = "" if target_ms is None else f", target {_ms(target_ms)}"
    limits = f"(max {_ms(max_ms)}{target})"
    if took > max_ms:
        return Score(0.0, FAIL, f"took {_ms(took)}, over the maximum {limits}", meta)
    if target_ms is None or took <= target_ms:
        return Score(1.0, PASS, f"took {_ms(took)}, within {limits}", meta)
    value = (max_ms - took) / (max_ms - target_ms)
    return Score(
        min(1.0, max(0.0, value)),
        PASS,
        f"took {_ms(took)}, over the target but within the maximum {limits}",
        meta,
    )


@builtin_type("latency")
def build_latency(name: str, opts: Reader) -> LatencyScorer | None:
    """``latency``: ``max_ms`` (required), ``target_ms`` (optional, below ``max_ms``)."""
    before = len(opts.issues.items)
    max_ms = opts.number("max_ms", None, lo=0, required=True)
    target_ms = opts.number("target_ms", None, lo=0)
    if len(opts.issues.items) > before or max_ms is None:
        return None
    if max_ms <= 0:
        opts.error("max_ms", f"must be greater than 0, got {max_ms!r}")
        return None
    if target_ms is not None and target_ms >= max_ms:
        opts.error("target_ms", f"must be less than max_ms ({max_ms:g}), got {target_ms!r}")
        return None
    return LatencyScorer(name, float(max_ms), None if target_ms is None else float(target_ms))


_BOUNDS = ("max_input_tokens", "max_output_tokens", "max_total_tokens")


@dataclass(slots=True, eq=False)
class TokenUsageScorer:
    """1 / pass when the span's token usage is within every configured bound."""

    name: str
    max_input: int | None = None
    max_output: int | None = None
    max_total: int | None = None

    def score(self, inp: EvalInput) -> Score:
        usage = _span(inp, "token_usage").genai
        return token_score(
            usage.input_tokens,
            usage.output_tokens,
            self.max_input,
            self.max_output,
            self.max_total,
            "the span has no",
        )


def token_score(
    used_in: int | None,
    used_out: int | None,
    max_input: int | None,
    max_output: int | None,
    max_total: int | None,
    missing_prefix: str,
) -> Score:
    """Token usage against every bound given, as :class:`TokenUsageScorer` scores it.

    Raises:
        ScorerError: a bound needs a usage that is unknown (``missing_prefix`` starts the
            message, e.g. "the span has no").
    """
    need_in = max_input is not None or max_total is not None
    need_out = max_output is not None or max_total is not None
    missing = [
        attr
        for need, value, attr in (
            (need_in, used_in, "gen_ai.usage.input_tokens"),
            (need_out, used_out, "gen_ai.usage.output_tokens"),
        )
        if need and value is None
    ]
    if missing:
        raise ScorerError(f"token usage is missing: {missing_prefix} {' or '.join(missing)}")
    checks: list[tuple[str, int, int]] = []
    if max_input is not None and used_in is not None:
        checks.append(("input", used_in, max_input))
    if max_output is not None and used_out is not None:
        checks.append(("output", used_out, max_output))
    if max_total is not None and used_in is not None and used_out is not None:
        checks.append(("total", used_in + used_out, max_total))
    over = [
        f"{what} {used} tokens, over the maximum {limit}"
        for what, used, limit in checks
        if used > limit
    ]
    meta: dict[str, int] = {}
    if used_in is not None:
        meta["input_tokens"] = used_in
    if used_out is not None:
        meta["output_tokens"] = used_out
    if over:
        return Score(0.0, FAIL, "; ".join(over), meta)
    within = ", ".join(f"{what} {used} <= {limit}" for what, used, limit in checks)
    return Score(1.0, PASS, f"within the token limits: {within}", meta)


@builtin_type("token_usage")
def build_token_usage(name: str, opts: Reader) -> TokenUsageScorer | None:
    """``token_usage``: ``max_input_tokens``, ``max_output_tokens``, ``max_total_tokens``
    (at least one)."""
    before = len(opts.issues.items)
    bounds = [opts.number(key, None, lo=0, integer=True) for key in _BOUNDS]
    if len(opts.issues.items) > before or not require_any(opts, _BOUNDS, bounds):
        return None
    return TokenUsageScorer(name, *bounds)
