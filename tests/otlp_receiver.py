"""Real OTLP receivers for tests: gRPC and HTTP servers on 127.0.0.1 with ephemeral ports.

Both collect every ``ExportTraceServiceRequest`` they accept, with the request headers (gRPC
metadata or HTTP headers, names lower-cased), and every ``ExportLogsServiceRequest``
(``LogsService/Export``, ``POST /v1/logs``: ``log_records()``, ``wait_for_log_records(n)``);
they can be told to answer errors (to either signal)::

    def test_x(otlp_grpc_receiver):
        exporter = OTLPSpanExporter(endpoint=otlp_grpc_receiver.endpoint, insecure=True)
        exporter.export(spans)
        [(resource, scope, span)] = otlp_grpc_receiver.wait_for_spans(1)

    otlp_grpc_receiver.fail_with(grpc.StatusCode.UNAVAILABLE, times=1, retry_delay_s=0)
    otlp_http_receiver.fail_with(503, times=1, retry_after_s=0)

The fixtures ``otlp_grpc_receiver`` and ``otlp_http_receiver`` start one receiver per test and
stop it afterwards. Either receiver serves TLS when given a :class:`ServerTls`, and with its
``client_ca_file`` requires a client certificate that CA signed (mutual TLS)::

    with OtlpHttpReceiver(ServerTls(crt, key, client_ca_file=ca)) as rx:   # rx.base_url: https
        ...
"""

from __future__ import annotations

import gzip
import ssl
import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from concurrent import futures
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.rpc.error_details_pb2 import RetryInfo
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from otel_online_eval.otlp import decode_logs_json
from otel_online_eval.otlp_json import decode_request_json

__all__ = [
    "OtlpGrpcReceiver",
    "OtlpHttpReceiver",
    "Received",
    "ReceivedRecord",
    "ReceivedSpan",
    "ServerTls",
    "attrs",
    "otlp_grpc_receiver",
    "otlp_http_receiver",
    "value",
]

ReceivedSpan = tuple[dict[str, Any], str, Span]
"""(resource attributes, scope name, span) for one received span."""

ReceivedRecord = tuple[dict[str, Any], str, LogRecord]
"""(resource attributes, scope name, log record) for one received log record."""


def value(v: AnyValue) -> Any:
    """The Python value of an OTLP ``AnyValue`` (lists and dicts for arrays and kvlists)."""
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return attrs(v.kvlist_value.values)
    return getattr(v, kind)


def attrs(kvs: Sequence[KeyValue]) -> dict[str, Any]:
    """OTLP attributes as a dict."""
    return {kv.key: value(kv.value) for kv in kvs}


@dataclass(frozen=True)
class ServerTls:
    """A receiver's TLS: its certificate and key (PEM files) and, for mutual TLS, the CA whose
    client certificates it requires."""

    cert_file: str | Path
    key_file: str | Path
    client_ca_file: str | Path | None = None


@dataclass(frozen=True)
class Received:
    """One accepted export call."""

    request: ExportTraceServiceRequest
    headers: dict[str, str]


@dataclass(frozen=True)
class ReceivedLogs:
    """One accepted logs export call."""

    request: ExportLogsServiceRequest
    headers: dict[str, str]


