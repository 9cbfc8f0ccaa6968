"""The sidecar's config sections: ``receiver:`` and ``forward:``.

::

    receiver:
      grpc: {endpoint: "127.0.0.1:4317", max_message_bytes: 16777216}   # enabled by default
      http:                                                             # enabled by default
        endpoint: "127.0.0.1:4318"
        max_body_bytes: 16777216     # compressed and decompressed (all gzip members together)
        max_connections: 256         # more wait in the listen backlog until one closes
        read_timeout_s: 30           # for a request's head, and again for its body
      tls: {cert_file: server.crt, key_file: server.key, client_ca_file: ca.crt}  # optional
      auth: {bearer_token: "${env:OTEL_ONLINE_EVAL_TOKEN}"}             # optional
      drain_timeout_s: 30
    forward:                       # optional: pass the received spans on, unchanged
      otlp: {protocol: grpc, endpoint: "backend:4317", insecure: true}
      queue: {max_bytes: 67108864}
      retry: {initial_backoff_s: 0.5, max_backoff_s: 30, max_elapsed_s: 300}

A receiver set to ``false`` is disabled. Endpoints default to 127.0.0.1: bind to another address
only on purpose. The TLS files are loaded at validation, so a key that does not match its
certificate, a file that is not PEM or a client CA with no certificate is reported with the
field and the file (:func:`tls_problems`). ``forward.otlp`` takes the keys of ``export: otlp:``
(see :mod:`otel_online_eval.export`), the TLS client files included.
"""

from __future__ import annotations

import hashlib
import hmac
import ssl
from dataclasses import dataclass, field
from pathlib import Path

from otel_online_eval._validate import Reader
from otel_online_eval.export import OtlpExportConfig, read_otlp_config, tls_file_problems

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
    "server_ssl_context",
    "tls_problems",
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
        max_body_bytes: the largest body accepted (413), as sent and after gzip decompression
            (all members together).
        max_connections: connections served at once; further ones wait in the listen backlog
            (128) until one closes. Each may be reading a body of up to ``max_body_bytes``.
        read_timeout_s: how long a connection may take to send a request's head (counted from
            when it connected or got its previous answer, so also how long an idle kept-alive
            connection stays open), and then its body; the TLS handshake too. A head that is
            late is closed, a body that is late gets 408 and the connection is closed.
    """

    endpoint: str = "127.0.0.1:4318"
    max_body_bytes: int = 16 * _MIB
    max_connections: int = 256
    read_timeout_s: float = 30.0


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """Server TLS; with ``client_ca_file``, clients must present a certificate it signed."""

    cert_file: str
    key_file: str
    client_ca_file: str | None = None


@dataclass(frozen=True, slots=True)
class AuthConfig:
    """Requests must carry ``Authorization: Bearer <bearer_token>``: the scheme in any case
    (RFC 7235), the token compared in constant time."""

    bearer_token: str = field(repr=False)

    def accepts(self, authorization: str | bytes | None) -> bool:
        """Whether an ``Authorization`` value carries this token."""
        if authorization is None:
            return False
        if isinstance(authorization, bytes):
            authorization = authorization.decode("latin-1")
        scheme, _, token = authorization.strip().partition(" ")
        # Digests of equal length: the comparison does not depend on what the token is.
        given = hashlib.sha256(token.strip().encode("utf-8", "surrogateescape")).digest()
        expected = hashlib.sha256(self.bearer_token.encode()).digest()
        return hmac.compare_digest(given, expected) and scheme.lower() == "bearer"


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


def tls_problems(tls: TlsConfig) -> list[tuple[str, str]]:
    """(field, message) for each file of ``tls`` that cannot serve: unreadable, no PEM
    certificate in ``cert_file`` or ``client_ca_file``, no unencrypted PEM private key in
    ``key_file``, or a key that does not match the certificate."""
    # The export package's check of TLS files, with its field names for ours.
    names = {
        "certificate_file": "client_ca_file",
        "client_certificate_file": "cert_file",
        "client_key_file": "key_file",
    }
    files = {"client_certificate_file": tls.cert_file, "client_key_file": tls.key_file}
    if tls.client_ca_file:
        files["certificate_file"] = tls.client_ca_file
    out: list[tuple[str, str]] = []
    for key, message in tls_file_problems(files):
        pair = _pair_problem(tls) if key == "client_key_file" else None
        out.append(pair or (names[key], message))
    return out


def _pair_problem(tls: TlsConfig) -> tuple[str, str] | None:
    """Which of the certificate and the key cannot serve, and why; None if they can (or
    cannot be read, which the caller reports)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_verify_locations(cafile=tls.cert_file)
    except (ssl.SSLError, ValueError):
        return ("cert_file", f"no PEM certificate in {tls.cert_file!r}")
    except OSError:
        return None
    try:
        # A callable password: an encrypted key fails here instead of prompting on a tty.
        context.load_cert_chain(tls.cert_file, tls.key_file, password=lambda: b"")
    except (ssl.SSLError, ValueError) as exc:
        if getattr(exc, "reason", None) == "KEY_VALUES_MISMATCH":
            return (
                "key_file",
                f"the private key in {tls.key_file!r} does not match the certificate in "
                f"{tls.cert_file!r}",
            )
        return ("key_file", f"no unencrypted PEM private key in {tls.key_file!r}")
    except OSError:
        return None
    return None


def server_ssl_context(tls: TlsConfig) -> ssl.SSLContext:
    """The server ``SSLContext`` for ``tls``, requiring client certificates with a client CA.

    Raises:
        OSError: a file cannot serve; the message names the field, the file and why.
    """
    problems = tls_problems(tls)
    if problems:
        raise OSError("; ".join(f"receiver.tls.{key}: {message}" for key, message in problems))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls.cert_file, tls.key_file)
    if tls.client_ca_file:
        context.load_verify_locations(tls.client_ca_file)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


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
            int(h.number("max_connections", 256, lo=1, hi=65536, integer=True)),
            float(h.number("read_timeout_s", 30.0, lo=0.01, hi=3600)),
        )
        h.done()
    if grpc is None and http is None:
        r.issues.add(r.path, "at least one of grpc and http must be enabled")
    tls = None
    if r.has("tls"):
        t = r.sub("tls")
        before = len(r.issues.items)
        cert, key = _file(t, "cert_file", True), _file(t, "key_file", True)
        ca = _file(t, "client_ca_file", False)
        t.done()
        if cert and key:
            tls = TlsConfig(cert, key, ca)
            if len(r.issues.items) == before:  # the files are there: can they serve?
                for name, message in tls_problems(tls):
                    t.error(name, message)
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
