"""Sending serialized ``ExportTraceServiceRequest``s to an OTLP endpoint, reliably.

A :class:`Shipper` holds a bounded buffer of request bodies (bounded in bytes) and one thread
that sends them in order with retries: exponential backoff with full jitter, honouring gRPC
``RetryInfo`` and HTTP ``Retry-After``, for the codes the OTLP specification calls retryable.
When the buffer is full, :meth:`Shipper.offer` says no at once; the caller decides (the receiver
answers UNAVAILABLE so the client retries). A body that still fails after ``max_elapsed_s`` is
dropped and counted. The forwarder and the sidecar's eval-span exporter are both shippers;
where each sends, with which headers, TLS, timeout and compression, is resolved once by
:func:`otel_online_eval.export.resolve_otlp`, as for the in-process SDK exporters.
"""

from __future__ import annotations

import email.utils
import gzip
import logging
import random
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol

import grpc

from otel_online_eval._threads import name_os_thread
from otel_online_eval.export import OtlpTarget
from otel_online_eval.sidecar.config import RetryConfig

__all__ = ["SendResult", "Shipper", "make_sender"]

logger = logging.getLogger(__name__)

EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
LOGS_EXPORT_METHOD = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"

_RETRYABLE_GRPC = {
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DATA_LOSS,
}
_RETRYABLE_HTTP = {429, 502, 503, 504}


@dataclass(frozen=True, slots=True)
class SendResult:
    """One attempt: ``ok``, or whether to retry and after how long the server asked for."""

    ok: bool
    retryable: bool = False
    retry_after_s: float | None = None
    message: str = ""


class Sender(Protocol):
    def send(self, body: bytes) -> SendResult: ...

    def close(self) -> None: ...


class GrpcSender:
    """Sends raw request bytes with a generic unary call: the bytes go out as they are."""

    def __init__(self, target: OtlpTarget, method: str = EXPORT_METHOD) -> None:
        options = [("grpc.max_send_message_length", 64 * 1024 * 1024)]
        if target.insecure:
            self._channel = grpc.insecure_channel(target.endpoint, options=options)
        else:
            tls = target.tls
            creds = grpc.ssl_channel_credentials(
                tls.root_certificates, tls.private_key, tls.certificate_chain
            )
            self._channel = grpc.secure_channel(target.endpoint, creds, options=options)
        self._call = self._channel.unary_unary(
            method, request_serializer=None, response_deserializer=None
        )
        self._metadata = target.headers
        self._timeout = target.timeout_s
        self._compression = grpc.Compression.Gzip if target.compression == "gzip" else None

    def send(self, body: bytes) -> SendResult:
        try:
            self._call(
                body,
                timeout=self._timeout,
                metadata=self._metadata,
                compression=self._compression,
            )
            return SendResult(True)
        except grpc.RpcError as exc:
            code = exc.code()
            retry_after = _grpc_retry_after(exc)
            retryable = code in _RETRYABLE_GRPC or (
                code == grpc.StatusCode.RESOURCE_EXHAUSTED and retry_after is not None
            )
            return SendResult(False, retryable, retry_after, f"{code.name}: {exc.details()}")

    def close(self) -> None:
        self._channel.close()


def _grpc_retry_after(exc: Any) -> float | None:
    from google.rpc.error_details_pb2 import RetryInfo
    from google.rpc.status_pb2 import Status

    for key, value in exc.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = Status.FromString(value)
            for detail in status.details:
                if detail.Is(RetryInfo.DESCRIPTOR):
                    info = RetryInfo()
                    detail.Unpack(info)
                    return float(info.retry_delay.seconds + info.retry_delay.nanos / 1e9)
    return None


class HttpSender:
    """POSTs protobuf bodies (gzip when configured) with keep-alive.

    TLS: ``target.tls``'s CA bundle (else requests' default roots, which ``REQUESTS_CA_BUNDLE``
    may set) and client certificate go with every request, so the environment cannot override
    a CA bundle the config gave.
    """

    def __init__(self, target: OtlpTarget) -> None:
        import requests

        self._session = requests.Session()
        self._url = target.endpoint
        self._headers = {"Content-Type": "application/x-protobuf", **dict(target.headers)}
        if target.compression == "gzip":
            self._headers["Content-Encoding"] = "gzip"
        self._gzip = target.compression == "gzip"
        self._timeout = target.timeout_s
        tls = target.tls
        self._verify: bool | str = tls.certificate_file or True
        self._cert = (
            (tls.client_certificate_file, tls.client_key_file)
            if tls.client_certificate_file and tls.client_key_file
            else None
        )

    def send(self, body: bytes) -> SendResult:
        import requests

        data = gzip.compress(body) if self._gzip else body
        try:
            response = self._session.post(
                self._url,
                data=data,
                headers=self._headers,
                timeout=self._timeout,
                verify=self._verify,
                cert=self._cert,
            )
        except requests.RequestException as exc:
            return SendResult(False, True, None, f"{type(exc).__name__}: {exc}")
        if 200 <= response.status_code < 300:
            return SendResult(True)
        retry_after = _http_retry_after(response.headers.get("Retry-After"))
        return SendResult(
            False,
            response.status_code in _RETRYABLE_HTTP,
            retry_after,
            f"HTTP {response.status_code}: {response.text[:200]}",
        )

    def close(self) -> None:
        self._session.close()


