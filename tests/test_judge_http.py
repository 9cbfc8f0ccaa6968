"""The judge's HTTP transport (``scorers.judge._http``, aiohttp's client) against real servers.

Every server here is a small asyncio server on 127.0.0.1 in the test's own event loop that
reads the client's bytes and answers with scripted bytes, so a test states what went over the
wire, broken answers included. The proxy is a small CONNECT / absolute-form proxy that sends
every connection to one upstream server, whatever the target's name (so ``judge.test`` needs
no DNS). Certificates come from ``tests/pki.py``. What aiohttp's parser does byte by byte is
aiohttp's to test; these tests check what the judge relies on: the request, keep-alive and
the connection bound, timeouts, the size bound after decompression, broken answers as errors,
TLS, proxies from the environment.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import json
import os
import socket
import ssl
import subprocess
import sys
import textwrap
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from otel_online_eval import ScorerError
from otel_online_eval.scorers.base import EvalInput
from otel_online_eval.scorers.judge import JudgeConfig, LLMJudge, llm_judge
from otel_online_eval.scorers.judge._http import (
    AiohttpTransport,
    HttpAnswerError,
    HttpError,
    HttpTimeout,
    Response,
    Transport,
    ssl_context,
)
from otel_online_eval.scorers.judge._scorer import default_transport
from tests.pki import Pki, make_leaf

WAIT = 5.0  # the longest any server-side wait lasts
LIMIT = 64 * 1024  # the transports' size bound, unless a test says otherwise
S = TypeVar("S", bound="Server")


def run(main: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(main, 15))


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No proxy or CA-bundle settings from the machine running the tests."""
    for name in list(os.environ):
        if name.lower().endswith("_proxy"):
            monkeypatch.delenv(name)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)


# -- servers -----------------------------------------------------------------------------------


class Peer:
    """The server's end of one connection."""

    def __init__(
        self,
        server: Server,
        index: int,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.server = server
        self.index = index  # 0 for the server's first connection, 1 for the next...
        self.reader = reader
        self.writer = writer

    async def head(self) -> bytes | None:
        """The next head (through its blank line), or None when the client closed first."""
        try:
            return await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), WAIT)
        except (asyncio.IncompleteReadError, ConnectionError):
            return None

    async def request(self) -> bytes | None:
        """The next request (head and Content-Length body), recorded; None at the end."""
        head = await self.head()
        if head is None:
            return None
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        request = head + await asyncio.wait_for(self.reader.readexactly(length), WAIT)
        self.server.requests.append(request)
        return request

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def closed(self) -> bool:
        """True when the client closes the connection within WAIT seconds (what it sends
        meanwhile is dropped)."""
        try:
            while await asyncio.wait_for(self.reader.read(65536), WAIT):
                pass
        except ConnectionError:
            pass
        except asyncio.TimeoutError:
            return False
        return True


Handler = Callable[[Peer], Awaitable[None]]


class Server:
    """A TCP (or TLS) server on 127.0.0.1 running ``handler`` for each connection; the
    connection is closed when the handler returns."""

    def __init__(
        self, handler: Handler, context: ssl.SSLContext | None = None, host: str = "127.0.0.1"
    ) -> None:
        self.handler = handler
        self.context = context
        self.host = host
        self.port = 0
        self.connections = 0
        self.open = 0  # connections open now
        self.most_open = 0
        self.requests: list[bytes] = []
        self.errors: list[BaseException] = []
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None

    async def __aenter__(self: S) -> S:
        self._server = await asyncio.start_server(self._accept, self.host, 0, ssl=self.context)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._server.wait_closed()
        await asyncio.sleep(0.01)  # connection_lost callbacks
        if self.errors:
            raise self.errors[0]

    def url(self, path: str = "/v1/chat", scheme: str = "http") -> str:
        return f"{scheme}://{self.host}:{self.port}{path}"

    def track(self, writer: asyncio.StreamWriter) -> None:
        """Abort ``writer`` at the end too."""
        self._writers.append(writer)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        index = self.connections
        self.connections += 1
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        self._writers.append(writer)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self.handler(Peer(self, index, reader, writer))
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError):
            pass  # the client went away, or was too slow: what the test checks
        except asyncio.CancelledError:
            pass  # the end of the test (a cancelled handler task would be logged as an error)
        except Exception as exc:
            self.errors.append(exc)
        finally:
            self.open -= 1
            self._tasks.discard(task)
            writer.close()


