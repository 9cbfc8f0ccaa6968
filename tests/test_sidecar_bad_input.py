"""Bad requests get the OTLP answer for them, and the sidecar keeps serving the next good one.

One sidecar serves the whole module (small size limits: 64 KiB), with a forward and an export
receiver; every case checks its answer, then that a good request over each protocol succeeds.
"""

from __future__ import annotations

import gzip
import json
import random
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import requests
from google.protobuf.message import DecodeError
from google.rpc.status_pb2 import Status as RpcStatus
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from otel_online_eval.otlp_json import encode_spans_json
from tests.otlp_receiver import OtlpGrpcReceiver
from tests.sidecar_helpers import (
    RawGrpcReceiver,
    Sidecar,
    eval_spans,
    export_to,
    forward_to,
    make_trace,
    post_http,
    request_bytes,
    running_sidecar,
    send_grpc,
    sidecar_config,
    wait_until,
)

LIMIT = 65536


@dataclass
class Setup:
    sidecar: Sidecar
    forward: RawGrpcReceiver
    export: OtlpGrpcReceiver


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    tmp_path = tmp_path_factory.mktemp("bad-input")
    with RawGrpcReceiver() as forward, OtlpGrpcReceiver() as export:
        config = sidecar_config(
            export=export_to(export),
            forward=forward_to(forward.endpoint),
            grpc={"max_message_bytes": LIMIT},
            http={"max_body_bytes": LIMIT},
        )
        with running_sidecar(tmp_path, config) as sidecar:
            yield Setup(sidecar, forward, export)
        assert sidecar.proc.returncode == 0, sidecar.stderr()[-3000:]


def _assert_still_serving(setup: Setup) -> None:
    """A good request right after, over each protocol, is accepted and forwarded."""
    sc = setup.sidecar
    assert sc.proc.poll() is None, sc.stderr()[-3000:]
    before = len(setup.forward.bodies)
    good = request_bytes(make_trace("good", ("billing",)).spans)
    assert send_grpc(sc.grpc_endpoint, good) == ExportTraceServiceResponse()
    response = post_http(sc, good)
    assert response.status_code == 200, response.content
    assert ExportTraceServiceResponse.FromString(response.content) == ExportTraceServiceResponse()
    # Both copies arrive byte-identical; a straggler from an earlier case may arrive between
    # them (forwarding is asynchronous), so look for the copies rather than at the last two.
    setup.forward.wait_for_bodies(before + 2)
    wait_until(
        lambda: setup.forward.bodies[before:].count(good) == 2,
        what="both good requests forwarded unchanged",
    )


# -- building bad requests --------------------------------------------------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _ld(tag: int, payload: bytes) -> bytes:
    return bytes((tag,)) + _varint(len(payload)) + payload


def _request_with_span_bytes(extra: bytes) -> bytes:
    """A one-span request whose span has ``extra`` appended to its encoding, written by hand
    (``extra`` may be something protobuf libraries refuse to build)."""
    [span] = make_trace("raw", ("billing",)).named("chat")
    request = ExportTraceServiceRequest.FromString(request_bytes([span]))
    rs = request.resource_spans[0]
    ss = rs.scope_spans[0]
    span_bytes = ss.spans[0].SerializeToString() + extra
    scope_spans = _ld(0x0A, ss.scope.SerializeToString()) + _ld(0x12, span_bytes)
    resource_spans = _ld(0x0A, rs.resource.SerializeToString()) + _ld(0x12, scope_spans)
    return _ld(0x0A, resource_spans)


def _deeply_nested(depth: int) -> bytes:
    """A request whose span has an attribute nested ``depth`` arrays deep."""
    value = _ld(0x0A, b"leaf")  # AnyValue.string_value
    for _ in range(depth):
        value = _ld(0x2A, _ld(0x0A, value))  # AnyValue.array_value > ArrayValue.values
    key_value = _ld(0x0A, b"deep") + _ld(0x12, value)
    return _request_with_span_bytes(_ld(0x4A, key_value))  # Span.attributes


