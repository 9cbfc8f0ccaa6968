"""``OtlpJsonFileExporter``: eval spans appended to a file as OTLP/JSON lines."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from typing import IO

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from otel_online_eval.otlp_json import encode_spans_json

__all__ = ["OtlpJsonFileExporter"]

logger = logging.getLogger(__name__)


class OtlpJsonFileExporter(SpanExporter):
    """Append each batch as one OTLP/JSON line to a file, like the Collector's ``file`` exporter.

    Each :meth:`export` call writes one ``ExportTraceServiceRequest`` line and flushes it;
    calls from several threads never interleave. The file is opened (created if missing) in
    the constructor, so a bad path fails at start-up. After :meth:`shutdown`, which closes the
    file and is safe to call twice, :meth:`export` returns ``FAILURE``. Read the lines back
    with :func:`otel_online_eval.otlp_json.decode_request_json`.

    Args:
        path: the file to append to.
        encode: turns a batch into one OTLP/JSON line (a faster encoder may be given; it must
            write what :func:`~otel_online_eval.otlp_json.encode_spans_json` writes).

    Raises:
        OSError: the file cannot be opened for appending.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        encode: Callable[[Sequence[ReadableSpan]], str] = encode_spans_json,
    ) -> None:
        self._path = os.fspath(path)
        self._encode = encode
        self._lock = threading.Lock()
        self._file: IO[bytes] | None = open(self._path, "ab")

    @property
    def path(self) -> str:
        return self._path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._file is None:
            logger.warning("Cannot export to %s: the exporter has been shut down.", self._path)
            return SpanExportResult.FAILURE
        if not spans:
            return SpanExportResult.SUCCESS
        try:
            data = (self._encode(spans) + "\n").encode("utf-8")
        except Exception:
            logger.exception("Cannot encode %d spans as OTLP/JSON.", len(spans))
            return SpanExportResult.FAILURE
        with self._lock:
            if self._file is None:
                logger.warning("Cannot export to %s: the exporter has been shut down.", self._path)
                return SpanExportResult.FAILURE
            try:
                self._file.write(data)
                self._file.flush()
            except (OSError, ValueError):
                logger.exception("Cannot write %d spans to %s.", len(spans), self._path)
                return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        with self._lock:
            if self._file is not None:
                try:
                    self._file.flush()
                except (OSError, ValueError):
                    logger.exception("Cannot flush %s.", self._path)
                    return False
        return True

    def shutdown(self) -> None:
        with self._lock:
            file, self._file = self._file, None
        if file is not None:
            try:
                file.close()
            except OSError:
                logger.exception("Cannot close %s.", self._path)
