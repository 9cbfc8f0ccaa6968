"""Scorers over a whole trace (``EvalInput.trace``): tool errors, loops, the step budget, the
trace's latency and its token budget. Without a trace they raise ScorerError.

YAML types (all inline: sync, CPU-only, linear in the trace), for rules with ``scope: trace``
(``registry.TRACE_TYPES``):

======================  =================================================================
type                    options
======================  =================================================================
``tool_errors``         ``max_error_rate`` (0 to 1, default 0)
``loop``                ``max_repeats`` (whole number >= 2, default 3)
``step_budget``         ``max_llm_calls``, ``max_tool_calls`` (at least one)
``trace_latency``       ``max_ms`` (required), ``target_ms``
``trace_token_budget``  ``max_input_tokens``, ``max_output_tokens``, ``max_total_tokens``,
                        ``max_cost`` (at least one), ``prices`` (model -> ``input_per_mtok``,
                        ``output_per_mtok``; needed by ``max_cost``)
======================  =================================================================
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from otel_online_eval._errors import ScorerError
from otel_online_eval._validate import Reader
from otel_online_eval.scorers._fields import FAIL, PASS, builtin_type, describe, require_any
from otel_online_eval.scorers._span_metrics import build_latency, duration_score, token_score
from otel_online_eval.scorers.base import EvalInput, Score

if TYPE_CHECKING:
    from otel_online_eval.traceview import TraceView

__all__ = [
    "LoopScorer",
    "Price",
    "StepBudgetScorer",
    "ToolErrorsScorer",
    "TraceLatencyScorer",
    "TraceTokenBudgetScorer",
    "build_loop",
    "build_step_budget",
    "build_tool_errors",
    "build_trace_latency",
    "build_trace_token_budget",
]


def _trace(inp: EvalInput, scorer: str) -> TraceView:
    if inp.trace is None:
        raise ScorerError(
            f"{scorer} scores a whole trace, and this evaluation is of one span "
            "(use it in a rule with scope: trace)"
        )
    return inp.trace


@dataclass(slots=True, eq=False)
class ToolErrorsScorer:
    """The share of tool runs that succeeded; pass while the failed share is at most
    ``max_error_rate`` (0: any failure fails). A trace that ran no tool scores 1."""

    name: str
    max_error_rate: float = 0.0

    def score(self, inp: EvalInput) -> Score:
        calls = _trace(inp, "tool_errors").tool_calls
        if not calls:
            return Score(1.0, PASS, "no tool was run", {"tool_calls": 0, "tool_errors": 0})
        failed = [c for c in calls if c.error is not None]
        rate = len(failed) / len(calls)
        meta = {"tool_calls": len(calls), "tool_errors": len(failed)}
        if not failed:
            return Score(1.0, PASS, f"all {len(calls)} tool runs succeeded", meta)
        listed = "; ".join(f"{c.name}: {c.error}" for c in failed[:5])
        more = f" and {len(failed) - 5} more" if len(failed) > 5 else ""
        label = PASS if rate <= self.max_error_rate else FAIL
        return Score(
            1.0 - rate,
            label,
            f"{len(failed)} of {len(calls)} tool runs failed ({listed}{more})",
            meta,
        )


def _arguments_key(arguments: Any) -> str:
    try:
        return json.dumps(arguments, sort_keys=True, default=str)
    except (TypeError, ValueError, RecursionError):
        return repr(arguments)


@dataclass(slots=True, eq=False)
class LoopScorer:
    """Fails when the same tool ran with the same arguments ``max_repeats`` times or more."""

    name: str
    max_repeats: int = 3

    def score(self, inp: EvalInput) -> Score:
        calls = _trace(inp, "loop").tool_calls
        counts = Counter((c.name, _arguments_key(c.arguments)) for c in calls)
        worst = max(counts.values(), default=0)
        meta = {"tool_calls": len(calls), "max_repeats_seen": worst}
        loops = [(key, n) for key, n in counts.most_common() if n >= self.max_repeats]
        if not loops:
            return Score(
                1.0,
                PASS,
                f"no tool ran {self.max_repeats} times with the same arguments "
                f"(at most {worst} of {len(calls)} runs)",
                meta,
            )
        (name, args), n = loops[0]
        shown = args if len(args) <= 200 else args[:200] + "..."
        return Score(0.0, FAIL, f"{name} ran {n} times with the same arguments {shown}", meta)


@dataclass(slots=True, eq=False)
class StepBudgetScorer:
    """Pass while the trace's model calls and tool runs are within their maxima."""

    name: str
    max_llm_calls: int | None = None
    max_tool_calls: int | None = None

    def __post_init__(self) -> None:
        if self.max_llm_calls is None and self.max_tool_calls is None:
            raise ValueError("step_budget needs max_llm_calls, max_tool_calls or both")

    def score(self, inp: EvalInput) -> Score:
        trace = _trace(inp, "step_budget")
        used = {"llm_calls": len(trace.llm_calls), "tool_calls": len(trace.tool_calls)}
        checks = [
            (what, used[what], limit)
            for what, limit in (
                ("llm_calls", self.max_llm_calls),
                ("tool_calls", self.max_tool_calls),
            )
            if limit is not None
        ]
        over = [
            f"{n} {what.replace('_', ' ')}, over {limit}" for what, n, limit in checks if n > limit
        ]
        if over:
            return Score(0.0, FAIL, "; ".join(over), used)
        within = ", ".join(f"{n} {what.replace('_', ' ')} <= {limit}" for what, n, limit in checks)
        return Score(1.0, PASS, f"within the step budget: {within}", used)


