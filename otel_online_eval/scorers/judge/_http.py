"""The judge's HTTP transport: POST a body to one URL, get the status, headers and body.

:class:`Transport` is the seam (two methods); :class:`AiohttpTransport`, over aiohttp's client,
is the implementation. aiohttp parses the answers (its C parser), keeps the connections alive
and bounds them; this module adds what the judge needs on top:

- one :class:`aiohttp.ClientSession` per transport, made on the event loop that uses it, with
  a ``TCPConnector(limit=concurrency)``: at most ``concurrency`` connections, open or idle;
- the timeout: one deadline over the connect, the send and the whole answer;
- a bound on the answer's size *after* decompression (gzip / deflate are decoded by aiohttp
  in bounded steps; the body is read in chunks with a running total and the connection is
  dropped past the bound), so a compressed bomb costs a bounded amount of memory;
- ``HTTP(S)_PROXY`` / ``ALL_PROXY`` / ``NO_PROXY`` from the environment, read once (aiohttp's
  ``trust_env`` would read them, and ``~/.netrc``, in a thread for every request); loopback
  endpoints never go through a proxy; only ``http://`` proxies (https through ``CONNECT``);
- TLS verified against ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` when set, else the ``certifi``
  bundle (:func:`ssl_context`);
- no cookies, no redirects, and one immediate resend when a connection closes before any byte
  of the answer (a kept-alive connection the server dropped while the request was on its way;
  aiohttp resends only idempotent methods);
- errors as :class:`HttpError` (:class:`HttpTimeout`, :class:`HttpAnswerError`) with messages
  that name the server, never aiohttp's exception types.

No HTTP instrumentation traces judge calls: they run with OpenTelemetry instrumentation
suppressed, and the session is detached from ``opentelemetry-instrumentation-aiohttp-client``
when the application has instrumented aiohttp (no span, and no per-request cost).
"""

from __future__ import annotations

import asyncio
import os
import ssl
import sys
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlencode, urlsplit

import aiohttp
from yarl import URL

from otel_online_eval._aio import bounded

__all__ = [
    "AiohttpTransport",
    "HttpAnswerError",
    "HttpError",
    "HttpTimeout",
    "Response",
    "Transport",
    "proxy_for",
    "ssl_context",
]

_LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})
_ENCODINGS = frozenset({"", "identity", "gzip", "deflate"})  # what aiohttp decodes by itself
_ACCEPTED = "gzip, deflate"  # brotli and zstd need packages of their own: not asked for


class HttpError(Exception):
    """The exchange failed: no connection, the connection broke, or the answer is unusable."""


class HttpTimeout(HttpError):
    """No complete answer within the timeout."""


class HttpAnswerError(HttpError):
    """The server answered something that is not a usable HTTP answer (a bad head, a body
    that does not match its framing or encoding, or one larger than the bound)."""


@dataclass(frozen=True, slots=True)
class Response:
    """An answer; ``headers`` is case-insensitive."""

    status: int
    headers: Mapping[str, str]
    body: bytes


class Transport(Protocol):
    """What the judge needs from HTTP: one kind of request to one URL, and two ways to stop.

    A transport belongs to the event loop it was made on.
    """

    async def post(self, body: bytes, timeout: float) -> Response:
        """Send ``body``; the answer, whatever its status.

        Raises:
            HttpTimeout: no complete answer within ``timeout`` seconds.
            HttpError: could not connect, the connection broke, or the answer is unusable.
        """
        ...

    async def aclose(self) -> None:
        """Close every connection; later posts fail with :class:`HttpError`."""
        ...

    def forget(self) -> None:
        """Drop every connection without closing it (in a forked child, where they are the
        parent's); later posts fail with :class:`HttpError`."""
        ...


def ssl_context() -> ssl.SSLContext:
    """A verifying client context: ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` when set, else the
    ``certifi`` bundle when installed, else the system's."""
    cafile = None
    if not (os.environ.get("SSL_CERT_FILE") or os.environ.get("SSL_CERT_DIR")):
        try:
            import certifi

            cafile = certifi.where()
        except ImportError:
            pass
    context = ssl.create_default_context(cafile=cafile)
    context.set_alpn_protocols(["http/1.1"])
    return context