def ok(body: bytes = b"ok", *headers: str, status: str = "200 OK") -> bytes:
    """An answer with a Content-Length."""
    lines = [f"HTTP/1.1 {status}", *headers, f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def chunked(body: bytes, *headers: str, size: int = 50) -> bytes:
    head = "\r\n".join(["HTTP/1.1 200 OK", *headers, "Transfer-Encoding: chunked"])
    chunks = b"".join(
        b"%x\r\n%s\r\n" % (len(body[i : i + size]), body[i : i + size])
        for i in range(0, len(body), size)
    )
    return head.encode() + b"\r\n\r\n" + chunks + b"0\r\n\r\n"


def body_of(request: bytes) -> bytes:
    return request.split(b"\r\n\r\n", 1)[1]


def head_lines(request: bytes) -> list[bytes]:
    return request.split(b"\r\n\r\n", 1)[0].split(b"\r\n")


def echo(request: bytes) -> bytes:
    return ok(b"echo:" + body_of(request))


def replies(answer: bytes | Callable[[bytes], bytes]) -> Handler:
    """Answers every request of every connection with ``answer`` (or ``answer(request)``)."""

    async def handle(peer: Peer) -> None:
        while (request := await peer.request()) is not None:
            peer.send(answer(request) if callable(answer) else answer)

    return handle


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


class Proxy(Server):
    """An HTTP proxy recording the first head of each connection: CONNECT opens a tunnel,
    anything else is passed on with what follows; either way to ``upstream``. With ``refuse``,
    every connection gets that answer instead."""

    def __init__(self, upstream: tuple[str, int] = ("127.0.0.1", 0), refuse: bytes = b"") -> None:
        super().__init__(self._handle)
        self.upstream = upstream
        self.refuse = refuse
        self.heads: list[bytes] = []

    def address(self, userinfo: str = "") -> str:
        return f"http://{userinfo}127.0.0.1:{self.port}"

    async def _handle(self, peer: Peer) -> None:
        head = await peer.head()
        if head is None:
            return
        self.heads.append(head)
        if self.refuse:
            peer.send(self.refuse)
            await peer.closed()
            return
        reader, writer = await asyncio.open_connection(*self.upstream)
        self.track(writer)
        if head.startswith(b"CONNECT "):
            peer.send(b"HTTP/1.1 200 Connection established\r\n\r\n")
        else:
            writer.write(head)
        await asyncio.gather(pipe(peer.reader, writer), pipe(reader, peer.writer))


@contextlib.asynccontextmanager
async def transport(url: str, *args: Any, **options: Any) -> AsyncIterator[AiohttpTransport]:
    options.setdefault("concurrency", 8)
    options.setdefault("max_body", LIMIT)
    http = AiohttpTransport(url, *args, **options)
    try:
        yield http
    finally:
        await http.aclose()


def free_port() -> socket.socket:
    """A socket bound to a port on 127.0.0.1 but not listening: connections are refused."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


def has_127_0_0_2() -> bool:
    try:
        socket.create_server(("127.0.0.2", 0)).close()
    except OSError:
        return False
    return True


# -- certificates ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def judge_cert(pki: Pki) -> tuple[Path, Path]:
    """A server certificate for judge.test and 127.0.0.2 (not 127.0.0.1), by the test CA."""
    ca = (pki.ca, pki.dir / "test-ca.key")
    return make_leaf(pki.dir, "judge", ca, "serverAuth", san="DNS:judge.test,IP:127.0.0.2")


def server_tls(cert: tuple[Path, Path], names: list[str] | None = None) -> ssl.SSLContext:
    """The servers' context; the server names clients ask for (SNI) go to ``names``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*cert)
    if names is not None:

        def sni(_: ssl.SSLObject, name: str | None, __: ssl.SSLContext) -> None:
            names.append(name or "")

        context.sni_callback = sni
    return context


def loopback_cert(pki: Pki) -> tuple[Path, Path]:
    return (pki.server_crt, pki.server_key)  # 127.0.0.1 and localhost


def trusting(pki: Pki) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(pki.ca))


# -- the exchange ------------------------------------------------------------------------------


def test_the_request_and_the_answer() -> None:
    async def main() -> None:
        headers = {"Authorization": "Bearer sk-1", "Content-Type": "application/json"}
        query = {"api-version": "2024-10-21", "q": "a b&c/é"}
        async with (
            Server(replies(ok(b'{"ok": true}', "X-Reply: Yes"))) as server,
            transport(server.url("/openai/deployments/d1/chat"), query, headers) as http,
        ):
            response = await http.post(b'{"model": "m"}', 5)
        assert (response.status, response.body) == (200, b'{"ok": true}')
        assert response.headers["x-reply"] == response.headers["X-REPLY"] == "Yes"
        (request,) = server.requests
        lines = head_lines(request)
        assert lines[0] == (
            b"POST /openai/deployments/d1/chat?api-version=2024-10-21&q=a+b%26c%2F%C3%A9 HTTP/1.1"
        )
        for line in (
            f"Host: 127.0.0.1:{server.port}".encode(),
            b"Authorization: Bearer sk-1",
            b"Content-Type: application/json",
            b"Content-Length: 14",
        ):
            assert line in lines
        assert not [line for line in lines if line.lower().startswith(b"cookie")]
        assert body_of(request) == b'{"model": "m"}'

    run(main())


def test_sequential_posts_reuse_one_connection() -> None:
    async def main() -> None:
        async with Server(replies(echo)) as server, transport(server.url()) as http:
            for i in range(3):
                response = await http.post(f"n{i}".encode(), 5)
                assert (response.status, response.body) == (200, f"echo:n{i}".encode())
        assert server.connections == 1
        assert len(server.requests) == 3

    run(main())


def test_connections_are_bounded_by_the_concurrency_and_reused() -> None:
    async def slow_echo(peer: Peer) -> None:
        while (request := await peer.request()) is not None:
            await asyncio.sleep(0.05)
            peer.send(echo(request))

    async def main() -> None:
        async with Server(slow_echo) as server, transport(server.url(), concurrency=3) as http:
            for round_ in range(2):
                bodies = [f"r{round_}-{n}".encode() for n in range(10)]
                answers = await asyncio.gather(*(http.post(b, 5) for b in bodies))
                assert [a.body for a in answers] == [b"echo:" + b for b in bodies]
        assert server.most_open == 3
        assert server.connections == 3  # the second round reused them
        assert len(server.requests) == 20

    run(main())


