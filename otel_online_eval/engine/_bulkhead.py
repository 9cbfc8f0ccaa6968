"""Bulkheads: each scorer's own share of the engine, so one that hangs holds only its own.

A :class:`Bulkhead` belongs to one scorer in one engine and lives on the engine's loop (no
locks: only the loop thread touches it, and threads hand their results back through the loop).

- **Slots.** At most ``limit`` calls hold a slot at once. A sync scorer runs on threads of its
  own, exactly ``limit`` of them, and a call keeps its slot until its thread returns, even
  after it timed out: a hung call costs that scorer a thread (``stuck``), never another
  scorer's, and since there are never more calls than threads, a call that got a slot starts
  at once. An async scorer's slot is given back when its call ends or is cancelled.
- **Waiting.** A call that finds no free slot waits up to ``wait_s`` for one, then is skipped
  as ``scorer busy``; when every slot is held by a call that already timed out it is skipped
  at once. Its timeout starts only when it has a slot.
- **Quarantine.** ``quarantine_after`` consecutive timeouts set the scorer aside for
  ``quarantine_s``: its calls are skipped with the reason, then one probe call is let through;
  a probe that times out sets it aside again, any other end lifts the quarantine.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import inspect
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from otel_online_eval._aio import bounded
from otel_online_eval._threads import name_os_thread

__all__ = ["Bulkhead"]

logger = logging.getLogger("otel_online_eval.engine")


class Bulkhead:
    """One scorer's slots, threads (sync scorers) and quarantine state.

    Args:
        name: the scorer's name (logs, metrics, thread names).
        owner: the object the bulkhead is for (kept, so that its id stays unique).
        sync: True for a sync scorer (it gets threads of its own).
        limit: calls holding a slot at once (threads, for a sync scorer).
        wait_s: how long a call may wait for a slot.
        quarantine_after: consecutive timeouts that quarantine the scorer (0: never).
        quarantine_s: how long a quarantine lasts before one probe call.
        loop: the engine's event loop.
    """

    def __init__(
        self,
        name: str,
        owner: object,
        *,
        sync: bool,
        limit: int,
        wait_s: float,
        quarantine_after: int,
        quarantine_s: float,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.name = name
        self.owner = owner
        self.sync = sync
        self.limit = limit
        self.wait_s = wait_s
        self.quarantine_after = quarantine_after
        self.quarantine_s = quarantine_s
        self._loop = loop
        self.active = 0  # calls holding a slot: running, or stuck after a timeout
        self.stuck = 0  # sync calls that timed out and still hold their thread
        self._waiters: deque[asyncio.Future[bool]] = deque()
        self._threads: ScorerThreads | None = None
        self.consecutive_timeouts = 0
        self.quarantined = False
        self.until = 0.0  # monotonic end of the quarantine
        self.probing = False
        self.times_quarantined = 0
        self._episode_told = False

    @property
    def idle(self) -> bool:
        """Nothing in flight and nothing remembered: safe to forget."""
        return not (self.active or self._waiters or self.quarantined or self.consecutive_timeouts)

    # -- quarantine ---------------------------------------------------------------------------

    def admit(self, now: float) -> tuple[str | None, bool]:
        """May a call go ahead? Returns (the reason to skip it, or None; whether it is the
        probe of a quarantine)."""
        if not self.quarantined:
            return None, False
        if now < self.until:
            return (
                f"quarantined after {self.quarantine_after} consecutive timeouts; "
                f"next try in {self.until - now:.1f}s",
                False,
            )
        if self.probing:
            return "quarantined; its probe call is running", False
        self.probing = True
        return None, True

    def timed_out(self, probe: bool) -> None:
        """Record a call that timed out; may quarantine the scorer (logged once an episode)."""
        self.consecutive_timeouts += 1
        if probe:
            self.probing = False
        elif self.quarantined or not self.quarantine_after:
            return
        elif self.consecutive_timeouts < self.quarantine_after:
            return
        self.quarantined = True
        self.until = time.monotonic() + self.quarantine_s
        self.times_quarantined += 1
        if not self._episode_told:
            self._episode_told = True
            logger.warning(
                "Scorer %r quarantined after %d consecutive timeouts: its calls are skipped "
                "for %gs, then one probe call is tried (a probe that times out starts another "
                "quarantine; counted in online_eval.scorer.quarantined).",
                self.name,
                self.consecutive_timeouts,
                self.quarantine_s,
            )

    def answered(self, probe: bool) -> None:
        """Record a call that ended in time (with a score, an error or a skip of its own)."""
        self.consecutive_timeouts = 0
        if probe:
            self.probing = False
            if self.quarantined:
                self.quarantined = False
                self._episode_told = False
                logger.info("Scorer %r answered its probe call; its quarantine is over.", self.name)

    def probe_not_run(self) -> None:
        """The probe did not get to run (no slot, shutdown): the next call probes instead."""
        self.probing = False

    # -- slots --------------------------------------------------------------------------------

    def try_acquire(self) -> bool:
        if self.active < self.limit:
            self.active += 1
            return True
        return False

    @property
    def hopeless(self) -> bool:
        """Every slot is held by a call that already timed out: waiting is pointless."""
        return self.stuck >= self.limit

    async def acquire(self) -> bool:
        """Wait up to ``wait_s`` for a slot; False when none came."""
        if self.try_acquire():
            return True
        if self.wait_s <= 0 or self.hopeless:
            return False
        waiter: asyncio.Future[bool] = self._loop.create_future()
        self._waiters.append(waiter)
        timer = self._loop.call_later(self.wait_s, self._expire, waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.result():
                self.release()  # handed a slot just as we were cancelled: pass it on
            raise
        finally:
            timer.cancel()

    def _expire(self, waiter: asyncio.Future[bool]) -> None:
        if not waiter.done():
            waiter.set_result(False)
            try:
                self._waiters.remove(waiter)
            except ValueError:
                pass

    def release(self) -> None:
        """Give a slot back: to the first waiter still waiting, else to the pool."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(True)  # the slot changes hands; ``active`` stays
                return
        self.active -= 1

    # -- calls --------------------------------------------------------------------------------

    async def call_sync(self, fn: Callable[[Any], Any], arg: Any, timeout_s: float) -> Any:
        """Run ``fn(arg)`` on this scorer's threads (the caller holds a slot) within
        ``timeout_s``; an awaitable it returns is awaited on the loop, in the same time."""
        if self._threads is None:
            self._threads = ScorerThreads(self.limit)
        ctx = contextvars.copy_context()  # carries the instrumentation suppression
        future = self._threads.submit(ctx.run, fn, arg)
        released = False

        async def body() -> Any:
            nonlocal released
            result = await asyncio.wrap_future(future)
            released = True
            self.release()
            while inspect.isawaitable(result):
                result = await result
            return result

        try:
            return await bounded(body(), timeout_s)
        finally:
            if not released:
                if future.done():  # cancelled before it started, or finished just now
                    self.release()
                else:  # the thread runs on: the slot is the scorer's loss until it returns
                    self.stuck += 1
                    future.add_done_callback(self._thread_returned)
                    if self.hopeless:  # no slot will come back soon: waiting is pointless
                        while self._waiters:
                            waiter = self._waiters.popleft()
                            if not waiter.done():
                                waiter.set_result(False)

    def _thread_returned(self, _: concurrent.futures.Future[Any]) -> None:
        # On the scorer's thread: hand the slot back on the loop.
        try:
            self._loop.call_soon_threadsafe(self._unstick)
        except RuntimeError:  # the loop is closed: the engine has shut down
            pass

    def _unstick(self) -> None:
        self.stuck -= 1
        self.release()

    async def call_async(self, fn: Callable[[Any], Any], arg: Any, timeout_s: float) -> Any:
        """Await ``fn(arg)`` on the loop (the caller holds a slot) within ``timeout_s``."""
        try:
            return await bounded(_resolve(fn, arg), timeout_s)
        finally:
            self.release()

    def shutdown(self) -> None:
        if self._threads is not None:
            self._threads.shutdown()


