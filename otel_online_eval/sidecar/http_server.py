"""The OTLP/HTTP receiver on ``aiohttp.web``: ``POST /v1/traces`` and ``/v1/logs``, ``/healthz``,
``/metrics``.

Bodies are ``application/x-protobuf`` or ``application/json`` (OTLP/JSON), sized by
``Content-Length`` or chunked, optionally gzip (``Content-Encoding: gzip``). The body is read
and decompressed as it arrives, every gzip member in turn (RFC 1952: the body is their
concatenation), with ``max_body_bytes`` applied to what is sent and to what it decompresses to.
Answers follow the OTLP/HTTP specification: 200 with ``partial_success`` for rejected spans
(or log records),
400 for undecodable bodies, 413 above the size limit, 415 for other media types, 401 without the
bearer token, 408 for a body slower than ``read_timeout_s``, 503 with ``Retry-After`` when
overloaded or draining, 500 if handling fails unexpectedly. Errors carry a ``google.rpc.Status``
in the request's encoding. aiohttp's parser answers 400 to malformed heads (a ``Content-Length``
that is not digits, two different ones, bad chunked framing) and closes the connection.

Four threads (``otlp-http_0`` to ``_3``) each run an asyncio loop. The first accepts at most
``max_connections`` connections at a time (the next ones wait in the listen backlog until one
closes) and hands each to the loop serving the fewest. A connection that sends no complete head
within ``read_timeout_s`` (of connecting, or of its previous answer) is closed. Requests are
handled on their loop: decoding and routing one is CPU work under the GIL (about 1 ms per 512
spans); a hop to a thread pool measured more CPU per span, and a single loop too small a share
of the GIL against the engine's thread (benchmarks/README.md, HTTP).
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
import zlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http import HttpVersion11, RawRequestMessage
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler, RequestPayloadError
from aiohttp.web_request import BaseRequest
from google.protobuf.json_format import MessageToDict
from google.rpc.status_pb2 import Status as RpcStatus

from otel_online_eval._aio import bounded
from otel_online_eval._threads import name_os_thread
from otel_online_eval.sidecar.config import (
    AuthConfig,
    HttpReceiverConfig,
    TlsConfig,
    server_ssl_context,
)
from otel_online_eval.sidecar.ingest import Ingest, IngestResult, export_response

__all__ = ["STATUSES", "HttpReceiver"]

logger = logging.getLogger(__name__)

STATUSES = frozenset({200, 400, 401, 404, 405, 408, 413, 415, 417, 500, 503, 505})
"""Every status the receiver answers with (aiohttp's parser adds only 400s of its own); the
README's table says when."""

_TYPES = {"application/x-protobuf": "protobuf", "application/json": "json"}
_GZIP = 16 + zlib.MAX_WBITS
# Connections past max_connections (and bursts the accepting loop has not reached yet) wait
# here; a full backlog makes the kernel drop handshakes, which clients retry only after 1, 2,
# 4 s. The kernel caps it at net.core.somaxconn.
_BACKLOG = socket.SOMAXCONN
_READ_BUFFER = 1 << 20  # bytes buffered per connection before reading from it pauses
_LOOPS = 4  # threads, each an asyncio loop (see the module docstring)
# google.rpc.Code for each answer (OTLP/HTTP puts a Status in error bodies).
_RPC_CODES = {
    400: 3,
    401: 16,
    404: 5,
    405: 12,
    408: 4,
    413: 8,
    415: 3,
    417: 3,
    500: 13,
    503: 14,
    505: 12,
}
_VERSION = "otel_online_eval.http_version"  # request key: a version we do not speak
_SERVER = "otel-online-eval"
_PLAIN = "text/plain; charset=utf-8"


class _RateLimitedLog:
    """Logs a kind of problem at most once per ``every_s``, saying how many were not logged."""

    def __init__(self, every_s: float = 10.0) -> None:
        self._every = every_s
        self._last: dict[str, float] = {}
        self._quiet: dict[str, int] = {}

    def __call__(self, level: int, kind: str, msg: str, *args: Any, exc_info: bool = False) -> None:
        now = time.monotonic()
        if now - self._last.get(kind, -self._every) < self._every:
            self._quiet[kind] = self._quiet.get(kind, 0) + 1
            return
        if len(self._last) > 256:  # kinds come from clients' errors: keep few
            self._last.clear()
        self._last[kind] = now
        quiet = self._quiet.pop(kind, 0)
        if quiet:
            msg += " (%d more like it since the last report)"
            args = (*args, quiet)
        logger.log(level, msg, *args, exc_info=exc_info)


class _BodyError(Exception):
    """A body that cannot be taken: the answer's status and message."""

    def __init__(self, status: int, outcome: str, message: str) -> None:
        super().__init__(message)
        self.status, self.outcome, self.message = status, outcome, message


class _Gunzip:
    """Decompresses a gzip body fed in pieces: every member, in order, ``limit`` bytes at most
    for all of them together."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = 0
        self.members = 0
        self.parts: list[bytes] = []
        self._inflater: Any = None  # zlib's Decompress type is not importable

    def feed(self, data: bytes) -> None:
        while data:
            if self._inflater is None or self._inflater.eof:
                self._inflater = zlib.decompressobj(_GZIP)
                self.members += 1
            try:
                out = self._inflater.decompress(data, self.limit - self.size + 1)
            except zlib.error as exc:
                if self.members > 1:
                    problem = (
                        f"the bytes after gzip member {self.members - 1} are not a gzip "
                        f"member ({exc})"
                    )
                else:
                    problem = str(exc)
                raise _BodyError(
                    400, "invalid", f"cannot decompress the gzip body: {problem}"
                ) from None
            self.size += len(out)
            if self.size > self.limit:
                raise _BodyError(
                    413,
                    "too_large",
                    f"decompressed body is over the limit of {self.limit} bytes",
                )
            if out:
                self.parts.append(out)
            inflater = self._inflater
            data = inflater.unused_data if inflater.eof else inflater.unconsumed_tail

    def finish(self) -> bytes:
        if self._inflater is None:
            raise _BodyError(400, "invalid", "cannot decompress the gzip body: it is empty")
        if not self._inflater.eof:
            raise _BodyError(
                400,
                "invalid",
                f"cannot decompress the gzip body: gzip member {self.members} is truncated",
            )
        return b"".join(self.parts)


class _Connection(RequestHandler):
    """aiohttp's connection handler, with its errors counted and logged in one line."""

    receiver: HttpReceiver

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        # A head the parser refused (400), or a failure past our handler (500).
        outcome = "invalid" if status == 400 else "error"
        self.receiver.ingest.stats.request("http", outcome, 0)
        return super().handle_error(request, status, exc, message)

    def log_exception(self, *args: Any, **kw: Any) -> None:
        # aiohttp logs a traceback for each bad head; one rate-limited line says enough.
        exc = kw.get("exc_info")
        peer = self.peername[0] if isinstance(self.peername, tuple) else self.peername
        self.receiver.log(
            logging.WARNING, "protocol", "HTTP request from %s refused: %r", peer, exc
        )


class _Server(web.Server):
    """aiohttp's low-level server, telling its loop when a connection ends."""

    def __init__(self, worker: _Loop, **kwargs: Any) -> None:
        super().__init__(worker.receiver.handle, request_factory=self._request, **kwargs)
        self._worker = worker
        self._handler_kwargs = kwargs

    def _request(
        self,
        message: RawRequestMessage,
        payload: StreamReader,
        protocol: RequestHandler,
        writer: AbstractStreamWriter,
        task: asyncio.Task[None],
    ) -> BaseRequest:
        # aiohttp's parser takes any HTTP/<digit>.<digit> and answers in the same version:
        # a request in HTTP/2.0 framing of HTTP/1 would get "HTTP/2.0 200". Answer such
        # requests 505, in HTTP/1.1.
        version = message.version
        if version.major != 1:
            message = message._replace(version=HttpVersion11, should_close=True)
        request = BaseRequest(message, payload, protocol, writer, task, self._worker.loop)
        if version.major != 1:
            request[_VERSION] = f"HTTP/{version.major}.{version.minor}"
        return request

    def __call__(self) -> RequestHandler:
        handler = _Connection(self, loop=asyncio.get_running_loop(), **self._handler_kwargs)
        handler.receiver = self._worker.receiver
        return handler

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        super().connection_lost(handler, exc)
        self._worker.connection_closed()


class _Loop:
    """One thread running an asyncio loop that serves the connections handed to it."""

    def __init__(self, receiver: HttpReceiver, name: str) -> None:
        self.receiver = receiver
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.connections = 0  # counted on the accepting loop only (see HttpReceiver)
        self._server: _Server | None = None  # made on the loop, in _setup
        self._handshakes: set[asyncio.Task[None]] = set()

    def _run(self) -> None:
        name_os_thread()
        loop = self.loop
        asyncio.set_event_loop(loop)
        loop.set_exception_handler(self._loop_error)
        try:
            loop.run_until_complete(self._setup())
        except Exception as exc:  # reported by start()
            self.error = exc
            self.ready.set()
            loop.close()
            return
        self.ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    async def _setup(self) -> None:
        self._server = _Server(
            self,
            # aiohttp closes a connection whose next head is not complete in this time.
            keepalive_timeout=self.receiver.config.read_timeout_s,
            # A body left unread closes the connection at once (see _discard).
            lingering_time=0,
            auto_decompress=False,  # we decompress, with limits, every member
            read_bufsize=_READ_BUFFER,
            access_log=None,
        )

    def _loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        self.receiver.log(
            logging.ERROR,
            "loop",
            "Error in the OTLP/HTTP receiver's loop: %s",
            context.get("message"),
            exc_info=exc is not None,
        )

    def open(self, conn: socket.socket, peer: Any) -> None:
        """Serve an accepted connection (called on this loop)."""
        task = self.loop.create_task(self._connect(conn, peer))
        self._handshakes.add(task)
        task.add_done_callback(self._handshakes.discard)

    async def _connect(self, conn: socket.socket, peer: Any) -> None:
        assert self._server is not None
        tls = self.receiver.ssl_context
        try:
            await self.loop.connect_accepted_socket(
                self._server,
                conn,
                ssl=tls,
                ssl_handshake_timeout=self.receiver.config.read_timeout_s if tls else None,
            )
        except BaseException as exc:
            # No connection was made (a failed or late TLS handshake): its slot is free again.
            conn.close()
            self.connection_closed()
            if not isinstance(exc, Exception):  # cancelled: the receiver is stopping
                raise
            host = peer[0] if isinstance(peer, tuple) else peer
            reason = getattr(exc, "reason", None) or type(exc).__name__
            if tls is None:
                what = "Cannot serve an HTTP connection from %s: %s"
            else:
                what = "TLS error with HTTP client %s: %s"
            self.receiver.log(logging.WARNING, f"connect {reason}", what, host, exc)

    def connection_closed(self) -> None:
        """A connection of this loop ended: its slot is free for the next one."""
        self.receiver.slot_freed(self)

    async def shutdown(self, grace_s: float) -> None:
        for task in list(self._handshakes):
            task.cancel()
        await asyncio.gather(*self._handshakes, return_exceptions=True)
        if self._server is not None:
            self._server.pre_shutdown()  # idle kept-alive connections close now
            await self._server.shutdown(grace_s)


def _listen(endpoint: str, reuse_port: bool) -> socket.socket:
    host, _, port = endpoint.rpartition(":")
    host = host.strip("[]")
    infos = socket.getaddrinfo(
        host or None, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    infos.sort(key=lambda info: info[0] != socket.AF_INET)  # IPv4 first for names
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port and hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        sock.listen(_BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class HttpReceiver:
    """Serves OTLP/HTTP, health and metrics on ``config.endpoint``.

    Args:
        config: endpoint, limits and timeouts.
        ingest: what to do with requests.
        metrics_text: the ``/metrics`` page (called on a helper thread: it may read files).
        tls: server TLS, if any.
        auth: the bearer token, if required.
        reuse_port: share the port with other worker processes (SO_REUSEPORT).

    Raises:
        OSError: the address cannot be listened on, or a TLS file cannot serve (the message
            names the endpoint, or the field and the file).
    """

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
        self.auth = auth
        self.serving = True
        self.log = _RateLimitedLog()
        self.ssl_context = server_ssl_context(tls) if tls is not None else None
        try:
            self.sock = _listen(config.endpoint, reuse_port)
        except OSError as exc:  # say which address: "Address already in use" alone does not
            raise OSError(
                f"cannot listen for OTLP/HTTP on {config.endpoint}: {exc.strerror or exc}"
            ) from exc
        self.port = int(self.sock.getsockname()[1])
        self.endpoint = f"{config.endpoint.rpartition(':')[0]}:{self.port}"
        self._loops = [_Loop(self, f"otlp-http_{i}") for i in range(_LOOPS)]
        self._acceptor = self._loops[0].loop
        self._slots: asyncio.Semaphore | None = None  # on the acceptor's loop
        self._accepting: Future[None] | None = None
        self._helpers = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="otlp-http-io", initializer=name_os_thread
        )

    @property
    def connections(self) -> int:
        """Connections open now (or in their TLS handshake)."""
        return sum(worker.connections for worker in self._loops)

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Start serving; returns once connections are being accepted.

        Raises:
            RuntimeError: a loop could not be set up.
        """
        for worker in self._loops:
            worker.thread.start()
        for worker in self._loops:
            if not worker.ready.wait(10) or worker.error is not None:
                raise RuntimeError(f"the OTLP/HTTP receiver did not start: {worker.error}")
        self._accepting = asyncio.run_coroutine_threadsafe(self._accept(), self._acceptor)

    def stop(self, grace_s: float = 5.0) -> None:
        """Stop accepting, let requests in progress finish for ``grace_s``, close the rest."""
        deadline = time.monotonic() + grace_s + 5
        if self._accepting is not None:
            self._accepting.cancel()
        running = [w for w in self._loops if w.thread.is_alive()]
        futures = [asyncio.run_coroutine_threadsafe(w.shutdown(grace_s), w.loop) for w in running]
        for future in futures:
            try:
                future.result(max(0.0, deadline - time.monotonic()))
            except Exception:  # stopping goes on whatever happened
                logger.warning("The OTLP/HTTP receiver did not stop cleanly", exc_info=True)
        self.sock.close()
        for worker in running:
            worker.loop.call_soon_threadsafe(worker.loop.stop)
        for worker in running:
            worker.thread.join(max(0.1, deadline - time.monotonic()))
        for worker in self._loops:
            if worker.thread.ident is None:  # never started: its loop is ours to close
                worker.loop.close()
        self._helpers.shutdown(wait=False)

    # -- connections ---------------------------------------------------------------------------

    async def _accept(self) -> None:
        """Accept (on the first loop) while a slot is free, and hand each connection to the
        loop serving the fewest."""
        loop = asyncio.get_running_loop()
        self._slots = slots = asyncio.Semaphore(self.config.max_connections)
        while True:
            await slots.acquire()  # at the limit, new connections wait in the backlog
            try:
                conn, peer = await loop.sock_accept(self.sock)
            except asyncio.CancelledError:
                slots.release()
                raise
            except OSError as exc:  # out of file descriptors, and the like: try again soon
                slots.release()
                self.log(logging.ERROR, "accept", "Cannot accept an HTTP connection: %s", exc)
                await asyncio.sleep(0.1)
                continue
            worker = min(self._loops, key=lambda w: w.connections)
            worker.connections += 1
            if worker.loop is loop:
                worker.open(conn, peer)
            else:
                worker.loop.call_soon_threadsafe(worker.open, conn, peer)

    def slot_freed(self, worker: _Loop) -> None:
        """A connection of ``worker`` ended (called on its loop)."""
        if self._acceptor.is_closed():
            return
        try:
            self._acceptor.call_soon_threadsafe(self._release, worker)
        except RuntimeError:  # the acceptor's loop is closing: nothing to accept for
            pass

    def _release(self, worker: _Loop) -> None:
        worker.connections -= 1
        if self._slots is not None:
            self._slots.release()

    # -- requests ------------------------------------------------------------------------------

    async def handle(self, request: BaseRequest) -> web.StreamResponse:
        """Answer one request; never raises (a failure is a 500 that says so)."""
        try:
            return await self._route(request)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a client always gets an answer
            self.ingest.stats.request("http", "error", 0)
            self.log(
                logging.ERROR,
                "handler",
                "Error while handling an HTTP request to %s",
                request.path,
                exc_info=True,
            )
            response = _text(500, f"internal error: {type(exc).__name__}: {exc}\n")
            response.force_close()
            return response

    async def _route(self, request: BaseRequest) -> web.StreamResponse:
        version = request.get(_VERSION)
        if version is not None:
            response = _text(505, f"{version} is not supported; use HTTP/1.1\n")
            response.force_close()
            return response
        path = request.raw_path.split("?", 1)[0]
        method = request.method
        if path == "/v1/traces" or path == "/v1/logs":
            if method == "POST":
                return await self._export(request, logs=path == "/v1/logs")
            return await self._refuse(request, _allow(405, "POST"))
        if path in ("/healthz", "/metrics"):
            if method not in ("GET", "HEAD"):
                return await self._refuse(request, _allow(405, "GET, HEAD"))
            if path == "/healthz":
                ok = self.serving
                return _text(200 if ok else 503, "ok\n" if ok else "draining\n")
            if not self._authorized(request):
                return await self._refuse(request, _text(401, "missing or wrong bearer token\n"))
            loop = asyncio.get_running_loop()
            text = await loop.run_in_executor(self._helpers, self.metrics_text)
            return _response(200, text.encode(), "text/plain; version=0.0.4; charset=utf-8")
        return await self._refuse(request, _text(404, "not found\n"))

    async def _export(self, request: BaseRequest, logs: bool = False) -> web.StreamResponse:
        stats = self.ingest.stats
        count = stats.log_request if logs else stats.request
        headers = request.headers
        media = headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        fmt = _TYPES.get(media, "protobuf")
        if not self._authorized(request):
            count("http", "unauthenticated", 0)
            return await self._refuse(request, _error(401, "missing or wrong bearer token", fmt))
        if media not in _TYPES:
            count("http", "unsupported_media_type", 0)
            message = (
                f"unsupported Content-Type {media!r}; use application/x-protobuf or "
                "application/json"
            )
            return await self._refuse(request, _error(415, message, "protobuf"))
        encoding = headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("gzip", "identity", ""):
            count("http", "invalid", 0)
            message = f"unsupported Content-Encoding {encoding!r}; use gzip or identity"
            return await self._refuse(request, _error(415, message, fmt))
        limit = self.config.max_body_bytes
        length = request.content_length
        if length is not None and length > limit:
            count("http", "too_large", length)
            response = _error(413, f"body of {length} bytes is over the limit of {limit}", fmt)
            response.force_close()  # its bytes are not read
            return response
        expect = headers.get("Expect")
        if expect is not None:
            if expect.lower() != "100-continue":
                return await self._refuse(
                    request, _error(417, f"cannot meet Expect: {expect}", fmt)
                )
            if request.version >= (1, 1):
                await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                request.writer.output_size = 0  # the answer is still to come
        try:
            body, size, members = await bounded(
                _read_body(request, encoding == "gzip", limit), self.config.read_timeout_s
            )
        except _BodyError as exc:
            count("http", exc.outcome, request.content.total_bytes)
            response = _error(exc.status, exc.message, fmt)
            if exc.status != 413:  # not gzip: the rest can be read, the connection kept
                return await self._refuse(request, response)
            if not request.content.is_eof():
                response.force_close()
            return response
        except asyncio.TimeoutError:
            count("http", "timeout", request.content.total_bytes)
            message = f"the body was not received within {self.config.read_timeout_s:g}s"
            response = _error(408, message, fmt)
            response.force_close()
            return response
        except RequestPayloadError as exc:  # bad chunked framing, a body cut short
            count("http", "invalid", request.content.total_bytes)
            response = _error(400, f"cannot read the body: {exc}", fmt)
            response.force_close()
            return response
        handler = self.ingest.logs if logs else self.ingest
        if handler is None:  # no logs door (never in the sidecar)
            return _error(404, "this receiver takes no log records", fmt)
        result = handler.handle(body, fmt)
        count("http", result.status, size)
        if result.status == "invalid" and fmt == "json" and members > 1:
            message = (
                f"{result.message} (the body had {members} gzip members: together they must "
                "be one JSON document)"
            )
            return _error(400, message, fmt)
        return _answer(result, fmt, logs)

    async def _refuse(self, request: BaseRequest, response: web.Response) -> web.Response:
        """``response`` after the request's body is read and dropped, so that the connection
        serves the next request; or with the connection closed, when the body is over the
        limit, slow, or waits for a ``100 Continue`` that a refusal does not send."""
        if not await _discard(request, self.config.max_body_bytes, self.config.read_timeout_s):
            response.force_close()
        return response

    def _authorized(self, request: BaseRequest) -> bool:
        if self.auth is None:
            return True
        return self.auth.accepts(request.headers.get("Authorization"))


async def _read_body(request: BaseRequest, gzipped: bool, limit: int) -> tuple[bytes, int, int]:
    """The body, decompressed; the bytes received and the number of gzip members.

    Raises:
        _BodyError: over the limit (as sent or decompressed), or not gzip.
    """
    content = request.content
    gunzip = _Gunzip(limit) if gzipped else None
    parts: list[bytes] = []
    size = 0
    while True:
        chunk = await content.readany()
        if not chunk:
            break
        size += len(chunk)
        if size > limit:
            raise _BodyError(413, "too_large", f"body is over the limit of {limit} bytes")
        if gunzip is not None:
            gunzip.feed(chunk)
        else:
            parts.append(chunk)
    if gunzip is not None:
        return gunzip.finish(), size, gunzip.members
    return b"".join(parts), size, 0


async def _discard(request: BaseRequest, limit: int, timeout_s: float) -> bool:
    """Read and drop the body; False when the connection must close instead."""
    content = request.content
    if content.is_eof():
        return True
    if request.headers.get("Expect") is not None:
        return False
    length = request.content_length
    if length is not None and length > limit:
        return False

    async def drain() -> bool:
        size = 0
        while chunk := await content.readany():
            size += len(chunk)
            if size > limit:
                return False
        return True

    try:
        return await bounded(drain(), timeout_s)
    except (asyncio.TimeoutError, RequestPayloadError):
        return False


def _allow(status: int, methods: str) -> web.Response:
    response = _text(status, "method not allowed\n")
    response.headers["Allow"] = methods
    return response


def _response(
    status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status,
        body=body,
        headers={"Content-Type": content_type, "Server": _SERVER, **(headers or {})},
    )


def _text(status: int, text: str) -> web.Response:
    return _response(status, text.encode(), _PLAIN)


def _message(
    status: int, message: Any, fmt: str, headers: dict[str, str] | None = None
) -> web.Response:
    if fmt == "json":
        body = json.dumps(MessageToDict(message)).encode()
        return _response(status, body, "application/json", headers)
    return _response(status, message.SerializeToString(), "application/x-protobuf", headers)


def _error(
    status: int, message: str, fmt: str, headers: dict[str, str] | None = None
) -> web.Response:
    status_message = RpcStatus(code=_RPC_CODES.get(status, 2), message=message)
    return _message(status, status_message, fmt, headers)


def _answer(result: IngestResult, fmt: str, logs: bool) -> web.Response:
    if result.status == "invalid":
        return _error(400, result.message, fmt)
    if result.status == "internal":  # a defect of ours, logged by Ingest: not retryable
        return _error(500, result.message, fmt)
    if result.status == "unavailable":
        delay = max(1, round(result.retry_after_s or 1))
        return _error(503, result.message, fmt, {"Retry-After": str(delay)})
    return _message(200, export_response(result, logs), fmt)
