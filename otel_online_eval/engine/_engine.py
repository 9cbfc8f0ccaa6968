"""The :class:`Engine`: a bounded queue, a background event loop, scorers behind bulkheads."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import logging
import os
import threading
import time
import weakref
from collections import Counter, deque
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, attach, set_value
from opentelemetry.metrics import MeterProvider

from otel_online_eval._threads import name_os_thread
from otel_online_eval.assembly import Turn
from otel_online_eval.emit import EvalResult, EvalSink, Target
from otel_online_eval.engine._config import EngineConfig
from otel_online_eval.engine._core import Item, Marker
from otel_online_eval.engine._counts import RuleCounts
from otel_online_eval.engine._joins import RECORD_WAIT_S, JoinStore
from otel_online_eval.engine._routing import Route, Router
from otel_online_eval.engine._running import ScorerRunner
from otel_online_eval.engine._spans import SpanRules
from otel_online_eval.engine._stats import Readings
from otel_online_eval.engine._traces import (
    TraceRules,
    TraceUnit,
)
from otel_online_eval.engine._units import UnitRules
from otel_online_eval.metrics import register_metrics
from otel_online_eval.rules import Rule, ScorerUse
from otel_online_eval.scorers.base import (
    EvalInput,
)
from otel_online_eval.spanview import EventView, SpanView

__all__ = ["Engine", "EvalFuture"]

logger = logging.getLogger("otel_online_eval.engine")
T = TypeVar("T")

_INLINE_BATCH = 256  # inline spans evaluated per turn of the loop before yielding
_TICK_S = 0.005  # how often the loop polls the queue while spans keep coming
_IDLE_TICKS = 200  # polls finding nothing (1 s) before it sleeps until woken
_WAKE_AT = 64  # a backlog this long wakes the loop at once even while it polls


class EvalFuture(concurrent.futures.Future[T], Generic[T]):
    """The result of a direct evaluation: wait with ``.result(timeout)`` or ``await`` it."""

    def __await__(self) -> Any:
        return asyncio.wrap_future(self).__await__()


class Engine(SpanRules, UnitRules, Readings):
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
        join_s: how long a span with no content waits for its log records (records given
            to :meth:`submit_records`), and at least how long a record waits for its span.
        expect_records: spans wait from the start (the sidecar, whose logs receiver is
            always on); otherwise only once a record was submitted (the processor with its
            ``log_processor`` in use): without log records there is nothing to wait for.
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
        join_s: float = 2.0,
        expect_records: bool = False,
    ) -> None:
        self.config = config or EngineConfig()
        self._join_s = join_s
        self._expects_records = expect_records
        self.router = Router(rules)
        self.emitter = emitter
        self._make_view = make_view
        self._trace_id_of = trace_id_of
        self._size_of = size_of or _default_size
        self._local_roots = local_roots
        self._traces = self._trace_rules()
        self._max_queue = self.config.queue_size
        self._closed = False
        self.turn_owner: Callable[[Rule, str, Turn], bool] | None = None
        """Set by the sidecar with --workers: hands a session rule's turn to the worker that
        holds its conversation (True), or leaves it here (False)."""
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
        # Records wait longer than spans do: in the sidecar a span comes after its exporter's
        # batch delay (the SDK's default is 5 s for spans, 1 s for log records).
        self._joins = JoinStore(max(self._join_s, RECORD_WAIT_S))
        self._parked: dict[tuple[int, int], tuple[Item, SpanView, asyncio.TimerHandle]] = {}
        self._waits: Counter[str] = Counter()
        self._queue: deque[Item | Marker] = deque()
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

    def submit_record(self, event: EventView, trace_id: int, span_id: int) -> None:
        """Queue a log record that belongs to span ``span_id`` of ``trace_id`` (an event in
        OpenTelemetry's sense: the GenAI instrumentations' prompts and answers) to be joined
        to that span; never blocks, never raises.
        """
        self.submit_records(((event, trace_id, span_id),))

    def submit_records(self, records: Sequence[tuple[EventView, int, int]]) -> None:
        """:meth:`submit_record` for each (event, trace id, span id), in one go (a request's
        worth). Records of traces that no rule may sample are only counted."""
        self._expects_records = True
        keep = [r for r in records if self._may_sample(r[1])]
        self._joins.offer_many(keep, len(records) - len(keep))
        parked = self._parked
        if not parked or not keep:
            return
        # A parked span waits for these: wake it (after the offer, see SpanRules._parks).
        woken = {(t, s) for _, t, s in keep if (t, s) in parked}
        if woken:
            try:
                self._loop.call_soon_threadsafe(self._records_came, woken, context=self._ctx.copy())
            except RuntimeError:  # the loop closed under a racing shutdown
                pass

    def _may_sample(self, trace_id: int) -> bool:
        for rule in self.router.rules:
            if rule.sampling_is_callable or rule.is_session:
                return True
            if rule.hash(trace_id) < rule.bound:
                return True
        return False

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

    async def _evaluate(
        self, name: str, inp: EvalInput, uses: Sequence[ScorerUse], target: Target
    ) -> EvalResult:
        start = time.time_ns()
        runs, sampled_out = await self._runner.run_all(name, uses, inp, None, 0)
        return self.emitter.emit(target, name, runs, sampled_out, start, time.time_ns())

    def receive_turn(self, rule_name: str, key: str, turn: Turn) -> bool:
        """A turn another worker assembled, for the conversation this one holds (any thread).

        Returns:
            False when there is no such session rule here, or the engine is shut down.
        """
        rule = self.router.rules_by_name.get(rule_name)
        if rule is None or not rule.is_session or self._closed:
            return False
        try:
            self._loop.call_soon_threadsafe(
                self._received_turn, rule, key, turn, context=self._ctx.copy()
            )
        except RuntimeError:  # the loop closed under a racing shutdown
            return False
        return True

    def _received_turn(self, rule: Rule, key: str, turn: Turn) -> None:
        self._traces.add_turn(rule, key, turn)
        self._traces.arm()

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
            marker = Marker(drain)
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
        for parked, _, timer in self._parked.values():  # none after the drain's flush
            timer.cancel()
            self._drop_queued(*parked, "shutdown")
        self._parked.clear()
        while self._queue:
            item = self._queue.popleft()
            if isinstance(item, Marker):
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
            if isinstance(head, Marker):
                queue.popleft()
                if self._traces:  # what is due by now (all of it at shutdown) goes first
                    if head.drain is None:
                        self._traces.release_due()
                    else:
                        self._traces.drain(end_of_input=head.drain == "end_of_input")
                self._pump_traces(limit)
                self._unpark_all()
                self._start_task(self._flush_marker(head, set(self._tasks), self._units_released))
            elif head[1].inline:
                if not budget:  # let timers and other callbacks run, then go on
                    self._loop.call_soon(self._pump)
                    return
                budget -= 1
                queue.popleft()
                self._start(head)
            elif self._inflight < limit:
                queue.popleft()
                self._start(head)
            else:
                return  # a finishing evaluation pumps again

    async def _flush_marker(
        self, marker: Marker, before: set[asyncio.Task[None]], units: int
    ) -> None:
        if before:
            await asyncio.wait(before)
        while self._units_finished < units:  # traces due before the flush, still waiting
            await asyncio.sleep(_TICK_S)
        marker.done.set()

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

    def _lost(self) -> int:
        traces = sum(t.value for c in self._traces.counts.values() for t in c.lost.values())
        return traces + sum(c.lost() for c in list(self._counts.values()))


def _call_if_alive(method: weakref.WeakMethod[Callable[[], None]]) -> None:
    bound = method()
    if bound is not None:
        bound()


def _default_size(payload: Any) -> int:
    return 1024