def _bad_utf8() -> bytes:
    return _request_with_span_bytes(_ld(0x2A, b"chat\xff\xfe"))  # Span.name


def _random_bytes() -> bytes:
    rng = random.Random(20240611)
    while True:
        data = rng.randbytes(512)
        try:
            ExportTraceServiceRequest.FromString(data)
        except DecodeError:
            return data


def _truncated() -> bytes:
    return request_bytes(make_trace("truncated").spans)[:-7]


def _deep_json(depth: int) -> bytes:
    value: dict[str, object] = {"stringValue": "leaf"}
    for _ in range(depth):
        value = {"arrayValue": {"values": [value]}}
    data = json.loads(encode_spans_json(make_trace("deep-json", ("billing",)).named("chat")))
    data["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["attributes"].append(
        {"key": "deep", "value": value}
    )
    return json.dumps(data).encode()


# -- HTTP ---------------------------------------------------------------------------------------

PROTOBUF = "application/x-protobuf"
JSON = "application/json"

HTTP_CASES = {
    # name: (body, content type, extra headers, status, words in the message)
    "truncated protobuf": (_truncated(), PROTOBUF, {}, 400, "cannot decode the protobuf"),
    "random bytes": (_random_bytes(), PROTOBUF, {}, 400, "cannot decode the protobuf"),
    "invalid utf-8": (_bad_utf8(), PROTOBUF, {}, 400, "UTF-8"),
    "nested 200 deep": (_deeply_nested(200), PROTOBUF, {}, 400, "cannot decode"),
    "invalid json": (b'{"resourceSpans": [', JSON, {}, 400, "not valid JSON"),
    "json not an object": (b"[1, 2]", JSON, {}, 400, "must be a JSON object"),
    "json invalid utf-8": (b'{"resourceSpans": [{"x": "\xff"}]}', JSON, {}, 400, "decode"),
    "json nested 200 deep": (_deep_json(200), JSON, {}, 400, "cannot decode"),
    "text/plain": (b"hello", "text/plain", {}, 415, "unsupported Content-Type"),
    "no content type": (b"hello", "", {}, 415, "unsupported Content-Type"),
    "oversize": (b"\0" * (LIMIT + 1), PROTOBUF, {}, 413, "over the limit"),
    "oversize x100": (b"\0" * (100 * LIMIT), PROTOBUF, {}, 413, "over the limit"),
    "gzip bomb": (
        gzip.compress(b"\0" * (50 * LIMIT)),
        PROTOBUF,
        {"Content-Encoding": "gzip"},
        413,
        "decompressed body is over the limit",
    ),
    "not gzip": (b"plainly not gzip", PROTOBUF, {"Content-Encoding": "gzip"}, 400, "gzip"),
    "truncated gzip": (
        gzip.compress(_truncated())[:-10],
        PROTOBUF,
        {"Content-Encoding": "gzip"},
        400,
        "gzip",
    ),
    "unknown encoding": (b"x", PROTOBUF, {"Content-Encoding": "br"}, 415, "Content-Encoding"),
}


def _status_message(content: bytes, content_type: str) -> tuple[int, str]:
    """The google.rpc.Status of an error answer, in the request's encoding."""
    if content_type.startswith(JSON):
        data = json.loads(content)
        return int(data["code"]), str(data["message"])
    status = RpcStatus.FromString(content)
    return status.code, status.message


@pytest.mark.parametrize("case", list(HTTP_CASES))
def test_bad_http_request(setup: Setup, case: str) -> None:
    body, content_type, headers, status, words = HTTP_CASES[case]
    if status != 413:
        assert len(body) <= LIMIT  # the case is about its content, not its size
    response = post_http(setup.sidecar, body, content_type, headers)
    assert response.status_code == status, response.content
    code, message = _status_message(response.content, response.headers["Content-Type"])
    assert words in message
    assert code == {400: 3, 413: 8, 415: 3}[status]
    _assert_still_serving(setup)


