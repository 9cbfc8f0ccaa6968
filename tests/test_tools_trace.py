"""The tools with trace rules (``scope: trace``), each run as a subprocess
(``python -m otel_online_eval.cli ...``) on agent traces made with the real SDK and written as
OTLP/JSON lines and OTLP protobuf: ``test`` shows a row per trace, ``score`` evaluates the
file's traces at the end of the input, ``explain`` says why a trace was or was not evaluated,
``report`` counts the latest revision of each trace."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import Tracer

from otel_online_eval import EvalInput, OnlineEvalSpanProcessor, Rule
from otel_online_eval.assembly import Completion
from otel_online_eval.otlp_json import encode_spans_json
from tests.agent_traces import genai_agent, openinference_agent
from tests.test_tools_support import (
    SAMPLED_OUT_TRACE,
    make_traces,
    read_spans,
    run_cli,
    span_attrs,
    span_hex,
    write_with_exporter,
)

CONFIG = {
    "scorers": {"tool_errors": {"type": "tool_errors"}, "nonempty": {"type": "not_empty"}},
    "rules": [
        {
            "name": "agent",
            "scope": "trace",
            "description": "whole agent runs",
            "scorers": ["tool_errors", "nonempty"],
        },
        {
            "name": "tools-used",
            "scope": "trace",
            "filter": "trace.span_count >= 2 AND trace.tool_calls > 0",
            "scorers": ["tool_errors"],
        },
        {"name": "sampled", "scope": "trace", "sampling": 0.5, "scorers": ["nonempty"]},
        {"name": "whole-only", "scope": "trace", "on_incomplete": "skip", "scorers": ["nonempty"]},
        {
            "name": "on-chat",
            "scope": "trace",
            "apply_to": {"span_names": ["chat gpt-test"]},
            "scorers": ["nonempty"],
        },
        {"name": "chats", "apply_to": {"span_names": ["chat gpt-test"]}, "scorers": ["nonempty"]},
    ],
}


class _FixedIds(RandomIdGenerator):
    def __init__(self) -> None:
        self.trace_id = 0

    def generate_trace_id(self) -> int:
        return self.trace_id


def agent_spans(make: Callable[[Tracer], None], trace_id: int) -> list[ReadableSpan]:
    """One agent trace from a real TracerProvider, with a fixed trace id."""
    ids = _FixedIds()
    ids.trace_id = trace_id
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "agent"}), id_generator=ids)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    make(provider.get_tracer("tests.agent", "1.0"))
    provider.shutdown()
    return list(memory.get_finished_spans())


def root_of(spans: list[ReadableSpan]) -> ReadableSpan:
    (root,) = [s for s in spans if s.parent is None]
    return root


class Data:
    """Five traces: a whole GenAI agent run, one missing its root (incomplete at the end of the
    input), one sampled out at any rate below 1, an OpenInference run, and a plain request with
    one chat call and no tool."""

    def __init__(self, base: Path) -> None:
        self.config = base / "rules.yaml"
        self.config.write_text(yaml.safe_dump(CONFIG))
        self.full = agent_spans(genai_agent, 21)
        self.no_root = [s for s in agent_spans(genai_agent, 22) if s.parent is not None]
        self.out = agent_spans(genai_agent, SAMPLED_OUT_TRACE)
        self.oi = agent_spans(openinference_agent, 24)
        (plain,) = make_traces([["billing"]], trace_ids=[25])
        self.plain = plain.spans
        self.traces = [self.full, self.no_root, self.out, self.oi, self.plain]
        # The first chat call of the trace without its root is the earliest span whose parent
        # is not in the trace: the trace's root as far as it reached us, and its anchor.
        self.no_root_anchor = min(self.no_root, key=lambda s: s.start_time or 0)
        # One line per trace by the project's file exporter; the plain trace's spans split
        # over two lines (a trace need not be in one request).
        self.spans = write_with_exporter(
            base / "spans.jsonl", [self.full, self.no_root, self.out, self.oi, self.plain[:1]]
        )
        with open(self.spans, "a", encoding="utf-8") as f:
            f.write(encode_spans_json(self.plain[1:]) + "\n")
        self.pb = base / "spans.pb"  # one ExportTraceServiceRequest, as curl would send it
        self.pb.write_bytes(encode_spans([s for t in self.traces for s in t]).SerializeToString())
        self.evals = base / "evals.jsonl"  # what `score` made of spans.jsonl
        _ok(run_cli("score", "-c", self.config, "--out", self.evals, self.spans))


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Data:
    return Data(tmp_path_factory.mktemp("tools-trace"))


def _ok(proc: Any, code: int = 0) -> Any:
    assert proc.returncode == code, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def _tid(spans: list[ReadableSpan]) -> str:
    ctx = spans[0].context
    assert ctx is not None
    return f"{ctx.trace_id:032x}"


def _row(stdout: str, trace_id: str) -> str:
    (line,) = [ln for ln in stdout.splitlines() if trace_id in ln]
    return line


def _json(*args: Any) -> Any:
    return json.loads(_ok(run_cli(*args, "--json")).stdout)


# -- test ----------------------------------------------------------------------------------------


def test_test_shows_one_row_per_trace_with_its_anchor_size_and_completeness(data: Data) -> None:
    out = _ok(run_cli("test", "-c", data.config, "--rule", "agent", data.spans)).stdout
    assert "  scope:      trace; anchored on the trace's root; incomplete traces evaluated" in out
    header = next(ln for ln in out.splitlines() if ln.startswith("SPAN "))
    assert header.split() == [
        "SPAN",
        "SPAN",
        "ID",
        "TRACE",
        "ID",
        "SPANS",
        "TRACE",
        "RESULT",
        "DETAIL",
    ]
    full = _row(out, _tid(data.full))
    root = root_of(data.full)
    assert full.startswith("invoke_agent weather") and span_hex(root) in full
    assert " 8  complete " in full and "scored" in full
    assert full.endswith("tool_errors = 0.667 (fail); nonempty = 1 (pass)")
    no_root = _row(out, _tid(data.no_root))
    assert span_hex(data.no_root_anchor) in no_root
    assert " 7  incomplete (end_of_input) " in no_root and "scored" in no_root
    assert _row(out, _tid(data.oi)).startswith("Agent workflow")
    assert _row(out, _tid(data.plain)).endswith("tool_errors = 1 (pass); nonempty = 1 (pass)")
    total = sum(len(t) for t in data.traces)
    assert f"5 trace(s) ({total} span(s)): 5 scored; 1 incomplete at the end of the input" in out

    # The same traces from one protobuf request: the same rows.
    doc = _json("test", "-c", data.config, "--rule", "agent", data.pb)
    assert doc["scope"] == "trace" and "spans" not in doc
    rows = {r["trace_id"]: r for r in doc["traces"]}
    row = rows[_tid(data.full)]
    assert row["name"] == "invoke_agent weather" and row["span_id"] == span_hex(root)
    assert row["trace"] == {"span_count": 8, "complete": True, "reason": "complete"}
    assert row["outcome"] == "scored"
    assert row["scores"]["tool_errors"]["value"] == pytest.approx(2 / 3)
    assert row["scores"]["nonempty"]["value"] == 1.0
    incomplete = rows[_tid(data.no_root)]
    assert incomplete["trace"] == {"span_count": 7, "complete": False, "reason": "end_of_input"}
    assert incomplete["span_id"] == span_hex(data.no_root_anchor)
    assert doc["summary"]["traces"] == 5 and doc["summary"]["incomplete"] == 1
    assert doc["summary"]["spans"] == total and doc["summary"]["scored"] == 5


def test_test_says_why_a_trace_is_not_evaluated(data: Data) -> None:
    # A filter on trace fields: the false part.
    doc = _json("test", "-c", data.config, "--rule", "tools-used", data.spans)
    rows = {r["trace_id"]: r for r in doc["traces"]}
    plain = rows[_tid(data.plain)]
    assert plain["outcome"] == "filter false" and plain["detail"] == "trace.tool_calls > 0"
    assert rows[_tid(data.oi)]["outcome"] == "scored"
    # Sampled out by trace id; at 100% it is scored.
    doc = _json("test", "-c", data.config, "--rule", "sampled", data.spans)
    out = {r["trace_id"]: r for r in doc["traces"]}[_tid(data.out)]
    assert out["outcome"] == "sampled out" and out["reason"] == "trace sampled out at rate 0.5"
    assert out["name"] == "invoke_agent weather"  # the anchor it would have had
    assert doc["summary"]["sampled_out"] == 1 and doc["summary"]["scored"] == 4
    doc = _json("test", "-c", data.config, "--rule", "sampled", "--ignore-sampling", data.spans)
    assert doc["summary"]["scored"] == 5
    # Incomplete, and on_incomplete: skip.
    out_text = _ok(run_cli("test", "-c", data.config, "--rule", "whole-only", data.spans)).stdout
    row = _row(out_text, _tid(data.no_root))
    assert "skipped (incomplete)" in row
    assert row.endswith("the trace is incomplete (end_of_input) and on_incomplete is skip")
    assert "1 skipped as incomplete (on_incomplete: skip)" in out_text
    # No span that apply_to selects: no anchor.
    doc = _json("test", "-c", data.config, "--rule", "on-chat", "--limit", "4", data.spans)
    assert len(doc["traces"]) == 4
    oi = {r["trace_id"]: r for r in doc["traces"]}[_tid(data.oi)]
    assert oi["outcome"] == "not selected" and oi["stage"] == "selection"
    assert oi["name"] is None and oi["span_id"] is None
    assert oi["reason"] == "no anchor: none of its 7 span(s) is named one of ['chat gpt-test']"
    full = {r["trace_id"]: r for r in doc["traces"]}[_tid(data.full)]
    first_chat = min(
        (s for s in data.full if s.name == "chat gpt-test"), key=lambda s: s.start_time or 0
    )
    assert full["span_id"] == span_hex(first_chat) and full["outcome"] == "scored"


# -- score ---------------------------------------------------------------------------------------


def test_score_evaluates_the_files_traces_and_writes_trace_eval_spans(
    data: Data, tmp_path: Path
) -> None:
    out = tmp_path / "evals.jsonl"
    summary = _json("score", "-c", data.config, "--out", out, data.spans)
    rules = summary["rules"]
    assert rules["agent"]["scope"] == "trace" and rules["agent"]["to_score"] == 5
    assert rules["tools-used"]["filtered_out"] == 1 and rules["tools-used"]["to_score"] == 4
    assert rules["sampled"]["to_score"] == 5  # sampling off
    assert rules["whole-only"]["skipped_incomplete"] == 1 and rules["whole-only"]["to_score"] == 4
    assert rules["on-chat"]["not_selected"] == 2 and rules["on-chat"]["to_score"] == 3
    assert rules["chats"]["scope"] == "span" and rules["chats"]["to_score"] == 12
    assert summary["traces_scored"] == 5 and summary["spans_scored"] == 12
    assert summary["evaluations"] == {"planned": 33, "done": 33, "dropped": 0}

    spans = read_spans(out)
    evals = [(span_attrs(s), s) for _, s in spans if s.name == "eval agent"]
    assert len(evals) == 5
    ends = {_tid(t): max(s.end_time or 0 for s in t) for t in data.traces}
    by_trace = {f"{int.from_bytes(s.trace_id, 'big'):032x}": (a, s) for a, s in evals}
    attrs, ev = by_trace[_tid(data.full)]
    root = root_of(data.full)
    assert ev.parent_span_id.hex() == span_hex(root)
    assert [link.span_id.hex() for link in ev.links] == [span_hex(root)]
    assert attrs["online_eval.scope"] == "trace" and attrs["online_eval.revision"] == 1
    assert attrs["online_eval.trace.span_count"] == 8
    assert attrs["online_eval.trace.complete"] is True
    assert attrs["online_eval.trace.reason"] == "complete"
    assert attrs["online_eval.backfill"] is True and attrs["online_eval.sampling.rate"] == 1.0
    assert attrs["online_eval.span.end_time_unix_nano"] == ends[_tid(data.full)]
    attrs, ev = by_trace[_tid(data.no_root)]
    assert ev.parent_span_id.hex() == span_hex(data.no_root_anchor)
    assert attrs["online_eval.trace.complete"] is False
    assert attrs["online_eval.trace.reason"] == "end_of_input"
    assert attrs["online_eval.trace.span_count"] == 7
    scores = [
        span_attrs(s)["gen_ai.evaluation.score.value"]
        for _, s in spans
        if s.name == "score tool_errors" and span_attrs(s)["online_eval.rule"] == "agent"
    ]
    assert sorted(scores) == pytest.approx([2 / 3] * 4 + [1.0])

    text = _ok(run_cli("score", "-c", data.config, "--out", out, data.spans, out)).stdout
    assert "scored 0 of 0 evaluation(s) (0 span(s)) in" in text
    table = text.split("\n\n")[1].splitlines()
    assert table[2].split() == ["agent", "5", "off", "0", "5", "0"]
    assert "(trace rules count traces: agent, tools-used, sampled, whole-only, on-chat)" in text
    assert "(whole-only: 1 incomplete trace(s) skipped, on_incomplete: skip)" in text

    # --sample: the sampled-out trace is left out; --filter reads trace fields too.
    summary = _json(
        "score", "-c", data.config, "--rule", "sampled", "--rule", "agent", "--sample",
        "--filter", "trace.llm_calls > 1", "--out", tmp_path / "more.jsonl", data.pb,
    )  # fmt: skip
    assert summary["rules"]["sampled"]["sampled_out"] == 1
    assert summary["rules"]["sampled"]["extra_filtered_out"] == 1  # the plain trace: one call
    assert summary["rules"]["sampled"]["to_score"] == 3
    assert summary["rules"]["agent"]["to_score"] == 4
    # --limit counts traces, --most-recent takes the traces that ended last.
    summary = _json(
        "score", "-c", data.config, "--rule", "agent", "--limit", "2", "--most-recent",
        "--out", tmp_path / "recent.jsonl", data.spans,
    )  # fmt: skip
    assert summary["traces_scored"] == 2
    recent = {
        f"{int.from_bytes(s.trace_id, 'big'):032x}"
        for _, s in read_spans(tmp_path / "recent.jsonl")
        if s.name == "eval agent"
    }
    assert recent == set(sorted(ends, key=lambda t: ends[t])[-2:])


# -- explain -------------------------------------------------------------------------------------


def _rules(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["rule"]: r for r in doc["rules"]}


def test_explain_says_why_a_trace_was_or_was_not_evaluated(data: Data) -> None:
    tool = next(s for s in data.full if s.name == "execute_tool to_fahrenheit")
    root = root_of(data.full)
    proc = run_cli(
        "explain", "-c", data.config, "--span-id", span_hex(tool), data.spans, data.evals
    )
    out = _ok(proc).stdout
    lines = {ln.split()[0]: ln for ln in out.splitlines() if ln.startswith("  ") and ln.split()}
    assert lines["agent"].split(None, 1)[1] == (
        "WOULD SCORE  trace evaluated (complete) on its anchor; sampled in (rate 1), no filter"
    )
    assert (
        f"trace: 8 span(s), complete; anchor 'invoke_agent weather' {span_hex(root)} "
        "(the trace's root)" in out
    )
    assert lines["chats"].split(None, 1)[1].startswith("NOT SCORED   not selected")
    # The trace's eval spans are shown, though they are the anchor's children, not this span's.
    assert "eval spans for this span (and its trace) in the input" in out
    assert f"of the trace: 8 span(s), complete, revision 1, on {span_hex(root)}" in out
    assert "tool_errors = 0.667 (fail)" in out

    doc = _json("explain", "-c", data.config, "--span-id", span_hex(tool), data.spans, data.evals)
    agent = _rules(doc)["agent"]
    assert agent["scope"] == "trace" and agent["would_score"] is True
    assert agent["trace"]["span_count"] == 8 and agent["trace"]["reason"] == "complete"
    assert agent["anchor"]["span_id"] == span_hex(root) and not agent["anchor"]["is_this_span"]
    assert agent["evals_in_input"] == 1
    assert [s["runs"] for s in agent["scorers"]] == [True, True]
    trace_evals = [e for e in doc["evals_in_input"] if e["rule"] == "agent"]
    assert trace_evals[0]["trace"]["anchor"] == span_hex(root)
    assert {s["scorer"] for s in trace_evals[0]["scores"]} == {"tool_errors", "nonempty"}

    # Sampled out by trace id (and what would happen otherwise).
    rules = _rules(
        _json("explain", "-c", data.config, "--span-id", span_hex(data.out[0]), data.spans)
    )
    assert rules["sampled"]["verdict"] == (
        "sampled out: trace sampled out at rate 0.5 (by trace id; it would be evaluated otherwise)"
    )
    assert rules["sampled"]["sampling"] == {"rate": 0.5, "sampled": False}
    # The filter false on the trace, with the false part.
    chat = next(s for s in data.plain if s.name == "chat")
    rules = _rules(_json("explain", "-c", data.config, "--span-id", span_hex(chat), data.spans))
    assert rules["tools-used"]["verdict"] == "filter false: trace.tool_calls > 0"
    assert rules["tools-used"]["filter"]["false_part"] == "trace.tool_calls > 0"
    assert rules["on-chat"]["verdict"] == (
        "not evaluated: no anchor: none of its 2 span(s) is named one of ['chat gpt-test']"
    )
    assert rules["on-chat"]["anchor"] is None
    # Incomplete at the end of the input: skipped by on_incomplete: skip, evaluated otherwise.
    anchor = span_hex(data.no_root_anchor)
    doc = _json("explain", "-c", data.config, "--span-id", anchor, data.spans, data.evals)
    rules = _rules(doc)
    assert rules["whole-only"]["verdict"] == (
        "not evaluated: the trace is incomplete (end_of_input) and on_incomplete is skip"
    )
    assert rules["whole-only"]["evals_in_input"] == 0
    assert rules["agent"]["verdict"].startswith("trace evaluated (incomplete (end_of_input))")
    assert rules["agent"]["anchor"]["is_this_span"] is True
    assert rules["agent"]["trace"] == {
        "trace_id": _tid(data.no_root), "span_count": 7, "complete": False,
        "reason": "end_of_input", "on_incomplete": "evaluate",
    }  # fmt: skip


# -- report --------------------------------------------------------------------------------------


def span_share(inp: EvalInput) -> float:
    """A tenth of the trace's span count: tells revisions apart."""
    assert inp.trace is not None
    return inp.trace.span_count / 10