def proxy_for(url: str) -> tuple[URL | None, str | None]:
    """The proxy the environment names for ``url``: (proxy URL, None), (None, None) for a
    direct connection, or (None, why the named proxy cannot be used).

    ``HTTPS_PROXY`` / ``HTTP_PROXY`` by the URL's scheme, else ``ALL_PROXY``; ``NO_PROXY``
    (host names, domains, addresses, ``*``) and loopback hosts connect directly. A proxy
    without a scheme is ``http://``; ``user:password@`` in it is sent as Basic proxy
    authentication (to the proxy only).
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    if host in _LOOPBACK:
        return None, None
    proxies = urllib.request.getproxies_environment()
    raw = proxies.get(parts.scheme) or proxies.get("all")
    if not raw or urllib.request.proxy_bypass(host):
        return None, None
    proxy = URL(raw if "://" in raw else "http://" + raw)
    if proxy.scheme != "http" or not proxy.host:
        where = f"{proxy.scheme}://{proxy.host or ''}:{proxy.port or ''}"
        return None, f"the {parts.scheme} proxy {where} is not supported: only http:// proxies are"
    return proxy, None


def _detach_instrumentation(session: aiohttp.ClientSession) -> None:
    """Remove the trace config ``opentelemetry-instrumentation-aiohttp-client`` adds to every
    new session when the application instrumented aiohttp (its spans are suppressed for judge
    calls anyway; this spares every request its callbacks)."""
    module = sys.modules.get("opentelemetry.instrumentation.aiohttp_client")
    instrumentor = getattr(module, "AioHttpClientInstrumentor", None)
    uninstrument = getattr(instrumentor, "uninstrument_session", None)
    if uninstrument is not None:
        uninstrument(session)


def _one_line(text: str) -> str:
    return " ".join(text.split())


class AiohttpTransport:
    """POSTs to one URL through one aiohttp session; make it on the loop that will use it.

    Args:
        url: ``http://`` or ``https://`` URL, without a query.
        query: query parameters, appended to the URL.
        headers: request headers sent with every request.
        concurrency: the most connections open at once (in use or idle).
        max_body: the largest answer body accepted, in bytes after decompression.
        context: the TLS context for https; :func:`ssl_context` when None.

    Raises:
        ValueError: ``url`` is not an http(s) URL.
        RuntimeError: no event loop is running.
    """

    def __init__(
        self,
        url: str,
        query: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        *,
        concurrency: int,
        max_body: int,
        context: ssl.SSLContext | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        tls = parts.scheme == "https"
        self._server = f"{parts.hostname}:{parts.port or (443 if tls else 80)}"
        self._url = URL(url)
        if query:
            self._url = URL(f"{self._url}?{urlencode(dict(query))}", encoded=True)
        self._proxy, self._proxy_error = proxy_for(url)
        self._max_body = max_body
        connector = aiohttp.TCPConnector(
            limit=concurrency,
            ssl=(context or ssl_context()) if tls else True,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers={"Accept-Encoding": _ACCEPTED, **(headers or {})},
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(),  # no aiohttp timeouts: post() has one deadline
        )
        _detach_instrumentation(self._session)

    @property
    def is_closed(self) -> bool:
        return self._session.closed

    async def post(self, body: bytes, timeout: float) -> Response:
        """Send ``body``; the answer, whatever its status (see :class:`Transport`)."""
        if self._session.closed:
            raise HttpError("the HTTP client is closed")
        if self._proxy_error is not None:
            raise HttpError(self._proxy_error)
        try:
            return await bounded(self._exchange(body), timeout)
        except (asyncio.TimeoutError, TimeoutError):
            raise HttpTimeout(f"no answer within {timeout:.3g}s") from None
        except aiohttp.ClientError as exc:
            raise self._error(exc) from None

    async def _exchange(self, body: bytes) -> Response:
        resent = False
        while True:
            try:
                response = await self._session.post(
                    self._url, data=body, proxy=self._proxy, allow_redirects=False
                )
            except aiohttp.ClientConnectorError:
                raise
            except aiohttp.ServerDisconnectedError as exc:
                # A bare message: the connection closed before any byte of the answer.
                if resent or not isinstance(exc.message, str):
                    raise
            except aiohttp.ClientOSError:
                if resent:
                    raise  # reset before the answer, again
            else:
                try:
                    content = await self._read(response)
                except BaseException:
                    response.close()  # unread or too large: never reuse the connection
                    raise
                response.release()
                return Response(response.status, response.headers, content)
            resent = True

    async def _read(self, response: aiohttp.ClientResponse) -> bytes:
        limit = self._max_body
        encoding = response.headers.get("Content-Encoding", "").strip().lower()
        if encoding not in _ENCODINGS:
            raise HttpAnswerError(
                f"the answer from {self._server} has an unsupported Content-Encoding: "
                f"{encoding[:40]!r} (asked for {_ACCEPTED})"
            )
        length = response.content_length
        if length is not None and encoding in ("", "identity"):
            if length > limit:
                raise HttpAnswerError(
                    f"the answer from {self._server} has a Content-Length of {length}, "
                    f"over {limit} bytes"
                )
            return await response.read()  # the parser stops at Content-Length: bounded
        chunks = []
        total = 0
        async for chunk in response.content.iter_any():
            total += len(chunk)
            if total > limit:
                coded = f" (decoded from {encoding})" if encoding else ""
                raise HttpAnswerError(
                    f"the answer from {self._server} is larger than {limit} bytes{coded}"
                )
            chunks.append(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _error(self, exc: aiohttp.ClientError) -> HttpError:
        """The HttpError for what aiohttp raised, naming the server or the proxy."""
        server = self._server
        if isinstance(exc, aiohttp.ClientConnectorCertificateError):
            return HttpError(f"TLS with {server} failed: {exc.certificate_error}")
        if isinstance(exc, aiohttp.ClientConnectorSSLError):
            return HttpError(f"TLS with {server} failed: {exc.os_error}")
        if isinstance(exc, aiohttp.ClientProxyConnectionError):
            return HttpError(f"cannot connect to the proxy {exc.host}:{exc.port}: {exc.os_error}")
        if isinstance(exc, aiohttp.ClientConnectorError):
            return HttpError(f"cannot connect to {server}: {exc.os_error}")
        if isinstance(exc, aiohttp.ClientHttpProxyError):
            proxy = f"{self._proxy.host}:{self._proxy.port}" if self._proxy else "the proxy"
            return HttpError(
                f"the proxy {proxy} refused a tunnel to {server}: HTTP {exc.status} {exc.message}"
            )
        if isinstance(exc, aiohttp.ClientResponseError):
            # aiohttp's parser refused the head (its "status" is not the server's)
            problem = _one_line(exc.message)
            return HttpAnswerError(f"the answer from {server} is not valid HTTP: {problem}")
        if isinstance(exc, aiohttp.ClientPayloadError):
            problem = _one_line(getattr(exc.__cause__, "message", None) or str(exc))
            return HttpAnswerError(f"the answer's body from {server} is broken: {problem}")
        if isinstance(exc, aiohttp.ServerDisconnectedError):
            state = "unanswered" if isinstance(exc.message, str) else "in the middle of the answer"
            return HttpError(f"{server} closed the connection {state}")
        return HttpError(f"the exchange with {server} failed: {exc}")

    async def aclose(self) -> None:
        """Close every connection; later posts fail."""
        await self._session.close()

    def forget(self) -> None:
        """Drop the session without closing anything: in a forked child, whose connections
        and event loop are the parent's (closing them would write TLS close-notify alerts into
        the parent's connections and unregister its sockets from the epoll set that both
        processes share). Later posts fail."""
        connector = self._session.connector
        self._session.detach()
        if connector is not None:
            # Keeps BaseConnector.__del__ from closing the parent's transports when this is
            # collected; aiohttp has no public way to abandon a connector.
            connector._closed = True
