"""The in-process door's exporters: the SDK's OTLP exporters given what
:mod:`~otel_online_eval.export.resolve` resolved, the console, the OTLP/JSON file, and the
batching span processor in front of them.

The OTLP exporters get every setting explicitly (endpoint, headers, TLS, timeout,
compression), so they send exactly what the sidecar's senders send for the same config and
environment; their own reading of the environment only fills what is resolved as unset (the
SDK's credential-provider entry points included).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

from otel_online_eval._errors import ConfigError, ConfigIssue
from otel_online_eval.export.config import ExportConfig, FileExportConfig, OtlpExportConfig
from otel_online_eval.export.file import OtlpJsonFileExporter
from otel_online_eval.export.resolve import OtlpTarget, resolve_batch, resolve_otlp

__all__ = ["build_exporter", "build_span_processor"]


def build_exporter(cfg: ExportConfig | None = None) -> SpanExporter:
    """Create the exporter ``cfg`` chooses.

    Args:
        cfg: the ``export:`` config; ``None`` (no ``export:`` section) means ``ExportConfig()``,
            OTLP configured by the environment.

    Returns:
        An OTLP gRPC or HTTP ``OTLPSpanExporter``, a ``ConsoleSpanExporter`` (writing to the
        ``sys.stdout`` of the moment) or an :class:`OtlpJsonFileExporter`.

    Raises:
        ConfigError: what only shows at build time: a bad ``OTEL_EXPORTER_OTLP_*`` value, an
            endpoint that does not suit the protocol taken from the environment, a TLS file
            that cannot serve, a file that cannot be opened.
    """
    cfg = ExportConfig() if cfg is None else cfg
    return _FACTORIES[cfg.kind](cfg.exporter)


def build_span_processor(
    cfg: ExportConfig | None = None, exporter: SpanExporter | None = None
) -> BatchSpanProcessor:
    """The SDK's ``BatchSpanProcessor`` with the resolved batching (``cfg.batch``, then
    ``OTEL_BSP_*``, then the SDK's defaults) in front of ``exporter`` (default: built from
    ``cfg``; ``None`` for ``cfg`` means ``ExportConfig()``).

    Raises:
        ConfigError: as :func:`build_exporter`, or a bad ``OTEL_BSP_*`` value, or batch sizes
            that do not fit together.
    """
    cfg = ExportConfig() if cfg is None else cfg
    batch = resolve_batch(cfg.batch)
    exporter = build_exporter(cfg) if exporter is None else exporter
    return BatchSpanProcessor(
        exporter,
        max_queue_size=batch.max_queue_size,
        schedule_delay_millis=batch.schedule_delay_ms,
        max_export_batch_size=batch.max_export_batch_size,
        export_timeout_millis=batch.export_timeout_ms,
    )


def _build_otlp(c: Any) -> SpanExporter:
    assert isinstance(c, OtlpExportConfig)
    target = resolve_otlp(c)
    try:
        return _build_grpc(target) if target.protocol == "grpc" else _build_http(target)
    except Exception as exc:  # the SDK exporters reject what they cannot use with assorted errors
        raise _build_error(
            "export.otlp",
            f"cannot build the {target.protocol} exporter: {type(exc).__name__}: {exc}",
        ) from exc


def _build_grpc(target: OtlpTarget) -> SpanExporter:
    import grpc
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    tls = target.tls
    credentials = None
    if not target.insecure and (tls.root_certificates or tls.certificate_chain):
        credentials = grpc.ssl_channel_credentials(
            tls.root_certificates, tls.private_key, tls.certificate_chain
        )
    exporter: SpanExporter = OTLPSpanExporter(
        endpoint=target.endpoint,
        insecure=target.insecure,
        credentials=credentials,
        headers=dict(target.headers) or None,
        timeout=target.timeout_s,
        compression=(
            grpc.Compression.Gzip
            if target.compression == "gzip"
            else grpc.Compression.NoCompression
        ),
    )
    return exporter


def _build_http(target: OtlpTarget) -> SpanExporter:
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    tls = target.tls
    exporter: SpanExporter = OTLPSpanExporter(
        endpoint=target.endpoint,
        certificate_file=tls.certificate_file,
        client_key_file=tls.client_key_file,
        client_certificate_file=tls.client_certificate_file,
        headers=dict(target.headers) or None,
        timeout=target.timeout_s,
        compression=Compression.Gzip if target.compression == "gzip" else Compression.NoCompression,
        session=_session_keeping_its_ca() if tls.certificate_file else None,
    )
    return exporter


def _session_keeping_its_ca() -> Any:
    """A ``requests.Session`` whose ``verify`` (where the SDK puts ``certificate_file``) is not
    replaced by ``REQUESTS_CA_BUNDLE`` or ``CURL_CA_BUNDLE``, as requests otherwise does."""
    import requests

    class Session(requests.Session):
        def merge_environment_settings(self, *args: Any, **kwargs: Any) -> Any:
            settings = super().merge_environment_settings(*args, **kwargs)
            if isinstance(self.verify, str):
                settings["verify"] = self.verify
            return settings

    return Session()


def _build_console(c: Any) -> SpanExporter:
    return ConsoleSpanExporter(out=sys.stdout)


def _build_file(c: Any) -> SpanExporter:
    assert isinstance(c, FileExportConfig)
    try:
        return OtlpJsonFileExporter(c.path)
    except OSError as exc:
        raise _build_error(
            "export.file.path", f"cannot open {c.path!r} for appending: {exc.strerror or exc}"
        ) from exc


def _build_error(path: str, message: str) -> ConfigError:
    return ConfigError([ConfigIssue(path, message)])


_FACTORIES: dict[str, Callable[[Any], SpanExporter]] = {
    "otlp": _build_otlp,
    "console": _build_console,
    "file": _build_file,
}
