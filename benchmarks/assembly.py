"""What trace assembly costs per buffered span, in CPU and memory.

Prints, in one run, for 50,000 traces of 10 spans in flight at once (issue 12's load):

1. CPU per span of ``TraceAssembler.add`` (target: at most 2 µs), and per span of handing
   every trace on when it has settled (``due``);
2. the assembler's own memory per buffered span (its dicts, sets and lists), and with it what
   buffering keeps alive in-process (the SDK's ``ReadableSpan`` and its view), against the
   spans' OTLP protobuf size (target for everything buffered: at most 2x the OTLP size);
3. what encoding each span to OTLP protobuf bytes would cost instead (CPU and bytes per span,
   encoded one by one and in batches of 100), the compact form the engine could buffer;
4. the engine with a trace rule, as each front door drives it: in-process (the app's
   ``on_end`` through our processor, nothing else keeping the spans) and in the sidecar
   (received protobuf spans submitted as its ingest does): CPU per buffered span on top of the
   same run without the trace rule, and the RSS the buffered traces hold per span, against the
   OTLP size (targets: <= 2 us, <= 2x).

The spans are real SDK spans (GenAI-shaped: a root, an agent span, model and tool calls, with
prompts and answers in their attributes) wrapped in ``SdkSpanView`` before the clock starts;
they arrive in the order they end (children before parents), ten traces interleaved. This is
the assembler alone in 1-3, the wired engine in 4. Run:
``.venv/bin/python benchmarks/assembly.py`` (about 60 s, 4 GB of memory).
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import time
import tracemalloc

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Tracer
from opentelemetry.util.types import AttributeValue

from otel_online_eval import OnlineEvalConfig, OnlineEvalSpanProcessor, parse_config
from otel_online_eval.assembly import AssemblyBounds, Completion, TraceAssembler
from otel_online_eval.spanview import SdkSpanView

TRACES = 50_000
SPANS_PER_TRACE = 10
INTERLEAVE = 10

_MESSAGES = json.dumps(
    [{"role": "user", "parts": [{"type": "text", "content": "Book a table for two at eight."}]}]
)
_ANSWER = json.dumps(
    [{"role": "assistant", "parts": [{"type": "text", "content": "Booked: 8 pm, two people."}]}]
)
_CHAT: dict[str, AttributeValue] = {
    "gen_ai.operation.name": "chat",
    "gen_ai.request.model": "m",
    "gen_ai.input.messages": _MESSAGES,
    "gen_ai.output.messages": _ANSWER,
    "gen_ai.usage.input_tokens": 120,
    "gen_ai.usage.output_tokens": 20,
}
_TOOL: dict[str, AttributeValue] = {
    "gen_ai.operation.name": "execute_tool",
    "gen_ai.tool.name": "book_table",
    "gen_ai.tool.call.arguments": '{"people": 2, "time": "20:00"}',
}


def _one_trace(t: Tracer) -> None:
    """Ten spans: the agent's root, its run, four model calls and four tool calls."""
    with t.start_as_current_span("invoke_agent", attributes={"gen_ai.operation.name": "agent"}):
        with t.start_as_current_span("agent run"):
            for _ in range(4):
                with t.start_as_current_span("chat", attributes=_CHAT):
                    pass
                with t.start_as_current_span("execute_tool", attributes=_TOOL):
                    pass


def _spans(traces: int) -> list[ReadableSpan]:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("bench")
    for _ in range(traces):
        _one_trace(tracer)
    spans = list(memory.get_finished_spans())
    assert len(spans) == traces * SPANS_PER_TRACE, len(spans)
    return spans


def _interleaved(spans: list[ReadableSpan]) -> list[ReadableSpan]:
    """Groups of INTERLEAVE traces whose spans alternate, each trace in its own end order."""
    out: list[ReadableSpan] = []
    n = SPANS_PER_TRACE
    for g in range(0, len(spans), n * INTERLEAVE):
        group = [spans[i : i + n] for i in range(g, min(g + n * INTERLEAVE, len(spans)), n)]
        for k in range(n):
            out.extend(trace[k] for trace in group)
    return out


