"""A small "support assistant" traced with OpenTelemetry and scored online.

Each request is a root ``POST /support`` span with LLM calls under it: a ``categorize-message``
classifier, an ``extract-order`` call that should answer JSON, and a ``chat`` answer with GenAI
semantic-convention attributes. Some answers are deliberately bad (unknown categories, broken
JSON, PII, refusals). The spans go through ``OnlineEvalSpanProcessor`` with
``config/rules.yaml``; eval spans are collected in memory (no network) and summarised.

Run: ``make demo`` (or ``python examples/demo_app.py [--requests N] [--config FILE]``).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer, set_span_in_context

from otel_online_eval import OnlineEvalSpanProcessor

ROOT = Path(__file__).resolve().parent.parent

QUESTIONS = [
    ("I was charged twice for my subscription this month.", "billing"),
    ("Where is my parcel? It has been 10 days.", "shipping"),
    ("How do I send back the shoes I ordered?", "returns"),
    ("The app crashes when I open settings.", "technical"),
    ("Can you change the delivery address for ORD-4411?", "shipping"),
]
ANSWERS = [
    "I'm sorry about the double charge. I have refunded the second payment; it will show "
    "within 5 business days.",
    "Your parcel left our warehouse on Monday and should arrive tomorrow.",
    "You can return the shoes within 30 days from the Orders page: choose Return item.",
    "Please update the app to version 4.2, which fixes the crash in settings.",
]
BAD_ANSWERS = [
    "I'm sorry, but I can't help with that request.",
    "Sure, write to jane.doe@example.com or call +1 415 555 0100 and quote card "
    "4111 1111 1111 1111.",
    "",
    "ok",
]


class SeededIds(IdGenerator):
    """Reproducible ids so that sampling picks the same traces on every run."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)

    def generate_span_id(self) -> int:
        return self._rng.getrandbits(64) or 1

    def generate_trace_id(self) -> int:
        return self._rng.getrandbits(128) or 1


def _messages(role: str, text: str) -> str:
    return json.dumps([{"role": role, "parts": [{"type": "text", "content": text}]}])


def _llm_span(
    tracer: Tracer,
    name: str,
    model: str,
    prompt: str,
    answer: str | None,
    rng: random.Random,
    clock: list[int],
) -> None:
    start = clock[0]
    duration = int(rng.uniform(0.2, 1.6) * 1e9)
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": model,
        "gen_ai.response.model": model + "-2024-07-18",
        "gen_ai.request.temperature": 0.2,
        "gen_ai.request.max_tokens": 512,
        "gen_ai.usage.input_tokens": rng.randint(80, 1400),
        "gen_ai.usage.output_tokens": rng.randint(5, 400),
        "gen_ai.response.finish_reasons": ("stop",),
        "gen_ai.input.messages": _messages("user", prompt),
        "server.address": "api.openai.com",
    }
    if answer is not None:
        attrs["gen_ai.output.messages"] = _messages("assistant", answer)
    span = tracer.start_span(f"{name}", kind=SpanKind.CLIENT, attributes=attrs, start_time=start)
    if answer is None:
        span.set_status(Status(StatusCode.ERROR, "upstream returned 500"))
        span.set_attribute("error.type", "500")
    span.end(end_time=start + duration)
    clock[0] = start + duration


def run_app(tracer: Tracer, requests: int, seed: int) -> None:
    rng = random.Random(seed)
    clock = [time.time_ns() - requests * 5_000_000_000]
    for _ in range(requests):
        question, category = rng.choice(QUESTIONS)
        start = clock[0]
        root = tracer.start_span(
            "POST /support",
            kind=SpanKind.SERVER,
            start_time=start,
            attributes={"http.request.method": "POST", "http.route": "/support"},
        )
        ctx = set_span_in_context(root)
        with tracer.start_as_current_span(
            "handle", context=ctx, start_time=start, end_on_exit=False
        ) as handle:
            label = category if rng.random() > 0.15 else rng.choice(["Billing!", "unsure"])
            _llm_span(tracer, "categorize-message", "gpt-4o-mini", question, label, rng, clock)
            order = {"order_id": f"ORD-{rng.randint(1000, 9999)}", "items": [{"sku": "A1"}]}
            roll = rng.random()
            order_text = (
                json.dumps(order)
                if roll > 0.25
                else json.dumps({"order_id": "unknown"})
                if roll > 0.1
                else '{"order_id": "ORD-1", "items": ['
            )
            _llm_span(tracer, "extract-order", "gpt-4o-mini", question, order_text, rng, clock)
            roll = rng.random()
            answer = (
                rng.choice(ANSWERS)
                if roll > 0.3
                else None
                if roll < 0.05
                else rng.choice(BAD_ANSWERS)
            )
            _llm_span(
                tracer,
                "chat",
                rng.choice(["gpt-4o", "gpt-4o-mini", "claude-3-5"]),
                question,
                answer,
                rng,
                clock,
            )
        handle.end(end_time=clock[0])  # on the demo's clock, as every other span
        root.end(end_time=clock[0] + 5_000_000)
        clock[0] += 50_000_000


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(out)


