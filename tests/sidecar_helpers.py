"""Helpers for the sidecar tests: run ``otel-online-eval serve`` as a subprocess on free loopback
ports, wait for it, scrape it, stop it; build configs, spans and raw OTLP requests; a raw-bytes
OTLP/gRPC receiver that records exactly the bytes it was sent.

Every wait here is bounded in time, every subprocess is killed in a ``finally``, and only
127.0.0.1 is ever a network target::

    with running_sidecar(tmp_path, sidecar_config(export=export_to(rx))) as sc:
        send_grpc(sc.grpc_endpoint, request_bytes)
        assert sc.metrics().value("otlp_receiver_spans_total", result="accepted") == 3
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
import requests
import yaml
from google.rpc.error_details_pb2 import RetryInfo
from google.rpc.status_pb2 import Status as RpcStatus
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from tests.otlp_receiver import OtlpGrpcReceiver, OtlpHttpReceiver, ReceivedSpan, attrs

__all__ = [
    "EXPORT_METHOD",
    "HOST",
    "ROOT",
    "Metrics",
    "RawAnswer",
    "RawGrpcReceiver",
    "Sidecar",
    "TraceSpans",
    "answer_attrs",
    "eval_spans",
    "eventually",
    "export_to",
    "forward_to",
    "free_port",
    "free_ports",
    "grpc_health",
    "make_trace",
    "post_http",
    "raw_connection",
    "raw_http",
    "read_answer",
    "request_bytes",
    "retry_info",
    "running_sidecar",
    "send_grpc",
    "sidecar_config",
    "slow_score",
    "start_sidecar",
    "stuck_score",
    "thread_count",
    "wait_until",
    "write_config",
]

HOST = "127.0.0.1"
EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
ROOT = Path(__file__).parent.parent
T = TypeVar("T")


# --------------------------------------------------------------------------- ports, waiting


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports that were free a moment ago (all bound at once, then released)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port() -> int:
    return free_ports(1)[0]


def wait_until(
    predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05, what: str = ""
) -> Any:
    """Poll ``predicate`` until it returns something truthy, and return that.

    Raises:
        AssertionError: not within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


def eventually(check: Callable[[], T], timeout: float = 10.0, interval: float = 0.05) -> T:
    """Run ``check`` until it stops raising AssertionError, and return what it returned; the
    last AssertionError after ``timeout``. For counters that settle a moment after the data
    they count has arrived."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() >= deadline:
                raise
        time.sleep(interval)


# --------------------------------------------------------------------------- spans and requests


def answer_attrs(text: str, model: str = "gpt-test") -> dict[str, Any]:
    """GenAI (current semconv) attributes of a chat call that answered ``text``."""
    return {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": model,
        "gen_ai.input.messages": json.dumps(
            [{"role": "user", "parts": [{"type": "text", "content": "where is my parcel?"}]}]
        ),
        "gen_ai.output.messages": json.dumps(
            [{"role": "assistant", "parts": [{"type": "text", "content": text}]}]
        ),
        "gen_ai.usage.input_tokens": 12,
        "gen_ai.usage.output_tokens": 3,
    }


@dataclass
class TraceSpans:
    """Spans of one trace, ended, as the SDK hands them to exporters."""

    spans: list[ReadableSpan]

    @property
    def trace_id(self) -> int:
        ctx = self.spans[0].context
        assert ctx is not None
        return int(ctx.trace_id)

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.spans if s.name == name]

    def ids(self, name: str | None = None) -> set[int]:
        out = set()
        for s in self.spans:
            if (name is None or s.name == name) and s.context is not None:
                out.add(s.context.span_id)
        return out


def make_trace(
    service: str = "app",
    answers: Sequence[str] = ("billing", "weather"),
    *,
    scope: str = "tests.app",
    extra_resource: Mapping[str, Any] | None = None,
    chat_attrs: Mapping[str, Any] | None = None,
) -> TraceSpans:
    """A ``POST /support`` root with one ``chat`` child per answer, from a real SDK provider."""
    exporter = InMemorySpanExporter()
    resource = Resource.create({"service.name": service, **(extra_resource or {})})
    provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer(scope, "1.0")
    with tracer.start_as_current_span("POST /support", kind=SpanKind.SERVER):
        for text in answers:
            with tracer.start_as_current_span(
                "chat",
                kind=SpanKind.CLIENT,
                attributes={**answer_attrs(text), **(chat_attrs or {})},
            ):
                pass
    provider.shutdown()
    return TraceSpans(list(exporter.get_finished_spans()))


def request_bytes(spans: Sequence[ReadableSpan]) -> bytes:
    """The ``ExportTraceServiceRequest`` the SDK's OTLP exporters send for ``spans``, serialized."""
    body: bytes = encode_spans(spans).SerializeToString()
    return body


