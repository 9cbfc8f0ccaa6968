"""What online evaluation costs the application, and how fast it scores.

Prints, in one run:

1. app-thread cost per span (start + end of a span with 12 GenAI attributes and a 1 KB prompt)
   with no processor, with the SDK's BatchSpanProcessor, and with OnlineEvalSpanProcessor
   running 10 rules (mixed apply_to, filters, sampling 0.1); the added cost of each, and the
   ratio (target: ours <= 0.5 x BatchSpanProcessor's);
2. the same for ``on_end`` alone, called on already-ended spans (no span creation noise);
3. latency from span end to the eval span reaching the exporter (p50 / p99), at a steady
   200 spans/s, exporting at once (the engine's own latency) and through a batch processor
   with a 100 ms delay;
4. scored spans per second, and per CPU-second, with heuristic scorers on every span;
5. with trace rules: ``on_end`` with the 10 rules plus 2 trace rules (sampling 0.1), against
   BatchSpanProcessor's (target: <= 0.5x), and the time from a trace's root end to its trace
   eval span's export (p50 / p99) with the default ``settle_s`` (2 s).

Run: ``.venv/bin/python benchmarks/hotpath.py`` (about a minute on 2 cores).
"""

from __future__ import annotations

import gc
import json
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace import set_span_in_context

from otel_online_eval import OnlineEvalSpanProcessor, parse_config

PROMPT = ("Please summarise the following customer message and classify it. " * 16)[:1024]
ATTRS: dict[str, Any] = {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "openai",
    "gen_ai.request.model": "gpt-4o-mini",
    "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
    "gen_ai.request.temperature": 0.2,
    "gen_ai.request.max_tokens": 512,
    "gen_ai.usage.input_tokens": 412,
    "gen_ai.usage.output_tokens": 57,
    "gen_ai.response.finish_reasons": ("stop",),
    "gen_ai.response.id": "chatcmpl-123",
    "gen_ai.input.messages": json.dumps(
        [{"role": "user", "parts": [{"type": "text", "content": PROMPT}]}]
    ),
    "gen_ai.output.messages": json.dumps(
        [{"role": "assistant", "parts": [{"type": "text", "content": "billing"}]}]
    ),
}

SCORERS = {
    "not_empty": {"type": "not_empty"},
    "latency": {"type": "latency", "max_ms": 2000},
    "category": {"type": "one_of", "values": ["billing", "shipping", "other"]},
    "json": {"type": "valid_json"},
    "tokens": {"type": "token_usage", "max_total_tokens": 2000},
    "pii": {"type": "pii"},
    "refusal": {"type": "refusal"},
    "length": {"type": "length", "unit": "words", "max": 200},
}


def ten_rules(rate: float) -> dict[str, Any]:
    def rule(name: str, scorers: list[str], **extra: Any) -> dict[str, Any]:
        return {"name": name, "sampling": rate, "scorers": scorers, **extra}

    chat = "attributes['gen_ai.operation.name'] = 'chat' AND output IS NOT NULL"
    return {
        "scorers": SCORERS,
        "rules": [
            rule("chat-not-empty", ["not_empty"], apply_to={"span_names": ["chat"]}, filter=chat),
            rule("root-latency", ["latency"], apply_to={"root_spans": True}),
            rule("category", ["category"], apply_to={"span_names": ["categorize-message"]}),
            rule("order-json", ["json"], apply_to={"span_names": ["extract-order"]}),
            rule("gpt4o-tokens", ["tokens"], filter="model LIKE 'gpt-4o%'"),
            rule("pii", ["pii"], apply_to={"span_names": ["chat", "summarize"]}),
            rule("errors", ["not_empty"], filter="status = 'ERROR'"),
            rule("refusal", ["refusal"], apply_to={"span_names": ["chat"]}),
            rule("length", ["length"], apply_to={"root_spans": True, "span_names": ["chat"]}),
            rule("slow", ["latency"], filter="duration_ms > 1000"),
        ],
        "engine": {"queue_size": 100_000, "max_concurrent_evals": 256},
    }


