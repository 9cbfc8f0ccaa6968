"""The OTLP/HTTP receiver: ``POST /v1/traces``, ``GET /healthz``, ``GET /metrics``.

Bodies are ``application/x-protobuf`` or ``application/json`` (OTLP/JSON), optionally gzip
(``Content-Encoding: gzip``; the limit applies after decompression too). Answers follow the
OTLP/HTTP specification: 200 with ``partial_success`` for rejected spans, 400 for undecodable
bodies, 413 above the size limit, 415 for other media types, 401 without the bearer token,
503 with ``Retry-After`` when overloaded or draining. Errors carry a ``google.rpc.Status``
in the request's encoding.
"""

from __future__ import annotations

import hmac
import json
import logging
import socket
import ssl
import sys
import threading
import zlib
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from google.protobuf.json_format import MessageToDict
from google.rpc.status_pb2 import Status as RpcStatus
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceResponse,
)

from otel_online_eval.sidecar.config import AuthConfig, HttpReceiverConfig, TlsConfig
from otel_online_eval.sidecar.ingest import Ingest

__all__ = ["HttpReceiver"]

logger = logging.getLogger(__name__)

_TYPES = {"application/x-protobuf": "protobuf", "application/json": "json"}


class _TooLarge(Exception):
    pass


def _gunzip(data: bytes, limit: int) -> bytes:
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    out = inflater.decompress(data, limit + 1)
    if len(out) > limit or inflater.unconsumed_tail:
        raise _TooLarge
    if not inflater.eof:
        raise zlib.error("truncated gzip stream")
    return out


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], receiver: HttpReceiver, reuse_port: bool) -> None:
        self.receiver = receiver
        self._reuse_port = reuse_port
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        if self._reuse_port and hasattr(socket, "SO_REUSEPORT"):
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver's default prints a traceback to stderr, outside the JSON logs, for every
        # client that fails the TLS handshake or hangs up mid-request: log one line instead.
        exc = sys.exc_info()[1]
        peer = client_address[0] if isinstance(client_address, tuple) else client_address
        if isinstance(exc, ssl.SSLError):
            logger.warning("TLS error with HTTP client %s: %s", peer, exc)
        elif isinstance(exc, (ConnectionError, TimeoutError)):
            logger.debug("HTTP client %s went away: %s", peer, exc)
        else:
            logger.exception("Error while serving an HTTP request from %s", peer)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "otel-online-eval"
    timeout = 120  # seconds a kept-alive connection may idle before its thread is freed

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s " + format, self.address_string(), *args)

    # -- routing -----------------------------------------------------------------------------

    def do_GET(self) -> None:
        receiver = self.server.receiver
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            ok = receiver.serving
            self._send(200 if ok else 503, b"ok\n" if ok else b"draining\n", "text/plain")
        elif path == "/metrics":
            if not self._authorized():
                self._send(401, b"missing or wrong bearer token\n", "text/plain")
                return
            body = receiver.metrics_text().encode()
            self._send(200, body, "text/plain; version=0.0.4; charset=utf-8")
        else:
            self._send(404, b"not found\n", "text/plain")

    def do_POST(self) -> None:
        receiver = self.server.receiver
        stats = receiver.ingest.stats
        if self.path.split("?", 1)[0] != "/v1/traces":
            self._drain_body()
            self._send(404, b"not found\n", "text/plain")
            return
        media = (self.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
        fmt = _TYPES.get(media, "protobuf")
        if not self._authorized():
            self._drain_body()
            stats.request("http", "unauthenticated", 0)
            self._error(401, "missing or wrong bearer token", fmt)
            return
        if media not in _TYPES:
            self._drain_body()
            stats.request("http", "unsupported_media_type", 0)
            self._error(
                415,
                f"unsupported Content-Type {media!r}; use application/x-protobuf "
                "or application/json",
                "protobuf",
            )
            return
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            stats.request("http", "invalid", 0)
            self.close_connection = True
            self._error(411, "Content-Length is required", fmt)
            return
        size, limit = int(length), receiver.config.max_body_bytes
        if size > limit:
            stats.request("http", "too_large", size)
            self.close_connection = True
            self._error(413, f"body of {size} bytes is over the limit of {limit}", fmt)
            return
        body = self.rfile.read(size)
        encoding = (self.headers.get("Content-Encoding") or "identity").strip().lower()
        try:
            if encoding == "gzip":
                body = _gunzip(body, limit)
            elif encoding not in ("identity", ""):
                stats.request("http", "invalid", size)
                self._error(415, f"unsupported Content-Encoding {encoding!r}", fmt)
                return
        except _TooLarge:
            stats.request("http", "too_large", size)
            self._error(413, f"decompressed body is over the limit of {limit} bytes", fmt)
            return
        except (zlib.error, EOFError) as exc:
            stats.request("http", "invalid", size)
            self._error(400, f"cannot decompress the gzip body: {exc}", fmt)
            return
        result = receiver.ingest.handle(body, fmt)
        stats.request("http", result.status, size)
        if result.status == "invalid":
            self._error(400, result.message, fmt)
        elif result.status == "unavailable":
            delay = max(1, round(result.retry_after_s or 1))
            self._error(503, result.message, fmt, {"Retry-After": str(delay)})
        else:
            response = ExportTraceServiceResponse()
            if result.rejected:
                response.partial_success.CopyFrom(
                    ExportTracePartialSuccess(
                        rejected_spans=result.rejected, error_message=result.message
                    )
                )
            self._message(200, response, fmt)

    # -- helpers -----------------------------------------------------------------------------

    def _authorized(self) -> bool:
        expected = self.server.receiver.expected_auth
        if expected is None:
            return True
        given = (self.headers.get("Authorization") or "").encode()
        return hmac.compare_digest(given, expected)

    def _drain_body(self) -> None:
        length = self.headers.get("Content-Length")
        if (
            length
            and length.isdigit()
            and int(length) <= self.server.receiver.config.max_body_bytes
        ):
            self.rfile.read(int(length))
        else:
            self.close_connection = True

    def _error(
        self, status: int, message: str, fmt: str, headers: dict[str, str] | None = None
    ) -> None:
        code = {400: 3, 401: 16, 411: 3, 413: 8, 415: 3, 503: 14}.get(status, 2)
        self._message(status, RpcStatus(code=code, message=message), fmt, headers)

    def _message(
        self, status: int, message: Any, fmt: str, headers: dict[str, str] | None = None
    ) -> None:
        if fmt == "json":
            body = json.dumps(MessageToDict(message)).encode()
            self._send(status, body, "application/json", headers)
        else:
            self._send(status, message.SerializeToString(), "application/x-protobuf", headers)

    def _send(
        self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)


class HttpReceiver:
    """Serves OTLP/HTTP, health and metrics on ``config.endpoint``."""

    def __init__(
        self,
        config: HttpReceiverConfig,
        ingest: Ingest,
        metrics_text: Callable[[], str],
        tls: TlsConfig | None = None,
        auth: AuthConfig | None = None,
        reuse_port: bool = False,
    ) -> None:
        self.config = config
        self.ingest = ingest
        self.metrics_text = metrics_text
        self.expected_auth = f"Bearer {auth.bearer_token}".encode() if auth else None
        self.serving = True
        host, _, port = config.endpoint.rpartition(":")
        try:
            self._server = _Server((host.strip("[]"), int(port)), self, reuse_port)
        except OSError as exc:  # say which address: "Address already in use" alone does not
            raise OSError(
                f"cannot listen for OTLP/HTTP on {config.endpoint}: {exc.strerror or exc}"
            ) from exc
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(tls.cert_file, tls.key_file)
            if tls.client_ca_file:
                context.load_verify_locations(tls.client_ca_file)
                context.verify_mode = ssl.CERT_REQUIRED
            # The handshake happens in the handler's thread, not in the accepting one.
            self._server.socket = context.wrap_socket(
                self._server.socket, server_side=True, do_handshake_on_connect=False
            )
        self.port = self._server.server_address[1]
        self.endpoint = f"{host}:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="otlp-http", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
