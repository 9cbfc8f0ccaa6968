"""The OTLP/HTTP receiver: every gzip member, chunked bodies, strict heads, keep-alive, a bounded
number of connections and threads, read timeouts, and a 500 (never a dropped connection) when
handling a request fails.

Requests go out over raw sockets where the point is the exact bytes (heads the ``requests``
library would not send); answers are read with the standard library's parser.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import pytest
import requests
from google.rpc.status_pb2 import Status as RpcStatus
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from otel_online_eval._errors import ConfigError
from otel_online_eval.config import load_config
from otel_online_eval.otlp_json import encode_spans_json
from otel_online_eval.sidecar.config import HttpReceiverConfig
from otel_online_eval.sidecar.http_server import HttpReceiver
from otel_online_eval.sidecar.ingest import Ingest, IngestResult, ReceiverStats
from tests.otlp_receiver import OtlpGrpcReceiver
from tests.sidecar_helpers import (
    HOST,
    RawGrpcReceiver,
    Sidecar,
    TraceSpans,
    eval_spans,
    export_to,
    forward_to,
    make_trace,
    post_http,
    raw_connection,
    raw_http,
    read_answer,
    request_bytes,
    running_sidecar,
    sidecar_config,
    thread_count,
    wait_until,
    write_config,
)

LIMIT = 65536
PROTOBUF = "application/x-protobuf"
JSON = "application/json"


@dataclass
class Setup:
    sidecar: Sidecar
    forward: RawGrpcReceiver
    export: OtlpGrpcReceiver


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    tmp_path = tmp_path_factory.mktemp("http")
    with RawGrpcReceiver() as forward, OtlpGrpcReceiver() as export:
        config = sidecar_config(
            export=export_to(export),
            forward=forward_to(forward.endpoint),
            http={"max_body_bytes": LIMIT, "max_connections": 400},
        )
        with running_sidecar(tmp_path, config) as sidecar:
            yield Setup(sidecar, forward, export)
        assert sidecar.proc.returncode == 0, sidecar.stderr()[-3000:]


def _head(content_type: str = PROTOBUF, *, path: str = "/v1/traces", extra: bytes = b"") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: {content_type}\r\n".encode() + extra
    )


def _post(body: bytes, content_type: str = PROTOBUF, extra: bytes = b"") -> bytes:
    """A whole POST with a right Content-Length; ``extra`` is more header lines."""
    return _head(content_type, extra=extra) + f"Content-Length: {len(body)}\r\n\r\n".encode() + body


def _status(answer_body: bytes, content_type: str = PROTOBUF) -> RpcStatus:
    if content_type == JSON:
        data = json.loads(answer_body)
        return RpcStatus(code=data["code"], message=data["message"])
    return RpcStatus.FromString(answer_body)


def _accepted(sc: Sidecar) -> float:
    return sc.metrics().value("otlp_receiver_spans_total", result="accepted")


def _still_serving(setup: Setup) -> None:
    """A good request is accepted and forwarded unchanged."""
    good = request_bytes(make_trace("good", ("billing",)).spans)
    before = len(setup.forward.bodies)
    response = post_http(setup.sidecar, good)
    assert response.status_code == 200, response.content
    wait_until(lambda: good in setup.forward.bodies[before:], what="the good request forwarded")


def _evaluated(setup: Setup, *traces: TraceSpans) -> None:
    for trace in traces:
        wait_until(
            lambda t=trace: (
                len(eval_spans(setup.export.spans(), t.trace_id)) == len(t.named("chat"))
            ),
            what=f"the chat spans of trace {trace.trace_id:x} evaluated",
        )


# -- gzip members -------------------------------------------------------------------------------


def test_every_gzip_member_is_decoded_forwarded_evaluated_and_counted(setup: Setup) -> None:
    """RFC 1952: several members make one body, their concatenation. Concatenated protobuf
    requests are one request holding all their spans."""
    sc = setup.sidecar
    traces = [make_trace(f"member-{i}", ("billing", "weather")) for i in range(3)]
    parts = [request_bytes(t.spans) for t in traces]
    body = gzip.compress(parts[0]) + gzip.compress(b"") + gzip.compress(parts[1])
    body += gzip.compress(parts[2])
    accepted = _accepted(sc)
    before = len(setup.forward.bodies)
    response = post_http(sc, body, headers={"Content-Encoding": "gzip"})
    assert response.status_code == 200, response.content
    assert ExportTraceServiceResponse.FromString(response.content) == ExportTraceServiceResponse()
    [forwarded] = setup.forward.wait_for_bodies(before + 1)[before:]
    assert forwarded == b"".join(parts)  # the decompressed body, as received
    spans = ExportTraceServiceRequest.FromString(forwarded).resource_spans
    assert sum(len(ss.spans) for rs in spans for ss in rs.scope_spans) == 9
    _evaluated(setup, *traces)
    assert _accepted(sc) == accepted + 9


def test_the_size_limit_covers_all_gzip_members_together(setup: Setup) -> None:
    sc = setup.sidecar
    trace = make_trace("big-members", ["billing " * 500] * 6)
    part = request_bytes(trace.spans)
    assert LIMIT / 3 < len(part) < LIMIT  # each member fits; three do not
    accepted = _accepted(sc)
    response = post_http(sc, gzip.compress(part) * 3, headers={"Content-Encoding": "gzip"})
    assert response.status_code == 413, response.content
    status = _status(response.content)
    assert status.code == 8
    assert status.message == f"decompressed body is over the limit of {LIMIT} bytes"
    _still_serving(setup)
    assert _accepted(sc) == accepted + 2  # the good request's spans only


@pytest.mark.parametrize(
    ("tail", "words"),
    [
        (b"trailing garbage", "the bytes after gzip member 1 are not a gzip member"),
        (b"\0\0\0\0", "the bytes after gzip member 1 are not a gzip member"),
        (gzip.compress(b"more")[:-3], "gzip member 2 is truncated"),
        (b"\x1f", "gzip member 2 is truncated"),
    ],
)
def test_bytes_after_a_gzip_member_that_are_not_a_whole_member_are_a_400(
    setup: Setup, tail: bytes, words: str
) -> None:
    sc = setup.sidecar
    body = gzip.compress(request_bytes(make_trace("tail").spans)) + tail
    accepted = _accepted(sc)
    response = post_http(sc, body, headers={"Content-Encoding": "gzip"})
    assert response.status_code == 400, response.content
    status = _status(response.content)
    assert status.code == 3
    assert status.message.startswith("cannot decompress the gzip body: ")
    assert words in status.message
    assert _accepted(sc) == accepted  # nothing of the request was taken
    _still_serving(setup)


def test_json_gzip_members_are_one_document_or_a_400_that_says_so(setup: Setup) -> None:
    """The members' concatenation is the body, for JSON as for protobuf: one document split
    across members is accepted; two documents are a 400 naming the members."""
    sc = setup.sidecar
    a, b = make_trace("json-a", ("billing",)), make_trace("json-b", ("billing",))
    doc_a, doc_b = encode_spans_json(a.spans).encode(), encode_spans_json(b.spans).encode()
    gz = {"Content-Encoding": "gzip"}
    split = gzip.compress(doc_a[:40]) + gzip.compress(doc_a[40:])
    response = post_http(sc, split, JSON, gz)
    assert response.status_code == 200, response.text
    assert json.loads(response.text) == {}
    _evaluated(setup, a)
    response = post_http(sc, gzip.compress(doc_a) + gzip.compress(doc_b), JSON, gz)
    assert response.status_code == 400, response.text
    assert response.headers["Content-Type"] == JSON
    message = json.loads(response.text)["message"]
    assert "cannot decode the OTLP/JSON request" in message
    assert "the body had 2 gzip members: together they must be one JSON document" in message


# -- framing --------------------------------------------------------------------------------------


def test_chunked_bodies_are_accepted(setup: Setup) -> None:
    sc = setup.sidecar
    trace, zipped = make_trace("chunked", ("billing",)), make_trace("chunked-gz", ("billing",))
    body, gz_body = request_bytes(trace.spans), gzip.compress(request_bytes(zipped.spans))
    before = len(setup.forward.bodies)
    for data, headers in ((body, {}), (gz_body, {"Content-Encoding": "gzip"})):
        response = requests.post(
            sc.url(),
            data=iter([data[:10], data[10:100], data[100:]]),  # a generator: sent chunked
            headers={"Content-Type": PROTOBUF, **headers},
            timeout=10,
        )
        assert response.status_code == 200, response.content
    assert setup.forward.wait_for_bodies(before + 2)[before:] == [body, gzip.decompress(gz_body)]
    _evaluated(setup, trace, zipped)
    # Chunked over the limit: 413, however it is cut.
    response = requests.post(
        sc.url(),
        data=iter([b"\0" * 40000, b"\0" * 40000]),
        headers={"Content-Type": PROTOBUF},
        timeout=10,
    )
    assert response.status_code == 413
    assert "over the limit" in _status(response.content).message
    _still_serving(setup)


@pytest.mark.parametrize(
    "length",
    [
        b"Content-Length: \xb2\r\n",  # U+00B2 as latin-1: str.isdigit() is true, int() fails
        "Content-Length: \u00b2\r\n".encode(),  # and as UTF-8
        b"Content-Length: 1_0\r\n",
        b"Content-Length: -5\r\n",
        b"Content-Length: +5\r\n",
        b"Content-Length: 0x10\r\n",
    ],
    ids=["sup2-latin1", "sup2-utf8", "underscore", "negative", "plus", "hex"],
)
def test_a_content_length_that_is_not_digits_is_a_400(setup: Setup, length: bytes) -> None:
    answer = raw_http(setup.sidecar.http_endpoint, _head() + length + b"\r\n" + b"\0" * 10)
    assert answer.status == 400, answer
    _still_serving(setup)


def test_two_different_content_lengths_are_a_400(setup: Setup) -> None:
    body = request_bytes(make_trace("two-lengths").spans)
    lengths = f"Content-Length: {len(body)}\r\nContent-Length: {len(body) + 1}\r\n\r\n"
    accepted = _accepted(setup.sidecar)
    answer = raw_http(setup.sidecar.http_endpoint, _head() + lengths.encode() + body + b"\0")
    assert answer.status == 400, answer
    assert _accepted(setup.sidecar) == accepted
    _still_serving(setup)


def test_content_length_with_chunked_is_a_400(setup: Setup) -> None:
    body = request_bytes(make_trace("smuggle").spans)
    head = _head() + f"Content-Length: {len(body)}\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
    chunked = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    answer = raw_http(setup.sidecar.http_endpoint, head + chunked)
    assert answer.status == 400, answer
    _still_serving(setup)


def test_bad_chunked_framing_is_a_400(setup: Setup) -> None:
    head = _head() + b"Transfer-Encoding: chunked\r\n\r\n"
    answer = raw_http(setup.sidecar.http_endpoint, head + b"zz\r\nhello\r\n0\r\n\r\n")
    assert answer.status == 400, answer
    _still_serving(setup)


def test_one_connection_serves_many_requests(setup: Setup) -> None:
    """Keep-alive: good and refused requests, one after the other on one connection."""
    good = request_bytes(make_trace("keep", ("billing",)).spans)
    with raw_connection(setup.sidecar.http_endpoint) as sock:
        for data, status in (
            (_post(good), 200),
            (_post(b"x" * 3000, "text/plain"), 415),  # refused, its body read and dropped
            (_post(good, extra=b"Content-Encoding: gzip\r\n"), 400),  # not gzip
            (_post(good), 200),
            (b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 200),
            (b"GET /v1/traces HTTP/1.1\r\nHost: x\r\n\r\n", 405),
            (_post(good), 200),
        ):
            sock.sendall(data)
            answer = read_answer(sock, data.split(b" ", 1)[0].decode())
            assert answer.status == status, answer
            assert not answer.closes


def test_unknown_paths_and_methods(setup: Setup) -> None:
    sc = setup.sidecar
    assert requests.get(sc.url("/nope"), timeout=5).status_code == 404
    assert requests.post(sc.url("/v1/metrics"), data=b"x", timeout=5).status_code == 404
    response = requests.get(sc.url("/v1/traces"), timeout=5)
    assert (response.status_code, response.headers["Allow"]) == (405, "POST")
    response = requests.delete(sc.url("/healthz"), timeout=5)
    assert (response.status_code, response.headers["Allow"]) == (405, "GET, HEAD")
    assert requests.head(sc.url("/healthz"), timeout=5).status_code == 200


# -- connections and threads ----------------------------------------------------------------------


def _held_by(pid: int, socks: list[socket.socket]) -> int:
    """How many of ``socks`` the process ``pid`` holds the other end of (it accepted them).

    Matched through the kernel's socket table, by the clients' ports and the process's socket
    inodes: counting the process's descriptors instead raced with connections of earlier tests
    that the receiver was still closing."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    peers = {(s.getpeername()[1], s.getsockname()[1]) for s in socks}
    held = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            next(f)
            for line in f:
                fields = line.split()
                local, remote, inode = fields[1], fields[2], fields[9]
                ports = (int(local.rsplit(":", 1)[1], 16), int(remote.rsplit(":", 1)[1], 16))
                held += ports in peers and inode in inodes
    return held


