"""Self-telemetry: every metric this package records, declared once.

The counts are kept as plain tallies by the engine (the application's thread only bumps an
atomic counter) and published through observable instruments of the OpenTelemetry metrics API,
so recording costs nothing when no ``MeterProvider`` is configured.

Counters (``{span}``, ``{eval}``, ``{score}``, ``{token}``), per rule where a rule applies; the
identities between them are in ``docs/metrics.md``:

- ``online_eval.spans.seen``: spans that ended and were looked at.
- ``online_eval.spans.selected`` / ``.not_selected`` {rule}: seen spans the rule's ``apply_to``
  picked / did not pick (eval spans received by the sidecar are never selected).
- ``online_eval.spans.sampled`` / ``.sampled_out`` {rule}: selected spans its sampling kept /
  refused (decided for dropped spans too).
- ``online_eval.spans.filtered_out`` {rule}: sampled spans its filter refused.
- ``online_eval.spans.dropped`` {rule, reason}: sampled spans whose evaluation was lost:
  ``queue_full``, ``shutdown``, ``error``.
- ``online_eval.spans.no_content`` {rule}: sampled spans that look like a GenAI operation but
  carry no prompt or answer (content capture off); also in ``filtered_out`` or ``evals``.
- ``online_eval.evals`` {rule}: evaluations finished and handed to the exporter.
- ``online_eval.logs.records`` {outcome}: log records of spans given to the join:
  ``joined`` (taken by their span), ``expired`` (no span came), ``dropped`` (pushed out by
  the cap), ``not_sampled`` (of traces no rule may sample: not held);
  ``online_eval.logs.joined_spans``: spans that took any; ``online_eval.logs.span_waits``
  {outcome}: spans with no content that waited for their records: ``records``, ``timeout``,
  ``flush``, ``full``.
- ``online_eval.scores`` {rule, scorer, outcome}: scorer runs: ``ok``, ``error``, ``timeout``,
  ``skipped``, ``sampled_out``.
- ``online_eval.scores.skipped`` {rule, scorer, reason}: the skipped ones by reason: ``busy``
  (no free slot in time), ``quarantined``, or the scorer's own (``circuit_open``, ...).
- ``online_eval.scorer.quarantined`` {scorer}: times a scorer was quarantined.
- ``online_eval.judge.tokens`` {rule, scorer, gen_ai.request.model, gen_ai.token.type}: tokens
  LLM judges used (``input`` / ``output``), from their scores' ``gen_ai.usage.*`` metadata.
- ``online_eval.eval_spans.scheduled``: eval and score spans handed to the exporter side;
  ``.exported`` of those exported; ``.dropped`` {reason} of those lost: ``queue_full``,
  ``failed``, ``shutdown``.

Trace rules (``scope: trace``) also count assembly: ``online_eval.assembly.spans`` {rule,
outcome} (``buffered``, ``duplicate``, ``over_limit``), ``.late`` {rule} (spans of an evaluated
trace not buffered), ``.traces`` {rule, reason} (handed to evaluation: ``complete``,
``end_on``, ``idle``, ``max_wait``, ``evicted``, ``shutdown``), ``.evicted`` {rule, reason}
(``max_traces``, ``max_bytes``), ``.dropped`` {rule}, ``.skipped_incomplete`` {rule},
``.lost`` {rule, reason}; gauges ``.buffered.traces`` and ``.buffered.bytes`` {rule}. Session
rules add ``.turns`` {rule, outcome} and ``.sessions`` {rule, reason}.

Gauges ``online_eval.queue.size`` (spans waiting for a worker) and ``online_eval.scorer.stuck``
{scorer} (sync calls that timed out and still hold one of the scorer's threads). Histogram
``online_eval.scorer.duration`` (s) {rule, scorer}: time one scorer call took once it started.
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
            "online_eval.spans.not_selected",
            "counter",
            "{span}",
            "Seen spans a rule's apply_to did not pick",
        ),
        MetricSpec(
            "online_eval.spans.sampled",
            "counter",
            "{span}",
            "Selected spans kept by a rule's sampling",
        ),
        MetricSpec(
            "online_eval.spans.sampled_out",
            "counter",
            "{span}",
            "Selected spans a rule's sampling refused",
        ),
        MetricSpec(
            "online_eval.spans.filtered_out",
            "counter",
            "{span}",
            "Sampled spans a rule's filter refused",
        ),
        MetricSpec(
            "online_eval.spans.dropped",
            "counter",
            "{span}",
            "Sampled spans whose evaluation was lost, by rule and reason",
        ),
        MetricSpec(
            "online_eval.spans.no_content",
            "counter",
            "{span}",
            "Sampled spans that look like a GenAI operation but carry no prompt or answer",
        ),
        MetricSpec(
            "online_eval.logs.records",
            "counter",
            "{record}",
            "Log records of spans given to the join, by outcome: joined, expired, dropped, "
            "not_sampled",
        ),
        MetricSpec(
            "online_eval.logs.joined_spans",
            "counter",
            "{span}",
            "Spans evaluated with log records joined to them",
        ),
        MetricSpec(
            "online_eval.logs.span_waits",
            "counter",
            "{span}",
            "Spans with no content that waited for their log records, by how the wait ended",
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
            "Scorer runs by outcome: ok, error, timeout, skipped, sampled_out",
        ),
        MetricSpec(
            "online_eval.scores.skipped",
            "counter",
            "{score}",
            "Skipped scorer runs by reason: busy, quarantined, or the scorer's own",
        ),
        MetricSpec(
            "online_eval.scorer.quarantined",
            "counter",
            "{quarantine}",
            "Times a scorer was quarantined after consecutive timeouts",
        ),
        MetricSpec(
            "online_eval.scorer.stuck",
            "gauge",
            "{call}",
            "Sync scorer calls that timed out and still hold one of the scorer's threads",
        ),
        MetricSpec("online_eval.queue.size", "gauge", "{span}", "Spans waiting for a worker"),
        MetricSpec(
            "online_eval.judge.tokens",
            "counter",
            "{token}",
            "Tokens used by LLM judges, by model and token type",
        ),
        MetricSpec(
            "online_eval.eval_spans.scheduled",
            "counter",
            "{span}",
            "Eval and score spans handed to the exporter side",
        ),
        MetricSpec(
            "online_eval.eval_spans.exported", "counter", "{span}", "Eval and score spans exported"
        ),
        MetricSpec(
            "online_eval.eval_spans.dropped",
            "counter",
            "{span}",
            "Eval and score spans lost before or in export, by reason",
        ),
        MetricSpec(
            "online_eval.assembly.spans",
            "counter",
            "{span}",
            "Sampled spans handed to trace assembly, by outcome: buffered, duplicate, over_limit",
        ),
        MetricSpec(
            "online_eval.assembly.late",
            "counter",
            "{span}",
            "Spans of a trace already evaluated that were not buffered",
        ),
        MetricSpec(
            "online_eval.assembly.traces",
            "counter",
            "{trace}",
            "Traces handed to evaluation, by completion reason",
        ),
        MetricSpec(
            "online_eval.assembly.evicted",
            "counter",
            "{trace}",
            "Traces evicted to make room, by the bound reached",
        ),
        MetricSpec(
            "online_eval.assembly.dropped",
            "counter",
            "{trace}",
            "Evicted traces dropped without evaluation (on_full: drop)",
        ),
        MetricSpec(
            "online_eval.assembly.skipped_incomplete",
            "counter",
            "{trace}",
            "Incomplete traces skipped (on_incomplete: skip)",
        ),
        MetricSpec(
            "online_eval.assembly.lost",
            "counter",
            "{trace}",
            "Traces whose evaluation was lost, by reason: error, shutdown",
        ),
        MetricSpec(
            "online_eval.assembly.buffered.traces", "gauge", "{trace}", "Traces being assembled"
        ),
        MetricSpec(
            "online_eval.assembly.buffered.bytes",
            "gauge",
            "By",
            "Estimated memory held by the spans of traces being assembled",
        ),
        MetricSpec(
            "online_eval.assembly.turns",
            "counter",
            "{trace}",
            "Session rules' assembled traces: added as a turn, no_key, sampled_out, filtered_out",
        ),
        MetricSpec(
            "online_eval.assembly.sessions",
            "counter",
            "{session}",
            "Conversations handed to evaluation, by reason",
        ),
        MetricSpec(
            "online_eval.scorer.duration",
            "histogram",
            "s",
            "Time one scorer call took once it started",
        ),
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
