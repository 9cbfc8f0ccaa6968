"""Scores as Arize Phoenix span annotations, beside the eval spans.

For every scorer run of an evaluation, one annotation on the scored span::

    POST <endpoint>/v1/span_annotations?sync=true
    {"data": [{"span_id": "<scored span id>", "name": "<scorer>",
               "annotator_kind": "LLM" | "CODE",
               "result": {"label": ..., "score": ..., "explanation": ...},
               "metadata": {"online_eval.rule": ..., "online_eval.scorer.revision": ..., ...},
               "identifier": "online_eval:<rule>:<eval span id>"}, ...]}

Phoenix upserts on (name, span, identifier), and the identifier is the rule and the eval span
id: a request sent twice (a retry after a lost answer, or the same evaluation written twice)
leaves one annotation. A scorer that failed gets an annotation too, with no score, the label
``error`` and the error in its explanation and in ``metadata["error.type"]``, so that a failure
is not a gap; a run that was skipped (``run.skipped``) gets none.

Delivery. :meth:`PhoenixSink.write` only queues (bounded: beyond ``max_queue_size``
annotations the newest are dropped and counted as ``queue_full``). A thread of the sink's
own gathers what waits into requests of up to ``max_batch_size`` annotations, at once when a
batch is full, else after ``schedule_delay_s``, and hands them to a
:class:`~otel_online_eval.sidecar.shipper.Shipper` (a bounded buffer and a sender thread, as
for OTLP): 5xx, 408, 429 and connection errors are retried with exponential backoff and full
jitter (``Retry-After`` honoured) for up to ``retry.max_elapsed_s``; other answers drop the
request, counted as ``failed``.

Spans Phoenix has not stored yet. Phoenix ingests spans asynchronously, and with ``sync=true``
it refuses a whole request that names a span it does not have (yet) with ``404 Spans with IDs
<a>, <b> do not exist.``. The sender then writes the rest of the request at once and gives the
annotations of the missing spans back to the sink, which sends them again after a growing
delay (0.25 s doubling up to 5 s) until ``span_wait_s`` has passed since they were first
refused; then they are dropped and counted as ``failed`` (the scored span never reached
Phoenix: it is exported elsewhere, or was dropped on its way).
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from otel_online_eval._threads import name_os_thread
from otel_online_eval.emit import Evaluation, ExportCounts, ScorerRun
from otel_online_eval.export.config import PhoenixExportConfig
from otel_online_eval.sidecar.config import RetryConfig
from otel_online_eval.sidecar.shipper import SendResult, Shipper

__all__ = ["PhoenixSender", "PhoenixSink", "annotations_of"]

logger = logging.getLogger(__name__)

ANNOTATIONS_PATH = "/v1/span_annotations"
ANNOTATOR_KINDS = ("LLM", "CODE", "HUMAN")
DEFAULT_RETRY = RetryConfig(initial_backoff_s=0.25, max_backoff_s=5.0, max_elapsed_s=60.0)
_RETRYABLE = {408, 429}  # and every 5xx
_MISSING = re.compile(r"Spans with IDs (.*) do not exist", re.DOTALL)
_SPAN_ID = re.compile(r"\b[0-9a-f]{16}\b")
_SHIPPER_BYTES = 8 * 1024 * 1024
_RESERVED_NAME = "note"  # Phoenix keeps it for span notes and refuses the whole request

Annotation = dict[str, Any]


def _key(annotation: Mapping[str, Any]) -> tuple[str, str, str]:
    return (annotation["span_id"], annotation["name"], annotation["identifier"])


def _json_safe(value: Any) -> Any:
    """``value`` as JSON can carry it (what json cannot, as its ``str``; NaN as None)."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return str(value)


def _error_text(run: ScorerRun) -> tuple[str, str]:
    if run.timed_out:
        return "timeout", str(run.error) or "timed out"
    kind = type(run.error).__name__ if run.error is not None else "error"
    return kind, f"{kind}: {run.error}"


