"""The judge's HTTP client (``scorers.judge._http``) against real servers on 127.0.0.1.

Every server here is a small asyncio server in the test's own event loop that reads the
client's bytes and answers with scripted bytes, so each test states what went over the wire.
The proxy is a small CONNECT / absolute-form proxy that sends every tunnel to one upstream
server, whatever the target's name (so ``judge.test`` needs no DNS). Certificates are made per
module with the ``openssl`` command, as in ``test_sidecar_security.py`` (its helpers are not
imported: that module pulls in the gRPC receivers, and its server certificate has no name that
is not loopback, which the proxy tests need).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import os
import shutil
import socket
import ssl
import subprocess
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from otel_online_eval.scorers.judge._http import (
    MAX_BODY,
    MAX_HEAD,
    HttpClient,
    HttpError,
    HttpTimeout,
    Response,
)

WAIT = 5.0  # the longest any server-side wait lasts
S = TypeVar("S", bound="Server")


def run(main: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(main, 10))


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

    async def send_bytewise(self, data: bytes) -> None:
        """One byte per write, with turns of the loop between (three are enough for the client
        to read each byte on its own, here)."""
        for i in range(len(data)):
            self.writer.write(data[i : i + 1])
            await self.writer.drain()
            for _ in range(3):
                await asyncio.sleep(0)

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
            self._tasks.discard(task)
            writer.close()


def ok(
    body: bytes = b"ok", *headers: str, status: str = "200 OK", version: str = "HTTP/1.1"
) -> bytes:
    """An answer with a Content-Length."""
    lines = [f"{version} {status}", *headers, f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def body_of(request: bytes) -> bytes:
    return request.split(b"\r\n\r\n", 1)[1]


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
async def client(url: str, **options: Any) -> AsyncIterator[HttpClient]:
    http = HttpClient(url, **options)
    try:
        yield http
    finally:
        await http.aclose()


def free_port() -> socket.socket:
    """A socket bound to a port on 127.0.0.1 but not listening: connections are refused."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


# -- certificates ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    ca: Path
    crt: Path  # for judge.test, 127.0.0.1 and 127.0.0.2
    key: Path


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make test certificates")
    d = tmp_path_factory.mktemp("judge-pki")
    ca, ca_key = d / "ca.crt", d / "ca.key"
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", ca_key, "-out", ca, "-days", "2", "-subj", "/CN=judge-test-ca",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    key, csr, crt, ext = d / "srv.key", d / "srv.csr", d / "srv.crt", d / "srv.ext"
    ext.write_text(
        "basicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectAltName=DNS:judge.test,IP:127.0.0.1,IP:127.0.0.2\n"
    )
    _openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", key, "-out", csr, "-subj", "/CN=judge.test",
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
        "-out", crt, "-days", "2", "-extfile", ext,
    )  # fmt: skip
    return Pki(ca, crt, key)


