"""The in-process front door: a ``SpanProcessor`` that scores spans as they end.

::

    provider.add_span_processor(
        OnlineEvalSpanProcessor.from_yaml("config/rules.yaml", exporter=OTLPSpanExporter()))

``on_end`` runs on the application's thread and does almost nothing: a cached route lookup by
span name, an atomic counter, one integer hash of the trace id, and, for the few spans a rule may
sample, an append to a bounded queue. It does no I/O, takes no lock and never raises.
Everything else happens on the engine's background loop.
"""

from __future__ import annotations

import logging
import os
import time
import weakref
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

from otel_online_eval._batch import build_batcher
from otel_online_eval.config import EngineConfig, OnlineEvalConfig, load_config, parse_config
from otel_online_eval.emit import Emitter, EvalResult, Target
from otel_online_eval.engine import Engine, EngineStats, EvalFuture
from otel_online_eval.logfeed import LogRecordFeed
from otel_online_eval.rules import (
    LOCAL_PARENT,
    NO_PARENT,
    REMOTE_PARENT,
    Rule,
    ScorerLike,
    ScorerSpec,
    ScorerUse,
    _as_use,
)
from otel_online_eval.sampling import shared_hash
from otel_online_eval.scorers.base import EvalInput
from otel_online_eval.sinks import build_score_sinks
from otel_online_eval.spanview import SdkSpanView

__all__ = ["OnlineEvalSpanProcessor", "evaluate"]

logger = logging.getLogger(__name__)

_default: weakref.ref[OnlineEvalSpanProcessor] | None = None


def _has_fast_fields() -> bool:
    probe = ReadableSpan("probe", parent=None)
    return all(hasattr(probe, f) for f in ("_parent", "_name", "_context"))


_FAST_FIELDS = _has_fast_fields()