def test_a_cookie_is_not_kept_and_a_redirect_not_followed() -> None:
    redirect = ok(b"", "Set-Cookie: s=1", "Location: /elsewhere", status="307 Temporary Redirect")

    async def main() -> None:
        async with Server(replies(redirect)) as server, transport(server.url()) as http:
            first = await http.post(b"a", 5)
            second = await http.post(b"b", 5)
        assert first.status == second.status == 307
        assert len(server.requests) == 2
        assert all(b"/elsewhere" not in r and b"Cookie" not in r for r in server.requests)

    run(main())


PAYLOAD = b'{"choices": [{"message": {"content": "yes"}}]}' * 20


@pytest.mark.parametrize(
    ("answer", "reused"),
    [
        (ok(PAYLOAD), True),
        (chunked(PAYLOAD), True),
        (ok(gzip.compress(PAYLOAD), "Content-Encoding: gzip"), True),
        (chunked(gzip.compress(PAYLOAD), "Content-Encoding: gzip"), True),
        (ok(zlib.compress(PAYLOAD), "Content-Encoding: deflate"), True),
        (ok(PAYLOAD, "Connection: close"), False),
    ],
    ids=["length", "chunked", "gzip", "chunked-gzip", "deflate", "connection-close"],
)
def test_the_framings_and_encodings_a_judge_may_answer_with(answer: bytes, reused: bool) -> None:
    async def main() -> None:
        async with Server(replies(answer)) as server, transport(server.url()) as http:
            first = await http.post(b"a", 5)
            second = await http.post(b"b", 5)
        assert first.body == second.body == PAYLOAD
        assert server.connections == (1 if reused else 2)

    run(main())


def test_a_body_read_until_the_server_closes() -> None:
    async def until_close(peer: Peer) -> None:
        if await peer.request() is not None:
            peer.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\npart one, ")
            await peer.writer.drain()
            await asyncio.sleep(0.02)
            peer.send(b"part two")

    async def main() -> None:
        async with Server(until_close) as server, transport(server.url()) as http:
            assert (await http.post(b"a", 5)).body == b"part one, part two"
            assert (await http.post(b"b", 5)).body == b"part one, part two"
        assert server.connections == 2

    run(main())


def test_the_transport_is_the_judges_seam() -> None:
    """LLMJudge takes any Transport; here one that counts, in front of the real one."""

    class Counting:
        def __init__(self, inner: Transport) -> None:
            self.inner = inner
            self.posts = 0

        async def post(self, body: bytes, timeout: float) -> Response:
            self.posts += 1
            return await self.inner.post(body, timeout)

        async def aclose(self) -> None:
            await self.inner.aclose()

        def forget(self) -> None:
            self.inner.forget()

    made: list[Counting] = []
    answer = json.dumps(
        {"choices": [{"message": {"content": '{"reasons": "r", "choice": "relevant"}'}}]}
    ).encode()

    async def main() -> None:
        async with Server(replies(ok(answer))) as server:
            built = llm_judge(
                "j", base_url=server.url("/v1"), model="m", template="relevance", mode="json_schema"
            )

            def counting(config: JudgeConfig) -> Transport:
                made.append(Counting(default_transport(config)))
                return made[-1]

            judge = LLMJudge("j", built.config, built.prompt, transport=counting)
            score = await judge.score(EvalInput("q?", "a.", None, "rule"))
            await judge.aclose()
        assert score.label == "relevant"
        assert [c.posts for c in made] == [1]
        assert head_lines(server.requests[0])[0] == b"POST /v1/chat/completions HTTP/1.1"

    run(main())


# -- connections that end, timeouts ------------------------------------------------------------


def test_a_server_that_closes_idle_connections() -> None:
    async def one_answer(peer: Peer) -> None:
        if await peer.request() is not None:
            peer.send(ok(b"once"))  # and close

    async def main() -> None:
        async with Server(one_answer) as server, transport(server.url()) as http:
            assert (await http.post(b"a", 5)).body == b"once"
            await asyncio.sleep(0.05)
            assert (await http.post(b"b", 5)).body == b"once"
        assert server.connections == 2
        assert len(server.requests) == 2

    run(main())


def test_a_kept_connection_closed_as_the_request_arrives_is_sent_again_once() -> None:
    async def stale(peer: Peer) -> None:
        if peer.index > 0:
            return await replies(echo)(peer)
        if await peer.request() is not None:
            peer.send(ok(b"first"))
            await asyncio.wait_for(peer.reader.read(1), WAIT)  # the next request starts...
            # ... and the server closes without answering it: the client sends it again

    async def main() -> None:
        async with Server(stale) as server, transport(server.url()) as http:
            assert (await http.post(b"one", 5)).body == b"first"
            assert (await http.post(b"two", 5)).body == b"echo:two"
        assert server.connections == 2
        assert [body_of(r) for r in server.requests] == [b"one", b"two"]

    run(main())


def test_a_connection_closed_in_the_middle_of_an_answer_is_not_sent_again() -> None:
    async def half(peer: Peer) -> None:
        if await peer.request() is not None:
            peer.send(b"HTTP/1.1 200 OK\r\nContent-")  # and close

    async def main() -> None:
        async with Server(half) as server, transport(server.url()) as http:
            with pytest.raises(HttpError, match="closed the connection in the middle"):
                await http.post(b"one", 5)
        assert len(server.requests) == 1  # the answer had started: sending again could repeat it

    run(main())


