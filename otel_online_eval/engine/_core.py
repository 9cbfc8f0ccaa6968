"""What the engine's parts share: its state (set up by :class:`~otel_online_eval.engine.Engine`)
and the helpers each part calls. The parts are mixins of this class: ``_spans`` (span rules),
``_units`` (trace and session rules), ``_stats`` (counts and readings); ``_engine`` (the queue,
the loop, flush, shutdown) puts them together."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from opentelemetry.trace import SpanContext, TraceFlags

from otel_online_eval.assembly import Turn
from otel_online_eval.emit import EvalSink
from otel_online_eval.engine._config import EngineConfig
from otel_online_eval.engine._counts import RuleCounts
from otel_online_eval.engine._joins import JoinStore
from otel_online_eval.engine._routing import Route, Router
from otel_online_eval.engine._running import ScorerRunner
from otel_online_eval.engine._traces import (
    TraceRules,
    TraceUnit,
)
from otel_online_eval.rules import Rule
from otel_online_eval.spanview import SpanView

__all__ = ["EngineCore", "Item", "Marker", "link_to", "response_id", "rule_attrs"]

logger = logging.getLogger("otel_online_eval.engine")
T = TypeVar("T")

Item = tuple[Any, Route, int]


class Marker:
    """A flush request travelling through the queue. ``drain``: buffered traces are handed
    on first, all of them (``shutdown``, or ``end_of_input`` for the tools' files)."""

    __slots__ = ("done", "drain")

    def __init__(self, drain: str | None = None) -> None:
        self.done = threading.Event()
        self.drain = drain


class EngineCore:
    """The engine's shared state and helpers (every attribute is set by ``Engine.__init__``)."""

    config: EngineConfig
    router: Router
    emitter: EvalSink
    _make_view: Callable[[Any], SpanView | None]
    _joins: JoinStore
    _join_s: float
    _expects_records: bool
    _parked: dict[tuple[int, int], tuple[Item, SpanView, asyncio.TimerHandle]]
    _waits: Counter[str]
    _trace_id_of: Callable[[Any], int] | None
    _size_of: Callable[[Any], int]
    _counts: dict[str, RuleCounts]
    _runner: ScorerRunner
    _traces: TraceRules
    _last_log: dict[str, float]
    _told_no_content: set[str]
    _closed: bool
    turn_owner: Callable[[Rule, str, Turn], bool] | None
    _queue: deque[Any]
    _loop: asyncio.AbstractEventLoop
    _pool: concurrent.futures.ThreadPoolExecutor
    _tasks: set[asyncio.Task[None]]
    _inflight: int
    _waiting: deque[tuple[Rule, TraceUnit]]
    _waiting_bytes: int
    _units_released: int
    _units_finished: int
    _arm_pending: bool

    def _pump(self) -> None:
        """Start what the queue and the waiting traces allow (the engine's)."""
        raise NotImplementedError

    def _buffer(self, payload: Any, view: SpanView, route: Route, hash_: int) -> None:
        """Hand a span to the trace rules of its route (the unit side's)."""
        raise NotImplementedError

    def _start_task(self, coro: Coroutine[Any, Any, None], counts_inflight: bool = False) -> None:
        task = self._loop.create_task(coro)
        self._tasks.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            if counts_inflight:
                self._inflight -= 1
                if self._queue or self._waiting:
                    self._pump()
            if not t.cancelled() and t.exception() is not None:  # a bug: counted where it was
                self._log_limited("engine_error", "Evaluation failed: %r", t.exception())

        task.add_done_callback(done)

    def _in_pool(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        ctx = contextvars.copy_context()  # carries the instrumentation suppression
        return self._loop.run_in_executor(self._pool, ctx.run, fn, *args)

    def _rule_lost(self, rule: Rule, reason: str, exc: BaseException | None = None) -> None:
        """A sampled span's evaluation by ``rule`` will not be exported."""
        self._counts[rule.name].dropped[reason].add()
        if exc is not None:
            self._log_limited(
                "engine_error", "Evaluation of rule %r failed: %r", rule.name, exc, exc_info=True
            )

    def _log_limited(self, key: str, msg: str, *args: Any, exc_info: bool = False) -> None:
        now = time.monotonic()
        if now - self._last_log.get(key, -1e9) >= 10.0:
            self._last_log[key] = now
            logger.warning(msg, *args, exc_info=exc_info)

    def _decide_dropped(self, route: Route, hash_: int, trace_id: int | None, reason: str) -> None:
        for rule in route.rules:
            counts = self._counts.setdefault(rule.name, RuleCounts())
            if rule.sampling_is_callable or rule.is_session or (rule.salt and trace_id is None):
                kept = True  # cannot be decided without the span: counted as sampled
            elif rule.salt:
                assert trace_id is not None
                kept = rule.hash(trace_id) < rule.bound
            else:
                kept = hash_ < rule.bound
            if kept:
                counts.sampled.add()
                counts.dropped[reason].add()
            else:
                counts.sampled_out.add()


def link_to(view: SpanView) -> SpanContext:
    return SpanContext(view.trace_id, view.span_id, False, TraceFlags(TraceFlags.SAMPLED))


def rule_attrs(rule: Rule) -> dict[str, Any]:
    """What every eval span of ``rule`` says of the rule: its description and sampling rate."""
    attrs: dict[str, Any] = {}
    if rule.description:
        attrs["online_eval.rule.description"] = rule.description
    if rule.rate is not None:
        attrs["online_eval.sampling.rate"] = rule.rate
    return attrs


def response_id(view: SpanView) -> str | None:
    """The span's ``gen_ai.response.id``, which evaluation results name when it is known."""
    value = view.attributes.get("gen_ai.response.id")
    return value if isinstance(value, str) and value else None
