"""The batching span processor in front of the in-process eval-span exporter.

The SDK's ``BatchSpanProcessor`` does not say what became of a span: its queue drops the oldest
span when full and only logs it, an exporter's failure is logged and forgotten, and
``force_flush`` exports in the caller's thread, ignores its timeout and returns True whatever
happened (with an unreachable OTLP backend it blocked for the exporter's whole retry time and
said True). :class:`ExportBatcher` batches the same way (size, delay, queue bound; the
``OTEL_BSP_*`` defaults) and keeps the books:

- every span handed to it is exported, or dropped with a reason: ``queue_full`` (the newest
  span is refused, as the engine's own queue does), ``failed`` (the exporter said so or raised),
  ``shutdown`` (left when the time to shut down ran out);
- ``force_flush(timeout)`` waits (never past the timeout) until every span handed over before
  the call has been through the exporter, and returns False when one of them, or any span since
  the previous flush, was not exported.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, Context, attach, detach, set_value
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from otel_online_eval._threads import name_os_thread

if TYPE_CHECKING:
    from otel_online_eval.export import ExportConfig

__all__ = ["EXPORT_DROP_REASONS", "ExportBatcher", "build_batcher"]

logger = logging.getLogger(__name__)

EXPORT_DROP_REASONS = ("queue_full", "failed", "shutdown")


class ExportBatcher(SpanProcessor):
    """Batches ended spans to a ``SpanExporter`` and counts what became of each.

    Args:
        exporter: where the spans go.
        max_queue_size: spans held while waiting; beyond it new spans are dropped.
        schedule_delay_ms: the longest a span waits for its batch to fill.
        max_export_batch_size: spans per ``export`` call.
    """

    def __init__(
        self,
        exporter: SpanExporter,
        max_queue_size: int = 2048,
        schedule_delay_ms: float = 5000,
        max_export_batch_size: int = 512,
    ) -> None:
        self.exporter = exporter
        self.max_queue_size = max_queue_size
        self.max_export_batch_size = max_export_batch_size
        self._delay_s = schedule_delay_ms / 1000
        self.exported = 0
        self.dropped = dict.fromkeys(EXPORT_DROP_REASONS, 0)
        self._flush_baseline = 0
        self._last_warning = -1e9
        self._closed = False
        self._start()
        if hasattr(os, "register_at_fork"):
            restart = weakref.WeakMethod(self._start)
            os.register_at_fork(after_in_child=lambda: _call_if_alive(restart))

    def _start(self) -> None:
        # Also after a fork: the parent's thread does not exist in the child, and what the
        # parent had queued is the parent's to export.
        self._queue: deque[ReadableSpan] = deque()
        self._accepted = 0  # spans taken into the queue, ever
        self._taken = 0  # spans the worker took out of it (in order)
        self._settled = 0  # spans whose export call has returned
        self._flush_to = 0  # export without waiting until ``_taken`` reaches this
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="online-eval-export", daemon=True)
        self._thread.start()

    @property
    def lost(self) -> int:
        """Spans handed over that will not be exported, for every reason."""
        return sum(self.dropped.values())

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        with self._cond:
            if self._closed:
                self.dropped["shutdown"] += 1
                return
            if len(self._queue) >= self.max_queue_size:
                self.dropped["queue_full"] += 1
                self._warn(
                    "Eval span export queue full (%d); dropping a span.", self.max_queue_size
                )
                return
            self._queue.append(span)
            self._accepted += 1
            if len(self._queue) >= self.max_export_batch_size:
                self._cond.notify_all()

    def _run(self) -> None:
        name_os_thread()
        while True:
            with self._cond:
                deadline = time.monotonic() + self._delay_s
                while (
                    len(self._queue) < self.max_export_batch_size
                    and self._flush_to <= self._taken
                    and not self._closed
                ):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                if not self._queue:
                    if self._closed:
                        return
                    continue
                count = min(len(self._queue), self.max_export_batch_size)
                batch = [self._queue.popleft() for _ in range(count)]
                self._taken += count
            ok = self._export(batch)
            with self._cond:
                self._settled += count
                if ok:
                    self.exported += count
                else:
                    self.dropped["failed"] += count
                self._cond.notify_all()

    def _export(self, batch: list[ReadableSpan]) -> bool:
        token = attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
        try:
            result = self.exporter.export(batch)
        except Exception:
            logger.exception("Eval span export raised; %d spans lost.", len(batch))
            return False
        finally:
            detach(token)
        if result is not SpanExportResult.SUCCESS:
            with self._cond:
                self._warn("Eval span export failed (%s); %d spans lost.", result.name, len(batch))
            return False
        return True

    def _warn(self, msg: str, *args: object) -> None:
        # Under self._cond.
        now = time.monotonic()
        if now - self._last_warning >= 10.0:
            self._last_warning = now
            logger.warning(msg, *args)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Export everything handed over so far, waiting at most ``timeout_millis``.

        Returns:
            False on timeout, or when a span handed over before the call (or since the
            previous flush) was not exported.
        """
        deadline = time.monotonic() + timeout_millis / 1000
        with self._cond:
            target = self._accepted
            self._flush_to = max(self._flush_to, target)
            self._cond.notify_all()
            while self._settled < target:
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    return False
                self._cond.wait(left)
            lost = self.lost
            ok = lost == self._flush_baseline
            self._flush_baseline = max(self._flush_baseline, lost)
            return ok

    def shutdown(self, timeout_millis: int = 30000) -> None:
        """Export what is queued within ``timeout_millis``, count the rest as dropped, and shut
        the exporter down; safe to call twice."""
        with self._cond:
            if self._closed:
                return
        deadline = time.monotonic() + timeout_millis / 1000
        self.force_flush(timeout_millis)
        with self._cond:
            self._closed = True
            self.dropped["shutdown"] += len(self._queue)
            self._queue.clear()
            self._cond.notify_all()
        self._thread.join(max(0.0, deadline - time.monotonic()))
        self.exporter.shutdown()


def build_batcher(cfg: ExportConfig | None, exporter: SpanExporter | None = None) -> ExportBatcher:
    """An :class:`ExportBatcher` with the resolved batching (``cfg.batch``, then ``OTEL_BSP_*``,
    then the SDK's defaults: :func:`~otel_online_eval.export.resolve_batch`) in front of
    ``exporter`` (built from ``cfg`` when None).

    Raises:
        ConfigError: as the exporter's build, or the batching's resolution.
    """
    from otel_online_eval.export import ExportConfig, build_exporter, resolve_batch

    cfg = ExportConfig() if cfg is None else cfg
    batch = resolve_batch(cfg.batch)
    return ExportBatcher(
        exporter or build_exporter(cfg),
        batch.max_queue_size,
        batch.schedule_delay_ms,
        batch.max_export_batch_size,
    )


def _call_if_alive(method: weakref.WeakMethod[Callable[[], None]]) -> None:
    bound = method()
    if bound is not None:
        bound()
