"""What the receivers do with one logs export request (``LogsService/Export``, ``POST /v1/logs``).

The same steps, answers and limits as for traces (:mod:`otel_online_eval.sidecar.ingest`):

1. Decode it (protobuf, or OTLP/JSON). Undecodable: the whole request is invalid.
2. Check every record's ids: a trace id is empty or 16 bytes, a span id empty or 8 bytes (a
   log record need not belong to a span). Bad records are rejected and reported in
   ``partial_success``; the rest go on.
3. Forward the request to ``forward:``'s logs endpoint: the received bytes as they are, or
   re-encoded without the rejected records (always for JSON input). A full forward buffer
   refuses the whole request with a retry hint, before anything is joined.
4. Hand each record that belongs to a span (both ids set, not all zero) to the engine, which
   joins it to its span as a span event: the GenAI instrumentations' prompts and answers in
   event mode. Records of the project's own scope (its evaluation results) are never joined.
"""

from __future__ import annotations

import logging
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from otel_online_eval._ratelog import RateLimitedLog
from otel_online_eval.emit import SCOPE
from otel_online_eval.otlp import decode_logs_json, decode_value, id_problem
from otel_online_eval.sidecar.ingest import IngestResult, safe_message
from otel_online_eval.spanview import EventView

if TYPE_CHECKING:
    from otel_online_eval.sidecar.ingest import Ingest
    from otel_online_eval.sidecar.shipper import Shipper

__all__ = ["LogIngest", "record_event"]

logger = logging.getLogger(__name__)

_EVAL_SCOPE = SCOPE.name
_ZERO_TRACE = bytes(16)
_ZERO_SPAN = bytes(8)
_EMPTY: Any = MappingProxyType({})


def record_event(record: LogRecord) -> EventView:
    """A log record as a span event: its event name (else its ``event.name`` attribute), its
    time (else its observed time), its attributes with the body under ``body``."""
    attrs = {kv.key: decode_value(kv.value) for kv in record.attributes}
    name = record.event_name or attrs.get("event.name") or ""
    if record.HasField("body"):
        attrs["body"] = decode_value(record.body)
    time_ns = record.time_unix_nano or record.observed_time_unix_nano
    return EventView(str(name), time_ns, MappingProxyType(attrs) if attrs else _EMPTY)


def _bad_ids(record: LogRecord) -> str | None:
    return id_problem("trace_id", record.trace_id, 16, may_be_empty=True, may_be_zero=True) or (
        id_problem("span_id", record.span_id, 8, may_be_empty=True, may_be_zero=True)
    )


class LogIngest:
    """Decodes, checks, forwards and joins logs export requests.

    Args:
        ingest: the traces' ingest, whose engine (replaced on reload), state and counters
            this shares.
        forwarder: where received log records go on to, if anywhere.
    """

    def __init__(self, ingest: Ingest, forwarder: Shipper | None) -> None:
        self.ingest = ingest
        self.forwarder = forwarder
        self._log = RateLimitedLog(logger)

    def handle(self, body: bytes, fmt: str) -> IngestResult:
        """Process one request body; ``fmt`` is ``protobuf`` or ``json``. Never raises."""
        stats = self.ingest.stats
        try:
            return self._handle(body, fmt)
        except Exception:  # a defect: answer it (500 / INTERNAL), logged
            stats.add_records(0, 0, "internal_error")
            self._log(
                logging.ERROR,
                "internal",
                "Internal error while handling a %s logs export request of %d bytes.",
                fmt,
                len(body),
                exc_info=True,
            )
            return IngestResult(
                "internal", message="internal error while handling the request (it is logged)"
            )

    def _handle(self, body: bytes, fmt: str) -> IngestResult:
        stats = self.ingest.stats
        if self.ingest.closed:
            return IngestResult(
                "unavailable", message="the receiver is shutting down", retry_after_s=1.0
            )
        try:
            if fmt == "json":
                request = decode_logs_json(body)
            else:
                request = ExportLogsServiceRequest.FromString(body)
        except (DecodeError, ValueError, RecursionError) as exc:
            kind = "OTLP/JSON" if fmt == "json" else "protobuf"
            stats.add_records(0, 0, "invalid")
            return IngestResult(
                "invalid", message=safe_message(f"cannot decode the {kind} logs request: {exc}")
            )
        total, rejected, first_problem = 0, 0, ""
        joinable: list[tuple[EventView, int, int]] = []
        for resource_logs in request.resource_logs:
            for scope_logs in resource_logs.scope_logs:
                ours = scope_logs.scope.name == _EVAL_SCOPE
                for record in scope_logs.log_records:
                    total += 1
                    trace_id, span_id = record.trace_id, record.span_id
                    if len(trace_id) not in (0, 16) or len(span_id) not in (0, 8):
                        rejected += 1
                        first_problem = first_problem or str(_bad_ids(record))
                        continue
                    if ours or not span_id or not trace_id:
                        continue
                    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
                        continue
                    joinable.append(
                        (
                            record_event(record),
                            int.from_bytes(trace_id, "big"),
                            int.from_bytes(span_id, "big"),
                        )
                    )
        if self.forwarder is not None and total > rejected:
            if rejected or fmt == "json":
                _remove_rejected(request)
                body = request.SerializeToString()
            if not self.forwarder.offer(body, total - rejected):
                stats.add_records(0, 0, "forward_buffer_full")
                return IngestResult(
                    "unavailable",
                    message="the forwarding buffer is full; retry later",
                    retry_after_s=2.0,
                )
        if joinable:
            self.ingest.engine.submit_records(joinable)
        stats.add_records(total - rejected, rejected, "invalid_log_record" if rejected else None)
        message = ""
        if rejected:
            message = f"{rejected} log record(s) rejected; the first: {first_problem}"
        return IngestResult("ok", total - rejected, rejected, message)


def _remove_rejected(request: ExportLogsServiceRequest) -> None:
    for resource_logs in request.resource_logs:
        for scope_logs in resource_logs.scope_logs:
            records = scope_logs.log_records
            for i in range(len(records) - 1, -1, -1):
                if _bad_ids(records[i]) is not None:
                    del records[i]