def test_a_server_that_hangs_up_unanswered_gets_the_request_twice_then_an_error() -> None:
    async def hang_up(peer: Peer) -> None:
        await peer.request()  # and close

    async def main() -> None:
        async with Server(hang_up) as server, transport(server.url()) as http:
            with pytest.raises(HttpError, match=f"127.0.0.1:{server.port} closed the connection"):
                await http.post(b"a", 5)
        assert len(server.requests) == 2

    run(main())


@pytest.mark.parametrize("stage", ["head", "body"])
def test_no_complete_answer_within_the_timeout(stage: str) -> None:
    """A server that never answers, or one whose body trickles: the timeout covers the whole
    answer, and the connection is given up."""
    gave_up = asyncio.Event()

    async def slow_first(peer: Peer) -> None:
        if peer.index > 0:
            return await replies(ok(b"late"))(peer)
        await peer.request()
        if stage == "body":
            peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
            try:
                for _ in range(50):
                    peer.send(b"x")
                    await peer.writer.drain()
                    await asyncio.sleep(0.02)
            except ConnectionError:
                gave_up.set()
                return
        if await peer.closed():
            gave_up.set()

    async def main() -> None:
        async with Server(slow_first) as server, transport(server.url()) as http:
            start = time.monotonic()
            with pytest.raises(HttpTimeout, match=r"no answer within 0\.3s"):
                await http.post(b"a", 0.3)
            assert 0.25 <= time.monotonic() - start < 2.0
            await asyncio.wait_for(gave_up.wait(), WAIT)  # the client closed that connection
            assert (await http.post(b"b", 5)).body == b"late"
        assert server.connections == 2

    run(main())


def test_a_refused_connection_names_the_server() -> None:
    async def main() -> None:
        with contextlib.closing(free_port()) as sock:
            port = sock.getsockname()[1]
            async with transport(f"http://127.0.0.1:{port}/v1") as http:
                with pytest.raises(HttpError, match=f"cannot connect to 127.0.0.1:{port}"):
                    await http.post(b"a", 5)

    run(main())


def test_a_closed_transport_closes_its_connections_and_refuses_posts() -> None:
    closed = asyncio.Event()

    async def answer_then_wait(peer: Peer) -> None:
        if await peer.request() is not None:
            peer.send(ok())
            if await peer.closed():
                closed.set()

    async def main() -> None:
        async with Server(answer_then_wait) as server:
            http = AiohttpTransport(server.url(), concurrency=2, max_body=LIMIT)
            await http.post(b"a", 5)
            assert not http.is_closed
            await http.aclose()
            await http.aclose()  # twice is fine
            assert http.is_closed
            await asyncio.wait_for(closed.wait(), WAIT)
            with pytest.raises(HttpError, match="closed"):
                await http.post(b"b", 5)
        assert server.connections == 1

    run(main())


# -- broken and oversized answers --------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        ("HTTP/1.1 200 OK\r\nContent-Length: \u00b2\r\n\r\nx".encode(), "Content-Length"),
        ("HTTP/1.1 200 OK\r\nContent-Length: \u00b2\r\n\r\nx".encode("latin-1"), "Content-Length"),
        ("HTTP/1.1 200 OK\r\nContent-Length: \u0663\r\n\r\nabc".encode(), "Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc", "Duplicate"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nab", "Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1_0\r\n\r\n0123456789", "Content-Length"),
        (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", "not valid HTTP"),
        (b"HTTP/1.1 200 OK\r\nX-Pad: " + b"a" * 70_000 + b"\r\n\r\n", "not valid HTTP"),
        (ok(b"not gz", "Content-Encoding: gzip"), "decode content-encoding: gzip"),
        (ok(b"\x1b\x00\x00", "Content-Encoding: br"), "content-encoding: brotli|'br'"),
    ],
    ids=[
        "superscript-utf8",
        "superscript-latin1",
        "arabic-digit",
        "two-lengths",
        "negative",
        "plus-sign",
        "underscore",
        "not-http",
        "huge-header",
        "bad-gzip",
        "brotli",
    ],
)
def test_a_broken_answer_is_an_error_naming_the_problem(answer: bytes, problem: str) -> None:
    dropped = asyncio.Event()

    async def broken(peer: Peer) -> None:
        if await peer.request() is None:
            return
        peer.send(answer)
        if await peer.closed():
            dropped.set()

    async def main() -> None:
        async with Server(broken) as server, transport(server.url()) as http:
            with pytest.raises(HttpAnswerError, match=problem) as caught:
                await http.post(b"a", 5)
            assert f"127.0.0.1:{server.port}" in str(caught.value)
            await asyncio.wait_for(dropped.wait(), WAIT)  # the client gave the connection up
        assert len(server.requests) == 1  # an answer came: not sent again

    run(main())


def test_an_encoding_that_was_not_asked_for_is_an_error() -> None:
    answers = iter([ok(b"\x00\x00", "Content-Encoding: snappy")])

    async def snappy_first(peer: Peer) -> None:
        while await peer.request() is not None:
            peer.send(next(answers, ok(b"plain")))

    async def main() -> None:
        async with Server(snappy_first) as server, transport(server.url()) as http:
            with pytest.raises(HttpAnswerError, match="unsupported Content-Encoding: 'snappy'"):
                await http.post(b"a", 5)
            assert (await http.post(b"b", 5)).body == b"plain"
        assert b"Accept-Encoding: gzip, deflate" in head_lines(server.requests[0])

    run(main())