def eval_spans(received: Sequence[ReceivedSpan], trace_id: int | None = None) -> list[ReceivedSpan]:
    """The ``eval ...`` spans among ``received`` (of one trace when ``trace_id`` is given)."""
    return [
        r
        for r in received
        if r[2].name.startswith("eval ")
        and (trace_id is None or int.from_bytes(r[2].trace_id, "big") == trace_id)
    ]


async def slow_score(inp: Any) -> float:
    """A ``python`` scorer (``ref: "tests.sidecar_helpers:slow_score"``) that takes 20 ms, so
    evaluations are in flight when a test signals the sidecar."""
    await asyncio.sleep(0.02)
    return 1.0


async def stuck_score(inp: Any) -> float:
    """A ``python`` scorer that takes 30 s: still running when the drain timeout ends."""
    await asyncio.sleep(30)
    return 1.0


# --------------------------------------------------------------------------- configs


def export_to(
    rx: OtlpGrpcReceiver | OtlpHttpReceiver,
    delay_ms: int = 50,
    *,
    tls: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """An ``export:`` section sending eval spans to a test receiver; ``tls`` adds TLS client
    keys (``certificate_file``...) for a receiver started with TLS, instead of ``insecure``."""
    if isinstance(rx, OtlpHttpReceiver):
        otlp: dict[str, Any] = {"protocol": "http/protobuf", "endpoint": rx.base_url}
    else:
        otlp = {"protocol": "grpc", "endpoint": rx.endpoint}
        if tls is None:
            otlp["insecure"] = True
    otlp.update(tls or {})
    return {"otlp": otlp, "batch": {"schedule_delay_ms": delay_ms}}


def forward_to(
    endpoint: str,
    protocol: str = "grpc",
    *,
    max_bytes: int | None = None,
    initial_backoff_s: float = 0.05,
    max_backoff_s: float = 0.2,
    max_elapsed_s: float = 30.0,
    compression: str | None = None,
    tls: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A ``forward:`` section with short retries (``endpoint`` host:port, or a URL for http);
    ``tls`` adds TLS client keys (``certificate_file``...), instead of ``insecure`` for grpc."""
    otlp: dict[str, Any] = {"protocol": protocol, "endpoint": endpoint, **(tls or {})}
    if compression is not None:
        otlp["compression"] = compression
    if protocol == "grpc" and tls is None:
        otlp["insecure"] = True
    out: dict[str, Any] = {
        "otlp": otlp,
        "retry": {
            "initial_backoff_s": initial_backoff_s,
            "max_backoff_s": max_backoff_s,
            "max_elapsed_s": max_elapsed_s,
        },
    }
    if max_bytes is not None:
        out["queue"] = {"max_bytes": max_bytes}
    return out


DEFAULT_SCORERS: dict[str, Any] = {
    "nonempty": {"type": "not_empty"},
    "category": {"type": "one_of", "values": ["billing", "shipping"]},
}
DEFAULT_RULES: list[dict[str, Any]] = [
    {
        "name": "chat-quality",
        "apply_to": {"span_names": ["chat"]},
        "filter": "output IS NOT NULL",
        "scorers": ["nonempty", "category"],
    }
]


def sidecar_config(
    grpc_port: int | None = None,
    http_port: int | None = None,
    *,
    export: Mapping[str, Any] | None = None,
    forward: Mapping[str, Any] | None = None,
    receiver: Mapping[str, Any] | None = None,
    grpc: Mapping[str, Any] | None = None,
    http: Mapping[str, Any] | None = None,
    rules: Sequence[Mapping[str, Any]] | None = None,
    scorers: Mapping[str, Any] | None = None,
    drain_timeout_s: float = 5.0,
) -> dict[str, Any]:
    """A sidecar config: free ports unless given, the default rule, console export unless given.

    ``grpc`` / ``http`` add keys to those receivers; ``receiver`` adds keys to ``receiver:``.
    """
    if grpc_port is None or http_port is None:
        g, h = free_ports(2)
        grpc_port = g if grpc_port is None else grpc_port
        http_port = h if http_port is None else http_port
    config: dict[str, Any] = {
        "receiver": {
            "grpc": {"endpoint": f"{HOST}:{grpc_port}", **(grpc or {})},
            "http": {"endpoint": f"{HOST}:{http_port}", **(http or {})},
            "drain_timeout_s": drain_timeout_s,
            **(receiver or {}),
        },
        "scorers": dict(DEFAULT_SCORERS if scorers is None else scorers),
        "rules": list(DEFAULT_RULES if rules is None else rules),
        "export": dict(export) if export is not None else {"console": {}},
    }
    if forward is not None:
        config["forward"] = dict(forward)
    return config


def write_config(path: Path, config: Mapping[str, Any] | str) -> Path:
    text = config if isinstance(config, str) else yaml.safe_dump(dict(config), sort_keys=False)
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- the subprocess


class Metrics:
    """A scraped ``/metrics`` page: samples by name and labels."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples: list[tuple[str, dict[str, str], float]] = []
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            head, _, number = line.rpartition(" ")
            name, _, rest = head.partition("{")
            labels: dict[str, str] = {}
            for item in rest.rstrip("}").split('",') if rest else ():
                key, _, value = item.partition("=")
                labels[key] = value.strip('"')
            self.samples.append((name, labels, float(number)))

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples of ``name`` whose labels include ``labels`` (0 when none)."""
        return sum(
            v
            for n, ls, v in self.samples
            if n == name and all(ls.get(k) == want for k, want in labels.items())
        )

    def names(self) -> set[str]:
        return {n for n, _, _ in self.samples}


@dataclass
class Sidecar:
    """A running ``otel-online-eval serve`` process."""

    proc: subprocess.Popen[bytes]
    config_path: Path
    config: dict[str, Any]
    log_path: Path
    scheme: str = "http"
    ssl_verify: Any = True
    http_headers: dict[str, str] = field(default_factory=dict)

    @property
    def grpc_endpoint(self) -> str:
        return str(self.config["receiver"]["grpc"]["endpoint"])

    @property
    def http_endpoint(self) -> str:
        return str(self.config["receiver"]["http"]["endpoint"])

    def url(self, path: str = "/v1/traces") -> str:
        return f"{self.scheme}://{self.http_endpoint}{path}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stderr(self) -> str:
        return self.log_path.read_text(errors="replace")

    def logs(self) -> list[dict[str, Any]]:
        """The JSON log lines written so far (other lines are skipped)."""
        out = []
        for line in self.stderr().splitlines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    out.append(json.loads(line))
        return out

    def log_messages(self, prefix: str) -> list[dict[str, Any]]:
        return [e for e in self.logs() if str(e.get("message", "")).startswith(prefix)]

    def wait_log(self, prefix: str, count: int = 1, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Wait until ``count`` log lines whose message starts with ``prefix`` were written."""

        def found() -> list[dict[str, Any]] | None:
            got = self.log_messages(prefix)
            if len(got) >= count:
                return got
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"the sidecar exited ({self.proc.returncode}) before logging {prefix!r}:\n"
                    + self.stderr()[-3000:]
                )
            return None

        result: list[dict[str, Any]] = wait_until(found, timeout, what=f"log {prefix!r}")
        return result

    def wait_ready(self, timeout: float = 15.0, workers: int = 1) -> None:
        self.wait_log("Sidecar serving", workers, timeout)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 5)
        kwargs.setdefault("verify", self.ssl_verify)
        kwargs.setdefault("headers", self.http_headers)
        return requests.get(self.url(path), **kwargs)

    def metrics(self, **kwargs: Any) -> Metrics:
        """Scrape ``/metrics`` (``kwargs`` go to ``requests.get``: headers, cert...)."""
        response = self.get("/metrics", **kwargs)
        assert response.status_code == 200, response.text
        return Metrics(response.text)

    def send_signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 20.0, signum: int = signal.SIGTERM) -> int:
        """Signal the process and wait for it; kills it (and fails) after ``timeout``."""
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"the sidecar did not exit within {timeout}s of signal {signum}:\n"
                + self.stderr()[-3000:]
            ) from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)