class _Receiver:
    """The state both receivers share: what arrived, and the failures still to answer."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._received: list[Received] = []
        self._logs: list[ReceivedLogs] = []
        self._attempts = 0
        self._failure: Any = None
        self._failures_left: int | None = 0

    # -- what arrived

    @property
    def attempts(self) -> int:
        """Export calls seen, failed ones included."""
        with self._cond:
            return self._attempts

    @property
    def received(self) -> list[Received]:
        with self._cond:
            return list(self._received)

    @property
    def requests(self) -> list[ExportTraceServiceRequest]:
        return [r.request for r in self.received]

    @property
    def headers(self) -> list[dict[str, str]]:
        """The headers of each accepted request, in order."""
        return [r.headers for r in self.received]

    def spans(self) -> list[ReceivedSpan]:
        """Every received span, flattened, in arrival order."""
        return _flatten(self.received)

    def wait_for_spans(self, n: int, timeout: float = 10.0) -> list[ReceivedSpan]:
        """Wait until at least ``n`` spans arrived and return them all.

        Raises:
            AssertionError: fewer than ``n`` arrived within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                got = _flatten(self._received)
                if len(got) >= n:
                    return got
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"expected {n} spans within {timeout}s, got {len(got)} "
                        f"in {len(self._received)} requests ({self._attempts} attempts)"
                    )
                self._cond.wait(remaining)

    @property
    def log_requests(self) -> list[ReceivedLogs]:
        """Every accepted logs request, with its headers, in order."""
        with self._cond:
            return list(self._logs)

    def log_records(self) -> list[ReceivedRecord]:
        """Every received log record, flattened, in arrival order."""
        with self._cond:
            return _flatten_logs(self._logs)

    def wait_for_log_records(self, n: int, timeout: float = 10.0) -> list[ReceivedRecord]:
        """Wait until at least ``n`` log records arrived and return them all.

        Raises:
            AssertionError: fewer than ``n`` arrived within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                got = _flatten_logs(self._logs)
                if len(got) >= n:
                    return got
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"expected {n} log records within {timeout}s, got {len(got)} "
                        f"in {len(self._logs)} requests ({self._attempts} attempts)"
                    )
                self._cond.wait(remaining)

    def wait_for_attempts(self, n: int, timeout: float = 10.0) -> int:
        """Wait until at least ``n`` export calls were seen (accepted or failed)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._attempts < n:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"expected {n} export attempts within {timeout}s, got {self._attempts}"
                    )
                self._cond.wait(remaining)
            return self._attempts

    def clear(self) -> None:
        with self._cond:
            self._received.clear()
            self._logs.clear()
            self._attempts = 0

    # -- failures

    def _set_failure(self, failure: Any, times: int | None) -> None:
        with self._cond:
            self._failure = failure
            self._failures_left = times if failure is not None else 0

    def _next_failure(self) -> Any:
        """Count an attempt; the failure to answer it with, or None to accept it."""
        with self._cond:
            self._attempts += 1
            self._cond.notify_all()
            if self._failure is None or self._failures_left == 0:
                return None
            if self._failures_left is not None:
                self._failures_left -= 1
            return self._failure

    def _record(
        self, request: ExportTraceServiceRequest | ExportLogsServiceRequest, headers: dict[str, str]
    ) -> None:
        with self._cond:
            if isinstance(request, ExportLogsServiceRequest):
                self._logs.append(ReceivedLogs(request, headers))
            else:
                self._received.append(Received(request, headers))
            self._cond.notify_all()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


def _flatten(received: Sequence[Received]) -> list[ReceivedSpan]:
    out: list[ReceivedSpan] = []
    for r in received:
        for rs in r.request.resource_spans:
            resource = attrs(rs.resource.attributes)
            for ss in rs.scope_spans:
                out.extend((resource, ss.scope.name, span) for span in ss.spans)
    return out


def _flatten_logs(received: Sequence[ReceivedLogs]) -> list[ReceivedRecord]:
    out: list[ReceivedRecord] = []
    for r in received:
        for rl in r.request.resource_logs:
            resource = attrs(rl.resource.attributes)
            for sl in rl.scope_logs:
                out.extend((resource, sl.scope.name, record) for record in sl.log_records)
    return out


# --------------------------------------------------------------------------- gRPC


@dataclass(frozen=True)
class _GrpcFailure:
    code: grpc.StatusCode
    details: str
    retry_delay_s: float | None