def test_300_half_sent_requests_do_not_make_300_threads(setup: Setup) -> None:
    sc = setup.sidecar
    threads = thread_count(sc.pid)
    good = request_bytes(make_trace("half", ("billing",)).spans)
    socks: list[socket.socket] = []
    try:
        for i in range(300):
            sock = raw_connection(sc.http_endpoint)
            socks.append(sock)
            if i % 3 == 0:
                sock.sendall(_head()[:20])  # part of a head
            elif i % 3 == 1:
                sock.sendall(_head())  # a head with no end
            else:
                sock.sendall(_post(good)[:-100])  # a whole head, part of the body
        # Every connection accepted (the sidecar holds the other end of each)...
        wait_until(lambda: _held_by(sc.pid, socks) == 300, what="300 connections accepted")
        # ...and still the same threads, and a good request is served beside them.
        assert thread_count(sc.pid) <= threads + 2, (threads, thread_count(sc.pid))
        assert post_http(sc, good).status_code == 200
        assert thread_count(sc.pid) <= threads + 2
    finally:
        for sock in socks:
            sock.close()


@pytest.fixture(scope="module")
def slow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sidecar]:
    """A sidecar with two connection slots and a read timeout of one second."""
    tmp_path = tmp_path_factory.mktemp("slow")
    config = sidecar_config(http={"max_connections": 2, "read_timeout_s": 1})
    with running_sidecar(tmp_path, config) as sidecar:
        yield sidecar


