"""TLS client settings of OTLP export and forwarding (``certificate_file``,
``client_certificate_file``, ``client_key_file``) against real TLS receivers on 127.0.0.1 that
require a client certificate: the sidecar's senders, the in-process SDK exporters, the
``OTEL_EXPORTER_OTLP_*`` fallbacks, and what a wrong CA or a missing client certificate does.
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExportResult

from otel_online_eval import OnlineEvalSpanProcessor, Rule
from otel_online_eval._errors import ConfigError
from otel_online_eval.export import (
    ExportConfig,
    OtlpExportConfig,
    OtlpTls,
    build_exporter,
    resolve_otlp,
)
from tests.otlp_receiver import OtlpGrpcReceiver, OtlpHttpReceiver, ServerTls
from tests.pki import Pki
from tests.sidecar_helpers import (
    eval_spans,
    export_to,
    forward_to,
    make_trace,
    request_bytes,
    running_sidecar,
    send_grpc,
    sidecar_config,
    start_sidecar,
    wait_until,
    write_config,
)

PROTOCOLS = ["grpc", "http/protobuf"]
_CA_BUNDLE_ENV = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No OTEL_EXPORTER_OTLP_* or CA bundle setting of the machine leaks into the tests (nor
    into the sidecars they start, which inherit the environment)."""
    for name in list(os.environ):
        if name.startswith("OTEL_EXPORTER_OTLP_") or name in _CA_BUNDLE_ENV:
            monkeypatch.delenv(name)


def mtls(pki: Pki) -> ServerTls:
    """A receiver's TLS that requires a client certificate the test CA signed."""
    return ServerTls(pki.server_crt, pki.server_key, client_ca_file=pki.ca)


def client_tls(pki: Pki, ca: Path | None = None) -> dict[str, str]:
    """The ``otlp:`` TLS keys: the test CA (or ``ca``) and the client certificate."""
    return {
        "certificate_file": str(ca or pki.ca),
        "client_certificate_file": str(pki.client_crt),
        "client_key_file": str(pki.client_key),
    }


def receiver(protocol: str, tls: ServerTls) -> OtlpGrpcReceiver | OtlpHttpReceiver:
    return OtlpGrpcReceiver(tls) if protocol == "grpc" else OtlpHttpReceiver(tls)


def endpoint_of(rx: OtlpGrpcReceiver | OtlpHttpReceiver) -> str:
    """host:port for gRPC (TLS then comes from the TLS settings), the base URL for HTTP."""
    return rx.endpoint if isinstance(rx, OtlpGrpcReceiver) else rx.base_url


# --------------------------------------------------------------------------- the sidecar


def test_sidecar_forwards_over_grpc_and_exports_over_http_with_a_private_ca_and_client_cert(
    tmp_path: Path, pki: Pki
) -> None:
    with OtlpGrpcReceiver(mtls(pki)) as downstream, OtlpHttpReceiver(mtls(pki)) as evals:
        config = sidecar_config(
            forward=forward_to(downstream.endpoint, tls=client_tls(pki)),
            export=export_to(evals, tls=client_tls(pki)),
        )
        trace = make_trace("mtls")
        body = request_bytes(trace.spans)
        # requests prefers this variable to a session's CA bundle, not to the config's.
        env = {"REQUESTS_CA_BUNDLE": str(pki.rogue_ca)}
        with running_sidecar(tmp_path, config, env=env) as sc:
            assert send_grpc(sc.grpc_endpoint, body) == ExportTraceServiceResponse()
            downstream.wait_for_spans(3)
            assert [r.SerializeToString() for r in downstream.requests] == [body]
            assert len(eval_spans(evals.wait_for_spans(6), trace.trace_id)) == 2
            # The shippers count a send when its answer is back, after the receiver has it.
            wait_until(lambda: sc.metrics().value("online_eval_shipper_sent_spans_total") == 3 + 6)
            m = sc.metrics()
            assert m.value("online_eval_shipper_sent_spans_total", pipeline="forward") == 3
            assert m.value("online_eval_shipper_sent_spans_total", pipeline="export") == 6
            assert m.value("online_eval_shipper_failures_total") == 0
        assert evals.handshake_failures == 0


