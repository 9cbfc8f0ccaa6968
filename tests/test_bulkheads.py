"""Scorer bulkheads: a scorer that hangs holds only its own share, a call that cannot start is
``scorer busy`` (not the scorer's timeout), and a scorer that keeps timing out is quarantined.

Real SDK (``TracerProvider``, ``InMemorySpanExporter``) in-process, and ``otel-online-eval
test`` as a subprocess."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from otel_online_eval import BulkheadConfig, ConfigError, EvalInput, OnlineEvalSpanProcessor, Rule
from otel_online_eval.config import EngineConfig, parse_config
from tests.test_tools_support import make_traces, run_cli, write_with_exporter

# -- scorers (the python refs of the CLI test too) ---------------------------------------------

_RELEASE = threading.Event()


def boom(inp: Any) -> float:
    raise RuntimeError("boom")


def hang_forever(inp: Any) -> float:
    """Blocks its thread until the test releases it (forever in a subprocess)."""
    _RELEASE.wait(600)
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
    time.sleep(0.05)
    return 1.0


def good(inp: EvalInput) -> float:
    return 1.0


@pytest.fixture(autouse=True)
def _release_hung_threads() -> Iterator[None]:
    _RELEASE.clear()
    yield
    _RELEASE.set()


@contextmanager
def processor_for(
    rule: Rule, engine: EngineConfig | None = None
) -> Iterator[tuple[OnlineEvalSpanProcessor, InMemorySpanExporter, Any]]:
    evals = InMemorySpanExporter()
    processor = OnlineEvalSpanProcessor(rules=[rule], exporter=evals, engine=engine)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    try:
        yield processor, evals, provider.get_tracer("app")
    finally:
        _RELEASE.set()
        provider.shutdown()


def outcome(span: ReadableSpan) -> str:
    """What a score span says: ok, skipped (why), or the error type and message."""
    attrs = span.attributes or {}
    if "online_eval.skipped" in attrs:
        return f"skipped: {attrs['online_eval.skipped']}"
    if span.status.status_code is StatusCode.ERROR:
        return f"{attrs['error.type']}: {span.status.description}"
    return "ok"


def by_scorer(evals: InMemorySpanExporter) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for span in evals.get_finished_spans():
        if span.name.startswith("score "):
            found.setdefault(span.name.removeprefix("score "), []).append(outcome(span))
    return found


# -- the nine-scorer scenario ------------------------------------------------------------------


def test_nine_scorers_the_good_one_scores_every_sampled_span_and_errors_name_their_cause(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue 11's scenario, small: two hanging scorers (sync and async) beside five that fail at
    once, a slow one and a good one; 4 threads, timeout 0.3 s."""
    scorers = [boom, hang_forever, async_hang, nan, string, none, too_big, slow, good]
    # A long wait for a slot, so that a loaded machine cannot make the good one busy.
    rule = Rule.create("nine", scorers, timeout_s=0.3, bulkhead=BulkheadConfig(wait_s=5))
    with processor_for(rule, EngineConfig(threads=4)) as (processor, evals, tracer):
        # Two waves: the second finds both hanging scorers quarantined.
        for wave in (12, 30):
            for _ in range(wave):
                with tracer.start_as_current_span("chat"):
                    pass
            assert processor.force_flush(20_000)
        stats = processor.stats()
    sampled = stats.sampled["nine"]
    assert sampled == 42 and stats.evals["nine"] == 42
    found = by_scorer(evals)
    assert found["good"] == ["ok"] * sampled  # every sampled span, nothing skipped or late
    assert set(found["boom"]) == {"RuntimeError: RuntimeError: boom"}
    assert set(found["nan"]) == {"ScorerError: ScorerError: score is NaN"}
    assert {o.split(";")[0] for o in found["string"]} == {
        "ScorerError: ScorerError: returned a string 'great'"
    }
    assert {o.split(";")[0] for o in found["none"]} == {"ScorerError: ScorerError: returned None"}
    assert set(found["too_big"]) == {"ScorerError: ScorerError: score 7.5 is outside [0, 1]"}
    assert found["slow"] == ["ok"] * sampled  # slow, and never timed out by others' waits
    for name in ("hang_forever", "async_hang"):
        kinds = Counter(_kind(o) for o in found[name])
        assert set(kinds) <= {"timeout", "busy", "quarantined"}, found[name]
        assert kinds["timeout"] >= 3 and kinds["quarantined"] >= 30, (name, kinds)
        assert f"timeout: scorer {name!r} timed out after 0.3s" in found[name]
        assert stats.quarantined[name] == 1
        assert stats.skipped[("nine", name, "quarantined")] == kinds["quarantined"]
        warnings = [r for r in caplog.records if "quarantined after" in r.getMessage()]
        assert sum(name in r.getMessage() for r in warnings) == 1  # logged once
    # Four threads, all four held by calls that timed out; nobody else's were taken.
    assert Counter(_kind(o) for o in found["hang_forever"])["timeout"] == 4
    assert stats.stuck["hang_forever"] == 4
    assert stats.stuck["good"] == 0