def _trickle(sock: socket.socket, data: bytes, every_s: float, stop: threading.Event) -> None:
    """Send ``data`` a byte at a time until it is all sent, the peer closes, or ``stop``."""
    for i in range(len(data)):
        if stop.wait(every_s):
            return
        try:
            sock.sendall(data[i : i + 1])
        except OSError:
            return


def _closed_by_peer(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_a_trickled_body_is_cut_off_and_others_are_served(slow: Sidecar) -> None:
    good = request_bytes(make_trace("beside", ("billing",)).spans)
    stop = threading.Event()
    with raw_connection(slow.http_endpoint) as sock:
        sock.sendall(_head() + b"Content-Length: 1000\r\n\r\n")
        started = time.monotonic()
        trickler = threading.Thread(target=_trickle, args=(sock, b"\0" * 1000, 0.05, stop))
        trickler.start()
        try:
            # Served while the trickle goes on (the other slot).
            assert raw_http(slow.http_endpoint, _post(good)).status == 200
            answer = read_answer(sock)
            waited = time.monotonic() - started
        finally:
            stop.set()
            trickler.join(10)
        assert answer.status == 408, answer
        assert _status(answer.body).message == "the body was not received within 1s"
        assert answer.closes
        assert 0.9 < waited < 10, waited
        assert _closed_by_peer(sock)
    m = slow.metrics()
    assert m.value("otlp_receiver_requests_total", transport="http", outcome="timeout") >= 1


def test_a_trickled_head_is_cut_off(slow: Sidecar) -> None:
    stop = threading.Event()
    with raw_connection(slow.http_endpoint) as sock:
        started = time.monotonic()
        head = _head() + b"X-Slow: " + b"a" * 5000  # never ends within the test
        trickler = threading.Thread(target=_trickle, args=(sock, head, 0.05, stop))
        trickler.start()
        try:
            assert _closed_by_peer(sock)  # no answer: the head never ended
            waited = time.monotonic() - started
        finally:
            stop.set()
            trickler.join(10)
    assert 0.9 < waited < 10, waited


def test_a_cut_off_connection_frees_its_slot(slow: Sidecar) -> None:
    """Two half-sent heads hold both slots; a third connection waits in the backlog until
    the read timeout frees one, then it is served."""
    good = request_bytes(make_trace("waits", ("billing",)).spans)
    holders = [raw_connection(slow.http_endpoint) for _ in range(2)]
    try:
        for sock in holders:
            sock.sendall(_head())
        started = time.monotonic()
        answer = raw_http(slow.http_endpoint, _post(good))
        waited = time.monotonic() - started
        assert answer.status == 200
        assert 0.5 < waited < 10, waited  # not before a slot was freed
        assert all(_closed_by_peer(sock) for sock in holders)
    finally:
        for sock in holders:
            sock.close()


def test_max_connections_is_honoured(tmp_path: Path) -> None:
    """Two slots, a long read timeout: a third connection is not served until one of the
    first two closes."""
    config = sidecar_config(http={"max_connections": 2, "read_timeout_s": 60})
    good = request_bytes(make_trace("capped", ("billing",)).spans)
    with running_sidecar(tmp_path, config) as sc:
        first, second = raw_connection(sc.http_endpoint), raw_connection(sc.http_endpoint)
        third = raw_connection(sc.http_endpoint)  # the kernel completes the TCP handshake
        try:
            for sock in (first, second):
                sock.sendall(_post(good))
                assert read_answer(sock).status == 200  # kept alive, holding its slot
            third.sendall(_post(good))
            third.settimeout(1.0)
            with pytest.raises(TimeoutError):
                third.recv(1)  # waits in the backlog
            first.close()
            third.settimeout(10)
            assert read_answer(third).status == 200
        finally:
            for sock in (first, second, third):
                sock.close()


def test_connections_past_max_connections_wait_in_a_deep_backlog(tmp_path: Path) -> None:
    """400 connections beyond two slots all complete their handshake at once: the listen
    backlog holds them. (With a backlog of 128 the kernel dropped the handshakes past it, and
    clients waited 1, 2, 4 s to retry: the cause of a flaky test with 300 connections.)"""
    config = sidecar_config(http={"max_connections": 2, "read_timeout_s": 60})
    with running_sidecar(tmp_path, config) as sc:
        socks: list[socket.socket] = []
        try:
            for _ in range(402):
                socks.append(raw_connection(sc.http_endpoint, timeout=0.5))
        finally:
            for sock in socks:
                sock.close()
        assert len(socks) == 402
        assert sc.proc.poll() is None


def test_the_connection_settings_default_and_are_checked(tmp_path: Path) -> None:
    path = write_config(tmp_path / "ok.yaml", sidecar_config())
    receiver = load_config(path).receiver
    assert receiver is not None and receiver.http is not None
    assert (receiver.http.max_connections, receiver.http.read_timeout_s) == (256, 30.0)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("max_connections", 0, "must be between 1 and 65536, got 0"),
        ("max_connections", 1.5, "must be a whole number, got 1.5"),
        ("max_connections", "many", "must be a whole number, got 'many'"),
        ("read_timeout_s", 0, "must be between 0.01 and 3600, got 0"),
        ("read_timeout_s", -1, "must be between 0.01 and 3600, got -1"),
        ("read_timeout_s", "soon", "must be a number, got 'soon'"),
    ],
)
def test_bad_connection_settings_are_config_errors_with_their_line(
    tmp_path: Path, key: str, value: object, message: str
) -> None:
    path = write_config(tmp_path / "bad.yaml", sidecar_config(http={key: value}))
    [line] = [i for i, text in enumerate(path.read_text().splitlines(), 1) if f"{key}:" in text]
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert f"{path}:{line}:" in str(raised.value)
    assert f"receiver.http.{key}: {message}" in str(raised.value)


