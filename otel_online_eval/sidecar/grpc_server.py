"""The OTLP/gRPC receiver: ``TraceService/Export`` and ``LogsService/Export`` with raw request
bytes, plus gRPC health.

The method is registered with no deserializer, so the handler gets the bytes as received: they
are forwarded unchanged and parsed once. Errors follow the OTLP specification: INVALID_ARGUMENT
for undecodable requests, UNAVAILABLE with a ``RetryInfo`` detail when overloaded or draining,
RESOURCE_EXHAUSTED (from gRPC itself) above ``max_message_bytes``, UNAUTHENTICATED without the
bearer token (``authorization: Bearer <token>``, the scheme in any case), and
``partial_success`` for rejected spans or log records. Both services share the port, the
limits, TLS and auth.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.any_pb2 import Any as AnyProto
from google.protobuf.duration_pb2 import Duration
from google.rpc.error_details_pb2 import RetryInfo
from google.rpc.status_pb2 import Status as RpcStatus
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from otel_online_eval._threads import name_os_thread
from otel_online_eval.sidecar.config import (
    AuthConfig,
    GrpcReceiverConfig,
    TlsConfig,
    tls_problems,
)
from otel_online_eval.sidecar.ingest import Ingest, IngestResult, export_response

__all__ = ["GrpcReceiver"]

logger = logging.getLogger(__name__)

_SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
_LOGS_SERVICE = "opentelemetry.proto.collector.logs.v1.LogsService"


def _retry_trailer(code: grpc.StatusCode, message: str, delay_s: float) -> tuple[Any, ...]:
    info = RetryInfo(retry_delay=Duration(seconds=int(delay_s), nanos=int(delay_s % 1 * 1e9)))
    detail = AnyProto()
    detail.Pack(info)
    status = RpcStatus(code=code.value[0], message=message, details=[detail])
    return (
        ("grpc-status-details-bin", status.SerializeToString()),
        # The Python SDK's exporter reads the hint from this trailer instead.
        ("google.rpc.retryinfo-bin", info.SerializeToString()),
    )


class GrpcReceiver:
    """Serves OTLP/gRPC on ``config.endpoint``.

    Args:
        config: endpoint and size limit.
        ingest: what to do with requests.
        tls: server TLS, if any.
        auth: the bearer token, if required.
        reuse_port: share the port with other worker processes (SO_REUSEPORT).
        threads: handler threads.

    Raises:
        OSError: the address cannot be listened on, or a TLS file cannot serve (the message
            names the endpoint, or the field and the file).
    """

    def __init__(
        self,
        config: GrpcReceiverConfig,
        ingest: Ingest,
        tls: TlsConfig | None = None,
        auth: AuthConfig | None = None,
        reuse_port: bool = False,
        threads: int = 8,
    ) -> None:
        self.ingest = ingest
        self._auth = auth
        if tls is not None:
            # gRPC would only say "Failed to bind" for a key that does not fit its certificate.
            problems = tls_problems(tls)
            if problems:
                raise OSError(
                    "; ".join(f"receiver.tls.{key}: {message}" for key, message in problems)
                )
        options = [
            ("grpc.max_receive_message_length", config.max_message_bytes),
            ("grpc.so_reuseport", 1 if reuse_port else 0),
        ]
        self._server = grpc.server(
            futures.ThreadPoolExecutor(
                max_workers=threads, thread_name_prefix="otlp-grpc", initializer=name_os_thread
            ),
            options=options,
        )
        handler = grpc.unary_unary_rpc_method_handler(
            self._export, request_deserializer=None, response_serializer=None
        )
        logs_handler = grpc.unary_unary_rpc_method_handler(
            self._export_logs, request_deserializer=None, response_serializer=None
        )
        self._server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(_SERVICE, {"Export": handler}),
                grpc.method_handlers_generic_handler(_LOGS_SERVICE, {"Export": logs_handler}),
            )
        )
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        if tls is not None:
            creds = grpc.ssl_server_credentials(
                [(Path(tls.key_file).read_bytes(), Path(tls.cert_file).read_bytes())],
                root_certificates=(
                    Path(tls.client_ca_file).read_bytes() if tls.client_ca_file else None
                ),
                require_client_auth=tls.client_ca_file is not None,
            )
        try:
            if tls is not None:
                self.port = self._server.add_secure_port(config.endpoint, creds)
            else:
                self.port = self._server.add_insecure_port(config.endpoint)
        except RuntimeError as exc:  # grpc's way of saying the address is taken
            raise OSError(f"cannot listen for OTLP/gRPC on {config.endpoint}: {exc}") from exc
        self.endpoint = f"{config.endpoint.rpartition(':')[0]}:{self.port}"

    def start(self) -> None:
        self._server.start()
        self.set_serving(True)

    def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        self.health.set("", status)
        self.health.set(_SERVICE, status)
        self.health.set(_LOGS_SERVICE, status)

    def stop(self, grace_s: float) -> None:
        """Stop accepting; requests in progress get ``grace_s`` to finish."""
        self._server.stop(grace_s).wait(grace_s + 1)

    def _authorized(self, context: grpc.ServicerContext) -> bool:
        if self._auth is None:
            return True
        for key, value in context.invocation_metadata():
            if key == "authorization":
                return self._auth.accepts(value)
        return False

    def _export(self, body: bytes, context: grpc.ServicerContext) -> bytes:
        stats = self.ingest.stats
        if not self._authorized(context):
            stats.request("grpc", "unauthenticated", len(body))
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")
        result = self.ingest.handle(body, "protobuf")
        stats.request("grpc", result.status, len(body))
        return _respond(result, context.abort, context.set_trailing_metadata)

    def _export_logs(self, body: bytes, context: grpc.ServicerContext) -> bytes:
        stats = self.ingest.stats
        logs = self.ingest.logs
        if logs is None:  # no logs door (never in the sidecar)
            context.abort(grpc.StatusCode.UNIMPLEMENTED, "this receiver takes no log records")
            raise AssertionError("abort raises")
        if not self._authorized(context):
            stats.log_request("grpc", "unauthenticated", len(body))
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")
        result = logs.handle(body, "protobuf")
        stats.log_request("grpc", result.status, len(body))
        return _respond(result, context.abort, context.set_trailing_metadata, logs=True)


def _respond(
    result: IngestResult,
    abort: Callable[[grpc.StatusCode, str], Any],
    set_trailers: Callable[[tuple[Any, ...]], None],
    logs: bool = False,
) -> bytes:
    if result.status == "invalid":
        abort(grpc.StatusCode.INVALID_ARGUMENT, result.message)
    if result.status == "internal":  # a defect of ours, logged by Ingest: not retryable
        abort(grpc.StatusCode.INTERNAL, result.message)
    if result.status == "unavailable":
        delay = result.retry_after_s or 1.0
        set_trailers(_retry_trailer(grpc.StatusCode.UNAVAILABLE, result.message, delay))
        abort(grpc.StatusCode.UNAVAILABLE, result.message)
    response = export_response(result, logs)
    body: bytes = response.SerializeToString()
    return body