def test_sidecar_takes_tls_files_from_the_environment(tmp_path: Path, pki: Pki) -> None:
    env = {
        "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE": str(pki.ca),
        "OTEL_EXPORTER_OTLP_CERTIFICATE": str(pki.rogue_ca),  # the TRACES_ variable wins
        "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE": str(pki.client_crt),
        "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY": str(pki.client_key),
    }
    with OtlpHttpReceiver(mtls(pki)) as downstream, OtlpGrpcReceiver(mtls(pki)) as evals:
        config = sidecar_config(
            forward=forward_to(downstream.base_url, "http/protobuf"),
            # https:// means TLS; the files come from the environment.
            export={"otlp": {"endpoint": evals.url}, "batch": {"schedule_delay_ms": 50}},
        )
        trace = make_trace("mtls-env")
        with running_sidecar(tmp_path, config, env=env) as sc:
            assert send_grpc(sc.grpc_endpoint, request_bytes(trace.spans)) is not None
            downstream.wait_for_spans(3)
            assert len(eval_spans(evals.wait_for_spans(6), trace.trace_id)) == 2
            assert sc.metrics().value("online_eval_shipper_failures_total") == 0
            # The key is for traces only: the logs endpoint has no usable TLS, said, not fatal.
            [warning] = sc.log_messages("forward.otlp has no usable logs endpoint")
            assert "mutual TLS needs both a client certificate and its key" in warning["message"]


def test_sidecar_with_a_wrong_ca_or_no_client_cert_fails_counts_and_logs(
    tmp_path: Path, pki: Pki
) -> None:
    with OtlpGrpcReceiver(mtls(pki)) as downstream, OtlpHttpReceiver(mtls(pki)) as evals:
        config = sidecar_config(
            # The client does not trust the server: a CA that did not sign its certificate.
            forward=forward_to(
                downstream.endpoint, tls=client_tls(pki, pki.rogue_ca), max_elapsed_s=0.5
            ),
            # The server does not accept the client: no client certificate.
            export=export_to(evals, tls={"certificate_file": str(pki.ca)}),
            drain_timeout_s=1,
        )
        with running_sidecar(tmp_path, config) as sc:
            assert send_grpc(sc.grpc_endpoint, request_bytes(make_trace("refused").spans))
            m = wait_until(
                lambda: (
                    (m := sc.metrics()).value(
                        "online_eval_shipper_dropped_spans_total", pipeline="forward"
                    )
                    == 3
                    and m.value("online_eval_shipper_failures_total", pipeline="export") >= 1
                    and m
                ),
                what="forwarding to be dropped and the export to fail",
            )
            assert m.value("online_eval_shipper_failures_total", pipeline="forward") >= 1
            assert m.value("online_eval_shipper_sent_spans_total") == 0
            [dropped] = sc.wait_log("forward: dropping a request of 3 spans")
            assert "UNAVAILABLE" in dropped["message"]
            [failed, *_] = sc.wait_log("export: export failed (")
            assert "SSLError" in failed["message"] or "ConnectionError" in failed["message"]
            assert evals.handshake_failures >= 1
        assert downstream.attempts == evals.attempts == 0


def test_sidecar_with_an_unreadable_tls_file_from_the_environment_does_not_start(
    tmp_path: Path,
) -> None:
    config = sidecar_config(forward={"otlp": {"endpoint": "https://127.0.0.1:9"}})
    env = {"OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE": str(tmp_path / "no-such-ca.pem")}
    sc = start_sidecar(tmp_path, config, env=env, wait=False)
    try:
        assert sc.proc.wait(30) == 1
    finally:
        sc.kill()
    assert (
        "forward.otlp.certificate_file: OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE: cannot read"
        in sc.stderr()
    )
    assert "Traceback" not in sc.stderr()