def _kind(outcome_text: str) -> str:
    if outcome_text.startswith("timeout"):
        return "timeout"
    if outcome_text.startswith("skipped: scorer busy"):
        return "busy"
    if outcome_text.startswith("skipped: quarantined"):
        return "quarantined"
    return outcome_text


# -- one thing at a time -----------------------------------------------------------------------


def test_the_timeout_starts_when_the_call_starts() -> None:
    """One thread, calls of 0.25 s, timeout 0.6 s: queued calls wait their turn and finish in
    time (the old engine counted the wait and timed the third out)."""

    def steady(inp: EvalInput) -> float:
        time.sleep(0.25)
        return 1.0

    limits = BulkheadConfig(concurrency=1, wait_s=5)
    rule = Rule.create("r", [steady], timeout_s=0.6, bulkhead=limits)
    with processor_for(rule) as (processor, evals, tracer):
        for _ in range(3):
            with tracer.start_as_current_span("chat"):
                pass
        assert processor.force_flush(10_000)
    assert by_scorer(evals)["steady"] == ["ok"] * 3


def test_a_call_that_cannot_start_in_time_is_skipped_as_busy_not_timed_out() -> None:
    gate = threading.Event()

    def held(inp: EvalInput) -> float:
        gate.wait(10)
        return 1.0

    limits = BulkheadConfig(concurrency=1, wait_s=0.1)
    rule = Rule.create("r", [held], timeout_s=5, bulkhead=limits)
    with processor_for(rule) as (processor, evals, tracer):
        for _ in range(3):
            with tracer.start_as_current_span("chat"):
                pass
        deadline = time.monotonic() + 10
        while processor.stats().skipped.get(("r", "held", "busy"), 0) < 2:
            assert time.monotonic() < deadline, processor.stats().skipped
            time.sleep(0.01)
        gate.set()
        assert processor.force_flush(10_000)
        stats = processor.stats()
    outcomes = sorted(by_scorer(evals)["held"])
    assert outcomes == [
        "ok",
        "skipped: scorer busy: no free slot of 1 within 0.1s",
        "skipped: scorer busy: no free slot of 1 within 0.1s",
    ]
    assert stats.scores[("r", "held", "skipped")] == 2
    assert ("r", "held", "timeout") not in stats.scores


def test_quarantine_then_a_probe_after_the_cool_down(caplog: pytest.LogCaptureFixture) -> None:
    hanging = threading.Event()
    hanging.set()

    async def flaky(inp: EvalInput) -> float:
        while hanging.is_set():
            await asyncio.sleep(0.01)
        return 1.0

    limits = BulkheadConfig(quarantine_after=2, quarantine_s=1.0)
    rule = Rule.create("r", [flaky], timeout_s=0.1, bulkhead=limits)
    with processor_for(rule) as (processor, evals, tracer):

        def one() -> str:
            with tracer.start_as_current_span("chat"):
                pass
            processor.force_flush(10_000)
            return outcome([s for s in evals.get_finished_spans() if s.name == "score flaky"][-1])

        assert one().startswith("timeout")
        with caplog.at_level(logging.INFO, logger="otel_online_eval.engine"):
            assert one().startswith("timeout")  # the second in a row: quarantined
            assert one().startswith("skipped: quarantined after 2 consecutive timeouts")
            time.sleep(1.05)  # the cool-down
            assert one().startswith("timeout")  # the probe, still hanging: quarantined again
            assert one().startswith("skipped: quarantined")
            hanging.clear()
            time.sleep(1.05)
            assert one() == "ok"  # the probe answered
            assert one() == "ok"
        stats = processor.stats()
    messages = [r.getMessage() for r in caplog.records]
    assert sum("quarantined after" in m for m in messages) == 1  # one warning per episode
    assert sum("quarantine is over" in m for m in messages) == 1
    assert stats.quarantined["flaky"] == 2
    assert stats.skipped[("r", "flaky", "quarantined")] == 2


