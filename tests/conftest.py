"""Shared fixtures: real OTLP receivers on 127.0.0.1, test certificates."""

from tests.otlp_receiver import otlp_grpc_receiver, otlp_http_receiver
from tests.pki import no_ca_bundle_env, pki

__all__ = ["no_ca_bundle_env", "otlp_grpc_receiver", "otlp_http_receiver", "pki"]
