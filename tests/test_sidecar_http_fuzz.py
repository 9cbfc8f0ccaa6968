"""Property-based test of the OTLP/HTTP receiver's front: random and mutated requests over raw
sockets (heads, Content-Length, chunked framing, gzip members, media types, encodings).

The properties, for every request: the connection gets an HTTP answer whose status is one the
receiver documents, or, when the request is left incomplete, the connection is closed (or
answered 408) only after the read timeout, never dropped before; and afterwards the receiver
serves a health check. A fixed budget and a fixed seed (``derandomize``): the same examples
every run.
"""

from __future__ import annotations

import gzip
import http.client
import json
import time
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from otel_online_eval.otlp_json import encode_spans_json
from tests.sidecar_helpers import (
    Sidecar,
    make_trace,
    raw_connection,
    raw_http,
    read_answer,
    request_bytes,
    running_sidecar,
    sidecar_config,
)

# The receiver's answers (README, "OTLP/HTTP receiver"); aiohttp's own parser adds only 400s.
STATUSES = {200, 400, 401, 404, 405, 408, 413, 415, 417, 500, 503, 505}
LIMIT = 16384
READ_TIMEOUT_S = 0.5

_TRACE = make_trace("fuzz", ("billing",))
PROTOBUF_BODY = request_bytes(_TRACE.spans)
JSON_BODY = encode_spans_json(_TRACE.spans).encode()


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sidecar]:
    tmp_path = tmp_path_factory.mktemp("http-fuzz")
    config = sidecar_config(
        http={"max_body_bytes": LIMIT, "read_timeout_s": READ_TIMEOUT_S},
        receiver={"auth": {"bearer_token": "fuzz-token"}},
    )
    with running_sidecar(tmp_path, config) as sc:
        yield sc
        assert sc.proc.poll() is None, sc.stderr()[-3000:]
    assert "Traceback" not in sc.stderr(), sc.stderr()[-3000:]


# -- what a request is made of --------------------------------------------------------------------

bodies = st.one_of(
    st.just(PROTOBUF_BODY),
    st.just(JSON_BODY),
    st.binary(max_size=300),
    st.just(PROTOBUF_BODY[: len(PROTOBUF_BODY) // 2]),
    st.just(b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"kind":1e400}]}]}]}'),
    st.just(b"\0" * (LIMIT + 10)),
)


@st.composite
def encoded(draw: st.DrawFn) -> tuple[bytes, str | None]:
    """A body and its Content-Encoding: as it is, gzip in one or several members, with a tail."""
    body = draw(bodies)
    how = draw(st.sampled_from(["identity", "none", "gzip", "members", "tail", "bomb", "br"]))
    if how == "identity":
        return body, "identity"
    if how == "none":
        return body, None
    if how == "gzip":
        return gzip.compress(body), "gzip"
    if how == "members":
        cut = draw(st.integers(0, len(body)))
        return gzip.compress(body[:cut]) + gzip.compress(body[cut:]), "gzip"
    if how == "tail":
        return gzip.compress(body) + draw(st.binary(min_size=1, max_size=20)), "gzip"
    if how == "bomb":
        return gzip.compress(b"\0" * (LIMIT * 4)), "gzip"
    return body, "br"


def weighted(common: object, *rare: object, weight: int = 6) -> st.SearchStrategy[object]:
    """``common`` most of the time (``weight`` to one against each of ``rare``)."""
    return st.sampled_from([common] * weight + list(rare))


content_types = weighted(
    "application/x-protobuf",
    "application/json",
    "application/JSON; charset=utf-8",
    "application/x-protobuf; q=1",
    "text/plain",
    "",
    "application/",
    "multipart/form-data; boundary=x",
    "application/x-protobuf\u00e9",
    weight=8,
)
paths = weighted("/v1/traces", "/v1/traces?x=1", "/healthz", "/metrics", "/v1/logs", "/")
methods = weighted("POST", "GET", "PUT", "HEAD", "OPTIONS", "PRI")
versions = weighted("HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/1.x", weight=12)
auths = weighted(
    "Bearer fuzz-token", "bearer fuzz-token", "Bearer nope", "fuzz-token", "", "Bearer"
)
framings = st.sampled_from(["length"] * 6 + ["chunked"] * 4 + ["both", "none", "lengths", "bad"])
extras = weighted(b"", b"X-A: b", b"Connection: close", b"Expect: 100-continue",
                  b"Expect: magic", b"bad header", weight=10)  # fmt: skip


