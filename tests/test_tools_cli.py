"""The ``test``, ``score``, ``explain`` and ``report`` commands, each run as a subprocess
(``python -m otel_online_eval.cli ...``) on files written by real exporters."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from otel_online_eval.otlp_json import encode_spans_json
from tests.test_tools_support import (
    CONFIG,
    ROOT,
    SAMPLED_OUT_TRACE,
    Trace,
    make_traces,
    read_spans,
    run_cli,
    span_attrs,
    span_hex,
    trace_hex,
    write_with_exporter,
)


class Data:
    """The traces of the module and the files they were written to."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.config = base / "rules.yaml"
        self.config.write_text(CONFIG)
        now = time.time_ns()
        hour = 3600 * 10**9
        # t1: two answers; t2: sampled out of "sampled"; t3: no output; t4: not a chat call.
        self.t1, self.t2, self.t3 = make_traces(
            [["billing", "weather"], ["shipping"], [None]],
            trace_ids=[11, SAMPLED_OUT_TRACE, 13],
            start_ns=now - 5 * hour,
            step_ns=hour,
        )
        (self.t4,) = make_traces(
            [["billing"]], trace_ids=[14], start_ns=now - 2 * hour, operation="embeddings"
        )
        self.traces: list[Trace] = [self.t1, self.t2, self.t3, self.t4]
        # Lines 1-3 by the project's file exporter, line 4 by encode_spans_json.
        self.spans = write_with_exporter(base / "spans.jsonl", [t.spans for t in self.traces[:3]])
        with open(self.spans, "a", encoding="utf-8") as f:
            f.write(encode_spans_json(self.t4.spans) + "\n")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Data:
    return Data(tmp_path_factory.mktemp("tools"))


def _ok(proc: subprocess.CompletedProcess[str], code: int = 0) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == code, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def _row(stdout: str, span_id: str) -> str:
    (line,) = [ln for ln in stdout.splitlines() if span_id in ln]
    return line


# -- test ----------------------------------------------------------------------------------------


def test_test_shows_decisions_reasons_and_scores(data: Data) -> None:
    out = _ok(run_cli("test", "-c", data.config, "--rule", "chat-quality", data.spans)).stdout
    billing, weather = data.t1.chats
    assert "scored" in _row(out, span_hex(billing))
    assert "nonempty = 1 (pass); category = 1 (billing)" in _row(out, span_hex(billing))
    assert "category = 0 (other)" in _row(out, span_hex(weather))
    no_output = _row(out, span_hex(data.t3.chats[0]))
    assert "filter false" in no_output and no_output.endswith("output IS NOT NULL")
    not_chat = _row(out, span_hex(data.t4.chats[0]))
    assert not_chat.endswith("attributes['gen_ai.operation.name'] = 'chat'")
    root = _row(out, span_hex(data.t1.root))
    assert "not selected" in root
    assert "a root span named 'POST /support' is not named one of ['chat']" in root
    assert "9 span(s): 3 scored, 4 not selected, 2 filtered out" in out
    assert "SCORER" in out and "category" in out


def test_test_json_sampling_no_llm_and_stdin(data: Data) -> None:
    proc = run_cli(
        "test", "-c", data.config, "--rule", "sampled", "--no-llm", "--json", "-",
        input=data.spans.read_bytes(),
    )  # fmt: skip
    doc = json.loads(_ok(proc).stdout)
    rows = {r["span_id"]: r for r in doc["spans"]}
    out = rows[span_hex(data.t2.chats[0])]
    assert out["outcome"] == "sampled out" and out["stage"] == "sampling"
    assert out["reason"] == "trace sampled out at rate 0.5"
    scored = rows[span_hex(data.t3.chats[0])]
    assert scored["selected"] and scored["scores"]["nonempty"]["value"] == 0.0
    assert scored["not_run_no_llm"] == ["judge"] and "judge" not in scored["errors"]
    assert scored["where"] == "<stdin>:3"
    assert doc["summary"]["sampled_out"] == 1 and doc["summary"]["scored"] == 4

    # At 100% the sampled-out trace is scored too; the judge (nothing listens on its port)
    # runs and fails, and the failure is shown, not hidden.
    proc = run_cli(
        "test", "-c", data.config, "--rule", "sampled", "--ignore-sampling", "--json", data.spans
    )
    rows = {r["span_id"]: r for r in json.loads(_ok(proc).stdout)["spans"]}
    again = rows[span_hex(data.t2.chats[0])]
    assert again["outcome"] == "scored" and again["scores"]["nonempty"]["value"] == 1.0
    assert "judge" in again["errors"] or "judge" in again["skipped"]


