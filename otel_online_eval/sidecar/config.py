"""The sidecar's config sections: ``receiver:`` and ``forward:``.

::

    receiver:
      grpc: {endpoint: "127.0.0.1:4317", max_message_bytes: 16777216}   # enabled by default
      http: {endpoint: "127.0.0.1:4318", max_body_bytes: 16777216}      # enabled by default
      tls: {cert_file: server.crt, key_file: server.key, client_ca_file: ca.crt}  # optional
      auth: {bearer_token: "${env:OTEL_ONLINE_EVAL_TOKEN}"}             # optional
      drain_timeout_s: 30
    forward:                       # optional: pass the received spans on, unchanged
      otlp: {protocol: grpc, endpoint: "backend:4317", insecure: true}
      queue: {max_bytes: 67108864}
      retry: {initial_backoff_s: 0.5, max_backoff_s: 30, max_elapsed_s: 300}

A receiver set to ``false`` is disabled. Endpoints default to 127.0.0.1: bind to another address
only on purpose. ``forward.otlp`` takes the keys of ``export: otlp:`` (see
:mod:`otel_online_eval.export`), the TLS client files included.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from otel_online_eval._validate import Reader
from otel_online_eval.export import OtlpExportConfig, read_otlp_config

__all__ = [
    "AuthConfig",
    "ForwardConfig",
    "GrpcReceiverConfig",
    "HttpReceiverConfig",
    "ReceiverConfig",
    "RetryConfig",
    "TlsConfig",
    "read_forward_config",
    "read_receiver_config",
]

_MIB = 1024 * 1024
_GRPC_DEFAULT = "127.0.0.1:4317"
_HTTP_DEFAULT = "127.0.0.1:4318"


@dataclass(frozen=True, slots=True)
class GrpcReceiverConfig:
    """OTLP/gRPC: ``endpoint`` is host:port; larger messages get RESOURCE_EXHAUSTED."""

    endpoint: str = "127.0.0.1:4317"
    max_message_bytes: int = 16 * _MIB


@dataclass(frozen=True, slots=True)
class HttpReceiverConfig:
    """OTLP/HTTP (``POST /v1/traces``) plus ``GET /healthz`` and ``GET /metrics``.

    Attributes:
        endpoint: host:port.
        max_body_bytes: the largest body accepted, after gzip decompression too (413).
    """

    endpoint: str = "127.0.0.1:4318"
    max_body_bytes: int = 16 * _MIB


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """Server TLS; with ``client_ca_file``, clients must present a certificate it signed."""

    cert_file: str
    key_file: str
    client_ca_file: str | None = None


@dataclass(frozen=True, slots=True)
class AuthConfig:
    """Requests must carry ``Authorization: Bearer <bearer_token>`` (compared in constant time)."""

    bearer_token: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class ReceiverConfig:
    grpc: GrpcReceiverConfig | None = field(default_factory=GrpcReceiverConfig)
    http: HttpReceiverConfig | None = field(default_factory=HttpReceiverConfig)
    tls: TlsConfig | None = None
    auth: AuthConfig | None = None
    drain_timeout_s: float = 30.0


@dataclass(frozen=True, slots=True)
class RetryConfig:
    """Exponential backoff with full jitter, ``Retry-After`` / ``RetryInfo`` honoured."""

    initial_backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    max_elapsed_s: float = 300.0


@dataclass(frozen=True, slots=True)
class ForwardConfig:
    """Where received spans go on to; ``max_queue_bytes`` bounds what waits for it."""

    otlp: OtlpExportConfig
    max_queue_bytes: int = 64 * _MIB
    retry: RetryConfig = field(default_factory=RetryConfig)


def _endpoint(r: Reader, key: str, default: str) -> str:
    value: str = r.str(key, default)
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        r.error(key, f"must be host:port (like 127.0.0.1:4317), got {value!r}")
    return value


def _file(r: Reader, key: str, required: bool) -> str | None:
    value: str | None = r.str(key, required=required)
    if value is not None and not Path(value).is_file():
        r.error(key, f"no such file: {value!r}")
    return value


def read_receiver_config(r: Reader) -> ReceiverConfig:
    """Read ``receiver:``; problems are recorded in ``r.issues``."""
    grpc: GrpcReceiverConfig | None = GrpcReceiverConfig()
    http: HttpReceiverConfig | None = HttpReceiverConfig()
    if r.raw("grpc") is False:
        grpc = None
    else:
        g = r.sub("grpc")
        grpc = GrpcReceiverConfig(
            _endpoint(g, "endpoint", _GRPC_DEFAULT),
            int(g.number("max_message_bytes", 16 * _MIB, lo=1024, integer=True)),
        )
        g.done()
    if r.raw("http") is False:
        http = None
    else:
        h = r.sub("http")
        http = HttpReceiverConfig(
            _endpoint(h, "endpoint", _HTTP_DEFAULT),
            int(h.number("max_body_bytes", 16 * _MIB, lo=1024, integer=True)),
        )
        h.done()
    if grpc is None and http is None:
        r.issues.add(r.path, "at least one of grpc and http must be enabled")
    tls = None
    if r.has("tls"):
        t = r.sub("tls")
        cert, key = _file(t, "cert_file", True), _file(t, "key_file", True)
        ca = _file(t, "client_ca_file", False)
        t.done()
        if cert and key:
            tls = TlsConfig(cert, key, ca)
    auth = None
    if r.has("auth"):
        a = r.sub("auth")
        token = a.str("bearer_token", required=True)
        a.done()
        if token is not None:
            if not token.strip():
                a.error("bearer_token", "must not be empty")
            auth = AuthConfig(token)
    drain = float(r.number("drain_timeout_s", 30.0, lo=0))
    r.done()
    return ReceiverConfig(grpc, http, tls, auth, drain)


def read_forward_config(r: Reader) -> ForwardConfig | None:
    """Read ``forward:``; None when it has problems (recorded in ``r.issues``)."""
    otlp = read_otlp_config(r.sub("otlp")) if r.has("otlp") else None
    if not r.has("otlp"):
        r.issues.add(r.path, "'otlp' is required: where to forward the received spans")
    q = r.sub("queue")
    max_bytes = int(q.number("max_bytes", 64 * _MIB, lo=1024, integer=True))
    q.done()
    t = r.sub("retry")
    retry = RetryConfig(
        float(t.number("initial_backoff_s", 0.5, lo=0.001)),
        float(t.number("max_backoff_s", 30.0, lo=0.001)),
        float(t.number("max_elapsed_s", 300.0, lo=0)),
    )
    t.done()
    r.done()
    if otlp is None:
        return None
    return ForwardConfig(otlp, max_bytes, retry)