def test_a_body_cut_short_is_an_error() -> None:
    async def short(peer: Peer) -> None:
        if await peer.request() is not None:
            peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")  # and close

    async def main() -> None:
        async with Server(short) as server, transport(server.url()) as http:
            with pytest.raises(HttpAnswerError, match=r"received 4 of 10 bytes"):
                await http.post(b"a", 5)

    run(main())


def gzip_bomb(mebibytes: int) -> bytes:
    """A gzip member of ``mebibytes`` MiB of zeros (about 1 KiB per MiB)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(1 << 20)
    return b"".join(packer.compress(zeros) for _ in range(mebibytes)) + packer.flush()


@pytest.mark.parametrize(
    "answer",
    [
        ok(b"x" * (LIMIT + 1)),
        chunked(b"x" * (LIMIT + 1), size=4096),
        ok(gzip_bomb(4), "Content-Encoding: gzip"),
        chunked(gzip_bomb(4), "Content-Encoding: gzip", size=512),
    ],
    ids=["length", "chunked", "gzip", "chunked-gzip"],
)
def test_an_answer_over_the_bound_is_an_error(answer: bytes) -> None:
    answers = iter([answer])

    async def big_first(peer: Peer) -> None:
        while await peer.request() is not None:
            peer.send(next(answers, ok(b"small")))

    async def main() -> None:
        async with Server(big_first) as server, transport(server.url()) as http:
            with pytest.raises(HttpAnswerError, match=f"over {LIMIT} bytes|larger than {LIMIT}"):
                await http.post(b"a", 5)
            assert (await http.post(b"b", 5)).body == b"small"

    run(main())


@pytest.mark.parametrize("framing", ["length", "chunked", "gzip", "until-close"])
def test_an_endless_answer_is_cut_at_the_bound_and_its_connection_dropped(framing: str) -> None:
    """The server would send 1 GiB (decoded); the client stops reading past the bound, drops
    the connection, and the server's writes fail long before the end."""
    sent = [0]
    dropped = asyncio.Event()

    async def endless(peer: Peer) -> None:
        if await peer.request() is None:
            return
        heads = {
            "length": "Content-Length: 1073741824",
            "chunked": "Transfer-Encoding: chunked",
            "gzip": "Content-Encoding: gzip\r\nTransfer-Encoding: chunked",
            "until-close": "Connection: close",
        }
        peer.send(f"HTTP/1.1 200 OK\r\n{heads[framing]}\r\n\r\n".encode())
        packer = zlib.compressobj(6, zlib.DEFLATED, 31)
        block = bytes(64 * 1024)
        try:
            for _ in range(16 * 1024):  # 1 GiB
                data = packer.compress(block) if framing == "gzip" else block
                if framing in ("chunked", "gzip"):
                    data = b"%x\r\n%s\r\n" % (len(data), data) if data else b""
                if peer.writer.is_closing() or peer.reader.at_eof():
                    break  # the client hung up
                peer.send(data)
                sent[0] += len(data)
                await peer.writer.drain()
        except ConnectionError:
            pass
        dropped.set()

    async def main() -> None:
        async with Server(endless) as server, transport(server.url()) as http:
            with pytest.raises(HttpAnswerError, match=f"over {LIMIT} bytes|larger than {LIMIT}"):
                await http.post(b"a", 10)
            await asyncio.wait_for(dropped.wait(), WAIT)
        assert sent[0] < 256 * 1024 * 1024  # of 1 GiB: what the socket buffers took, at most

    run(main())


def test_an_answer_at_the_bound_is_accepted() -> None:
    async def main() -> None:
        packed = gzip.compress(b"y" * LIMIT)
        async with (
            Server(replies(ok(packed, "Content-Encoding: gzip"))) as server,
            transport(server.url()) as http,
        ):
            assert (await http.post(b"a", 5)).body == b"y" * LIMIT

    run(main())


