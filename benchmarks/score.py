"""Throughput of ``otel-online-eval score`` (backfill) over a large OTLP/JSON file.

Builds N spans (default 100,000) with a real SDK ``TracerProvider``: GenAI chat spans (current
semantic conventions: input/output messages, model, token usage) under ``POST /support``
roots, written as OTLP/JSON lines of 512 spans each, the way a ``BatchSpanProcessor`` in front
of the ``file`` exporter writes them. Then runs ``otel-online-eval score`` as a subprocess with
heuristic scorers only (not_empty, one_of, pii, length, refusal on the chat spans; latency on
the roots) and ``--out`` to a temporary file, and prints:

- input spans per second (wall time of the whole command: reading, deciding, scoring, writing);
- evaluations and eval spans per second;
- the phases as the command itself does not time them: read-and-decide (``score --limit 0``,
  which reads and decides but scores nothing) and the rest.

Run: ``.venv/bin/python benchmarks/score.py`` (about a minute; ``--spans 10000`` for a quick
run). The figures go in ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from opentelemetry.sdk.resources import Resource  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind  # noqa: E402

from otel_online_eval.otlp_json import encode_spans_json  # noqa: E402

CONFIG = """
scorers:
  nonempty: {type: not_empty}
  category: {type: one_of, values: [billing, shipping, returns, technical, other]}
  no_pii: {type: pii, kinds: [email, phone, credit_card]}
  length: {type: length, unit: words, min: 1, max: 200}
  answered: {type: refusal}
  fast: {type: latency, target_ms: 800, max_ms: 3000}
rules:
  - name: chat-quality
    apply_to: {span_names: [chat]}
    filter: "attributes['gen_ai.operation.name'] = 'chat' AND output IS NOT NULL"
    sampling: 0.1
    scorers: [nonempty, category, no_pii, length, answered]
  - name: request-latency
    apply_to: {root_spans: true}
    scorers: [fast]
"""

ANSWERS = ["billing", "shipping", "returns", "technical", "other", "I cannot help with that."]


def chat_attrs(i: int) -> dict[str, object]:
    question = f"Where is my parcel number {i}? It was due on Monday and I need it for a trip."
    return {
        "gen_ai.operation.name": "chat",
        "gen_ai.system": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
        "gen_ai.input.messages": json.dumps(
            [{"role": "user", "parts": [{"type": "text", "content": question}]}]
        ),
        "gen_ai.output.messages": json.dumps(
            [
                {
                    "role": "assistant",
                    "parts": [{"type": "text", "content": ANSWERS[i % len(ANSWERS)]}],
                    "finish_reason": "stop",
                }
            ]
        ),
        "gen_ai.usage.input_tokens": 42,
        "gen_ai.usage.output_tokens": 3,
    }


def write_spans(path: Path, n: int, per_line: int = 512) -> None:
    """``n`` spans: one ``POST /support`` root per 4 spans, 3 ``chat`` children each."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "support-bot"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("bench.app", "1.0")
    with open(path, "w", encoding="utf-8") as f:
        made = 0
        while made < n:
            with tracer.start_as_current_span("POST /support", kind=SpanKind.SERVER):
                for _ in range(min(3, n - made - 1)):
                    with tracer.start_as_current_span(
                        "chat", kind=SpanKind.CLIENT, attributes=chat_attrs(made)
                    ):
                        made += 1
            made += 1
            if made % per_line < 4 or made >= n:
                spans = exporter.get_finished_spans()
                if len(spans) >= per_line or made >= n:
                    for start in range(0, len(spans), per_line):
                        f.write(encode_spans_json(spans[start : start + per_line]) + "\n")
                    exporter.clear()
    provider.shutdown()


def run_score(config: Path, spans: Path, out: Path, *extra: str) -> tuple[float, dict]:
    cmd = [
        sys.executable,
        "-m",
        "otel_online_eval.cli",
        "score",
        "-c",
        str(config),
        "--out",
        str(out),
        "--json",
        *extra,
        str(spans),
    ]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"score failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return elapsed, json.loads(proc.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spans", type=int, default=100_000)
    parser.add_argument(
        "--sample", action="store_true", help="apply the rules' sampling (chat-quality at 10%%)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        config, spans, out = d / "rules.yaml", d / "spans.jsonl", d / "evals.jsonl"
        config.write_text(CONFIG)
        t = time.perf_counter()
        write_spans(spans, args.spans)
        size = spans.stat().st_size
        print(
            f"input: {args.spans:,} spans, {size / 1e6:.1f} MB of OTLP/JSON "
            f"({time.perf_counter() - t:.1f} s to build)"
        )
        extra = ["--sample"] if args.sample else []
        read_s, _ = run_score(config, spans, d / "none.jsonl", "--limit", "0", *extra)
        elapsed, summary = run_score(config, spans, out, *extra)
        ev = summary["evaluations"]["done"]
        exported = summary["eval_spans"]["exported"]
        print(f"score: {elapsed:.1f} s wall for the whole command")
        print(f"  {args.spans / elapsed:,.0f} input spans/s")
        print(f"  {ev:,} evaluations ({ev / elapsed:,.0f}/s), {exported:,} eval spans written")
        print(
            f"  of which reading + deciding (score --limit 0): {read_s:.1f} s "
            f"({args.spans / read_s:,.0f} spans/s); scoring + export: {elapsed - read_s:.1f} s"
        )
        print(f"  output: {out.stat().st_size / 1e6:.1f} MB; cpus: {os.cpu_count()}")


if __name__ == "__main__":
    main()
