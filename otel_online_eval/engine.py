"""The evaluation engine: a bounded queue, workers on a background event loop, and limits.

The front doors (the in-process span processor, the sidecar) do only this on their own thread:
find the span's :class:`Route` (the rules whose ``apply_to`` picks a span of that name and parent
kind, cached), bump its counter, compute the trace's sampling hash once, and, when some rule of
the route may sample it, :meth:`Engine.submit` it. ``submit`` appends to a bounded deque (full:
the span is dropped and counted, the caller never waits). It wakes the loop only when the loop
sleeps or a backlog builds up: while spans keep coming, the loop polls the queue every 5 ms, so
the application's thread does not pay a wake-up (a syscall) per span.

On the loop each span is turned into a :class:`~otel_online_eval.spanview.SpanView`, every rule
of its route decides (sampling, filter), and each matching rule's scorers run concurrently:
coroutine scorers on the loop, sync scorers in a thread pool, each under its timeout. The
results go to the :class:`~otel_online_eval.emit.Emitter`.

:meth:`Engine.force_flush` puts a marker in the queue and returns once everything enqueued
before it has been handed to the exporter and the exporter has flushed.
"""

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
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, attach, set_value
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import SpanContext, TraceFlags

from otel_online_eval._aio import bounded
from otel_online_eval._errors import ScorerError, ScorerSkipped
from otel_online_eval._threads import name_os_thread
from otel_online_eval.config import EngineConfig
from otel_online_eval.emit import EvalResult, EvalSink, ScorerRun, Target
from otel_online_eval.metrics import Tally, register_metrics
from otel_online_eval.rules import Rule, ScorerSpec, ScorerUse
from otel_online_eval.sampling import FULL
from otel_online_eval.scorers.base import EvalInput, Score, is_async_scorer, to_score
from otel_online_eval.spanview import SpanView

__all__ = ["Engine", "EngineStats", "Route", "Router"]

logger = logging.getLogger(__name__)
T = TypeVar("T")

_ROUTE_CACHE_LIMIT = 4096
_INLINE_BATCH = 256  # inline spans evaluated per turn of the loop before yielding
_TICK_S = 0.005  # how often the loop polls the queue while spans keep coming
_IDLE_TICKS = 200  # polls finding nothing (1 s) before it sleeps until woken
_WAKE_AT = 64  # a backlog this long wakes the loop at once even while it polls


class Route:
    """The rules that select spans of one (name, parent kind), and a hot-path shortcut.

    ``bound`` is the largest sampling bound among the route's rules that use the shared hash;
    a span whose hash is at or above it cannot be sampled by any of them. Rules with their own
    seed or a callable sampler make it FULL (they decide on the workers).
    """

    __slots__ = ("bound", "inline", "rules", "seen")

    def __init__(self, rules: tuple[Rule, ...]) -> None:
        self.rules = rules
        self.seen = Tally()
        self.inline = all(rule.inline for rule in rules)
        bound = 0
        for rule in rules:
            bound = max(bound, FULL if rule.salt or rule.sampling_is_callable else rule.bound)
        self.bound = bound


class Router:
    """Finds the route of a span by name and parent kind; caches up to 4096 names per kind."""

    def __init__(self, rules: Sequence[Rule]) -> None:
        self.rules = tuple(rules)
        self._interned: dict[tuple[int, ...], Route] = {}
        self.cache: tuple[dict[str, Route], dict[str, Route], dict[str, Route]] = ({}, {}, {})

    def route(self, name: str, parent: int) -> Route:
        """The route for a span (slow path; the caller tries ``cache[parent]`` first)."""
        key = tuple(i for i, r in enumerate(self.rules) if r.apply_to.selects(name, parent))
        route = self._interned.get(key)
        if route is None:
            route = self._interned.setdefault(key, Route(tuple(self.rules[i] for i in key)))
        cache = self.cache[parent]
        if len(cache) < _ROUTE_CACHE_LIMIT:
            cache[name] = route
        return route

    def routes(self) -> list[Route]:
        return list(self._interned.values())