def main() -> None:
    print(f"Python {sys.version.split()[0]}, load average {os.getloadavg()[0]:.2f}")
    tracemalloc.start()
    spans = _interleaved(_spans(TRACES))
    spans_bytes = tracemalloc.get_traced_memory()[0]
    views = [SdkSpanView(s) for s in spans]
    views_bytes = tracemalloc.get_traced_memory()[0] - spans_bytes
    tracemalloc.stop()
    otlp = encode_spans(spans[: 1000 * SPANS_PER_TRACE]).ByteSize() / (1000 * SPANS_PER_TRACE)
    sizes = [int(otlp)] * len(views)
    bounds = AssemblyBounds(max_traces=TRACES, max_bytes=1 << 40, remember=TRACES)
    asm: TraceAssembler[SdkSpanView] = TraceAssembler(Completion(settle_s=2), bounds)

    gc.collect()
    gc.disable()  # the collector's pauses depend on the whole heap, not on assembly
    start = time.process_time()
    now = 0.0
    for view, size in zip(views, sizes, strict=True):
        asm.add(view, size, now)
    add_cpu = time.process_time() - start
    assert len(asm) == TRACES
    start = time.process_time()
    units = asm.due(now + 2.0)
    due_cpu = time.process_time() - start
    assert len(units) == TRACES and all(u.complete for u in units)
    del units, asm

    # Memory in a second pass: tracemalloc slows every allocation, so not in the timed one.
    asm = TraceAssembler(Completion(settle_s=2), bounds)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for view, size in zip(views, sizes, strict=True):
        asm.add(view, size, now)
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    gc.enable()

    n = len(views)
    per_span = held / n
    print(f"{TRACES} traces x {SPANS_PER_TRACE} spans in flight ({n} spans)")
    print(
        f"1. add: {add_cpu / n * 1e6:.2f} us CPU per span (target <= 2 us: "
        f"{'met' if add_cpu / n <= 2e-6 else 'MISSED'}); due (hand every trace on): "
        f"{due_cpu / n * 1e6:.2f} us per span"
    )
    print(
        f"2. assembler's own memory: {per_span:.0f} bytes per buffered span "
        f"({held / 2**20:.1f} MiB); OTLP protobuf size {otlp:.0f} bytes per span; "
        f"ratio {per_span / otlp:.2f}"
    )
    spans_per, views_per = spans_bytes / n, views_bytes / n
    total = spans_per + views_per + per_span
    print(
        f"   what buffering keeps alive in-process: the SDK's ReadableSpan {spans_per:.0f} "
        f"bytes, its SdkSpanView {views_per:.0f}, assembly {per_span:.0f}: {total:.0f} bytes "
        f"per span, {total / otlp:.1f}x the OTLP size (target <= 2x: "
        f"{'met' if total <= 2 * otlp else 'MISSED'})"
    )
    _compact_probe(spans[: 1000 * SPANS_PER_TRACE])
    del views, spans, asm
    gc.collect()
    _engines(otlp)


def _compact_probe(spans: list[ReadableSpan]) -> None:
    """What holding each span as OTLP protobuf bytes instead of the ReadableSpan would cost."""
    n = len(spans)
    rows = []
    for batch in (1, 100):
        start = time.process_time()
        blobs = [encode_spans(spans[i : i + batch]).SerializeToString() for i in range(0, n, batch)]
        cpu = (time.process_time() - start) / n
        held = sum(sys.getsizeof(b) for b in blobs) / n
        rows.append(f"batches of {batch}: {cpu * 1e6:.1f} us CPU and {held:.0f} bytes per span")
    print("3. a compact form, the SDK's OTLP encoder to bytes: " + "; ".join(rows))
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    start = time.process_time()
    records = [_Record(span) for span in spans]
    cpu = (time.process_time() - start) / n
    held = (tracemalloc.get_traced_memory()[0] - before) / n
    tracemalloc.stop()
    start = time.process_time()
    records = [_Record(span) for span in spans]
    cpu = (time.process_time() - start) / n  # again, without tracemalloc's cost
    print(
        f"   a record of the span's fields (attributes as two tuples, values shared with the "
        f"app): {cpu * 1e6:.2f} us CPU and {held:.0f} bytes per span ({len(records)} spans)"
    )


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


_HOLD = {
    "scope": "trace",
    "completion": {"settle_s": 600, "idle_s": 600, "max_wait_s": 600},
}


def _config(trace_rule: bool) -> OnlineEvalConfig:
    rules = [{"name": "agent", "scorers": ["errors"], **_HOLD}] if trace_rule else []
    return parse_config(
        {
            "scorers": {"errors": {"type": "tool_errors"}},
            "rules": rules,
            "engine": {
                "queue_size": 1_000_000,
                "assembly": {"max_traces": TRACES, "max_bytes": 1 << 40, "remember": TRACES},
            },
        }
    )


class _Keep(SpanProcessor):
    def __init__(self, spans: list[ReadableSpan]) -> None:
        self.spans = spans

    def on_end(self, span: ReadableSpan) -> None:
        self.spans.append(span)


def _in_process(trace_rule: bool) -> tuple[float, int, int]:
    """(process CPU s, RSS growth, spans buffered) for TRACES traces through on_end."""
    processor = OnlineEvalSpanProcessor(_config(trace_rule), exporter=InMemorySpanExporter())
    provider = TracerProvider()
    provider.add_span_processor(processor)
    kept: list[ReadableSpan] = []
    if not trace_rule:  # the baseline keeps the same spans alive itself: holding them costs
        provider.add_span_processor(_Keep(kept))  # allocation and GC time whoever holds them
    tracer = provider.get_tracer("bench")
    gc.collect()
    rss, cpu = _rss(), time.process_time()
    for _ in range(TRACES):
        _one_trace(tracer)
    processor.force_flush(600_000)
    cpu, grown = time.process_time() - cpu, _rss() - rss
    buffered = processor.stats().assembly_spans.get(("agent", "buffered"), 0)
    return cpu, grown, buffered


