"""``Ingest.handle`` is total, and a request counts only once it is accepted.

- Bodies that made protobuf's JSON parser raise something other than a ``ValueError`` (the
  connection was dropped, so clients sent them again forever) are ``400`` / ``INVALID_ARGUMENT``
  naming the problem, directly and through the real sidecar's receivers.
- Anything unexpected inside ``handle`` becomes an ``internal`` result, counted and logged once
  per interval, never an exception.
- ``online_eval_spans_seen_total`` counts accepted spans only: refused requests (forward buffer
  full) and their retries do not add to it.
"""

from __future__ import annotations

import functools
import json
import logging
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import grpc
import pytest
import requests
from google.rpc.status_pb2 import Status as RpcStatus
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_online_eval.config import parse_config
from otel_online_eval.emit import Emitter
from otel_online_eval.engine import Engine
from otel_online_eval.otlp import encode_spans_json
from otel_online_eval.sidecar.config import GrpcReceiverConfig, HttpReceiverConfig
from otel_online_eval.sidecar.grpc_server import GrpcReceiver
from otel_online_eval.sidecar.http_server import HttpReceiver
from otel_online_eval.sidecar.ingest import Ingest, ReceiverStats, make_proto_view
from otel_online_eval.sidecar.shipper import Shipper
from tests.sidecar_helpers import (
    RawGrpcReceiver,
    Sidecar,
    forward_to,
    free_port,
    make_trace,
    post_http,
    request_bytes,
    running_sidecar,
    send_grpc,
    sidecar_config,
    wait_until,
)

JSON = "application/json"
SPAN = '{"resourceSpans":[{"scopeSpans":[{"spans":[%s]}]}]}'
AT = "resourceSpans[0].scopeSpans[0].spans[0]"
# The bodies (protobuf's parser raised OverflowError, OverflowError, SystemError), and
# their kin; each with what the answer must say.
BAD_JSON = {
    "kind 1e400": (SPAN % '{"kind":1e400}', f"{AT}.kind: must be an enum name or an int32"),
    "status code 1e400": (
        SPAN % '{"status":{"code":1e400}}',
        f"{AT}.status.code: must be an enum name or an int32",
    ),
    "lone surrogate key": (
        '{"resourceSpans\\ud800":[]}',
        "resourceSpans\\ud800: a key that is not valid Unicode",
    ),
    "lone surrogate value": (
        SPAN % '{"name":"chat\\udfff"}',
        f"{AT}.name: not valid Unicode: a lone surrogate",
    ),
    "time 1e400": (SPAN % '{"endTimeUnixNano":-1e400}', f"{AT}.endTimeUnixNano: must be a uint64"),
    "NaN literal": (
        SPAN % '{"attributes":[{"key":"k","value":{"doubleValue":NaN}}]}',
        "NaN is not a JSON number",
    ),
}
RULES = [{"name": "every-span", "scorers": ["nonempty"]}]


def _ingest(forwarder: Any = None) -> tuple[Ingest, Engine, InMemorySpanExporter]:
    config = parse_config({"scorers": {"nonempty": {"type": "not_empty"}}, "rules": RULES})
    exporter = InMemorySpanExporter()
    engine = Engine(
        config.rules,
        Emitter(SimpleSpanProcessor(exporter)),
        functools.partial(make_proto_view, presets=config.extract),
        config.engine,
    )
    return Ingest(engine, cast(Shipper, forwarder), ReceiverStats()), engine, exporter


@pytest.fixture
def ingest() -> Iterator[Ingest]:
    ing, engine, _ = _ingest()
    try:
        yield ing
    finally:
        engine.shutdown()


# -- directly --------------------------------------------------------------------------------


@pytest.mark.parametrize("case", list(BAD_JSON))
def test_undecodable_json_is_invalid_and_says_what_is_wrong(ingest: Ingest, case: str) -> None:
    body, words = BAD_JSON[case]
    result = ingest.handle(body.encode(), "json")
    assert result.status == "invalid", result
    assert result.message.startswith("cannot decode the OTLP/JSON request: ")
    assert words in result.message
    result.message.encode("utf-8")  # fits a google.rpc.Status
    assert ingest.stats.rejects["invalid"] == 1