def test_test_needs_a_known_rule(data: Data) -> None:
    proc = _ok(run_cli("test", "-c", data.config, "--rule", "nope", data.spans), 1)
    assert "no rule named 'nope'; the rules are: chat-quality, sampled, roots" in proc.stderr
    proc = _ok(run_cli("test", "-c", data.config, data.spans), 1)
    assert "say which rule to try with --rule" in proc.stderr


# -- score ---------------------------------------------------------------------------------------


def _evals(path: Path) -> list[tuple[dict[str, Any], Any]]:
    return [(r, s) for r, s in read_spans(path) if s.name.startswith("eval ")]


def test_score_exports_eval_spans_and_skips_what_is_scored(data: Data, tmp_path: Path) -> None:
    out = tmp_path / "evals.jsonl"
    proc = _ok(run_cli("score", "-c", data.config, "--out", out, "--json", data.spans))
    summary = json.loads(proc.stdout)
    # Sampling off: chat-quality takes the 3 chat calls with an output (not t3's, without
    # one, nor t4's, an embeddings call); sampled takes all 5 chat spans; roots the 4 roots.
    assert summary["rules"]["chat-quality"]["to_score"] == 3
    assert summary["rules"]["chat-quality"]["filtered_out"] == 2
    assert summary["rules"]["sampled"]["to_score"] == 5
    assert summary["rules"]["roots"]["to_score"] == 4
    assert summary["evaluations"] == {"planned": 12, "done": 12, "dropped": 0}
    assert summary["interrupted"] is False

    evals = _evals(out)
    assert len(evals) == 12
    by_id = {s.context.span_id: s for t in data.traces for s in t.spans}  # type: ignore[union-attr]
    for resource, span in evals:
        attrs = span_attrs(span)
        parent = int.from_bytes(span.parent_span_id, "big")
        (link,) = span.links
        assert link.span_id == span.parent_span_id and link.trace_id == span.trace_id
        target = by_id[parent]
        assert int.from_bytes(span.trace_id, "big") == target.context.trace_id
        assert attrs["online_eval.rule"] == span.name.removeprefix("eval ")
        assert attrs["online_eval.backfill"] is True
        assert attrs["online_eval.span.end_time_unix_nano"] == target.end_time
        assert resource["service.name"] == "support-bot"
    scores = [s for _, s in read_spans(out) if s.name.startswith("score ")]
    assert sorted({s.name for s in scores}) == [
        "score category",
        "score judge",
        "score nonempty",
    ]

    # The same spans with the eval spans among the inputs: nothing left to score.
    proc = _ok(run_cli("score", "-c", data.config, "--out", out, data.spans, out))
    assert "scored 0 of 0 evaluation(s)" in proc.stdout
    table = proc.stdout.split("\n\n")[1]
    assert "ALREADY SCORED" in table
    counts = [ln.split()[-2:] for ln in table.splitlines()[2:]]
    assert counts == [["3", "0"], ["5", "0"], ["4", "0"]]
    assert len(_evals(out)) == 12
    # Only what is new: one more trace, and the rule restricted to one.
    (t5,) = make_traces([["shipping"]], trace_ids=[15])
    more = write_with_exporter(tmp_path / "more.jsonl", [t5.spans])
    proc = _ok(
        run_cli(
            "score", "-c", data.config, "--rule", "chat-quality", "--out", out, "--json",
            data.spans, more, out,
        )
    )  # fmt: skip
    summary = json.loads(proc.stdout)
    assert summary["rules"]["chat-quality"]["already_scored"] == 3
    assert summary["evaluations"]["done"] == 1 and list(summary["rules"]) == ["chat-quality"]
    # --rescore scores them again.
    proc = _ok(
        run_cli("score", "-c", data.config, "--rescore", "--out", out, "--json", data.spans, out)
    )
    assert json.loads(proc.stdout)["evaluations"]["done"] == 12
    assert len(_evals(out)) == 25