@dataclass
class EngineStats:
    """Counts since the engine started, per rule where it applies."""

    seen: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    queue_size: int = 0
    selected: dict[str, int] = field(default_factory=dict)
    sampled: dict[str, int] = field(default_factory=dict)
    filtered_out: dict[str, int] = field(default_factory=dict)
    evals: dict[str, int] = field(default_factory=dict)
    scores: dict[tuple[str, str, str], int] = field(default_factory=dict)
    tokens: dict[tuple[str, str, str, str], int] = field(default_factory=dict)


class _Marker:
    """A flush request travelling through the queue."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = threading.Event()


class ScorerTimeoutError(ScorerError):
    """A scorer call that did not finish within its timeout."""


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
    """

    def __init__(
        self,
        rules: Sequence[Rule],
        emitter: EvalSink,
        make_view: Callable[[Any], SpanView | None],
        config: EngineConfig | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        self.config = config or EngineConfig()
        self.router = Router(rules)
        self.emitter = emitter
        self._make_view = make_view
        self._max_queue = self.config.queue_size
        self._closed = False
        self._shutdown_done = False
        self._dropped = {"queue_full": Tally(), "shutdown": Tally(), "error": Tally()}
        self._sampled: dict[str, int] = {}
        self._filtered_out: dict[str, int] = {}
        self._evals: dict[str, int] = {}
        self._scores: dict[tuple[str, str, str], int] = {}
        self._tokens: dict[tuple[str, str, str, str], int] = {}
        self._is_async: dict[int, bool] = {}
        self._last_log: dict[str, float] = {}
        self._start_workers()
        self._record_duration = register_metrics(self._readings(), meter_provider)
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
        self._tasks: set[asyncio.Task[None]] = set()
        self._direct: set[concurrent.futures.Future[Any]] = set()
        self._pool = concurrent.futures.ThreadPoolExecutor(
            self.config.threads, thread_name_prefix="online-eval-scorer", initializer=name_os_thread
        )
        self._loop = asyncio.new_event_loop()
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

    def _after_fork_in_child(self) -> None:
        # The parent's threads do not exist in the child (gunicorn --preload, multiprocessing):
        # start our own. What the parent had queued is the parent's to finish.
        if not self._closed:
            self._start_workers()

    # -- the caller's side -------------------------------------------------------------------

    def submit(self, payload: Any, route: Route, hash_: int) -> None:
        """Queue a span for evaluation; never blocks, never raises.

        Args:
            payload: what ``make_view`` turns into a SpanView.
            route: the span's route.
            hash_: the span's trace hash with the shared seed.
        """
        if self._closed:
            self._dropped["shutdown"].add()
            return
        queue = self._queue
        if len(queue) >= self._max_queue:
            self._dropped["queue_full"].add()
            self._log_limited(
                "queue_full", "Evaluation queue full (%d), dropping a span.", self._max_queue
            )
            return
        queue.append((payload, route, hash_))
        # While the loop polls the queue (it does so every few ms once it has work), a
        # wake-up (a syscall) is only worth it when a backlog starts; a longer one means the
        # loop is busy with it already. (Concurrent submits may step over the mark: then the
        # next poll picks the queue up.)
        if (not self._ticking or len(queue) == _WAKE_AT) and not self._wake_pending:
            self._wake_pending = True
            try:
                self._loop.call_soon_threadsafe(self._wake, context=self._ctx.copy())
            except RuntimeError:  # the loop closed under a racing shutdown
                self._dropped["shutdown"].add()

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

        Returns:
            False when the timeout passed first.
        """
        deadline = time.monotonic() + timeout_millis / 1000
        if not self._loop.is_closed() and self._thread.is_alive():
            marker = _Marker()
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
            if pending:
                return False
        remaining = int(max(0.0, deadline - time.monotonic()) * 1000)
        return self.emitter.force_flush(remaining)

    def shutdown(self, timeout_millis: int | None = None) -> bool:
        """Stop accepting spans, finish what is queued within the timeout, flush, stop.

        Safe to call twice. Work not finished by the deadline is cancelled and counted as
        dropped with reason ``shutdown``.

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
        flushed = self.force_flush(timeout_millis)
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._cancel_all, context=self._ctx.copy())
            self._thread.join(5)
        self._pool.shutdown(wait=False, cancel_futures=True)
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
                self._dropped["shutdown"].add()
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
        budget = _INLINE_BATCH
        while queue:
            head = queue[0]
            if isinstance(head, _Marker):
                queue.popleft()
                self._start_task(self._flush_marker(head, set(self._tasks)))
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
                if self._queue:
                    self._pump()
            if t.cancelled():
                if counts_inflight:
                    self._dropped["shutdown"].add()
                return
            exc = t.exception()
            if exc is not None and counts_inflight:
                self._dropped["error"].add()
                self._log_limited("engine_error", "Evaluation failed: %r", exc)

        task.add_done_callback(done)

    async def _flush_marker(self, marker: _Marker, before: set[asyncio.Task[None]]) -> None:
        if before:
            await asyncio.wait(before)
        marker.done.set()

    def _process_inline(self, item: Item) -> None:
        """Evaluate a span whose rules all decide and score without awaiting anything."""
        try:
            payload, route, hash_ = item
            view = self._make_view(payload)
            if view is None:  # not to be evaluated (an eval span, in the sidecar)
                return
            for rule in route.rules:
                rule_hash = self._decide(rule, view, hash_)
                if rule_hash is not None:
                    start = time.time_ns()
                    inp = _eval_input(view, rule.name)
                    runs, sampled_out = [], []
                    for use in rule.scorers:
                        if rule_hash >= rule.scorer_bound(use):
                            sampled_out.append(use.name)
                            self._count_score(rule.name, use.name, "sampled_out")
                        else:
                            runs.append(self._run_inline(rule.name, use, inp))
                    self._emit_rule(view, rule, runs, sampled_out, start)
        except Exception as exc:
            self._dropped["error"].add()
            self._log_limited("engine_error", "Evaluation failed: %r", exc)

    def _decide(self, rule: Rule, view: SpanView, hash_: int) -> int | None:
        """Rate sampling and filter; the rule's hash when the span is to be scored."""
        rule_hash = hash_ if not rule.salt else rule.hash(view.trace_id)
        if rule_hash >= rule.bound:
            return None
        self._sampled[rule.name] = self._sampled.get(rule.name, 0) + 1
        if not self._filter_passes(rule, view):
            return None
        return rule_hash

    def _filter_passes(self, rule: Rule, view: SpanView) -> bool:
        if rule.filter is None or rule.filter(view):
            return True
        self._filtered_out[rule.name] = self._filtered_out.get(rule.name, 0) + 1
        return False

    async def _process(self, item: Item) -> None:
        payload, route, hash_ = item
        view = self._make_view(payload)
        if view is None:
            return
        evals = []
        for rule in route.rules:
            if rule.sampling_is_callable:
                if not await self._callable_sample(rule, view):
                    continue
                self._sampled[rule.name] = self._sampled.get(rule.name, 0) + 1
                if not self._filter_passes(rule, view):
                    continue
                rule_hash: int | None = rule.hash(view.trace_id)
            else:
                rule_hash = self._decide(rule, view, hash_)
            if rule_hash is not None:
                evals.append(self._evaluate_span(view, rule, rule_hash))
        if len(evals) == 1:
            await evals[0]  # in this task: gather would make a task for it
        elif evals:
            await asyncio.gather(*evals)

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
        start = time.time_ns()
        runs, sampled_out = await self._run_all(
            rule.name, rule.scorers, _eval_input(view, rule.name), rule, rule_hash
        )
        self._emit_rule(view, rule, runs, sampled_out, start)

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
        self._evals[rule.name] = self._evals.get(rule.name, 0) + 1

    async def _run_all(
        self, name: str, uses: Sequence[ScorerUse], inp: EvalInput, rule: Rule | None, hash_: int
    ) -> tuple[list[ScorerRun], list[str]]:
        """Run the scorers that sampling keeps: inline ones now, the rest concurrently."""
        runs: list[ScorerRun | None] = []
        waiting: list[Awaitable[ScorerRun]] = []
        sampled_out: list[str] = []
        for use in uses:
            if rule is not None and hash_ >= rule.scorer_bound(use):
                sampled_out.append(use.name)
                self._count_score(name, use.name, "sampled_out")
            elif use.spec.inline:
                runs.append(self._run_inline(name, use, inp))
            else:
                runs.append(None)
                waiting.append(self._run_scorer(name, use, inp))
        if len(waiting) == 1:
            done = iter((await waiting[0],))
            return [r if r is not None else next(done) for r in runs], sampled_out
        if waiting:
            done = iter(await asyncio.gather(*waiting))
            return [r if r is not None else next(done) for r in runs], sampled_out
        return [r for r in runs if r is not None], sampled_out

    async def _evaluate(
        self, name: str, inp: EvalInput, uses: Sequence[ScorerUse], target: Target
    ) -> EvalResult:
        start = time.time_ns()
        runs, sampled_out = await self._run_all(name, uses, inp, None, 0)
        return self.emitter.emit(target, name, runs, sampled_out, start, time.time_ns())

    def _run_inline(self, rule: str, use: ScorerUse, inp: EvalInput) -> ScorerRun:
        spec = use.spec
        start, started = time.time_ns(), time.monotonic()
        try:
            return self._finish(
                rule, use, to_score(spec.scorer.score(inp), spec.scale), None, start, started
            )
        except ScorerSkipped as exc:
            return self._finish(rule, use, None, None, start, started, skipped=str(exc))
        except Exception as exc:
            return self._finish(rule, use, None, exc, start, started)

    async def _run_scorer(self, rule: str, use: ScorerUse, inp: EvalInput) -> ScorerRun:
        spec = use.spec
        start, started = time.time_ns(), time.monotonic()
        try:
            result = await bounded(self._call(spec, inp), spec.timeout_s)
            return self._finish(rule, use, to_score(result, spec.scale), None, start, started)
        except (asyncio.TimeoutError, TimeoutError):
            error = ScorerTimeoutError(f"scorer {spec.name!r} timed out after {spec.timeout_s:g}s")
            return self._finish(rule, use, None, error, start, started, timed_out=True)
        except ScorerSkipped as exc:
            return self._finish(rule, use, None, None, start, started, skipped=str(exc))
        except Exception as exc:
            return self._finish(rule, use, None, exc, start, started)

    def _finish(
        self,
        rule: str,
        use: ScorerUse,
        score: Score | None,
        error: BaseException | None,
        start: int,
        started: float,
        timed_out: bool = False,
        skipped: str | None = None,
    ) -> ScorerRun:
        if skipped is not None:
            outcome = "skipped"
        else:
            outcome = "ok" if error is None else ("timeout" if timed_out else "error")
        self._count_score(rule, use.name, outcome)
        if score is not None and score.metadata:
            self._count_tokens(rule, use.name, score.metadata)
        self._record_duration(time.monotonic() - started, {"rule": rule, "scorer": use.name})
        if error is not None:
            self._log_limited(
                f"scorer:{use.name}", "Scorer %r failed in rule %r: %s", use.name, rule, error
            )
        return ScorerRun(
            use.name, score, error, start, time.time_ns(), use.sampling, timed_out, skipped
        )

    async def _call(self, spec: ScorerSpec, inp: EvalInput) -> Any:
        key = id(spec.scorer)
        is_async = self._is_async.get(key)
        if is_async is None:
            is_async = self._is_async[key] = is_async_scorer(spec.scorer)
        result = spec.scorer.score(inp) if is_async else await self._in_pool(spec.scorer.score, inp)
        while inspect.isawaitable(result):
            result = await result
        return result

    def _in_pool(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        ctx = contextvars.copy_context()  # carries the instrumentation suppression
        return self._loop.run_in_executor(self._pool, ctx.run, fn, *args)

    # -- bookkeeping -------------------------------------------------------------------------

    def _count_tokens(self, rule: str, scorer: str, metadata: Mapping[str, Any]) -> None:
        # A judge reports its usage as score metadata under the GenAI names.
        model = str(metadata.get("gen_ai.request.model", ""))
        for kind in ("input", "output"):
            n = metadata.get(f"gen_ai.usage.{kind}_tokens")
            if isinstance(n, int) and not isinstance(n, bool) and n > 0:
                key = (rule, scorer, model, kind)
                self._tokens[key] = self._tokens.get(key, 0) + n

    def _count_score(self, rule: str, scorer: str, outcome: str) -> None:
        key = (rule, scorer, outcome)
        self._scores[key] = self._scores.get(key, 0) + 1

    def _log_limited(self, key: str, msg: str, *args: Any, exc_info: bool = False) -> None:
        now = time.monotonic()
        if now - self._last_log.get(key, -1e9) >= 10.0:
            self._last_log[key] = now
            logger.warning(msg, *args, exc_info=exc_info)

    def stats(self) -> EngineStats:
        """A snapshot of the counts (for tests, tools and the metrics callbacks)."""
        selected: dict[str, int] = {r.name: 0 for r in self.router.rules}
        seen = 0
        for route in self.router.routes():
            n = route.seen.value
            seen += n
            for rule in route.rules:
                selected[rule.name] += n
        return EngineStats(
            seen=seen,
            dropped={k: t.value for k, t in self._dropped.items()},
            queue_size=sum(1 for i in list(self._queue) if not isinstance(i, _Marker)),
            selected=selected,
            # Every rule appears, at 0 when nothing happened yet: a zero is not a gap.
            sampled={r: self._sampled.get(r, 0) for r in selected},
            filtered_out={r: self._filtered_out.get(r, 0) for r in selected},
            evals={r: self._evals.get(r, 0) for r in selected},
            scores=dict(self._scores),
            tokens=dict(self._tokens),
        )

    def _readings(self) -> dict[str, Callable[[], Iterable[tuple[float, dict[str, str]]]]]:
        def per_rule(attr: str) -> Callable[[], Iterable[tuple[float, dict[str, str]]]]:
            return lambda: [(v, {"rule": k}) for k, v in getattr(self.stats(), attr).items()]

        return {
            "online_eval.spans.seen": lambda: [(self.stats().seen, {})],
            "online_eval.spans.selected": per_rule("selected"),
            "online_eval.spans.sampled": per_rule("sampled"),
            "online_eval.spans.filtered_out": per_rule("filtered_out"),
            "online_eval.spans.dropped": lambda: [
                (t.value, {"reason": k}) for k, t in self._dropped.items()
            ],
            "online_eval.evals": per_rule("evals"),
            "online_eval.scores": lambda: [
                (v, {"rule": r, "scorer": s, "outcome": o})
                for (r, s, o), v in dict(self._scores).items()
            ],
            "online_eval.queue.size": lambda: [(len(self._queue), {})],
            "online_eval.judge.tokens": lambda: [
                (v, {"rule": r, "scorer": s, "gen_ai.request.model": m, "gen_ai.token.type": t})
                for (r, s, m, t), v in dict(self._tokens).items()
            ],
        }


def _call_if_alive(method: weakref.WeakMethod[Callable[[], None]]) -> None:
    bound = method()
    if bound is not None:
        bound()


def _eval_input(view: SpanView, rule: str) -> EvalInput:
    g = view.genai
    return EvalInput(g.input, g.output, view, rule, g.model)


def _link_to(view: SpanView) -> SpanContext:
    return SpanContext(view.trace_id, view.span_id, False, TraceFlags(TraceFlags.SAMPLED))