@st.composite
def requests_(draw: st.DrawFn) -> bytes:
    body, encoding = draw(encoded())
    method, path, version = draw(methods), draw(paths), draw(versions)
    lines = [f"{method} {path} {version}".encode(), b"Host: 127.0.0.1"]
    content_type = draw(content_types)
    if content_type:
        lines.append(b"Content-Type: " + str(content_type).encode())
    if encoding is not None:
        lines.append(b"Content-Encoding: " + encoding.encode())
    auth = draw(auths)
    if auth:
        lines.append(b"Authorization: " + str(auth).encode())
    extra = draw(extras)
    if extra:
        lines.append(extra)  # type: ignore[arg-type]
    framing = draw(framings)
    if framing in ("length", "both"):
        lines.append(f"Content-Length: {len(body)}".encode())
    if framing == "lengths":
        lines += [
            f"Content-Length: {len(body)}".encode(),
            f"Content-Length: {len(body) + 1}".encode(),
        ]
    if framing == "bad":
        bad = draw(st.sampled_from([b"\xb2", "\u00b2".encode(), b"-1", b"1e3", b"0x10", b" 12 3"]))
        lines.append(b"Content-Length: " + bad)
    if framing in ("chunked", "both"):
        lines.append(b"Transfer-Encoding: chunked")
        pieces = draw(st.lists(st.integers(1, 64), max_size=4))
        chunks, at = b"", 0
        for size in pieces:
            chunk = body[at : at + size]
            at += size
            if chunk:
                chunks += f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
        rest = body[at:]
        if rest:
            chunks += f"{len(rest):x}\r\n".encode() + rest + b"\r\n"
        body = chunks + b"0\r\n\r\n"
    message = b"\r\n".join(lines) + b"\r\n\r\n" + body
    if draw(st.integers(0, 15)) == 15:  # left incomplete: the server waits for the rest
        message = message[: draw(st.integers(1, len(message) - 1))]
    # One time in six, a few bytes flipped, dropped or added anywhere.
    for _ in range(draw(st.integers(1, 3)) if draw(st.integers(0, 5)) == 5 else 0):
        at = draw(st.integers(0, max(0, len(message) - 1)))
        op = draw(st.sampled_from(["flip", "drop", "add"]))
        if op == "flip" and message:
            flipped = bytes([message[at] ^ draw(st.integers(1, 255))])
            message = message[:at] + flipped + message[at + 1 :]
        elif op == "drop":
            message = message[:at] + message[at + 1 :]
        else:
            message = message[:at] + draw(st.binary(min_size=1, max_size=4)) + message[at:]
    return message


def _exchange(sc: Sidecar, message: bytes) -> tuple[int | None, float]:
    """Send ``message``; the status of the answer (None if closed without one) and how long it
    took."""
    started = time.monotonic()
    with raw_connection(sc.http_endpoint, timeout=READ_TIMEOUT_S * 4 + 5) as sock:
        try:
            sock.sendall(message)
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed while we sent: an answer may still be waiting to be read
        method = message.split(b" ", 1)[0].decode("latin-1")
        try:
            answer = read_answer(sock, method)
        except (http.client.RemoteDisconnected, ConnectionResetError):
            return None, time.monotonic() - started
        except http.client.IncompleteRead:
            raise AssertionError("an answer was cut short") from None
    return answer.status, time.monotonic() - started


@settings(
    max_examples=300,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(message=requests_())
def test_every_request_gets_a_documented_answer_or_waits_out_the_timeout(
    sidecar: Sidecar, message: bytes
) -> None:
    status, took = _exchange(sidecar, message)
    event(f"answer {status}")  # shown by --hypothesis-show-statistics
    if status is None:
        # Closed with no answer: only a head the server was still waiting for.
        assert took >= READ_TIMEOUT_S * 0.8, (took, message[:300])
    else:
        assert status in STATUSES, (status, message[:300])
        if status == 408:
            assert took >= READ_TIMEOUT_S * 0.8
    health = raw_http(sidecar.http_endpoint, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (health.status, health.body) == (200, b"ok\n")


def test_nothing_failed_inside_the_handler(sidecar: Sidecar) -> None:
    """After the examples above (pytest runs them first): no request ended in a 500, and
    refusals were counted."""
    bad = raw_http(sidecar.http_endpoint, b"GET / HTTP/1.1\r\nHost: x\r\nbad header\r\n\r\n")
    assert bad.status == 400
    m = sidecar.metrics(headers={"Authorization": "Bearer fuzz-token"})
    assert m.value("otlp_receiver_requests_total", transport="http", outcome="invalid") > 0
    assert m.value("otlp_receiver_requests_total", transport="http", outcome="error") == 0
    text = json.dumps(sidecar.log_messages("Error while handling"))
    assert text == "[]", text