def _revisions() -> list[ReadableSpan]:
    """Eval spans of a live processor: trace A evaluated with 2 spans, then again with 3 after a
    late span (revision 2, superseding the first); trace B once, with 4 spans."""
    rule = Rule.create(
        "agent",
        [span_share],
        scope="trace",
        late="reevaluate",
        completion=Completion(settle_s=0.05, idle_s=1, max_wait_s=5),
    )
    memory = InMemorySpanExporter()
    processor = OnlineEvalSpanProcessor(rules=(rule,), exporter=memory)
    provider = TracerProvider(resource=Resource.create({"service.name": "agent"}))
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("test")

    def wait(n: int) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            assert processor.force_flush(5_000)
            if sum(s.name == "eval agent" for s in memory.get_finished_spans()) >= n:
                return
            time.sleep(0.02)
        raise AssertionError(f"fewer than {n} eval spans")

    try:
        root = tracer.start_span("a")
        ctx = trace.set_span_in_context(root)
        with tracer.start_as_current_span("early", context=ctx):
            pass
        root.end()
        wait(1)
        with tracer.start_as_current_span("late", context=ctx):
            pass
        wait(2)
        with tracer.start_as_current_span("b"):
            for name in ("b1", "b2", "b3"):
                with tracer.start_as_current_span(name):
                    pass
        wait(3)
    finally:
        provider.shutdown()
    return list(memory.get_finished_spans())


