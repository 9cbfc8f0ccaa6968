"""Self-telemetry: every metric this package records, declared once.

The counts are kept as plain tallies by the engine (the application's thread only bumps an
atomic counter) and published through observable instruments of the OpenTelemetry metrics API,
so recording costs nothing when no ``MeterProvider`` is configured.

Counters (all ``{span}``, ``{eval}`` or ``{score}``):

- ``online_eval.spans.seen``: spans that ended and were looked at.
- ``online_eval.spans.selected`` {rule}: spans the rule's ``apply_to`` picked.
- ``online_eval.spans.sampled`` {rule}: selected spans kept by sampling.
- ``online_eval.spans.filtered_out`` {rule}: sampled spans the filter refused.
- ``online_eval.spans.dropped`` {reason}: spans not evaluated: ``queue_full``, ``shutdown``,
  ``error``.
- ``online_eval.evals`` {rule}: evaluations finished and handed to the exporter.
- ``online_eval.scores`` {rule, scorer, outcome}: scorer runs: ``ok``, ``error``, ``timeout``,
  ``skipped``, ``sampled_out``.
- ``online_eval.judge.tokens`` {rule, scorer, gen_ai.request.model, gen_ai.token.type}: tokens
  LLM judges used (``input`` / ``output``), from their scores' ``gen_ai.usage.*`` metadata.

Gauge ``online_eval.queue.size``: spans waiting for a worker. Histogram
``online_eval.scorer.duration`` (s) {rule, scorer}: time one scorer call took.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation, get_meter_provider

__all__ = ["METRICS", "MetricSpec", "Tally", "register_metrics"]


class Tally:
    """A counter that any thread may bump without a lock.

    ``itertools.count.__next__`` is a single C call, atomic under the GIL, where ``n += 1`` on
    an attribute is not.
    """

    __slots__ = ("_count", "add")

    def __init__(self) -> None:
        self._count = itertools.count()
        self.add: Callable[[], object] = self._count.__next__

    @property
    def value(self) -> int:
        # repr is "count(N)": the only way to read a count without advancing it.
        return int(repr(self._count)[6:-1])


@dataclass(frozen=True, slots=True)
class MetricSpec:
    name: str
    kind: str
    unit: str
    description: str


METRICS: dict[str, MetricSpec] = {
    m.name: m
    for m in (
        MetricSpec(
            "online_eval.spans.seen", "counter", "{span}", "Spans that ended and were looked at"
        ),
        MetricSpec(
            "online_eval.spans.selected", "counter", "{span}", "Spans a rule's apply_to picked"
        ),
        MetricSpec(
            "online_eval.spans.sampled",
            "counter",
            "{span}",
            "Selected spans kept by a rule's sampling",
        ),
        MetricSpec(
            "online_eval.spans.filtered_out",
            "counter",
            "{span}",
            "Sampled spans a rule's filter refused",
        ),
        MetricSpec(
            "online_eval.spans.dropped", "counter", "{span}", "Spans not evaluated, by reason"
        ),
        MetricSpec(
            "online_eval.evals",
            "counter",
            "{eval}",
            "Evaluations finished and handed to the exporter",
        ),
        MetricSpec(
            "online_eval.scores",
            "counter",
            "{score}",
            "Scorer runs by outcome: ok, error, timeout, sampled_out",
        ),
        MetricSpec("online_eval.queue.size", "gauge", "{span}", "Spans waiting for a worker"),
        MetricSpec(
            "online_eval.judge.tokens",
            "counter",
            "{token}",
            "Tokens used by LLM judges, by model and token type",
        ),
        MetricSpec("online_eval.scorer.duration", "histogram", "s", "Time one scorer call took"),
    )
}

Reading = Callable[[], Iterable[tuple[float, dict[str, str]]]]


def register_metrics(
    readings: dict[str, Reading], meter_provider: MeterProvider | None = None
) -> Callable[[float, dict[str, str]], None]:
    """Create the observable instruments and the scorer-duration histogram.

    Args:
        readings: metric name -> a function returning (value, attributes) pairs.
        meter_provider: where to publish; the global provider when None.

    Returns:
        A function recording one scorer duration in seconds.
    """
    meter = (meter_provider or get_meter_provider()).get_meter("otel_online_eval")
    for name, read in readings.items():
        spec = METRICS[name]

        def callback(_: CallbackOptions, read: Reading = read) -> Iterable[Observation]:
            return [Observation(value, attrs) for value, attrs in read()]

        if spec.kind == "counter":
            meter.create_observable_counter(name, [callback], spec.unit, spec.description)
        else:
            meter.create_observable_gauge(name, [callback], spec.unit, spec.description)
    spec = METRICS["online_eval.scorer.duration"]
    histogram = meter.create_histogram(spec.name, spec.unit, spec.description)
    return histogram.record