def test_a_hung_sync_scorer_keeps_only_its_own_threads() -> None:
    def quick(inp: EvalInput) -> float:
        return 1.0

    rule = Rule.create(
        "r", [hang_forever, quick], timeout_s=0.2, bulkhead=BulkheadConfig(quarantine_after=0)
    )
    with processor_for(rule, EngineConfig(threads=2)) as (processor, evals, tracer):
        for _ in range(6):
            with tracer.start_as_current_span("chat"):
                pass
        assert processor.force_flush(10_000)
        stats = processor.stats()
    found = by_scorer(evals)
    assert found["quick"] == ["ok"] * 6
    kinds = Counter(_kind(o) for o in found["hang_forever"])
    assert kinds == {"timeout": 2, "busy": 4}  # its two threads, then nothing left to wait for
    assert stats.stuck == {"hang_forever": 2, "quick": 0}
    assert (
        "skipped: scorer busy: all 2 of its threads are held by calls that timed out"
        in (found["hang_forever"])
    )


# -- configuration -----------------------------------------------------------------------------


def test_bulkhead_options_load_and_bad_ones_are_reported() -> None:
    cfg = parse_config(
        {
            "scorers": {
                "mine": {
                    "type": "not_empty",
                    "bulkhead": {"concurrency": 2, "wait_s": 0.5, "quarantine_after": 5},
                },
                "plain": {"type": "not_empty"},
            },
            "rules": [{"name": "r", "scorers": ["mine", "plain"]}],
        }
    )
    assert cfg.scorers["mine"].bulkhead == BulkheadConfig(2, 0.5, 5, 30.0)
    assert cfg.scorers["plain"].bulkhead == BulkheadConfig()
    bad = {
        "scorers": {
            "mine": {
                "type": "not_empty",
                "bulkhead": {"concurrency": 0, "wait_s": -1, "quarantine_s": 0, "retries": 1},
            }
        },
        "rules": [{"name": "r", "scorers": ["mine"]}],
    }
    with pytest.raises(ConfigError) as info:
        parse_config(bad)
    text = str(info.value)
    assert "scorers.mine.bulkhead.concurrency: must be between 1 and 10000, got 0" in text
    assert "scorers.mine.bulkhead.wait_s: must be at least 0, got -1" in text
    assert "scorers.mine.bulkhead.quarantine_s: must be at least 0.001, got 0" in text
    assert "scorers.mine.bulkhead.retries: unknown key 'retries'" in text


# -- otel-online-eval test -----------------------------------------------------------------------


def test_test_command_reports_the_raising_scorer_and_the_hanging_ones_reasons(
    tmp_path: Path,
) -> None:
    """A hanging scorer beside one that raises: the raising one's RuntimeError on every span
    (the old engine reported "boom: timed out after 2s" for most), the hanging one timed out,
    busy or quarantined; and the command ends although a scorer thread never returns."""
    config = tmp_path / "rules.yaml"
    config.write_text(
        """
scorers:
  hang: {type: python, ref: "tests.test_bulkheads:hang_forever", timeout_s: 1}
  boom: {type: python, ref: "tests.test_bulkheads:boom", timeout_s: 1}
rules:
  - name: r
    apply_to: {span_names: [chat]}
    scorers: [hang, boom]
"""
    )
    traces = make_traces([["billing"]] * 18)
    spans = write_with_exporter(tmp_path / "spans.jsonl", [t.spans for t in traces])
    proc = run_cli("test", "-c", config, "--json", spans, timeout=60)
    assert proc.returncode == 0, proc.stderr
    rows = [r for r in json.loads(proc.stdout)["spans"] if r["selected"]]
    assert len(rows) == 18
    hang = Counter()
    for row in rows:
        assert row["errors"]["boom"] == "RuntimeError: boom"
        if "hang" in row["errors"]:
            assert row["errors"]["hang"] == "scorer 'hang' timed out after 1s"
            hang["timeout"] += 1
        else:
            reason = row["skipped"]["hang"]
            assert reason.startswith(("scorer busy", "quarantined")), reason
            hang[reason.split(":")[0].split(" after")[0]] += 1
    assert hang["timeout"] == 4  # its four threads (engine.threads), no more
    assert hang["timeout"] + hang["scorer busy"] + hang["quarantined"] == 18
