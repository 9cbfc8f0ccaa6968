"""What an LLM judge costs and how fast it goes, against a fake judge on 127.0.0.1.

Prints, in one run:

1. throughput: spans scored by an ``llm_judge`` (``concurrency: 64``) through
   ``OnlineEvalSpanProcessor`` when the judge answers after 200 ms; the bound is
   concurrency / latency = 320 evals/s (target: at least 95% of it);
2. CPU per judge call on the engine's thread (the span view, the rule, the prompt, the limits,
   the HTTP request and response, the verdict, the eval and score spans; target: under
   0.5 ms), the part of it spent in HTTP, and the whole process's CPU per call;
3. rate limiting: with ``requests_per_second: 20`` the rate at which requests reach the
   server (target: within 5% of 20/s).

The fake judge is an asyncio HTTP/1.1 server in a child process (its CPU is not counted),
answering every request with a ``select_choice`` tool call after the configured delay; it
holds any number of slow requests at once. The spans are made before the clock starts and
handed to ``on_end``: this measures the judge, not the application's span creation (which
would also compete with the engine for the GIL). Run: ``.venv/bin/python benchmarks/judge.py``
(about 30 s).
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_online_eval import OnlineEvalSpanProcessor, parse_config

LATENCY_S = 0.2
CONCURRENCY = 64
THROUGHPUT_SPANS = 3200  # 10 s of work at the bound
RATE = 20.0
RATE_SPANS = 120
HTTP_CALLS = 3200

ANSWER = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "judge-bench",
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls",
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {
                                "name": "select_choice",
                                "arguments": json.dumps(
                                    {"reasons": "It answers the question.", "choice": "relevant"}
                                ),
                            },
                        }
                    ],
                },
            }
        ],
        "usage": {"prompt_tokens": 420, "completion_tokens": 18, "total_tokens": 438},
    }
).encode()


# --- the fake judge (child process) ---------------------------------------------------------


async def _handle(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float, log: list[float]
) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if length:
                await reader.readexactly(length)
            if head.startswith(b"GET /stats"):
                body = json.dumps(log).encode()
                log.clear()
            else:
                log.append(time.time())
                if delay:
                    await asyncio.sleep(delay)
                body = ANSWER
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                + str(len(body)).encode()
                + b"\r\n\r\n"
                + body
            )
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


def _serve(delay: float, port_out: Any) -> None:
    async def main() -> None:
        log: list[float] = []
        server = await asyncio.start_server(
            lambda r, w: _handle(r, w, delay, log), "127.0.0.1", 0, backlog=1024
        )
        port_out.send(server.sockets[0].getsockname()[1])
        async with server:
            await server.serve_forever()

    asyncio.run(main())


class FakeJudge:
    """The fake judge in a child process; ``arrivals()`` returns (and clears) request times."""

    def __init__(self, delay: float) -> None:
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(delay, child), daemon=True)
        self.process.start()
        self.port = parent.recv()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"

    def arrivals(self) -> list[float]:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/stats", timeout=10) as r:
            return list(json.loads(r.read()))

    def stop(self) -> None:
        self.process.terminate()
        self.process.join(5)


# --- the application side -------------------------------------------------------------------


class Counting(SpanExporter):
    def __init__(self) -> None:
        self.count = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.count += len(spans)
        return SpanExportResult.SUCCESS


ATTRS = {
    "gen_ai.operation.name": "chat",
    "gen_ai.request.model": "app-model",
    "gen_ai.input.messages": json.dumps(
        [{"role": "user", "parts": [{"type": "text", "content": "What is the capital of France?"}]}]
    ),
    "gen_ai.output.messages": json.dumps(
        [
            {
                "role": "assistant",
                "parts": [{"type": "text", "content": "Paris is the capital of France. " * 8}],
            }
        ]
    ),
}


def _processor(base_url: str, limits: dict[str, Any]) -> OnlineEvalSpanProcessor:
    config = parse_config(
        {
            "scorers": {
                "relevance": {
                    "type": "llm_judge",
                    "base_url": base_url,
                    "model": "judge-bench",
                    "api_key": "bench",
                    "template": "relevance",
                    "limits": limits,
                    "timeout_s": 60,
                }
            },
            "rules": [
                {"name": "quality", "apply_to": {"span_names": ["chat"]}, "scorers": ["relevance"]}
            ],
            "engine": {"queue_size": 8192, "max_concurrent_evals": CONCURRENCY},
        }
    )
    return OnlineEvalSpanProcessor(
        config, exporter=Counting(), span_processor=SimpleSpanProcessor(Counting())
    )


def _engine_thread_time(processor: OnlineEvalSpanProcessor) -> float:
    """CPU seconds the engine's loop thread has used (read on that thread)."""
    loop = processor._engine._loop
    done = threading.Event()
    out: list[float] = []

    def read() -> None:
        out.append(time.thread_time())
        done.set()

    loop.call_soon_threadsafe(read)
    done.wait(10)
    return out[0]