def test_a_good_request_after_bad_ones_counts_its_spans(ingest: Ingest) -> None:
    for body, _ in BAD_JSON.values():
        assert ingest.handle(body.encode(), "json").status == "invalid"
    trace = make_trace("good", ("billing",))
    result = ingest.handle(encode_spans_json(trace.spans).encode(), "json")
    assert (result.status, result.accepted, result.rejected) == ("ok", 2, 0)
    assert ingest.engine.stats().seen == 2


class _Defective:
    """A forwarder with a defect: its ``offer`` raises (what no real one should do)."""

    def __init__(self) -> None:
        self.calls = 0

    def offer(self, body: bytes, spans: int) -> bool:
        self.calls += 1
        raise RuntimeError("a defect in the forwarder")


def test_an_unexpected_error_is_an_internal_result_counted_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    forwarder = _Defective()
    ing, engine, _ = _ingest(forwarder)
    body = request_bytes(make_trace("defect").spans)
    try:
        with caplog.at_level(logging.ERROR, logger="otel_online_eval.sidecar.ingest"):
            results = [ing.handle(body, fmt) for fmt in ("protobuf", "protobuf", "protobuf")]
    finally:
        engine.shutdown()
    assert forwarder.calls == 3
    assert {r.status for r in results} == {"internal"}
    assert all("internal error" in r.message for r in results)
    assert ing.stats.rejects["internal_error"] == 3
    assert ing.stats.spans["accepted"] == 0
    assert engine.stats().seen == 0  # nothing of the request counted
    records = [r for r in caplog.records if r.name == "otel_online_eval.sidecar.ingest"]
    assert len(records) == 1  # rate-limited
    assert records[0].exc_info is not None and "a defect in the forwarder" in caplog.text
    assert ing.wait_idle(engine, 1.0)  # the request's bookkeeping was undone


def test_the_receivers_answer_an_internal_error_500_and_internal() -> None:
    """Not an acknowledgement (the spans were not taken) and not retryable (it would fail
    again): HTTP 500 and gRPC INTERNAL, each with the message."""
    ing, engine, _ = _ingest(_Defective())
    grpc_rx = GrpcReceiver(GrpcReceiverConfig(endpoint="127.0.0.1:0"), ing)
    http_rx = HttpReceiver(HttpReceiverConfig(endpoint="127.0.0.1:0"), ing, lambda: "")
    body = request_bytes(make_trace("defect").spans)
    try:
        grpc_rx.start()
        http_rx.start()
        with pytest.raises(grpc.RpcError) as raised:
            send_grpc(grpc_rx.endpoint, body)
        assert raised.value.code() is grpc.StatusCode.INTERNAL
        assert "internal error" in raised.value.details()
        response = requests.post(
            f"http://{http_rx.endpoint}/v1/traces",
            data=body,
            headers={"Content-Type": "application/x-protobuf"},
            timeout=10,
        )
        assert response.status_code == 500
        status = RpcStatus.FromString(response.content)
        assert status.code == 13 and "internal error" in status.message
    finally:
        http_rx.stop(1.0)
        grpc_rx.stop(1.0)
        engine.shutdown()
    assert ing.stats.rejects["internal_error"] == 2


# -- through the sidecar's receivers ------------------------------------------------------------


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Sidecar, RawGrpcReceiver]]:
    tmp_path = tmp_path_factory.mktemp("ingest")
    with RawGrpcReceiver() as forward:
        config = sidecar_config(forward=forward_to(forward.endpoint), rules=RULES)
        with running_sidecar(tmp_path, config) as sc:
            yield sc, forward


def _good_still_served(sc: Sidecar) -> None:
    good = request_bytes(make_trace("good", ("billing",)).spans)
    assert send_grpc(sc.grpc_endpoint, good) == ExportTraceServiceResponse()
    assert post_http(sc, good).status_code == 200


@pytest.mark.parametrize("case", list(BAD_JSON))
def test_http_answers_400_naming_the_problem(
    sidecar: tuple[Sidecar, RawGrpcReceiver], case: str
) -> None:
    sc, _ = sidecar
    body, words = BAD_JSON[case]
    response = post_http(sc, body.encode(), JSON)
    assert response.status_code == 400, response.content
    answer = json.loads(response.content)
    assert answer["code"] == 3  # INVALID_ARGUMENT
    assert words in answer["message"]
    _good_still_served(sc)


