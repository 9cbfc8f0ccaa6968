"""Eval spans: the results of one evaluation as SDK ``ReadableSpan``s.

For a rule that scored a span::

    <scored span>
     └── eval {rule}            child of the scored span and linked to it
          ├── score {scorer}    one per scorer that ran; status ERROR + exception event on failure
          └── ...

Score attributes follow the GenAI semantic conventions for evaluation results
(``gen_ai.evaluation.name``, ``gen_ai.evaluation.score.value``, ``gen_ai.evaluation.score.label``,
``gen_ai.evaluation.explanation``), and the eval span carries one ``gen_ai.evaluation.result``
event per score for backends that read events. The spans are handed straight to the sink span
processor (wrapping the configured exporter): they never pass through the application's
processors, so they are never evaluated themselves.
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.util.types import AttributeValue

from otel_online_eval._batch import ExportBatcher
from otel_online_eval._spanplan import SpanPlan
from otel_online_eval.scorers.base import Score

if TYPE_CHECKING:
    from otel_online_eval.spanview import SpanView

__all__ = [
    "EVAL_RESULT_EVENT",
    "RULE_ATTR",
    "SCORER_ATTR",
    "Emitter",
    "EvalResult",
    "Evaluation",
    "ExportCounts",
    "ScoreSink",
    "ScorerRun",
    "Target",
]

RULE_ATTR = "online_eval.rule"
"""Marks eval spans (the rule's name); spans carrying it are never evaluated."""
SCORER_ATTR = "online_eval.scorer"
EVAL_RESULT_EVENT = "gen_ai.evaluation.result"
SCOPE = InstrumentationScope("otel_online_eval", "0.1.0")
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_LINK_ATTRS: Mapping[str, AttributeValue] = MappingProxyType({"online_eval.link": "scored_span"})


@dataclass(frozen=True, slots=True)
class Target:
    """What an evaluation is attached to.

    Attributes:
        trace_id: the trace the eval spans join.
        parent_span_id: the eval span's parent (the scored span), None for a new root.
        link: the span context the eval span links to, if any.
        resource: the resource the eval spans are reported under.
        scored_name: the scored span's name, if there is one.
        more_links: other spans the eval span links to, each with what it is (``supersedes``:
            the eval span of the revision this one replaces).
        response_id: the scored span's ``gen_ai.response.id``, when it has one (evaluation
            results carry it).
    """

    trace_id: int
    parent_span_id: int | None
    link: SpanContext | None
    resource: Resource
    scored_name: str | None = None
    more_links: tuple[tuple[SpanContext, str], ...] = ()
    response_id: str | None = None


@dataclass(frozen=True, slots=True)
class ScorerRun:
    """One scorer call: its score, or the error (``timed_out`` when it ran out of time);
    the scorer's ``revision`` and ``annotator`` kind (``LLM`` or ``CODE``) from its spec."""

    name: str
    score: Score | None
    error: BaseException | None
    start_ns: int
    end_ns: int
    sampling_rate: float = 1.0
    timed_out: bool = False
    skipped: str | None = None
    revision: str = ""
    annotator: str = "CODE"


@dataclass(frozen=True, slots=True)
class EvalResult:
    """What an evaluation produced, also returned by ``evaluate()``.

    Attributes:
        rule: the rule (or direct evaluation) name.
        scores: scorer name -> Score, for scorers that succeeded.
        errors: scorer name -> error message, for scorers that failed or timed out.
        sampled_out: scorers that did not run because of their sampling rate.
        skipped: scorer name -> reason, for scorers that declined to run (budget, circuit).
        trace_id: the eval span's trace.
        span_id: the eval span's id.
    """

    rule: str
    scores: Mapping[str, Score]
    errors: Mapping[str, str]
    sampled_out: tuple[str, ...]
    trace_id: int
    span_id: int
    skipped: Mapping[str, str] = field(default_factory=dict)


def _attr_value(value: Any) -> AttributeValue:
    if isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
        return tuple(value)
    return json.dumps(value, default=str, ensure_ascii=False)


def _score_attrs(name: str, score: Score | None) -> dict[str, AttributeValue]:
    attrs: dict[str, AttributeValue] = {"gen_ai.evaluation.name": name}
    if score is not None:
        if score.value is not None:
            attrs["gen_ai.evaluation.score.value"] = score.value
        if score.label is not None:
            attrs["gen_ai.evaluation.score.label"] = score.label
        if score.explanation:
            attrs["gen_ai.evaluation.explanation"] = score.explanation
    return attrs


def _error_type(run: ScorerRun) -> str:
    return "timeout" if run.timed_out else type(run.error).__name__


@dataclass(frozen=True, slots=True)
class ExportCounts:
    """What became of the eval and score spans an emitter made.

    Attributes:
        scheduled: spans handed to the export side.
        exported: of those, exported (0 when the export side does not say: a span processor
            given in code).
        dropped: of those, lost, by reason: ``queue_full``, ``failed`` (the exporter refused
            them, or gave up after its retries), ``shutdown``.
    """

    scheduled: int = 0
    exported: int = 0
    dropped: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Evaluation:
    """One evaluation's results as a score sink receives them (a sink for backends that have
    scores of their own, such as Phoenix's span annotations).

    Attributes:
        rule: the rule's name.
        scored: the scored span (a trace or session rule's anchor span); None for a direct
            ``evaluate()`` call that scored no span.
        runs: the scorers that ran (skipped ones included: ``run.skipped`` says why).
        eval_trace_id: the eval span's trace (the scored span's, unless ``output.parent``
            is ``none``).
        eval_span_id: the eval span's id (an identifier even when no eval span is exported).
    """

    rule: str
    scored: SpanContext | None
    runs: Sequence[ScorerRun]
    eval_trace_id: int
    eval_span_id: int


class ScoreSink(Protocol):
    """Where scores go besides (or instead of) eval spans; one per ``export:`` score target.

    ``write`` runs on the engine's thread for every evaluation: it must not block nor raise
    (queue, and send from a thread of its own). ``export_counts`` says what became of the
    scores written: ``scheduled`` (one per scorer run with a score or an error), ``exported``,
    ``dropped`` by reason (``queue_full``, ``failed``, ``shutdown``).
    """

    name: str

    def write(self, evaluation: Evaluation) -> None: ...

    def force_flush(self, timeout_millis: int) -> bool: ...

    def shutdown(self, timeout_millis: int = 30000) -> None: ...

    def export_counts(self) -> ExportCounts: ...


class EvalSink(Protocol):
    """Where the engine's results go: builds eval spans in some form and exports them."""

    def resource_of(self, view: SpanView) -> Any:
        """The scored span's resource, in the form ``emit`` puts on eval spans."""
        ...

    def emit(
        self,
        target: Target,
        rule: str,
        runs: Sequence[ScorerRun],
        sampled_out: Sequence[str],
        start_ns: int,
        end_ns: int,
        rule_attrs: Mapping[str, AttributeValue] | None = None,
    ) -> EvalResult:
        """Export one evaluation."""
        ...

    def force_flush(self, timeout_millis: int) -> bool:
        """Export everything emitted so far; False on timeout or when some of it was lost
        (dropped, or its export failed)."""
        ...

    def shutdown(self, timeout_millis: int = 30000) -> None:
        """Flush and release the exporter, within ``timeout_millis`` where it can."""
        ...


class PlanningEmitter:
    """Decides what the eval spans of one evaluation say; subclasses encode and export them."""

    def __init__(self, score_sinks: Sequence[ScoreSink] = ()) -> None:
        self._ids = RandomIdGenerator()
        self.scheduled = 0  # spans handed to _export (by the engine's thread only)
        self.score_sinks = tuple(score_sinks)

    def _flush_sinks(self, timeout_millis: int) -> bool:
        deadline = time.monotonic() + timeout_millis / 1000
        ok = True
        for sink in self.score_sinks:
            left = max(0, int((deadline - time.monotonic()) * 1000))
            ok = sink.force_flush(left) and ok
        return ok

    def _shutdown_sinks(self, timeout_millis: int) -> None:
        deadline = time.monotonic() + timeout_millis / 1000
        for sink in self.score_sinks:
            sink.shutdown(max(0, int((deadline - time.monotonic()) * 1000)))

    def _export(self, plans: Sequence[SpanPlan], resource: Any) -> None:
        raise NotImplementedError

    def emit(
        self,
        target: Target,
        rule: str,
        runs: Sequence[ScorerRun],
        sampled_out: Sequence[str],
        start_ns: int,
        end_ns: int,
        rule_attrs: Mapping[str, AttributeValue] | None = None,
    ) -> EvalResult:
        """Export one evaluation: the eval span and a score span per run.

        Args:
            target: where the eval span goes.
            rule: the rule's name.
            runs: the scorers that ran.
            sampled_out: names of scorers that were sampled out.
            start_ns: when the evaluation started.
            end_ns: when it ended.
            rule_attrs: extra attributes for the eval span (description, sampling rate).
        """
        eval_id = self._ids.generate_span_id()
        failed = [r for r in runs if r.score is None and r.skipped is None]
        skipped = [r for r in runs if r.skipped is not None]
        plans = [self._score_plan(run, rule, target.trace_id, eval_id) for run in runs]

        attrs: dict[str, AttributeValue] = {RULE_ATTR: rule}
        if target.scored_name is not None:
            attrs["online_eval.span.name"] = target.scored_name
        if rule_attrs:
            attrs.update(rule_attrs)
        attrs["online_eval.scorers.total"] = len(runs) + len(sampled_out)
        attrs["online_eval.scorers.ran"] = len(runs)
        attrs["online_eval.scorers.sampled_out"] = len(sampled_out)
        attrs["online_eval.scorers.failed"] = len(failed)
        attrs["online_eval.scorers.skipped"] = len(skipped)
        events = []
        for run in runs:
            if run.skipped is not None:
                continue
            event_attrs = _score_attrs(run.name, run.score)
            if run.score is None:
                event_attrs["error.type"] = _error_type(run)
            events.append((EVAL_RESULT_EVENT, run.end_ns, event_attrs))
        status: tuple[str, str | None] = ("UNSET", None)
        if failed:
            status = (
                "ERROR",
                f"{len(failed)} of {len(runs)} scorers failed: "
                + ", ".join(r.name for r in failed),
            )
        plans.append(
            SpanPlan(
                target.trace_id,
                eval_id,
                target.parent_span_id,
                f"eval {rule}",
                start_ns,
                end_ns,
                attrs,
                tuple(events),
                target.link,
                status,
                target.more_links,
            )
        )
        self.scheduled += len(plans)
        self._export(plans, target.resource)
        if self.score_sinks:
            evaluation = Evaluation(rule, target.link, tuple(runs), target.trace_id, eval_id)
            for sink in self.score_sinks:
                sink.write(evaluation)
        return EvalResult(
            rule=rule,
            scores={r.name: r.score for r in runs if r.score is not None},
            errors={r.name: _message(r) for r in failed},
            sampled_out=tuple(sampled_out),
            trace_id=target.trace_id,
            span_id=eval_id,
            skipped={r.name: r.skipped for r in skipped if r.skipped is not None},
        )

    def _score_plan(self, run: ScorerRun, rule: str, trace_id: int, eval_id: int) -> SpanPlan:
        attrs: dict[str, AttributeValue] = {SCORER_ATTR: run.name, RULE_ATTR: rule}
        attrs.update(_score_attrs(run.name, run.score))
        if run.sampling_rate != 1.0:
            attrs["online_eval.sampling.rate"] = run.sampling_rate
        events: tuple[tuple[str, int, Mapping[str, AttributeValue]], ...] = ()
        status: tuple[str, str | None] = ("UNSET", None)
        if run.skipped is not None:
            attrs["online_eval.skipped"] = run.skipped
        elif run.score is not None:
            for key, value in run.score.metadata.items():
                # The judge's usage and model are ours already (online_eval.judge.*); the rest
                # is namespaced, gen_ai.* included: no backend may read it as the app's.
                name = key if key.startswith("online_eval.") else f"online_eval.metadata.{key}"
                attrs[name] = _attr_value(value)
        else:
            error = run.error
            attrs["error.type"] = _error_type(run)
            status = ("ERROR", _message(run))
            stack = "".join(traceback.format_exception(error)) if error is not None else ""
            exception = {
                "exception.type": type(error).__name__,
                "exception.message": str(error),
                "exception.stacktrace": stack,
            }
            events = (("exception", run.end_ns, exception),)
        return SpanPlan(
            trace_id,
            self._ids.generate_span_id(),
            eval_id,
            f"score {run.name}",
            run.start_ns,
            run.end_ns,
            attrs,
            events,
            None,
            status,
        )


class Emitter(PlanningEmitter):
    """Builds eval spans as SDK ``ReadableSpan``s and hands them to ``sink``: any exporter.

    Args:
        score_sinks: where scores go besides the eval spans (Phoenix annotations).
        sink: the span processor in front of the exporter: an
            :class:`~otel_online_eval._batch.ExportBatcher` (what the processor builds; it
            counts exported and dropped spans and its flush says whether all got out), or any
            other ``SpanProcessor`` (then only the spans handed to it are counted).
    """

    def __init__(self, sink: SpanProcessor, score_sinks: Sequence[ScoreSink] = ()) -> None:
        super().__init__(score_sinks)
        self.sink = sink

    def resource_of(self, view: SpanView) -> Resource:
        return view.sdk_resource()

    def export_counts(self) -> ExportCounts:
        sink = self.sink
        if isinstance(sink, ExportBatcher):
            return ExportCounts(self.scheduled, sink.exported, dict(sink.dropped))
        return ExportCounts(self.scheduled)

    def force_flush(self, timeout_millis: int) -> bool:
        deadline = time.monotonic() + timeout_millis / 1000
        spans = bool(self.sink.force_flush(timeout_millis))
        return self._flush_sinks(max(0, int((deadline - time.monotonic()) * 1000))) and spans

    def shutdown(self, timeout_millis: int = 30000) -> None:
        deadline = time.monotonic() + timeout_millis / 1000
        if isinstance(self.sink, ExportBatcher):
            self.sink.shutdown(timeout_millis)
        else:
            self.sink.shutdown()  # the SDK's span processors take no timeout here
        self._shutdown_sinks(max(0, int((deadline - time.monotonic()) * 1000)))

    def _export(self, plans: Sequence[SpanPlan], resource: Any) -> None:
        for plan in plans:
            parent = None
            if plan.parent_span_id is not None:
                parent = SpanContext(plan.trace_id, plan.parent_span_id, False, _SAMPLED)
            code, description = plan.status
            self.sink.on_end(
                ReadableSpan(
                    name=plan.name,
                    context=SpanContext(plan.trace_id, plan.span_id, False, _SAMPLED),
                    parent=parent,
                    resource=resource,
                    attributes=MappingProxyType(dict(plan.attributes)),
                    events=[Event(n, attrs, t) for n, t, attrs in plan.events],
                    links=_links(plan),
                    kind=SpanKind.INTERNAL,
                    status=Status(StatusCode[code], description),
                    start_time=plan.start_ns,
                    end_time=plan.end_ns,
                    instrumentation_scope=SCOPE,
                )
            )


def _links(plan: SpanPlan) -> list[Link]:
    links = [Link(plan.link, _LINK_ATTRS)] if plan.link is not None else []
    links.extend(Link(ctx, {"online_eval.link": what}) for ctx, what in plan.more_links)
    return links


def _message(run: ScorerRun) -> str:
    if run.timed_out:
        return str(run.error) or "timed out"
    return f"{type(run.error).__name__}: {run.error}"