def _ended_spans(n: int) -> list[ReadableSpan]:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("bench")
    for _ in range(n):
        with tracer.start_as_current_span("chat", attributes=ATTRS):
            pass
    return list(memory.get_finished_spans())


def _run(base_url: str, limits: dict[str, Any], spans: int) -> dict[str, float]:
    processor = _processor(base_url, limits)
    ended = _ended_spans(spans + CONCURRENCY)
    # Warm up: the HTTP client, its connections, imports.
    for span in ended[:CONCURRENCY]:
        processor.on_end(span)
    assert processor.force_flush(60_000)
    cpu_engine = _engine_thread_time(processor)
    cpu_process = time.process_time()
    start = time.perf_counter()
    for span in ended[CONCURRENCY:]:
        processor.on_end(span)
    assert processor.force_flush(120_000)
    wall = time.perf_counter() - start
    cpu_engine = _engine_thread_time(processor) - cpu_engine
    cpu_process = time.process_time() - cpu_process
    stats = processor.stats()
    ok = stats.scores.get(("quality", "relevance", "ok"), 0)
    bad = {k[2]: v for k, v in stats.scores.items() if k[2] != "ok"}
    processor.shutdown()
    if ok != spans + CONCURRENCY or bad:
        print(f"  !! outcomes: ok={ok} others={bad}", file=sys.stderr)
    return {"wall": wall, "cpu_engine": cpu_engine, "cpu_process": cpu_process}


class _Sleeper:
    """An async scorer that waits like the judge and does nothing else."""

    name = "relevance"

    async def score(self, inp: Any) -> Any:
        await asyncio.sleep(LATENCY_S)
        return {"score": 1.0, "label": "relevant", "explanation": "It answers the question."}


def _engine_ceiling(spans: int) -> dict[str, float]:
    """The same pipeline with a scorer that only sleeps 200 ms: what the engine itself allows."""
    from otel_online_eval import Rule
    from otel_online_eval.config import EngineConfig

    processor = OnlineEvalSpanProcessor(
        rules=[Rule.create("quality", [_Sleeper()], span_names=["chat"], timeout_s=60)],
        exporter=Counting(),
        span_processor=SimpleSpanProcessor(Counting()),
        engine=EngineConfig(queue_size=8192, max_concurrent_evals=CONCURRENCY),
    )
    ended = _ended_spans(spans + CONCURRENCY)
    for span in ended[:CONCURRENCY]:
        processor.on_end(span)
    assert processor.force_flush(60_000)
    cpu = _engine_thread_time(processor)
    start = time.perf_counter()
    for span in ended[CONCURRENCY:]:
        processor.on_end(span)
    assert processor.force_flush(120_000)
    wall = time.perf_counter() - start
    cpu = _engine_thread_time(processor) - cpu
    processor.shutdown()
    return {"wall": wall, "cpu_engine": cpu}