def with_trace_rules(rate: float, completion: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ten rules plus two trace rules (``scope: trace``), as an agent's app would have."""
    config = ten_rules(rate)
    config["scorers"] = {
        **SCORERS,
        "tool_errors": {"type": "tool_errors"},
        "steps": {"type": "step_budget", "max_llm_calls": 10},
    }
    trace = {
        "scope": "trace",
        "sampling": rate,
        **({"completion": completion} if completion else {}),
    }
    config["rules"] = [
        *config["rules"],
        {"name": "agent-tools", "scorers": ["tool_errors"], **trace},
        {"name": "agent-steps", "scorers": ["steps"], "filter": "trace.llm_calls > 0", **trace},
    ]
    return config


class NullExporter(SpanExporter):
    def __init__(self) -> None:
        self.count = 0
        self.times: list[tuple[int, ReadableSpan]] = []
        self.record = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        now = time.time_ns()
        self.count += len(spans)
        if self.record:
            self.times.extend((now, s) for s in spans if s.name.startswith("eval "))
        return SpanExportResult.SUCCESS


def app_loop(processors: Sequence[SpanProcessor], n: int) -> tuple[float, float]:
    """(CPU us of the app thread, wall us) per span."""
    provider = TracerProvider()
    for p in processors:
        provider.add_span_processor(p)
    tracer = provider.get_tracer("bench")
    gc.collect()
    cpu, wall = time.thread_time(), time.perf_counter()
    for _ in range(n):
        tracer.start_span("chat", attributes=ATTRS).end()
    cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
    provider.shutdown()
    return cpu / n * 1e6, wall / n * 1e6


def ended_spans(n: int) -> list[ReadableSpan]:
    spans: list[ReadableSpan] = []

    class Keep(SpanProcessor):
        def on_end(self, span: ReadableSpan) -> None:
            spans.append(span)

    provider = TracerProvider()
    provider.add_span_processor(Keep())
    tracer = provider.get_tracer("bench")
    for _ in range(n):
        tracer.start_span("chat", attributes=ATTRS).end()
    return spans


def on_end_cost(processor: SpanProcessor, spans: Sequence[ReadableSpan]) -> tuple[float, float]:
    """(CPU us of the calling thread, wall us) per on_end call."""
    on_end = processor.on_end
    gc.collect()
    cpu, wall = time.thread_time(), time.perf_counter()
    for span in spans:
        on_end(span)
    cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
    processor.shutdown()
    return cpu / len(spans) * 1e6, wall / len(spans) * 1e6


def bsp() -> BatchSpanProcessor:
    return BatchSpanProcessor(NullExporter())


def ours(rate: float = 0.1) -> OnlineEvalSpanProcessor:
    return OnlineEvalSpanProcessor(parse_config(ten_rules(rate)), exporter=NullExporter())


def interleaved(
    runs: int, configs: dict[str, Callable[[], tuple[float, float]]]
) -> dict[str, tuple[float, float]]:
    """Median of ``runs`` rounds, each round running every config once, so that drift in
    the machine's speed hits them all alike."""
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in configs}
    for _ in range(runs):
        for name, fn in configs.items():
            results[name].append(fn())
    return {
        name: (statistics.median(r[0] for r in rs), statistics.median(r[1] for r in rs))
        for name, rs in results.items()
    }