def test_score_limit_most_recent_since_and_filter(data: Data, tmp_path: Path) -> None:
    out = tmp_path / "recent.jsonl"
    _ok(run_cli(
        "score", "-c", data.config, "--rule", "roots", "--limit", "2", "--most-recent",
        "--out", out, data.spans,
    ))  # fmt: skip
    parents = {int.from_bytes(s.parent_span_id, "big") for _, s in _evals(out)}
    newest = sorted((t.root for t in data.traces), key=lambda s: s.end_time or 0)[-2:]
    assert parents == {s.context.span_id for s in newest if s.context is not None}

    first = tmp_path / "first.jsonl"
    _ok(run_cli(
        "score", "-c", data.config, "--rule", "roots", "--limit", "2", "--out", first, data.spans
    ))  # fmt: skip
    parents = {int.from_bytes(s.parent_span_id, "big") for _, s in _evals(first)}
    assert parents == {data.t1.root.context.span_id, data.t2.root.context.span_id}  # type: ignore[union-attr]

    since = tmp_path / "since.jsonl"  # the traces started 5, 4, 3 and 2 hours ago
    proc = _ok(run_cli(
        "score", "-c", data.config, "--rule", "roots", "--since", "210m", "--json",
        "--out", since, data.spans,
    ))  # fmt: skip
    assert json.loads(proc.stdout)["input"]["older_than_since"] == 5
    assert len(_evals(since)) == 2

    filtered = tmp_path / "filtered.jsonl"
    proc = _ok(run_cli(
        "score", "-c", data.config, "--rule", "sampled", "--filter", "output = 'billing'",
        "--json", "--out", filtered, data.spans,
    ))  # fmt: skip
    summary = json.loads(proc.stdout)
    assert summary["rules"]["sampled"]["extra_filtered_out"] == 3
    assert summary["evaluations"]["done"] == 2

    proc = _ok(run_cli("score", "-c", data.config, "--filter", "output ==", data.spans), 1)
    assert "--filter:" in proc.stderr
    proc = _ok(run_cli("score", "-c", data.config, data.spans), 1)
    assert "no export: section" in proc.stderr and "--out FILE" in proc.stderr


# -- explain ---------------------------------------------------------------------------------------