BOMB_SCRIPT = r"""
import asyncio, json, resource, sys, zlib
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace import TracerProvider
from otel_online_eval import OnlineEvalSpanProcessor, parse_config

packer = zlib.compressobj(1, zlib.DEFLATED, 31)  # level 1: made in 2 s, not 10
zeros = bytes(1 << 20)
bomb = b"".join(packer.compress(zeros) for _ in range(1024)) + packer.flush()  # 1 GiB of zeros
del zeros
head = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Type: application/json\r\n"
answer = head + b"Content-Length: %d\r\n\r\n" % len(bomb) + bomb

async def handle(reader, writer):
    try:
        while True:
            request = await reader.readuntil(b"\r\n\r\n")
            length = [l for l in request.split(b"\r\n") if l.lower().startswith(b"content-length")]
            await reader.readexactly(int(length[0].split(b":")[1]))
            writer.write(answer)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()

def serve(ready):
    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        ready.append(server.sockets[0].getsockname()[1])
        await server.serve_forever()
    asyncio.run(main())

import threading, time
ready = []
threading.Thread(target=serve, args=(ready,), daemon=True).start()
deadline = time.monotonic() + 10
while not ready and time.monotonic() < deadline:
    time.sleep(0.01)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
config = parse_config({
    "scorers": {"judge": {
        "type": "llm_judge", "base_url": f"http://127.0.0.1:{ready[0]}/v1", "model": "m",
        "template": "relevance", "limits": {"retries": 1, "backoff_s": 0},
    }},
    "rules": [{"name": "r", "scorers": ["judge"]}],
})
evals = InMemorySpanExporter()
processor = OnlineEvalSpanProcessor(
    config, exporter=evals, span_processor=SimpleSpanProcessor(evals)
)
provider = TracerProvider()
provider.add_span_processor(processor)
def message(role, text):
    return json.dumps([{"role": role, "parts": [{"type": "text", "content": text}]}])
attrs = {
    "gen_ai.input.messages": message("user", "q?"),
    "gen_ai.output.messages": message("assistant", "a."),
}
with provider.get_tracer("app").start_as_current_span("chat", attributes=attrs):
    pass
assert processor.force_flush(60_000)
score = [s for s in evals.get_finished_spans() if s.name.startswith("score ")]
provider.shutdown()
print(json.dumps({
    "status": [s.status.status_code.name for s in score],
    "description": [s.status.description for s in score],
    "rss_before_mb": before / 1024,
    "rss_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
}))
"""


def test_a_gzip_bomb_is_a_recorded_error_and_costs_little_memory() -> None:
    """1 GiB of zeros in 4.5 MiB of gzip, through the processor, in a process of its own (so
    that its peak memory is its own): the score span records the error, and the peak stays
    within a few MiB of where it was."""
    done = subprocess.run(
        [sys.executable, "-c", BOMB_SCRIPT], capture_output=True, text=True, timeout=90
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["status"] == ["ERROR"]
    (description,) = result["description"]
    assert "bad answer from http://127.0.0.1:" in description
    assert "is larger than 4194304 bytes (decoded from gzip)" in description
    assert "(after 2 attempts)" in description
    assert result["rss_peak_mb"] - result["rss_before_mb"] < 100, result


# -- TLS ---------------------------------------------------------------------------------------


def test_tls_with_a_trusted_certificate(pki: Pki) -> None:
    names: list[str] = []

    async def main() -> None:
        async with (
            Server(replies(echo), server_tls(loopback_cert(pki), names)) as server,
            transport(server.url(scheme="https"), context=trusting(pki)) as http,
        ):
            assert (await http.post(b"a", 5)).body == b"echo:a"
            assert (await http.post(b"b", 5)).body == b"echo:b"
        assert server.connections == 1
        assert names == [""]  # no SNI for an IP address

    run(main())


def test_tls_trusts_ssl_cert_file_from_the_environment(
    pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca))

    async def main() -> None:
        async with (
            Server(replies(echo), server_tls(loopback_cert(pki))) as server,
            transport(server.url(scheme="https")) as http,
        ):
            assert (await http.post(b"a", 5)).body == b"echo:a"

    run(main())


def test_tls_trusts_ssl_cert_dir_from_the_environment(
    pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "test-ca.pem").write_bytes(pki.ca.read_bytes())
    subprocess.run(["openssl", "rehash", str(tmp_path)], check=True, timeout=60)
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path))

    async def main() -> None:
        async with (
            Server(replies(echo), server_tls(loopback_cert(pki))) as server,
            transport(server.url(scheme="https")) as http,
        ):
            assert (await http.post(b"a", 5)).body == b"echo:a"

    run(main())


def test_without_the_environment_the_ca_bundle_is_certifis() -> None:
    import certifi

    bundle = Path(certifi.where()).read_text()
    assert len(ssl_context().get_ca_certs()) == bundle.count("BEGIN CERTIFICATE")


def test_tls_with_an_unknown_ca_fails_naming_tls_and_the_certificate(pki: Pki) -> None:
    async def main() -> None:
        async with (
            Server(replies(echo), server_tls(loopback_cert(pki))) as server,
            transport(server.url(scheme="https")) as http,  # certifi's CAs
        ):
            with pytest.raises(HttpError) as caught:
                await http.post(b"a", 5)
        message = str(caught.value)
        assert f"TLS with 127.0.0.1:{server.port} failed" in message
        assert "certificate verify failed" in message
        assert server.requests == []

    run(main())


def test_tls_checks_the_host_name(pki: Pki, judge_cert: tuple[Path, Path]) -> None:
    async def main() -> None:
        async with (
            Server(replies(echo), server_tls(judge_cert)) as server,  # not for 127.0.0.1
            transport(server.url(scheme="https"), context=trusting(pki)) as http,
        ):
            with pytest.raises(HttpError, match=r"TLS with 127\.0\.0\.1:\d+ failed.*mismatch"):
                await http.post(b"a", 5)
        assert server.requests == []

    run(main())


# -- proxies -----------------------------------------------------------------------------------

BASIC = "Basic " + base64.b64encode(b"user:pa ss").decode()


