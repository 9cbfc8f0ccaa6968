"""Eval spans built straight as OTLP protobuf and shipped in batches.

The SDK's OTLP exporter first builds ``ReadableSpan``s and then encodes them, which costs tens
of microseconds per span in Python; at sidecar volumes that would be the bottleneck. This
emitter builds the protobuf ``Span`` messages directly from the emitter's plans, batches them
(by the scored spans' own resources, reused as received), and hands serialized requests to a
:class:`~otel_online_eval.sidecar.shipper.Shipper`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    ArrayValue,
    InstrumentationScope,
    KeyValue,
    KeyValueList,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource as ProtoResource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status
from opentelemetry.sdk.resources import Resource

from otel_online_eval.emit import SCOPE, PlanningEmitter, SpanPlan
from otel_online_eval.sidecar.protoview import ProtoSpanView
from otel_online_eval.sidecar.shipper import Shipper
from otel_online_eval.spanview import SpanView

__all__ = ["ProtoEmitter", "encode_attributes"]

logger = logging.getLogger(__name__)

_SCOPE = InstrumentationScope(name=SCOPE.name, version=SCOPE.version or "")
_STATUS = {"UNSET": Status.STATUS_CODE_UNSET, "ERROR": Status.STATUS_CODE_ERROR}
_LINK_ATTRS = [KeyValue(key="online_eval.link", value=AnyValue(string_value="scored_span"))]
# W3C flags: sampled; the parent (the eval span's scored span, or the eval span) is local.
_FLAGS = 0x01 | 0x100


def _any(value: Any) -> AnyValue:
    if isinstance(value, str):
        return AnyValue(string_value=value)
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if value is None:
        return AnyValue()
    if isinstance(value, Mapping):
        return AnyValue(kvlist_value=KeyValueList(values=encode_attributes(value)))
    return AnyValue(array_value=ArrayValue(values=[_any(v) for v in value]))


def encode_attributes(attrs: Mapping[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=k, value=_any(v)) for k, v in attrs.items()]


def _encode(plan: SpanPlan) -> Span:
    span = Span(
        trace_id=plan.trace_id.to_bytes(16, "big"),
        span_id=plan.span_id.to_bytes(8, "big"),
        name=plan.name,
        kind=Span.SPAN_KIND_INTERNAL,
        start_time_unix_nano=plan.start_ns,
        end_time_unix_nano=plan.end_ns,
        attributes=encode_attributes(plan.attributes),
        flags=_FLAGS,
    )
    if plan.parent_span_id is not None:
        span.parent_span_id = plan.parent_span_id.to_bytes(8, "big")
    for name, time_ns, attrs in plan.events:
        span.events.add(name=name, time_unix_nano=time_ns, attributes=encode_attributes(attrs))
    if plan.link is not None:
        span.links.add(
            trace_id=plan.link.trace_id.to_bytes(16, "big"),
            span_id=plan.link.span_id.to_bytes(8, "big"),
            attributes=_LINK_ATTRS,
            flags=_FLAGS,
        )
    code, message = plan.status
    if code != "UNSET":
        span.status.code = _STATUS[code]
        span.status.message = message or ""
    return span


class ProtoEmitter(PlanningEmitter):
    """Encodes eval spans to protobuf and ships them in batches.

    Args:
        shipper: where serialized requests go.
        schedule_delay_s: how long spans may wait for a batch to fill.
        max_batch: spans per request at most.
    """

    def __init__(
        self, shipper: Shipper, schedule_delay_s: float = 0.2, max_batch: int = 512
    ) -> None:
        super().__init__()
        self.shipper = shipper
        self._delay = schedule_delay_s
        self._max_batch = max_batch
        self._pending: list[tuple[ProtoResource, Span]] = []
        self._cond = threading.Condition()
        self._closed = False
        self._flush_requested = 0
        self._flushed = 0
        self.dropped_spans = 0
        self._thread = threading.Thread(target=self._run, name="online-eval-emit", daemon=True)
        self._thread.start()

    def resource_of(self, view: SpanView) -> ProtoResource:
        if isinstance(view, ProtoSpanView):
            return view.proto_resource
        return _resource_proto(view.sdk_resource())

    def _export(self, plans: Sequence[SpanPlan], resource: Any) -> None:
        encoded = [(resource, _encode(plan)) for plan in plans]
        with self._cond:
            self._pending.extend(encoded)
            if len(self._pending) >= self._max_batch:
                self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                deadline = time.monotonic() + self._delay
                while (
                    len(self._pending) < self._max_batch
                    and not self._closed
                    and self._flush_requested == self._flushed
                ):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                batch, self._pending = self._pending, []
                wanted = self._flush_requested
                closed = self._closed
            for start in range(0, len(batch), self._max_batch):
                self._ship(batch[start : start + self._max_batch])
            with self._cond:
                self._flushed = max(self._flushed, wanted)
                self._cond.notify_all()
            if closed and not batch:
                return

    def _ship(self, batch: Sequence[tuple[ProtoResource, Span]]) -> None:
        by_resource: dict[int, tuple[ProtoResource, list[Span]]] = {}
        for resource, span in batch:
            by_resource.setdefault(id(resource), (resource, []))[1].append(span)
        request = ExportTraceServiceRequest(
            resource_spans=[
                ResourceSpans(resource=res, scope_spans=[ScopeSpans(scope=_SCOPE, spans=spans)])
                for res, spans in by_resource.values()
            ]
        )
        if not self.shipper.offer(request.SerializeToString(), len(batch)):
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
        return self.shipper.flush(max(0.0, deadline - time.monotonic()))

    def shutdown(self, timeout_s: float = 10.0) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout_s)
        self.shipper.shutdown(timeout_s)


def _resource_proto(resource: Resource) -> ProtoResource:
    return ProtoResource(attributes=encode_attributes(dict(resource.attributes)))
