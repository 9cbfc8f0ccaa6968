"""What trace assembly costs per buffered span, in CPU and memory.

Prints, in one run, for 50,000 traces of 10 spans in flight at once (issue 12's load):

1. CPU per span of ``TraceAssembler.add`` (target: at most 2 µs), and per span of handing
   every trace on when it has settled (``due``);
2. the assembler's own memory per buffered span (its dicts, sets and lists), and with it what
   buffering keeps alive in-process (the SDK's ``ReadableSpan`` and its view), against the
   spans' OTLP protobuf size (target for everything buffered: at most 2x the OTLP size);
3. what encoding each span to OTLP protobuf bytes would cost instead (CPU and bytes per span,
   encoded one by one and in batches of 100), the compact form the engine could buffer.

The spans are real SDK spans (GenAI-shaped: a root, an agent span, model and tool calls, with
prompts and answers in their attributes) wrapped in ``SdkSpanView`` before the clock starts;
they arrive in the order they end (children before parents), ten traces interleaved. This is
the assembler alone: the engine does not drive it yet. Run:
``.venv/bin/python benchmarks/assembly.py`` (about 60 s, 4 GB of memory).
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
import tracemalloc

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Tracer
from opentelemetry.util.types import AttributeValue

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
    main()
