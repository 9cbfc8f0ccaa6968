"""Run ``vercel_ai/app.mjs`` (the Vercel AI SDK with ``@ai-sdk/otel``) against the fake OpenAI
server and turn the spans it prints into real SDK spans.

The Node packages are pinned in ``vercel_ai/package.json`` / ``package-lock.json`` and installed
with ``npm ci`` into ``vercel_ai/node_modules`` (see :data:`INSTALL`); :func:`ensure_installed`
runs it when they are missing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan

from tests.spans import make_span

__all__ = ["INSTALL", "NODE", "Scenario", "ensure_installed", "run_app", "sdk_span"]

APP_DIR = Path(__file__).parent / "vercel_ai"
NODE = shutil.which("node")
INSTALL = ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"]
"""How the Node packages are installed, in ``tests/instrumentation/vercel_ai``."""
_STATUS = {0: "UNSET", 1: "OK", 2: "ERROR"}


def ensure_installed() -> None:
    """``npm ci`` in the app's directory unless its packages are there already."""
    if (APP_DIR / "node_modules" / "@ai-sdk" / "otel" / "package.json").exists():
        return
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("npm is missing: node is installed but the Vercel AI SDK cannot be")
    done = subprocess.run(
        [npm, *INSTALL[1:]], cwd=APP_DIR, capture_output=True, text=True, timeout=600
    )
    if done.returncode != 0:
        pytest.fail(f"npm ci failed in {APP_DIR}:\n{done.stdout}\n{done.stderr}")


@dataclass
class Scenario:
    """What one scenario of the app got back, and the spans it made (as the Node SDK had them)."""

    result: dict[str, Any] = field(default_factory=dict)
    spans: list[dict[str, Any]] = field(default_factory=list)

    def named(self, name: str) -> list[dict[str, Any]]:
        """The spans with this name, in the order they ended."""
        return [s for s in self.spans if s["name"] == name]

    def one(self, name: str) -> dict[str, Any]:
        found = self.named(name)
        assert len(found) == 1, (name, [s["name"] for s in self.spans])
        return found[0]


def run_app(base_url: str, modes: Sequence[str]) -> dict[str, dict[str, Scenario]]:
    """Run the app once per telemetry mode (``legacy``, ``otel``), in parallel.

    Returns:
        mode -> scenario name -> :class:`Scenario`.
    """
    assert NODE is not None
    procs = {
        mode: subprocess.Popen(
            [NODE, "app.mjs", base_url, mode],
            cwd=APP_DIR,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for mode in modes
    }
    runs: dict[str, dict[str, Scenario]] = {}
    for mode, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, f"node app.mjs {mode} failed:\n{err}"
        scenarios: dict[str, Scenario] = {}
        for line in out.splitlines():
            record = json.loads(line)
            scenario = scenarios.setdefault(record["scenario"], Scenario())
            if "result" in record:
                scenario.result = record["result"]
            else:
                scenario.spans.append(record["span"])
        runs[mode] = scenarios
    return runs


def sdk_span(record: Mapping[str, Any]) -> ReadableSpan:
    """The Node span as a real SDK span: same name, attributes, events and status (the SDK
    checks the attributes as it would an app's)."""
    status = record.get("status") or {}
    return make_span(
        record["name"],
        attributes=record["attributes"],
        events=[(e["name"], e["attributes"]) for e in record["events"]],
        parent="root" if record.get("parentSpanId") else None,
        status=_STATUS.get(status.get("code", 0), "UNSET"),
        status_message=status.get("message"),
        scope=("ai", None),
    )