def test_report_counts_the_latest_revision_of_each_trace(data: Data, tmp_path: Path) -> None:
    spans = _revisions()
    evals = {s.context.span_id: s for s in spans if s.name == "eval agent" and s.context}
    revisions = sorted((s.attributes or {})["online_eval.revision"] for s in evals.values())
    assert revisions == [1, 1, 2]
    newer = next(s for s in evals.values() if (s.attributes or {})["online_eval.revision"] == 2)
    (supersedes,) = [
        link for link in newer.links if (link.attributes or {})["online_eval.link"] == "supersedes"
    ]
    assert supersedes.context.span_id in evals
    path = tmp_path / "revisions.jsonl"
    path.write_text(encode_spans_json(spans) + "\n")
    backwards = tmp_path / "backwards.jsonl"  # the newer revision read first
    backwards.write_text("".join(encode_spans_json([s]) + "\n" for s in reversed(spans)))

    for source in (path, backwards):
        doc = _json("report", source)
        assert doc["evaluations"] == {"agent": 2}
        assert doc["traces"] == {"agent": {"evaluations": 2, "incomplete": 0, "superseded": 1}}
        assert doc["input"]["superseded"] == 1
        (stats,) = doc["scorers"]
        assert stats["scorer"] == "span_share" and stats["count"] == 2
        assert stats["mean"] == pytest.approx(0.35)  # 3 and 4 spans; not the first 2

    text = _ok(run_cli("report", path)).stdout
    assert "2 evaluation(s): agent 2" in text
    assert (
        "(agent: 2 trace(s); 1 superseded revision(s) not counted, only the latest per trace)"
        in text
    )
    # The file's own trace evaluations by `score`: one revision each; the incomplete one said.
    doc = _json("report", "--rule", "agent", data.evals)
    assert doc["traces"] == {"agent": {"evaluations": 5, "incomplete": 1, "superseded": 0}}
    (nonempty,) = [s for s in doc["scorers"] if s["scorer"] == "nonempty"]
    assert nonempty["count"] == 5 and nonempty["mean"] == 1.0
