"""Where eval spans go: the ``export:`` section, its exporter factories, and a file exporter.

Eval spans leave through any SDK ``SpanExporter`` behind a batching span processor. The
``export:`` section picks exactly one exporter and, optionally, the batching parameters::

    export:
      otlp:                      # or  console: {}  or  file: {path: evals.jsonl}
        protocol: grpc           # grpc | http/protobuf
        endpoint: collector:4317 # grpc: host:port or http(s)://host:port
                                 # http/protobuf: http(s)://host:4318[/v1/traces]
        headers: {x-api-key: "${env:API_KEY}"}
        insecure: true           # grpc only: plaintext instead of TLS
        compression: gzip        # gzip | none
        timeout_s: 10            # per export call, retries included
        certificate_file: ca.pem             # PEM CA bundle to verify the server (TLS only)
        client_certificate_file: client.pem  # PEM client certificate and key, for mTLS:
        client_key_file: client.key          #   both or neither
      batch: {max_queue_size: 2048, schedule_delay_ms: 5000,
              max_export_batch_size: 512, export_timeout_ms: 30000}

Every ``otlp`` field left out stays ``None`` and the SDK exporter then reads the standard
environment variables (``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, ``..._HEADERS``, ``..._INSECURE``,
``..._COMPRESSION``, ``..._TIMEOUT``, ``..._CERTIFICATE``, ``..._CLIENT_CERTIFICATE``,
``..._CLIENT_KEY``, and their ``OTEL_EXPORTER_OTLP_*`` fallbacks), so ``export: {otlp: {}}`` is
configured entirely by the environment. An unset ``protocol`` is read here from
``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL``, then ``OTEL_EXPORTER_OTLP_PROTOCOL``, and defaults to
``grpc`` (as the Python SDK does). Unset ``batch`` fields fall back to ``OTEL_BSP_*`` and the SDK
defaults.

The three TLS files are checked at load (readable, PEM, the key matches the certificate) and
need a TLS connection: they contradict ``insecure: true`` and an ``http://`` endpoint, and with
``insecure`` unset they make a gRPC connection use TLS. Each one unset is taken from
``OTEL_EXPORTER_OTLP_TRACES_<X>``, then ``OTEL_EXPORTER_OTLP_<X>`` (:func:`resolve_tls`; in
process, with none of them set, the SDK exporter reads those variables itself). A relative path
is relative to the working directory.

An ``http/protobuf`` endpoint without a path gets ``/v1/traces`` appended, as the Collector's
``otlphttp`` exporter does; an endpoint with a path is used as it is.

``file`` appends one OTLP/JSON ``ExportTraceServiceRequest`` per export call, one a line, as
the Collector's ``file`` exporter writes them (see :mod:`otel_online_eval.otlp_json`). A relative
``path`` is relative to the working directory of the process.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import ssl
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import IO, Any, Literal
from urllib.parse import urlsplit

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
    SpanExportResult,
)

from otel_online_eval._errors import ConfigError, ConfigIssue
from otel_online_eval._validate import Reader
from otel_online_eval.otlp_json import encode_spans_json

__all__ = [
    "COMPRESSIONS",
    "EXPORTER_KINDS",
    "PROTOCOLS",
    "BatchConfig",
    "ConsoleExportConfig",
    "ExportConfig",
    "FileExportConfig",
    "OtlpExportConfig",
    "OtlpJsonFileExporter",
    "OtlpTls",
    "build_exporter",
    "build_span_processor",
    "read_export_config",
    "read_otlp_config",
    "resolve_protocol",
    "resolve_tls",
]

logger = logging.getLogger(__name__)

OtlpProtocol = Literal["grpc", "http/protobuf"]
OtlpCompression = Literal["gzip", "none"]

PROTOCOLS: tuple[str, ...] = ("grpc", "http/protobuf")
"""The OTLP transports an ``otlp`` exporter can use."""
COMPRESSIONS: tuple[str, ...] = ("gzip", "none")
"""The values of ``otlp.compression``."""
EXPORTER_KINDS: tuple[str, ...] = ("otlp", "console", "file")
"""The keys of ``export:`` that choose an exporter; exactly one is set."""

_DEFAULT_PROTOCOL: OtlpProtocol = "grpc"
_PROTOCOL_ENV = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
_HTTP_TRACES_PATH = "/v1/traces"
# An HTTP header name is a token (RFC 9110 section 5.6.2); gRPC metadata keys are a subset.
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_HOST_PORT = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[^\s/:\[\]@]+):[0-9]{1,5}")
# The TLS client files and the suffix of their OTEL_EXPORTER_OTLP_[TRACES_]* variables.
_TLS_ENV = (
    ("certificate_file", "CERTIFICATE"),
    ("client_certificate_file", "CLIENT_CERTIFICATE"),
    ("client_key_file", "CLIENT_KEY"),
)


# --------------------------------------------------------------------------- config model


@dataclass(frozen=True, slots=True)
class OtlpExportConfig:
    """An OTLP exporter; every field left ``None`` is taken from the ``OTEL_EXPORTER_OTLP_*``
    environment by the SDK exporter.

    Attributes:
        protocol: ``grpc`` or ``http/protobuf``; ``None`` reads
            ``OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL`` at build time (default ``grpc``).
        endpoint: gRPC: ``host:port`` or ``http(s)://host:port`` (the scheme sets TLS when
            ``insecure`` is unset). HTTP: an ``http(s)://`` URL; with no path, ``/v1/traces`` is
            appended.
        headers: sent with every export (gRPC metadata keys are lower-cased).
        insecure: gRPC only; ``True`` for a plaintext connection.
        compression: ``gzip`` or ``none``.
        timeout_s: the time one export may take, retries included; > 0.
        certificate_file: a PEM CA bundle to verify the server with, instead of the system's
            roots.
        client_certificate_file: a PEM client certificate (chain) for mutual TLS; needs
            ``client_key_file``.
        client_key_file: the PEM private key (unencrypted) of ``client_certificate_file``.

    The TLS files need TLS: not with ``insecure: true`` or an ``http://`` endpoint.

    Raises:
        ValueError: a field is out of its domain (the config reader reports these as issues
            before it ever builds one).
    """

    protocol: OtlpProtocol | None = None
    endpoint: str | None = None
    headers: Mapping[str, str] | None = None
    insecure: bool | None = None
    compression: OtlpCompression | None = None
    timeout_s: float | None = None
    certificate_file: str | None = None
    client_certificate_file: str | None = None
    client_key_file: str | None = None

    def __post_init__(self) -> None:
        problems = _otlp_problems(**_fields(self))
        if problems:
            raise ValueError("; ".join(f"otlp.{key}: {msg}" for key, msg in problems))
        if self.headers is not None:
            object.__setattr__(self, "headers", MappingProxyType(dict(self.headers)))


@dataclass(frozen=True, slots=True)
class OtlpTls:
    """The TLS client files of one OTLP connection, resolved (see :func:`resolve_tls`) and
    read once. All ``None``: the system's roots and no client certificate.

    Attributes:
        certificate_file: the CA bundle's path; ``root_certificates`` its PEM.
        client_certificate_file: the client certificate's path; ``certificate_chain`` its PEM.
        client_key_file: the client key's path; ``private_key`` its PEM.
    """

    certificate_file: str | None = None
    client_certificate_file: str | None = None
    client_key_file: str | None = None
    root_certificates: bytes | None = field(default=None, repr=False)
    certificate_chain: bytes | None = field(default=None, repr=False)
    private_key: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class ConsoleExportConfig:
    """Print each eval span as JSON on standard output (the SDK's ``ConsoleSpanExporter``)."""


@dataclass(frozen=True, slots=True)
class FileExportConfig:
    """Append OTLP/JSON lines to ``path`` (one ``ExportTraceServiceRequest`` per export call).

    Attributes:
        path: the file; created if missing, its directory must exist.
    """

    path: str

    def __post_init__(self) -> None:
        if not isinstance(self.path, str) or not self.path:
            raise ValueError(f"file.path: must be a non-empty string, got {self.path!r}")


@dataclass(frozen=True, slots=True)
class BatchConfig:
    """The batching span processor in front of the exporter; ``None`` = ``OTEL_BSP_*``/default.

    Attributes:
        max_queue_size: eval spans held while waiting for export; more are dropped.
        schedule_delay_ms: the longest wait between two exports.
        max_export_batch_size: spans per export call; at most ``max_queue_size``.
        export_timeout_ms: the time one export may take.
    """

    max_queue_size: int | None = None
    schedule_delay_ms: float | None = None
    max_export_batch_size: int | None = None
    export_timeout_ms: float | None = None

    def __post_init__(self) -> None:
        problems = _batch_problems(**_fields(self))
        if problems:
            raise ValueError("; ".join(f"batch.{key}: {msg}" for key, msg in problems))


@dataclass(frozen=True, slots=True)
class ExportConfig:
    """The ``export:`` section: one exporter (``otlp``, ``console`` or ``file``) and batching.

    With no exporter given, ``otlp`` is chosen with every field unset, i.e. the standard OTLP
    environment variables decide: ``ExportConfig()`` is "export like the SDK would".

    Raises:
        ValueError: more than one exporter is set.
    """

    otlp: OtlpExportConfig | None = None
    console: ConsoleExportConfig | None = None
    file: FileExportConfig | None = None
    batch: BatchConfig = field(default_factory=BatchConfig)

    def __post_init__(self) -> None:
        chosen = [kind for kind in EXPORTER_KINDS if getattr(self, kind) is not None]
        if len(chosen) > 1:
            raise ValueError(f"set exactly one exporter, got {' and '.join(chosen)}")
        if not chosen:
            object.__setattr__(self, "otlp", OtlpExportConfig())

    @property
    def kind(self) -> str:
        """The chosen exporter: ``otlp``, ``console`` or ``file``."""
        return next(kind for kind in EXPORTER_KINDS if getattr(self, kind) is not None)

    @property
    def exporter(self) -> OtlpExportConfig | ConsoleExportConfig | FileExportConfig:
        """The chosen exporter's own config."""
        chosen: OtlpExportConfig | ConsoleExportConfig | FileExportConfig = getattr(self, self.kind)
        return chosen


# --------------------------------------------------------------------------- checks


def _endpoint_problem(endpoint: str, protocol: str | None) -> str | None:
    """What is wrong with ``endpoint`` for ``protocol`` (``None``: either), or None."""
    if not endpoint.strip():
        return "must not be empty"
    if "://" not in endpoint:
        if protocol == "http/protobuf":
            return (
                f"must be an http:// or https:// URL for protocol http/protobuf, got {endpoint!r}"
            )
        if not _HOST_PORT.fullmatch(endpoint) or int(endpoint.rsplit(":", 1)[1]) > 65535:
            return f"must be host:port or an http:// or https:// URL, got {endpoint!r}"
        return None
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https"):
        return f"unknown scheme {parts.scheme!r} in {endpoint!r}; expected http or https"
    try:
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return f"has an invalid port: {endpoint!r}"
    if not parts.hostname:
        return f"has no host: {endpoint!r}"
    if protocol == "grpc" and parts.path not in ("", "/"):
        return f"a gRPC endpoint has no path; got {parts.path!r} in {endpoint!r}"
    return None


def _fields(obj: Any) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}