def _http_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def make_sender(target: OtlpTarget, signal: str = "traces") -> Sender:
    """A sender of ``signal`` (``traces`` or ``logs``) export requests to ``target`` (resolved
    for that signal: an HTTP target's URL is the signal's own)."""
    if target.protocol != "grpc":
        return HttpSender(target)
    return GrpcSender(target, LOGS_EXPORT_METHOD if signal == "logs" else EXPORT_METHOD)


@dataclass
class ShipperStats:
    queued_bytes: int = 0
    queued_requests: int = 0
    sent_requests: int = 0
    sent_spans: int = 0
    retries: int = 0
    refused_spans: int = 0  # offer() said no: the buffer was full
    dropped_spans: int = 0  # gave up after retries, or left at shutdown
    failures: int = 0  # attempts that failed


class Shipper:
    """A bounded buffer of request bodies and the thread that sends them.

    Args:
        name: for logs and metrics (``forward``, ``export``).
        sender: how one body is sent.
        max_bytes: the buffer's size; offers beyond it are refused.
        retry: the retry policy.
    """

    def __init__(self, name: str, sender: Sender, max_bytes: int, retry: RetryConfig) -> None:
        self.name = name
        self._sender = sender
        self._max_bytes = max_bytes
        self._retry = retry
        self._queue: deque[tuple[bytes, int]] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._abandon = False
        self._busy = False
        self.stats = ShipperStats()
        self._rng = random.Random()
        self._thread = threading.Thread(target=self._run, name=f"online-eval-{name}", daemon=True)
        self._thread.start()

    def offer(self, body: bytes, spans: int) -> bool:
        """Queue one request body; False (and nothing queued) when the buffer is full."""
        with self._cond:
            if self._closing or self.stats.queued_bytes + len(body) > self._max_bytes:
                self.stats.refused_spans += spans
                return False
            self._queue.append((body, spans))
            self.stats.queued_bytes += len(body)
            self.stats.queued_requests += 1
            self._cond.notify()
        return True

    def flush(self, timeout_s: float) -> bool:
        """Wait until everything queued so far has been sent or dropped."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._queue or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))
        return True

    def shutdown(self, timeout_s: float) -> bool:
        """Send what is queued within ``timeout_s``, then drop (and count) the rest."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        flushed = self.flush(timeout_s)
        with self._cond:
            self._abandon = True
            self._cond.notify_all()
        self._thread.join(5)
        with self._cond:
            while self._queue:
                _, spans = self._queue.popleft()
                self.stats.dropped_spans += spans
            self.stats.queued_bytes = 0
            self.stats.queued_requests = 0
        self._sender.close()
        return flushed

    def _run(self) -> None:
        name_os_thread()
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue or self._abandon:
                    return
                body, spans = self._queue[0]
                self._busy = True
            try:
                self._deliver(body, spans)
            finally:
                with self._cond:
                    self._queue.popleft()
                    self.stats.queued_bytes -= len(body)
                    self.stats.queued_requests -= 1
                    self._busy = False
                    self._cond.notify_all()

    def _deliver(self, body: bytes, spans: int) -> None:
        started = time.monotonic()
        backoff = self._retry.initial_backoff_s
        while True:
            result = self._sender.send(body)
            if result.ok:
                self.stats.sent_requests += 1
                self.stats.sent_spans += spans
                return
            self.stats.failures += 1
            elapsed = time.monotonic() - started
            delay = result.retry_after_s
            if delay is None:
                delay = self._rng.uniform(0, backoff)  # full jitter
                backoff = min(backoff * 2, self._retry.max_backoff_s)
            if not result.retryable or elapsed + delay > self._retry.max_elapsed_s:
                self.stats.dropped_spans += spans
                logger.error(
                    "%s: dropping a request of %d spans after %.1f s: %s",
                    self.name,
                    spans,
                    elapsed,
                    result.message,
                )
                return
            self.stats.retries += 1
            logger.warning(
                "%s: export failed (%s); retrying in %.2f s", self.name, result.message, delay
            )
            with self._cond:
                if self._cond.wait_for(lambda: self._abandon, timeout=delay):
                    self.stats.dropped_spans += spans
                    return