def test_explain_every_rule_the_fields_and_the_evals(data: Data, tmp_path: Path) -> None:
    evals = tmp_path / "evals.jsonl"
    _ok(run_cli("score", "-c", data.config, "--rule", "chat-quality", "--out", evals, data.spans))
    weather = data.t1.chats[1]
    proc = _ok(
        run_cli("explain", "-c", data.config, "--span-id", span_hex(weather), data.spans, evals)
    )
    out = proc.stdout
    assert f"span {span_hex(weather)}  'chat'" in out
    assert "extracted fields (convention: genai)" in out
    assert 'input   "where is my parcel?"' in out and 'output  "weather"' in out
    assert "chat-quality  WOULD SCORE  selected, sampled in (rate 1), filter true" in out
    assert "roots         NOT SCORED   not selected: a child span named 'chat'" in out
    assert "eval chat-quality" in out and "category = 0 (other)" in out

    doc = json.loads(
        _ok(
            run_cli(
                "explain", "-c", data.config, "--span-id", span_hex(data.t2.chats[0]),
                "--trace-id", trace_hex(data.t2.chats[0]), "--json", "--width", "5", data.spans,
            )
        ).stdout
    )  # fmt: skip
    rules = {r["rule"]: r for r in doc["rules"]}
    assert rules["sampled"]["verdict"] == (
        "sampled out: trace sampled out at rate 0.5 (the filter passes)"
    )
    assert rules["sampled"]["scorers"][1] == {
        "scorer": "judge", "type": "llm_judge", "llm": True, "sampling": 1.0, "runs": False,
        "why_not": "sampled out at 1 of the rule's sample",
    }  # fmt: skip
    assert rules["chat-quality"]["would_score"] is True
    assert doc["extracted"]["output"] == "ship…" and doc["extracted"]["convention"] == "genai"
    assert doc["evals_in_input"] == []

    t4 = span_hex(data.t4.chats[0])
    doc = json.loads(_ok(run_cli("explain", "-c", data.config, "--span-id", t4, "--json",
                                 data.spans)).stdout)  # fmt: skip
    quality = doc["rules"][0]
    assert quality["verdict"] == "filter false: attributes['gen_ai.operation.name'] = 'chat'"

    proc = _ok(
        run_cli("explain", "-c", data.config, "--span-id", "00000000000000ff", data.spans), 1
    )
    assert "span 00000000000000ff not found in 9 span(s) read from 1 file(s)" in proc.stderr


# -- report ----------------------------------------------------------------------------------------


def test_report_table_and_json(data: Data, tmp_path: Path) -> None:
    config = tmp_path / "judged.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "scorers": {
                    "length": {"type": "python", "ref": "tests.test_tools_support:length_score"},
                    "category": {"type": "one_of", "values": ["billing", "shipping"]},
                },
                "rules": [
                    {"name": "q", "apply_to": {"span_names": ["chat"]}, "scorers": ["length"]},
                    {"name": "c", "apply_to": {"span_names": ["chat"]}, "scorers": ["category"]},
                ],
            }
        )
    )
    evals = tmp_path / "evals.jsonl"
    _ok(run_cli("score", "-c", config, "--out", evals, data.spans))
    proc = _ok(run_cli("report", "--json", evals, evals))  # twice: counted once
    doc = json.loads(proc.stdout)
    assert doc["evaluations"] == {"q": 5, "c": 5}
    assert doc["input"]["duplicates"] == doc["input"]["spans"] // 2
    by = {(s["rule"], s["scorer"]): s for s in doc["scorers"]}
    # outputs: billing, weather, shipping, (none), billing -> lengths 7, 7, 8, 0, 7 -> /10
    length = by[("q", "length")]
    assert length["count"] == 5 and length["mean"] == pytest.approx(0.58)
    assert length["p50"] == pytest.approx(0.7) and length["p10"] == pytest.approx(0.28)
    assert length["labels"] == {"long": 4, "short": 1}
    assert length["judge_tokens"] == {"input": 500, "output": 35}
    assert length["judge_models"] == ["judge-1"]
    category = by[("c", "category")]
    # The span without output makes one_of fail (an error, not a 0).
    assert category["errors"] == 1 and category["error_rate"] == pytest.approx(0.2)
    assert category["labels"] == {"billing": 2, "other": 1, "shipping": 1}
    assert category["pass_rate"] == pytest.approx(0.75)

    table = _ok(run_cli("report", evals)).stdout
    assert "10 evaluation(s): c 5, q 5" in table
    row = next(ln for ln in table.splitlines() if ln.startswith("q ")).split()
    assert row[:9] == ["q", "length", "5", "0.58", "0.28", "0.7", "0.76", "80%", "0"]
    assert "500/35" in row and "long" in row

    proc = _ok(run_cli("report", data.spans), 1)
    assert "no eval spans in the input" in proc.stderr and "application's spans" in proc.stderr