# -- a failure inside the handler ----------------------------------------------------------------


class _FailingIngest:
    """Stands in for Ingest: its handle raises (the real one must not, but if it did...)."""

    def __init__(self) -> None:
        self.stats = ReceiverStats()
        self.calls = 0

    def handle(self, body: bytes, fmt: str) -> IngestResult:
        self.calls += 1
        raise RuntimeError("boom in handle")


def test_an_exception_from_handle_is_a_500_counted_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ingest = _FailingIngest()
    receiver = HttpReceiver(
        HttpReceiverConfig(endpoint=f"{HOST}:0"), cast(Ingest, ingest), lambda: ""
    )
    receiver.start()
    url = f"http://{HOST}:{receiver.port}"
    body = request_bytes(make_trace("boom").spans)
    try:
        with caplog.at_level(logging.ERROR, "otel_online_eval.sidecar.http_server"):
            with requests.Session() as session:
                for _ in range(3):
                    response = session.post(
                        f"{url}/v1/traces", data=body, headers={"Content-Type": PROTOBUF}
                    )
                    assert response.status_code == 500
                    assert "RuntimeError: boom in handle" in response.text
            assert requests.get(f"{url}/healthz", timeout=5).status_code == 200
        assert ingest.calls == 3
        assert ingest.stats.requests[("http", "error")] == 3
        logged = [r for r in caplog.records if "Error while handling" in r.getMessage()]
        assert len(logged) == 1 and logged[0].exc_info is not None  # rate-limited
    finally:
        receiver.stop(1)
