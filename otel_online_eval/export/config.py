"""The ``export:`` section: its model, its checks, and its reader.

Eval spans leave through one exporter behind a batching processor. The ``export:`` section picks
exactly one exporter and, optionally, the batching parameters::

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
      phoenix:                   # beside the exporter: each score as a Phoenix span annotation
        endpoint: http://127.0.0.1:6006   # Phoenix's base URL (a path prefix is kept)
        api_key: "${env:PHOENIX_API_KEY}" # optional: Authorization: Bearer <key>
        project: default         # the project the scored spans are in (default "default")
        timeout_s: 10            # per HTTP request
        max_queue_size: 2048     # annotations waiting; more are dropped and counted

Every field left out stays ``None`` here; :mod:`otel_online_eval.export.resolve` fills it from
the standard environment variables (``OTEL_EXPORTER_OTLP_TRACES_*``, then ``OTEL_EXPORTER_OTLP_*``,
and ``OTEL_BSP_*`` for ``batch``), then the SDK's defaults, the same way for the in-process
processor and for the sidecar. So ``export: {otlp: {}}`` is configured entirely by the
environment.

What can be checked without the environment is checked here, at load: types and domains,
endpoint versus protocol, ``insecure`` versus the endpoint's scheme, the TLS files themselves
(readable, PEM, the key matches the certificate:
:func:`~otel_online_eval.export.tls.tls_file_problems`) and that they are not given for a
plaintext connection. A relative path is relative to the
working directory of the process.

``file`` appends one OTLP/JSON ``ExportTraceServiceRequest`` per export call, one a line, as the
Collector's ``file`` exporter writes them (see :mod:`otel_online_eval.otlp_json`).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal
from urllib.parse import SplitResult, urlsplit

from otel_online_eval._validate import Reader
from otel_online_eval.export.tls import TLS_FIELDS, tls_file_problems

__all__ = [
    "COMPRESSIONS",
    "EXPORTER_KINDS",
    "PROTOCOLS",
    "BatchConfig",
    "ConsoleExportConfig",
    "ExportConfig",
    "FileExportConfig",
    "OtlpExportConfig",
    "PhoenixExportConfig",
    "endpoint_problem",
    "header_value_problem",
    "read_export_config",
    "read_otlp_config",
    "unknown_value",
]

OtlpProtocol = Literal["grpc", "http/protobuf"]
OtlpCompression = Literal["gzip", "none"]

PROTOCOLS: tuple[str, ...] = ("grpc", "http/protobuf")
"""The OTLP transports an ``otlp`` exporter can use."""
COMPRESSIONS: tuple[str, ...] = ("gzip", "none")
"""The values of ``otlp.compression``."""
EXPORTER_KINDS: tuple[str, ...] = ("otlp", "console", "file")
"""The keys of ``export:`` that choose an exporter; exactly one is set."""

# An HTTP header name is a token (RFC 9110 section 5.6.2); gRPC metadata keys are a subset.
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_HOST_PORT = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[^\s/:\[\]@]+):[0-9]{1,5}")


# --------------------------------------------------------------------------- config model


@dataclass(frozen=True, slots=True)
class OtlpExportConfig:
    """An OTLP exporter. Every field left ``None`` is resolved from the environment, then the
    SDK's default, by :func:`~otel_online_eval.export.resolve.resolve_otlp`, for both doors.

    Attributes:
        protocol: ``grpc`` or ``http/protobuf``; else ``OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL``,
            else ``grpc``.
        endpoint: gRPC: ``host:port`` (TLS unless ``insecure``, as in the SDK) or
            ``http(s)://host:port`` (the scheme decides TLS when ``insecure`` is unset). HTTP:
            an ``http(s)://`` URL; with no path, ``/v1/traces`` is appended.
        headers: sent with every export; names are lower-cased. An empty mapping counts as
            unset. gRPC: they replace the environment's headers; HTTP: the environment's
            headers are sent too, these win for the same name (both as the SDK exporters do).
        insecure: gRPC only; ``True`` for a plaintext connection.
        compression: ``gzip`` or ``none``.
        timeout_s: the time one export may take, retries included; > 0.
        certificate_file: a PEM CA bundle to verify the server with, instead of the system's
            roots.
        client_certificate_file: a PEM client certificate (chain) for mutual TLS; needs
            ``client_key_file``.
        client_key_file: the PEM private key (unencrypted) of ``client_certificate_file``.

    The TLS files need TLS: not with ``insecure: true`` or an ``http://`` endpoint; with
    ``insecure`` unset they make a gRPC connection use TLS.

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
class PhoenixExportConfig:
    """Write each score as an Arize Phoenix span annotation on the scored span, beside the eval
    spans (which still go through the exporter); see :mod:`otel_online_eval.sinks.phoenix`.

    Attributes:
        endpoint: Phoenix's base URL, ``http(s)://host[:port][/prefix]``; annotations are
            POSTed to ``<endpoint>/v1/span_annotations``.
        api_key: sent as ``Authorization: Bearer <api_key>``; None (or empty in YAML) for a
            Phoenix without auth.
        project: the Phoenix project the scored spans are in (Phoenix keys an annotation by
            span id alone; the project is named in logs and in the links to look at).
        timeout_s: the longest one HTTP request may take.
        max_queue_size: annotations waiting to be sent; more are dropped and counted.
    """

    endpoint: str
    api_key: str | None = None
    project: str = "default"
    timeout_s: float = 10.0
    max_queue_size: int = 2048

    def __post_init__(self) -> None:
        problems = _phoenix_problems(**_fields(self))
        if problems:
            raise ValueError("; ".join(f"phoenix.{key}: {msg}" for key, msg in problems))


