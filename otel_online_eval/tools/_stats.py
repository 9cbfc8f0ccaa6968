"""Score statistics per (rule, scorer): what ``score`` prints at the end and ``report`` shows.

Definitions (the same in every command):

- **count**: scores recorded (a value, a label or both); errors and skips are not counted.
- **mean**, **p10 / p50 / p90**: over the scores that have a value; percentiles interpolate
  linearly between the two nearest values (numpy's default).
- **pass rate**: the share of valued scores with value >= 0.5 (the threshold the built-in
  scorers use between ``pass`` and ``fail``).
- **error rate**: errors / (count + errors); skips (a judge out of budget, a circuit open) are
  neither.
- **tokens**: the judge's ``online_eval.judge.usage.input_tokens`` / ``output_tokens``
  (``gen_ai.usage.*`` on eval spans of earlier releases), summed.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["PASS_THRESHOLD", "ScorerStats", "StatsTable", "percentile"]

PASS_THRESHOLD = 0.5


def percentile(sorted_values: list[float], p: float) -> float | None:
    """The ``p``-th percentile (0-100) of sorted values, interpolated; None when empty."""
    if not sorted_values:
        return None
    k = (len(sorted_values) - 1) * p / 100
    lo, hi = math.floor(k), math.ceil(k)
    if lo == hi:
        return sorted_values[lo]
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


@dataclass
class ScorerStats:
    """What one scorer of one rule produced."""

    rule: str
    scorer: str
    count: int = 0
    values: list[float] = field(default_factory=list)
    times: list[int] = field(default_factory=list)  # ns, one per value
    labels: Counter[str] = field(default_factory=Counter)
    errors: int = 0
    error_types: Counter[str] = field(default_factory=Counter)
    skipped: int = 0
    sampled_out: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    models: set[str] = field(default_factory=set)
    _sorted: list[float] | None = field(default=None, repr=False)

    def add_score(
        self,
        value: float | None,
        label: str | None,
        time_ns: int = 0,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        self.count += 1
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            self.values.append(float(value))
            self.times.append(time_ns)
            self._sorted = None
        if label:
            self.labels[label] += 1
        if metadata:
            self.add_usage(metadata)

    def add_usage(self, metadata: Mapping[str, Any]) -> None:
        # The judge's names, then the GenAI ones that eval spans of earlier releases carried.
        for kind in ("input", "output"):
            n = metadata.get(f"online_eval.judge.usage.{kind}_tokens")
            if n is None:
                n = metadata.get(f"gen_ai.usage.{kind}_tokens")
            if isinstance(n, int) and not isinstance(n, bool) and n > 0:
                if kind == "input":
                    self.input_tokens += n
                else:
                    self.output_tokens += n
        for key in (
            "online_eval.judge.response.model",
            "online_eval.judge.request.model",
            "gen_ai.response.model",
            "gen_ai.request.model",
        ):
            model = metadata.get(key)
            if isinstance(model, str) and model:
                self.models.add(model)
                break

    def add_error(self, error_type: str) -> None:
        self.errors += 1
        self.error_types[error_type or "error"] += 1

    @property
    def sorted_values(self) -> list[float]:
        if self._sorted is None:
            self._sorted = sorted(self.values)
        return self._sorted

    @property
    def mean(self) -> float | None:
        return sum(self.values) / len(self.values) if self.values else None

    @property
    def pass_rate(self) -> float | None:
        if not self.values:
            return None
        return sum(1 for v in self.values if v >= PASS_THRESHOLD) / len(self.values)

    @property
    def error_rate(self) -> float | None:
        total = self.count + self.errors
        return self.errors / total if total else None

    def pct(self, p: float) -> float | None:
        return percentile(self.sorted_values, p)

    def to_json(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "scorer": self.scorer,
            "count": self.count,
            "valued": len(self.values),
            "mean": _round(self.mean),
            "p10": _round(self.pct(10)),
            "p50": _round(self.pct(50)),
            "p90": _round(self.pct(90)),
            "pass_rate": _round(self.pass_rate),
            "labels": dict(self.labels.most_common()),
            "errors": self.errors,
            "error_types": dict(self.error_types.most_common()),
            "error_rate": _round(self.error_rate),
            "skipped": self.skipped,
            "sampled_out": self.sampled_out,
            "judge_tokens": {"input": self.input_tokens, "output": self.output_tokens},
            "judge_models": sorted(self.models),
        }


class StatsTable:
    """ScorerStats by (rule, scorer), in first-seen order."""

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, str], ScorerStats] = {}

    def get(self, rule: str, scorer: str) -> ScorerStats:
        key = (rule, scorer)
        stats = self._by_key.get(key)
        if stats is None:
            stats = self._by_key[key] = ScorerStats(rule, scorer)
        return stats

    def __iter__(self) -> Iterator[ScorerStats]:
        return iter(self._by_key.values())

    def __len__(self) -> int:
        return len(self._by_key)

    def sorted(self) -> list[ScorerStats]:
        return sorted(self._by_key.values(), key=lambda s: (s.rule, s.scorer))


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)