class OnlineEvalSpanProcessor(SpanProcessor):
    """Scores ended spans against rules in the background and exports eval spans.

    Args:
        config: a loaded config or a mapping in the YAML's shape; None for rules given in code.
        exporter: where eval spans go; when None, the config's ``export:`` section, and
            without one OTLP/gRPC configured by the standard ``OTEL_EXPORTER_OTLP_*``
            variables.
        rules: rules built in code (``Rule.create``), added after the config's.
        span_processor: the processor in front of the exporter (when None, an
            :class:`~otel_online_eval._batch.ExportBatcher` over ``exporter``, batching as the
            SDK's BatchSpanProcessor does and counting what it exports and drops); give a
            SimpleSpanProcessor for synchronous export (exports are then not counted).
        meter_provider: where self-metrics go (the global provider when None).
        resource: the resource of eval spans from ``evaluate()`` calls that score no span.
        engine: queue and concurrency settings overriding the config's ``engine:``.
    """

    def __init__(
        self,
        config: OnlineEvalConfig | Mapping[str, Any] | None = None,
        *,
        exporter: SpanExporter | None = None,
        rules: Sequence[Rule] = (),
        span_processor: SpanProcessor | None = None,
        meter_provider: MeterProvider | None = None,
        resource: Resource | None = None,
        engine: EngineConfig | None = None,
    ) -> None:
        global _default
        if config is None:
            config = OnlineEvalConfig()
        elif not isinstance(config, OnlineEvalConfig):
            config = parse_config(config)
        self.config = config
        all_rules = (*config.rules, *rules)
        names = [r.name for r in all_rules]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"rule names must be unique; repeated: {', '.join(duplicates)}")
        if span_processor is None:
            span_processor = build_batcher(config.export, exporter)
        self._resource = resource or Resource.create()
        self._ids = RandomIdGenerator()
        extraction = config.extract
        self._engine = Engine(
            all_rules,
            Emitter(span_processor, build_score_sinks(config.export)),
            SdkSpanView if extraction.is_default else (lambda s: SdkSpanView(s, extraction)),
            engine or config.engine,
            meter_provider,
            trace_id_of=_trace_id,
            size_of=held_size,
            local_roots=True,
            join_s=extraction.join_s,
        )
        self.log_processor = LogRecordFeed(self._engine)
        """Add it to the app's ``LoggerProvider``: log records of spans (GenAI events) are
        joined to their spans (``logger_provider.add_log_record_processor(...)``)."""
        router = self._engine.router
        self._cache = router.cache
        self._route = router.route
        self._submit = self._engine.submit
        self._seen_errors = 0
        self._last_error_log = 0.0
        _default = weakref.ref(self)

    @classmethod
    def from_yaml(
        cls,
        path: str | os.PathLike[str],
        *,
        exporter: SpanExporter | None = None,
        env: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> OnlineEvalSpanProcessor:
        """Build the processor from a YAML file.

        Raises:
            ConfigError: every problem of the file, with line and column.
        """
        return cls(load_config(path, env), exporter=exporter, **kwargs)

    @property
    def rules(self) -> tuple[Rule, ...]:
        return self._engine.router.rules

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        """Route and maybe queue the span; never blocks, never raises."""
        try:
            # ReadableSpan's fields, read without its property calls (checked at import).
            if _FAST_FIELDS:
                parent, name = span._parent, span._name
            else:
                parent, name = span.parent, span.name
            if parent is None:
                state = NO_PARENT
            else:
                state = REMOTE_PARENT if parent.is_remote else LOCAL_PARENT
            route = self._cache[state].get(name) or self._route(name, state)
            route.seen.add()
            if route.bound:
                ctx = span._context if _FAST_FIELDS else span.context
                hash_ = shared_hash(ctx.trace_id)  # type: ignore[union-attr]
                if hash_ < route.bound:
                    self._submit(span, route, hash_)
        except Exception:  # never into the app; say so, but not on every span
            self._seen_errors += 1
            now = time.monotonic()
            if now - self._last_error_log > 10.0:
                self._last_error_log = now
                logger.exception(
                    "Online evaluation could not look at a span (%d so far).", self._seen_errors
                )

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Wait until every span ended so far is evaluated and its eval spans exported.

        Returns:
            True when all of it was; False when the timeout passed first, or when an
            evaluation or an eval span was lost (dropped, or its export failed) since the
            previous flush. It never waits longer than ``timeout_millis``.
        """
        return self._engine.force_flush(timeout_millis)

    def shutdown(self) -> None:
        """Finish queued evaluations (within ``engine.shutdown_timeout_s``) and stop."""
        self._engine.shutdown()

    def stats(self) -> EngineStats:
        """Counts since start: spans seen, selected, sampled, filtered, evaluated, dropped."""
        return self._engine.stats()

    def evaluate(
        self,
        name: str,
        *,
        input: str | None = None,
        output: str | None = None,
        scorers: Iterable[ScorerLike | str],
        link: trace.SpanContext | None = None,
        metadata: Mapping[str, Any] | None = None,
        timeout_s: float = 30.0,
    ) -> EvalFuture[EvalResult]:
        """Score an input/output pair now, in the background (the ``onlineEval`` shape).

        Inside an active span the eval span becomes its child; otherwise it starts a trace.
        It links to ``link`` (or to the active span when no link is given).

        Args:
            name: the evaluation's name (``eval {name}``).
            input: the prompt.
            output: the answer.
            scorers: Scorer objects, callables, ``(scorer, rate)`` pairs, or names of
                scorers defined in the config.
            link: the span the evaluation is about.
            metadata: passed to scorers as ``EvalInput.metadata``.
            timeout_s: timeout for scorers given as objects or callables.

        Returns:
            A future: ``.result(timeout)`` or ``await`` it; ignoring it is fine.
        """
        uses = tuple(self._use(s, timeout_s) for s in scorers)
        current = trace.get_current_span().get_span_context()
        if current.is_valid:
            trace_id, parent = current.trace_id, current.span_id
        else:
            trace_id, parent = self._ids.generate_trace_id(), None
        if link is None and current.is_valid:
            link = current
        target = Target(trace_id, parent, link, self._resource)
        inp = EvalInput(input, output, None, name, None, metadata or {})
        return self._engine.evaluate(name, inp, uses, target)

    def _use(self, item: ScorerLike | str, timeout_s: float) -> ScorerUse:
        if isinstance(item, str):
            spec: ScorerSpec | None = self.config.scorers.get(item)
            if spec is None:
                known = ", ".join(sorted(self.config.scorers)) or "none defined"
                raise ValueError(f"unknown scorer {item!r}; scorers defined: {known}")
            return ScorerUse(spec)
        return _as_use(item, timeout_s)


def held_size(span: ReadableSpan) -> int:
    """About what holding an ended SDK span (and its view) costs in memory, in bytes: fitted
    with tracemalloc (2.8 KB bare, about 135 bytes per attribute besides its text, 400 per
    event or link); what trace assembly counts against ``engine.assembly.max_bytes``."""
    attrs = span.attributes or {}
    # The SDK's own dict when it is there: its public views take a lock at every step
    # (2 us for a GenAI span's attributes, against 1 us), and this runs for every span.
    raw = getattr(getattr(span, "_attributes", None), "_dict", None)
    values = raw.values() if isinstance(raw, dict) else attrs.values()
    size = 2850 + 135 * len(attrs) + sum(len(v) for v in values if type(v) is str)
    events = getattr(span, "_events", None)
    links = getattr(span, "_links", None)
    extra = (len(events) if events is not None else len(span.events)) + (
        len(links) if links is not None else len(span.links)
    )
    return size + 400 * extra


def _trace_id(span: ReadableSpan) -> int:
    context = span.context
    assert context is not None
    return int(context.trace_id)


def evaluate(
    name: str,
    *,
    input: str | None = None,
    output: str | None = None,
    scorers: Iterable[ScorerLike | str],
    link: trace.SpanContext | None = None,
    metadata: Mapping[str, Any] | None = None,
    processor: OnlineEvalSpanProcessor | None = None,
) -> EvalFuture[EvalResult]:
    """Score an input/output pair with the most recently created processor.

    See :meth:`OnlineEvalSpanProcessor.evaluate`.

    Raises:
        RuntimeError: when no processor exists.
    """
    target = processor or (_default() if _default is not None else None)
    if target is None:
        raise RuntimeError(
            "evaluate() needs an OnlineEvalSpanProcessor: create one first or pass processor="
        )
    return target.evaluate(
        name, input=input, output=output, scorers=scorers, link=link, metadata=metadata
    )