@dataclass(slots=True, eq=False)
class TraceLatencyScorer:
    """The trace's duration (first start to last end) against ``max_ms`` and ``target_ms``,
    scored as ``latency`` scores a span."""

    name: str
    max_ms: float
    target_ms: float | None = None

    def score(self, inp: EvalInput) -> Score:
        took = _trace(inp, "trace_latency").duration_ms
        return duration_score(took, self.max_ms, self.target_ms)


@dataclass(frozen=True, slots=True)
class Price:
    """What a model costs, per million tokens."""

    input_per_mtok: float
    output_per_mtok: float


@dataclass(slots=True, eq=False)
class TraceTokenBudgetScorer:
    """The trace's token totals (over every model call) against the bounds given; with a price
    table, its cost (in metadata, and against ``max_cost`` when set; a model missing from the
    table is an error)."""

    name: str
    max_input: int | None = None
    max_output: int | None = None
    max_total: int | None = None
    prices: dict[str, Price] | None = None
    max_cost: float | None = None

    def __post_init__(self) -> None:
        if all(b is None for b in (self.max_input, self.max_output, self.max_total, self.max_cost)):
            raise ValueError("trace_token_budget needs at least one maximum")
        if self.max_cost is not None and not self.prices:
            raise ValueError("trace_token_budget max_cost needs prices")

    def score(self, inp: EvalInput) -> Score:
        trace = _trace(inp, "trace_token_budget")
        tokens = None
        if any(b is not None for b in (self.max_input, self.max_output, self.max_total)):
            tokens = token_score(
                trace.input_tokens,
                trace.output_tokens,
                self.max_input,
                self.max_output,
                self.max_total,
                "no model call in the trace has",
            )
        if self.prices is None:
            assert tokens is not None  # __post_init__: some maximum is set
            return tokens
        cost = self._cost(trace, self.prices)
        meta: dict[str, Any] = dict(tokens.metadata) if tokens is not None else {}
        meta["cost"] = round(cost, 6)
        over_cost = self.max_cost is not None and cost > self.max_cost
        words = f"cost {cost:.4g}"
        if self.max_cost is not None:
            words += (
                f", over the maximum {self.max_cost:g}" if over_cost else f" <= {self.max_cost:g}"
            )
        if tokens is not None:
            words = f"{tokens.explanation}; {words}"
        failed = over_cost or (tokens is not None and tokens.label == FAIL)
        return Score(0.0 if failed else 1.0, FAIL if failed else PASS, words, meta)

    @staticmethod
    def _cost(trace: TraceView, prices: dict[str, Price]) -> float:
        cost = 0.0
        for call in trace.llm_calls:
            price = prices.get(call.model or "")
            if price is None:
                priced = ", ".join(sorted(prices))
                raise ScorerError(f"no price for the model {call.model!r} (priced: {priced})")
            cost += (call.input_tokens or 0) * price.input_per_mtok / 1e6
            cost += (call.output_tokens or 0) * price.output_per_mtok / 1e6
        return cost


