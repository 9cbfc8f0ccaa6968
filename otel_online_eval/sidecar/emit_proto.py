"""Eval spans built straight as OTLP protobuf and shipped in batches.

The SDK's OTLP exporter first builds ``ReadableSpan``s and then encodes them, which costs tens
of microseconds per span in Python; at sidecar volumes that would be the bottleneck. This
emitter encodes the emitter's plans straight to protobuf (:func:`otel_online_eval.otlp.encode_span`,
checked against the SDK's encoder), batches them (by the scored spans' own resources, reused as
received), and hands serialized requests to a :class:`~otel_online_eval.sidecar.shipper.Shipper`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from opentelemetry.proto.resource.v1.resource_pb2 import Resource as ProtoResource

from otel_online_eval._spanplan import SpanPlan
from otel_online_eval._threads import name_os_thread
from otel_online_eval.emit import SCOPE, ExportCounts, PlanningEmitter, ScoreSink
from otel_online_eval.otlp import (
    ProtoSpanView,
    encode_attributes,
    encode_request,
    encode_resource,
    encode_scope,
    encode_span,
)
from otel_online_eval.sidecar.shipper import Shipper
from otel_online_eval.spanview import SpanView

# encode_attributes: importable from here as before (tests and benchmarks build requests).
__all__ = ["ProtoEmitter", "encode_attributes"]

logger = logging.getLogger(__name__)

_SCOPE = encode_scope(SCOPE)


class ProtoEmitter(PlanningEmitter):
    """Encodes eval spans to protobuf and ships them in batches, batching as the SDK's
    ``BatchSpanProcessor`` does in process (the defaults are its defaults; the sidecar passes
    the resolved ``export.batch`` / ``OTEL_BSP_*``: :func:`otel_online_eval.export.resolve_batch`):
    a full batch is shipped at once and the rest waits; otherwise what waits is shipped after
    ``schedule_delay_s``, on a flush, or at shutdown.

    Args:
        shipper: where serialized requests go.
        schedule_delay_s: the longest a span waits for its batch to fill.
        max_batch: spans per request at most.
        max_queue: spans waiting at most; beyond it new ones are dropped and counted in
            ``dropped_spans``.
        score_sinks: where scores go besides the eval spans (Phoenix annotations).
    """

    def __init__(
        self,
        shipper: Shipper,
        schedule_delay_s: float = 5.0,
        max_batch: int = 512,
        max_queue: int = 2048,
        score_sinks: Sequence[ScoreSink] = (),
    ) -> None:
        super().__init__(score_sinks)
        self.shipper = shipper
        self._delay = schedule_delay_s
        self._max_batch = max_batch
        self._max_queue = max_queue
        self._last_full_warning = -1e9
        self._pending: list[tuple[ProtoResource, bytes]] = []
        self._cond = threading.Condition()
        self._closed = False
        self._flush_requested = 0
        self._flushed = 0
        self.dropped_spans = 0
        self._flush_baseline = 0
        self._thread = threading.Thread(target=self._run, name="online-eval-emit", daemon=True)
        self._thread.start()

    def resource_of(self, view: SpanView) -> ProtoResource:
        if isinstance(view, ProtoSpanView):
            return view.proto_resource
        return encode_resource(view.sdk_resource())

    def _export(self, plans: Sequence[SpanPlan], resource: Any) -> None:
        encoded = [(resource, encode_span(plan)) for plan in plans]
        with self._cond:
            room = self._max_queue - len(self._pending)
            if room < len(encoded):
                self._drop_newest(encoded[max(0, room) :])
                encoded = encoded[: max(0, room)]
            self._pending.extend(encoded)
            if len(self._pending) >= self._max_batch:
                self._cond.notify()

    def _drop_newest(self, spans: Sequence[object]) -> None:
        # Under self._cond. The queue is full: the newest spans go, as the engine's own queue.
        self.dropped_spans += len(spans)
        now = time.monotonic()
        if now - self._last_full_warning >= 10.0:
            self._last_full_warning = now
            logger.warning(
                "Eval span export queue full (%d spans): dropped %d eval spans.",
                self._max_queue,
                len(spans),
            )

    def _run(self) -> None:
        name_os_thread()
        while True:
            with self._cond:
                deadline = time.monotonic() + self._delay
                timed_out = False
                while (
                    len(self._pending) < self._max_batch
                    and not self._closed
                    and self._flush_requested == self._flushed
                ):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        timed_out = True
                        break
                    self._cond.wait(left)
                wanted = self._flush_requested
                closed = self._closed
                if timed_out or closed or wanted != self._flushed:
                    batch, self._pending = self._pending, []
                else:  # a full batch: ship the full ones, the rest waits (as the SDK does)
                    cut = len(self._pending) // self._max_batch * self._max_batch
                    batch, self._pending = self._pending[:cut], self._pending[cut:]
            for start in range(0, len(batch), self._max_batch):
                self._ship(batch[start : start + self._max_batch])
            with self._cond:
                self._flushed = max(self._flushed, wanted)
                self._cond.notify_all()
            if closed and not batch:
                return

    def _ship(self, batch: Sequence[tuple[ProtoResource, bytes]]) -> None:
        by_resource: dict[int, tuple[ProtoResource, list[bytes]]] = {}
        for resource, span in batch:
            by_resource.setdefault(id(resource), (resource, []))[1].append(span)
        request = encode_request(by_resource.values(), _SCOPE)
        if not self.shipper.offer(request, len(batch)):
            self.dropped_spans += len(batch)
            logger.warning("Eval span export buffer full: dropped %d eval spans.", len(batch))

    def force_flush(self, timeout_millis: int) -> bool:
        deadline = time.monotonic() + timeout_millis / 1000
        with self._cond:
            self._flush_requested += 1
            ticket = self._flush_requested
            self._cond.notify_all()
            while self._flushed < ticket and self._thread.is_alive():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        if not self.shipper.flush(max(0.0, deadline - time.monotonic())):
            return False
        if not self._flush_sinks(max(0, int((deadline - time.monotonic()) * 1000))):
            return False
        # What was lost since the previous flush (refused, or given up on) makes it False.
        lost = self.dropped_spans + self.shipper.stats.dropped_spans
        with self._cond:
            kept = lost == self._flush_baseline
            self._flush_baseline = max(self._flush_baseline, lost)
        return kept

    def export_counts(self) -> ExportCounts:
        """Spans planned, delivered by the shipper, and lost: ``queue_full`` (this queue or
        the shipper's buffer was full), ``failed`` (the shipper gave up after its retries, or
        at shutdown)."""
        stats = self.shipper.stats
        dropped = {"queue_full": self.dropped_spans, "failed": stats.dropped_spans}
        return ExportCounts(self.scheduled, stats.sent_spans, dropped)

    def shutdown(self, timeout_millis: int = 10000) -> None:
        """Ship what is pending within ``timeout_millis``; what is left is counted as dropped."""
        end = time.monotonic() + timeout_millis / 1000
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(max(0.0, end - time.monotonic()))
        self.shipper.shutdown(max(0.0, end - time.monotonic()))
        self._shutdown_sinks(max(0, int((end - time.monotonic()) * 1000)))