def start_sidecar(
    tmp_path: Path,
    config: Mapping[str, Any] | str,
    *,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    wait: bool = True,
    workers: int = 1,
    name: str = "sidecar",
    scheme: str = "http",
    ssl_verify: Any = True,
    http_headers: Mapping[str, str] | None = None,
) -> Sidecar:
    """Start ``python -m otel_online_eval.cli serve -c <config>`` in its own process group.

    stdout and stderr go to ``<tmp_path>/<name>.log``. With ``wait``, returns once the process
    logged "Sidecar serving" (``workers`` times); fails, with the log, if it exits first.
    """
    config_path = write_config(tmp_path / f"{name}.yaml", config)
    parsed = yaml.safe_load(config_path.read_text()) if isinstance(config, str) else dict(config)
    log_path = tmp_path / f"{name}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "otel_online_eval.cli", "serve", "-c", str(config_path), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            start_new_session=True,
        )
    sidecar = Sidecar(
        proc,
        config_path,
        parsed if isinstance(parsed, dict) else {},
        log_path,
        scheme,
        ssl_verify,
        dict(http_headers or {}),
    )
    if wait:
        try:
            sidecar.wait_ready(workers=workers)
        except BaseException:
            sidecar.kill()
            raise
    return sidecar


@contextlib.contextmanager
def running_sidecar(
    tmp_path: Path, config: Mapping[str, Any] | str, **kwargs: Any
) -> Iterator[Sidecar]:
    """``start_sidecar``; on exit SIGTERM, wait for it (bounded), and kill it if still running."""
    sidecar = start_sidecar(tmp_path, config, **kwargs)
    try:
        yield sidecar
    finally:
        try:
            if sidecar.proc.poll() is None:
                sidecar.stop()
        finally:
            sidecar.kill()