def app_thread_costs(n: int, runs: int) -> None:
    measured = interleaved(
        runs,
        {
            "no processor": lambda: app_loop([], n),
            "BatchSpanProcessor": lambda: app_loop([bsp()], n),
            "OnlineEvalSpanProcessor": lambda: app_loop([ours()], n),
            "both": lambda: app_loop([bsp(), ours()], n),
        },
    )
    base = measured.pop("no processor")
    rows = list(measured.items())
    print(
        f"1. app thread, start+end of one span ({n} spans a run, median of {runs} interleaved runs)"
    )
    print("   CPU = the app thread's own CPU time (time.thread_time); wall = elapsed, which also")
    print("   counts the GIL time background threads (BSP's worker, our evaluations) take.")
    print(f"   {'':26}{'CPU us':>9}{'added':>8}{'wall us':>10}{'added':>8}")
    print(f"   {'no processor':26}{base[0]:9.2f}{'':8}{base[1]:10.2f}")
    added = {}
    for name, (cpu, wall) in rows:
        added[name] = (cpu - base[0], wall - base[1])
        print(f"   {name:26}{cpu:9.2f}{cpu - base[0]:8.2f}{wall:10.2f}{wall - base[1]:8.2f}")
    ours_cpu, ours_wall = added["OnlineEvalSpanProcessor"]
    bsp_cpu, bsp_wall = added["BatchSpanProcessor"]
    print(
        f"   ratio ours/BSP added: CPU {ours_cpu / bsp_cpu:.2f}, wall {ours_wall / bsp_wall:.2f}"
        "   (target <= 0.50)"
    )

    spans = ended_spans(n)
    costs = interleaved(
        runs,
        {
            "bsp": lambda: on_end_cost(bsp(), spans),
            "ours": lambda: on_end_cost(ours(), spans),
            "none": lambda: on_end_cost(ours(0.0), spans),
        },
    )
    cost_bsp, cost_ours, cost_none = costs["bsp"], costs["ours"], costs["none"]
    print(f"2. on_end alone, called on {n} ended spans (median of {runs} interleaved runs)")
    print(f"   {'':44}{'CPU us':>8}{'wall us':>9}")
    print(f"   {'BatchSpanProcessor.on_end':44}{cost_bsp[0]:8.2f}{cost_bsp[1]:9.2f}")
    print(
        f"   {'OnlineEvalSpanProcessor.on_end, 10 rules @0.1':44}{cost_ours[0]:8.2f}"
        f"{cost_ours[1]:9.2f}"
    )
    print(
        f"   {'OnlineEvalSpanProcessor.on_end, 10 rules @0':44}{cost_none[0]:8.2f}"
        f"{cost_none[1]:9.2f}   (routing only, nothing queued)"
    )
    print(
        f"   ratio ours/BSP: CPU {cost_ours[0] / cost_bsp[0]:.2f}, "
        f"wall {cost_ours[1] / cost_bsp[1]:.2f}"
    )


