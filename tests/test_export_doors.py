"""One meaning of ``export: otlp`` in both doors: the same environment given to the in-process
processor and to a real sidecar subprocess (``export: {otlp: {}}``, so the environment decides
everything), both exporting to a real OTLP receiver on 127.0.0.1 that records headers. Both
send the same URL-decoded headers to the same endpoint, and batch as ``OTEL_BSP_*`` says: a
full batch (in spans) goes at once, the rest waits for the schedule delay or a flush.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from otel_online_eval import OnlineEvalSpanProcessor
from tests.otlp_receiver import OtlpGrpcReceiver, OtlpHttpReceiver
from tests.sidecar_helpers import (
    DEFAULT_RULES,
    DEFAULT_SCORERS,
    eval_spans,
    make_trace,
    request_bytes,
    running_sidecar,
    send_grpc,
    sidecar_config,
    wait_until,
)

PROTOCOLS = ["grpc", "http/protobuf"]
EVAL_SPANS_PER_TRACE = 6  # two chat spans, each an eval span and two score spans
HEADERS = "authorization=Bearer%20x,x-tenant=acme%2Fsupport"
DECODED = {"authorization": "Bearer x", "x-tenant": "acme/support"}


@pytest.fixture(autouse=True)
def _clean_otel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what a test sets reaches either door (the sidecar inherits the environment)."""
    for name in list(os.environ):
        if name.startswith(("OTEL_EXPORTER_OTLP_", "OTEL_BSP_", "OTEL_PYTHON_EXPORTER_OTLP_")):
            monkeypatch.delenv(name)


@contextmanager
def receiver(protocol: str) -> Iterator[OtlpGrpcReceiver | OtlpHttpReceiver]:
    rx: OtlpGrpcReceiver | OtlpHttpReceiver = (
        OtlpGrpcReceiver() if protocol == "grpc" else OtlpHttpReceiver()
    )
    try:
        yield rx
    finally:
        rx.stop()


def otel_env(rx: OtlpGrpcReceiver | OtlpHttpReceiver, protocol: str, **bsp: int) -> dict[str, str]:
    """The environment both doors get: where, how, which headers, and ``OTEL_BSP_<KEY>``."""
    env = {
        "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
        # http://: plaintext for gRPC too; the full traces URL for HTTP.
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": rx.url
        if isinstance(rx, OtlpGrpcReceiver)
        else rx.endpoint,
        "OTEL_EXPORTER_OTLP_HEADERS": HEADERS,
    }
    env.update({f"OTEL_BSP_{key.upper()}": str(value) for key, value in bsp.items()})
    return env


def in_process(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> OnlineEvalSpanProcessor:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    config: dict[str, Any] = {
        "scorers": DEFAULT_SCORERS,
        "rules": DEFAULT_RULES,
        "export": {"otlp": {}},
    }
    return OnlineEvalSpanProcessor(config)


def sizes(rx: OtlpGrpcReceiver | OtlpHttpReceiver) -> list[int]:
    """Spans per export request, in order."""
    return [
        sum(len(ss.spans) for rs in r.resource_spans for ss in rs.scope_spans) for r in rx.requests
    ]


def nothing_more_arrives(rx: OtlpGrpcReceiver | OtlpHttpReceiver, have: int, for_s: float) -> bool:
    """True when no span beyond the first ``have`` arrives within ``for_s`` seconds."""
    try:
        rx.wait_for_spans(have + 1, timeout=for_s)
    except AssertionError:
        return True
    return False


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_both_doors_send_the_decoded_headers_to_the_same_endpoint(
    protocol: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with receiver(protocol) as rx:
        # A short delay: both deliver on their own well before the SDK's default 5 s.
        env = otel_env(rx, protocol, schedule_delay=100)
        processor = in_process(env, monkeypatch)
        try:
            trace = make_trace("in-process")
            for span in trace.spans:
                processor.on_end(span)
            got = rx.wait_for_spans(EVAL_SPANS_PER_TRACE, timeout=4.0)
        finally:
            processor.shutdown()
        assert len(eval_spans(got, trace.trace_id)) == 2
        in_process_headers = rx.headers
        rx.clear()

        with running_sidecar(tmp_path, sidecar_config(export={"otlp": {}}), env=env) as sc:
            trace = make_trace("sidecar")
            assert send_grpc(sc.grpc_endpoint, request_bytes(trace.spans)) is not None
            got = rx.wait_for_spans(EVAL_SPANS_PER_TRACE, timeout=4.0)
            assert len(eval_spans(got, trace.trace_id)) == 2
            sidecar_headers = rx.headers
    for headers in in_process_headers + sidecar_headers:
        assert {k: headers.get(k) for k in DECODED} == DECODED


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_both_doors_batch_as_otel_bsp_says(
    protocol: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A delay far longer than the test: only full batches of 4 go on their own; the other 2
    eval spans wait until a flush (in-process) or the drain (sidecar) sends them."""
    with receiver(protocol) as rx:
        env = otel_env(rx, protocol, schedule_delay=600_000, max_export_batch_size=4)
        processor = in_process(env, monkeypatch)
        try:
            for span in make_trace("in-process").spans:
                processor.on_end(span)
            rx.wait_for_spans(4)
            wait_until(lambda: sum(processor.stats().evals.values()) == 2, what="2 evaluations")
            assert nothing_more_arrives(rx, 4, for_s=1.0), sizes(rx)
            assert processor.force_flush(10_000)
            rx.wait_for_spans(EVAL_SPANS_PER_TRACE)
        finally:
            processor.shutdown()
        assert sizes(rx) == [4, 2]
        rx.clear()

        config = sidecar_config(export={"otlp": {}})
        with running_sidecar(tmp_path, config, env=env) as sc:
            assert send_grpc(sc.grpc_endpoint, request_bytes(make_trace("sidecar").spans))
            rx.wait_for_spans(4)
            wait_until(lambda: sc.metrics().value("online_eval_evals_total") == 2)
            assert nothing_more_arrives(rx, 4, for_s=1.0), sizes(rx)
            assert sc.stop(signum=signal.SIGTERM) == 0  # the drain ships what waits
        rx.wait_for_spans(EVAL_SPANS_PER_TRACE)
        assert sizes(rx) == [4, 2]


def test_the_sidecar_bounds_its_eval_span_queue_as_otel_bsp_says(tmp_path: Path) -> None:
    """``OTEL_BSP_MAX_QUEUE_SIZE`` counts spans waiting in the sidecar too: with room for 4,
    the second evaluation's 3 spans find room for 1; 2 are dropped and counted (the newest,
    as the engine's own queue does), and the full batch of 4 goes."""
    with OtlpGrpcReceiver() as rx:
        env = otel_env(
            rx, "grpc", schedule_delay=600_000, max_queue_size=4, max_export_batch_size=4
        )
        # One chat span per trace: each evaluation hands its 3 spans over at once.
        with running_sidecar(tmp_path, sidecar_config(export={"otlp": {}}), env=env) as sc:
            for service in ("first", "second"):
                trace = make_trace(service, ("billing",))
                assert send_grpc(sc.grpc_endpoint, request_bytes(trace.spans))
            rx.wait_for_spans(4)
            m = wait_until(lambda: (m := sc.metrics()).value("online_eval_evals_total") == 2 and m)
            assert m.value("online_eval_eval_spans_dropped_total", reason="queue_full") == 2
            assert m.value("online_eval_eval_spans_scheduled_total") == 6
            assert nothing_more_arrives(rx, 4, for_s=0.5)
        assert sizes(rx) == [4]