def _otlp_problems(
    protocol: Any = None,
    endpoint: Any = None,
    headers: Any = None,
    insecure: Any = None,
    compression: Any = None,
    timeout_s: Any = None,
    certificate_file: Any = None,
    client_certificate_file: Any = None,
    client_key_file: Any = None,
) -> list[tuple[str, str]]:
    """(field, message) for every problem of an OTLP config; the reader and the dataclass
    share it. Files are not looked at here (see :func:`_tls_file_problems`)."""
    out: list[tuple[str, str]] = []
    tls = {
        "certificate_file": certificate_file,
        "client_certificate_file": client_certificate_file,
        "client_key_file": client_key_file,
    }
    for key, path in tls.items():
        if path is not None and (not isinstance(path, str) or not path.strip()):
            out.append((key, f"must be the path of a PEM file, got {path!r}"))
    if (client_certificate_file is None) != (client_key_file is None):
        given, missing = (
            ("client_certificate_file", "client_key_file")
            if client_key_file is None
            else ("client_key_file", "client_certificate_file")
        )
        out.append((given, f"needs {missing} too: mutual TLS takes both or neither"))
    tls_set = ", ".join(key for key, path in tls.items() if path is not None)
    if tls_set and insecure is True:
        out.append(("insecure", f"true contradicts the TLS client settings ({tls_set})"))
    if tls_set and isinstance(endpoint, str) and endpoint.startswith("http://"):
        out.append(
            (
                "endpoint",
                f"{endpoint!r} is plaintext, which contradicts the TLS client settings "
                f"({tls_set}); use https://",
            )
        )
    if protocol is not None and protocol not in PROTOCOLS:
        out.append(("protocol", _unknown(protocol, PROTOCOLS)))
        protocol = None
    if endpoint is not None:
        problem = (
            _endpoint_problem(endpoint, protocol)
            if isinstance(endpoint, str)
            else f"must be a string, got {endpoint!r}"
        )
        if problem:
            out.append(("endpoint", problem))
    if headers is not None:
        out.extend(("headers", msg) for msg in _header_problems(headers))
    if insecure is not None and not isinstance(insecure, bool):
        out.append(("insecure", f"must be true or false, got {insecure!r}"))
    elif insecure is not None:
        if protocol == "http/protobuf":
            out.append(
                (
                    "insecure",
                    "applies to protocol grpc only; an http/protobuf endpoint uses TLS when it "
                    "starts with https://",
                )
            )
        elif isinstance(endpoint, str) and "://" in endpoint:
            scheme = urlsplit(endpoint).scheme
            if (scheme == "https" and insecure) or (scheme == "http" and not insecure):
                out.append(
                    ("insecure", f"{str(insecure).lower()} contradicts the endpoint {endpoint!r}")
                )
    if compression is not None and compression not in COMPRESSIONS:
        out.append(("compression", _unknown(compression, COMPRESSIONS)))
    if timeout_s is not None and not _positive(timeout_s):
        out.append(("timeout_s", f"must be a number greater than 0, got {timeout_s!r}"))
    return out


