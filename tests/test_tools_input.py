"""The tools' input reader, stats and time parsing (in-process; the commands themselves run as
subprocesses in test_tools_cli.py; the OTLP/JSON codec has tests/test_otlp_json.py)."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.trace import SpanContext, TraceFlags

from otel_online_eval.emit import Emitter, ScorerRun, Target
from otel_online_eval.otlp import encode_spans_dict, encode_spans_json
from otel_online_eval.scorers.base import Score
from otel_online_eval.tools._common import ToolError, parse_since
from otel_online_eval.tools._input import InputError, SpanReader
from otel_online_eval.tools._stats import ScorerStats, percentile
from tests.test_tools_support import make_traces, write_with_exporter


@pytest.fixture(scope="module")
def traces() -> list[Any]:
    return make_traces([["billing", "weather"], ["shipping"], [None]])


def _names(reader: SpanReader) -> list[str]:
    return [fs.view.name for fs in reader]


def _lines_file(tmp_path: Path, traces: list[Any], name: str = "spans.jsonl") -> Path:
    return write_with_exporter(tmp_path / name, [t.spans for t in traces])


def test_reads_the_file_exporters_json_lines(tmp_path: Path, traces: list[Any]) -> None:
    path = _lines_file(tmp_path, traces)
    reader = SpanReader([str(path)])
    spans = list(reader)
    assert [fs.view.name for fs in spans] == ["chat", "chat", "POST /support"] + [
        "chat",
        "POST /support",
    ] * 2
    assert [fs.where.line for fs in spans] == [1, 1, 1, 2, 2, 3, 3]
    assert str(spans[0].where) == f"{path}:1"
    first = spans[0].view
    assert first.trace_id == traces[0].trace_id
    assert first.genai.output == "billing"
    assert first.resource["service.name"] == "support-bot"
    assert reader.files == 1 and reader.records == 3 and reader.spans == 7


def test_int64_as_numbers_and_enum_names(tmp_path: Path, traces: list[Any]) -> None:
    data = encode_spans_dict(traces[0].spans)
    span = data["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    span["startTimeUnixNano"] = int(span["startTimeUnixNano"])  # a number, not a string
    span["kind"] = "SPAN_KIND_CLIENT"  # an enum name (the library decoder takes it)
    for kv in span["attributes"]:
        if "intValue" in kv["value"]:
            kv["value"]["intValue"] = int(kv["value"]["intValue"])
    path = tmp_path / "numbers.jsonl"
    path.write_text(json.dumps(data) + "\n")
    (first, *_) = list(SpanReader([str(path)]))
    assert first.view.start_time_ns == traces[0].chats[0].start_time
    assert first.view.kind == "CLIENT"
    assert first.view.attributes["gen_ai.usage.input_tokens"] == 12


def test_gzip_stdin_directory_and_pretty_json(tmp_path: Path, traces: list[Any]) -> None:
    plain = _lines_file(tmp_path, traces)
    raw = plain.read_bytes()
    (tmp_path / "dir" / "sub").mkdir(parents=True)
    (tmp_path / "dir" / "a.jsonl.gz").write_bytes(gzip.compress(raw))
    (tmp_path / "dir" / "sub" / "b").write_bytes(gzip.compress(raw))  # no .gz: magic decides
    (tmp_path / "dir" / ".hidden.jsonl").write_text("not json")
    pretty = tmp_path / "dir" / "c.json"
    objs = [encode_spans_dict(t.spans) for t in traces[:2]]
    pretty.write_text("\n".join(json.dumps(o, indent=2) for o in objs))
    reader = SpanReader([str(tmp_path / "dir")])
    assert len(list(reader)) == 7 + 7 + 5
    assert reader.files == 3
    stdin = SpanReader(["-"], stdin=io.BytesIO(gzip.compress(raw)))
    spans = list(stdin)
    assert len(spans) == 7 and str(spans[0].where) == "<stdin>:1"
    (p1, *_) = list(SpanReader([str(pretty)]))
    assert p1.where.line == 1


def test_protobuf_single_fixed_and_varint_framing(tmp_path: Path, traces: list[Any]) -> None:
    bodies = [encode_spans(t.spans).SerializeToString() for t in traces]
    single = tmp_path / "one.pb"
    single.write_bytes(bodies[0])
    fixed = tmp_path / "collector.pb"  # the Collector's file exporter, format: proto
    fixed.write_bytes(b"".join(len(b).to_bytes(4, "big") + b for b in bodies))
    varint = tmp_path / "delimited.pb"
    varint.write_bytes(b"".join(_varint(len(b)) + b for b in bodies))
    assert _names(SpanReader([str(single)])) == ["chat", "chat", "POST /support"]
    for path in (fixed, varint):
        spans = list(SpanReader([str(path)]))
        assert len(spans) == 7, path
        assert [fs.where.message for fs in spans][-2:] == [3, 3]
        assert "message 3 (byte" in str(spans[-1].where)
    gz = tmp_path / "collector.pb.gz"
    gz.write_bytes(gzip.compress(fixed.read_bytes()))
    assert len(list(SpanReader([str(gz)]))) == 7


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _bad_file(tmp_path: Path, traces: list[Any]) -> Path:
    good = [encode_spans_json(t.spans) for t in traces]
    lines = [
        good[0],
        good[1][: len(good[1]) // 2],  # 2: truncated
        '{"resourceSpans": 5}',  # 3: wrong JSON shape
        '{"hello": "world"}',  # 4: not a trace request
        "[1, 2]",  # 5: an array
        '{"resourceLogs": []}',  # 6: logs: skipped, counted
        "",  # 7: blank
        good[2],  # 8
    ]
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_bad_lines_stop_reading_with_the_place(tmp_path: Path, traces: list[Any]) -> None:
    path = _bad_file(tmp_path, traces)
    reader = SpanReader([str(path)])
    with pytest.raises(InputError) as info:
        list(reader)
    assert str(info.value).startswith(f"{path}:2:")
    assert "not valid JSON" in str(info.value)


def test_keep_going_reports_bad_lines_and_reads_the_rest(tmp_path: Path, traces: list[Any]) -> None:
    path = _bad_file(tmp_path, traces)
    seen: list[InputError] = []
    reader = SpanReader([str(path)], keep_going=True, on_error=seen.append)
    spans = list(reader)
    assert [fs.where.line for fs in spans] == [1, 1, 1, 8, 8]
    assert [e.where.line for e in seen] == [2, 3, 4, 5]
    assert "not valid JSON" in seen[0].message
    assert "resourceSpans" in seen[1].message
    assert "no 'resourceSpans' (top-level keys: hello)" in seen[2].message
    assert "JSON array" in seen[3].message
    assert reader.other_signals == 1
    assert reader.errors == seen


def test_unknown_fields_are_ignored(tmp_path: Path, traces: list[Any]) -> None:
    data = encode_spans_dict(traces[1].spans)
    data["futureField"] = {"x": 1}
    data["resourceSpans"][0]["somethingNew"] = [1]
    span = data["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    span["newSpanField"] = "v"
    span["attributes"][0]["value"]["newValueKind"] = 3
    path = tmp_path / "future.jsonl"
    path.write_text(json.dumps(data) + "\n")
    spans = list(SpanReader([str(path)]))
    assert [fs.view.name for fs in spans] == ["chat", "POST /support"]
    assert spans[0].view.genai.output == "shipping"


def test_bad_ids_name_the_span(tmp_path: Path, traces: list[Any]) -> None:
    data = encode_spans_dict(traces[1].spans)
    spans = data["resourceSpans"][0]["scopeSpans"][0]["spans"]
    spans[0]["traceId"] = "abc"
    del spans[1]["spanId"]
    path = tmp_path / "ids.jsonl"
    path.write_text(json.dumps(data) + "\n")
    with pytest.raises(
        InputError, match=r"ids.jsonl:1: .*spans\[0\]\.traceId: trace_id must be 32 hex digits"
    ):
        list(SpanReader([str(path)]))
    spans[0]["traceId"] = "0" * 31 + "1"
    path.write_text(json.dumps(data) + "\n")
    errors: list[InputError] = []
    got = list(SpanReader([str(path)], keep_going=True, on_error=errors.append))
    assert len(got) == 1
    assert "spans[1]: span_id must be 8 bytes, not all zero (got 0 bytes)" in errors[0].message


def test_broken_files(tmp_path: Path, traces: list[Any]) -> None:
    raw = _lines_file(tmp_path, traces).read_bytes()
    truncated = tmp_path / "cut.jsonl.gz"
    truncated.write_bytes(gzip.compress(raw)[:-20])
    zstd = tmp_path / "spans.jsonl.zst"
    zstd.write_bytes(b"\x28\xb5\x2f\xfd" + b"\0" * 20)
    body = encode_spans(traces[0].spans).SerializeToString()
    cut_pb = tmp_path / "cut.pb"
    cut_pb.write_bytes(len(body).to_bytes(4, "big") + body + (500).to_bytes(4, "big") + b"x" * 10)
    cases = {
        truncated: "truncated or corrupt gzip data",
        zstd: "zstd-compressed data is not supported: decompress it first",
        cut_pb: "byte",
        tmp_path / "missing.jsonl": "no such file or directory",
    }
    for path, text in cases.items():
        errors: list[InputError] = []
        got = list(SpanReader([str(path)], keep_going=True, on_error=errors.append))
        assert len(errors) == 1 and text in str(errors[0]), (path, errors)
        assert str(errors[0]).startswith(str(path))
        if path == cut_pb:  # the complete first message is still read
            assert len(got) == 3
            assert "a message of 500 bytes is announced, 10 are left" in str(errors[0])


def test_eval_spans_are_recognised(tmp_path: Path, traces: list[Any]) -> None:
    spans = _emit_evals(traces[0])
    path = write_with_exporter(tmp_path / "evals.jsonl", [spans])
    read = list(SpanReader([str(path)]))
    assert {fs.eval_rule for fs in read} == {"r"}
    assert sorted(fs.view.name for fs in read) == ["eval r", "score a", "score b"]


def _emit_evals(trace: Any) -> list[Any]:
    class Sink:
        def __init__(self) -> None:
            self.spans: list[Any] = []

        def on_end(self, span: Any) -> None:
            self.spans.append(span)

    sink = Sink()
    emitter = Emitter(sink)  # type: ignore[arg-type]
    chat = trace.chats[0]
    link = SpanContext(chat.context.trace_id, chat.context.span_id, False, TraceFlags(1))
    runs = [
        ScorerRun("a", Score(0.25, "fail", "short", {"gen_ai.usage.input_tokens": 9}), None, 1, 2),
        ScorerRun("b", None, RuntimeError("boom"), 1, 2),
    ]
    emitter.emit(
        Target(chat.context.trace_id, chat.context.span_id, link, chat.resource, "chat"),
        "r",
        runs,
        ["c"],
        1,
        2,
        {"online_eval.sampling.rate": 0.5},
    )
    return sink.spans


# -- stats and --since ------------------------------------------------------------------------


def test_percentiles_and_rates() -> None:
    assert percentile([], 50) is None
    assert percentile([1.0], 90) == 1.0
    assert percentile([0.0, 1.0], 50) == 0.5
    assert percentile([0.0, 0.5, 1.0, 1.0], 10) == pytest.approx(0.15)
    s = ScorerStats("r", "s")
    for v in (0.2, 0.5, 0.9, None):
        s.add_score(v, "x" if v else None)
    s.add_error("timeout")
    assert s.count == 4 and s.mean == pytest.approx(1.6 / 3)
    assert s.pass_rate == pytest.approx(2 / 3)
    assert s.error_rate == pytest.approx(1 / 5)
    assert s.labels["x"] == 3


def test_parse_since() -> None:
    now = 1_700_000_000.0
    assert parse_since("24h", now) == int((now - 86400) * 1e9)
    assert parse_since("90s", now) == int((now - 90) * 1e9)
    assert parse_since("2w", now) == int((now - 14 * 86400) * 1e9)
    assert parse_since("2024-05-01T00:00:00Z") == 1714521600 * 10**9
    assert parse_since("2024-05-01") == 1714521600 * 10**9
    with pytest.raises(ToolError, match="expected a duration"):
        parse_since("yesterday")


def test_blocking_batch_processor_waits_instead_of_dropping(traces: list[Any]) -> None:
    import threading
    import time

    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    from otel_online_eval.tools._sinks import BlockingBatchProcessor

    class Slow(SpanExporter):
        def __init__(self) -> None:
            self.got: list[int] = []
            self.fail_next = False

        def export(self, spans: Any) -> SpanExportResult:
            time.sleep(0.01)
            if self.fail_next:
                self.fail_next = False
                return SpanExportResult.FAILURE
            self.got.append(len(spans))
            return SpanExportResult.SUCCESS

    span = traces[0].root
    for synchronous in (False, True):
        exporter = Slow()
        processor = BlockingBatchProcessor(
            exporter, max_batch=4, max_queue=8, delay_s=0.05, synchronous=synchronous
        )

        def produce(p: BlockingBatchProcessor = processor) -> None:
            for _ in range(25):
                p.on_end(span)

        workers = [threading.Thread(target=produce) for _ in range(1 if synchronous else 4)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(10)
        assert processor.force_flush(5000)
        total = 25 * len(workers)
        assert sum(exporter.got) == total and processor.exported == total
        assert max(exporter.got) <= 4
        exporter.fail_next = True
        for _ in range(4):
            processor.on_end(span)
        processor.shutdown()
        assert processor.failed == 4 and processor.exported == total


def test_json_with_raw_control_characters_is_reported_by_line(
    tmp_path: Path, traces: list[Any]
) -> None:
    good = encode_spans_json(traces[0].spans)
    path = tmp_path / "ctrl.jsonl"
    path.write_bytes((good + "\n" + '{"resourceSpans": [], "x": "a\x01b"}\n' + good).encode())
    errors: list[InputError] = []
    spans = list(SpanReader([str(path)], keep_going=True, on_error=errors.append))
    assert len(spans) == 6
    assert len(errors) == 1 and str(errors[0]).startswith(f"{path}:2:")
    assert "Invalid control character" in errors[0].message


def test_llm_scorers_are_told_apart() -> None:
    from otel_online_eval.config import parse_config
    from otel_online_eval.tools._common import is_llm

    pytest.importorskip("autoevals")
    cfg = parse_config(
        """
scorers:
  valid_json: {type: autoevals, name: ValidJSON}
  levenshtein: {type: autoevals, name: Levenshtein}
  factuality: {type: autoevals, name: Factuality, model: m, base_url: "http://127.0.0.1:9/v1",
               api_key: test}
  moderation: {type: autoevals, name: Moderation, base_url: "http://127.0.0.1:9/v1", api_key: t}
  judge: {type: llm_judge, base_url: "http://127.0.0.1:9/v1", model: m, api_key: t,
          template: relevance}
  nonempty: {type: not_empty}
rules: []
"""
    )
    llm = {name for name, spec in cfg.scorers.items() if is_llm(spec)}
    assert llm == {"factuality", "moderation", "judge"}