def latency(seconds: float, per_second: int, batched: bool) -> None:
    exporter = NullExporter()
    exporter.record = True
    config = ten_rules(1.0)
    config["export"] = {"console": {}, "batch": {"schedule_delay_ms": 100}}
    if batched:
        processor = OnlineEvalSpanProcessor(parse_config(config), exporter=exporter)
    else:  # export each eval span at once: the engine's own latency
        processor = OnlineEvalSpanProcessor(
            parse_config(config), span_processor=SimpleSpanProcessor(exporter)
        )
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("bench")
    ends: dict[int, int] = {}
    total = int(seconds * per_second)
    start = time.perf_counter()
    for i in range(total):
        target = start + i / per_second
        delay = target - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        span = tracer.start_span("chat", attributes=ATTRS)
        span.end()
        ends[span.get_span_context().span_id] = span.end_time or 0
    processor.force_flush(30_000)
    lat = sorted(
        (t - ends[s.parent.span_id]) / 1e6
        for t, s in exporter.times
        if s.parent is not None and s.parent.span_id in ends
    )
    provider.shutdown()
    p50 = lat[len(lat) // 2]
    p99 = lat[int(len(lat) * 0.99)]
    how = "BatchSpanProcessor, 100 ms delay" if batched else "SimpleSpanProcessor"
    print(
        f"3. span end -> eval span exported, {per_second} spans/s for {seconds:g} s, all 10 "
        f"rules at 1.0, {how} ({len(lat)} eval spans)"
    )
    print(f"   p50 {p50:7.1f} ms   p99 {p99:7.1f} ms   max {lat[-1]:7.1f} ms")


def throughput(n: int) -> None:
    exporter = NullExporter()
    processor = OnlineEvalSpanProcessor(parse_config(ten_rules(1.0)), exporter=exporter)
    spans = ended_spans(n)
    gc.collect()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for span in spans:
        processor.on_end(span)
    ok = processor.force_flush(600_000)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    stats = processor.stats()
    evals = sum(stats.evals.values())
    scores = sum(v for (_, _, outcome), v in stats.scores.items() if outcome == "ok")
    processor.shutdown()
    print(
        f"4. throughput: {n} spans, 10 rules at 1.0 (8 select each span, 6 score it), "
        f"heuristic scorers{'' if ok else ' (FLUSH TIMED OUT)'}"
    )
    print(f"   {n / wall:8.0f} scored spans/s wall   {n / cpu:8.0f} scored spans per CPU-second")
    print(
        f"   {evals / wall:8.0f} evals/s wall          {scores / wall:8.0f} scores/s wall "
        f"({evals} evals, {scores} scores, {exporter.count} spans exported, "
        f"{threading.active_count()} threads)"
    )


def trace_rule_costs(n: int, runs: int) -> None:
    spans = ended_spans(n)
    costs = interleaved(
        runs,
        {
            "bsp": lambda: on_end_cost(bsp(), spans),
            "ours": lambda: on_end_cost(ours(), spans),
            "traces": lambda: on_end_cost(
                OnlineEvalSpanProcessor(
                    parse_config(with_trace_rules(0.1)), exporter=NullExporter()
                ),
                spans,
            ),
        },
    )
    cost_bsp, cost_ours, cost_traces = costs["bsp"], costs["ours"], costs["traces"]
    print(f"5. on_end with trace rules, {n} ended spans (median of {runs} interleaved runs)")
    print(f"   {'':44}{'CPU us':>8}{'wall us':>9}")
    print(f"   {'BatchSpanProcessor.on_end':44}{cost_bsp[0]:8.2f}{cost_bsp[1]:9.2f}")
    print(f"   {'ours, 10 span rules @0.1':44}{cost_ours[0]:8.2f}{cost_ours[1]:9.2f}")
    print(
        f"   {'ours, 10 span rules + 2 trace rules @0.1':44}{cost_traces[0]:8.2f}"
        f"{cost_traces[1]:9.2f}"
    )
    print(
        f"   ratio with trace rules / BSP: CPU {cost_traces[0] / cost_bsp[0]:.2f}, "
        f"wall {cost_traces[1] / cost_bsp[1]:.2f}   (target <= 0.50)"
    )


def trace_latency(seconds: float, per_second: int) -> None:
    """Root end -> trace eval span exported, default completion (settle_s 2)."""
    exporter = NullExporter()
    exporter.record = True
    processor = OnlineEvalSpanProcessor(
        parse_config(with_trace_rules(1.0)), span_processor=SimpleSpanProcessor(exporter)
    )
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("bench")
    ends: dict[int, int] = {}
    total = int(seconds * per_second)
    start = time.perf_counter()
    for i in range(total):
        delay = start + i / per_second - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        root = tracer.start_span("invoke_agent")
        ctx = set_span_in_context(root)
        for _ in range(3):
            tracer.start_span("chat", context=ctx, attributes=ATTRS).end()
        root.end()
        ends[root.get_span_context().span_id] = root.end_time or 0
    deadline = time.monotonic() + 30
    want = 2 * total
    while time.monotonic() < deadline:
        got = sum(1 for _, s in exporter.times if s.name.startswith("eval agent-"))
        if got >= want:
            break
        time.sleep(0.1)
    lat = sorted(
        (t - ends[s.parent.span_id]) / 1e6
        for t, s in exporter.times
        if s.name.startswith("eval agent-") and s.parent is not None and s.parent.span_id in ends
    )
    provider.shutdown()
    p50 = lat[len(lat) // 2]
    p99 = lat[int(len(lat) * 0.99)]
    print(
        f"6. trace root end -> trace eval span exported, {per_second} traces/s (4 spans each) "
        f"for {seconds:g} s, 2 trace rules at 1.0, default completion (settle_s 2), "
        f"SimpleSpanProcessor ({len(lat)} eval spans)"
    )
    print(f"   p50 {p50:7.1f} ms   p99 {p99:7.1f} ms   max {lat[-1]:7.1f} ms")


def main() -> int:
    quick = "--quick" in sys.argv
    app_thread_costs(5_000 if quick else 10_000, 5 if quick else 15)
    latency(2 if quick else 10, 200, batched=False)
    latency(2 if quick else 10, 200, batched=True)
    throughput(2_000 if quick else 20_000)
    trace_rule_costs(5_000 if quick else 10_000, 5 if quick else 15)
    trace_latency(3 if quick else 10, 20)
    return 0


if __name__ == "__main__":
    sys.exit(main())