def annotations_of(evaluation: Evaluation) -> list[Annotation]:
    """The span annotations one evaluation makes (none when it scored no span).

    One per scorer run that was not skipped: the score's label, value and explanation, or for
    a failed run the label ``error`` and the error as the explanation.
    """
    scored = evaluation.scored
    if scored is None or not scored.span_id:
        return []
    span_id = f"{scored.span_id:016x}"
    identifier = f"online_eval:{evaluation.rule}:{evaluation.eval_span_id:016x}"
    out: list[Annotation] = []
    for run in evaluation.runs:
        if run.skipped is not None:
            continue
        metadata: dict[str, Any] = {
            "online_eval.rule": evaluation.rule,
            "online_eval.scorer.revision": run.revision,
            "online_eval.eval.trace_id": f"{evaluation.eval_trace_id:032x}",
            "online_eval.eval.span_id": f"{evaluation.eval_span_id:016x}",
        }
        if run.sampling_rate != 1.0:
            metadata["online_eval.sampling.rate"] = run.sampling_rate
        score = run.score
        if score is not None:
            for key, value in score.metadata.items():
                metadata[str(key)] = _json_safe(value)
            value = score.value
            result: dict[str, Any] = {
                "score": value if value is not None and math.isfinite(value) else None,
                "label": score.label,
                "explanation": score.explanation or None,
            }
        else:
            kind, message = _error_text(run)
            metadata["error.type"] = kind
            result = {"score": None, "label": "error", "explanation": message}
        out.append(
            {
                "span_id": span_id,
                "name": run.name,
                "annotator_kind": run.annotator if run.annotator in ANNOTATOR_KINDS else "CODE",
                "result": result,
                "metadata": metadata,
                "identifier": identifier,
            }
        )
    return out


class PhoenixSender:
    """POSTs one request of annotations (``sync=true``) with keep-alive (requests).

    A ``404 Spans with IDs ... do not exist.`` answer is taken apart: the annotations of the
    spans Phoenix has are written at once, and the others go to ``on_missing``; ``on_written``
    hears of every annotation Phoenix took.

    Args:
        endpoint: Phoenix's base URL.
        api_key: the bearer token, or None.
        timeout_s: per request.
        on_written: called with the annotations of each request Phoenix took.
        on_missing: called with the annotations whose spans Phoenix does not have yet.
    """

    def __init__(
        self,
        endpoint: str,
        api_key: str | None,
        timeout_s: float,
        on_written: Callable[[Sequence[Annotation]], None],
        on_missing: Callable[[Sequence[Annotation]], None],
    ) -> None:
        import requests

        self._session = requests.Session()
        self.url = endpoint.rstrip("/") + ANNOTATIONS_PATH
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._timeout = timeout_s
        self._on_written = on_written
        self._on_missing = on_missing

    def send(self, body: bytes) -> SendResult:
        import requests

        try:
            response = self._session.post(
                self.url,
                params={"sync": "true"},
                data=body,
                headers=self._headers,
                timeout=self._timeout,
            )
        except requests.RequestException as exc:
            return SendResult(False, True, None, f"{type(exc).__name__}: {exc}")
        if 200 <= response.status_code < 300:
            self._on_written(json.loads(body)["data"])
            return SendResult(True)
        missing = _missing_spans(response.status_code, response.text)
        if missing:
            return self._split(body, missing)
        return SendResult(
            False,
            response.status_code in _RETRYABLE or response.status_code >= 500,
            _retry_after(response.headers.get("Retry-After")),
            f"HTTP {response.status_code}: {response.text[:200]}",
        )

    def _split(self, body: bytes, missing: set[str]) -> SendResult:
        data: list[Annotation] = json.loads(body)["data"]
        waiting = [a for a in data if a["span_id"] in missing]
        present = [a for a in data if a["span_id"] not in missing]
        if not waiting:  # the answer named none of ours: try the whole request again later
            return SendResult(False, True, None, f"HTTP 404: spans {sorted(missing)} missing")
        if present:
            result = self.send(json.dumps({"data": present}).encode())
            if not result.ok:
                return result  # the whole request again, later: upserts make that harmless
        self._on_missing(waiting)
        return SendResult(True)

    def close(self) -> None:
        self._session.close()


def _missing_spans(status: int, text: str) -> set[str]:
    if status != 404:
        return set()
    match = _MISSING.search(text)
    return set(_SPAN_ID.findall(match.group(1))) if match else set()


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


@dataclass(slots=True)
class _Waiting:
    """An annotation Phoenix refused because its span was not there yet."""

    first_refused: float
    attempts: int