def _tls_file_problems(files: Mapping[str, str]) -> list[tuple[str, str]]:
    """(field, message) for each TLS file of ``files`` (field -> path) that cannot be read or
    is not what it should be: a PEM CA bundle, a PEM certificate and its unencrypted key."""
    out: list[tuple[str, str]] = []
    for key, path in files.items():
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            out.append((key, f"cannot read {path!r}: {exc.strerror or exc}"))
    if out:
        return out
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if "certificate_file" in files:
        try:
            context.load_verify_locations(cafile=files["certificate_file"])
        except (ssl.SSLError, ValueError):
            out.append(("certificate_file", f"no PEM certificate in {files['certificate_file']!r}"))
    cert, private = files.get("client_certificate_file"), files.get("client_key_file")
    if cert is not None and private is not None:
        try:
            # A callable password: an encrypted key fails here instead of prompting on a tty.
            context.load_cert_chain(cert, private, password=lambda: b"")
        except (ssl.SSLError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or str(exc)
            out.append(
                (
                    "client_key_file",
                    f"{cert!r} and {private!r} are not a PEM certificate and its unencrypted "
                    f"private key ({reason})",
                )
            )
    return out


def _header_problems(headers: Any) -> list[str]:
    if not isinstance(headers, Mapping):
        return [f"must be a mapping of header names to values, got {headers!r}"]
    out: list[str] = []
    seen: dict[str, str] = {}
    for name, value in headers.items():
        if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
            out.append(f"invalid header name {name!r}")
            continue
        if name.lower() in seen:
            out.append(f"header {name!r} is given twice (as {seen[name.lower()]!r})")
        seen[name.lower()] = name
        if not isinstance(value, str):
            out.append(f"header {name!r} must be a string, got {value!r}")
        elif any(ch in value for ch in "\r\n\0"):
            out.append(f"header {name!r} must not contain a line break or NUL")
    return out


def _batch_problems(
    max_queue_size: Any = None,
    schedule_delay_ms: Any = None,
    max_export_batch_size: Any = None,
    export_timeout_ms: Any = None,
) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for key, value in (
        ("max_queue_size", max_queue_size),
        ("max_export_batch_size", max_export_batch_size),
    ):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value <= 0
        ):
            out.append((key, f"must be a whole number greater than 0, got {value!r}"))
    for key, value in (
        ("schedule_delay_ms", schedule_delay_ms),
        ("export_timeout_ms", export_timeout_ms),
    ):
        if value is not None and not _positive(value):
            out.append((key, f"must be a number greater than 0, got {value!r}"))
    if (
        not out
        and max_queue_size is not None
        and max_export_batch_size is not None
        and max_export_batch_size > max_queue_size
    ):
        out.append(
            (
                "max_export_batch_size",
                f"must be at most max_queue_size ({max_queue_size}), got {max_export_batch_size}",
            )
        )
    return out