def server_tls(pki: Pki, names: list[str] | None = None) -> ssl.SSLContext:
    """The servers' context; the server names clients ask for (SNI) go to ``names``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.crt, pki.key)
    if names is not None:

        def sni(_: ssl.SSLObject, name: str | None, __: ssl.SSLContext) -> None:
            names.append(name or "")

        context.sni_callback = sni
    return context


def trusting(pki: Pki) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(pki.ca))


# -- the exchange ------------------------------------------------------------------------------


def test_a_content_length_answer_and_the_exact_request_bytes() -> None:
    async def main() -> None:
        headers = {
            "Authorization": "Bearer sk-1",
            "Content-Type": "application/json",
            # the client's own: ignored
            "Host": "evil.example",
            "content-length": "999",
            "Connection": "close",
            "Transfer-Encoding": "chunked",
        }
        query = {"api-version": "2024-10-21", "q": "a b&c/é"}
        async with (
            Server(replies(ok(b'{"ok": true}', "X-Reply: Yes"))) as server,
            client(server.url("/openai/deployments/d1/chat"), query=query, headers=headers) as http,
        ):
            response = await http.post(b'{"model": "m"}', 5)
        assert response == Response(
            200, {"x-reply": "Yes", "content-length": "12"}, b'{"ok": true}'
        )
        assert server.requests == [
            b"POST /openai/deployments/d1/chat"
            b"?api-version=2024-10-21&q=a+b%26c%2F%C3%A9 HTTP/1.1\r\n"
            + f"Host: 127.0.0.1:{server.port}\r\n".encode()
            + b"Authorization: Bearer sk-1\r\n"
            b"Content-Type: application/json\r\n"
            b"Content-Length: 14\r\n"
            b"\r\n"
            b'{"model": "m"}'
        ]

    run(main())


def test_sequential_posts_reuse_one_connection() -> None:
    async def main() -> None:
        async with (
            Server(replies(echo)) as server,
            client(f"http://127.0.0.1:{server.port}") as http,
        ):
            for i in range(3):
                response = await http.post(f"n{i}".encode(), 5)
                assert (response.status, response.body) == (200, f"echo:n{i}".encode())
            empty = await http.post(b"", 5)
            assert empty.body == b"echo:"
        assert server.connections == 1
        assert len(server.requests) == 4
        assert server.requests[0].startswith(b"POST / HTTP/1.1\r\n")  # no path: "/"
        assert server.requests[3].endswith(b"Content-Length: 0\r\n\r\n")

    run(main())


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.1 304 Not Modified\r\nETag: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    ],
)
def test_answers_without_a_body_keep_the_connection(answer: bytes) -> None:
    async def main() -> None:
        async with Server(replies(answer)) as server, client(server.url()) as http:
            first = await http.post(b"a", 5)
            second = await http.post(b"b", 5)
        assert first.body == second.body == b""
        assert first.status == int(answer[9:12])
        assert server.connections == 1

    run(main())


def test_concurrent_posts_get_their_own_answers_then_reuse_the_connections() -> None:
    async def slow_echo(peer: Peer) -> None:
        while (request := await peer.request()) is not None:
            n = int(body_of(request).rsplit(b"-", 1)[1])
            await asyncio.sleep((8 - n) * 0.005)  # the last sent is answered first
            peer.send(echo(request))

    async def main() -> None:
        async with Server(slow_echo) as server, client(server.url()) as http:
            for round_ in range(2):
                bodies = [f"r{round_}-{n}".encode() for n in range(8)]
                answers = await asyncio.gather(*(http.post(b, 5) for b in bodies))
                assert [a.body for a in answers] == [b"echo:" + b for b in bodies]
                assert server.connections == 8
        assert len(server.requests) == 16

    run(main())


# -- framing -----------------------------------------------------------------------------------

CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n"


def chunked(trailers: bytes = b"") -> bytes:
    """'hello wonderful world' in three chunks, with extensions."""
    return (
        CHUNKED_HEAD
        + b"5;name=value\r\nhello\r\n"
        + b'1;quoted="a;b"\r\n \r\n'
        + b"F\r\nwonderful world\r\n"
        + b"0\r\n"
        + trailers
        + b"\r\n"
    )


@pytest.mark.parametrize("trailers", [b"", b"X-Checksum: abc\r\nX-Other: 1\r\n"])
def test_a_chunked_answer(trailers: bytes) -> None:
    async def main() -> None:
        async with Server(replies(chunked(trailers))) as server, client(server.url()) as http:
            first = await http.post(b"a", 5)
            second = await http.post(b"b", 5)  # the trailers were read to their end
        assert first == second
        assert first.body == b"hello wonderful world"
        assert first.headers["content-type"] == "text/plain"
        assert server.connections == 1

    run(main())


@pytest.mark.parametrize(
    ("answer", "body"),
    [
        (ok(b"a body of some length", "X-A: 1"), b"a body of some length"),
        (chunked(b"X-Checksum: abc\r\n"), b"hello wonderful world"),
        (b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b"after 100"), b"after 100"),
    ],
    ids=["length", "chunked", "continue"],
)
def test_an_answer_written_byte_by_byte(answer: bytes, body: bytes) -> None:
    async def bytewise(peer: Peer) -> None:
        while await peer.request() is not None:
            await peer.send_bytewise(answer)

    async def main() -> None:
        async with Server(bytewise) as server, client(server.url()) as http:
            first = await http.post(b"a", 5)
            second = await http.post(b"b", 5)
        assert first.body == second.body == body
        assert server.connections == 1

    run(main())


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n",
        b"HTTP/1.0 200 OK\r\n\r\n",
    ],
)
def test_a_body_read_until_the_server_closes(head: bytes) -> None:
    async def until_close(peer: Peer) -> None:
        if await peer.request() is not None:
            peer.send(head + b"part one, ")
            await peer.writer.drain()
            await asyncio.sleep(0.02)
            peer.send(b"part two")

    async def main() -> None:
        async with Server(until_close) as server, client(server.url()) as http:
            first = await http.post(b"a", 5)
            second = await http.post(b"b", 5)
        assert first.body == second.body == b"part one, part two"
        assert server.connections == 2

    run(main())


@pytest.mark.parametrize(
    ("answer", "reused"),
    [
        (ok(b"fine", "Connection: close"), False),
        (ok(b"fine", "Connection: Keep-Alive, Close"), False),
        (ok(b"fine", version="HTTP/1.0"), False),
        (ok(b"fine", "Connection: keep-alive", version="HTTP/1.0"), True),
        (ok(b"fine", "Connection: keep-alive"), True),
    ],
    ids=["close", "keep-alive-close", "1.0", "1.0-keep-alive", "1.1-keep-alive"],
)
def test_connection_close_and_http_10_are_honoured(answer: bytes, reused: bool) -> None:
    async def main() -> None:
        # The server keeps every connection open and answers all: only the client decides.
        async with Server(replies(answer)) as server, client(server.url()) as http:
            first = await http.post(b"a", 5)
            second = await http.post(b"b", 5)
        assert first.body == second.body == b"fine"
        assert server.connections == (1 if reused else 2)

    run(main())


def test_interim_answers_before_the_real_one() -> None:
    async def interim(peer: Peer) -> None:
        while await peer.request() is not None:
            peer.send(b"HTTP/1.1 100 Continue\r\n\r\n")
            await peer.writer.drain()
            await asyncio.sleep(0.01)
            peer.send(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n")
            peer.send(ok(b"final", "X-Final: 1"))

    async def main() -> None:
        async with Server(interim) as server, client(server.url()) as http:
            first = await http.post(b"a", 5)
            second = await http.post(b"b", 5)
        assert first == second == Response(200, {"x-final": "1", "content-length": "5"}, b"final")
        assert server.connections == 1

    run(main())


PAYLOAD = b'{"choices": [{"message": {"content": "yes"}}]}' * 20


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [
        ("gzip", gzip.compress),
        ("x-gzip", gzip.compress),
        ("GZip", gzip.compress),
        ("deflate", zlib.compress),
        ("identity", lambda data: data),
    ],
)
def test_compressed_bodies_are_decoded(encoding: str, compress: Callable[[bytes], bytes]) -> None:
    packed = compress(PAYLOAD)
    as_chunks = CHUNKED_HEAD.replace(
        b"\r\n\r\n", f"\r\nContent-Encoding: {encoding}\r\n\r\n".encode()
    )
    as_chunks += b"".join(
        b"%x\r\n%s\r\n" % (len(packed[i : i + 50]), packed[i : i + 50])
        for i in range(0, len(packed), 50)
    )
    as_chunks += b"0\r\n\r\n"

    async def main() -> None:
        async with (
            Server(replies(ok(packed, f"Content-Encoding: {encoding}"))) as plain,
            Server(replies(as_chunks)) as chunks,
            client(plain.url()) as http,
            client(chunks.url()) as http_chunked,
        ):
            assert (await http.post(b"a", 5)).body == PAYLOAD
            assert (await http.post(b"b", 5)).body == PAYLOAD
            assert (await http_chunked.post(b"c", 5)).body == PAYLOAD
        assert plain.connections == 1

    run(main())


def test_an_unknown_content_encoding_is_an_error() -> None:
    async def main() -> None:
        async with (
            Server(replies(ok(b"\x1b\x00\x00", "Content-Encoding: br"))) as server,
            client(server.url()) as http,
        ):
            with pytest.raises(HttpError, match="unsupported Content-Encoding: 'br'"):
                await http.post(b"a", 5)

    run(main())


# -- connections that end ----------------------------------------------------------------------


@pytest.mark.parametrize("pause", [0.0, 0.05])
def test_a_server_that_closes_idle_connections(pause: float) -> None:
    async def one_answer(peer: Peer) -> None:
        if await peer.request() is not None:
            peer.send(ok(b"once"))  # and close

    async def main() -> None:
        async with Server(one_answer) as server, client(server.url()) as http:
            assert (await http.post(b"a", 5)).body == b"once"
            await asyncio.sleep(pause)
            assert (await http.post(b"b", 5)).body == b"once"
        assert server.connections == 2
        assert len(server.requests) == 2

    run(main())


def test_a_kept_connection_closed_as_the_request_arrives_is_retried_once() -> None:
    async def stale(peer: Peer) -> None:
        if peer.index > 0:
            return await replies(echo)(peer)
        if await peer.request() is not None:
            peer.send(ok(b"first"))
            await asyncio.wait_for(peer.reader.read(1), WAIT)  # the next request starts...
            # ... and the server closes without reading it: the client must send it again

    async def main() -> None:
        async with Server(stale) as server, client(server.url()) as http:
            assert (await http.post(b"one", 5)).body == b"first"
            assert (await http.post(b"two", 5)).body == b"echo:two"
        assert server.connections == 2
        assert [body_of(r) for r in server.requests] == [b"one", b"two"]  # no duplicate

    run(main())


def test_a_kept_connection_closed_in_the_middle_of_an_answer_is_not_retried() -> None:
    async def half(peer: Peer) -> None:
        if await peer.request() is not None:
            peer.send(ok(b"first"))
        if await peer.request() is not None:
            peer.send(b"HTTP/1.1 200 OK\r\nContent-")  # and close

    async def main() -> None:
        async with Server(half) as server, client(server.url()) as http:
            assert (await http.post(b"one", 5)).body == b"first"
            with pytest.raises(HttpError, match="closed in the middle of the answer"):
                await http.post(b"two", 5)
        assert server.connections == 1  # the answer had started: sending again could repeat it

    run(main())


def test_a_fresh_connection_closed_without_an_answer_is_an_error() -> None:
    async def hang_up(peer: Peer) -> None:
        await peer.request()  # and close

    async def main() -> None:
        async with Server(hang_up) as server, client(server.url()) as http:
            with pytest.raises(HttpError, match="the connection closed unanswered"):
                await http.post(b"a", 5)
        assert server.connections == 1
        assert len(server.requests) == 1

    run(main())


def test_a_server_that_never_answers_times_out_and_its_connection_is_dropped() -> None:
    gave_up = asyncio.Event()

    async def silent_first(peer: Peer) -> None:
        if peer.index > 0:
            return await replies(ok(b"late"))(peer)
        await peer.request()
        if await peer.closed():
            gave_up.set()

    async def main() -> None:
        async with Server(silent_first) as server, client(server.url()) as http:
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
            async with client(f"http://127.0.0.1:{port}/v1") as http:
                with pytest.raises(HttpError, match=f"cannot connect to 127.0.0.1:{port}"):
                    await http.post(b"a", 5)

    run(main())


def test_a_closed_client_closes_its_connections_and_refuses_posts() -> None:
    closed = asyncio.Event()

    async def answer_then_wait(peer: Peer) -> None:
        if await peer.request() is not None:
            peer.send(ok())
            if await peer.closed():
                closed.set()

    async def main() -> None:
        async with Server(answer_then_wait) as server:
            http = HttpClient(server.url())
            await http.post(b"a", 5)
            assert not http.is_closed
            await http.aclose()
            assert http.is_closed
            await asyncio.wait_for(closed.wait(), WAIT)
            with pytest.raises(HttpError, match="closed"):
                await http.post(b"b", 5)
        assert server.connections == 1

    run(main())


# -- broken answers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "then_close", "problem"),
    [
        (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", False, "not HTTP/1.x: 'SSH-2.0"),
        (b"HTTP/2 200\r\n\r\n", False, "not HTTP/1.x"),
        (b"HTTP/1.1 2x0 OK\r\n\r\n", False, "not HTTP/1.x"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", False, "malformed header line.*no colon"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n", False, "bad Content-Length.*ten"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", False, "Content-Length -1 is out"),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY + 1),
            False,
            "out of bounds",
        ),
        (CHUNKED_HEAD + b"zz\r\nhello\r\n", False, "bad chunk size in the answer: b'zz'"),
        (CHUNKED_HEAD + b"5\r\nhelloXX", False, "chunk of the answer does not end with CRLF"),
        (CHUNKED_HEAD + b"%x\r\n" % (MAX_BODY + 1), False, "body is longer than"),
        (CHUNKED_HEAD + b"1" * (MAX_HEAD + 10), False, "chunk-size line.*too long"),
        (
            CHUNKED_HEAD + b"2\r\nok\r\n0\r\n" + b"X-Trailer: aaaaaaaa\r\n" * 4000,
            False,
            f"trailers are longer than {MAX_HEAD} bytes",
        ),
        (
            b"HTTP/1.1 200 OK\r\nX-Pad: " + b"a" * MAX_HEAD,
            False,
            f"head is longer than {MAX_HEAD} bytes",
        ),
        (
            b"HTTP/1.1 200 OK\r\nX-Pad: " + b"a" * MAX_HEAD + b"\r\nContent-Length: 0\r\n\r\n",
            False,
            f"head is longer than {MAX_HEAD} bytes",
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 6\r\n\r\nnot gz",
            False,
            "the gzip body does not decompress",
        ),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf", True, "in the middle"),
        (CHUNKED_HEAD + b"5\r\nhel", True, "in the middle"),
        (b"HTTP/1.1 200 OK\r\nContent-", True, "in the middle"),
    ],
    ids=[
        "not-http",
        "http2",
        "bad-status",
        "header-line",
        "content-length",
        "negative-length",
        "huge-length",
        "chunk-size",
        "chunk-end",
        "huge-chunk",
        "chunk-line",
        "endless-trailers",
        "endless-head",
        "huge-head",
        "bad-gzip",
        "short-body",
        "short-chunk",
        "short-head",
    ],
)
def test_a_broken_answer_is_an_error_naming_the_problem(
    answer: bytes, then_close: bool, problem: str
) -> None:
    dropped = asyncio.Event()

    async def broken(peer: Peer) -> None:
        if await peer.request() is None:
            return
        peer.send(answer)
        if not then_close and await peer.closed():
            dropped.set()

    async def main() -> None:
        async with Server(broken) as server, client(server.url()) as http:
            with pytest.raises(HttpError, match=problem) as caught:
                await http.post(b"a", 5)
            assert not isinstance(caught.value, HttpTimeout)
            if not then_close:
                await asyncio.wait_for(dropped.wait(), WAIT)  # the client gave it up

    run(main())


@pytest.mark.parametrize(
    "answer",
    [
        ok(b"first") + b"junk",
        ok(b"first") + ok(b"an answer to nothing"),
        CHUNKED_HEAD + b"5\r\nfirst\r\n0\r\n\r\njunk",
    ],
    ids=["length-junk", "length-answer", "chunked-junk"],
)
def test_extra_bytes_after_an_answer_drop_the_connection(answer: bytes) -> None:
    answers = iter([answer])

    async def handler(peer: Peer) -> None:
        while (request := await peer.request()) is not None:
            peer.send(next(answers, echo(request)))

    async def main() -> None:
        async with Server(handler) as server, client(server.url()) as http:
            first = await http.post(b"a", 5)
            assert first.body == b"first"
            assert (await http.post(b"b", 5)).body == b"echo:b"
        assert server.connections == 2

    run(main())


def test_unsolicited_bytes_on_an_idle_connection_drop_it() -> None:
    sent = asyncio.Event()

    async def chatty(peer: Peer) -> None:
        if peer.index > 0:
            return await replies(echo)(peer)
        if await peer.request() is not None:
            peer.send(ok(b"first"))
            await peer.writer.drain()
            await asyncio.sleep(0.02)
            peer.send(ok(b"nobody asked"))
            sent.set()
            await replies(echo)(peer)  # would answer more, if the client were to ask

    async def main() -> None:
        async with Server(chatty) as server, client(server.url()) as http:
            assert (await http.post(b"a", 5)).body == b"first"
            await asyncio.wait_for(sent.wait(), WAIT)
            await asyncio.sleep(0.05)
            assert (await http.post(b"b", 5)).body == b"echo:b"
        assert server.connections == 2

    run(main())


# -- configuration -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"X-A": "a\r\nInjected: 1"},
        {"X-A": "a\nb"},
        {"X-A": "a\rb"},
        {"X-A\r\nInjected": "1"},
        {"X:A": "1"},
        {"X A": "1"},
        {"": "1"},
        {"X-A": "snow ☃"},
    ],
)
def test_bad_headers_are_refused_when_the_client_is_made(headers: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="header"):
        HttpClient("http://127.0.0.1:1/v1", headers=headers)


@pytest.mark.parametrize("url", ["ftp://example.com/", "http://", "example.com/v1", "/v1"])
def test_urls_that_are_not_http_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="not an http"):
        HttpClient(url)


# -- TLS ---------------------------------------------------------------------------------------


def test_tls_with_a_trusted_certificate(pki: Pki) -> None:
    names: list[str] = []

    async def main() -> None:
        async with (
            Server(replies(echo), server_tls(pki, names)) as server,
            client(server.url(scheme="https"), context=trusting(pki)) as http,
        ):
            assert (await http.post(b"a", 5)).body == b"echo:a"
            assert (await http.post(b"b", 5)).body == b"echo:b"
        assert server.connections == 1
        assert names == [""]  # no SNI for an IP address
        assert server.requests[0].startswith(
            f"POST /v1/chat HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n".encode()
        )

    run(main())


def test_tls_trusts_ssl_cert_file_from_the_environment(
    pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca))

    async def main() -> None:
        async with (
            Server(replies(echo), server_tls(pki)) as server,
            client(server.url(scheme="https")) as http,
        ):
            assert (await http.post(b"a", 5)).body == b"echo:a"

    run(main())


def test_tls_with_an_unknown_ca_fails_naming_tls_and_the_certificate(pki: Pki) -> None:
    async def main() -> None:
        async with (
            Server(replies(echo), server_tls(pki)) as server,
            client(server.url(scheme="https")) as http,  # the default context: certifi's CAs
        ):
            with pytest.raises(HttpError) as caught:
                await http.post(b"a", 5)
        message = str(caught.value)
        assert f"TLS with 127.0.0.1:{server.port} failed" in message
        assert "certificate" in message.lower()
        assert server.requests == []

    run(main())


def test_tls_checks_the_host_name(pki: Pki) -> None:
    async def main() -> None:
        async with (
            Server(replies(echo), server_tls(pki)) as server,
            client(f"https://localhost:{server.port}/v1", context=trusting(pki)) as http,
        ):
            with pytest.raises(HttpError, match=r"TLS with localhost.*[Hh]ostname"):
                await http.post(b"a", 5)
        assert server.requests == []

    run(main())


# -- proxies -----------------------------------------------------------------------------------

BASIC = "Basic " + base64.b64encode(b"user:pa ss").decode()


@pytest.mark.parametrize(
    ("url", "target", "host"),
    [
        ("https://judge.test/v1/chat", "judge.test:443", "judge.test"),
        ("https://judge.test:8443/v1/chat", "judge.test:8443", "judge.test:8443"),
    ],
)
def test_https_through_a_connect_tunnel(pki: Pki, url: str, target: str, host: str) -> None:
    names: list[str] = []

    async def main() -> None:
        async with (
            Server(replies(echo), server_tls(pki, names)) as upstream,
            Proxy(("127.0.0.1", upstream.port)) as proxy,
            client(
                url,
                context=trusting(pki),
                proxies={"https": proxy.address("user:pa%20ss@"), "http": "http://127.0.0.1:1"},
            ) as http,
        ):
            assert (await http.post(b"a", 5)).body == b"echo:a"
            assert (await http.post(b"b", 5)).body == b"echo:b"
        # CONNECT takes host:port, even for the default port (RFC 9110, 9.3.6)
        assert proxy.heads == [
            f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n"
            f"Proxy-Authorization: {BASIC}\r\n\r\n".encode()
        ]
        assert proxy.connections == upstream.connections == 1
        assert names == ["judge.test"]  # TLS with the target, through the tunnel
        assert [r.split(b"\r\n")[:2] for r in upstream.requests] == 2 * [
            [b"POST /v1/chat HTTP/1.1", f"Host: {host}".encode()]
        ]
        assert all(b"Proxy-Authorization" not in r for r in upstream.requests)

    run(main())


def test_http_through_a_proxy_uses_the_absolute_form() -> None:
    async def main() -> None:
        async with (
            Server(replies(echo)) as upstream,
            Proxy(("127.0.0.1", upstream.port)) as proxy,
            client(
                "http://judge.test/v1/chat",
                query={"a": "1"},
                headers={"X-Key": "k"},
                proxies={"http": proxy.address("user:pa%20ss@")},
            ) as http,
        ):
            assert (await http.post(b"hi", 5)).body == b"echo:hi"
            assert (await http.post(b"ho", 5)).body == b"echo:ho"
        expected = (
            b"POST http://judge.test/v1/chat?a=1 HTTP/1.1\r\n"
            b"Host: judge.test\r\n"
            b"X-Key: k\r\n"
            + f"Proxy-Authorization: {BASIC}\r\n".encode()
            + b"Content-Length: 2\r\n\r\n"
        )
        assert upstream.requests == [expected + b"hi", expected + b"ho"]
        assert proxy.heads == [expected]
        assert proxy.connections == 1

    run(main())


def test_a_proxy_refusing_the_tunnel_is_an_error() -> None:
    refusal = (
        b"HTTP/1.1 407 Proxy Authentication Required\r\n"
        b'Proxy-Authenticate: Basic realm="proxy"\r\nContent-Length: 0\r\n\r\n'
    )

    async def main() -> None:
        async with (
            Proxy(refuse=refusal) as proxy,
            client("https://judge.test/v1", proxies={"https": proxy.address()}) as http,
        ):
            with pytest.raises(
                HttpError,
                match=f"proxy 127.0.0.1:{proxy.port} refused a tunnel to judge.test.*HTTP 407",
            ):
                await http.post(b"a", 5)
        assert proxy.heads == [b"CONNECT judge.test:443 HTTP/1.1\r\nHost: judge.test:443\r\n\r\n"]

    run(main())


def test_an_unreachable_proxy_is_named() -> None:
    async def main() -> None:
        with contextlib.closing(free_port()) as sock:
            port = sock.getsockname()[1]
            proxies = {"http": f"127.0.0.1:{port}"}  # no scheme: http://
            async with client("http://judge.test/v1", proxies=proxies) as http:
                with pytest.raises(
                    HttpError, match=f"cannot connect to the proxy 127.0.0.1:{port}"
                ):
                    await http.post(b"a", 5)

    run(main())


def test_only_http_proxies_are_supported() -> None:
    async def main() -> None:
        proxies = {"https": "https://proxy.example:3128"}
        async with client("https://judge.test/v1", proxies=proxies) as http:
            with pytest.raises(HttpError, match="only http:// proxies are"):
                await http.post(b"a", 5)

    run(main())


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
@pytest.mark.parametrize("from_environment", [False, True])
def test_loopback_targets_never_use_a_proxy(
    host: str, from_environment: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def main() -> None:
        async with Server(replies(echo)) as server, Proxy(("127.0.0.1", server.port)) as proxy:
            everything = {"http": proxy.address(), "https": proxy.address(), "all": proxy.address()}
            if from_environment:
                monkeypatch.setenv("HTTP_PROXY", proxy.address())
                monkeypatch.setenv("ALL_PROXY", proxy.address())
            proxies = None if from_environment else everything
            async with client(f"http://{host}:{server.port}/v1", proxies=proxies) as http:
                assert (await http.post(b"a", 5)).body == b"echo:a"
        assert proxy.connections == 0
        assert server.requests[0].startswith(b"POST /v1 HTTP/1.1\r\n")

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
    pki: Pki, monkeypatch: pytest.MonkeyPatch, no_proxy: str | None, proxied: bool
) -> None:
    try:
        socket.create_server(("127.0.0.2", 0)).close()
    except OSError:
        pytest.skip("127.0.0.2 is not a loopback address here")

    async def main() -> None:
        async with (
            Server(replies(echo), server_tls(pki), host="127.0.0.2") as server,
            Proxy(("127.0.0.2", server.port)) as proxy,
        ):
            monkeypatch.setenv("HTTPS_PROXY", proxy.address())
            if no_proxy is not None:
                monkeypatch.setenv("NO_PROXY", no_proxy)
            async with client(server.url(scheme="https"), context=trusting(pki)) as http:
                assert (await http.post(b"a", 5)).body == b"echo:a"
        assert proxy.connections == (1 if proxied else 0)
        if proxied:
            assert proxy.heads[0].startswith(f"CONNECT 127.0.0.2:{server.port} ".encode())

    run(main())
