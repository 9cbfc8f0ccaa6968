"""One meaning of ``export: otlp`` for both doors: where eval spans go, with which headers, TLS,
timeout, compression and batching.

The in-process processor hands what this resolves to the SDK's exporters; the sidecar hands the
same to its own senders and emitter. Each setting is taken from the first of: the config's
value; ``OTEL_EXPORTER_OTLP_TRACES_<X>``; ``OTEL_EXPORTER_OTLP_<X>``; the SDK's default (the
variable names are the SDK's own constants, from ``opentelemetry.sdk.environment_variables``).
An empty variable counts as unset. The rules are the SDK exporters' (OTLP gRPC and HTTP,
``opentelemetry-exporter-otlp-proto-*`` 1.45):

- **protocol**: ``OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL``, default ``grpc``.
- **gRPC endpoint**: default ``http://localhost:4317``; the channel dials ``host:port``. It is
  plaintext when ``insecure`` (config, then ``OTEL_EXPORTER_OTLP_TRACES_INSECURE``) is true,
  never for an ``https://`` endpoint, else when ``OTEL_EXPORTER_OTLP_INSECURE`` is true or the
  endpoint is ``http://``: a bare ``host:port`` uses TLS, as in the SDK. TLS files in the config
  mean TLS.
- **HTTP endpoint**: the config's URL (``/v1/traces`` appended when it has no path);
  ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` as it is; ``OTEL_EXPORTER_OTLP_ENDPOINT`` with
  ``/v1/traces`` appended; default ``http://localhost:4318/v1/traces``. TLS for ``https://``.
- **headers**: the variables are parsed by the SDK's own parser
  (``opentelemetry.util.re.parse_env_headers(..., liberal=True)``), which URL-decodes them
  (``authorization=Bearer%20x`` sends ``Bearer x``); names are lower-cased. gRPC: the config's
  headers replace the environment's; HTTP: both are sent, the config's winning for a name.
- **timeout**: seconds (the Python SDK reads ``OTEL_EXPORTER_OTLP_TIMEOUT`` in seconds), default 10.
- **compression**: ``gzip`` or ``none``, default ``none``.
- **TLS files**: each of ``certificate_file``, ``client_certificate_file``, ``client_key_file``
  from ``OTEL_EXPORTER_OTLP_[TRACES_]CERTIFICATE`` / ``CLIENT_CERTIFICATE`` / ``CLIENT_KEY``;
  the environment's are ignored for a plaintext connection.
- **batching**: ``export.batch.*``, then ``OTEL_BSP_MAX_QUEUE_SIZE``, ``OTEL_BSP_SCHEDULE_DELAY``,
  ``OTEL_BSP_MAX_EXPORT_BATCH_SIZE``, ``OTEL_BSP_EXPORT_TIMEOUT`` (whole numbers; ms), then
  2048 spans, 5000 ms, 512 spans, 30000 ms.

**Logs** (``signal="logs"``: the sidecar forwards log requests and exports evaluation results
as log records over the same connection): every ``TRACES_`` variable above is read as
``LOGS_``, and the HTTP URL ends in ``/v1/logs``; a config URL ending in ``/v1/traces`` has
that suffix swapped, and one with another path is an error (its logs URL is unknown).

Where the SDK logs a bad value and goes on with its default (a timeout or an ``OTEL_BSP_*``
value that is not a number, an unknown compression, a header entry it cannot parse) or reads it
as false (an ``INSECURE`` that is neither ``true`` nor ``false``), this raises a
:class:`~otel_online_eval.ConfigError` that names the variable and its value.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar
from urllib.parse import urlsplit

from opentelemetry.sdk.environment_variables import (
    OTEL_BSP_EXPORT_TIMEOUT,
    OTEL_BSP_MAX_EXPORT_BATCH_SIZE,
    OTEL_BSP_MAX_QUEUE_SIZE,
    OTEL_BSP_SCHEDULE_DELAY,
)
from opentelemetry.util.re import parse_env_headers

from otel_online_eval._errors import ConfigError, ConfigIssue
from otel_online_eval.export.config import (
    COMPRESSIONS,
    PROTOCOLS,
    BatchConfig,
    OtlpExportConfig,
    endpoint_problem,
    header_value_problem,
    unknown_value,
)
from otel_online_eval.export.tls import TLS_FIELDS, OtlpTls, tls_file_problems

__all__ = [
    "DEFAULT_BATCH",
    "BatchSettings",
    "OtlpTarget",
    "Signal",
    "parse_headers",
    "resolve_batch",
    "resolve_otlp",
    "resolve_protocol",
    "resolve_tls",
]

Protocol = Literal["grpc", "http/protobuf"]
Signal = Literal["traces", "logs"]
T = TypeVar("T")
Env = Mapping[str, str]

_GRPC_DEFAULT = "http://localhost:4317"
_HTTP_DEFAULT = "http://localhost:4318"
_DEFAULT_TIMEOUT_S = 10.0

_SIGNAL_PATHS = {"traces": "/v1/traces", "logs": "/v1/logs"}
_TLS_KEYS = {
    "certificate_file": "CERTIFICATE",
    "client_certificate_file": "CLIENT_CERTIFICATE",
    "client_key_file": "CLIENT_KEY",
}


def _vars(signal: Signal, key: str) -> tuple[str, str]:
    """(the signal's variable, the general one) for a setting, e.g. ``ENDPOINT``: the SDK's
    names, ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` and ``OTEL_EXPORTER_OTLP_ENDPOINT``."""
    return f"OTEL_EXPORTER_OTLP_{signal.upper()}_{key}", f"OTEL_EXPORTER_OTLP_{key}"


_BATCH_ENV = {
    "max_queue_size": OTEL_BSP_MAX_QUEUE_SIZE,
    "schedule_delay_ms": OTEL_BSP_SCHEDULE_DELAY,
    "max_export_batch_size": OTEL_BSP_MAX_EXPORT_BATCH_SIZE,
    "export_timeout_ms": OTEL_BSP_EXPORT_TIMEOUT,
}


@dataclass(frozen=True, slots=True)
class OtlpTarget:
    """An OTLP connection with everything resolved.

    Attributes:
        protocol: ``grpc`` or ``http/protobuf``.
        endpoint: gRPC: the ``host:port`` the channel dials; HTTP: the URL posted to.
        headers: (lower-case name, value) pairs sent with every export.
        insecure: plaintext (gRPC ``insecure``, or an ``http://`` URL).
        compression: ``gzip``, or None for none.
        timeout_s: the time one export may take.
        tls: the TLS client files, read (empty for a plaintext connection).
    """

    protocol: str
    endpoint: str
    headers: tuple[tuple[str, str], ...]
    insecure: bool
    compression: str | None
    timeout_s: float
    tls: OtlpTls = field(default_factory=OtlpTls)


@dataclass(frozen=True, slots=True)
class BatchSettings:
    """The batching of eval spans, resolved; the same meaning in both doors.

    Attributes:
        max_queue_size: spans waiting for export at most; more are dropped and counted.
        schedule_delay_ms: the longest a span waits for its batch to fill.
        max_export_batch_size: spans per export; a full batch goes without waiting.
        export_timeout_ms: resolved and checked; unused, as in the SDK's processor (an
            export is bounded by the exporter's ``timeout_s``).
    """

    max_queue_size: int
    schedule_delay_ms: float
    max_export_batch_size: int
    export_timeout_ms: float


DEFAULT_BATCH = BatchSettings(2048, 5000, 512, 30000)
"""The SDK's ``BatchSpanProcessor`` defaults (a test holds them to the SDK's)."""


def _first(env: Env, names: tuple[str, ...]) -> tuple[str, str] | None:
    """(name, stripped value) of the first of ``names`` set to something, or None."""
    for name in names:
        value = env.get(name, "").strip()
        if value:
            return name, value
    return None


def _error(path: str, message: str) -> ConfigError:
    return ConfigError([ConfigIssue(path, message)])


def resolve_protocol(
    cfg: OtlpExportConfig,
    environ: Env | None = None,
    path: str = "export.otlp",
    signal: Signal = "traces",
) -> Protocol:
    """The protocol ``cfg`` exports with: its own, else the environment's, else ``grpc``.

    Raises:
        ConfigError: the environment names a protocol this package does not support.
    """
    if cfg.protocol is not None:
        return cfg.protocol
    found = _first(os.environ if environ is None else environ, _vars(signal, "PROTOCOL"))
    if found is None:
        return "grpc"
    name, value = found
    value = value.lower()
    if value == "grpc":
        return "grpc"
    if value == "http/protobuf":
        return "http/protobuf"
    raise _error(f"{path}.protocol", f"{name}={value!r}: " + unknown_value(value, PROTOCOLS))


def resolve_otlp(
    cfg: OtlpExportConfig,
    environ: Env | None = None,
    path: str = "export.otlp",
    signal: Signal = "traces",
) -> OtlpTarget:
    """Resolve an ``otlp:`` config (export or forward) as the SDK exporters do, environment
    included, and read its TLS client files.

    Args:
        cfg: the ``otlp:`` config.
        environ: the environment (``os.environ`` when None).
        path: the config path errors are reported under.
        signal: ``traces``, or ``logs`` for the same connection's logs endpoint: the
            ``OTEL_EXPORTER_OTLP_LOGS_*`` variables, and an HTTP URL ending ``/v1/logs``
            (a config URL ending ``/v1/traces`` has that suffix swapped).

    Raises:
        ConfigError: a bad ``OTEL_EXPORTER_OTLP_*`` value (named with its variable), an
            endpoint that does not suit the protocol, ``insecure`` against the endpoint's
            scheme, a TLS file that cannot serve or TLS files for a plaintext connection.
    """
    env = os.environ if environ is None else environ
    issues: list[ConfigIssue] = []

    def attempt(resolve: Callable[[], T]) -> T | None:
        try:
            return resolve()
        except ConfigError as exc:  # go on: every problem is reported at once
            issues.extend(exc.issues)
            return None

    compression = attempt(lambda: _compression(cfg, env, path, signal))
    timeout_s = attempt(lambda: _timeout(cfg, env, path, signal))
    protocol = attempt(lambda: resolve_protocol(cfg, env, path, signal))
    headers, where, tls = None, None, None
    if protocol is not None:
        headers = attempt(lambda: _headers(cfg, env, protocol, path, signal))
        where = attempt(lambda: _where(cfg, env, protocol, path, signal))
        tls = attempt(lambda: resolve_tls(cfg, where[2], env, path, signal)) if where else None
    if issues:
        raise ConfigError(issues)
    assert protocol is not None and where is not None and headers is not None
    assert timeout_s is not None and tls is not None
    return OtlpTarget(protocol, where[0], headers, where[1], compression, timeout_s, tls)


def _where(
    cfg: OtlpExportConfig, env: Env, protocol: str, path: str, signal: Signal
) -> tuple[str, bool, str | None]:
    """(endpoint, insecure, why it is plaintext or None)."""
    if protocol == "grpc":
        return _grpc_endpoint(cfg, env, path, signal)
    endpoint = _http_endpoint(cfg, env, path, signal)
    insecure = not endpoint.startswith("https://")
    return endpoint, insecure, f"the endpoint is {endpoint!r}" if insecure else None


def _endpoint_value(
    cfg: OtlpExportConfig, env: Env, protocol: str, path: str, signal: Signal
) -> tuple[str, str | None]:
    """(the endpoint, the variable it came from or None), checked for ``protocol``."""
    if cfg.endpoint is not None:
        problem = endpoint_problem(cfg.endpoint, protocol)
        if problem:
            raise _error(
                f"{path}.endpoint",
                f"{problem} (protocol {protocol}, from the environment or the default)",
            )
        return cfg.endpoint, None
    for name in _vars(signal, "ENDPOINT"):
        value = env.get(name, "").strip()
        if value:
            problem = endpoint_problem(value, protocol)
            if problem:
                raise _error(f"{path}.endpoint", f"{name}: {problem} (protocol {protocol})")
            return value, name
    return (_GRPC_DEFAULT if protocol == "grpc" else _HTTP_DEFAULT), None


def _grpc_endpoint(
    cfg: OtlpExportConfig, env: Env, path: str, signal: Signal
) -> tuple[str, bool, str | None]:
    """(host:port, insecure, why it is plaintext or None) for gRPC, in the SDK's order."""
    endpoint, source = _endpoint_value(cfg, env, "grpc", path, signal)
    own_insecure, any_insecure = _vars(signal, "INSECURE")
    scheme = urlsplit(endpoint).scheme if "://" in endpoint else ""
    insecure, why = cfg.insecure, "insecure is true"
    if insecure is not None and source is not None and scheme:
        if (scheme == "https" and insecure) or (scheme == "http" and not insecure):
            raise _error(
                f"{path}.insecure", f"{str(insecure).lower()} contradicts {source}={endpoint!r}"
            )
    if insecure is None and any(getattr(cfg, key) is not None for key in TLS_FIELDS):
        insecure = False  # the config's TLS files mean TLS
    if insecure is None:
        insecure = _env_bool(env, own_insecure, path)
        why = f"{own_insecure} is true"
    if scheme == "https":
        insecure = False  # https:// is TLS, whatever INSECURE says (as the SDK)
    if insecure is None:
        insecure = _env_bool(env, any_insecure, path)
        why = f"{any_insecure} is true"
    if insecure is None:
        insecure = scheme == "http"  # and a bare host:port is TLS (as the SDK)
        why = f"the endpoint is {endpoint!r}"
    if scheme:
        endpoint = urlsplit(endpoint).netloc
    return endpoint, insecure, why if insecure else None


def _http_endpoint(cfg: OtlpExportConfig, env: Env, path: str, signal: Signal) -> str:
    endpoint, source = _endpoint_value(cfg, env, "http/protobuf", path, signal)
    own = _SIGNAL_PATHS[signal]
    if source == _vars(signal, "ENDPOINT")[0]:
        return endpoint  # the signal's own URL, as it is
    if cfg.endpoint is None:  # OTEL_EXPORTER_OTLP_ENDPOINT or the default: a base URL
        return endpoint.removesuffix("/") + own
    parts = urlsplit(endpoint)
    if parts.path in ("", "/"):  # the config's URL without a path, as the Collector does
        return parts._replace(path=own).geturl()
    if signal == "traces":
        return endpoint
    # The config names the traces URL; the logs one is its sibling.
    traces = _SIGNAL_PATHS["traces"]
    if parts.path.rstrip("/").endswith(traces):
        return parts._replace(path=parts.path.rstrip("/")[: -len(traces)] + own).geturl()
    raise _error(
        f"{path}.endpoint",
        f"{endpoint!r} has a path that does not end in {traces}, so its {signal} URL is "
        f"unknown; set {_vars(signal, 'ENDPOINT')[0]} or give a URL without a path",
    )


def _env_bool(env: Env, name: str, path: str) -> bool | None:
    value = env.get(name, "").strip().lower()
    if not value:
        return None
    if value not in ("true", "false"):
        raise _error(f"{path}.insecure", f"{name}={value!r}: must be true or false")
    return value == "true"


def _headers(
    cfg: OtlpExportConfig, env: Env, protocol: str, path: str, signal: Signal
) -> tuple[tuple[str, str], ...]:
    own = {name.lower(): value for name, value in (cfg.headers or {}).items()}
    if own and protocol == "grpc":
        return tuple(own.items())  # the gRPC exporter: the config's replace the environment's
    found = _first(env, _vars(signal, "HEADERS"))
    headers = parse_headers(found[1], found[0], f"{path}.headers") if found else {}
    headers.update(own)  # the HTTP exporter: both, the config's winning
    return tuple(headers.items())


def parse_headers(text: str, name: str, path: str) -> dict[str, str]:
    """``OTEL_EXPORTER_OTLP_*HEADERS`` text as the SDK reads it: ``name=value`` entries split at
    commas, each parsed with the SDK's parser (URL-decoded, the name lower-cased).

    Raises:
        ConfigError: an entry the SDK's parser cannot read (it would log and skip it), or a
            value that decodes to a line break or NUL.
    """
    out: dict[str, str] = {}
    problems: list[str] = []
    for entry in text.split(","):  # a header value holds no comma, raw or in liberal mode
        entry = entry.strip(" \t")
        if not entry:
            continue
        parsed = parse_env_headers(entry, liberal=True)
        if not parsed:
            problems.append(f"cannot read {entry!r}; expected name=value (URL-encoded)")
            continue
        for key, value in parsed.items():
            problem = header_value_problem(value)
            if problem:
                problems.append(f"header {key!r} {problem}")
            out[key] = value
    if problems:
        raise ConfigError([ConfigIssue(path, f"{name}: {p}") for p in problems])
    return out


def _compression(cfg: OtlpExportConfig, env: Env, path: str, signal: Signal) -> str | None:
    value: str | None = cfg.compression
    if value is None:
        found = _first(env, _vars(signal, "COMPRESSION"))
        if found is not None:
            name, value = found[0], found[1].lower()
            if value not in COMPRESSIONS:
                raise _error(
                    f"{path}.compression",
                    f"{name}={value!r}: " + unknown_value(value, COMPRESSIONS),
                )
    return None if value in (None, "none") else value


def _timeout(cfg: OtlpExportConfig, env: Env, path: str, signal: Signal) -> float:
    if cfg.timeout_s is not None:
        return float(cfg.timeout_s)
    found = _first(env, _vars(signal, "TIMEOUT"))
    if found is None:
        return _DEFAULT_TIMEOUT_S
    name, raw = found
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (value > 0 and math.isfinite(value)):
        raise _error(
            f"{path}.timeout_s", f"{name}={raw!r}: must be a number of seconds greater than 0"
        )
    return value


def resolve_tls(
    cfg: OtlpExportConfig,
    plaintext: str | None = None,
    environ: Env | None = None,
    path: str = "export.otlp",
    signal: Signal = "traces",
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
        given = [key for key in TLS_FIELDS if getattr(cfg, key) is not None]
        if given:
            message = f"is set, but the connection is plaintext: {plaintext}"
            raise ConfigError([ConfigIssue(f"{path}.{key}", message) for key in given])
        return OtlpTls()
    env = os.environ if environ is None else environ
    files: dict[str, str] = {}
    source: dict[str, str] = {}
    for key in TLS_FIELDS:
        value = getattr(cfg, key)
        if value is not None:
            files[key] = value
            continue
        found = _first(env, _vars(signal, _TLS_KEYS[key]))
        if found is not None:
            files[key], source[key] = found[1], f"{found[0]}: "
    problems = tls_file_problems(files)
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
        raise _error(path, f"cannot read {exc.filename!r}: {exc.strerror}") from exc


def resolve_batch(
    cfg: BatchConfig | None = None, environ: Env | None = None, path: str = "export.batch"
) -> BatchSettings:
    """The batching of eval spans: ``cfg``'s values, else ``OTEL_BSP_*``, else the SDK's
    defaults (:data:`DEFAULT_BATCH`).

    Raises:
        ConfigError: an ``OTEL_BSP_*`` value that is not a whole number greater than 0 (the
            SDK logs it and uses its default), or a batch size above the queue size.
    """
    cfg = BatchConfig() if cfg is None else cfg
    env = os.environ if environ is None else environ
    values: dict[str, float] = {}
    source: dict[str, str] = {}
    issues: list[ConfigIssue] = []
    for key, name in _BATCH_ENV.items():
        own = getattr(cfg, key)
        raw = env.get(name, "").strip()
        if own is not None:
            values[key], source[key] = own, "the config"
        elif raw:
            # The SDK reads these with int(): "1.5" and "1e3" are not values there either.
            value = int(raw) if raw.lstrip("+").isdecimal() and raw.isascii() else 0
            if value <= 0:
                issues.append(
                    ConfigIssue(
                        f"{path}.{key}", f"{name}={raw!r}: must be a whole number greater than 0"
                    )
                )
            values[key], source[key] = value, name
        else:
            values[key], source[key] = getattr(DEFAULT_BATCH, key), "the default"
    if issues:
        raise ConfigError(issues)
    size, queue = values["max_export_batch_size"], values["max_queue_size"]
    if size > queue:
        raise _error(
            f"{path}.max_export_batch_size",
            f"{size:g} (from {source['max_export_batch_size']}) must be at most max_queue_size "
            f"{queue:g} (from {source['max_queue_size']})",
        )
    return BatchSettings(
        int(queue),
        float(values["schedule_delay_ms"]),
        int(size),
        float(values["export_timeout_ms"]),
    )