def _positive(value: Any) -> bool:
    return (
        not isinstance(value, bool)
        and isinstance(value, (int, float))
        and value > 0
        and value != float("inf")
    )


def _unknown(value: object, allowed: Sequence[str]) -> str:
    return f"unknown value {value!r}; expected one of: {', '.join(allowed)}"


# --------------------------------------------------------------------------- reading


def read_export_config(r: Reader) -> ExportConfig | None:
    """Read the ``export:`` mapping, recording every problem in ``r.issues``.

    Args:
        r: a reader over the ``export`` value (path ``export``).

    Returns:
        The config, or ``None`` when the section is absent (callers then use
        ``ExportConfig()``) or has problems (already recorded; never raises).
    """
    if not r.ok:
        return None
    before = len(r.issues.items)
    present = [kind for kind in EXPORTER_KINDS if r.has(kind)]
    if len(present) > 1:
        r.issues.add(
            r.path,
            f"set exactly one exporter of {', '.join(EXPORTER_KINDS)}; got {' and '.join(present)}",
        )
    elif not present:
        r.issues.add(r.path, f"one exporter is required: {', '.join(EXPORTER_KINDS)}")
    otlp = read_otlp_config(r.sub("otlp")) if r.has("otlp") else None
    console = _read_console(r.sub("console")) if r.has("console") else None
    # A non-mapping ``file`` is already an issue; ``file:`` with no value still needs a path.
    file_reader = r.sub("file")
    file = (
        _read_file(file_reader)
        if r.has("file") and (file_reader.ok or r.raw("file") is None)
        else None
    )
    batch = _read_batch(r.sub("batch"))
    for kind in EXPORTER_KINDS:  # known keys, for the unknown-key hint
        r.raw(kind)
    r.done()
    if len(r.issues.items) > before:
        return None
    assert batch is not None
    return ExportConfig(otlp=otlp, console=console, file=file, batch=batch)