# --- YAML types -------------------------------------------------------------------------------


@builtin_type("tool_errors")
def build_tool_errors(name: str, opts: Reader) -> ToolErrorsScorer:
    """``tool_errors``: ``max_error_rate`` (0 to 1, default 0)."""
    return ToolErrorsScorer(name, float(opts.number("max_error_rate", 0.0, lo=0, hi=1)))


@builtin_type("loop")
def build_loop(name: str, opts: Reader) -> LoopScorer:
    """``loop``: ``max_repeats`` (a whole number >= 2, default 3)."""
    return LoopScorer(name, int(opts.number("max_repeats", 3, lo=2, integer=True)))


_STEPS = ("max_llm_calls", "max_tool_calls")


@builtin_type("step_budget")
def build_step_budget(name: str, opts: Reader) -> StepBudgetScorer | None:
    """``step_budget``: ``max_llm_calls``, ``max_tool_calls`` (at least one)."""
    before = len(opts.issues.items)
    bounds = [opts.number(key, None, lo=0, integer=True) for key in _STEPS]
    if len(opts.issues.items) > before or not require_any(opts, _STEPS, bounds):
        return None
    return StepBudgetScorer(name, *bounds)


@builtin_type("trace_latency")
def build_trace_latency(name: str, opts: Reader) -> TraceLatencyScorer | None:
    """``trace_latency``: ``max_ms`` (required), ``target_ms`` (below it), as ``latency``."""
    span = build_latency(name, opts)
    return None if span is None else TraceLatencyScorer(name, span.max_ms, span.target_ms)


_TOKENS = ("max_input_tokens", "max_output_tokens", "max_total_tokens")


def _read_prices(opts: Reader) -> dict[str, Price] | None:
    """``prices:``: model -> ``{input_per_mtok, output_per_mtok}``; None when absent."""
    table = opts.sub("prices")
    if not table.ok:
        return None
    if not table.data:
        opts.error("prices", "must not be empty: give model -> {input_per_mtok, output_per_mtok}")
        return None
    prices: dict[str, Price] = {}
    for model, value in table.data.items():
        if not isinstance(value, Mapping):
            table.error(
                str(model),
                f"must be a mapping with input_per_mtok and output_per_mtok, got {describe(value)}",
            )
            continue
        entry = table.sub(str(model))
        per_in = entry.number("input_per_mtok", None, lo=0, required=True)
        per_out = entry.number("output_per_mtok", None, lo=0, required=True)
        entry.done()
        if per_in is not None and per_out is not None:
            prices[str(model)] = Price(float(per_in), float(per_out))
    return prices


@builtin_type("trace_token_budget")
def build_trace_token_budget(name: str, opts: Reader) -> TraceTokenBudgetScorer | None:
    """``trace_token_budget``: ``max_input_tokens``, ``max_output_tokens``,
    ``max_total_tokens``, ``max_cost`` (at least one); ``prices`` (needed by ``max_cost``)."""
    before = len(opts.issues.items)
    bounds = [opts.number(key, None, lo=0, integer=True) for key in _TOKENS]
    max_cost = opts.number("max_cost", None, lo=0)
    prices = _read_prices(opts)
    if len(opts.issues.items) > before:
        return None
    if not require_any(opts, (*_TOKENS, "max_cost"), (*bounds, max_cost)):
        return None
    if max_cost is not None and prices is None:
        opts.error(
            "max_cost",
            "needs 'prices': model -> {input_per_mtok, output_per_mtok} for every model called",
        )
        return None
    max_input, max_output, max_total = bounds
    return TraceTokenBudgetScorer(
        name,
        max_input,
        max_output,
        max_total,
        prices=prices,
        max_cost=None if max_cost is None else float(max_cost),
    )
