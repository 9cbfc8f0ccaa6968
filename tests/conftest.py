"""Shared fixtures: real OTLP receivers on 127.0.0.1."""

from tests.otlp_receiver import otlp_grpc_receiver, otlp_http_receiver

__all__ = ["otlp_grpc_receiver", "otlp_http_receiver"]