def _sidecar(trace_rule: bool, requests: list[bytes]) -> tuple[float, int, int]:
    """(process CPU s, RSS growth, spans buffered) for received spans submitted as ingest does."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    from otel_online_eval.engine import Engine
    from otel_online_eval.otlp._protoview import SharedResource
    from otel_online_eval.rules import LOCAL_PARENT, NO_PARENT
    from otel_online_eval.sampling import sample_hash
    from otel_online_eval.sidecar.emit_proto import ProtoEmitter  # noqa: F401
    from otel_online_eval.sidecar.ingest import make_proto_view
    from otel_online_eval.sidecar.server import _received_size

    class Sink:
        def emit(self, *a: object, **k: object) -> None: ...
        def resource_of(self, view: object) -> object: ...
        def force_flush(self, timeout_millis: int) -> bool:
            return True

        def shutdown(self, timeout_millis: int = 0) -> None: ...

    cfg = _config(trace_rule)
    engine = Engine(cfg.rules, Sink(), make_proto_view, cfg.engine, size_of=_received_size)  # type: ignore[arg-type]
    router, submit = engine.router, engine.submit
    gc.collect()
    rss, cpu = _rss(), time.process_time()
    for body in requests:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        for rs in request.resource_spans:
            resource = type(rs.resource)()
            resource.CopyFrom(rs.resource)
            shared = SharedResource(resource)
            for ss in rs.scope_spans:
                names = (ss.scope.name, ss.scope.version)
                for span in ss.spans:
                    state = LOCAL_PARENT if span.parent_span_id else NO_PARENT
                    route = router.route(span.name, state)
                    if route.rules:
                        copy = type(span)()
                        copy.CopyFrom(span)
                        tid = int.from_bytes(span.trace_id, "big")
                        submit((copy, shared, names), route, sample_hash(tid))
        del request
    engine.force_flush(600_000)
    cpu, grown = time.process_time() - cpu, _rss() - rss
    buffered = engine.stats().assembly_spans.get(("agent", "buffered"), 0)
    return cpu, grown, buffered


def _part(name: str) -> tuple[float, int, int]:
    """One measurement in a process of its own, so that each starts from a clean heap."""
    out = subprocess.run(
        [sys.executable, __file__, "--part", name], capture_output=True, text=True, check=True
    )
    cpu, grown, buffered = json.loads(out.stdout.strip().splitlines()[-1])
    return float(cpu), int(grown), int(buffered)


def _run_part(name: str) -> None:
    if name.startswith("sidecar"):
        requests = [
            encode_spans(_interleaved(_spans(100))).SerializeToString()
            for _ in range(TRACES // 100)
        ]
        result = _sidecar(name == "sidecar", requests)
    else:
        result = _in_process(name == "in-process")
    print(json.dumps(result))


def _wire_size() -> float:
    body = encode_spans(_interleaved(_spans(100))).SerializeToString()
    return len(body) / (100 * SPANS_PER_TRACE)


def _engines(otlp: float) -> None:
    n = TRACES * SPANS_PER_TRACE
    base_cpu, base_grown, _ = _part("in-process-base")
    cpu, grown, buffered = _part("in-process")
    assert buffered == n, buffered
    print(
        f"4. in-process, {TRACES} traces x {SPANS_PER_TRACE} spans through on_end, held by a "
        f"trace rule: {(cpu - base_cpu) / n * 1e6:.2f} us CPU per buffered span over a run "
        f"whose spans are kept alive by a plain list (target <= 2 us); RSS {grown / n:.0f} "
        f"bytes per span = {grown / n / otlp:.1f}x the OTLP size (target <= 2x); the spans "
        f"alone, kept by the list: {base_grown / n:.0f} bytes per span"
    )
    wire = _wire_size()
    base_cpu, _, _ = _part("sidecar-base")
    cpu, grown, buffered = _part("sidecar")
    assert buffered == n, buffered
    print(
        f"   sidecar, the same spans received ({wire:.0f} bytes per span on the wire): "
        f"{(cpu - base_cpu) / n * 1e6:.2f} us CPU per buffered span (copy, view, submit and "
        f"assembly, over parsing alone); RSS {grown / n:.0f} bytes per span = "
        f"{grown / n / wire:.1f}x the OTLP size (target <= 2x)"
    )


class _Record:
    """A probe of what a compact record of an ended span could cost (not used by the code)."""

    __slots__ = ("end", "ids", "keys", "name", "start", "status", "values")

    def __init__(self, span: ReadableSpan) -> None:
        ctx = span.context
        parent = span.parent
        assert ctx is not None
        self.ids = (ctx.trace_id, ctx.span_id, parent.span_id if parent is not None else None)
        self.name = span.name
        self.start = span.start_time
        self.end = span.end_time
        self.status = span.status.status_code.value
        attrs = span.attributes or {}
        self.keys = tuple(attrs)
        self.values = tuple(attrs.values())


if __name__ == "__main__":
    if "--part" in sys.argv:
        _run_part(sys.argv[sys.argv.index("--part") + 1])
    else:
        main()
