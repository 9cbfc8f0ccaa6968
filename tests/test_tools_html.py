"""``report --html`` in a real browser: headless Chromium renders the page (charts drawn, not
blank) and the page makes no network request of its own.

Needs Debian's ``chromium`` package (``apt-get install -y chromium``); skipped without it.
"""

from __future__ import annotations

import http.server
import shutil
import struct
import subprocess
import threading
import zlib
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.test_tools_support import make_traces, run_cli, write_with_exporter

CHROMIUM = shutil.which("chromium") or (
    "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None
)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium is not installed (apt-get install -y chromium): cannot render the report",
)

BLUE = (0x4F, 0x7C, 0xFF)  # histogram bars
ORANGE = (0xF2, 0x8C, 0x28)  # the mean line of the score-over-time chart


def read_png(path: Path) -> tuple[int, int, list[bytes]]:
    """Width, height and rows of RGB(A) bytes of an 8-bit, non-interlaced PNG."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat = 8, b""
    width = height = channels = 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and interlace == 0 and color in (2, 6), (depth, color, interlace)
            channels = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
    raw = zlib.decompress(idat)
    stride = width * channels
    rows: list[bytes] = []
    prev = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):
            a = line[i - channels] if i >= channels else 0
            b = prev[i]
            c = prev[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + a) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + b) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pred) & 0xFF
        rows.append(bytes(line))
        prev = line
    return width, height, [bytes(r) for r in rows] if channels == 3 else _rgb(rows)


def _rgb(rows: list[bytes]) -> list[bytes]:
    return [bytes(b for i, b in enumerate(row) if i % 4 != 3) for row in rows]


def _count(pixels: bytes, color: tuple[int, int, int]) -> int:
    """Pixels of exactly ``color`` in RGB bytes (the charts' fills and strokes)."""
    return pixels.count(bytes(color))


class _Logged(http.server.SimpleHTTPRequestHandler):
    paths: list[str]

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.paths.append(self.path)
        super().do_GET()


def test_html_report_renders_charts_and_makes_no_requests(tmp_path: Path) -> None:
    config = tmp_path / "rules.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "scorers": {
                    "length": {"type": "python", "ref": "tests.test_tools_support:length_score"},
                    "category": {"type": "one_of", "values": ["billing", "shipping"]},
                },
                "rules": [
                    {
                        "name": "quality",
                        "apply_to": {"span_names": ["chat"]},
                        "scorers": ["length", "category"],
                    }
                ],
            }
        )
    )
    words = ["billing", "shipping", "ok", "weather", "returns", "no", "technical"]
    answers = [[words[i % len(words)], words[(i * 3) % len(words)]] for i in range(40)]
    traces = make_traces(answers, step_ns=9 * 60 * 10**9)  # six hours of traffic
    spans = write_with_exporter(tmp_path / "spans.jsonl", [t.spans for t in traces])
    evals = tmp_path / "evals.jsonl"
    proc = run_cli("score", "-c", config, "--out", evals, spans)
    assert proc.returncode == 0, proc.stderr
    site = tmp_path / "site"
    site.mkdir()
    page = site / "report.html"
    proc = run_cli("report", evals, "--html", page, "--title", "Support bot evals")
    assert proc.returncode == 0, proc.stderr
    text = page.read_text()
    assert "default-src 'none'" in text and "<script" not in text
    assert "http://" not in text and "https://" not in text and "src=" not in text
    assert text.count("<svg") == 4  # a histogram and a timeline per scorer

    paths: list[str] = []
    handler = type("Handler", (_Logged,), {"paths": paths})
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0),
        lambda *a: handler(*a, directory=str(site)),  # type: ignore[misc]
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    png = tmp_path / "report.png"
    try:
        assert CHROMIUM is not None
        result = subprocess.run(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                f"--user-data-dir={tmp_path / 'profile'}",
                f"--screenshot={png}",
                "--window-size=1200,2000",
                f"http://127.0.0.1:{server.server_address[1]}/report.html",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        server.shutdown()
        server.server_close()
    assert png.exists(), result.stderr[-2000:]
    assert paths == ["/report.html"]  # the page itself and nothing else: no network at all

    width, height, rows = read_png(png)
    assert (width, height) == (1200, 2000)
    pixels = b"".join(rows)
    dark = len(pixels) - len(pixels.translate(None, bytes(range(235))))  # channels < 235
    assert dark > 0.03 * len(pixels), "the page looks blank"
    assert _count(pixels, BLUE) > 5000, "no histogram bars"
    assert _count(pixels, ORANGE) > 200, "no mean line over time"