@pytest.mark.parametrize(
    ("url", "target"),
    [
        ("https://judge.test/v1/chat", "judge.test:443"),
        ("https://judge.test:8443/v1/chat", "judge.test:8443"),
    ],
)
def test_https_through_a_connect_tunnel_from_the_environment(
    pki: Pki,
    judge_cert: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    url: str,
    target: str,
) -> None:
    names: list[str] = []

    async def main() -> None:
        async with (
            Server(replies(echo), server_tls(judge_cert, names)) as upstream,
            Proxy(("127.0.0.1", upstream.port)) as proxy,
        ):
            monkeypatch.setenv("HTTPS_PROXY", proxy.address("user:pa%20ss@"))
            monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:1")
            async with transport(url, context=trusting(pki)) as http:
                assert (await http.post(b"a", 5)).body == b"echo:a"
                assert (await http.post(b"b", 5)).body == b"echo:b"
        (head,) = proxy.heads
        assert head_lines(head)[0] == f"CONNECT {target} HTTP/1.1".encode()
        assert f"Proxy-Authorization: {BASIC}".encode() in head_lines(head)
        assert proxy.connections == upstream.connections == 1  # the tunnel was kept alive
        assert names == ["judge.test"]  # TLS with the target, through the tunnel
        assert [head_lines(r)[0] for r in upstream.requests] == 2 * [b"POST /v1/chat HTTP/1.1"]
        assert all(b"Proxy-Authorization" not in r for r in upstream.requests)

    run(main())