# --------------------------------------------------------------------------- clients


def send_grpc(
    endpoint: str,
    body: bytes,
    *,
    metadata: Sequence[tuple[str, str]] = (),
    timeout: float = 5.0,
    credentials: grpc.ChannelCredentials | None = None,
    compression: grpc.Compression | None = None,
) -> ExportTraceServiceResponse:
    """One raw ``TraceService/Export`` call with exactly ``body``; raises ``grpc.RpcError``."""
    channel = (
        grpc.secure_channel(endpoint, credentials)
        if credentials is not None
        else grpc.insecure_channel(endpoint)
    )
    with channel:
        call = channel.unary_unary(
            EXPORT_METHOD, request_serializer=None, response_deserializer=None
        )
        raw = call(body, timeout=timeout, metadata=tuple(metadata), compression=compression)
    response: ExportTraceServiceResponse = ExportTraceServiceResponse.FromString(raw)
    return response


def retry_info(error: grpc.RpcError) -> float | None:
    """The ``RetryInfo`` delay in an error's ``grpc-status-details-bin`` trailer, if any."""
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = RpcStatus.FromString(value)
            for detail in status.details:
                if detail.Is(RetryInfo.DESCRIPTOR):
                    info = RetryInfo()
                    detail.Unpack(info)
                    return float(info.retry_delay.seconds + info.retry_delay.nanos / 1e9)
    return None


def post_http(
    sidecar: Sidecar,
    body: bytes,
    content_type: str = "application/x-protobuf",
    headers: Mapping[str, str] | None = None,
    **kwargs: Any,
) -> requests.Response:
    """POST ``body`` to the sidecar's ``/v1/traces``."""
    kwargs.setdefault("timeout", 10)
    kwargs.setdefault("verify", sidecar.ssl_verify)
    all_headers = {"Content-Type": content_type, **sidecar.http_headers, **(headers or {})}
    return requests.post(sidecar.url(), data=body, headers=all_headers, **kwargs)


def grpc_health(
    endpoint: str, service: str = "", credentials: grpc.ChannelCredentials | None = None
) -> str:
    """The gRPC health status name (``SERVING``...) of ``service``."""
    channel = (
        grpc.secure_channel(endpoint, credentials)
        if credentials is not None
        else grpc.insecure_channel(endpoint)
    )
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))


@dataclass
class RawAnswer:
    """One HTTP answer read off a raw socket: status, headers (lower-case names), body."""

    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def closes(self) -> bool:
        return self.headers.get("connection", "").lower() == "close"


