"""``otel-online-eval report``: a summary of eval spans (what the processor, the sidecar or
``score`` exported), as a table, JSON, or one self-contained HTML page with charts.

A trace rule (``scope: trace``, ``late: reevaluate``) may evaluate a trace again when late spans
come: each evaluation is a revision (``online_eval.revision``), and the newer eval span links
to the one it replaces (link attribute ``online_eval.link = supersedes``). Only the latest
revision per (rule, trace) in the input is counted; the others are counted as superseded."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from typing import Any

from otel_online_eval.emit import SCORER_ATTR
from otel_online_eval.tools._backfill import SCORED_END_ATTR
from otel_online_eval.tools._common import (
    EXIT_OK,
    EXIT_PARTIAL,
    ErrorPrinter,
    ToolError,
    reader_for,
)
from otel_online_eval.tools._html import render_html
from otel_online_eval.tools._stats import StatsTable
from otel_online_eval.tools._text import fmt_num, fmt_pct, render_table, terminal_width

__all__ = ["add_report_command", "collect", "run_report"]


def add_report_command(sub: Any) -> None:
    p = sub.add_parser(
        "report",
        help="summarise eval spans: per rule and scorer counts, means, percentiles, labels",
        description=(
            "Read eval spans (OTLP files written by the file exporter, the Collector, or "
            "`score --out`) and summarise them per rule and scorer: count, mean, p10/p50/p90, "
            "pass rate, label counts, error rate, judge tokens. --html writes one self-contained "
            "page with a histogram and a score-over-time chart per scorer."
        ),
    )
    p.add_argument("evals", nargs="+", metavar="EVALS", help="OTLP files, directories, or -")
    p.add_argument("--rule", action="append", metavar="NAME", help="only this rule (repeatable)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--html", metavar="FILE", help="also write a self-contained HTML report")
    p.add_argument("--title", default="Online evaluation report", help="the HTML page's title")
    p.add_argument(
        "--keep-going", action="store_true", help="report bad lines and go on with the rest"
    )
    p.set_defaults(run=run_report)


_Pending = tuple[str, str, str, float | None, str | None, int, tuple[int, int], Any]


def collect(
    reader: Any, rules: set[str] | None
) -> tuple[
    StatsTable, Counter[str], dict[str, int], dict[str, dict[str, int]], dict[str, dict[str, int]]
]:
    """Score spans into stats per (rule, scorer); eval spans counted per rule.

    A score is placed in time at its scored span's end when its eval span says it
    (``online_eval.span.end_time_unix_nano``, set by ``score``), else at its own end. Of a
    trace rule's evaluations of one trace, only the latest revision counts (its scores, errors
    and skips); the others are ``superseded``.

    Returns:
        The stats, evaluations per rule, input counts (``other_spans``, ``duplicates``,
        ``superseded``), and per trace rule its ``evaluations``, ``incomplete`` ones (not
        complete when evaluated) and ``superseded`` revisions, and per session rule its
        ``conversations`` (one evaluation each) and their ``turns``.
    """
    stats = StatsTable()
    evals: Counter[str] = Counter()
    seen: set[tuple[int, int]] = set()
    counts = {"other_spans": 0, "duplicates": 0, "superseded": 0}
    scored_end: dict[tuple[int, int], int] = {}  # eval span -> when its scored span ended
    pending: list[_Pending] = []  # score spans: their eval span may come later
    # Eval spans: (rule, its key, (rule, trace) for a trace rule's, revision, complete).
    records: list[tuple[str, tuple[int, int], tuple[str, int] | None, int, bool]] = []
    latest: dict[tuple[str, int], int] = {}  # (rule, trace) -> its latest revision
    replaced: set[tuple[int, int]] = set()  # eval spans a newer revision supersedes (links)
    sessions: dict[str, dict[str, int]] = {}  # session rules: conversations, turns
    for fs in reader:
        if fs.eval_rule is None:
            counts["other_spans"] += 1
            continue
        v = fs.view
        key = (v.trace_id, v.span_id)
        if key in seen:
            counts["duplicates"] += 1
            continue
        seen.add(key)
        rule = fs.eval_rule
        if rules is not None and rule not in rules:
            continue
        attrs = v.attributes
        scorer = attrs.get(SCORER_ATTR)
        if scorer is None:
            if v.name.startswith("eval "):
                name = rule or v.name.removeprefix("eval ")
                of_trace: tuple[str, int] | None = None
                revision = 1
                if attrs.get("online_eval.scope") == "trace":
                    of_trace = (name, v.trace_id)
                    rev = attrs.get("online_eval.revision")
                    if isinstance(rev, int) and not isinstance(rev, bool):
                        revision = rev
                    latest[of_trace] = max(latest.get(of_trace, revision), revision)
                    for link in v.links:
                        if link.attributes.get("online_eval.link") == "supersedes":
                            replaced.add((link.trace_id, link.span_id))
                if attrs.get("online_eval.scope") == "session":
                    conv = sessions.setdefault(name, {"conversations": 0, "turns": 0})
                    conv["conversations"] += 1
                    turns = attrs.get("online_eval.session.turns")
                    if isinstance(turns, int) and not isinstance(turns, bool):
                        conv["turns"] += turns
                complete = attrs.get("online_eval.trace.complete") is not False
                records.append((name, key, of_trace, revision, complete))
                end = attrs.get(SCORED_END_ATTR)
                if isinstance(end, int) and not isinstance(end, bool) and end > 0:
                    scored_end[key] = end
            continue
        kind = "score"
        if attrs.get("online_eval.skipped") is not None:
            kind = "skipped"
        elif v.status_code == "ERROR":
            kind = "error"
        value = attrs.get("gen_ai.evaluation.score.value")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            value = None
        label = attrs.get("gen_ai.evaluation.score.label")
        pending.append(
            (
                kind,
                rule,
                str(scorer),
                value,
                label if isinstance(label, str) else None,
                v.end_time_ns,
                (v.trace_id, v.parent_span_id or 0),
                attrs,
            )
        )
    traces: dict[str, dict[str, int]] = {}
    for name, key, of_trace, revision, complete in records:
        tally = None
        if of_trace is not None:
            tally = traces.setdefault(name, {"evaluations": 0, "incomplete": 0, "superseded": 0})
            if revision < latest[of_trace] or key in replaced:
                replaced.add(key)
                tally["superseded"] += 1
                counts["superseded"] += 1
                continue
        evals[name] += 1
        if tally is not None:
            tally["evaluations"] += 1
            tally["incomplete"] += not complete
    for kind, rule, scorer, value, label, end_ns, parent, attrs in pending:
        if parent in replaced:
            continue  # a score of a superseded revision
        st = stats.get(rule, scorer)
        if kind == "skipped":
            st.skipped += 1
        elif kind == "error":
            st.add_error(str(attrs.get("error.type") or "error"))
        else:
            st.add_score(value, label, scored_end.get(parent, end_ns), attrs)
    return stats, evals, counts, traces, sessions


def run_report(args: argparse.Namespace) -> int:
    printer = ErrorPrinter("report")
    reader = reader_for(None, args.evals, args.keep_going, printer)
    rules = set(args.rule) if args.rule else None
    stats, evals, counts, traces, sessions = collect(reader, rules)
    if not len(stats) and not evals:
        hint = ""
        if counts["other_spans"]:
            hint = (
                f" ({counts['other_spans']} other span(s) were read: are these the application's "
                "spans rather than eval spans?)"
            )
        raise ToolError(f"no eval spans in the input{hint}")
    if args.json:
        doc = {
            "evaluations": dict(evals),
            "traces": traces,
            "sessions": sessions,
            "scorers": [s.to_json() for s in stats.sorted()],
            "input": {"files": reader.files, "spans": reader.spans, **counts},
        }
        json.dump(doc, sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
    else:
        _print_table(stats, evals, counts, traces, sessions)
    if args.html:
        page = render_html(
            stats,
            evals,
            title=args.title,
            sources=[os.path.basename(p) if p != "-" else "<stdin>" for p in args.evals],
            generated_ns=time.time_ns(),
        )
        try:
            with open(args.html, "w", encoding="utf-8") as f:
                f.write(page)
        except OSError as exc:
            raise ToolError(f"--html {args.html}: cannot write: {exc.strerror or exc}") from exc
        if not args.json:
            print(f"\nHTML report written to {args.html}")
    note = printer.summary(reader)
    if note:
        print(f"otel-online-eval report: {note}", file=sys.stderr)
    return EXIT_PARTIAL if printer.count else EXIT_OK


def labels_text(labels: Counter[str], top: int = 4) -> str:
    common = labels.most_common(top)
    text = ", ".join(f"{k} {n}" for k, n in common)
    if len(labels) > top:
        text += f", +{len(labels) - top} more"
    return text


def _print_table(
    stats: StatsTable,
    evals: Counter[str],
    counts: dict[str, int],
    traces: dict[str, dict[str, int]],
    sessions: dict[str, dict[str, int]] | None = None,
) -> None:
    out = sys.stdout
    total = sum(evals.values())
    per_rule = ", ".join(f"{rule} {n}" for rule, n in sorted(evals.items()))
    print(f"{total} evaluation(s)" + (f": {per_rule}" if per_rule else ""), file=out)
    if counts["duplicates"]:
        print(f"({counts['duplicates']} duplicate span(s) counted once)", file=out)
    for rule, t in sorted(traces.items()):
        line = f"({rule}: {t['evaluations']} trace(s)"
        if t["incomplete"]:
            line += f", {t['incomplete']} incomplete when evaluated"
        if t["superseded"]:
            line += (
                f"; {t['superseded']} superseded revision(s) not counted, only the latest per trace"
            )
        print(line + ")", file=out)
    for rule, t in sorted((sessions or {}).items()):
        print(f"({rule}: {t['conversations']} conversation(s), {t['turns']} turn(s))", file=out)
    print(file=out)
    rows = []
    for s in stats.sorted():
        tokens = "-"
        if s.input_tokens or s.output_tokens:
            tokens = f"{s.input_tokens:,}/{s.output_tokens:,}"
        rows.append(
            [
                s.rule,
                s.scorer,
                str(s.count),
                fmt_num(s.mean),
                fmt_num(s.pct(10)),
                fmt_num(s.pct(50)),
                fmt_num(s.pct(90)),
                fmt_pct(s.pass_rate),
                str(s.errors),
                fmt_pct(s.error_rate),
                str(s.skipped),
                tokens,
                labels_text(s.labels) or "-",
            ]
        )
    print(
        render_table(
            [
                "RULE",
                "SCORER",
                "COUNT",
                "MEAN",
                "P10",
                "P50",
                "P90",
                "PASS",
                "ERRORS",
                "ERR%",
                "SKIPPED",
                "TOKENS IN/OUT",
                "LABELS",
            ],
            rows,
            right=(2, 3, 4, 5, 6, 7, 8, 9, 10, 11),
            max_width=terminal_width(out),
        ),
        file=out,
    )
    print(
        "(pass: share of scores >= 0.5; err%: errors / (scores + errors); "
        "tokens: judge usage on score spans)",
        file=out,
    )
