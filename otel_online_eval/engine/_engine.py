"""The :class:`Engine`: a bounded queue, a background event loop, scorers behind bulkheads."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import inspect
import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Coroutine, Iterable, Sequence
from typing import Any, Generic, TypeVar

from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, attach, set_value
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import SpanContext, TraceFlags

from otel_online_eval._threads import name_os_thread
from otel_online_eval.assembly import REASONS, SESSION_REASONS, Turn
from otel_online_eval.emit import EvalResult, EvalSink, ExportCounts, ScorerRun, Target
from otel_online_eval.engine._config import EngineConfig
from otel_online_eval.engine._counts import DROP_REASONS, EngineStats, RuleCounts
from otel_online_eval.engine._deciding import decide_trace, session_hash, session_key, trace_input
from otel_online_eval.engine._routing import Route, Router
from otel_online_eval.engine._running import ScorerRunner
from otel_online_eval.engine._traces import (
    Due,
    SessionDue,
    TraceRuleCounts,
    TraceRules,
    TraceUnit,
)
from otel_online_eval.genai import CONTENT_CAPTURE_HINT, no_content
from otel_online_eval.metrics import register_metrics
from otel_online_eval.rules import Rule, ScorerUse
from otel_online_eval.scorers.base import (
    EvalInput,
)
from otel_online_eval.sessionview import SessionView
from otel_online_eval.spanview import SpanView
from otel_online_eval.traceview import TraceView

__all__ = ["Engine", "EvalFuture"]

logger = logging.getLogger("otel_online_eval.engine")
T = TypeVar("T")

_INLINE_BATCH = 256  # inline spans evaluated per turn of the loop before yielding
_TICK_S = 0.005  # how often the loop polls the queue while spans keep coming
_IDLE_TICKS = 200  # polls finding nothing (1 s) before it sleeps until woken
_WAKE_AT = 64  # a backlog this long wakes the loop at once even while it polls


class _Marker:
    """A flush request travelling through the queue. ``drain``: buffered traces are handed
    on first, all of them (``shutdown``, or ``end_of_input`` for the tools' files)."""

    __slots__ = ("done", "drain")

    def __init__(self, drain: str | None = None) -> None:
        self.done = threading.Event()
        self.drain = drain


class EvalFuture(concurrent.futures.Future[T], Generic[T]):
    """The result of a direct evaluation: wait with ``.result(timeout)`` or ``await`` it."""

    def __await__(self) -> Any:
        return asyncio.wrap_future(self).__await__()


Item = tuple[Any, Route, int]


class Engine:
    """Runs rules and scorers in the background.

    Args:
        rules: the rules.
        emitter: where results go.
        make_view: turns a queued payload (an SDK span, a protobuf span) into a SpanView,
            or None for a span that must not be evaluated.
        config: queue size, concurrency, thread count.
        meter_provider: where self-metrics are published (the global provider when None).
        trace_id_of: a payload's trace id, cheaply (for sampling decisions about spans that
            are dropped before the loop sees them); ``make_view(payload).trace_id`` when None.
        size_of: a payload's size in bytes as trace assembly counts it against
            ``engine.assembly.max_bytes`` (1 KiB each when None).
        local_roots: a span whose parent is remote is its trace's root for trace rules (the
            in-process door: the caller's spans never reach this process).
    """

    def __init__(
        self,
        rules: Sequence[Rule],
        emitter: EvalSink,
        make_view: Callable[[Any], SpanView | None],
        config: EngineConfig | None = None,
        meter_provider: MeterProvider | None = None,
        trace_id_of: Callable[[Any], int] | None = None,
        size_of: Callable[[Any], int] | None = None,
        local_roots: bool = False,
    ) -> None:
        self.config = config or EngineConfig()
        self.router = Router(rules)
        self.emitter = emitter
        self._make_view = make_view
        self._trace_id_of = trace_id_of
        self._size_of = size_of or _default_size
        self._local_roots = local_roots
        self._traces = self._trace_rules()
        self._max_queue = self.config.queue_size
        self._closed = False
        self._shutdown_done = False
        self._counts: dict[str, RuleCounts] = {r.name: RuleCounts() for r in self.router.rules}
        self._flush_baseline = 0
        self._runner = ScorerRunner(self.config, self._log_limited)
        self._last_log: dict[str, float] = {}
        self._told_no_content: set[str] = set()
        self._start_workers()
        self._runner.record_duration = register_metrics(self._readings(), meter_provider)
        if hasattr(os, "register_at_fork"):
            restart = weakref.WeakMethod(self._after_fork_in_child)
            os.register_at_fork(after_in_child=lambda: _call_if_alive(restart))

    def _start_workers(self) -> None:
        self._queue: deque[Item | _Marker] = deque()
        self._wake_pending = False
        self._ticking = False
        self._idle_ticks = 0
        self._lock = threading.Lock()
        self._inflight = 0
        # Traces due for evaluation, waiting for a slot (max_concurrent_evals), and their bytes.
        self._waiting: deque[tuple[Rule, TraceUnit]] = deque()
        self._waiting_bytes = 0
        self._units_released = 0
        self._units_finished = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._direct: set[concurrent.futures.Future[Any]] = set()
        # Sync sampling callables run here; every sync scorer has threads of its own.
        self._pool = concurrent.futures.ThreadPoolExecutor(
            self.config.threads,
            thread_name_prefix="online-eval-sampler",
            initializer=name_os_thread,
        )
        self._loop = asyncio.new_event_loop()
        self._runner.start(self._loop)
        self._traces.start(self._loop)
        self._arm_pending = False
        # Everything the loop runs (callbacks scheduled from the app's threads included, which
        # would otherwise carry the app's context and its current span) runs in this context:
        # no current span, and instrumentation suppressed, so scorers and judges never trace
        # themselves into the app's pipeline or ours.
        self._ctx = contextvars.Context()
        self._ctx.run(attach, set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
        self._thread = threading.Thread(
            target=self._run_loop, name="online-eval-engine", daemon=True
        )
        self._thread.start()

    def _trace_rules(self) -> TraceRules:
        return TraceRules(
            self.router.rules,
            self.config.assembly,
            self._local_roots,
            self._release_traces,
            self._release_sessions,
        )

    def _after_fork_in_child(self) -> None:
        # The parent's threads do not exist in the child (gunicorn --preload, multiprocessing):
        # start our own. What the parent had queued (and buffered) is the parent's to finish.
        if not self._closed:
            self._traces = self._trace_rules()
            self._start_workers()

    # -- the caller's side -------------------------------------------------------------------

    def submit(self, payload: Any, route: Route, hash_: int) -> None:
        """Queue a span for evaluation; never blocks, never raises.

        Args:
            payload: what ``make_view`` turns into a SpanView.
            route: the span's route.
            hash_: the span's trace hash with the shared seed.
        """
        route.submitted.add()
        if self._closed:
            self._drop_queued(payload, route, hash_, "shutdown")
            return
        queue = self._queue
        if len(queue) >= self._max_queue:
            self._drop_queued(payload, route, hash_, "queue_full")
            self._log_limited(
                "queue_full", "Evaluation queue full (%d), dropping a span.", self._max_queue
            )
            return
        item = (payload, route, hash_)
        queue.append(item)
        # While the loop polls the queue (it does so every few ms once it has work), a
        # wake-up (a syscall) is only worth it when a backlog starts; a longer one means the
        # loop is busy with it already. (Concurrent submits may step over the mark: then the
        # next poll picks the queue up.)
        if (not self._ticking or len(queue) == _WAKE_AT) and not self._wake_pending:
            self._wake_pending = True
            try:
                self._loop.call_soon_threadsafe(self._wake, context=self._ctx.copy())
            except RuntimeError:  # the loop closed under a racing shutdown
                try:
                    queue.remove(item)
                except ValueError:  # taken out by the shutdown: counted there
                    return
                self._drop_queued(payload, route, hash_, "shutdown")

    def evaluate(
        self, name: str, inp: EvalInput, uses: Sequence[ScorerUse], target: Target
    ) -> EvalFuture[EvalResult]:
        """Run scorers on a given input outside of any rule (the direct API)."""
        future: EvalFuture[EvalResult] = EvalFuture()
        if self._closed:
            future.set_exception(RuntimeError("Cannot evaluate: the processor has been shut down."))
            return future
        with self._lock:
            self._direct.add(future)
        future.add_done_callback(self._direct_done)

        async def run() -> None:
            try:
                future.set_result(await self._evaluate(name, inp, uses, target))
            except BaseException as exc:  # cancelled at shutdown, or a bug: tell the caller
                if not future.done():
                    future.set_exception(exc)

        self._loop.call_soon_threadsafe(self._start_task, run(), context=self._ctx.copy())
        return future

    def _direct_done(self, future: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            self._direct.discard(future)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Wait until everything submitted so far is evaluated and exported.

        Traces that trace rules are still assembling are not evaluated by a flush (they are
        not complete); those that are due by then are. :meth:`shutdown` evaluates them all.

        Returns:
            False when the timeout passed first, or when an evaluation or an eval span was
            lost (dropped, or its export failed) since the previous flush.
        """
        return self._flush(timeout_millis, drain=None)

    def end_of_input(self, timeout_millis: int = 30000) -> bool:
        """Everything has been submitted (the tools, at the end of their files): evaluate every
        buffered trace now, complete when its structure says so, then flush as
        :meth:`force_flush` does."""
        return self._flush(timeout_millis, drain="end_of_input")

    def _flush(self, timeout_millis: int, drain: str | None) -> bool:
        deadline = time.monotonic() + timeout_millis / 1000
        ok = True
        if not self._loop.is_closed() and self._thread.is_alive():
            marker = _Marker(drain)
            self._queue.append(marker)
            try:
                self._loop.call_soon_threadsafe(self._pump, context=self._ctx.copy())
            except RuntimeError:  # the loop closed meanwhile
                return False
            if not marker.done.wait(max(0.0, deadline - time.monotonic())):
                return False
            with self._lock:
                direct = list(self._direct)
            _, pending = concurrent.futures.wait(direct, max(0.0, deadline - time.monotonic()))
            ok = not pending
        remaining = int(max(0.0, deadline - time.monotonic()) * 1000)
        exported = self.emitter.force_flush(remaining)
        lost = self._lost()
        with self._lock:
            kept = lost == self._flush_baseline
            self._flush_baseline = max(self._flush_baseline, lost)
        return ok and exported and kept

    def shutdown(self, timeout_millis: int | None = None) -> bool:
        """Stop accepting spans, finish what is queued within the timeout, flush, stop.

        Safe to call twice. Traces that trace rules are assembling are evaluated as they are
        (incomplete, reason ``shutdown``). Work not finished by the deadline is cancelled and
        counted as dropped with reason ``shutdown``.

        Returns:
            False when the timeout passed before everything was exported.
        """
        with self._lock:
            if self._shutdown_done:
                return True
            self._shutdown_done = True
        if timeout_millis is None:
            timeout_millis = int(self.config.shutdown_timeout_s * 1000)
        self._closed = True
        deadline = time.monotonic() + timeout_millis / 1000
        flushed = self._flush(timeout_millis, drain="shutdown")
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._cancel_all, context=self._ctx.copy())
            self._thread.join(5)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._runner.shutdown()
        self.emitter.shutdown(max(0, int((deadline - time.monotonic()) * 1000)))
        return flushed

    # -- the loop's side ---------------------------------------------------------------------

    def _run_loop(self) -> None:
        # The loop thread's own context is suppressed too (tasks copy it); callbacks from other
        # threads get a fresh copy of self._ctx each (one Context cannot be entered twice).
        name_os_thread()
        attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()

    def _cancel_all(self) -> None:
        while self._queue:
            item = self._queue.popleft()
            if isinstance(item, _Marker):
                item.done.set()
            else:
                self._drop_queued(*item, "shutdown")
        while self._waiting:  # traces that never got a slot before the deadline
            rule, unit = self._waiting.popleft()
            self._waiting_bytes -= unit.size
            self._units_finished += 1
            self._traces.counts[rule.name].lost["shutdown"].add()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            waiting = asyncio.gather(*self._tasks, return_exceptions=True)
            waiting.add_done_callback(lambda _: self._loop.stop())
        else:
            self._loop.stop()

    def _wake(self) -> None:
        self._wake_pending = False
        if not self._ticking:
            self._ticking = True
            self._idle_ticks = 0
            self._loop.call_later(_TICK_S, self._tick)
        self._pump()

    def _tick(self) -> None:
        if self._queue:
            self._idle_ticks = 0
            self._pump()
        else:
            self._idle_ticks += 1
            if self._idle_ticks >= _IDLE_TICKS:
                self._ticking = False
                # A span appended before the flag was reset saw it set and did not wake
                # us: look once more after publishing it.
                if not self._queue:
                    return
                self._ticking = True
        self._loop.call_later(_TICK_S, self._tick)

    def _pump(self) -> None:
        queue = self._queue
        limit = self.config.max_concurrent_evals
        self._pump_traces(limit)
        budget = _INLINE_BATCH
        while queue:
            head = queue[0]
            if isinstance(head, _Marker):
                queue.popleft()
                if self._traces:  # what is due by now (all of it at shutdown) goes first
                    if head.drain is None:
                        self._traces.release_due()
                    else:
                        self._traces.drain(end_of_input=head.drain == "end_of_input")
                self._pump_traces(limit)
                self._start_task(self._flush_marker(head, set(self._tasks), self._units_released))
            elif head[1].inline:
                if not budget:  # let timers and other callbacks run, then go on
                    self._loop.call_soon(self._pump)
                    return
                budget -= 1
                queue.popleft()
                self._process_inline(head)
            elif self._inflight < limit:
                queue.popleft()
                self._inflight += 1
                self._start_task(self._process(head), counts_inflight=True)
            else:
                return  # a finishing evaluation pumps again

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

    async def _flush_marker(
        self, marker: _Marker, before: set[asyncio.Task[None]], units: int
    ) -> None:
        if before:
            await asyncio.wait(before)
        while self._units_finished < units:  # traces due before the flush, still waiting
            await asyncio.sleep(_TICK_S)
        marker.done.set()

    def _view_of(self, item: Item) -> SpanView | None:
        """The item's view; None when it is not to be evaluated (counted either way)."""
        payload, route, hash_ = item
        try:
            view = self._make_view(payload)
        except Exception as exc:
            self._decide_dropped(route, hash_, None, "error")
            self._log_limited("engine_error", "Evaluation failed: %r", exc)
            return None
        if view is None:  # an eval span, in the sidecar: never evaluated, not selected
            route.ignored.add()
        return view

    def _process_inline(self, item: Item) -> None:
        """Evaluate a span whose rules all decide and score without awaiting anything."""
        view = self._view_of(item)
        if view is None:
            return
        payload, route, hash_ = item
        if route.trace_rules:
            self._buffer(payload, view, route, hash_)
        for rule in route.span_rules:
            rule_hash = self._decide(rule, view, hash_)
            if rule_hash is None:
                continue
            try:
                start = time.time_ns()
                inp = _eval_input(view, rule.name)
                runs, sampled_out = [], []
                for use in rule.scorers:
                    if rule_hash >= rule.scorer_bound(use):
                        sampled_out.append(use.name)
                        self._runner.count_score(rule.name, use.name, "sampled_out")
                    else:
                        runs.append(self._runner.run_inline(rule.name, use, inp))
                self._emit_rule(view, rule, runs, sampled_out, start)
            except Exception as exc:
                self._rule_lost(rule, "error", exc)

    def _decide(self, rule: Rule, view: SpanView, hash_: int) -> int | None:
        """Rate sampling and filter (counted); the rule's hash when the span is to be scored."""
        counts = self._counts[rule.name]
        rule_hash = hash_ if not rule.salt else rule.hash(view.trace_id)
        if rule_hash >= rule.bound:
            counts.sampled_out.add()
            return None
        counts.sampled.add()
        return rule_hash if self._filter_passes(rule, view) else None

    def _filter_passes(self, rule: Rule, view: SpanView) -> bool:
        """The filter, for a sampled span; spans with no content are counted and told once."""
        counts = self._counts[rule.name]
        try:
            missing = no_content(view)
            if missing is not None:
                counts.no_content.add()
                self._tell_no_content(rule, view, missing)
            if rule.filter is None or rule.filter(view):
                return True
        except Exception as exc:
            self._rule_lost(rule, "error", exc)
            return False
        counts.filtered_out.add()
        return False

    def _tell_no_content(self, rule: Rule, view: SpanView, marker: str) -> None:
        if rule.name in self._told_no_content:
            return
        self._told_no_content.add(rule.name)
        logger.warning(
            "Rule %r: span %r (scope %r) looks like a GenAI operation (%s) but carries no "
            "prompt or answer that any preset reads, so its scorers have nothing to score. %s "
            "Counted in online_eval.spans.no_content; said once per rule.",
            rule.name,
            view.name,
            view.scope_name,
            marker,
            CONTENT_CAPTURE_HINT,
        )

    async def _process(self, item: Item) -> None:
        view = self._view_of(item)
        if view is None:
            return
        payload, route, hash_ = item
        if route.trace_rules:
            self._buffer(payload, view, route, hash_)
        evals = []
        for rule in route.span_rules:
            if rule.sampling_is_callable:
                evals.append(self._sample_and_evaluate(view, rule))
                continue
            rule_hash = self._decide(rule, view, hash_)
            if rule_hash is not None:
                evals.append(self._evaluate_span(view, rule, rule_hash))
        if len(evals) == 1:
            await evals[0]  # in this task: gather would make a task for it
        elif evals:
            await asyncio.gather(*evals)

    async def _sample_and_evaluate(self, view: SpanView, rule: Rule) -> None:
        counts = self._counts[rule.name]
        try:
            kept = await self._callable_sample(rule, view)
        except asyncio.CancelledError:
            counts.sampled.add()  # not decided: counted as sampled, and lost
            self._rule_lost(rule, "shutdown")
            raise
        if not kept:
            counts.sampled_out.add()
            return
        counts.sampled.add()
        if self._filter_passes(rule, view):
            await self._evaluate_span(view, rule, rule.hash(view.trace_id))

    async def _callable_sample(self, rule: Rule, view: SpanView) -> bool:
        sampler = rule.sampling
        assert callable(sampler)
        g = view.genai
        try:
            if inspect.iscoroutinefunction(sampler):
                verdict = await sampler(g.input, g.output)
            else:
                verdict = await self._in_pool(sampler, g.input, g.output)
                if inspect.isawaitable(verdict):
                    verdict = await verdict
        except Exception:
            self._log_limited(
                f"sampler:{rule.name}",
                "Sampling callable of rule %r raised; the span is not sampled.",
                rule.name,
                exc_info=True,
            )
            return False
        return verdict is True

    async def _evaluate_span(self, view: SpanView, rule: Rule, rule_hash: int) -> None:
        try:
            start = time.time_ns()
            runs, sampled_out = await self._runner.run_all(
                rule.name, rule.scorers, _eval_input(view, rule.name), rule, rule_hash
            )
            self._emit_rule(view, rule, runs, sampled_out, start)
        except asyncio.CancelledError:
            self._rule_lost(rule, "shutdown")
            raise
        except Exception as exc:
            self._rule_lost(rule, "error", exc)

    def _emit_rule(
        self,
        view: SpanView,
        rule: Rule,
        runs: Sequence[ScorerRun],
        sampled_out: Sequence[str],
        start: int,
    ) -> None:
        target = Target(
            view.trace_id, view.span_id, _link_to(view), self.emitter.resource_of(view), view.name
        )
        attrs: dict[str, Any] = {}
        if rule.description:
            attrs["online_eval.rule.description"] = rule.description
        if rule.rate is not None:
            attrs["online_eval.sampling.rate"] = rule.rate
        self.emitter.emit(target, rule.name, runs, sampled_out, start, time.time_ns(), attrs)
        self._counts[rule.name].evals.add()

    async def _evaluate(
        self, name: str, inp: EvalInput, uses: Sequence[ScorerUse], target: Target
    ) -> EvalResult:
        start = time.time_ns()
        runs, sampled_out = await self._runner.run_all(name, uses, inp, None, 0)
        return self.emitter.emit(target, name, runs, sampled_out, start, time.time_ns())

    # -- trace rules ----------------------------------------------------------------------------

    def _buffer(self, payload: Any, view: SpanView, route: Route, hash_: int) -> None:
        """Hand a span to the assembly of each trace rule whose sampling keeps its trace."""
        size = -1
        for rule in route.trace_rules:
            counts = self._counts[rule.name]
            rule_hash = hash_ if not rule.salt else rule.hash(view.trace_id)
            if rule_hash >= rule.bound and not rule.is_session:  # sessions: by key, later
                counts.sampled_out.add()
                continue
            counts.sampled.add()
            try:
                if size < 0:
                    size = self._size_of(payload)
                self._traces.add(rule, view, size)
            except Exception as exc:  # a bug: the span is lost to this rule, counted
                self._rule_lost(rule, "error", exc)
        if not self._arm_pending:  # the timer is looked at once per batch of spans
            self._arm_pending = True
            self._loop.call_soon(self._arm)

    def _arm(self) -> None:
        self._arm_pending = False
        self._traces.arm()

    def _release_traces(self, due: list[Due]) -> None:
        """Traces handed on by assembly: a session rule's become turns at once; a trace rule's
        wait for a slot, within ``max_bytes`` (past it the oldest waiting is lost, counted)."""
        waiting = self._waiting
        limit = self.config.assembly.max_bytes
        for rule, unit in due:
            if rule.is_session:
                self._add_turn(rule, unit)
                continue
            self._units_released += 1
            waiting.append((rule, unit))
            self._waiting_bytes += unit.size
            while self._waiting_bytes > limit and len(waiting) > 1:
                old_rule, old = waiting.popleft()
                self._waiting_bytes -= old.size
                self._units_finished += 1
                self._traces.counts[old_rule.name].lost["overload"].add()
                self._log_limited(
                    "trace_overload",
                    "Traces are due faster than they are evaluated; dropping the oldest "
                    "waiting one (online_eval.assembly.lost{reason=overload}).",
                )
        self._pump_traces(self.config.max_concurrent_evals)

    def _pump_traces(self, limit: int) -> None:
        waiting = self._waiting
        while waiting and self._inflight < limit:
            rule, unit = waiting.popleft()
            self._waiting_bytes -= unit.size
            self._inflight += 1
            self._start_task(self._evaluate_trace(rule, unit), counts_inflight=True)

    def _add_turn(self, rule: Rule, unit: TraceUnit) -> None:
        """A session rule's trace: its key, the session's sampling, the filter, then a turn."""
        turns = self._traces.counts[rule.name].turns
        try:
            trace = TraceView(unit.spans, unit.complete, unit.reason)
            key = session_key(rule, trace)
            if key is None:
                turns["no_key"].add()
                return
            if session_hash(key, rule.salt) >= rule.bound:
                turns["sampled_out"].add()
                return
            decision = decide_trace(rule, trace, ignore_sampling=True)
            anchor = decision.anchor
            if not decision.matched or anchor is None:
                turns["filtered_out"].add()
                return
            turn = Turn(
                trace.trace_id,
                anchor.span_id,
                trace.input,
                trace.output,
                trace.spans[0].start_time_ns,
                max(s.end_time_ns for s in trace.spans),
                trace.error_count,
                trace.input_tokens,
                trace.output_tokens,
                unit.complete,
                self.emitter.resource_of(anchor),
            )
            self._traces.add_turn(rule, key, turn)
        except Exception as exc:  # a bug: this turn is lost, counted
            self._traces.counts[rule.name].lost["error"].add()
            self._log_limited("engine_error", "Session rule %r failed: %r", rule.name, exc)

    def _release_sessions(self, due: list[SessionDue]) -> None:
        for rule, unit in due:
            self._start_task(
                self._evaluate_session(rule, SessionView(unit.key, unit.turns, unit.reason))
            )

    async def _evaluate_session(self, rule: Rule, session: SessionView) -> None:
        trace_counts = self._traces.counts[rule.name]
        try:
            start = time.time_ns()
            last = session.turns[-1]
            inp = EvalInput(session.input, session.output, None, rule.name, session=session)
            runs, sampled_out = await self._runner.run_all(
                rule.name, rule.scorers, inp, rule, session_hash(session.key, rule.salt)
            )
            earlier = session.turns[:-1][-MAX_TURN_LINKS:]
            target = Target(
                last.trace_id,
                last.span_id,
                _context(last.trace_id, last.span_id),
                last.resource,
                None,
                tuple((_context(t.trace_id, t.span_id), "turn") for t in earlier),
            )
            attrs: dict[str, Any] = {
                "online_eval.scope": "session",
                "online_eval.session.turns": session.turn_count,
                "online_eval.session.reason": session.reason,
            }
            if session.turn_count - 1 > len(earlier):
                attrs["online_eval.session.turn_links_dropped"] = (
                    session.turn_count - 1 - len(earlier)
                )
            if rule.description:
                attrs["online_eval.rule.description"] = rule.description
            if rule.rate is not None:
                attrs["online_eval.sampling.rate"] = rule.rate
            self.emitter.emit(target, rule.name, runs, sampled_out, start, time.time_ns(), attrs)
            self._counts[rule.name].evals.add()
        except asyncio.CancelledError:
            trace_counts.lost["shutdown"].add()
            raise
        except Exception as exc:
            trace_counts.lost["error"].add()
            self._log_limited(
                "engine_error", "Evaluation of rule %r failed: %r", rule.name, exc, exc_info=True
            )

    async def _evaluate_trace(self, rule: Rule, unit: TraceUnit) -> None:
        counts = self._counts[rule.name]
        trace_counts = self._traces.counts[rule.name]
        try:
            await self._score_trace(rule, unit, counts, trace_counts)
        finally:
            self._units_finished += 1

    async def _score_trace(
        self, rule: Rule, unit: TraceUnit, counts: RuleCounts, trace_counts: TraceRuleCounts
    ) -> None:
        try:
            if not unit.complete and rule.on_incomplete == "skip":
                trace_counts.skipped_incomplete.add()
                return
            start = time.time_ns()
            trace = TraceView(unit.spans, unit.complete, unit.reason)
            # Sampled already, by trace id, when its first span came; skip is decided above.
            decision = decide_trace(rule, trace, ignore_sampling=True)
            anchor = decision.anchor
            if not decision.matched or anchor is None:
                counts.filtered_out.add()
                return
            inp = trace_input(rule, trace, anchor)
            runs, sampled_out = await self._runner.run_all(
                rule.name, rule.scorers, inp, rule, rule.hash(unit.trace_id)
            )
            self._emit_trace(anchor, rule, unit, runs, sampled_out, start)
        except asyncio.CancelledError:
            trace_counts.lost["shutdown"].add()
            raise
        except Exception as exc:
            trace_counts.lost["error"].add()
            self._log_limited(
                "engine_error", "Evaluation of rule %r failed: %r", rule.name, exc, exc_info=True
            )

    def _emit_trace(
        self,
        anchor: SpanView,
        rule: Rule,
        unit: TraceUnit,
        runs: Sequence[ScorerRun],
        sampled_out: Sequence[str],
        start: int,
    ) -> None:
        replaced = self._traces.supersedes(rule.name, unit.trace_id) if unit.revision > 1 else None
        target = Target(
            anchor.trace_id,
            anchor.span_id,
            _link_to(anchor),
            self.emitter.resource_of(anchor),
            anchor.name,
            ((replaced, "supersedes"),) if replaced is not None else (),
        )
        attrs: dict[str, Any] = {
            "online_eval.scope": "trace",
            "online_eval.trace.span_count": len(unit.spans) + unit.dropped_spans,
            "online_eval.trace.complete": unit.complete,
            "online_eval.trace.reason": unit.reason,
            "online_eval.revision": unit.revision,
        }
        if unit.dropped_spans:
            attrs["online_eval.trace.dropped_spans"] = unit.dropped_spans
        if rule.description:
            attrs["online_eval.rule.description"] = rule.description
        if rule.rate is not None:
            attrs["online_eval.sampling.rate"] = rule.rate
        result = self.emitter.emit(
            target, rule.name, runs, sampled_out, start, time.time_ns(), attrs
        )
        self._counts[rule.name].evals.add()
        self._traces.evaluated(rule, unit.trace_id, result.span_id)

    def _in_pool(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        ctx = contextvars.copy_context()  # carries the instrumentation suppression
        return self._loop.run_in_executor(self._pool, ctx.run, fn, *args)

    # -- bookkeeping -------------------------------------------------------------------------

    def _drop_queued(self, payload: Any, route: Route, hash_: int, reason: str) -> None:
        """A span dropped before the loop looked at it: each rule's sampling is decided now
        (a pure function of the trace id), so the span is sampled out or sampled and lost."""
        try:
            trace_id: int | None = None
            if any(rule.salt and not rule.sampling_is_callable for rule in route.rules):
                trace_id = self._trace_id(payload)
            self._decide_dropped(route, hash_, trace_id, reason)
        except Exception:  # never into the caller; the counts are off by this span
            self._log_limited("drop_count", "Could not count a dropped span.", exc_info=True)

    def _trace_id(self, payload: Any) -> int | None:
        if self._trace_id_of is not None:
            return self._trace_id_of(payload)
        view = self._make_view(payload)
        return view.trace_id if view is not None else None

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

    def _rule_lost(self, rule: Rule, reason: str, exc: BaseException | None = None) -> None:
        """A sampled span's evaluation by ``rule`` will not be exported."""
        self._counts[rule.name].dropped[reason].add()
        if exc is not None:
            self._log_limited(
                "engine_error", "Evaluation of rule %r failed: %r", rule.name, exc, exc_info=True
            )

    def _lost(self) -> int:
        traces = sum(t.value for c in self._traces.counts.values() for t in c.lost.values())
        return traces + sum(c.lost() for c in list(self._counts.values()))

    def _log_limited(self, key: str, msg: str, *args: Any, exc_info: bool = False) -> None:
        now = time.monotonic()
        if now - self._last_log.get(key, -1e9) >= 10.0:
            self._last_log[key] = now
            logger.warning(msg, *args, exc_info=exc_info)

    def stats(self) -> EngineStats:
        """A snapshot of the counts (for tests, tools and the metrics callbacks)."""
        names = [r.name for r in self.router.rules]
        selected = dict.fromkeys(names, 0)
        prefiltered = dict.fromkeys(names, 0)  # sampled out by the route's bound
        seen = 0
        for route in self.router.routes():
            # In this order: each counter is bumped after the one read after it.
            ignored = route.ignored.value
            submitted = route.submitted.value
            n = route.seen.value
            seen += n
            for rule in route.rules:
                selected[rule.name] += n - ignored
                prefiltered[rule.name] += n - submitted
        counts = {name: self._counts[name] for name in names}
        dropped_by_rule = {
            (name, reason): c.dropped[reason].value
            for name, c in counts.items()
            for reason in DROP_REASONS
        }
        dropped = dict.fromkeys(DROP_REASONS, 0)
        for (_, reason), n in dropped_by_rule.items():
            dropped[reason] += n
        export = self._export_counts()
        # Every rule appears, at 0 when nothing happened yet: a zero is not a gap.
        return EngineStats(
            seen=seen,
            dropped=dropped,
            queue_size=sum(1 for i in list(self._queue) if not isinstance(i, _Marker)),
            selected=selected,
            not_selected={r: seen - selected[r] for r in names},
            sampled={r: c.sampled.value for r, c in counts.items()},
            sampled_out={r: c.sampled_out.value + prefiltered[r] for r, c in counts.items()},
            filtered_out={r: c.filtered_out.value for r, c in counts.items()},
            evals={r: c.evals.value for r, c in counts.items()},
            no_content={r: c.no_content.value for r, c in counts.items()},
            dropped_by_rule=dropped_by_rule,
            scores=dict(self._runner.scores),
            skipped=dict(self._runner.skips),
            tokens=dict(self._runner.tokens),
            quarantined={**self._scorer_names(), **self._runner.quarantined},
            stuck=self._runner.stuck(),
            eval_spans_scheduled=export.scheduled,
            eval_spans_exported=export.exported,
            eval_spans_dropped=dict(export.dropped),
            **self._assembly_stats(),
        )

    def _assembly_stats(self) -> dict[str, Any]:
        """The trace rules' counts, as EngineStats fields (each rule at 0 until it counts)."""
        traces = self._traces
        spans: dict[tuple[str, str], int] = {}
        released: dict[tuple[str, str], int] = {}
        evicted: dict[tuple[str, str], int] = {}
        late, dropped = {}, {}
        for name, c in traces.assembly_counts().items():
            spans.update(
                {
                    (name, "buffered"): c.spans,
                    (name, "duplicate"): c.duplicates,
                    (name, "over_limit"): c.dropped_spans,
                }
            )
            released.update({(name, reason): c.released.get(reason, 0) for reason in REASONS})
            evicted.update({(name, b): c.evicted.get(b, 0) for b in ("max_traces", "max_bytes")})
            late[name] = c.late - c.reopened
            dropped[name] = c.dropped_traces
        held = traces.in_flight()
        sessions: dict[tuple[str, str], int] = {}
        for name, sc in traces.session_counts().items():
            sessions.update({(name, r): sc.released.get(r, 0) for r in SESSION_REASONS})
        return {
            "assembly_turns": {
                (n, outcome): t.value
                for n, c in traces.counts.items()
                if self.router.rules_by_name[n].is_session
                for outcome, t in c.turns.items()
            },
            "assembly_sessions": sessions,
            "assembly_spans": spans,
            "assembly_late": late,
            "assembly_traces": released,
            "assembly_evicted": evicted,
            "assembly_dropped_traces": dropped,
            "assembly_skipped_incomplete": {
                n: c.skipped_incomplete.value for n, c in traces.counts.items()
            },
            "assembly_lost": {
                (n, reason): t.value
                for n, c in traces.counts.items()
                for reason, t in c.lost.items()
            },
            "assembly_buffered_traces": {n: t for n, (t, _) in held.items()},
            "assembly_buffered_bytes": {n: b for n, (_, b) in held.items()},
        }

    def _scorer_names(self) -> dict[str, int]:
        """Every rule's scorers that run behind a bulkhead, at 0."""
        return {u.name: 0 for r in self.router.rules for u in r.scorers if not u.spec.inline}

    def _export_counts(self) -> ExportCounts:
        counts = getattr(self.emitter, "export_counts", None)
        found = counts() if callable(counts) else None
        return found if isinstance(found, ExportCounts) else ExportCounts()

    def _readings(self) -> dict[str, Callable[[], Iterable[tuple[float, dict[str, str]]]]]:
        def per_rule(attr: str) -> Callable[[], Iterable[tuple[float, dict[str, str]]]]:
            return lambda: [(v, {"rule": k}) for k, v in getattr(self.stats(), attr).items()]

        return {
            "online_eval.spans.seen": lambda: [(self.stats().seen, {})],
            "online_eval.spans.selected": per_rule("selected"),
            "online_eval.spans.not_selected": per_rule("not_selected"),
            "online_eval.spans.sampled": per_rule("sampled"),
            "online_eval.spans.sampled_out": per_rule("sampled_out"),
            "online_eval.spans.filtered_out": per_rule("filtered_out"),
            "online_eval.spans.no_content": per_rule("no_content"),
            "online_eval.spans.dropped": lambda: [
                (v, {"rule": r, "reason": k}) for (r, k), v in self.stats().dropped_by_rule.items()
            ],
            "online_eval.evals": per_rule("evals"),
            "online_eval.scores": lambda: [
                (v, {"rule": r, "scorer": s, "outcome": o})
                for (r, s, o), v in dict(self._runner.scores).items()
            ],
            "online_eval.scores.skipped": lambda: [
                (v, {"rule": r, "scorer": s, "reason": k})
                for (r, s, k), v in dict(self._runner.skips).items()
            ],
            "online_eval.scorer.quarantined": lambda: [
                (v, {"scorer": s}) for s, v in self.stats().quarantined.items()
            ],
            "online_eval.scorer.stuck": lambda: [
                (v, {"scorer": s}) for s, v in self.stats().stuck.items()
            ],
            "online_eval.queue.size": lambda: [(len(self._queue), {})],
            "online_eval.judge.tokens": lambda: [
                (v, {"rule": r, "scorer": s, "gen_ai.request.model": m, "gen_ai.token.type": t})
                for (r, s, m, t), v in dict(self._runner.tokens).items()
            ],
            **self._assembly_readings(),
            "online_eval.eval_spans.scheduled": lambda: [(self._export_counts().scheduled, {})],
            "online_eval.eval_spans.exported": lambda: [(self._export_counts().exported, {})],
            "online_eval.eval_spans.dropped": lambda: [
                (v, {"reason": k}) for k, v in self._export_counts().dropped.items()
            ],
        }

    def _assembly_readings(self) -> dict[str, Callable[[], Iterable[tuple[float, dict[str, str]]]]]:
        def by(field: str, *labels: str) -> Callable[[], Iterable[tuple[float, dict[str, str]]]]:
            def read() -> Iterable[tuple[float, dict[str, str]]]:
                values: dict[Any, int] = self._assembly_stats()[field]
                out = []
                for key, v in values.items():
                    keys = key if isinstance(key, tuple) else (key,)
                    out.append((v, dict(zip(("rule", *labels), keys, strict=True))))
                return out

            return read

        return {
            "online_eval.assembly.spans": by("assembly_spans", "outcome"),
            "online_eval.assembly.late": by("assembly_late"),
            "online_eval.assembly.traces": by("assembly_traces", "reason"),
            "online_eval.assembly.evicted": by("assembly_evicted", "reason"),
            "online_eval.assembly.dropped": by("assembly_dropped_traces"),
            "online_eval.assembly.skipped_incomplete": by("assembly_skipped_incomplete"),
            "online_eval.assembly.lost": by("assembly_lost", "reason"),
            "online_eval.assembly.buffered.traces": by("assembly_buffered_traces"),
            "online_eval.assembly.buffered.bytes": by("assembly_buffered_bytes"),
            "online_eval.assembly.turns": by("assembly_turns", "outcome"),
            "online_eval.assembly.sessions": by("assembly_sessions", "reason"),
        }


def _call_if_alive(method: weakref.WeakMethod[Callable[[], None]]) -> None:
    bound = method()
    if bound is not None:
        bound()


def _default_size(payload: Any) -> int:
    return 1024


MAX_TURN_LINKS = 32
"""A session's eval span links to its last turn's anchor and to at most this many earlier
turns' (the latest ones); how many were left out is on the span."""


def _context(trace_id: int, span_id: int) -> SpanContext:
    return SpanContext(trace_id, span_id, False, TraceFlags(TraceFlags.SAMPLED))


def _eval_input(view: SpanView, rule: str) -> EvalInput:
    g = view.genai
    return EvalInput(g.input, g.output, view, rule, g.model)


def _link_to(view: SpanView) -> SpanContext:
    return SpanContext(view.trace_id, view.span_id, False, TraceFlags(TraceFlags.SAMPLED))