def _mutations(seed: int, n: int) -> Iterator[bytes]:
    """Valid requests with bytes flipped, cut or spliced (deterministic)."""
    rng = random.Random(seed)
    bodies = [request_bytes(make_trace(f"m{i}", ("billing",) * i).spans) for i in range(3)]
    for _ in range(n):
        data = bytearray(rng.choice(bodies))
        how = rng.randrange(3)
        if how == 0:
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        elif how == 1:
            data = data[: rng.randrange(len(data))]
        else:
            other = rng.choice(bodies)
            data = data[: rng.randrange(len(data))] + other[rng.randrange(len(other)) :]
        yield bytes(data)


def test_grpc_answers_every_mutated_request(sidecar: tuple[Sidecar, RawGrpcReceiver]) -> None:
    """Accepted (maybe in part) or INVALID_ARGUMENT; never a dropped call or an unknown error."""
    sc, _ = sidecar
    codes: dict[str, int] = {}
    for body in _mutations(11, 120):
        try:
            send_grpc(sc.grpc_endpoint, body)
            code = "OK"
        except grpc.RpcError as error:
            code = error.code().name
            assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, error.details()
            assert "cannot decode the protobuf request" in error.details()
        codes[code] = codes.get(code, 0) + 1
    assert codes.get("OK") and codes.get("INVALID_ARGUMENT"), codes
    assert sc.proc.poll() is None
    _good_still_served(sc)


# -- seen counts accepted spans only --------------------------------------------------------------


def _send(sc: Sidecar, body: bytes, over_grpc: bool) -> bool:
    """One attempt; True when accepted, False when refused with a retry hint."""
    if over_grpc:
        try:
            send_grpc(sc.grpc_endpoint, body)
            return True
        except grpc.RpcError as error:
            assert error.code() is grpc.StatusCode.UNAVAILABLE, error.details()
            return False
    response = post_http(sc, body)
    assert response.status_code in (200, 503), response.content
    return response.status_code == 200


def test_seen_counts_accepted_spans_only_whatever_the_retries(tmp_path: Path) -> None:
    port = free_port()  # the forward target is down
    config = sidecar_config(
        forward=forward_to(f"127.0.0.1:{port}", max_bytes=1024, max_elapsed_s=120), rules=RULES
    )
    bodies = [request_bytes(make_trace(f"s{i}", ()).spans) for i in range(12)]  # one span each
    with running_sidecar(tmp_path, config) as sc:
        accepted: set[int] = set()
        attempts = 0
        for i, body in enumerate(bodies):
            for _ in range(3):  # the client retries a refusal twice, then gives up for now
                attempts += 1
                if _send(sc, body, over_grpc=i % 2 == 0):
                    accepted.add(i)
                    break
        m = sc.metrics()
        assert 1 <= len(accepted) < len(bodies) and attempts > len(bodies)
        assert m.value("otlp_receiver_spans_total", result="accepted") == len(accepted)
        assert m.value("online_eval_spans_seen_total") == len(accepted)

        with RawGrpcReceiver(port) as downstream:  # the target comes back: retries get in
            deadline = time.monotonic() + 60
            pending = [i for i in range(len(bodies)) if i not in accepted]
            while pending:
                assert time.monotonic() < deadline, f"still refused: {pending}"
                i = pending[0]
                if _send(sc, bodies[i], over_grpc=i % 2 == 0):
                    accepted.add(pending.pop(0))
                else:  # wait for the buffer to drain instead of hammering it
                    wait_until(
                        lambda: sc.metrics().value("online_eval_shipper_queued_bytes") == 0,
                        timeout=30,
                        what="the forward buffer to drain",
                    )
            downstream.wait_for_bodies(len(bodies), timeout=30)
        m = wait_until(
            lambda: (m := sc.metrics()).value("online_eval_evals_total") == len(bodies) and m,
            what="every accepted span evaluated",
        )
        assert m.value("otlp_receiver_spans_total", result="accepted") == len(bodies)
        assert m.value("online_eval_spans_seen_total") == len(bodies)
        assert m.value("otlp_receiver_rejects_total", reason="forward_buffer_full") > 0
