"""A flood of traces whose root never ends: trace rules hold them within
``engine.assembly.max_bytes``, measured as the process's resident memory (each run in a process
of its own, so that the figure is the run's)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.slow

_FLOOD = textwrap.dedent(
    """
    import gc, json, sys
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
    from otel_online_eval import OnlineEvalSpanProcessor, parse_config

    class Null(SpanExporter):
        def export(self, spans):
            return SpanExportResult.SUCCESS

    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096

    max_bytes = int(sys.argv[1])
    config = parse_config({
        "scorers": {"errors": {"type": "tool_errors"}},
        "rules": [{"name": "agent", "scope": "trace", "scorers": ["errors"],
                   "completion": {"settle_s": 300, "idle_s": 300, "max_wait_s": 600}}],
        "engine": {"queue_size": 100000, "assembly": {"max_bytes": max_bytes,
                                                      "max_traces": 1000000}},
    })
    processor = OnlineEvalSpanProcessor(config, exporter=Null())
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("flood")
    prompt = "x" * 2000
    gc.collect()
    before, peak = rss(), 0
    for i in range(15000):
        root = tracer.start_span("never-ends")  # never ended: the trace never completes
        ctx = trace.set_span_in_context(root)
        for _ in range(5):
            tracer.start_span("chat", context=ctx, attributes={"gen_ai.prompt": prompt}).end()
        if i % 1000 == 0:
            processor.force_flush(30000)
            peak = max(peak, rss() - before)
    processor.force_flush(30000)
    peak = max(peak, rss() - before)
    stats = processor.stats()
    print(json.dumps({
        "peak": peak,
        "held": stats.assembly_buffered_bytes["agent"],
        "evicted": stats.assembly_evicted[("agent", "max_bytes")],
    }))
    """
)


def _flood(max_bytes: int) -> dict[str, int]:
    out = subprocess.run(
        [sys.executable, "-c", _FLOOD, str(max_bytes)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    result: dict[str, int] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_a_flood_of_traces_that_never_end_stays_within_max_bytes() -> None:
    bound = 24 << 20
    held = _flood(bound)
    # 75,000 spans of about 5 KB each reached the rule; it held at most 24 MiB of them.
    assert held["evicted"] > 10_000
    assert held["held"] <= bound
    # What the process kept: the bound, the estimate's error and the interpreter's own slack.
    assert held["peak"] < bound + (40 << 20), held
    # The same flood with room for everything: the bound is what kept the memory down.
    unbounded = _flood(4 << 30)
    assert unbounded["evicted"] == 0
    assert unbounded["peak"] > 3 * held["peak"], (held, unbounded)