def _grpc_export(receiver: OtlpGrpcReceiver, request: Any, context: grpc.ServicerContext) -> None:
    failure = receiver._next_failure()
    if failure is not None:
        if failure.retry_delay_s is not None:
            seconds = int(failure.retry_delay_s)
            nanos = int((failure.retry_delay_s - seconds) * 1e9)
            info = RetryInfo(retry_delay=Duration(seconds=seconds, nanos=nanos))
            context.set_trailing_metadata((("google.rpc.retryinfo-bin", info.SerializeToString()),))
        context.abort(failure.code, failure.details)
    headers = {md.key.lower(): md.value for md in context.invocation_metadata()}
    receiver._record(request, headers)


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, receiver: OtlpGrpcReceiver) -> None:
        self._receiver = receiver

    def Export(
        self, request: ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> ExportTraceServiceResponse:
        _grpc_export(self._receiver, request, context)
        return ExportTraceServiceResponse()


class _LogsService(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self, receiver: OtlpGrpcReceiver) -> None:
        self._receiver = receiver

    def Export(
        self, request: ExportLogsServiceRequest, context: grpc.ServicerContext
    ) -> ExportLogsServiceResponse:
        _grpc_export(self._receiver, request, context)
        return ExportLogsServiceResponse()


class OtlpGrpcReceiver(_Receiver):
    """An OTLP/gRPC trace and logs receiver on ``127.0.0.1:<ephemeral port>``, started on creation.

    ``endpoint`` is ``127.0.0.1:<port>`` (use ``insecure=True`` without ``tls``); ``url`` is
    ``http://127.0.0.1:<port>``, or ``https://`` with ``tls`` (the scheme implies which).
    """

    def __init__(self, tls: ServerTls | None = None) -> None:
        super().__init__()
        self._executor = futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="otlp-grpc")
        self._server = grpc.server(self._executor)
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(self), self._server)
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(_LogsService(self), self._server)
        if tls is None:
            self.port = self._server.add_insecure_port("127.0.0.1:0")
        else:
            client_ca = Path(tls.client_ca_file).read_bytes() if tls.client_ca_file else None
            credentials = grpc.ssl_server_credentials(
                [(Path(tls.key_file).read_bytes(), Path(tls.cert_file).read_bytes())],
                root_certificates=client_ca,
                require_client_auth=client_ca is not None,
            )
            self.port = self._server.add_secure_port("127.0.0.1:0", credentials)
        self.endpoint = f"127.0.0.1:{self.port}"
        self.url = f"{'http' if tls is None else 'https'}://127.0.0.1:{self.port}"
        self._server.start()
        self._stopped = False

    def fail_with(
        self,
        code: grpc.StatusCode | None,
        *,
        times: int | None = None,
        details: str = "injected failure",
        retry_delay_s: float | None = None,
    ) -> None:
        """Answer the next ``times`` calls (all if None) with ``code``; ``None`` stops failing.

        ``retry_delay_s`` sends a ``google.rpc.RetryInfo`` the SDK exporter honours, so a retry
        test need not wait for the exponential backoff.
        """
        failure = None if code is None else _GrpcFailure(code, details, retry_delay_s)
        self._set_failure(failure, times)

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._server.stop(grace=None).wait(5)
        self._executor.shutdown(wait=True)


# --------------------------------------------------------------------------- HTTP


@dataclass(frozen=True)
class _HttpFailure:
    status: int
    retry_after_s: float | None


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    receiver: OtlpHttpReceiver
    ssl_context: ssl.SSLContext | None = None

    def finish_request(self, request: Any, client_address: Any) -> None:
        # The TLS handshake happens here, on the request's own thread, not in accept().
        if self.ssl_context is None:
            super().finish_request(request, client_address)
            return
        request.settimeout(10)
        try:
            tls_socket = self.ssl_context.wrap_socket(request, server_side=True)
        except OSError:  # ssl.SSLError is one: no (trusted) client certificate, unknown CA...
            self.receiver._handshake_failed()
            return
        try:
            super().finish_request(tls_socket, client_address)
        finally:
            tls_socket.close()