# -- bad input -------------------------------------------------------------------------------------


def test_bad_files_fail_clearly_or_keep_going(data: Data, tmp_path: Path) -> None:
    lines = data.spans.read_text().splitlines()
    future = json.loads(lines[1])
    future["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["brandNewField"] = {"x": 1}
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        "\n".join(
            [
                lines[0],
                lines[1][:200],  # truncated
                '{"resourceSpans": [{"scopeSpans": "x"}]}',  # wrong JSON
                json.dumps(future),  # an unknown field: ignored, as OTLP asks
                lines[2],
            ]
        )
        + "\n"
    )
    proc = _ok(run_cli("test", "-c", data.config, "--rule", "chat-quality", bad), 1)
    assert re.search(rf"{re.escape(str(bad))}:2:\d+: not valid JSON: ", proc.stderr)
    assert "--keep-going" in proc.stderr
    assert proc.stdout == ""

    proc = _ok(run_cli("test", "-c", data.config, "--rule", "chat-quality", "--keep-going", bad), 2)
    assert re.search(rf"skipped: {re.escape(str(bad))}:2:\d+: not valid JSON", proc.stderr)
    assert f"skipped: {bad}:3: not an OTLP/JSON trace request" in proc.stderr
    assert "2 bad line(s) or message(s) skipped" in proc.stderr
    assert "3 scored" in proc.stdout  # lines 1 and 4 (the unknown field is ignored)
    assert span_hex(data.t2.chats[0]) in proc.stdout and span_hex(data.t3.root) in proc.stdout

    out = tmp_path / "evals.jsonl"
    proc = _ok(run_cli("score", "-c", data.config, "--keep-going", "--out", out, bad), 2)
    assert len(_evals(out)) == 3 + 4 + 3  # chat-quality, sampled, roots over 3 good traces

    binary = tmp_path / "garbage.bin"
    binary.write_bytes(b"\x00\x00\x00\x10" + b"\xff" * 8)
    proc = _ok(run_cli("report", binary), 1)
    assert f"{binary}: byte 0: truncated: a message of 16 bytes is announced, 8 are left" in (
        proc.stderr
    )


# -- Ctrl-C ----------------------------------------------------------------------------------------


