"""Eval spans built straight as OTLP protobuf and shipped in batches.

The SDK's OTLP exporter first builds ``ReadableSpan``s and then encodes them, which costs tens
of microseconds per span in Python; at sidecar volumes that would be the bottleneck. This
emitter builds the protobuf ``Span`` messages directly from the emitter's plans, batches them
(by the scored spans' own resources, reused as received), and hands serialized requests to a
:class:`~otel_online_eval.sidecar.shipper.Shipper`.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import (
    KeyValue,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource as ProtoResource
from opentelemetry.sdk.resources import Resource

from otel_online_eval._threads import name_os_thread
from otel_online_eval.emit import SCOPE, PlanningEmitter, SpanPlan
from otel_online_eval.sidecar.protoview import ProtoSpanView
from otel_online_eval.sidecar.shipper import Shipper
from otel_online_eval.spanview import SpanView

__all__ = ["ProtoEmitter", "encode_attributes"]

logger = logging.getLogger(__name__)

# The wire format is written by hand: building upb message objects from Python costs about
# 30 µs per eval span, most of it in attribute KeyValues that repeat (rule, scorer, label...).
# Written by hand, with the encoded KeyValues of short values cached, a span costs a few µs.
_CACHE_LIMIT = 8192
_CACHEABLE_LEN = 64
_kv_cache: dict[tuple[bytes, str, type, Any], bytes] = {}
_pack_q = struct.Struct("<Q").pack
_pack_d = struct.Struct("<d").pack
# W3C flags: sampled; "has is_remote" set with is_remote clear: the parent is local.
_FLAGS = b"\x7d" + struct.pack("<I", 0x01 | 0x100)  # field 16, fixed32
_KIND_INTERNAL = b"\x30\x01"  # field 6, varint 1


def _varint(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _ld(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: its tag byte(s), the length, the payload."""
    return tag + _varint(len(payload)) + payload


def _any(value: Any, depth: int = 0) -> bytes:
    """An encoded AnyValue."""
    if isinstance(value, str):
        return _ld(b"\x0a", value.encode("utf-8", "replace"))
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, int):
        return b"\x18" + _varint(value & 0xFFFFFFFFFFFFFFFF)
    if isinstance(value, float):
        return b"\x21" + _pack_d(value)
    if value is None or depth > 8:
        return b""
    if isinstance(value, Mapping):
        kvs = b"".join(_ld(b"\x0a", _kv(k, v, depth + 1)) for k, v in value.items())
        return _ld(b"\x32", kvs)  # kvlist_value
    items = b"".join(_ld(b"\x0a", _any(v, depth + 1)) for v in value)
    return _ld(b"\x2a", items)  # array_value


def _kv(key: str, value: Any, depth: int = 0) -> bytes:
    """An encoded KeyValue (without its own tag)."""
    return _ld(b"\x0a", key.encode()) + _ld(b"\x12", _any(value, depth))


def _attributes(tag: bytes, attrs: Mapping[str, Any]) -> bytes:
    """Attribute fields under ``tag``; short scalar ones come from the cache."""
    out = []
    cache = _kv_cache
    for key, value in attrs.items():
        ck = (tag, key, type(value), value)
        try:
            hit = cache.get(ck)
        except TypeError:  # an unhashable value (a list)
            hit = None
        if hit is None:
            hit = _ld(tag, _kv(key, value))
            if (
                len(cache) < _CACHE_LIMIT
                and isinstance(value, (str, bool, int, float))
                and (not isinstance(value, str) or len(value) <= _CACHEABLE_LEN)
            ):
                cache[ck] = hit
        out.append(hit)
    return b"".join(out)


_LINK_ATTRS = _attributes(b"\x22", {"online_eval.link": "scored_span"})  # Link.attributes (4)
_SCOPE = _ld(b"\x0a", SCOPE.name.encode()) + _ld(b"\x12", (SCOPE.version or "").encode())
_STATUS_ERROR = 2


def _encode(plan: SpanPlan) -> bytes:
    """An encoded ``Span`` message (without its own tag)."""
    parts = [
        b"\x0a\x10" + plan.trace_id.to_bytes(16, "big"),
        b"\x12\x08" + plan.span_id.to_bytes(8, "big"),
    ]
    if plan.parent_span_id is not None:
        parts.append(b"\x22\x08" + plan.parent_span_id.to_bytes(8, "big"))
    parts.append(_ld(b"\x2a", plan.name.encode()))
    parts.append(_KIND_INTERNAL)
    parts.append(b"\x39" + _pack_q(plan.start_ns))
    parts.append(b"\x41" + _pack_q(plan.end_ns))
    parts.append(_attributes(b"\x4a", plan.attributes))
    for name, time_ns, attrs in plan.events:  # Event: time (1), name (2), attributes (3)
        event = b"\x09" + _pack_q(time_ns) + _ld(b"\x12", name.encode())
        parts.append(_ld(b"\x5a", event + _attributes(b"\x1a", attrs)))
    if plan.link is not None:  # Link: trace_id (1), span_id (2), attributes (4), flags (6)
        link = (
            b"\x0a\x10"
            + plan.link.trace_id.to_bytes(16, "big")
            + b"\x12\x08"
            + plan.link.span_id.to_bytes(8, "big")
            + _LINK_ATTRS
            + b"\x35"
            + struct.pack("<I", 0x01 | 0x100)
        )
        parts.append(_ld(b"\x6a", link))
    code, message = plan.status
    if code == "ERROR":  # Status: message (2), code (3)
        status = _ld(b"\x12", (message or "").encode()) + b"\x18" + _varint(_STATUS_ERROR)
        parts.append(_ld(b"\x7a", status))
    parts.append(_FLAGS)
    return b"".join(parts)


def encode_attributes(attrs: Mapping[str, Any]) -> list[KeyValue]:
    """Attributes as protobuf KeyValue messages (for building requests in tests and tools)."""
    return [KeyValue.FromString(_kv(k, v)) for k, v in attrs.items()]


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
    """

    def __init__(
        self,
        shipper: Shipper,
        schedule_delay_s: float = 5.0,
        max_batch: int = 512,
        max_queue: int = 2048,
    ) -> None:
        super().__init__()
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
        self._thread = threading.Thread(target=self._run, name="online-eval-emit", daemon=True)
        self._thread.start()

    def resource_of(self, view: SpanView) -> ProtoResource:
        if isinstance(view, ProtoSpanView):
            return view.proto_resource
        return _resource_proto(view.sdk_resource())

    def _export(self, plans: Sequence[SpanPlan], resource: Any) -> None:
        encoded = [(resource, _encode(plan)) for plan in plans]
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
        # ExportTraceServiceRequest.resource_spans (1) > ResourceSpans: resource (1),
        # scope_spans (2) > ScopeSpans: scope (1), spans (2).
        request = b"".join(
            _ld(
                b"\x0a",
                _ld(b"\x0a", res.SerializeToString())
                + _ld(b"\x12", _ld(b"\x0a", _SCOPE) + b"".join(_ld(b"\x12", s) for s in spans)),
            )
            for res, spans in by_resource.values()
        )
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
        return self.shipper.flush(max(0.0, deadline - time.monotonic()))

    def shutdown(self, timeout_millis: int = 10000) -> None:
        """Ship what is pending within ``timeout_millis``; what is left is counted as dropped."""
        end = time.monotonic() + timeout_millis / 1000
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(max(0.0, end - time.monotonic()))
        self.shipper.shutdown(max(0.0, end - time.monotonic()))


def _resource_proto(resource: Resource) -> ProtoResource:
    return ProtoResource(attributes=encode_attributes(dict(resource.attributes)))
