"""Coverage-guided fuzzing (atheris, libFuzzer) of what the receivers do with a request body.

The first byte of an input picks the path, the rest is the body:

  0  ``Ingest.handle(body, "protobuf")``
  1  ``Ingest.handle(body, "json")``
  2  the HTTP receiver's gzip decoder (every member, one size limit), fed in pieces whose size
     is the second byte, then ``Ingest.handle`` of what came out as protobuf
  3  the same, then as OTLP/JSON

A crash is anything the receivers would not answer cleanly: an exception out of
``Ingest.handle`` or out of the gzip decoder other than its own refusal, or an ``internal``
outcome (a 500 the client retries forever). libFuzzer writes each crashing input to
``fuzz/crashes/`` (``-artifact_prefix``) and grows ``fuzz/corpus/`` from seeds written there on
the first run.

Run: ``make fuzz`` (FUZZ_SECONDS, 600 by default), or by hand
``.venv/bin/python fuzz/ingest_fuzz.py -max_total_time=60 fuzz/corpus``; given files instead
of a folder it runs just those inputs (how a crash is replayed).
"""

from __future__ import annotations

import functools
import gzip
import logging
import sys
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["otel_online_eval"]):
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from otel_online_eval.config import parse_config
    from otel_online_eval.emit import Emitter
    from otel_online_eval.engine import Engine
    from otel_online_eval.otlp import request_to_json
    from otel_online_eval.sidecar.http_server import _BodyError, _Gunzip
    from otel_online_eval.sidecar.ingest import Ingest, ReceiverStats, make_proto_view

HERE = Path(__file__).resolve().parent
LIMIT = 1 << 20


def _ingest() -> Ingest:
    config = parse_config(
        {
            "scorers": {"nonempty": {"type": "not_empty"}},
            # Spans are routed, sampled and copied out; the filter drops them before a scorer.
            "rules": [
                {"name": "all", "scorers": ["nonempty"], "sampling": 0.5, "filter": "name = '-'"}
            ],
        }
    )
    engine = Engine(
        config.rules,
        Emitter(SimpleSpanProcessor(InMemorySpanExporter())),
        functools.partial(make_proto_view, presets=config.extract),
        config.engine,
    )
    return Ingest(engine, None, ReceiverStats())


INGEST = _ingest()
FORMATS = ("protobuf", "json")


def _check(body: bytes, fmt: str) -> None:
    result = INGEST.handle(body, fmt)
    if result.status not in ("ok", "invalid"):
        raise AssertionError(f"Ingest.handle answered {result.status!r}: {result.message}")
    result.message.encode("utf-8")  # the message goes into an answer


def _gunzip(data: bytes, piece: int) -> bytes | None:
    decoder = _Gunzip(LIMIT)
    try:
        for i in range(0, len(data), piece):
            decoder.feed(data[i : i + piece])
        return decoder.finish()
    except _BodyError as exc:
        if exc.status not in (400, 413):
            raise
        return None


def test_one_input(data: bytes) -> None:
    if not data:
        return
    path, body = data[0] % 4, data[1:]
    if path < 2:
        _check(body, FORMATS[path])
        return
    if not body:
        return
    plain = _gunzip(body[1:], body[0] + 1)
    if plain is not None:
        _check(plain, FORMATS[path - 2])


def _seed_request() -> ExportTraceServiceRequest:
    def attr(key: str, value: AnyValue) -> KeyValue:
        return KeyValue(key=key, value=value)

    span = Span(
        trace_id=bytes(range(1, 17)),
        span_id=bytes(range(1, 9)),
        name="chat gpt-4o",
        kind=Span.SPAN_KIND_CLIENT,
        start_time_unix_nano=1_700_000_000_000_000_000,
        end_time_unix_nano=1_700_000_001_000_000_000,
        attributes=[
            attr("gen_ai.operation.name", AnyValue(string_value="chat")),
            attr("gen_ai.usage.input_tokens", AnyValue(int_value=12)),
            attr("temperature", AnyValue(double_value=0.5)),
        ],
        status=Status(code=Status.STATUS_CODE_ERROR, message="boom"),
        events=[Span.Event(name="exception", time_unix_nano=1_700_000_000_500_000_000)],
    )
    child = Span(
        trace_id=span.trace_id,
        span_id=bytes(range(2, 10)),
        parent_span_id=span.span_id,
        name="tool",
    )
    return ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=[span, child])])]
    )


def write_seeds(corpus: Path) -> None:
    """Valid inputs for every path, so the fuzzer starts from the formats' shapes."""
    corpus.mkdir(parents=True, exist_ok=True)
    if any(corpus.iterdir()):
        return
    request = _seed_request()
    binary = request.SerializeToString()
    text = request_to_json(request).encode()
    seeds = {
        "protobuf": b"\0" + binary,
        "json": b"\1" + text,
        "gzip-protobuf": b"\2\x40" + gzip.compress(binary) + gzip.compress(binary),
        "gzip-json": b"\3\xff" + gzip.compress(text),
        "json-1e400": b'\1{"resourceSpans":[{"scopeSpans":[{"spans":[{"kind":1e400}]}]}]}',
    }
    for name, seed in seeds.items():
        (corpus / f"seed-{name}").write_bytes(seed)


def main() -> None:
    logging.disable(logging.CRITICAL)  # refusals are logged; the fuzzer's output is the signal
    argv = list(sys.argv)
    if not any(a.startswith("-artifact_prefix=") for a in argv):
        crashes = HERE / "crashes"
        crashes.mkdir(exist_ok=True)
        argv.insert(1, f"-artifact_prefix={crashes}/")
    for arg in argv[1:]:
        if not arg.startswith("-") and not Path(arg).is_file():
            write_seeds(Path(arg))  # a corpus folder, made on the first run
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