def test_ctrl_c_stops_flushes_and_says_how_far(tmp_path: Path) -> None:
    config = tmp_path / "slow.yaml"
    slow = {"type": "python", "ref": "tests.test_tools_support:slow_score"}
    rule = {"name": "slow", "apply_to": {"span_names": ["chat"]}, "scorers": ["slow"]}
    config.write_text(
        yaml.safe_dump({"scorers": {"slow": slow}, "rules": [rule], "engine": {"threads": 4}})
    )
    traces = make_traces([["billing"] * 4] * 60, step_ns=10**6)  # 240 chats: ~3 s
    spans = write_with_exporter(tmp_path / "big.jsonl", [t.spans for t in traces])
    out = tmp_path / "evals.jsonl"
    cmd = [sys.executable, "-m", "otel_online_eval.cli", "score", "-c", str(config)]
    proc = subprocess.Popen(
        [*cmd, "--out", str(out), str(spans)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not (out.exists() and out.stat().st_size > 0):  # scoring has begun
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no eval spans written"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr
    assert "stopping; finishing the" in stderr
    line = next(ln for ln in stderr.splitlines() if "interrupted after" in ln)
    done = int(line.split("interrupted after ")[1].split()[0])
    assert 0 < done < 240 and "of 240 evaluation(s)" in line
    assert f"the eval spans of those {done} were flushed to {out}" in line
    assert f"run the same command with {out} among the inputs" in line
    assert len(_evals(out)) == done  # every result reported was written, nothing more
    assert "RULE" in stdout  # the summary table still printed

    # Resuming with the output among the inputs scores exactly the rest.
    rest = _ok(run_cli("score", "-c", config, "--out", out, "--json", spans, out))
    assert json.loads(rest.stdout)["evaluations"]["done"] == 240 - done
    assert len(_evals(out)) == 240


# -- the sidecar's file exporter -------------------------------------------------------------------


def test_eval_spans_written_by_the_sidecar(data: Data, tmp_path: Path) -> None:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import SpanExportResult

    from tests.sidecar_helpers import HOST, free_ports, running_sidecar

    evals = tmp_path / "sidecar-evals.jsonl"
    grpc_port, http_port = free_ports(2)
    config = yaml.safe_load(CONFIG)
    config["receiver"] = {
        "grpc": {"endpoint": f"{HOST}:{grpc_port}"},
        "http": {"endpoint": f"{HOST}:{http_port}"},
        "drain_timeout_s": 5,
    }
    config["export"] = {"file": {"path": str(evals)}}
    with running_sidecar(tmp_path, config) as sidecar:
        exporter = OTLPSpanExporter(endpoint=f"{HOST}:{grpc_port}", insecure=True, timeout=10)
        try:
            spans = [s for t in data.traces for s in t.spans]
            assert exporter.export(spans) == SpanExportResult.SUCCESS
        finally:
            exporter.shutdown()
        assert sidecar.stop() == 0  # SIGTERM: drain, flush the eval spans
    assert evals.stat().st_size > 0

    doc = json.loads(_ok(run_cli("report", "--json", evals)).stdout)
    # The sidecar samples: "sampled" at 0.5 leaves t2 out.
    assert doc["evaluations"] == {"chat-quality": 3, "sampled": 4, "roots": 4}
    by = {(s["rule"], s["scorer"]): s for s in doc["scorers"]}
    assert by[("chat-quality", "category")]["labels"] == {"billing": 1, "other": 1, "shipping": 1}
    judge = by[("sampled", "judge")]  # nothing listens on the judge's port: errors, counted
    assert judge["errors"] + judge["skipped"] == 4 and judge["count"] == 0

    # Backfill with the sidecar's eval spans among the inputs: only what it did not score.
    proc = _ok(run_cli("score", "-c", data.config, "--json", "--out", tmp_path / "more.jsonl",
                       data.spans, evals))  # fmt: skip
    summary = json.loads(proc.stdout)
    assert summary["evaluations"]["done"] == 1  # t2's chat, which the sidecar sampled out
    assert {k: v["already_scored"] for k, v in summary["rules"].items()} == {
        "chat-quality": 3, "sampled": 4, "roots": 4,
    }  # fmt: skip

    out = _ok(run_cli("explain", "-c", data.config, "--span-id", span_hex(data.t1.chats[0]),
                      data.spans, evals)).stdout  # fmt: skip
    assert "eval chat-quality" in out and "category = 1 (billing)" in out
    assert "eval sampled" in out
    assert "judge: ERROR" in out or "judge: skipped" in out


def test_score_exports_through_the_configs_otlp_exporter(
    data: Data, tmp_path: Path, otlp_grpc_receiver: Any
) -> None:
    config = yaml.safe_load(CONFIG)
    config["export"] = {
        "otlp": {"protocol": "grpc", "endpoint": otlp_grpc_receiver.endpoint, "insecure": True}
    }
    path = tmp_path / "otlp.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = _ok(run_cli("score", "-c", path, "--rule", "chat-quality", "--json", data.spans))
    summary = json.loads(proc.stdout)
    assert summary["destination"] == "otlp"
    assert summary["eval_spans"] == {"exported": 9, "failed": 0}  # 3 evals, 2 scores each
    received = otlp_grpc_receiver.wait_for_spans(9)
    names = sorted(span.name for _, _, span in received)
    assert names == ["eval chat-quality"] * 3 + ["score category"] * 3 + ["score nonempty"] * 3