def test_json_errors_answer_in_json(setup: Setup) -> None:
    response = post_http(setup.sidecar, b"{", JSON)
    assert response.status_code == 400
    assert response.headers["Content-Type"] == JSON
    assert json.loads(response.content)["code"] == 3


# -- gRPC ---------------------------------------------------------------------------------------

GRPC_CASES = {
    "truncated protobuf": (_truncated(), grpc.StatusCode.INVALID_ARGUMENT, "cannot decode"),
    "random bytes": (_random_bytes(), grpc.StatusCode.INVALID_ARGUMENT, "cannot decode"),
    "invalid utf-8": (_bad_utf8(), grpc.StatusCode.INVALID_ARGUMENT, "UTF-8"),
    "nested 200 deep": (_deeply_nested(200), grpc.StatusCode.INVALID_ARGUMENT, "cannot decode"),
    "oversize": (b"\0" * (LIMIT + 1), grpc.StatusCode.RESOURCE_EXHAUSTED, ""),
    # sent gzip-compressed (about 50 KiB on the wire): the limit holds after decompression
    "gzip bomb": (b"\0" * (1000 * LIMIT), grpc.StatusCode.RESOURCE_EXHAUSTED, "Decompressed"),
}


@pytest.mark.parametrize("case", list(GRPC_CASES))
def test_bad_grpc_request(setup: Setup, case: str) -> None:
    body, code, words = GRPC_CASES[case]
    compression = grpc.Compression.Gzip if case == "gzip bomb" else None
    with pytest.raises(grpc.RpcError) as raised:
        send_grpc(setup.sidecar.grpc_endpoint, body, compression=compression)
    error = raised.value
    assert error.code() == code
    assert words in error.details()
    _assert_still_serving(setup)


def test_unknown_grpc_method_is_unimplemented(setup: Setup) -> None:
    channel = grpc.insecure_channel(setup.sidecar.grpc_endpoint)
    with channel:
        call = channel.unary_unary(
            "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
            request_serializer=None,
            response_deserializer=None,
        )
        with pytest.raises(grpc.RpcError) as raised:
            call(b"", timeout=5)
    assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED
    _assert_still_serving(setup)


def test_refusals_are_counted(setup: Setup) -> None:
    m = setup.sidecar.metrics()
    assert m.value("otlp_receiver_requests_total", transport="http", outcome="invalid") >= 7
    assert m.value("otlp_receiver_requests_total", transport="grpc", outcome="invalid") >= 3
    assert m.value("otlp_receiver_requests_total", transport="http", outcome="too_large") >= 3
    assert (
        m.value("otlp_receiver_requests_total", transport="http", outcome="unsupported_media_type")
        >= 2
    )
    assert m.value("otlp_receiver_rejects_total", reason="invalid") >= 11
    assert m.value("online_eval_spans_dropped_total", reason="error") == 0


# -- spans with bad ids: partial success ----------------------------------------------------------


def _with_bad_ids() -> tuple[bytes, set[int], int]:
    """A request of good spans plus four with bad ids; the good span ids and the trace."""
    trace = make_trace("ids", ("billing", "shipping"))
    request = ExportTraceServiceRequest.FromString(request_bytes(trace.spans))
    spans = request.resource_spans[0].scope_spans[0].spans
    template = spans[1]
    for field, value in (
        ("trace_id", b"\x01" * 4),
        ("span_id", b"\x02" * 7),
        ("parent_span_id", b"\x03" * 3),
        ("trace_id", bytes(16)),
    ):
        bad = spans.add()
        bad.CopyFrom(template)
        bad.span_id = random.Random(field).randbytes(8)
        setattr(bad, field, value)
    return request.SerializeToString(), trace.ids(), trace.trace_id


