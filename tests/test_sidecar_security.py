"""Bearer token, TLS and mutual TLS on both receivers, with the SDK's own exporters as clients.

Certificates come from the ``pki`` fixture (tests/pki.py, made with the ``openssl`` command): a
test CA, a server certificate for 127.0.0.1, a client certificate, and a client certificate
from another CA that the sidecar must refuse.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest
import requests
from google.rpc.status_pb2 import Status as RpcStatus
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from otel_online_eval.sidecar.config import GrpcReceiverConfig, HttpReceiverConfig, TlsConfig
from otel_online_eval.sidecar.grpc_server import GrpcReceiver
from otel_online_eval.sidecar.http_server import HttpReceiver
from tests.otlp_receiver import OtlpGrpcReceiver
from tests.pki import Pki
from tests.sidecar_helpers import (
    HOST,
    ROOT,
    RawGrpcReceiver,
    TraceSpans,
    eval_spans,
    export_to,
    forward_to,
    grpc_health,
    make_trace,
    post_http,
    request_bytes,
    running_sidecar,
    send_grpc,
    sidecar_config,
    write_config,
)

TOKEN = "s3cr3t-token"


def _export(exporter: SpanExporter, trace: TraceSpans) -> SpanExportResult:
    try:
        return exporter.export(trace.spans)
    finally:
        exporter.shutdown()


# -- bearer token ----------------------------------------------------------------------------


def test_bearer_token_is_required_on_both_protocols(
    tmp_path: Path, otlp_grpc_receiver: OtlpGrpcReceiver
) -> None:
    with RawGrpcReceiver() as forward:
        config = sidecar_config(
            export=export_to(otlp_grpc_receiver),
            forward=forward_to(forward.endpoint),
            receiver={"auth": {"bearer_token": "${env:SIDECAR_TEST_TOKEN}"}},
        )
        good = {"authorization": f"Bearer {TOKEN}"}
        with running_sidecar(tmp_path, config, env={"SIDECAR_TEST_TOKEN": TOKEN}) as sc:
            body = request_bytes(make_trace("raw").spans)
            # gRPC: none, wrong, right
            for metadata in ((), (("authorization", "Bearer nope"),), (("authorization", TOKEN),)):
                with pytest.raises(grpc.RpcError) as raised:
                    send_grpc(sc.grpc_endpoint, body, metadata=metadata)
                assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert send_grpc(sc.grpc_endpoint, body, metadata=tuple(good.items())) is not None
            # HTTP: none, wrong, right
            for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": TOKEN}):
                response = post_http(sc, body, headers=headers)
                assert response.status_code == 401
                assert RpcStatus.FromString(response.content).code == 16
            assert post_http(sc, body, headers=good).status_code == 200
            # The SDK exporters, with and without the header.
            trace = make_trace("sdk-token")
            grpc_url = f"http://{sc.grpc_endpoint}"
            assert _export(GrpcSpanExporter(grpc_url, timeout=5), trace) == SpanExportResult.FAILURE
            assert (
                _export(GrpcSpanExporter(grpc_url, headers=good, timeout=5), trace)
                == SpanExportResult.SUCCESS
            )
            assert _export(HttpSpanExporter(sc.url(), timeout=5), trace) == SpanExportResult.FAILURE
            assert (
                _export(HttpSpanExporter(sc.url(), headers=good, timeout=5), trace)
                == SpanExportResult.SUCCESS
            )
            # Health is open; metrics are not.
            assert sc.get("/healthz").status_code == 200
            assert grpc_health(sc.grpc_endpoint) == "SERVING"
            assert sc.get("/metrics").status_code == 401
            m = sc.metrics(headers=good)
            assert m.value("otlp_receiver_requests_total", outcome="unauthenticated") == 8
            assert m.value("otlp_receiver_requests_total", transport="grpc", outcome="ok") == 2
            assert m.value("otlp_receiver_requests_total", transport="http", outcome="ok") == 2
            # Only the authorized requests went on.
            forward.wait_for_bodies(4)
            assert sorted(forward.bodies) == sorted([body, body, *[request_bytes(trace.spans)] * 2])


def test_the_bearer_scheme_is_case_insensitive_on_both_protocols(
    tmp_path: Path, otlp_grpc_receiver: OtlpGrpcReceiver
) -> None:
    """RFC 7235: the auth scheme is case-insensitive; the token is not."""
    config = sidecar_config(
        export=export_to(otlp_grpc_receiver), receiver={"auth": {"bearer_token": TOKEN}}
    )
    with running_sidecar(tmp_path, config) as sc:
        body = request_bytes(make_trace("scheme").spans)
        for value in (f"bearer {TOKEN}", f"BEARER {TOKEN}", f"BeArEr  {TOKEN}"):
            assert send_grpc(sc.grpc_endpoint, body, metadata=(("authorization", value),)) == (
                ExportTraceServiceResponse()
            )
            assert post_http(sc, body, headers={"Authorization": value}).status_code == 200
        for value in (f"bearer {TOKEN.upper()}", f"bearer {TOKEN}x", f"basic {TOKEN}", "bearer"):
            with pytest.raises(grpc.RpcError) as raised:
                send_grpc(sc.grpc_endpoint, body, metadata=(("authorization", value),))
            assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert post_http(sc, body, headers={"Authorization": value}).status_code == 401
        m = sc.metrics(headers={"Authorization": f"bearer {TOKEN}"})
        assert m.value("otlp_receiver_requests_total", outcome="ok") == 6
        assert m.value("otlp_receiver_requests_total", outcome="unauthenticated") == 8


# -- TLS -------------------------------------------------------------------------------------


def _creds(pki: Pki, client: tuple[Path, Path] | None = None) -> grpc.ChannelCredentials:
    if client is None:
        return grpc.ssl_channel_credentials(root_certificates=pki.ca.read_bytes())
    return grpc.ssl_channel_credentials(
        root_certificates=pki.ca.read_bytes(),
        private_key=client[1].read_bytes(),
        certificate_chain=client[0].read_bytes(),
    )


@pytest.mark.usefixtures("no_ca_bundle_env")
def test_tls_with_the_sdk_exporters(
    tmp_path: Path, pki: Pki, otlp_grpc_receiver: OtlpGrpcReceiver
) -> None:
    tls = {"cert_file": str(pki.server_crt), "key_file": str(pki.server_key)}
    config = sidecar_config(export=export_to(otlp_grpc_receiver), receiver={"tls": tls})
    with running_sidecar(tmp_path, config, scheme="https", ssl_verify=str(pki.ca)) as sc:
        grpc_trace, http_trace = make_trace("tls-grpc"), make_trace("tls-http")
        grpc_exporter = GrpcSpanExporter(
            f"https://{sc.grpc_endpoint}", credentials=_creds(pki), timeout=5
        )
        assert _export(grpc_exporter, grpc_trace) == SpanExportResult.SUCCESS
        http_exporter = HttpSpanExporter(sc.url(), certificate_file=str(pki.ca), timeout=5)
        assert _export(http_exporter, http_trace) == SpanExportResult.SUCCESS
        got = otlp_grpc_receiver.wait_for_spans(12)
        assert len(eval_spans(got, grpc_trace.trace_id)) == 2
        assert len(eval_spans(got, http_trace.trace_id)) == 2
        # Health and metrics over TLS.
        assert grpc_health(sc.grpc_endpoint, credentials=_creds(pki)) == "SERVING"
        assert sc.get("/healthz").text == "ok\n"
        assert sc.metrics().value("otlp_receiver_spans_total", result="accepted") == 6
        # Plaintext clients get nowhere, and do no harm.
        body = request_bytes(make_trace("plain").spans)
        with pytest.raises(grpc.RpcError) as raised:
            send_grpc(sc.grpc_endpoint, body, timeout=3)
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        with pytest.raises(requests.ConnectionError):
            requests.post(f"http://{sc.http_endpoint}/v1/traces", data=body, timeout=3)
        # A client that does not trust the CA refuses the server.
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(sc.url("/healthz"), timeout=3, verify=True)
        assert send_grpc(sc.grpc_endpoint, body, credentials=_creds(pki)) is not None
        assert post_http(sc, body).status_code == 200


@pytest.mark.usefixtures("no_ca_bundle_env")
def test_mutual_tls_refuses_clients_without_a_trusted_certificate(
    tmp_path: Path, pki: Pki, otlp_grpc_receiver: OtlpGrpcReceiver
) -> None:
    tls = {
        "cert_file": str(pki.server_crt),
        "key_file": str(pki.server_key),
        "client_ca_file": str(pki.ca),
    }
    config = sidecar_config(export=export_to(otlp_grpc_receiver), receiver={"tls": tls})
    client = (pki.client_crt, pki.client_key)
    rogue = (pki.rogue_crt, pki.rogue_key)
    with running_sidecar(tmp_path, config, scheme="https", ssl_verify=str(pki.ca)) as sc:
        body = request_bytes(make_trace("mtls").spans)
        for creds in (_creds(pki), _creds(pki, rogue)):  # no certificate, an untrusted one
            with pytest.raises(grpc.RpcError) as raised:
                send_grpc(sc.grpc_endpoint, body, credentials=creds, timeout=3)
            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        for cert in (None, tuple(map(str, rogue))):
            with pytest.raises(requests.ConnectionError):  # SSLError is one
                post_http(sc, body, cert=cert, timeout=3)
        # With a certificate the CA signed: raw calls and the SDK exporters.
        assert send_grpc(sc.grpc_endpoint, body, credentials=_creds(pki, client)) == (
            ExportTraceServiceResponse()
        )
        assert post_http(sc, body, cert=tuple(map(str, client))).status_code == 200
        trace = make_trace("mtls-sdk")
        grpc_exporter = GrpcSpanExporter(
            f"https://{sc.grpc_endpoint}", credentials=_creds(pki, client), timeout=5
        )
        assert _export(grpc_exporter, trace) == SpanExportResult.SUCCESS
        http_exporter = HttpSpanExporter(
            sc.url(),
            certificate_file=str(pki.ca),
            client_certificate_file=str(pki.client_crt),
            client_key_file=str(pki.client_key),
            timeout=5,
        )
        assert _export(http_exporter, trace) == SpanExportResult.SUCCESS
        m = sc.metrics(cert=tuple(map(str, client)))
        assert m.value("otlp_receiver_requests_total", transport="grpc", outcome="ok") == 2
        assert m.value("otlp_receiver_requests_total", transport="http", outcome="ok") == 2
        assert len(eval_spans(otlp_grpc_receiver.wait_for_spans(24))) == 8
    # Refused handshakes are logged as JSON lines, not as tracebacks.
    assert "Traceback" not in sc.stderr()
    tls_errors = sc.log_messages("TLS error with HTTP client 127.0.0.1")
    assert len(tls_errors) == 2 and tls_errors[0]["level"] == "warning"


# -- TLS files that cannot serve -------------------------------------------------------------

# name: (what to put in receiver.tls, the field named, what the message says)
TLS_FAULTS: dict[str, tuple[dict[str, str], str, str]] = {
    "key of another certificate": (
        {"cert_file": "server_crt", "key_file": "client_key"},
        "key_file",
        "the private key in '{client_key}' does not match the certificate in '{server_crt}'",
    ),
    "certificate not PEM": (
        {"cert_file": "junk", "key_file": "server_key"},
        "cert_file",
        "no PEM certificate in '{junk}'",
    ),
    "key not PEM": (
        {"cert_file": "server_crt", "key_file": "junk"},
        "key_file",
        "no unencrypted PEM private key in '{junk}'",
    ),
    "certificate as the key": (
        {"cert_file": "server_crt", "key_file": "server_crt"},
        "key_file",
        "no unencrypted PEM private key in '{server_crt}'",
    ),
    "client CA not PEM": (
        {"cert_file": "server_crt", "key_file": "server_key", "client_ca_file": "junk"},
        "client_ca_file",
        "no PEM certificate in '{junk}'",
    ),
    "client CA is a key": (
        {"cert_file": "server_crt", "key_file": "server_key", "client_ca_file": "server_key"},
        "client_ca_file",
        "no PEM certificate in '{server_key}'",
    ),
}


def _tls_files(pki: Pki, tmp_path: Path) -> dict[str, str]:
    junk = tmp_path / "junk.pem"
    junk.write_text("this is not PEM\n")
    return {
        "server_crt": str(pki.server_crt),
        "server_key": str(pki.server_key),
        "client_key": str(pki.client_key),
        "junk": str(junk),
    }


def _tls_fault(name: str, pki: Pki, tmp_path: Path) -> tuple[dict[str, str], str, str]:
    files = _tls_files(pki, tmp_path)
    section, field, message = TLS_FAULTS[name]
    return {k: files[v] for k, v in section.items()}, field, message.format(**files)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "otel_online_eval.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize("fault", list(TLS_FAULTS))
def test_tls_files_that_cannot_serve_are_named_by_validate_and_serve(
    tmp_path: Path, pki: Pki, fault: str
) -> None:
    tls, field, message = _tls_fault(fault, pki, tmp_path)
    path = write_config(tmp_path / "sidecar.yaml", sidecar_config(receiver={"tls": tls}))
    [line] = [i for i, text in enumerate(path.read_text().splitlines(), 1) if f" {field}:" in text]
    expected = f"{path}:{line}:"
    for command in ("validate", "serve"):
        result = _cli(command, "-c", str(path))
        assert result.returncode == 1, (command, result.stdout, result.stderr)
        assert expected in result.stderr, (command, result.stderr)
        assert f"receiver.tls.{field}: {message}" in result.stderr, (command, result.stderr)
        assert "Failed to bind" not in result.stderr


@pytest.mark.parametrize("fault", list(TLS_FAULTS))
def test_both_receivers_name_the_tls_file_that_cannot_serve(
    tmp_path: Path, pki: Pki, fault: str
) -> None:
    """Built in code, with no config file to validate: the receivers say it themselves."""
    tls, field, message = _tls_fault(fault, pki, tmp_path)
    config = TlsConfig(tls["cert_file"], tls["key_file"], tls.get("client_ca_file"))
    stand_in: Any = None  # no request reaches them
    with pytest.raises(OSError) as grpc_error:
        GrpcReceiver(GrpcReceiverConfig(f"{HOST}:0"), stand_in, tls=config)
    with pytest.raises(OSError) as http_error:
        HttpReceiver(HttpReceiverConfig(f"{HOST}:0"), stand_in, str, tls=config)
    for raised in (grpc_error, http_error):
        assert f"receiver.tls.{field}: {message}" in str(raised.value)
