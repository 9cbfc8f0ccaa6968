"""The in-process door for log records: a ``LogRecordProcessor`` that hands the records of
spans (OpenTelemetry events: the GenAI instrumentations' prompts and answers) to the engine,
which joins them to their spans.

::

    logger_provider.add_log_record_processor(processor.log_processor)

``on_emit`` runs on the application's thread: a record without a span id, or from the
project's own scope, is ignored at once; any other is turned into an :class:`EventView` and
queued. It does no I/O and never raises.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from opentelemetry.sdk._logs import LogRecordProcessor, ReadWriteLogRecord

from otel_online_eval.spanview import EventView

if TYPE_CHECKING:
    from otel_online_eval.engine import Engine

__all__ = ["LogRecordFeed", "sdk_record_event"]

logger = logging.getLogger(__name__)

_EVAL_SCOPE = "otel-online-eval"
_EMPTY: Mapping[str, Any] = MappingProxyType({})


def _plain(value: Any) -> Any:
    """An SDK ``AnyValue`` as plain Python: mappings become dicts, sequences lists."""
    if isinstance(value, (str, bytes, bool, int, float)) or value is None:
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Sequence):
        return [_plain(v) for v in value]
    return str(value)


def sdk_record_event(record: ReadWriteLogRecord) -> EventView:
    """A log record as a span event: its event name (else its ``event.name`` attribute), its
    time, and its attributes with the body under ``body``."""
    rec = record.log_record
    attrs = rec.attributes
    out = {k: _plain(v) for k, v in attrs.items()} if attrs else {}
    name = rec.event_name or out.get("event.name") or ""
    if rec.body is not None:
        out["body"] = _plain(rec.body)
    time_ns = rec.timestamp or rec.observed_timestamp or 0
    return EventView(str(name), int(time_ns), MappingProxyType(out) if out else _EMPTY)


class LogRecordFeed(LogRecordProcessor):
    """Feeds log records to an engine's join of records to spans.

    Args:
        engine: the engine whose spans the records belong to.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        try:
            rec = log_record.log_record
            span_id, trace_id = rec.span_id, rec.trace_id
            if not span_id or not trace_id:
                return
            scope = log_record.instrumentation_scope
            if scope is not None and scope.name == _EVAL_SCOPE:
                return  # our own results: never joined back
            self._engine.submit_record(sdk_record_event(log_record), trace_id, span_id)
        except Exception:  # never into the application
            logger.debug("Could not queue a log record for joining.", exc_info=True)

    def shutdown(self) -> None:
        """The span processor owns the engine: its shutdown ends it."""

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
