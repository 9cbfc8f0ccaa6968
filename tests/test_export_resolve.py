"""The resolver of ``export: otlp`` against the SDK: for config x environment combinations, what
:func:`resolve_otlp` resolves is what the SDK's own OTLP exporters resolve when built with the
same config values and the same environment (their endpoint, TLS choice, headers, timeout and
compression, read from the constructed exporters), and what the in-process builder hands them;
batching defaults and ``OTEL_BSP_*`` against the SDK's ``BatchSpanProcessor``; and every bad
environment value as a clear error, from both doors."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from opentelemetry.exporter.otlp.common import http as otlp_http
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_online_eval._batch import build_batcher
from otel_online_eval._errors import ConfigError
from otel_online_eval.config import OnlineEvalConfig
from otel_online_eval.export import (
    DEFAULT_BATCH,
    BatchConfig,
    BatchSettings,
    ExportConfig,
    OtlpExportConfig,
    OtlpTarget,
    build_exporter,
    build_span_processor,
    resolve_batch,
    resolve_otlp,
)
from otel_online_eval.sidecar.emit_proto import ProtoEmitter
from otel_online_eval.sidecar.server import build_sink

# What the SDK's HTTP exporter sends of its own on every request.
_SDK_HTTP_OWN = {"content-type", "user-agent", "content-encoding"}


@pytest.fixture(autouse=True)
def _clean_otel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("OTEL_EXPORTER_OTLP_", "OTEL_BSP_", "OTEL_PYTHON_EXPORTER_OTLP_")):
            monkeypatch.delenv(name)


@pytest.fixture
def built() -> Iterator[list[SpanExporter]]:
    exporters: list[SpanExporter] = []
    yield exporters
    for exporter in exporters:
        exporter.shutdown()


@dataclass(frozen=True)
class Resolved:
    """The settings one exporter (or the resolver) ends up with."""

    endpoint: str
    insecure: bool
    headers: dict[str, str]
    timeout_s: float
    compression: str | None


@dataclass(frozen=True)
class Case:
    id: str
    protocol: str
    cfg: dict[str, Any]
    env: dict[str, str]
    expected: Resolved
    # Where the project means something else than the SDK on purpose, and why.
    sdk_differs: str = ""
    sdk_expected: Resolved | None = field(default=None)


def _grpc(
    endpoint: str, insecure: bool, headers: dict[str, str] | None = None, **kw: Any
) -> Resolved:
    return Resolved(endpoint, insecure, headers or {}, kw.get("timeout_s", 10.0), kw.get("comp"))


_http = _grpc

CASES = [
    Case("grpc-defaults", "grpc", {}, {}, _grpc("localhost:4317", True)),
    Case(
        "grpc-env-endpoint-and-url-encoded-headers",
        "grpc",
        {},
        {
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4317",
            "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer%20x,x-tenant=a%2Cb",
        },
        _grpc("127.0.0.1:4317", True, {"authorization": "Bearer x", "x-tenant": "a,b"}),
    ),
    Case(
        "grpc-liberal-headers-are-not-decoded",
        "grpc",
        {},
        {"OTEL_EXPORTER_OTLP_HEADERS": "a=b c%20d , E = f%3Dg"},
        _grpc("localhost:4317", True, {"a": "b c%20d", "e": "f=g"}),
    ),
    Case(
        "grpc-traces-headers-win-whole",
        "grpc",
        {},
        {"OTEL_EXPORTER_OTLP_TRACES_HEADERS": "a=1", "OTEL_EXPORTER_OTLP_HEADERS": "b=2"},
        _grpc("localhost:4317", True, {"a": "1"}),
    ),
    Case(
        "grpc-config-headers-replace-the-environment",
        "grpc",
        {"headers": {"x-a": "1"}},
        {"OTEL_EXPORTER_OTLP_HEADERS": "b=2"},
        _grpc("localhost:4317", True, {"x-a": "1"}),
    ),
    Case(
        "grpc-bare-host-port-is-tls",
        "grpc",
        {"endpoint": "collector:4317"},
        {},
        _grpc("collector:4317", False),
    ),
    Case(
        "grpc-https-wins-over-traces-insecure",
        "grpc",
        {},
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "https://collector:4317",
            "OTEL_EXPORTER_OTLP_TRACES_INSECURE": "true",
        },
        _grpc("collector:4317", False),
    ),
    Case(
        "grpc-insecure-from-the-environment",
        "grpc",
        {},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4317", "OTEL_EXPORTER_OTLP_INSECURE": "TRUE"},
        _grpc("collector:4317", True),
    ),
    Case(
        "grpc-traces-insecure-false-over-http-scheme",
        "grpc",
        {},
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317",
            "OTEL_EXPORTER_OTLP_TRACES_INSECURE": "false",
        },
        _grpc("collector:4317", False),
    ),
    Case(
        "grpc-traces-endpoint-wins",
        "grpc",
        {},
        {
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4317",
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://d:4317",
        },
        _grpc("c:4317", True),
    ),
    Case(
        "grpc-timeout-and-compression-from-the-environment",
        "grpc",
        {},
        {
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "2.5",
            "OTEL_EXPORTER_OTLP_TIMEOUT": "7",
            "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip",
        },
        _grpc("localhost:4317", True, timeout_s=2.5, comp="gzip"),
    ),
    Case(
        "grpc-config-wins",
        "grpc",
        {"endpoint": "http://a:1", "timeout_s": 3, "compression": "gzip", "insecure": True},
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "https://b:2",
            "OTEL_EXPORTER_OTLP_TIMEOUT": "7",
            "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION": "gzip",
        },
        _grpc("a:1", True, timeout_s=3.0, comp="gzip"),
    ),
    Case(
        "http-defaults",
        "http/protobuf",
        {},
        {},
        _http("http://localhost:4318/v1/traces", True),
    ),
    Case(
        "http-base-endpoint-gets-the-path",
        "http/protobuf",
        {},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "https://c:4318/otlp/"},
        _http("https://c:4318/otlp/v1/traces", False),
    ),
    Case(
        "http-traces-endpoint-as-it-is",
        "http/protobuf",
        {},
        {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/custom"},
        _http("http://c:4318/custom", True),
    ),
    Case(
        "http-config-and-environment-headers-merge",
        "http/protobuf",
        {"endpoint": "http://c:4318/v1/traces", "headers": {"K": "v", "b": "config"}},
        {"OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer%20x,b=env"},
        _http(
            "http://c:4318/v1/traces", True, {"authorization": "Bearer x", "k": "v", "b": "config"}
        ),
    ),
    Case(
        "http-timeout-and-compression",
        "http/protobuf",
        {},
        {"OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "4", "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION": "gzip"},
        _http("http://localhost:4318/v1/traces", True, timeout_s=4.0, comp="gzip"),
    ),
    Case(
        "http-config-base-url-gets-the-path",
        "http/protobuf",
        {"endpoint": "http://c:4318"},
        {},
        _http("http://c:4318/v1/traces", True),
        sdk_differs="a config URL without a path gets /v1/traces, as the Collector's otlphttp "
        "exporter does; the SDK posts to the URL as it is",
        sdk_expected=_http("http://c:4318", True),
    ),
]


def _of_target(t: OtlpTarget) -> Resolved:
    return Resolved(t.endpoint, t.insecure, dict(t.headers), t.timeout_s, t.compression)


def _of_sdk(exporter: SpanExporter) -> Resolved:
    """What a constructed SDK exporter will do, read from its attributes."""
    if isinstance(exporter, GrpcSpanExporter):
        gzip = exporter._compression == grpc.Compression.Gzip
        return Resolved(
            exporter._endpoint,
            exporter._insecure,
            dict(exporter._headers),
            exporter._timeout,
            "gzip" if gzip else None,
        )
    assert isinstance(exporter, HttpSpanExporter)
    client = exporter._client
    headers = {k: v for k, v in client._headers.items() if k.lower() not in _SDK_HTTP_OWN}
    return Resolved(
        exporter._endpoint,
        not exporter._endpoint.startswith("https://"),
        headers,
        client._timeout,
        "gzip" if exporter._compression == otlp_http.Compression.GZIP else None,
    )


def _sdk_exporter(case: Case) -> SpanExporter:
    """The SDK's exporter built as a user would, with the config's values as its arguments."""
    c = case.cfg
    if case.protocol == "grpc":
        compression = grpc.Compression.Gzip if c.get("compression") == "gzip" else None
        return GrpcSpanExporter(
            endpoint=c.get("endpoint"),
            insecure=c.get("insecure"),
            headers=c.get("headers"),
            timeout=c.get("timeout_s"),
            compression=compression,
        )
    http_compression = HttpCompression.Gzip if c.get("compression") == "gzip" else None
    return HttpSpanExporter(
        endpoint=c.get("endpoint"),
        headers=c.get("headers"),
        timeout=c.get("timeout_s"),
        compression=http_compression,
    )


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_the_resolver_means_what_the_sdk_exporters_mean(
    case: Case, monkeypatch: pytest.MonkeyPatch, built: list[SpanExporter]
) -> None:
    for name, value in case.env.items():
        monkeypatch.setenv(name, value)
    cfg = OtlpExportConfig(protocol=case.protocol, **case.cfg)  # type: ignore[arg-type]
    target = resolve_otlp(cfg)
    assert target.protocol == case.protocol
    assert _of_target(target) == case.expected
    # The SDK's exporter, given the same config values and the same environment.
    sdk = _sdk_exporter(case)
    built.append(sdk)
    assert _of_sdk(sdk) == (case.sdk_expected or case.expected), case.sdk_differs
    # The in-process door builds the SDK's exporter with what the resolver says.
    ours = build_exporter(ExportConfig(otlp=cfg))
    built.append(ours)
    assert _of_sdk(ours) == case.expected
    # The resolver is a function of the mapping it is given, not of os.environ.
    monkeypatch.setattr(os, "environ", {})
    assert resolve_otlp(cfg, dict(case.env)) == target


def test_batch_defaults_are_the_sdks() -> None:
    processor = BatchSpanProcessor(InMemorySpanExporter())
    try:
        sdk = processor._batch_processor
        assert DEFAULT_BATCH == BatchSettings(
            sdk._max_queue_size,
            sdk._schedule_delay_millis,
            sdk._max_export_batch_size,
            sdk._export_timeout_millis,
        )
    finally:
        processor.shutdown()
    assert resolve_batch(BatchConfig(), {}) == DEFAULT_BATCH


def test_batch_follows_otel_bsp_like_the_sdk(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "OTEL_BSP_SCHEDULE_DELAY": "250",
        "OTEL_BSP_MAX_QUEUE_SIZE": "100",
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "10",
        "OTEL_BSP_EXPORT_TIMEOUT": "999",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    processor = BatchSpanProcessor(InMemorySpanExporter())  # reads OTEL_BSP_* itself
    try:
        sdk = processor._batch_processor
        expected = BatchSettings(
            sdk._max_queue_size,
            sdk._schedule_delay_millis,
            sdk._max_export_batch_size,
            sdk._export_timeout_millis,
        )
    finally:
        processor.shutdown()
    assert expected == BatchSettings(100, 250, 10, 999)
    assert resolve_batch(BatchConfig()) == expected
    # The config wins, field by field.
    assert resolve_batch(BatchConfig(schedule_delay_ms=40, max_queue_size=50)) == BatchSettings(
        50, 40, 10, 999
    )
    # Both doors get it: the in-process batcher and the sidecar's emitter.
    batcher = build_batcher(ExportConfig(), InMemorySpanExporter())
    try:
        assert (batcher.max_queue_size, batcher.max_export_batch_size) == (100, 10)
    finally:
        batcher.shutdown()
    sink = build_sink(OnlineEvalConfig(export=ExportConfig(otlp=OtlpExportConfig(insecure=True))))
    assert isinstance(sink, ProtoEmitter)
    try:
        assert (sink._delay, sink._max_batch, sink._max_queue) == (0.25, 10, 100)
    finally:
        sink.shutdown(0)


# --------------------------------------------------------------------------- bad values

BAD_ENV = [
    (
        {"OTEL_EXPORTER_OTLP_TIMEOUT": "10s"},
        "export.otlp.timeout_s: OTEL_EXPORTER_OTLP_TIMEOUT='10s': must be a number of seconds "
        "greater than 0",
    ),
    (
        {"OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "0"},
        "export.otlp.timeout_s: OTEL_EXPORTER_OTLP_TRACES_TIMEOUT='0': must be a number",
    ),
    (
        {"OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "nan"},
        "export.otlp.timeout_s: OTEL_EXPORTER_OTLP_TRACES_TIMEOUT='nan': must be a number",
    ),
    (
        {"OTEL_EXPORTER_OTLP_COMPRESSION": "deflate"},
        "export.otlp.compression: OTEL_EXPORTER_OTLP_COMPRESSION='deflate': unknown value "
        "'deflate'; expected one of: gzip, none",
    ),
    (
        {"OTEL_EXPORTER_OTLP_TRACES_INSECURE": "yes"},
        "export.otlp.insecure: OTEL_EXPORTER_OTLP_TRACES_INSECURE='yes': must be true or false",
    ),
    (
        {"OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer%20x,api-key"},
        "export.otlp.headers: OTEL_EXPORTER_OTLP_HEADERS: cannot read 'api-key'; expected "
        "name=value (URL-encoded)",
    ),
    (
        {"OTEL_EXPORTER_OTLP_TRACES_HEADERS": "a=x%0D%0Ay"},
        "export.otlp.headers: OTEL_EXPORTER_OTLP_TRACES_HEADERS: header 'a' must not contain a "
        "line break or NUL",
    ),
    (
        {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "collector"},
        "export.otlp.endpoint: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: must be host:port or an "
        "http:// or https:// URL, got 'collector' (protocol grpc)",
    ),
    (
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318/v1/traces"},
        "export.otlp.endpoint: OTEL_EXPORTER_OTLP_ENDPOINT: a gRPC endpoint has no path; got "
        "'/v1/traces' in 'http://c:4318/v1/traces' (protocol grpc)",
    ),
    (
        {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_EXPORTER_OTLP_ENDPOINT": "c:4318"},
        "export.otlp.endpoint: OTEL_EXPORTER_OTLP_ENDPOINT: must be an http:// or https:// URL "
        "for protocol http/protobuf, got 'c:4318' (protocol http/protobuf)",
    ),
    (
        {"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"},
        "export.otlp.protocol: OTEL_EXPORTER_OTLP_TRACES_PROTOCOL='http/json': unknown value "
        "'http/json'; expected one of: grpc, http/protobuf",
    ),
]

BAD_BATCH_ENV = [
    (
        {"OTEL_BSP_SCHEDULE_DELAY": "1.5"},
        "export.batch.schedule_delay_ms: OTEL_BSP_SCHEDULE_DELAY='1.5': must be a whole number "
        "greater than 0",
    ),
    (
        {"OTEL_BSP_MAX_QUEUE_SIZE": "lots"},
        "export.batch.max_queue_size: OTEL_BSP_MAX_QUEUE_SIZE='lots': must be a whole number",
    ),
    (
        {"OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "0"},
        "export.batch.max_export_batch_size: OTEL_BSP_MAX_EXPORT_BATCH_SIZE='0': must be a whole",
    ),
    (
        {"OTEL_BSP_EXPORT_TIMEOUT": "-1"},
        "export.batch.export_timeout_ms: OTEL_BSP_EXPORT_TIMEOUT='-1': must be a whole number",
    ),
    (
        {"OTEL_BSP_MAX_QUEUE_SIZE": "10", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "20"},
        "export.batch.max_export_batch_size: 20 (from OTEL_BSP_MAX_EXPORT_BATCH_SIZE) must be at "
        "most max_queue_size 10 (from OTEL_BSP_MAX_QUEUE_SIZE)",
    ),
]


@pytest.mark.parametrize(("env", "message"), BAD_ENV + BAD_BATCH_ENV)
def test_a_bad_environment_value_is_a_clear_error_in_both_doors(
    env: dict[str, str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    cfg = OnlineEvalConfig(export=ExportConfig())
    in_process = [
        lambda: build_batcher(cfg.export).shutdown(),
        lambda: build_span_processor(cfg.export).shutdown(),
    ]
    for build in [*in_process, lambda: build_sink(cfg).shutdown(0)]:
        with pytest.raises(ConfigError) as info:
            build()
        assert message in str(info.value)


def test_insecure_true_contradicts_an_https_endpoint_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://c:4317")
    with pytest.raises(ConfigError) as info:
        resolve_otlp(OtlpExportConfig(insecure=True))
    assert (
        "export.otlp.insecure: true contradicts OTEL_EXPORTER_OTLP_TRACES_ENDPOINT='https://c:4317'"
        in str(info.value)
    )


def test_validate_resolves_the_environment_and_reports_every_bad_value(tmp_path: Any) -> None:
    """``otel-online-eval validate`` resolves export and forward with the environment it runs
    in: what ``serve`` or the processor would refuse at start, it reports, all of it."""
    path = tmp_path / "evals.yaml"
    path.write_text(
        "scorers: {nonempty: {type: not_empty}}\n"
        "rules: [{name: r, scorers: [nonempty]}]\n"
        "export: {otlp: {}}\n"
        "forward: {otlp: {protocol: http/protobuf}}\n"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_EXPORTER", "OTEL_BSP"))}

    def validate(**env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "otel_online_eval.cli", "validate", "-c", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            env={**clean, **env},
        )

    bad = validate(
        OTEL_EXPORTER_OTLP_TRACES_TIMEOUT="10s",
        OTEL_BSP_SCHEDULE_DELAY="soon",
        OTEL_EXPORTER_OTLP_HEADERS="api-key",
    )
    assert bad.returncode == 1, bad.stdout
    for message in (
        "export.otlp.timeout_s: OTEL_EXPORTER_OTLP_TRACES_TIMEOUT='10s'",
        "export.batch.schedule_delay_ms: OTEL_BSP_SCHEDULE_DELAY='soon'",
        "forward.otlp.timeout_s: OTEL_EXPORTER_OTLP_TRACES_TIMEOUT='10s'",
    ):
        assert message in bad.stderr
    good = validate(
        OTEL_EXPORTER_OTLP_ENDPOINT="https://collector.example:4318",
        OTEL_EXPORTER_OTLP_HEADERS="authorization=Bearer%20secret",
        OTEL_BSP_SCHEDULE_DELAY="250",
    )
    assert good.returncode == 0, good.stderr
    assert "export: otlp grpc collector.example:4318 (TLS, headers: authorization," in good.stdout
    assert "batch: delay 250 ms, queue 2048 spans, 512 spans per export" in good.stdout
    assert "forward (serve): otlp http/protobuf https://collector.example:4318/v1/traces" in (
        good.stdout
    )
    assert "secret" not in good.stdout  # header names only