def report(processor: OnlineEvalSpanProcessor, spans: tuple[ReadableSpan, ...]) -> str:
    stats = processor.stats()
    values: dict[tuple[str, str], list[float]] = defaultdict(list)
    labels: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    errors: dict[tuple[str, str], int] = defaultdict(int)
    for span in spans:
        attrs = span.attributes or {}
        if "online_eval.scorer" not in attrs:
            continue
        key = (str(attrs["online_eval.rule"]), str(attrs["online_eval.scorer"]))
        if span.status.status_code is StatusCode.ERROR:
            errors[key] += 1
            continue
        value = attrs.get("gen_ai.evaluation.score.value")
        if isinstance(value, (int, float)):
            values[key].append(float(value))
        label = attrs.get("gen_ai.evaluation.score.label")
        if label is not None:
            labels[key][str(label)] += 1
    parts = [
        f"{stats.seen} spans ended; "
        f"dropped: {sum(stats.dropped.values())}; queue now: {stats.queue_size}",
        "",
    ]
    for rule in processor.rules:
        n = rule.name
        parts.append(f"rule {n} — {rule.description}")
        parts.append(
            f"  seen {stats.seen}  matched {stats.selected.get(n, 0)}  "
            f"sampled {stats.sampled.get(n, 0)}  "
            f"filtered out {stats.filtered_out.get(n, 0)}  "
            f"scored {stats.evals.get(n, 0)}"
        )
        rows = []
        for use in rule.scorers:
            key = (n, use.name)
            vals = values.get(key, [])
            top = sorted(labels.get(key, {}).items(), key=lambda kv: -kv[1])[:3]
            rows.append(
                [
                    use.name,
                    str(len(vals) + errors.get(key, 0)),
                    f"{statistics.fmean(vals):.2f}" if vals else "-",
                    f"{sum(v >= 0.5 for v in vals) / len(vals):.0%}" if vals else "-",
                    str(errors.get(key, 0)),
                    ", ".join(f"{k} x{v}" for k, v in top) or "-",
                ]
            )
        table = _table(["scorer", "scores", "mean", ">=0.5", "errors", "labels"], rows)
        parts.append("    " + table.replace("\n", "\n    "))
        parts.append("")
    return "\n".join(parts)


def example_tree(spans: tuple[ReadableSpan, ...]) -> str:
    failing = {
        s.parent.span_id
        for s in spans
        if s.parent is not None
        and s.attributes
        and s.name.startswith("score ")
        and s.attributes.get("gen_ai.evaluation.score.value", 1.0) < 1.0
    }
    evals = [s for s in spans if s.name.startswith("eval ") and s.context is not None]
    # Show an evaluation where something failed: that is what the eval spans are for.
    evals = [s for s in evals if s.context and s.context.span_id in failing] or evals
    if not evals:
        return "(no eval spans)"
    ev = max(evals, key=lambda s: (s.attributes or {}).get("online_eval.scorers.ran", 0))
    assert ev.context is not None and ev.parent is not None
    lines = [
        f"scored span {ev.parent.span_id:016x} in trace {ev.context.trace_id:032x}",
        f" └─ {ev.name}  (links to {ev.links[0].context.span_id:016x})",
    ]
    for s in spans:
        if s.parent is not None and s.parent.span_id == ev.context.span_id:
            a = s.attributes or {}
            what = (
                f"value={a.get('gen_ai.evaluation.score.value')} "
                f"label={a.get('gen_ai.evaluation.score.label')}"
            )
            if s.status.status_code is StatusCode.ERROR:
                what = f"ERROR {s.status.description}"
            lines.append(f"     └─ {s.name}: {what}")
            if a.get("gen_ai.evaluation.explanation"):
                lines.append(f"          {a['gen_ai.evaluation.explanation']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "config" / "rules.yaml"))
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)

    exporter = InMemorySpanExporter()
    processor = OnlineEvalSpanProcessor.from_yaml(args.config, exporter=exporter)
    provider = TracerProvider(
        resource=Resource.create({"service.name": "support-assistant"}),
        id_generator=SeededIds(args.seed),
    )
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("demo")

    started = time.perf_counter()
    run_app(tracer, args.requests, args.seed)
    app_time = time.perf_counter() - started
    # Trace rules score a trace once it is complete and has settled: wait for that, briefly.
    deadline = time.monotonic() + 10
    while sum(processor.stats().assembly_buffered_traces.values()) and time.monotonic() < deadline:
        time.sleep(0.05)
    if not processor.force_flush(30_000):
        print("evaluation did not finish within 30 s", file=sys.stderr)
        return 1
    spans = exporter.get_finished_spans()
    print(
        f"support-assistant: {args.requests} requests traced in {app_time * 1000:.0f} ms; "
        f"{sum(s.name.startswith('eval ') for s in spans)} eval spans, "
        f"{sum(s.name.startswith('score ') for s in spans)} score spans exported\n"
    )
    print(report(processor, spans))
    print("One evaluation as exported (eval span + score spans):")
    print(example_tree(spans))
    provider.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