@dataclass(frozen=True, slots=True)
class BatchConfig:
    """The batching in front of the exporter (the SDK's ``BatchSpanProcessor`` parameters,
    with the same meaning in the sidecar). Each field left ``None`` is resolved from
    ``OTEL_BSP_*``, then the SDK's default, by
    :func:`~otel_online_eval.export.resolve.resolve_batch`.

    Attributes:
        max_queue_size: eval spans held while waiting for export; more are dropped and
            counted (default 2048).
        schedule_delay_ms: the longest a span waits for its batch to fill (default 5000).
        max_export_batch_size: spans per export call, at most ``max_queue_size``; a full
            batch is exported without waiting (default 512).
        export_timeout_ms: read and checked, but, as in the SDK, not used: the exporter's own
            ``timeout_s`` bounds an export (default 30000).
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
    """The ``export:`` section: one exporter (``otlp``, ``console`` or ``file``), batching, and
    optionally ``phoenix``, where scores also go as span annotations (not an exporter: it sits
    beside the one chosen).

    With no exporter given, ``otlp`` is chosen with every field unset, i.e. the standard OTLP
    environment variables decide: ``ExportConfig()`` is "export like the SDK would".

    Raises:
        ValueError: more than one exporter is set.
    """

    otlp: OtlpExportConfig | None = None
    console: ConsoleExportConfig | None = None
    file: FileExportConfig | None = None
    batch: BatchConfig = field(default_factory=BatchConfig)
    phoenix: PhoenixExportConfig | None = None

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


def endpoint_problem(endpoint: str, protocol: str | None) -> str | None:
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
    if (problem := _host_port_problem(parts, endpoint)) is not None:
        return problem
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
    share it. Files are not looked at here (see :func:`tls_file_problems`)."""
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
        out.append(("protocol", unknown_value(protocol, PROTOCOLS)))
        protocol = None
    if endpoint is not None:
        problem = (
            endpoint_problem(endpoint, protocol)
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
        out.append(("compression", unknown_value(compression, COMPRESSIONS)))
    if timeout_s is not None and not _positive(timeout_s):
        out.append(("timeout_s", f"must be a number greater than 0, got {timeout_s!r}"))
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
        elif problem := header_value_problem(value):
            out.append(f"header {name!r} {problem}")
    return out


def header_value_problem(value: str) -> str | None:
    """What makes ``value`` unsendable as a header value, or None."""
    if any(ch in value for ch in "\r\n\0"):
        return "must not contain a line break or NUL"
    return None


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


def _phoenix_problems(
    endpoint: Any = None,
    api_key: Any = None,
    project: Any = "default",
    timeout_s: Any = 10.0,
    max_queue_size: Any = 2048,
) -> list[tuple[str, str]]:
    """(field, message) for every problem of a ``phoenix:`` config (reader and dataclass)."""
    out: list[tuple[str, str]] = []
    if not isinstance(endpoint, str):
        out.append(("endpoint", f"must be a string, got {endpoint!r}"))
    elif problem := _phoenix_endpoint_problem(endpoint):
        out.append(("endpoint", problem))
    if api_key is not None:
        if not isinstance(api_key, str) or not api_key.strip():
            out.append(("api_key", "must be a non-empty string when given"))
        elif problem := header_value_problem(api_key):
            out.append(("api_key", problem))
    if not isinstance(project, str) or not project.strip():
        out.append(("project", f"must be a non-empty string, got {project!r}"))
    elif any(ch in project for ch in "/?#"):
        out.append(("project", f"must not contain '/', '?' or '#', got {project!r}"))
    if not _positive(timeout_s):
        out.append(("timeout_s", f"must be a number greater than 0, got {timeout_s!r}"))
    if (
        isinstance(max_queue_size, bool)
        or not isinstance(max_queue_size, int)
        or max_queue_size < 1
    ):
        out.append(
            ("max_queue_size", f"must be a whole number greater than 0, got {max_queue_size!r}")
        )
    return out


def _host_port_problem(parts: SplitResult, endpoint: str) -> str | None:
    """What is wrong with a URL's port or host, if anything."""
    try:
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return f"has an invalid port: {endpoint!r}"
    if not parts.hostname:
        return f"has no host: {endpoint!r}"
    return None


def _phoenix_endpoint_problem(endpoint: str) -> str | None:
    parts = urlsplit(endpoint.strip())
    if parts.scheme not in ("http", "https"):
        return f"must be an http:// or https:// URL (like http://127.0.0.1:6006), got {endpoint!r}"
    if (problem := _host_port_problem(parts, endpoint)) is not None:
        return problem
    if parts.query or parts.fragment or parts.username or parts.password:
        return f"must be a base URL without query, fragment or credentials, got {endpoint!r}"
    if parts.path.rstrip("/").endswith("/v1/span_annotations"):
        return f"is Phoenix's base URL, without /v1/span_annotations; got {endpoint!r}"
    return None


def _positive(value: Any) -> bool:
    return (
        not isinstance(value, bool)
        and isinstance(value, (int, float))
        and value > 0
        and value != float("inf")
    )


def unknown_value(value: object, allowed: Sequence[str]) -> str:
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
    phoenix_reader = r.sub("phoenix")
    phoenix = (
        _read_phoenix(phoenix_reader)
        if r.has("phoenix") and (phoenix_reader.ok or r.raw("phoenix") is None)
        else None
    )
    for kind in EXPORTER_KINDS:  # known keys, for the unknown-key hint
        r.raw(kind)
    r.done()
    if len(r.issues.items) > before:
        return None
    assert batch is not None
    return ExportConfig(otlp=otlp, console=console, file=file, batch=batch, phoenix=phoenix)


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
    tls = {key: r.str(key) for key in TLS_FIELDS}
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
    for key, message in tls_file_problems(files):
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


def _read_phoenix(r: Reader) -> PhoenixExportConfig | None:
    before = len(r.issues.items)
    endpoint = r.str("endpoint", required=True)
    values: dict[str, Any] = {
        "endpoint": endpoint,
        # Empty (``${env:PHOENIX_API_KEY:-}`` with the variable unset) means no key.
        "api_key": r.str("api_key") or None,
        "project": r.str("project", "default"),
        "timeout_s": r.number("timeout_s", 10.0),
        "max_queue_size": r.number("max_queue_size", 2048, integer=True),
    }
    r.done()
    for key, message in _phoenix_problems(**values):
        if key != "endpoint" or endpoint is not None:  # a missing endpoint is already an issue
            r.error(key, message)
    if len(r.issues.items) > before:
        return None
    return PhoenixExportConfig(**values)


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