def test_a_reload_whose_export_cannot_be_built_keeps_the_running_config(
    tmp_path: Path, otlp_grpc_receiver: OtlpGrpcReceiver
) -> None:
    """The environment's CA file is missing: harmless while export is plaintext; a reload to
    TLS export fails only when the exporter is built, and is refused like an invalid file."""
    env = {"OTEL_EXPORTER_OTLP_CERTIFICATE": str(tmp_path / "no-such-ca.pem")}
    config = sidecar_config(export=export_to(otlp_grpc_receiver))
    with running_sidecar(tmp_path, config, env=env) as sc:
        tls_export = {"otlp": {"protocol": "grpc", "endpoint": "https://127.0.0.1:9"}}
        write_config(sc.config_path, {**config, "export": tls_export})
        sc.send_signal(signal.SIGHUP)
        [refused] = sc.wait_log("Reload refused")
        assert (
            "export.otlp.certificate_file: OTEL_EXPORTER_OTLP_CERTIFICATE: cannot read"
            in (refused["message"])
        )
        trace = make_trace("after-refused-reload", ("billing",))
        send_grpc(sc.grpc_endpoint, request_bytes(trace.spans))
        wait_until(lambda: eval_spans(otlp_grpc_receiver.spans(), trace.trace_id))
        assert sc.proc.poll() is None


def test_resolve_otlp_tls(pki: Pki) -> None:
    ca = str(pki.ca)
    # The config's TLS files mean TLS for host:port, whatever the environment says.
    target = resolve_otlp(
        OtlpExportConfig(endpoint="127.0.0.1:4317", certificate_file=ca),
        {"OTEL_EXPORTER_OTLP_INSECURE": "true"},
    )
    assert not target.insecure and target.endpoint == "127.0.0.1:4317"
    assert target.tls.root_certificates == pki.ca.read_bytes()
    assert target.tls.private_key is None
    # The environment's files are ignored for a plaintext connection, as the SDK does.
    env = {"OTEL_EXPORTER_OTLP_CERTIFICATE": "/no/such/ca.pem"}
    assert resolve_otlp(OtlpExportConfig(endpoint="127.0.0.1:1", insecure=True), env).tls == (
        OtlpTls()
    )
    # ...and read, checked and named when it is TLS.
    with pytest.raises(ConfigError) as info:
        resolve_otlp(OtlpExportConfig(endpoint="https://127.0.0.1:1"), env)
    assert str(info.value).endswith(
        "otlp.certificate_file: OTEL_EXPORTER_OTLP_CERTIFICATE: cannot read '/no/such/ca.pem': "
        "No such file or directory"
    )
    env = {"OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY": str(pki.client_key)}
    with pytest.raises(ConfigError, match=r"otlp\.client_key_file: OTEL_EXPORTER_OTLP_TRACES_CL"):
        resolve_otlp(OtlpExportConfig(endpoint="https://127.0.0.1:1"), env)
    # TLS files for an endpoint that turns out to be http:// (from the environment).
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}
    with pytest.raises(ConfigError) as info:
        resolve_otlp(OtlpExportConfig(protocol="http/protobuf", certificate_file=ca), env)
    assert str(info.value).endswith(
        "otlp.certificate_file: is set, but the connection is plaintext: the endpoint is "
        "'http://127.0.0.1:4318/v1/traces'"
    )


# --------------------------------------------------------------------------- in-process