class PhoenixSink:
    """A score sink writing span annotations to Phoenix (see the module docstring).

    Args:
        endpoint: Phoenix's base URL (``http://127.0.0.1:6006``).
        api_key: sent as ``Authorization: Bearer``; None without auth.
        project: the project the scored spans are in (named in logs).
        timeout_s: per HTTP request.
        max_queue_size: annotations waiting to be batched (those waiting for their span
            included); beyond it new ones are dropped and counted as ``queue_full``.
        max_batch_size: annotations per request at most.
        schedule_delay_s: the longest an annotation waits for its batch to fill.
        span_wait_s: how long an annotation is sent again while Phoenix does not have its span.
        retry: the backoff for failed requests (5xx, 429, connection errors).
    """

    name = "phoenix"

    def __init__(
        self,
        endpoint: str,
        *,
        api_key: str | None = None,
        project: str = "default",
        timeout_s: float = 10.0,
        max_queue_size: int = 2048,
        max_batch_size: int = 100,
        schedule_delay_s: float = 1.0,
        span_wait_s: float = 30.0,
        retry: RetryConfig = DEFAULT_RETRY,
    ) -> None:
        if max_queue_size < 1 or max_batch_size < 1:
            raise ValueError("max_queue_size and max_batch_size must be at least 1")
        self.endpoint = endpoint
        self.project = project
        self._max_queue = max_queue_size
        self._max_batch = max_batch_size
        self._delay = schedule_delay_s
        self._span_wait = span_wait_s
        self._cond = threading.Condition()
        # (not before, annotation): new ones are due at once, refused ones after a delay
        self._pending: deque[tuple[float, bytes]] = deque()
        self._waiting: dict[tuple[str, str, str], _Waiting] = {}
        self._oldest: float | None = None  # when the oldest due annotation was queued
        self._flushing = 0
        self._batch_size = 0
        self._closed = False
        self._stopped = False
        self._scheduled = 0
        self._exported = 0
        self._dropped: dict[str, int] = {}
        self._shipper_dropped_base = 0
        self._sender = PhoenixSender(
            endpoint, api_key, timeout_s, self._written, self._missing_span
        )
        self._shipper = Shipper("phoenix", self._sender, _SHIPPER_BYTES, retry)
        self._thread = threading.Thread(
            target=self._run, name="online-eval-phoenix-batch", daemon=True
        )
        self._thread.start()

    @classmethod
    def from_config(cls, config: PhoenixExportConfig) -> PhoenixSink:
        """The sink an ``export.phoenix`` section describes."""
        return cls(
            config.endpoint,
            api_key=config.api_key,
            project=config.project,
            timeout_s=config.timeout_s,
            max_queue_size=config.max_queue_size,
        )

    # ------------------------------------------------------------------ the engine's side

    def write(self, evaluation: Evaluation) -> None:
        """Queue the evaluation's annotations; never blocks, never raises."""
        try:
            annotations = annotations_of(evaluation)
        except Exception:
            logger.exception("phoenix: could not make annotations of rule %r", evaluation.rule)
            return
        if annotations:
            self._enqueue(annotations)

    def _enqueue(self, annotations: Iterable[Annotation], when: float = 0.0) -> None:
        """Queue annotations, due at ``when`` (0: now). Under the lock or not."""
        with self._cond:
            for annotation in annotations:
                if when == 0.0:
                    self._scheduled += 1
                if annotation["name"] == _RESERVED_NAME:
                    self._drop("failed", 1)
                    logger.warning(
                        "phoenix: a scorer named 'note' cannot be written as an annotation "
                        "(Phoenix keeps the name for span notes); rename it"
                    )
                    continue
                try:
                    encoded = json.dumps(annotation, allow_nan=False).encode()
                except (TypeError, ValueError):
                    self._drop("failed", 1)
                    logger.exception("phoenix: annotation %r is not JSON", annotation["name"])
                    continue
                if self._stopped or (self._closed and when == 0.0):
                    self._drop("shutdown", 1)
                elif when == 0.0 and len(self._pending) >= self._max_queue:
                    # Refused ones (when > 0) were admitted already: they are not dropped here.
                    self._drop("queue_full", 1)
                else:
                    self._pending.append((when, encoded))
                    if when == 0.0 and self._oldest is None:
                        self._oldest = time.monotonic()
            if len(self._pending) >= self._max_batch or when > 0.0:
                self._cond.notify_all()

    def _drop(self, reason: str, count: int) -> None:
        self._dropped[reason] = self._dropped.get(reason, 0) + count

    def export_counts(self) -> ExportCounts:
        """Annotations scheduled, written, and dropped by reason."""
        with self._cond:
            dropped = dict(self._dropped)
            failed = self._shipper.stats.dropped_spans - self._shipper_dropped_base
            if failed:
                key = "shutdown" if self._stopped else "failed"
                dropped[key] = dropped.get(key, 0) + failed
            return ExportCounts(self._scheduled, self._exported, dropped)

    # ------------------------------------------------------------------ the sender's side

    def _written(self, annotations: Sequence[Annotation]) -> None:
        with self._cond:
            self._exported += len(annotations)
            if self._waiting:
                for annotation in annotations:
                    self._waiting.pop(_key(annotation), None)

    def _missing_span(self, annotations: Sequence[Annotation]) -> None:
        now = time.monotonic()
        with self._cond:
            for annotation in annotations:
                key = _key(annotation)
                waiting = self._waiting.get(key)
                if waiting is None:
                    waiting = self._waiting[key] = _Waiting(now, 0)
                waiting.attempts += 1
                if self._stopped or now - waiting.first_refused >= self._span_wait:
                    del self._waiting[key]
                    self._drop("failed", 1)
                    logger.warning(
                        "phoenix: span %s is not in Phoenix (project %r) after %.1f s; "
                        "dropping its annotation %r",
                        annotation["span_id"],
                        self.project,
                        now - waiting.first_refused,
                        annotation["name"],
                    )
                    continue
                delay = min(0.25 * 2 ** (waiting.attempts - 1), 5.0)
                self._enqueue((annotation,), now + delay)

    # ------------------------------------------------------------------ batching

    def _take_due(self, now: float, everything: bool) -> bytes | None:
        """The body of a request to send now, or None. Under the lock."""
        due = [when for when, _ in self._pending if when <= now]
        if not due:
            return None
        full = len(due) >= self._max_batch
        old = self._oldest is not None and now - self._oldest >= self._delay
        refused = any(when > 0.0 for when in due)  # they have waited already
        if not (full or old or refused or everything):
            return None
        batch: list[bytes] = []
        keep: deque[tuple[float, bytes]] = deque()
        for when, encoded in self._pending:
            if when <= now and len(batch) < self._max_batch:
                batch.append(encoded)
            else:
                keep.append((when, encoded))
        self._pending = keep
        self._oldest = now if any(when == 0.0 for when, _ in keep) else None
        self._batch_size = len(batch)
        return b'{"data":[' + b",".join(batch) + b"]}"

    def _next_wake(self, now: float) -> float:
        wake = now + self._delay
        if self._oldest is not None:
            wake = min(wake, self._oldest + self._delay)
        for when, _ in self._pending:
            if when > 0.0:
                wake = min(wake, when)
        return max(0.005, wake - now)

    def _run(self) -> None:
        name_os_thread()
        while True:
            with self._cond:
                if self._stopped:
                    return
                now = time.monotonic()
                body = self._take_due(now, self._flushing > 0 or self._closed)
                if body is None:
                    self._cond.wait(self._next_wake(now))
                    continue
                if not self._shipper.offer(body, self._batch_size):
                    self._drop("queue_full", self._batch_size)
                    logger.warning(
                        "phoenix: the send buffer is full; dropped %d annotations",
                        self._batch_size,
                    )

    def _idle(self) -> bool:
        """Nothing waits or is on its way. Under the lock."""
        return not self._pending and self._shipper.flush(0)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Send everything written so far (annotations waiting for their span included);
        False on timeout or when some of it was dropped."""
        deadline = time.monotonic() + timeout_millis / 1000
        with self._cond:
            dropped_before = sum(self.export_counts().dropped.values())
            self._flushing += 1
            self._cond.notify_all()
            try:
                while not self._idle():
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    self._cond.wait(min(left, 0.02))
                return sum(self.export_counts().dropped.values()) == dropped_before
            finally:
                self._flushing -= 1

    def shutdown(self, timeout_millis: int = 30000) -> None:
        """Send what waits within ``timeout_millis``, then drop (and count) the rest; safe
        to call twice. Later writes are dropped as ``shutdown``."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
        deadline = time.monotonic() + timeout_millis / 1000
        self.force_flush(max(0, int((deadline - time.monotonic()) * 1000)))
        with self._cond:
            failed = self._shipper.stats.dropped_spans
            self._shipper_dropped_base = failed
            if failed:
                self._drop("failed", failed)
            self._stopped = True
            left = len(self._pending)
            if left:
                self._drop("shutdown", left)
                logger.warning("phoenix: shutting down; dropped %d annotations", left)
            self._pending.clear()
            self._waiting.clear()
            self._cond.notify_all()
        self._thread.join(max(0.0, deadline - time.monotonic()) + 1)
        self._shipper.shutdown(max(0.0, deadline - time.monotonic()))
