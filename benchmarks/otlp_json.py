"""What one OTLP/JSON export request costs the sidecar, against the same request as protobuf.

One request of 512 spans like the sidecar benchmark's (12 GenAI attributes and a 1 KB prompt per
span, a quarter of them roots), as OTLP/JSON text and as protobuf. Prints µs per span (the best
of several rounds, one thread) for:

  decode  json_format   the library path: ``json.loads``, ids hex -> base64, ``ParseDict``
                        (what the sidecar's JSON ingest did before the one OTLP/JSON decoder)
  decode  otlp          ``otel_online_eval.otlp.decode_request_json`` (when it exists)
  decode  protobuf      ``ExportTraceServiceRequest.FromString``
  ingest  json          ``Ingest.handle(body, "json")``: decode, check ids, route, hash
  ingest  protobuf      ``Ingest.handle(body, "protobuf")``

The ingest rows run the real ``Ingest`` with an engine of the benchmark's ten rules at 0%
sampling (routing and hashing, nothing submitted) and no forwarder. The script only uses what
the sidecar has had for long, so it also runs against an older checkout for a before/after:
``PYTHONPATH=/path/to/old/checkout .venv/bin/python benchmarks/otlp_json.py``.

Run: ``.venv/bin/python benchmarks/otlp_json.py`` (about 30 s).
"""

from __future__ import annotations

import base64
import functools
import gc
import json
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

sys.path.insert(0, str(Path(__file__).resolve().parent))

from hotpath import ATTRS, ten_rules

SPANS = 512
ROUNDS = 7
_IDS = ("traceId", "spanId", "parentSpanId")


def _value(value: Any) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, str):
        return AnyValue(string_value=value)
    return AnyValue(array_value=ArrayValue(values=[_value(v) for v in value]))


def build_request(seed: int = 1) -> ExportTraceServiceRequest:
    rng = random.Random(seed)
    attrs = [KeyValue(key=k, value=_value(v)) for k, v in ATTRS.items()]
    now = time.time_ns()
    spans = []
    for i in range(SPANS):
        root = i % 4 == 0
        span = Span(
            trace_id=rng.getrandbits(128).to_bytes(16, "big"),
            span_id=rng.getrandbits(64).to_bytes(8, "big"),
            name="POST /support" if root else "chat",
            kind=Span.SPAN_KIND_CLIENT,
            start_time_unix_nano=now,
            end_time_unix_nano=now + rng.randint(100, 2000) * 1_000_000,
            attributes=attrs,
        )
        if not root:
            span.parent_span_id = rng.getrandbits(64).to_bytes(8, "big")
        spans.append(span)
    resource = {"attributes": [KeyValue(key="service.name", value=_value("bench"))]}
    return ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=resource, scope_spans=[ScopeSpans(scope={"name": "bench"}, spans=spans)]
            )
        ]
    )


def to_otlp_json(request: ExportTraceServiceRequest) -> bytes:
    """OTLP/JSON by the library: proto3 JSON, then the ids from base64 to hex."""
    data = json_format.MessageToDict(request, use_integers_for_enums=True)
    for rs in data["resourceSpans"]:
        for ss in rs["scopeSpans"]:
            for span in ss["spans"]:
                for key in _IDS:
                    if key in span:
                        span[key] = base64.b64decode(span[key]).hex()
    return json.dumps(data, separators=(",", ":")).encode()


def library_decode(body: bytes) -> ExportTraceServiceRequest:
    data = json.loads(body)
    for rs in data["resourceSpans"]:
        for ss in rs["scopeSpans"]:
            for span in ss["spans"]:
                for key in _IDS:
                    if key in span:
                        span[key] = base64.b64encode(bytes.fromhex(span[key])).decode()
    return json_format.ParseDict(data, ExportTraceServiceRequest(), ignore_unknown_fields=True)


def best_us_per_span(run: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(ROUNDS):
        gc.collect()
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best / SPANS * 1e6


def make_ingest() -> Any:
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from otel_online_eval.config import parse_config
    from otel_online_eval.emit import Emitter
    from otel_online_eval.engine import Engine
    from otel_online_eval.sidecar.ingest import Ingest, ReceiverStats, make_proto_view

    config = parse_config(ten_rules(0.0))
    sink = Emitter(SimpleSpanProcessor(InMemorySpanExporter()))
    make_view = functools.partial(make_proto_view, presets=config.extract)
    engine = Engine(config.rules, sink, make_view, config.engine)
    return Ingest(engine, None, ReceiverStats()), engine


def main() -> int:
    request = build_request()
    body_pb = request.SerializeToString()
    body_json = to_otlp_json(request)
    assert library_decode(body_json) == request
    rows: list[tuple[str, float]] = [
        ("decode  json_format", best_us_per_span(lambda: library_decode(body_json)))
    ]
    try:
        from otel_online_eval.otlp import decode_request_json
    except ImportError:
        print("(no otel_online_eval.otlp here: its row is left out)")
    else:
        assert decode_request_json(body_json, any_id_length=True) == request
        rows.append(
            (
                "decode  otlp",
                best_us_per_span(lambda: decode_request_json(body_json, any_id_length=True)),
            )
        )
    rows.append(
        (
            "decode  protobuf",
            best_us_per_span(lambda: ExportTraceServiceRequest.FromString(body_pb)),
        )
    )
    ingest, engine = make_ingest()
    try:
        for fmt, body in (("json", body_json), ("protobuf", body_pb)):
            result = ingest.handle(body, fmt)
            assert result.status == "ok" and result.accepted == SPANS, result
            rows.append(
                (f"ingest  {fmt}", best_us_per_span(functools.partial(ingest.handle, body, fmt)))
            )
    finally:
        engine.shutdown()
    print(
        f"one request of {SPANS} spans: {len(body_json)} bytes as JSON, {len(body_pb)} as protobuf"
    )
    for name, us in rows:
        print(f"  {name:<22} {us:7.2f} us/span")
    return 0


if __name__ == "__main__":
    sys.exit(main())
