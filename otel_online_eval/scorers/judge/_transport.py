"""An httpx transport that gives each concurrent request a connection of its own.

httpcore's connection pool looks at every connection for every queued request each time a
request starts or ends (``_assign_requests_to_connections``, with a ``poll()`` per idle
connection), so with 64 requests in flight a judge call cost about 7 ms of CPU. The judge
already bounds its requests in flight with a semaphore, so it does not need a shared pool: this
transport keeps one single-connection ``httpx.AsyncHTTPTransport`` per slot and lends a free
one to each request until its response is closed. Keep-alive, TLS, proxies from the
environment and OpenTelemetry's httpx instrumentation (which wraps ``AsyncHTTPTransport``) all
work as with the default transport.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx

__all__ = ["SlotTransport"]


class _Returning(httpx.AsyncByteStream):
    """A response body that gives its slot back when it is closed."""

    def __init__(self, inner: httpx.AsyncByteStream, done: Callable[[], None]) -> None:
        self._inner = inner
        self._done: Callable[[], None] | None = done

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            done, self._done = self._done, None
            if done is not None:
                done()


class SlotTransport(httpx.AsyncBaseTransport):
    """``slots`` single-connection transports lent out one request at a time.

    Args:
        slots: how many requests are expected in flight at once (more still work: an extra
            transport is made for each request beyond them).
        tls: whether the endpoint is https (else no CA bundle is loaded).
        options: keyword arguments for each ``httpx.AsyncHTTPTransport``.
    """

    def __init__(self, slots: int, tls: bool = True, **options: Any) -> None:
        # One TLS context for all: making one reads the CA bundle (tens of ms each). A plain
        # http:// endpoint needs none (the judge follows no redirects): an empty one will do.
        if "verify" not in options:
            options["verify"] = (
                httpx.create_ssl_context() if tls else ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            )
        self._options = options
        self._all = [self._make() for _ in range(slots)]
        self._free = list(self._all)

    def _make(self) -> httpx.AsyncHTTPTransport:
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        return httpx.AsyncHTTPTransport(limits=limits, **self._options)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._free:
            transport = self._free.pop()
        else:
            transport = self._make()
            self._all.append(transport)
        try:
            response = await transport.handle_async_request(request)
        except BaseException:
            self._free.append(transport)
            raise
        stream = response.stream
        assert isinstance(stream, httpx.AsyncByteStream)
        response.stream = _Returning(stream, lambda: self._free.append(transport))
        return response

    async def aclose(self) -> None:
        for transport in self._all:
            await transport.aclose()