class ScorerThreads:
    """Up to ``limit`` daemon threads that run the calls given to them, one each.

    Not a ``ThreadPoolExecutor``: its threads are joined when the interpreter exits, so one
    scorer call that never returns would keep the application (or ``otel-online-eval test``)
    from ever exiting. The bulkhead never gives more calls at once than there are threads.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._work: queue.SimpleQueue[_Work | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._started = 0
        self._free = 0  # threads waiting for work and not yet promised any
        self._closed = False

    def submit(self, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("the scorer's threads have been shut down")
            if self._free:
                self._free -= 1
            elif self._started < self.limit:
                self._started += 1
                threading.Thread(target=self._run, name="online-eval-scorer", daemon=True).start()
            self._work.put((future, fn, args))
        return future

    def _run(self) -> None:
        name_os_thread()
        while True:
            work = self._work.get()
            if work is None:
                return
            future, fn, args = work
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args))
                except BaseException as exc:  # the caller sees it, whatever it is
                    future.set_exception(exc)
            del work, future, fn, args
            with self._lock:
                if self._closed:
                    return
                self._free += 1

    def shutdown(self) -> None:
        """Stop the idle threads; a call still running keeps its thread until it returns."""
        with self._lock:
            self._closed = True
            idle, self._free = self._free, 0
        for _ in range(idle):
            self._work.put(None)


_Work = tuple[concurrent.futures.Future[Any], Callable[..., Any], tuple[Any, ...]]


async def _resolve(fn: Callable[[Any], Any], arg: Any) -> Any:
    result = fn(arg)
    while inspect.isawaitable(result):
        result = await result
    return result
