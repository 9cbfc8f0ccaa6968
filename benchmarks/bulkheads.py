"""Nine scorers, two of them hanging: does the good one still score every sampled span?

The scenario of issue 11: one rule with nine scorers given in code (sync unless named async):

- ``raises`` raises ``RuntimeError``; ``sync_hang`` blocks until the run ends; ``async_hang``
  awaits for ten minutes; ``nan``, ``string``, ``none`` and ``too_big`` return NaN, a string,
  None and 7.5; ``slow`` sleeps 0.2 s and scores 1; ``good`` scores 1 at once.

A real ``TracerProvider`` with the ``OnlineEvalSpanProcessor`` (eval spans to an
``InMemorySpanExporter``) ends N spans (default 50,000) as fast as it can; the rule samples 2%
of traces, every scorer has ``timeout_s`` 1 and the engine 4 threads. Then it waits for the
engine to finish (``force_flush``) and prints:

- the good scorer's coverage: spans it scored / spans the rule sampled;
- per scorer, the outcomes on the score spans: ``ok``, the error type with its message, or the
  skip with its reason;
- the spans dropped, and the wall time of the whole run.

Run: ``.venv/bin/python benchmarks/bulkheads.py`` (``--no-hang`` leaves the two hanging scorers
out, ``--spans 5000`` for a quick run). The figures go in ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)
from opentelemetry.trace import StatusCode  # noqa: E402

from otel_online_eval import EvalInput, OnlineEvalSpanProcessor, Rule  # noqa: E402
from otel_online_eval.config import EngineConfig  # noqa: E402

RELEASE = threading.Event()


def raises(inp: EvalInput) -> float:
    raise RuntimeError("boom")


def sync_hang(inp: EvalInput) -> float:
    RELEASE.wait(600)
    return 1.0


async def async_hang(inp: EvalInput) -> float:
    await asyncio.sleep(600)
    return 1.0


def nan(inp: EvalInput) -> float:
    return float("nan")


def string(inp: EvalInput) -> str:
    return "great"


def none(inp: EvalInput) -> None:
    return None


def too_big(inp: EvalInput) -> float:
    return 7.5


def slow(inp: EvalInput) -> float:
    time.sleep(0.2)
    return 1.0


def good(inp: EvalInput) -> float:
    return 1.0


def scorers(hang: bool) -> list[Callable[[EvalInput], Any]]:
    found: list[Callable[[EvalInput], Any]] = [raises, nan, string, none, too_big, slow, good]
    if hang:
        found[1:1] = [sync_hang, async_hang]
    return found


def outcome(span: Any) -> str:
    attrs = span.attributes or {}
    skipped = attrs.get("online_eval.skipped")
    if skipped is not None:
        return f"skipped ({str(skipped)[:40]})"
    if span.status.status_code is StatusCode.ERROR:
        return f"{attrs.get('error.type')} ({(span.status.description or '')[:40]})"
    return "ok"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spans", type=int, default=50_000)
    parser.add_argument("--sampling", type=float, default=0.02)
    parser.add_argument("--timeout", type=float, default=1.0, help="every scorer's timeout_s")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--no-hang", action="store_true", help="leave the hanging scorers out")
    args = parser.parse_args()

    evals = InMemorySpanExporter()
    rule = Rule.create(
        "nine", scorers(not args.no_hang), sampling=args.sampling, timeout_s=args.timeout
    )
    processor = OnlineEvalSpanProcessor(
        rules=[rule], exporter=evals, engine=EngineConfig(threads=args.threads)
    )
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("bench")
    started = time.monotonic()
    try:
        for _ in range(args.spans):
            with tracer.start_as_current_span("chat"):
                pass
        produced = time.monotonic() - started
        flushed = processor.force_flush(600_000)
        wall = time.monotonic() - started
        stats = processor.stats()
    finally:
        RELEASE.set()
        provider.shutdown()

    per_scorer: dict[str, Counter[str]] = {}
    for span in evals.get_finished_spans():
        if span.name.startswith("score "):
            name = span.name.removeprefix("score ")
            per_scorer.setdefault(name, Counter())[outcome(span)] += 1
    sampled = stats.sampled["nine"]
    good_ok = per_scorer.get("good", Counter())["ok"]
    print(
        f"spans {args.spans}, sampling {args.sampling:g}, timeout_s {args.timeout:g}, "
        f"threads {args.threads}, hanging scorers {'no' if args.no_hang else 'yes'}"
    )
    print(f"ended in {produced:.1f} s; evaluated and flushed ({flushed}) in {wall:.1f} s")
    print(f"sampled {sampled}, evaluations exported {stats.evals['nine']}, dropped {stats.dropped}")
    coverage = good_ok / sampled if sampled else 0.0
    print(f"good scorer: {good_ok} of {sampled} sampled spans scored ({coverage:.1%})")
    for name in [getattr(s, "__name__", "?") for s in scorers(not args.no_hang)]:
        counts = per_scorer.get(name, Counter())
        text = ", ".join(f"{k} {v}" for k, v in counts.most_common())
        print(f"  {name:<11} {text or '(no score spans)'}")


if __name__ == "__main__":
    main()
