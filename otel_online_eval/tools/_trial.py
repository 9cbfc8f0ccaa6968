"""``otel-online-eval test``: try one rule on recorded spans before enabling it.

For each span: does the rule pick it, and if not, the first reason (selection, sampling, the
filter's false sub-expression); for the spans it picks, the scores its scorers give, run through
the real engine (timeouts apply). Nothing is exported.

A trace rule (``scope: trace``) is tried on each trace of the input instead, assembled and
decided as the engine does at the end of a file (see :mod:`otel_online_eval.tools._traces`):
one row per trace, with its anchor span, span count and completeness.

A session rule (``scope: session``) is tried on each conversation of the input: its traces
become turns as the engine makes them (session key, sampling by the key's hash, the filter)
and every conversation ends at the end of the input (reason ``end_of_input``): one row per
conversation, with its key, its number of turns and its last turn's anchor; the traces that
are not turns are counted (no key, sampled out, filtered out).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import sys
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from otel_online_eval.assembly import AssemblyBounds
from otel_online_eval.emit import EvalResult, Target
from otel_online_eval.engine import Engine, EvalFuture
from otel_online_eval.engine._deciding import session_hash
from otel_online_eval.genai import CONTENT_CAPTURE_HINT, no_content
from otel_online_eval.rules import Decision, Rule, ScorerUse, Stage
from otel_online_eval.scorers.base import EvalInput
from otel_online_eval.spanview import SpanView
from otel_online_eval.tools._common import (
    EXIT_OK,
    EXIT_PARTIAL,
    ErrorPrinter,
    ToolError,
    eval_input,
    is_llm,
    load,
    pick_rules,
    reader_for,
    rule_summary,
    scorer_is_sampled_out,
)
from otel_online_eval.tools._input import FileSpan, SpanReader
from otel_online_eval.tools._sinks import NullSink
from otel_online_eval.tools._stats import StatsTable
from otel_online_eval.tools._text import fmt_num, fmt_pct, one_line, render_table, terminal_width
from otel_online_eval.tools._traces import (
    FileSession,
    FileTrace,
    SessionScan,
    TraceCollector,
    TraceDecision,
    collect_sessions,
    decide_trace,
    is_session_rule,
    is_trace_rule,
    session_input,
    trace_input,
    trace_state,
)

__all__ = ["add_test_command", "run_test"]

_WINDOW = 64  # evaluations in flight at once
_MARGIN_S = 30.0
_RESULT_WORDS = {
    None: "scored",
    "selection": "not selected",
    "sampling": "sampled out",
    "filter": "filter false",
    "incomplete": "skipped (incomplete)",
}


@dataclass
class _Row:
    name: str | None  # None: a trace without an anchor span
    trace_id: str
    span_id: str | None
    parent_span_id: str | None
    where: str
    decision: Decision | TraceDecision
    planned: list[str] = field(default_factory=list)
    sampled_out: list[str] = field(default_factory=list)
    no_llm: list[str] = field(default_factory=list)
    result: EvalResult | None = None
    future: EvalFuture[EvalResult] | None = None
    deadline_s: float = 0.0
    stuck: str | None = None
    no_content: str | None = None  # the GenAI marker of a span without prompt or answer
    trace: FileTrace | None = None  # a trace rule's row: the trace
    session: FileSession | None = None  # a session rule's row: the conversation

    @property
    def stage(self) -> str | None:
        stage = self.decision.stage
        return stage.value if isinstance(stage, Stage) else stage

    @property
    def outcome(self) -> str:
        return _RESULT_WORDS[self.stage]

    def detail(self) -> str:
        d = self.decision
        missing = (
            f"no prompt or answer on the span ({self.no_content}): content capture off?"
            if self.no_content is not None
            else None
        )
        if not d.matched:
            why = d.detail or d.reason
            return f"{missing}; {why}" if missing else why
        parts = [missing] if missing else []
        r = self.result
        if self.stuck is not None:
            parts.append(f"ERROR {self.stuck}")
        for name in self.planned:
            if r is not None and name in r.scores:
                s = r.scores[name]
                text = f"{name} = {fmt_num(s.value)}"
                if s.label:
                    text += f" ({s.label})"
                parts.append(text)
            elif r is not None and name in r.errors:
                parts.append(f"{name}: ERROR {one_line(r.errors[name], 80)}")
            elif r is not None and name in r.skipped:
                parts.append(f"{name}: skipped ({r.skipped[name]})")
        parts.extend(f"{n}: sampled out" for n in self.sampled_out)
        parts.extend(f"{n}: not run (--no-llm)" for n in self.no_llm)
        return "; ".join(parts) if parts else "(no scorer ran)"

    def to_json(self) -> dict[str, Any]:
        d = self.decision
        out: dict[str, Any] = {
            "name": self.name,
            "trace_id": self.trace_id,
            "span_id": self.span_id,
            "parent_span_id": self.parent_span_id,
            "where": self.where,
            "selected": d.matched,
            "outcome": self.outcome,
            "stage": self.stage,
            "reason": d.reason,
            "detail": d.detail,
            "no_content": self.no_content,
        }
        if self.trace is not None:
            view = self.trace.view
            out["trace"] = {
                "span_count": self.trace.span_count,
                "complete": view.complete,
                "reason": view.reason,
            }
        if self.session is not None:
            sv = self.session.view
            out["session"] = {
                "key": sv.key,
                "turns": sv.turn_count,
                "reason": sv.reason,
                "turn_trace_ids": [f"{t.trace_id:032x}" for t in sv.turns],
            }
        if d.matched:
            r = self.result
            out["scores"] = {
                k: {"value": s.value, "label": s.label, "explanation": s.explanation}
                for k, s in (r.scores.items() if r is not None else ())
            }
            out["errors"] = dict(r.errors) if r is not None else {}
            if self.stuck is not None:
                out["errors"].update({name: self.stuck for name in self.planned})
            out["skipped"] = dict(r.skipped) if r is not None else {}
            out["sampled_out"] = list(self.sampled_out)
            out["not_run_no_llm"] = list(self.no_llm)
        return out


def add_test_command(sub: Any) -> None:
    p = sub.add_parser(
        "test",
        help="try a rule on recorded spans: which it picks, why not, and the scores",
        description=(
            "Show, for each span of the input, whether the rule selects it (and the first "
            "reason when it does not), and run its scorers on the spans it selects. "
            "Nothing is exported."
        ),
    )
    p.add_argument("-c", "--config", required=True, help="the YAML config file")
    p.add_argument(
        "--rule", help="the rule to try (may be left out when the config has only one rule)"
    )
    p.add_argument("spans", nargs="+", metavar="SPANS", help="OTLP files, directories, or -")
    p.add_argument(
        "--no-llm", action="store_true", help="do not run LLM scorers (llm_judge, autoevals LLM)"
    )
    p.add_argument(
        "--ignore-sampling",
        action="store_true",
        help="decide as if the rule and its scorers sampled at 100%%",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--limit", type=int, default=0, help="look at the first N spans (traces) only")
    p.add_argument(
        "--keep-going", action="store_true", help="report bad lines and go on with the rest"
    )
    p.set_defaults(run=run_test)


def run_test(args: argparse.Namespace) -> int:
    cfg = load(args.config)
    if args.rule is None:
        if len(cfg.rules) != 1:
            names = ", ".join(r.name for r in cfg.rules) or "none"
            raise ToolError(f"say which rule to try with --rule; the rules are: {names}")
        rule = cfg.rules[0]
    else:
        rule = pick_rules(cfg, [args.rule])[0]
    printer = ErrorPrinter("test")
    reader = reader_for(cfg, args.spans, args.keep_going, printer)
    engine = Engine([rule], NullSink(), lambda payload: payload, cfg.engine)
    rows: list[_Row] = []
    evals_ignored = 0
    scan: SessionScan | None = None
    inflight: deque[_Row] = deque()

    def start(row: _Row, view: SpanView, inp: EvalInput) -> None:
        _start(engine, rule, view, inp, row)
        if row.future is not None:
            inflight.append(row)
        while len(inflight) >= _WINDOW:
            _finish(inflight.popleft())

    try:
        if is_session_rule(rule):
            evals_ignored, scan = _test_sessions(
                rule, cfg.engine.assembly, reader, rows, start, args
            )
        elif is_trace_rule(rule):
            evals_ignored = _test_traces(rule, cfg.engine.assembly, reader, rows, start, args)
        else:
            for fs in reader:
                if fs.is_eval:
                    evals_ignored += 1
                    continue
                if args.limit and len(rows) >= args.limit:
                    break
                row = _decide(rule, fs, args.ignore_sampling, args.no_llm)
                rows.append(row)
                if row.decision.matched:
                    start(row, fs.view, eval_input(fs.view, rule.name))
        while inflight:
            _finish(inflight.popleft())
    finally:
        engine.shutdown(timeout_millis=1000)

    stats = StatsTable()
    for row in rows:
        if row.result is not None:
            for name, score in row.result.scores.items():
                stats.get(rule.name, name).add_score(score.value, score.label)
            for name in row.result.errors:
                stats.get(rule.name, name).add_error("error")
            for name in row.result.skipped:
                stats.get(rule.name, name).skipped += 1
        if row.stuck is not None:
            for name in row.planned:
                stats.get(rule.name, name).add_error("engine")
        for name in row.sampled_out:
            stats.get(rule.name, name).sampled_out += 1
    outcomes = Counter(row.outcome for row in rows)
    traced = is_trace_rule(rule) and not is_session_rule(rule)
    summary: dict[str, int] = {}
    if scan is not None:  # rows are conversations
        summary["conversations"] = len(rows)
        summary["turns"] = sum(r.session.view.turn_count for r in rows if r.session)
        summary["traces"] = sum(len(s.traces) for s in scan.sessions) + len(scan.not_turns)
        summary["no_key"] = scan.count("no_key")
        summary["sampled_out"] = scan.count("sampling")
        summary["filtered_out"] = scan.count("filter")
        summary["scored"] = outcomes["scored"]
    elif traced:  # rows are traces
        summary["traces"] = len(rows)
        summary["incomplete"] = sum(1 for r in rows if r.trace and not r.trace.view.complete)
    if scan is None:
        summary["spans"] = sum(r.trace.span_count for r in rows if r.trace) if traced else len(rows)
        summary["scored"] = outcomes["scored"]
        summary["not_selected"] = outcomes["not selected"]
        summary["sampled_out"] = outcomes["sampled out"]
        summary["filter_false"] = outcomes["filter false"]
    if traced:
        summary["skipped_incomplete"] = outcomes["skipped (incomplete)"]
    summary["no_content"] = sum(1 for row in rows if row.no_content is not None)
    summary["eval_spans_ignored"] = evals_ignored
    summary["bad_input_skipped"] = printer.count
    if args.json:
        doc = {
            "rule": rule.name,
            "scope": rule.scope,
            "ignore_sampling": args.ignore_sampling,
            "no_llm": args.no_llm,
            ("conversations" if scan is not None else "traces" if traced else "spans"): [
                row.to_json() for row in rows
            ],
            "summary": summary,
            "scorers": [s.to_json() for s in stats],
        }
        json.dump(doc, sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
    else:
        _print_text(rule, rows, summary, stats, args, scan)
    note = printer.summary(reader)
    if note:
        print(f"otel-online-eval test: {note}", file=sys.stderr)
    return EXIT_PARTIAL if printer.count else EXIT_OK


def _decide(rule: Rule, fs: FileSpan, ignore_sampling: bool, no_llm: bool) -> _Row:
    view = fs.view
    decision = rule.decide(view, ignore_sampling=ignore_sampling)
    row = _Row(
        view.name,
        view.trace_id_hex,
        view.span_id_hex,
        view.parent_span_id_hex,
        str(fs.where),
        decision,
    )
    if decision.matched or decision.stage is Stage.FILTER:
        row.no_content = no_content(view)
    if decision.matched:
        _plan(row, rule, view, ignore_sampling, no_llm)
    return row


def _plan(row: _Row, rule: Rule, view: SpanView, ignore_sampling: bool, no_llm: bool) -> None:
    """Which scorers run: their own sampling (by trace id), ``--no-llm``."""
    for use in rule.scorers:
        if use.sampling == 0 or (not ignore_sampling and scorer_is_sampled_out(rule, use, view)):
            row.sampled_out.append(use.name)
        elif no_llm and is_llm(use.spec):
            row.no_llm.append(use.name)
        else:
            row.planned.append(use.name)


def _read_traces(
    rule: Rule, bounds: AssemblyBounds, reader: SpanReader
) -> tuple[TraceCollector, int]:
    """The whole input, its traces assembled for ``rule``; and the eval spans passed over."""
    collector = TraceCollector([rule], bounds)
    evals_ignored = 0
    for fs in reader:
        if fs.is_eval:
            evals_ignored += 1
        else:
            collector.add(fs)
    return collector, evals_ignored


def _test_traces(
    rule: Rule,
    bounds: AssemblyBounds,
    reader: SpanReader,
    rows: list[_Row],
    start: Callable[[_Row, SpanView, EvalInput], None],
    args: argparse.Namespace,
) -> int:
    """A trace rule: read everything, then one row per trace (the file is complete: each
    trace is decided as the engine decides it at the end of the input)."""
    collector, evals_ignored = _read_traces(rule, bounds, reader)
    for ft in collector.traces(rule):
        if args.limit and len(rows) >= args.limit:
            break
        decision = decide_trace(rule, ft.view, ignore_sampling=args.ignore_sampling)
        anchor = decision.anchor
        row = _Row(
            anchor.name if anchor is not None else None,
            f"{ft.trace_id:032x}",
            anchor.span_id_hex if anchor is not None else None,
            anchor.parent_span_id_hex if anchor is not None else None,
            str(ft.where),
            decision,
            trace=ft,
        )
        rows.append(row)
        if decision.matched and anchor is not None:
            _plan(row, rule, anchor, args.ignore_sampling, args.no_llm)
            start(row, anchor, trace_input(rule, ft.view, anchor))
    return evals_ignored


def _test_sessions(
    rule: Rule,
    bounds: AssemblyBounds,
    reader: SpanReader,
    rows: list[_Row],
    start: Callable[[_Row, SpanView, EvalInput], None],
    args: argparse.Namespace,
) -> tuple[int, SessionScan]:
    """A session rule: read everything, make the turns, then one row per conversation (each
    ends at the end of the input, as the engine's ``end_of_input`` ends it)."""
    collector, evals_ignored = _read_traces(rule, bounds, reader)
    scan = collect_sessions(rule, collector.traces(rule), args.ignore_sampling)
    for session in scan.sessions:
        if args.limit and len(rows) >= args.limit:
            break
        last = session.last
        anchor = next(s for s in last.view.spans if s.span_id == session.anchor_id)
        row = _Row(
            anchor.name,
            f"{last.trace_id:032x}",
            anchor.span_id_hex,
            anchor.parent_span_id_hex,
            str(session.traces[0].where),
            TraceDecision(rule.name, True, anchor=anchor),
            session=session,
        )
        rows.append(row)
        _plan_session(row, rule, session, args.ignore_sampling, args.no_llm)
        start(row, anchor, session_input(rule, session.view))
    return evals_ignored, scan


def _plan_session(
    row: _Row, rule: Rule, session: FileSession, ignore_sampling: bool, no_llm: bool
) -> None:
    """Which scorers run for a conversation: their sampling is by the key's hash."""
    hash_ = session_hash(session.key, rule.salt)
    for use in rule.scorers:
        if use.sampling == 0 or (not ignore_sampling and hash_ >= rule.scorer_bound(use)):
            row.sampled_out.append(use.name)
        elif no_llm and is_llm(use.spec):
            row.no_llm.append(use.name)
        else:
            row.planned.append(use.name)


def _start(engine: Engine, rule: Rule, view: SpanView, inp: EvalInput, row: _Row) -> None:
    uses = [ScorerUse(u.spec) for u in rule.scorers if u.name in row.planned]
    if not uses:
        return
    target = Target(view.trace_id, view.span_id, None, view.sdk_resource(), view.name)
    # The engine enforces each scorer's timeout; this bound only guards against a lost task.
    row.deadline_s = max(u.spec.timeout_s for u in uses) + _MARGIN_S
    row.future = engine.evaluate(rule.name, inp, uses, target)


def _finish(row: _Row) -> None:
    assert row.future is not None
    try:
        row.result = row.future.result(timeout=row.deadline_s)
    except concurrent.futures.TimeoutError:
        row.stuck = f"the evaluation did not finish within {row.deadline_s:g} s"
    except Exception as exc:  # the engine failed the evaluation itself
        row.stuck = f"the evaluation failed: {type(exc).__name__}: {exc}"
    row.future = None


def _print_text(
    rule: Rule,
    rows: list[_Row],
    summary: dict[str, int],
    stats: StatsTable,
    args: argparse.Namespace,
    scan: SessionScan | None = None,
) -> None:
    out = sys.stdout
    for line in rule_summary(rule):
        print(line, file=out)
    flags = []
    if args.ignore_sampling:
        flags.append("sampling ignored (--ignore-sampling)")
    if args.no_llm:
        flags.append("LLM scorers not run (--no-llm)")
    if flags:
        print("  " + "; ".join(flags), file=out)
    print(file=out)
    if scan is not None:
        _print_sessions(rows, summary, out)
        _print_scorers(stats, out)
        return
    traces = is_trace_rule(rule)
    if traces:
        headers = ["SPAN", "SPAN ID", "TRACE ID", "SPANS", "TRACE", "RESULT", "DETAIL"]
        table = [
            [
                row.name or "-",
                row.span_id or "-",
                row.trace_id,
                str(row.trace.span_count),
                trace_state(row.trace.view),
                row.outcome,
                row.detail(),
            ]
            for row in rows
            if row.trace is not None
        ]
    else:
        headers = ["SPAN", "SPAN ID", "TRACE ID", "RESULT", "DETAIL"]
        table = [
            [row.name or "-", row.span_id or "-", row.trace_id, row.outcome, row.detail()]
            for row in rows
        ]
    if table:
        print(
            render_table(
                headers, table, right=(3,) if traces else (), max_width=terminal_width(out)
            ),
            file=out,
        )
    else:
        print(f"(no {'traces' if traces else 'spans'} in the input)", file=out)
    print(file=out)
    parts = [f"{summary['scored']} scored"]
    for key, words in (
        ("not_selected", "without an anchor span" if traces else "not selected"),
        ("sampled_out", "sampled out"),
        ("filter_false", "filtered out"),
        ("skipped_incomplete", "skipped as incomplete (on_incomplete: skip)"),
    ):
        if summary.get(key):
            parts.append(f"{summary[key]} {words}")
    if traces:
        line = f"{summary['traces']} trace(s) ({summary['spans']} span(s)): " + ", ".join(parts)
        if summary["incomplete"]:
            line += f"; {summary['incomplete']} incomplete at the end of the input"
    else:
        line = f"{summary['spans']} span(s): " + ", ".join(parts)
    if summary["eval_spans_ignored"]:
        line += f" ({summary['eval_spans_ignored']} eval span(s) in the input not considered)"
    print(line, file=out)
    if summary["no_content"]:
        print(
            f"{summary['no_content']} span(s) look like GenAI operations but carry no prompt or "
            f"answer, so there is nothing to score. {CONTENT_CAPTURE_HINT}",
            file=out,
        )
    _print_scorers(stats, out)


def _print_sessions(rows: list[_Row], summary: dict[str, int], out: Any) -> None:
    headers = ["SESSION", "TURNS", "LAST TURN (TRACE ID)", "ANCHOR", "REASON", "RESULT", "DETAIL"]
    table = [
        [
            row.session.key,
            str(row.session.view.turn_count),
            row.trace_id,
            f"{row.name} {row.span_id}",
            row.session.view.reason,
            row.outcome,
            row.detail(),
        ]
        for row in rows
        if row.session is not None
    ]
    if table:
        print(render_table(headers, table, right=(1,), max_width=terminal_width(out)), file=out)
    else:
        print("(no conversations in the input)", file=out)
    print(file=out)
    line = (
        f"{summary['conversations']} conversation(s) ({summary['turns']} turn(s) of "
        f"{summary['traces']} trace(s)): {summary['scored']} scored"
    )
    for key, words in (
        ("no_key", "without a session key"),
        ("sampled_out", "sampled out (by session key)"),
        ("filtered_out", "filtered out"),
    ):
        if summary[key]:
            line += f"; {summary[key]} trace(s) {words}"
    if summary["eval_spans_ignored"]:
        line += f" ({summary['eval_spans_ignored']} eval span(s) in the input not considered)"
    print(line, file=out)


def _print_scorers(stats: StatsTable, out: Any) -> None:
    if len(stats):
        print(file=out)
        print(
            render_table(
                ["SCORER", "SCORES", "MEAN", "PASS", "ERRORS", "SKIPPED", "SAMPLED OUT"],
                [
                    [
                        s.scorer,
                        str(s.count),
                        fmt_num(s.mean),
                        fmt_pct(s.pass_rate),
                        str(s.errors),
                        str(s.skipped),
                        str(s.sampled_out),
                    ]
                    for s in stats
                ],
                right=(1, 2, 3, 4, 5, 6),
            ),
            file=out,
        )
