"""Make docs/images/phoenix-annotations.png: a real Phoenix (``.venv-phoenix``, built by ``make
phoenix``) with one judged ``chat`` span, its scores written as span annotations by the
``export.phoenix`` sink, photographed by headless Chromium on the span's page.

    .venv/bin/python benchmarks/phoenix_screenshot.py [out.png]

Everything runs on 127.0.0.1: Phoenix offline, the judge is the tests' fake OpenAI server.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from otel_online_eval import OnlineEvalSpanProcessor
from tests.fake_openai import FakeOpenAI, quiet, tool_call
from tests.phoenix_server import PhoenixServer
from tests.sidecar_helpers import free_port

QUESTION = "Where is my parcel? I ordered a kettle last Tuesday."
ANSWER = "Your kettle left our warehouse yesterday; it should arrive by Friday."


def chat_attrs() -> dict[str, object]:
    return {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.input.messages": json.dumps(
            [{"role": "user", "parts": [{"type": "text", "content": QUESTION}]}]
        ),
        "gen_ai.output.messages": json.dumps(
            [{"role": "assistant", "parts": [{"type": "text", "content": ANSWER}]}]
        ),
        # What Phoenix shows as the span's input and output.
        "openinference.span.kind": "LLM",
        "input.value": QUESTION,
        "output.value": ANSWER,
    }


# Open the span's "Annotations" section (collapsed at first) so that every score shows.
_EXPAND = """
(() => {
  const heads = [...document.querySelectorAll('button, [role=button], summary, h2, h3, span')]
    .filter(e => e.textContent.trim().startsWith('Annotations') && e.offsetParent !== null);
  if (!heads.length) return false;
  heads[heads.length - 1].click();
  return true;
})()
"""

# ...and show them as a table: name, label, score, explanation, annotator.
_TABLE = """
(() => {
  const b = [...document.querySelectorAll('button, [role=radio], label')]
    .find(e => e.textContent.trim() === 'Table' && e.offsetParent !== null);
  if (b) b.click();
  return !!b;
})()
"""


async def photograph(chromium: str, profile: Path, url: str, out: Path) -> None:
    """Load ``url`` in headless Chromium, open the annotations, save a 1400x900 PNG (over the
    DevTools protocol, with aiohttp's websocket client)."""
    port = free_port()
    proc = subprocess.Popen(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
            f"--remote-debugging-port={port}",
            "--remote-allow-origins=*",
            f"--user-data-dir={profile}",
            "--window-size=1400,900",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        async with aiohttp.ClientSession() as http:
            deadline = time.monotonic() + 30
            while True:
                try:
                    async with http.get(f"http://127.0.0.1:{port}/json/list") as r:
                        pages = [t for t in await r.json() if t["type"] == "page"]
                    if pages:
                        break
                except aiohttp.ClientError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit("chromium's DevTools endpoint did not come up")
                await asyncio.sleep(0.2)
            async with http.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                ids = iter(range(1, 1_000_000))

                async def call(method: str, **params: object) -> dict[str, object]:
                    n = next(ids)
                    await ws.send_json({"id": n, "method": method, "params": params})
                    while True:
                        msg = await asyncio.wait_for(ws.receive_json(), 60)
                        if msg.get("id") == n:
                            result: dict[str, object] = msg.get("result", {})
                            return result

                await call(
                    "Emulation.setDeviceMetricsOverride",
                    width=1400,
                    height=900,
                    deviceScaleFactor=1,
                    mobile=False,
                )
                await call("Page.navigate", url=url)
                await asyncio.sleep(6)  # the app loads and follows the redirect
                for _ in range(20):
                    got = await call("Runtime.evaluate", expression=_EXPAND, returnByValue=True)
                    if got.get("result", {}).get("value") is True:  # type: ignore[union-attr]
                        break
                    await asyncio.sleep(0.5)
                else:
                    print("warning: no Annotations section to open", file=sys.stderr)
                await asyncio.sleep(1)
                await call("Runtime.evaluate", expression=_TABLE, returnByValue=True)
                await asyncio.sleep(2)
                shot = await call("Page.captureScreenshot", format="png")
                out.write_bytes(base64.b64decode(str(shot["data"])))
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def main(out: Path) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("chromium is not installed (make system-deps)")
    with (
        tempfile.TemporaryDirectory(prefix="phoenix-shot-") as tmp,
        PhoenixServer(Path(tmp)) as phoenix,
        FakeOpenAI() as judge,
    ):
        quiet(judge)
        judge.script(
            tool_call(
                "select_choice",
                {
                    "reasons": "The answer says where the parcel is and when it arrives.",
                    "choice": "relevant",
                },
            )
        )
        config = {
            "scorers": {
                "not_empty": {"type": "not_empty"},
                "no_apology": {"type": "regex", "pattern": "(?i)sorry", "negate": True},
                "relevance": {
                    "type": "llm_judge",
                    "base_url": judge.base_url,
                    "model": "judge-1",
                    "api_key": "sk-local",
                    "template": "relevance",
                },
            },
            "rules": [
                {
                    "name": "support-answers",
                    "apply_to": {"span_names": ["chat"]},
                    "scorers": ["not_empty", "no_apology", "relevance"],
                }
            ],
            "export": {
                "otlp": {"protocol": "http/protobuf", "endpoint": phoenix.base_url},
                "batch": {"schedule_delay_ms": 100},
                "phoenix": {"endpoint": phoenix.base_url},
            },
        }
        processor = OnlineEvalSpanProcessor(config)
        app = InMemorySpanExporter()
        provider = TracerProvider(resource=Resource.create({"service.name": "support-bot"}))
        provider.add_span_processor(
            SimpleSpanProcessor(OTLPSpanExporter(endpoint=phoenix.otlp_url))
        )
        provider.add_span_processor(SimpleSpanProcessor(app))
        provider.add_span_processor(processor)
        tracer = provider.get_tracer("support-bot")
        with tracer.start_as_current_span("POST /support", kind=SpanKind.SERVER):
            with tracer.start_as_current_span("chat", attributes=chat_attrs()):
                time.sleep(0.05)
        if not processor.force_flush(30_000):
            raise SystemExit("the scores did not reach Phoenix")
        provider.shutdown()
        (chat,) = [s for s in app.get_finished_spans() if s.name == "chat"]
        assert chat.context is not None
        span_id = f"{chat.context.span_id:016x}"
        annotations = phoenix.span_annotations([span_id])
        print(f"{len(annotations)} annotations on span {span_id}", file=sys.stderr)
        time.sleep(1.0)  # the eval spans' ingestion
        url = f"{phoenix.base_url}/redirects/spans/{span_id}"
        asyncio.run(photograph(chromium, Path(tmp) / "chromium", url, out))
        print(f"wrote {out} from {url}", file=sys.stderr)


if __name__ == "__main__":
    default = Path(__file__).resolve().parent.parent / "docs/images/phoenix-annotations.png"
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else default)