def _check_partial(setup: Setup, response: ExportTraceServiceResponse, good: set[int]) -> None:
    assert response.partial_success.rejected_spans == 4
    message = response.partial_success.error_message
    assert message.startswith("4 span(s) rejected")
    assert "trace_id must be 16 bytes" in message
    # The good spans went on, re-encoded without the bad ones.
    forwarded = wait_until(
        lambda: [r for r in setup.forward.requests() if _span_ids(r) & good],
        what="the good spans forwarded",
    )
    [request] = forwarded[-1:]
    assert _span_ids(request) == good


def _span_ids(request: ExportTraceServiceRequest) -> set[int]:
    return {
        int.from_bytes(span.span_id, "big")
        for rs in request.resource_spans
        for ss in rs.scope_spans
        for span in ss.spans
    }


def test_bad_ids_get_partial_success_over_grpc(setup: Setup) -> None:
    body, good, trace_id = _with_bad_ids()
    response = send_grpc(setup.sidecar.grpc_endpoint, body)
    _check_partial(setup, response, good)
    # ...and the good chat spans were evaluated.
    wait_until(lambda: len(eval_spans(setup.export.spans(), trace_id)) >= 2)
    _assert_still_serving(setup)


def test_bad_ids_get_partial_success_over_http(setup: Setup) -> None:
    body, good, trace_id = _with_bad_ids()
    response = post_http(setup.sidecar, body)
    assert response.status_code == 200
    _check_partial(setup, ExportTraceServiceResponse.FromString(response.content), good)
    wait_until(lambda: len(eval_spans(setup.export.spans(), trace_id)) >= 2)
    _assert_still_serving(setup)


def test_a_request_of_only_bad_spans_forwards_nothing(setup: Setup) -> None:
    trace = make_trace("all-bad")
    request = ExportTraceServiceRequest.FromString(request_bytes(trace.spans))
    for span in request.resource_spans[0].scope_spans[0].spans:
        span.span_id = b"\x01\x02"
    before = len(setup.forward.bodies)
    response = send_grpc(setup.sidecar.grpc_endpoint, request.SerializeToString())
    assert response.partial_success.rejected_spans == 3
    _assert_still_serving(setup)  # a later request is forwarded right after the earlier ones
    assert len(setup.forward.bodies) == before + 2


def test_all_zero_ids_in_json_get_partial_success(setup: Setup) -> None:
    trace = make_trace("json-ids", ("billing",))
    data = json.loads(encode_spans_json(trace.spans))
    spans = data["resourceSpans"][0]["scopeSpans"][0]["spans"]
    spans.append({**spans[0], "spanId": "0" * 16})
    response = post_http(setup.sidecar, json.dumps(data).encode(), JSON)
    assert response.status_code == 200, response.text
    partial = json.loads(response.text)["partialSuccess"]
    assert int(partial["rejectedSpans"]) == 1
    assert "span_id must be 8 bytes, not all zero" in partial["errorMessage"]
    wait_until(lambda: len(eval_spans(setup.export.spans(), trace.trace_id)) >= 1)
    _assert_still_serving(setup)


def test_wrong_length_ids_in_json_get_partial_success(setup: Setup) -> None:
    """As with protobuf input: a hex id of the wrong length rejects that span only."""
    trace = make_trace("json-short", ("billing",))
    data = json.loads(encode_spans_json(trace.spans))
    spans = data["resourceSpans"][0]["scopeSpans"][0]["spans"]
    spans.append({**spans[0], "spanId": "abcd"})
    before = len(setup.forward.bodies)
    response = post_http(setup.sidecar, json.dumps(data).encode(), JSON)
    assert response.status_code == 200, response.text
    partial = json.loads(response.text)["partialSuccess"]
    assert int(partial["rejectedSpans"]) == 1
    assert "span_id must be 8 bytes, not all zero (got 2 bytes)" in partial["errorMessage"]
    wait_until(lambda: len(eval_spans(setup.export.spans(), trace.trace_id)) >= 1)
    wait_until(lambda: len(setup.forward.bodies) > before)
    forwarded = ExportTraceServiceRequest.FromString(setup.forward.bodies[before])
    kept = forwarded.resource_spans[0].scope_spans[0].spans
    assert len(kept) == len(trace.spans)  # the three good spans, not the bad one
    assert all(len(span.span_id) == 8 for span in kept)
    _assert_still_serving(setup)