def read_otlp_config(r: Reader) -> OtlpExportConfig | None:
    """Read one ``otlp:`` mapping (export or forward); None when it has problems."""
    before = len(r.issues.items)
    protocol = r.choice("protocol", PROTOCOLS)
    endpoint = r.str("endpoint")
    headers = _read_headers(r.sub("headers")) if r.raw("headers") is not None else None
    insecure: bool | None = None
    if r.raw("insecure") is not None:
        well_typed = isinstance(r.raw("insecure"), bool)
        value = r.bool("insecure")  # records the issue when it is not a boolean
        insecure = value if well_typed else None
    compression = r.choice("compression", COMPRESSIONS)
    timeout_s = r.number("timeout_s")
    tls = {key: r.str(key) for key, _ in _TLS_ENV}
    r.done()
    candidate = {
        "protocol": protocol,
        "endpoint": endpoint,
        "headers": headers,
        "insecure": insecure,
        "compression": compression,
        "timeout_s": timeout_s,
        **tls,
    }
    # Cross-field checks (endpoint vs protocol, insecure vs scheme, TLS vs plaintext), on the
    # fields read well; then the TLS files themselves.
    for key, message in _otlp_problems(**candidate):
        r.error(key, message)
    files = {key: path for key, path in tls.items() if path}
    for key, message in _tls_file_problems(files):
        r.error(key, message)
    if len(r.issues.items) > before:
        return None
    return OtlpExportConfig(**candidate)