def _http_floor(base_url: str) -> float:
    """CPU per request of the same POST through the judge's HTTP transport alone, 64 at a time
    (no judge logic, no engine): the part of a judge call that is HTTP."""
    from otel_online_eval.scorers.judge._http import AiohttpTransport

    body = b'{"model": "judge-bench", "messages": []}' + b" " * 2500

    async def go() -> float:
        client = AiohttpTransport(
            base_url + "/chat/completions",
            headers={"Authorization": "Bearer x", "Content-Type": "application/json"},
            concurrency=CONCURRENCY,
            max_body=4 << 20,
        )

        async def one() -> bytes:
            return (await client.post(body, 8.0)).body

        await asyncio.gather(*[one() for _ in range(CONCURRENCY)])
        start = time.thread_time()
        for _ in range(HTTP_CALLS // CONCURRENCY):
            await asyncio.gather(*[one() for _ in range(CONCURRENCY)])
        spent = (time.thread_time() - start) / HTTP_CALLS
        await client.aclose()
        return spent

    return asyncio.run(go())


def main() -> None:
    load = ", load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"Python {sys.version.split()[0]}, {multiprocessing.cpu_count()} CPUs{load}")
    judge = FakeJudge(LATENCY_S)
    try:
        bound = CONCURRENCY / LATENCY_S
        r = _run(judge.base_url, {"concurrency": CONCURRENCY}, THROUGHPUT_SPANS)
        judge.arrivals()
        rate = THROUGHPUT_SPANS / r["wall"]
        engine_ms = r["cpu_engine"] / THROUGHPUT_SPANS * 1000
        process_ms = r["cpu_process"] / THROUGHPUT_SPANS * 1000
        print(
            f"\n1. throughput, judge latency {LATENCY_S * 1000:.0f} ms, "
            f"concurrency {CONCURRENCY}: {THROUGHPUT_SPANS} evals in {r['wall']:.2f} s"
        )
        print(
            f"   {rate:.1f} evals/s; bound {bound:.0f}/s; ratio {rate / bound:.3f} "
            f"(target >= 0.95: {'met' if rate / bound >= 0.95 else 'MISSED'})"
        )
    finally:
        judge.stop()
    ceiling = _engine_ceiling(THROUGHPUT_SPANS)
    c_rate = THROUGHPUT_SPANS / ceiling["wall"]
    print(
        f"   the engine alone (a scorer that only sleeps {LATENCY_S * 1000:.0f} ms): "
        f"{c_rate:.1f} evals/s, ratio {c_rate / bound:.3f}, "
        f"{ceiling['cpu_engine'] / THROUGHPUT_SPANS * 1000:.3f} ms engine CPU per eval"
    )
    judge = FakeJudge(0.0)
    try:
        http_ms = _http_floor(judge.base_url) * 1000
        print(
            f"2. CPU per judge call: engine thread {engine_ms:.3f} ms "
            f"(target < 0.5 ms: {'met' if engine_ms < 0.5 else 'MISSED'}), of which HTTP "
            f"(the judge's aiohttp transport and its socket calls, measured alone) "
            f"{http_ms:.3f} ms; "
            f"whole process {process_ms:.3f} ms"
        )
        limits = {"concurrency": CONCURRENCY, "requests_per_second": RATE}
        judge.arrivals()
        _run(judge.base_url, limits, RATE_SPANS)
        times = sorted(judge.arrivals())[-RATE_SPANS:]
        measured = (len(times) - 1) / (times[-1] - times[0])
        print(
            f"3. rate limit {RATE:g} requests/s: {len(times)} requests over "
            f"{times[-1] - times[0]:.2f} s = {measured:.2f}/s; ratio {measured / RATE:.3f} "
            f"(target within 5%: {'met' if abs(measured / RATE - 1) <= 0.05 else 'MISSED'})"
        )
    finally:
        judge.stop()


if __name__ == "__main__":
    main()