class _Handler(BaseHTTPRequestHandler):
    server: _HttpServer

    def do_POST(self) -> None:
        receiver = self.server.receiver
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        path = self.path.split("?", 1)[0]
        if path not in (receiver.path, receiver.logs_path):
            self._reply(404, b"not found", "text/plain")
            return
        logs = path == receiver.logs_path
        failure = receiver._next_failure()
        if failure is not None:
            extra = {}
            if failure.retry_after_s is not None:
                extra["Retry-After"] = f"{failure.retry_after_s:g}"
            self._reply(failure.status, b"injected failure", "text/plain", extra)
            return
        encoding = (self.headers.get("Content-Encoding") or "").lower()
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        try:
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding == "deflate":
                body = zlib.decompress(body)
            elif encoding not in ("", "identity"):
                self._reply(415, f"unsupported encoding {encoding}".encode(), "text/plain")
                return
            request: ExportTraceServiceRequest | ExportLogsServiceRequest
            if content_type == "application/json":
                request = decode_logs_json(body) if logs else decode_request_json(body)
            elif content_type == "application/x-protobuf":
                message = ExportLogsServiceRequest if logs else ExportTraceServiceRequest
                request = message.FromString(body)
            else:
                self._reply(415, f"unsupported type {content_type}".encode(), "text/plain")
                return
        except Exception as exc:
            self._reply(400, str(exc).encode(), "text/plain")
            return
        headers = {k.lower(): v for k, v in self.headers.items()}
        receiver._record(request, headers)
        if content_type == "application/json":
            self._reply(200, b"{}", "application/json")
        else:
            answer = ExportLogsServiceResponse() if logs else ExportTraceServiceResponse()
            payload = answer.SerializeToString()
            self._reply(200, payload, "application/x-protobuf")

    def _reply(
        self, status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, val in (extra or {}).items():
            self.send_header(name, val)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class OtlpHttpReceiver(_Receiver):
    """An OTLP/HTTP trace and logs receiver on ``127.0.0.1:<ephemeral port>``, started on creation.

    It accepts ``POST /v1/traces`` and ``POST /v1/logs`` with a protobuf or JSON body, plain,
    gzip or deflate. ``endpoint`` is the full traces URL, ``logs_endpoint`` the logs URL;
    ``base_url`` has no path; both are ``https://`` with
    ``tls``, and then ``handshake_failures`` counts the connections refused in the handshake.
    """

    path = "/v1/traces"
    logs_path = "/v1/logs"

    def __init__(self, tls: ServerTls | None = None) -> None:
        super().__init__()
        self._handshake_failures = 0
        self._server = _HttpServer(("127.0.0.1", 0), _Handler)
        self._server.receiver = self
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(tls.cert_file, tls.key_file)
            if tls.client_ca_file is not None:
                context.load_verify_locations(cafile=tls.client_ca_file)
                context.verify_mode = ssl.CERT_REQUIRED
            self._server.ssl_context = context
        self.port = self._server.server_address[1]
        self.base_url = f"{'http' if tls is None else 'https'}://127.0.0.1:{self.port}"
        self.endpoint = self.base_url + self.path
        self.logs_endpoint = self.base_url + self.logs_path
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="otlp-http",
            daemon=True,
        )
        self._thread.start()
        self._stopped = False

    @property
    def handshake_failures(self) -> int:
        with self._cond:
            return self._handshake_failures

    def _handshake_failed(self) -> None:
        with self._cond:
            self._handshake_failures += 1
            self._cond.notify_all()

    def fail_with(
        self, status: int | None, *, times: int | None = None, retry_after_s: float | None = None
    ) -> None:
        """Answer the next ``times`` posts (all if None) with HTTP ``status``; None stops.

        ``retry_after_s`` adds a ``Retry-After`` header, which the SDK exporter honours for
        429/502/503/504.
        """
        failure = None if status is None else _HttpFailure(status, retry_after_s)
        self._set_failure(failure, times)

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def otlp_grpc_receiver() -> Iterator[OtlpGrpcReceiver]:
    """A running OTLP/gRPC receiver, stopped after the test."""
    receiver = OtlpGrpcReceiver()
    try:
        yield receiver
    finally:
        receiver.stop()


@pytest.fixture
def otlp_http_receiver() -> Iterator[OtlpHttpReceiver]:
    """A running OTLP/HTTP receiver, stopped after the test."""
    receiver = OtlpHttpReceiver()
    try:
        yield receiver
    finally:
        receiver.stop()