def _read_headers(r: Reader) -> dict[str, str] | None:
    if not r.ok:
        return None
    headers: dict[str, str] = {}
    for name in list(r.data):
        value = r.raw(name)
        if not isinstance(value, str):
            r.error(str(name), f"must be a string, got {value!r}")
            continue
        headers[name] = value
    r.done()
    return headers


def _read_console(r: Reader) -> ConsoleExportConfig:
    r.done()
    return ConsoleExportConfig()


def _read_file(r: Reader) -> FileExportConfig | None:
    path = r.str("path", required=True)
    if path == "":
        r.error("path", "must not be empty")
        path = None
    r.done()
    return FileExportConfig(path) if path else None


def _read_batch(r: Reader) -> BatchConfig | None:
    before = len(r.issues.items)
    values = {
        "max_queue_size": r.number("max_queue_size", integer=True),
        "schedule_delay_ms": r.number("schedule_delay_ms"),
        "max_export_batch_size": r.number("max_export_batch_size", integer=True),
        "export_timeout_ms": r.number("export_timeout_ms"),
    }
    r.done()
    for key, message in _batch_problems(**values):
        r.error(key, message)
    if len(r.issues.items) > before:
        return None
    return BatchConfig(**values)


# --------------------------------------------------------------------------- factories


def resolve_protocol(cfg: OtlpExportConfig, environ: Mapping[str, str] | None = None) -> str:
    """The protocol ``cfg`` exports with: its own, else the environment's, else ``grpc``.

    Raises:
        ConfigError: the environment names a protocol this package does not support.
    """
    if cfg.protocol is not None:
        return cfg.protocol
    env = os.environ if environ is None else environ
    for name in _PROTOCOL_ENV:
        value = env.get(name, "").strip().lower()
        if value:
            if value not in PROTOCOLS:
                raise _build_error(
                    "export.otlp.protocol", f"{name}={value!r}: " + _unknown(value, PROTOCOLS)
                )
            return value
    return _DEFAULT_PROTOCOL


def resolve_tls(
    cfg: OtlpExportConfig,
    plaintext: str | None = None,
    environ: Mapping[str, str] | None = None,
    path: str = "export.otlp",
) -> OtlpTls:
    """The TLS client files of ``cfg``'s connection, checked and read.

    Each file left unset in ``cfg`` is taken from ``OTEL_EXPORTER_OTLP_TRACES_<X>``, then
    ``OTEL_EXPORTER_OTLP_<X>`` (``CERTIFICATE``, ``CLIENT_CERTIFICATE``, ``CLIENT_KEY``).

    Args:
        cfg: the ``otlp:`` config.
        plaintext: why the connection is plaintext (e.g. ``"insecure is true"``), or ``None``
            when it uses TLS. Plaintext: the environment's files are ignored, as the SDK does,
            and ``cfg``'s are an error.
        environ: the environment (``os.environ`` when None).
        path: the config path errors are reported under.

    Raises:
        ConfigError: a file cannot be read or is not PEM, only one of the client certificate
            and key is set, or ``cfg`` sets files for a plaintext connection.
    """
    if plaintext is not None:
        given = [key for key, _ in _TLS_ENV if getattr(cfg, key) is not None]
        if given:
            message = f"is set, but the connection is plaintext: {plaintext}"
            raise ConfigError([ConfigIssue(f"{path}.{key}", message) for key in given])
        return OtlpTls()
    env = os.environ if environ is None else environ
    files: dict[str, str] = {}
    source: dict[str, str] = {}
    for key, suffix in _TLS_ENV:
        value = getattr(cfg, key)
        if value is not None:
            files[key] = value
            continue
        for name in (f"OTEL_EXPORTER_OTLP_TRACES_{suffix}", f"OTEL_EXPORTER_OTLP_{suffix}"):
            if env.get(name, "").strip():
                files[key], source[key] = env[name].strip(), f"{name}: "
                break
    problems = _tls_file_problems(files)
    if ("client_certificate_file" in files) != ("client_key_file" in files):
        given_key = next(k for k in ("client_certificate_file", "client_key_file") if k in files)
        problems.append((given_key, "mutual TLS needs both a client certificate and its key"))
    if problems:
        raise ConfigError(
            [ConfigIssue(f"{path}.{key}", source.get(key, "") + msg) for key, msg in problems]
        )

    def read(key: str) -> bytes | None:
        return Path(files[key]).read_bytes() if key in files else None

    try:
        return OtlpTls(
            files.get("certificate_file"),
            files.get("client_certificate_file"),
            files.get("client_key_file"),
            read("certificate_file"),
            read("client_certificate_file"),
            read("client_key_file"),
        )
    except OSError as exc:  # gone since it was checked a moment ago
        raise _build_error(path, f"cannot read {exc.filename!r}: {exc.strerror}") from exc