def raw_connection(endpoint: str, timeout: float = 10.0) -> socket.socket:
    """A plain TCP connection to ``host:port``, with a timeout on every read and write."""
    host, _, port = endpoint.rpartition(":")
    sock = socket.create_connection((host, int(port)), timeout=timeout)
    sock.settimeout(timeout)
    return sock


def read_answer(sock: socket.socket, method: str = "POST") -> RawAnswer:
    """Read one answer with the standard library's parser (our bytes go out as they are; the
    answer is read by a parser we did not write)."""
    response = http.client.HTTPResponse(sock, method=method)
    try:
        response.begin()
        body = response.read()
        return RawAnswer(response.status, {k.lower(): v for k, v in response.getheaders()}, body)
    finally:
        response.close()  # its file on the socket, not the socket


def raw_http(endpoint: str, data: bytes, timeout: float = 10.0) -> RawAnswer:
    """Send ``data`` exactly as given over a new connection and read one answer.

    Raises:
        http.client.RemoteDisconnected: the connection closed with no answer.
    """
    with raw_connection(endpoint, timeout) as sock:
        sock.sendall(data)
        return read_answer(sock, data.split(b" ", 1)[0].decode("latin-1") or "GET")


def thread_count(pid: int) -> int:
    """How many threads process ``pid`` has now (from /proc)."""
    return len(os.listdir(f"/proc/{pid}/task"))


# --------------------------------------------------------------------------- raw downstream


class RawGrpcReceiver:
    """An OTLP/gRPC downstream that records the exact request bytes (no deserializer).

    ``tests.otlp_receiver.OtlpGrpcReceiver`` parses what it gets, which cannot prove the
    sidecar forwarded the same bytes; this one keeps them. It can listen on a given port (to
    come up late, after the sidecar started) and can fail the next calls.
    """

    def __init__(self, port: int = 0) -> None:
        self._cond = threading.Condition()
        self.bodies: list[bytes] = []
        self.attempts = 0
        self._fail: tuple[grpc.StatusCode, int] | None = None
        self._executor = futures.ThreadPoolExecutor(max_workers=4)
        self._server = grpc.server(self._executor, options=[("grpc.so_reuseport", 0)])
        handler = grpc.unary_unary_rpc_method_handler(
            self._export, request_deserializer=None, response_serializer=None
        )
        service, _, method = EXPORT_METHOD.lstrip("/").rpartition("/")
        self._server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service, {method: handler}),)
        )
        self.port = self._server.add_insecure_port(f"{HOST}:{port}")
        self.endpoint = f"{HOST}:{self.port}"
        self._server.start()
        self._stopped = False

    def fail_with(self, code: grpc.StatusCode, times: int) -> None:
        with self._cond:
            self._fail = (code, times)

    def _export(self, body: bytes, context: grpc.ServicerContext) -> bytes:
        with self._cond:
            self.attempts += 1
            fail = self._fail
            if fail is not None and fail[1] > 0:
                self._fail = (fail[0], fail[1] - 1)
                self._cond.notify_all()
            else:
                fail = None
                self.bodies.append(bytes(body))
                self._cond.notify_all()
        if fail is not None:
            context.abort(fail[0], "injected failure")
        out: bytes = ExportTraceServiceResponse().SerializeToString()
        return out

    def requests(self) -> list[ExportTraceServiceRequest]:
        with self._cond:
            return [ExportTraceServiceRequest.FromString(b) for b in self.bodies]

    def spans(self) -> list[ReceivedSpan]:
        out: list[ReceivedSpan] = []
        for request in self.requests():
            for rs in request.resource_spans:
                resource = attrs(rs.resource.attributes)
                for ss in rs.scope_spans:
                    out.extend((resource, ss.scope.name, span) for span in ss.spans)
        return out

    def span_ids(self) -> list[int]:
        return [int.from_bytes(s.span_id, "big") for _, _, s in self.spans()]

    def wait_for_bodies(self, n: int, timeout: float = 10.0) -> list[bytes]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.bodies) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"expected {n} requests within {timeout}s, got {len(self.bodies)} "
                        f"({self.attempts} attempts)"
                    )
                self._cond.wait(left)
            return list(self.bodies)

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._server.stop(grace=None).wait(5)
        self._executor.shutdown(wait=True)

    def __enter__(self) -> RawGrpcReceiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