def test_http_through_a_proxy_uses_the_absolute_form(monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        async with Server(replies(echo)) as upstream, Proxy(("127.0.0.1", upstream.port)) as proxy:
            monkeypatch.setenv("HTTP_PROXY", proxy.address("user:pa%20ss@"))
            async with transport("http://judge.test/v1/chat", {"a": "1"}, {"X-Key": "k"}) as http:
                assert (await http.post(b"hi", 5)).body == b"echo:hi"
                assert (await http.post(b"ho", 5)).body == b"echo:ho"
        assert [head_lines(r)[0] for r in upstream.requests] == 2 * [
            b"POST http://judge.test/v1/chat?a=1 HTTP/1.1"
        ]
        for request in upstream.requests:
            lines = head_lines(request)
            assert b"Host: judge.test" in lines and b"X-Key: k" in lines
            assert f"Proxy-Authorization: {BASIC}".encode() in lines
        assert proxy.connections == 1

    run(main())


def test_a_proxy_refusing_the_tunnel_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    refusal = (
        b"HTTP/1.1 407 Proxy Authentication Required\r\n"
        b'Proxy-Authenticate: Basic realm="proxy"\r\nContent-Length: 0\r\n\r\n'
    )

    async def main() -> None:
        async with Proxy(refuse=refusal) as proxy:
            monkeypatch.setenv("HTTPS_PROXY", proxy.address())
            async with transport("https://judge.test/v1") as http:
                with pytest.raises(
                    HttpError,
                    match=f"proxy 127.0.0.1:{proxy.port} refused a tunnel to judge.test:443: "
                    "HTTP 407",
                ):
                    await http.post(b"a", 5)
        assert head_lines(proxy.heads[0])[0] == b"CONNECT judge.test:443 HTTP/1.1"

    run(main())


def test_an_unreachable_proxy_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        with contextlib.closing(free_port()) as sock:
            port = sock.getsockname()[1]
            monkeypatch.setenv("HTTP_PROXY", f"127.0.0.1:{port}")  # no scheme: http://
            async with transport("http://judge.test/v1") as http:
                with pytest.raises(
                    HttpError, match=f"cannot connect to the proxy 127.0.0.1:{port}"
                ):
                    await http.post(b"a", 5)

    run(main())


@pytest.mark.parametrize("proxy", ["https://proxy.example:3128", "socks5://proxy.example:1080"])
def test_only_http_proxies_are_supported(proxy: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", proxy)

    async def main() -> None:
        async with transport("https://judge.test/v1") as http:
            with pytest.raises(HttpError, match="is not supported: only http:// proxies are"):
                await http.post(b"a", 5)

    run(main())


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_loopback_targets_never_use_a_proxy(host: str, monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        async with Server(replies(echo)) as server, Proxy(("127.0.0.1", server.port)) as proxy:
            monkeypatch.setenv("HTTP_PROXY", proxy.address())
            monkeypatch.setenv("ALL_PROXY", proxy.address())
            async with transport(f"http://{host}:{server.port}/v1") as http:
                assert (await http.post(b"a", 5)).body == b"echo:a"
        assert proxy.connections == 0
        assert head_lines(server.requests[0])[0] == b"POST /v1 HTTP/1.1"

    run(main())


@pytest.mark.parametrize(
    ("no_proxy", "proxied"),
    [
        (None, True),
        ("example.com,judge.test", True),
        ("127.0.0.2", False),
        ("localhost, 127.0.0.2", False),
        ("*", False),
    ],
)
def test_the_environment_proxy_and_no_proxy(
    pki: Pki,
    judge_cert: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    no_proxy: str | None,
    proxied: bool,
) -> None:
    if not has_127_0_0_2():
        pytest.skip("127.0.0.2 is not a loopback address here")

    async def main() -> None:
        async with (
            Server(replies(echo), server_tls(judge_cert), host="127.0.0.2") as server,
            Proxy(("127.0.0.2", server.port)) as proxy,
        ):
            monkeypatch.setenv("HTTPS_PROXY", proxy.address())
            if no_proxy is not None:
                monkeypatch.setenv("NO_PROXY", no_proxy)
            async with transport(server.url(scheme="https"), context=trusting(pki)) as http:
                assert (await http.post(b"a", 5)).body == b"echo:a"
        assert proxy.connections == (1 if proxied else 0)
        if proxied:
            assert proxy.heads[0].startswith(f"CONNECT 127.0.0.2:{server.port} ".encode())

    run(main())


# -- the judge over it -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    [
        "HTTP/1.1 200 OK\r\nContent-Length: \u00b2\r\n\r\n{}".encode(),
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{} ",
    ],
    ids=["superscript", "two-lengths"],
)
def test_a_bad_content_length_is_an_error_recorded_for_the_call(answer: bytes) -> None:
    async def main() -> None:
        async with Server(replies(answer)) as server:
            judge = llm_judge(
                "j",
                base_url=server.url("/v1"),
                model="m",
                template="relevance",
                timeout_s=5,
                limits={"retries": 1, "backoff_s": 0, "timeout_s": 2},
            )
            start = time.monotonic()
            with pytest.raises(ScorerError) as caught:
                await judge.score(EvalInput("q?", "a.", None, "rule"))
            assert time.monotonic() - start < 2  # no hang: an answer, refused at once
            await judge.aclose()
        message = str(caught.value)
        assert message.startswith(f"bad answer from {server.url('/v1/chat/completions')}: ")
        assert "not valid HTTP" in message and "Content-Length" in message
        assert "(after 2 attempts)" in message
        assert judge.stats.errors == 1 and judge.stats.requests == 2

    run(main())


def test_max_response_bytes_is_a_limit_of_the_judge() -> None:
    async def main() -> None:
        async with Server(replies(ok(b"{" + b" " * 5000 + b"}"))) as server:
            judge = llm_judge(
                "j",
                base_url=server.url("/v1"),
                model="m",
                template="relevance",
                limits={"retries": 0, "max_response_bytes": 4096},
            )
            with pytest.raises(ScorerError, match="a Content-Length of 5002, over 4096 bytes"):
                await judge.score(EvalInput("q?", "a.", None, "rule"))
            await judge.aclose()

    run(main())


FORK_SCRIPT = r"""
import asyncio, gc, json, os, sys, threading
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from otel_online_eval import OnlineEvalSpanProcessor, parse_config

ANSWER = (b'{"choices": [{"message": {"content": '
          b'"{\\"reasons\\": \\"r\\", \\"choice\\": \\"relevant\\"}"}}]}')
connections = []

async def handle(reader, writer):
    connections.append(writer)
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = [l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")]
            await reader.readexactly(int(length[0].split(b":")[1]))
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(ANSWER) + ANSWER)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass

ready = threading.Event()
port = []
def serve():
    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port.append(server.sockets[0].getsockname()[1])
        ready.set()
        await server.serve_forever()
    asyncio.run(main())
threading.Thread(target=serve, daemon=True).start()
ready.wait(10)

config = parse_config({
    "scorers": {"judge": {
        "type": "llm_judge", "base_url": f"http://127.0.0.1:{port[0]}/v1", "model": "m",
        "template": "relevance", "mode": "json_schema", "timeout_s": 3,
        "limits": {"retries": 0, "timeout_s": 2},
    }},
    "rules": [{"name": "r", "scorers": ["judge"]}],
})
evals = InMemorySpanExporter()
processor = OnlineEvalSpanProcessor(
    config, exporter=evals, span_processor=SimpleSpanProcessor(evals)
)
provider = TracerProvider()
provider.add_span_processor(processor)
def message(role, text):
    return json.dumps([{"role": role, "parts": [{"type": "text", "content": text}]}])
attrs = {
    "gen_ai.input.messages": message("user", "q?"),
    "gen_ai.output.messages": message("assistant", "a."),
}

def score_one():
    evals.clear()
    with provider.get_tracer("app").start_as_current_span("chat", attributes=attrs):
        pass
    assert processor.force_flush(10_000)
    spans = [s for s in evals.get_finished_spans() if s.name.startswith("score ")]
    return [(s.status.status_code.name, s.attributes.get("gen_ai.evaluation.score.label"))
            for s in spans]

print("parent", score_one(), flush=True)
pid = os.fork()
if pid == 0:
    (judge,) = [use.spec.scorer for rule in processor.rules for use in rule.scorers]
    print("child, the parent's loops forgotten:", not judge._loops, flush=True)
    gc.collect()  # what the child dropped of the parent's is collected: it must close nothing
    result = score_one()
    print("child", result, len(judge._loops), flush=True)
    sys.exit(0 if result == [("UNSET", "relevant")] else 3)  # a full interpreter exit
_, status = os.waitpid(pid, 0)
print("child exit", os.waitstatus_to_exitcode(status), flush=True)
print("parent", score_one(), flush=True)
print("connections", len(connections), flush=True)
provider.shutdown()
"""


def test_a_forked_child_judges_on_its_own_connections_and_leaves_the_parents_alone() -> None:
    """The parent keeps a connection alive, forks; the child judges (a connection of its own)
    and exits through a full interpreter shutdown; the parent's kept connection still works:
    the child neither closed it nor took it out of the epoll set both processes share."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(FORK_SCRIPT)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert lines == [
        "parent [('UNSET', 'relevant')]",
        "child, the parent's loops forgotten: True",
        "child [('UNSET', 'relevant')] 1",
        "child exit 0",
        "parent [('UNSET', 'relevant')]",
        "connections 2",
    ], done.stdout + done.stderr[-3000:]
    assert "Unclosed" not in done.stderr and "Traceback" not in done.stderr, done.stderr