def _has_tls(cfg: OtlpExportConfig) -> bool:
    return any(getattr(cfg, key) is not None for key, _ in _TLS_ENV)


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
            endpoint that does not suit the protocol taken from the environment, a file that
            cannot be opened.
    """
    cfg = ExportConfig() if cfg is None else cfg
    return _FACTORIES[cfg.kind](cfg.exporter)


def build_span_processor(
    cfg: ExportConfig | None = None, exporter: SpanExporter | None = None
) -> BatchSpanProcessor:
    """A ``BatchSpanProcessor`` with ``cfg.batch`` in front of ``exporter`` (default: built
    from ``cfg``; ``None`` for ``cfg`` means ``ExportConfig()``).

    Raises:
        ConfigError: as :func:`build_exporter`, or batch sizes that do not fit the
            ``OTEL_BSP_*`` defaults they are combined with.
    """
    cfg = ExportConfig() if cfg is None else cfg
    exporter = build_exporter(cfg) if exporter is None else exporter
    b = cfg.batch
    try:
        return BatchSpanProcessor(
            exporter,
            max_queue_size=b.max_queue_size,
            schedule_delay_millis=b.schedule_delay_ms,
            max_export_batch_size=b.max_export_batch_size,
            export_timeout_millis=b.export_timeout_ms,
        )
    except ValueError as exc:
        exporter.shutdown()
        raise _build_error("export.batch", str(exc)) from exc


def _build_otlp(c: Any) -> SpanExporter:
    assert isinstance(c, OtlpExportConfig)
    protocol = resolve_protocol(c)
    if c.endpoint is not None:
        problem = _endpoint_problem(c.endpoint, protocol)
        if problem:
            raise _build_error(
                "export.otlp.endpoint",
                f"{problem} (protocol {protocol}, from the environment or the default)",
            )
    try:
        if protocol == "grpc":
            return _build_grpc(c)
        return _build_http(c)
    except ConfigError:
        raise
    except Exception as exc:  # the SDK exporters reject bad OTEL_* values with assorted errors
        raise _build_error(
            "export.otlp", f"cannot build the {protocol} exporter: {type(exc).__name__}: {exc}"
        ) from exc


def _build_grpc(c: OtlpExportConfig) -> SpanExporter:
    import grpc
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    compression = None
    if c.compression is not None:
        compression = (
            grpc.Compression.Gzip if c.compression == "gzip" else grpc.Compression.NoCompression
        )
    # gRPC metadata keys must be lower case.
    headers = {k.lower(): v for k, v in c.headers.items()} if c.headers else None
    insecure, credentials = c.insecure, None
    if _has_tls(c):  # else the SDK reads OTEL_EXPORTER_OTLP_*CERTIFICATE / CLIENT_* itself
        tls = resolve_tls(c)
        insecure = False  # the TLS files mean TLS, whatever OTEL_EXPORTER_OTLP_*INSECURE says
        credentials = grpc.ssl_channel_credentials(
            tls.root_certificates, tls.private_key, tls.certificate_chain
        )
    exporter: SpanExporter = OTLPSpanExporter(
        endpoint=c.endpoint,
        insecure=insecure,
        credentials=credentials,
        headers=headers,
        timeout=c.timeout_s,
        compression=compression,
    )
    return exporter


def _build_http(c: OtlpExportConfig) -> SpanExporter:
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    compression = None
    if c.compression is not None:
        compression = Compression.Gzip if c.compression == "gzip" else Compression.NoCompression
    endpoint = _http_traces_url(c.endpoint) if c.endpoint is not None else None
    tls = OtlpTls()  # none set here: the SDK reads OTEL_EXPORTER_OTLP_*CERTIFICATE / CLIENT_*
    if _has_tls(c):
        url = (
            endpoint
            or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
            or "http://localhost:4318"
        )
        plaintext = None if url.startswith("https://") else f"the endpoint is {url!r}"
        tls = resolve_tls(c, plaintext)
    exporter: SpanExporter = OTLPSpanExporter(
        endpoint=endpoint,
        certificate_file=tls.certificate_file,
        client_key_file=tls.client_key_file,
        client_certificate_file=tls.client_certificate_file,
        headers=dict(c.headers) if c.headers else None,
        timeout=c.timeout_s,
        compression=compression,
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


def _http_traces_url(endpoint: str) -> str:
    parts = urlsplit(endpoint)
    if parts.path in ("", "/"):
        return parts._replace(path=_HTTP_TRACES_PATH).geturl()
    return endpoint


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


# --------------------------------------------------------------------------- file exporter


class OtlpJsonFileExporter(SpanExporter):
    """Append each batch as one OTLP/JSON line to a file, like the Collector's ``file`` exporter.

    Each :meth:`export` call writes one ``ExportTraceServiceRequest`` line and flushes it;
    calls from several threads never interleave. The file is opened (created if missing) in
    the constructor, so a bad path fails at start-up. After :meth:`shutdown`, which closes the
    file and is safe to call twice, :meth:`export` returns ``FAILURE``. Read the lines back
    with :func:`otel_online_eval.otlp_json.decode_request_json`.

    Args:
        path: the file to append to.
        encode: turns a batch into one OTLP/JSON line (a faster encoder may be given; it must
            write what :func:`~otel_online_eval.otlp_json.encode_spans_json` writes).

    Raises:
        OSError: the file cannot be opened for appending.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        encode: Callable[[Sequence[ReadableSpan]], str] = encode_spans_json,
    ) -> None:
        self._path = os.fspath(path)
        self._encode = encode
        self._lock = threading.Lock()
        self._file: IO[bytes] | None = open(self._path, "ab")

    @property
    def path(self) -> str:
        return self._path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._file is None:
            logger.warning("Cannot export to %s: the exporter has been shut down.", self._path)
            return SpanExportResult.FAILURE
        if not spans:
            return SpanExportResult.SUCCESS
        try:
            data = (self._encode(spans) + "\n").encode("utf-8")
        except Exception:
            logger.exception("Cannot encode %d spans as OTLP/JSON.", len(spans))
            return SpanExportResult.FAILURE
        with self._lock:
            if self._file is None:
                logger.warning("Cannot export to %s: the exporter has been shut down.", self._path)
                return SpanExportResult.FAILURE
            try:
                self._file.write(data)
                self._file.flush()
            except (OSError, ValueError):
                logger.exception("Cannot write %d spans to %s.", len(spans), self._path)
                return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        with self._lock:
            if self._file is not None:
                try:
                    self._file.flush()
                except (OSError, ValueError):
                    logger.exception("Cannot flush %s.", self._path)
                    return False
        return True

    def shutdown(self) -> None:
        with self._lock:
            file, self._file = self._file, None
        if file is not None:
            try:
                file.close()
            except OSError:
                logger.exception("Cannot close %s.", self._path)