@pytest.fixture
def spans_of_one_trace() -> list[ReadableSpan]:
    return make_trace("in-process").spans


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_processor_exports_with_a_private_ca_and_client_cert(
    pki: Pki, protocol: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # requests prefers this variable to the CA bundle the SDK puts on its session; not to ours.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(pki.rogue_ca))
    with receiver(protocol, mtls(pki)) as rx:
        otlp = {"protocol": protocol, "endpoint": endpoint_of(rx), **client_tls(pki)}
        processor = OnlineEvalSpanProcessor(
            {"export": {"otlp": otlp}},
            rules=[Rule.create("r", [lambda inp: 1.0], span_names=["chat"])],
        )
        provider = TracerProvider()
        provider.add_span_processor(processor)
        try:
            with provider.get_tracer("t").start_as_current_span("chat"):
                pass
            assert processor.force_flush(10_000)
            got = rx.wait_for_spans(2)
            assert sorted(span.name for _, _, span in got) == ["eval r", "score <lambda>"]
        finally:
            provider.shutdown()
            processor.shutdown()


def test_sdk_exporter_takes_the_client_cert_from_the_environment(
    pki: Pki, monkeypatch: pytest.MonkeyPatch, spans_of_one_trace: list[ReadableSpan]
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE", str(pki.client_crt))
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_CLIENT_KEY", str(pki.client_key))
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_INSECURE", "true")  # the config's CA wins
    with OtlpGrpcReceiver(mtls(pki)) as rx:
        cfg = OtlpExportConfig(endpoint=rx.endpoint, certificate_file=str(pki.ca), timeout_s=5)
        exporter = build_exporter(ExportConfig(otlp=cfg))
        try:
            assert exporter.export(spans_of_one_trace) == SpanExportResult.SUCCESS
        finally:
            exporter.shutdown()
        assert len(rx.spans()) == len(spans_of_one_trace)


@pytest.fixture
def fresh_exporter_logs() -> None:
    """The SDK's OTLP exporters drop a log line that repeats the last one within 20 s
    (``DuplicateFilter``): forget the last one, so that each test sees its own failures."""
    for name in (
        "opentelemetry.exporter.otlp.proto.grpc.exporter",
        "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    ):
        for log_filter in logging.getLogger(name).filters:
            if hasattr(log_filter, "last_log"):
                del log_filter.last_log


@pytest.mark.usefixtures("fresh_exporter_logs")
@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("fault", ["wrong CA", "no client certificate"])
def test_sdk_exporter_with_a_wrong_ca_or_no_client_cert_fails_and_logs(
    pki: Pki,
    protocol: str,
    fault: str,
    spans_of_one_trace: list[ReadableSpan],
    caplog: pytest.LogCaptureFixture,
) -> None:
    tls = (
        client_tls(pki, pki.rogue_ca) if fault == "wrong CA" else {"certificate_file": str(pki.ca)}
    )
    with receiver(protocol, mtls(pki)) as rx:
        cfg = OtlpExportConfig(
            protocol=protocol,  # type: ignore[arg-type]
            endpoint=endpoint_of(rx),
            timeout_s=1,
            **tls,
        )
        exporter = build_exporter(ExportConfig(otlp=cfg))
        try:
            with caplog.at_level(logging.WARNING, logger="opentelemetry.exporter"):
                assert exporter.export(spans_of_one_trace) == SpanExportResult.FAILURE
        finally:
            exporter.shutdown()
        assert rx.attempts == 0
        if isinstance(rx, OtlpHttpReceiver) and fault == "no client certificate":
            assert rx.handshake_failures >= 1
    assert any(r.levelno >= logging.WARNING for r in caplog.records), caplog.text


def test_in_process_tls_files_need_tls(pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    # No endpoint: the HTTP default is http://localhost:4318/v1/traces, plaintext.
    cfg = OtlpExportConfig(protocol="http/protobuf", certificate_file=str(pki.ca))
    with pytest.raises(ConfigError) as info:
        build_exporter(ExportConfig(otlp=cfg))
    assert (
        "export.otlp.certificate_file: is set, but the connection is plaintext: the endpoint "
        "is 'http://localhost:4318/v1/traces'" in str(info.value)
    )
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY", "/no/such/client.key")
    with pytest.raises(ConfigError) as info:
        build_exporter(ExportConfig(otlp=OtlpExportConfig(certificate_file=str(pki.ca))))
    assert "export.otlp.client_key_file: OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY: cannot read" in str(
        info.value
    )