def test_ids_that_are_not_hex_in_json_fail_the_request_naming_the_field(setup: Setup) -> None:
    """Not hex (or an odd number of digits) cannot be made into bytes at all: 400, saying where."""
    data = json.loads(encode_spans_json(make_trace("json-bad", ("billing",)).spans))
    for bad in ("xyz0", "abc"):
        data["resourceSpans"][0]["scopeSpans"][0]["spans"][1]["traceId"] = bad
        response = post_http(setup.sidecar, json.dumps(data).encode(), JSON)
        assert response.status_code == 400
        message = json.loads(response.text)["message"]
        assert "resourceSpans[0].scopeSpans[0].spans[1].traceId" in message
    _assert_still_serving(setup)


def test_one_keep_alive_connection_survives_refusals(setup: Setup) -> None:
    """Refused bodies are read (or the connection closed), so the next request on the same
    connection is understood."""
    sc = setup.sidecar
    good = request_bytes(make_trace("keep-alive", ("billing",)).spans)
    with requests.Session() as session:

        def post(body: bytes, headers: dict[str, str]) -> requests.Response:
            return session.post(sc.url(), data=body, headers=headers, timeout=10)

        protobuf = {"Content-Type": PROTOBUF}
        for bad, headers, status in (
            (b"x" * 5000, {"Content-Type": "text/plain"}, 415),
            (_truncated(), protobuf, 400),
            (b"x" * 5000, {**protobuf, "Content-Encoding": "br"}, 415),
            (b"\0" * (LIMIT + 1), protobuf, 413),
            (good, {**protobuf, "Authorization": "Bearer not-needed"}, 200),
        ):
            assert post(bad, headers).status_code == status
            assert post(good, protobuf).status_code == 200


def test_chunked_body_without_content_length_is_accepted(setup: Setup) -> None:
    trace = make_trace("chunked", ("billing",))
    good = request_bytes(trace.spans)
    before = len(setup.forward.bodies)
    response = requests.post(
        setup.sidecar.url(),
        data=iter([good[:10], good[10:]]),  # a generator: requests sends it chunked
        headers={"Content-Type": PROTOBUF},
        timeout=10,
    )
    assert response.status_code == 200, response.content
    assert ExportTraceServiceResponse.FromString(response.content) == ExportTraceServiceResponse()
    wait_until(lambda: good in setup.forward.bodies[before:], what="the chunked body forwarded")
    wait_until(lambda: len(eval_spans(setup.export.spans(), trace.trace_id)) == 1)
    _assert_still_serving(setup)


def test_curl_posting_a_large_body_with_expect_100_continue(setup: Setup, tmp_path: Path) -> None:
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not on PATH")
    trace = make_trace("curl", ["billing"] * 20)  # over 1 KiB: curl sends Expect: 100-continue
    body = tmp_path / "body.bin"
    body.write_bytes(request_bytes(trace.spans))
    assert body.stat().st_size > 1024
    result = subprocess.run(
        [
            curl, "-sS", "--max-time", "10", "-o", "/dev/null", "-w", "%{http_code}",
            "-H", f"Content-Type: {PROTOBUF}", "--data-binary", f"@{body}", setup.sidecar.url(),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.stdout == "200", result.stderr
    wait_until(lambda: len(eval_spans(setup.export.spans(), trace.trace_id)) == 20)
