"""``otel-online-eval score``: score recorded spans now (manual scoring, backfill).

1. Read the input; keep the spans the rules select and their filters pass (``--filter`` too),
   newer than ``--since``. Sampling is off unless ``--sample``. Eval spans in the input
   (``eval {rule}`` spans) mark the spans they score as done for their rule: those are skipped
   unless ``--rescore``.
2. Order (input order, or most recent first with ``--most-recent``) and cut (``--limit`` spans).
3. Feed them to the real :class:`~otel_online_eval.engine.Engine` a window at a time, so scorer
   timeouts, the thread pool and the judges' concurrency and rate limits apply as in
   production; eval spans go to the config's exporter or to ``--out FILE`` (OTLP/JSON lines,
   appended) through a batching processor that waits instead of dropping.
4. Ctrl-C stops feeding, lets the evaluations in flight finish (a second Ctrl-C abandons them),
   flushes every eval span made, says how far it got, and exits with 130. Running the same
   command again with the output among the inputs scores the rest.

A trace rule (``scope: trace``) takes the input's traces instead of its spans: each is
assembled and decided as the engine does at the end of a file (see
:mod:`otel_online_eval.tools._traces`); those to score are fed to the engine whole, a window of
traces at a time, and :meth:`Engine.end_of_input` hands each window on, so the engine assembles,
anchors and scores them and writes their eval spans (``online_eval.scope = trace``, span count,
completeness, reason) as in production. A trace counts as one item for ``--limit``; its time
(``--since``, ``--most-recent``) is when its last span ended.

A session rule (``scope: session``) takes the input's conversations: its traces become turns
as the engine makes them (session key, sampling by the key's hash with ``--sample``, the
filter, ``--filter`` on each turn's anchor) and every conversation ends at the end of the input.
Each conversation is fed to the engine whole, all its turns' spans, before a window is handed
on, so :meth:`Engine.end_of_input` drains its traces into turns and then the conversation
(reason ``end_of_input``): its eval span is in the last turn's trace (``online_eval.scope =
session``, turns, reason). A conversation counts as one item for ``--limit``; its time is when
its last turn ended, and it is left out when that is before ``--since``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from types import FrameType
from typing import Any

from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.util.types import AttributeValue

from otel_online_eval._errors import ConfigError, FilterSyntaxError
from otel_online_eval.assembly import Completion
from otel_online_eval.config import OnlineEvalConfig
from otel_online_eval.emit import SCORER_ATTR, Emitter, EvalResult, Target
from otel_online_eval.engine import Engine, Route
from otel_online_eval.export import OtlpJsonFileExporter, build_exporter
from otel_online_eval.otlp import ProtoSpanView, encode_spans_json
from otel_online_eval.query import CompiledFilter, compile_filter
from otel_online_eval.rules import ApplyTo, Rule, ScorerUse
from otel_online_eval.sampling import shared_hash
from otel_online_eval.tools._common import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_PARTIAL,
    ErrorPrinter,
    ToolError,
    load,
    parse_since,
    pick_rules,
    reader_for,
)
from otel_online_eval.tools._sinks import BlockingBatchProcessor, CountingSink
from otel_online_eval.tools._stats import StatsTable
from otel_online_eval.tools._text import (
    Progress,
    fmt_duration,
    fmt_num,
    fmt_pct,
    render_table,
)
from otel_online_eval.tools._traces import (
    TraceCollector,
    collect_sessions,
    decide_trace,
    file_bounds,
    is_session_rule,
    is_trace_rule,
)
from otel_online_eval.traceview import TraceAnchor

__all__ = ["add_score_command", "run_score"]

BACKFILL_ATTR = "online_eval.backfill"
"""Set to true on eval spans made by ``score`` (not by live traffic)."""
_STALL_S = 60.0
_TRACE_SPANS = 1 << 16  # spans of the traces held in the engine before they are handed on
_FOREVER_S = 1e9  # the fed traces' completion timers: only the end of the input hands them on
SCORED_END_ATTR = "online_eval.span.end_time_unix_nano"
"""On eval spans made by ``score``: when the scored span ended (``report`` charts by it)."""


def add_score_command(sub: Any) -> None:
    p = sub.add_parser(
        "score",
        help="score recorded spans now (backfill) and export the eval spans",
        description=(
            "Apply the rules to recorded spans (sampling off unless --sample), run their "
            "scorers through the engine, and export eval spans through the config's exporter "
            "or to --out FILE. Spans already scored by a rule (an eval span for them is in the "
            "input) are skipped unless --rescore."
        ),
    )
    p.add_argument("-c", "--config", required=True, help="the YAML config file")
    p.add_argument(
        "--rule",
        action="append",
        metavar="NAME",
        help="only this rule (repeat for several; default: every rule)",
    )
    p.add_argument(
        "--filter", metavar="CLAUSE", help="only spans this filter clause is true for (AND)"
    )
    p.add_argument(
        "--since",
        metavar="WHEN",
        help="only spans that ended after this: 90s, 30m, 24h, 7d, 2w, or an ISO 8601 time",
    )
    p.add_argument("--limit", type=int, metavar="N", help="score at most N spans")
    p.add_argument(
        "--most-recent",
        action="store_true",
        help="take the most recent spans first (by end time); with --limit, the N most recent",
    )
    p.add_argument(
        "--out",
        metavar="FILE",
        help="append eval spans to FILE as OTLP/JSON lines instead of the config's export",
    )
    p.add_argument(
        "--rescore", action="store_true", help="score spans again that the input shows scored"
    )
    p.add_argument(
        "--sample",
        action="store_true",
        help="apply the rules' and scorers' sampling rates, as in production",
    )
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument(
        "--keep-going", action="store_true", help="report bad lines and go on with the rest"
    )
    p.add_argument("spans", nargs="+", metavar="SPANS", help="OTLP files, directories, or -")
    p.set_defaults(run=run_score)


@dataclass
class _TraceWork:
    """A trace to score: every span read for it, when it ended, each rule's anchor."""

    spans: list[ProtoSpanView]
    end_ns: int
    anchors: dict[str, int] = dataclasses.field(default_factory=dict)


@dataclass
class _Todo:
    view: ProtoSpanView  # the span; for a trace, its first span read
    rules: list[Rule]
    order: int = 0  # place in the input (a trace: its first span's)
    trace: _TraceWork | None = None
    session: bool = False  # a session rule's conversation (its turns' spans in ``trace``)

    @property
    def end_ns(self) -> int:
        return self.trace.end_ns if self.trace is not None else self.view.end_time_ns


@dataclass
class _RuleTally:
    """Spans a span rule, traces a trace rule (``scope``), counted at each step."""

    scope: str = "span"
    selected: int = 0
    no_key: int = 0  # a session rule's traces without a session key
    not_selected: int = 0
    sampled_out: int = 0
    filtered_out: int = 0
    extra_filtered_out: int = 0
    skipped_incomplete: int = 0
    already_scored: int = 0
    to_score: int = 0


def run_score(args: argparse.Namespace) -> int:
    cfg = load(args.config)
    rules = pick_rules(cfg, args.rule)
    if not rules:
        raise ToolError(f"{cfg.source}: the config has no rules")
    extra: CompiledFilter | None = None
    if args.filter:
        try:
            extra = compile_filter(args.filter)
        except FilterSyntaxError as exc:
            raise ToolError(f"--filter: {exc}") from exc
    cutoff = parse_since(args.since) if args.since else None
    if args.limit is not None and args.limit < 0:
        raise ToolError(f"--limit must be 0 or more, got {args.limit}")
    exporter, destination = _exporter(cfg, args.out)

    started = time.monotonic()
    printer = ErrorPrinter("score")
    reader = reader_for(cfg, args.spans, args.keep_going, printer)
    tallies = {r.name: _RuleTally(r.scope) for r in rules}
    try:
        todo, too_old = _scan(reader, rules, extra, cutoff, args, tallies, cfg)
    except BaseException:
        exporter.shutdown()
        raise
    if args.most_recent:
        todo.sort(key=lambda t: t.end_ns, reverse=True)
    if args.limit is not None:
        todo = todo[: args.limit]
    pairs = [(t, rule) for t in todo for rule in t.rules]
    for _, rule in pairs:
        tallies[rule.name].to_score += 1
    n_sessions = sum(1 for t in todo if t.session)
    n_traces = sum(1 for t in todo if t.trace is not None) - n_sessions
    n_spans = len(todo) - n_traces - n_sessions
    interactive = sys.stderr.isatty()
    if interactive:
        what = f"{n_spans} span(s)" + (f" and {n_traces} trace(s)" if n_traces else "")
        print(
            f"read {reader.spans} span(s) from {reader.files} file(s); "
            f"{what} to score, {len(pairs)} evaluation(s)",
            file=sys.stderr,
        )

    stats = StatsTable()
    run = _Run(cfg, rules, args.sample, exporter, stats, todo)
    outcome = run.feed(pairs, Progress(len(pairs), sys.stderr, interactive, "evals"))
    elapsed = time.monotonic() - started

    summary = {
        "input": {
            "files": reader.files,
            "spans": reader.spans,
            "bad_input_skipped": printer.count,
            "older_than_since": too_old,
        },
        "rules": {name: dataclasses.asdict(t) for name, t in tallies.items()},
        "evaluations": {"planned": len(pairs), "done": run.sink.done, "dropped": run.dropped()},
        "spans_scored": n_spans,
        "traces_scored": n_traces,
        "conversations_scored": n_sessions,
        "interrupted": outcome != "done",
        "eval_spans": {"exported": run.processor.exported, "failed": run.processor.failed},
        "destination": destination,
        "seconds": round(elapsed, 3),
        "scorers": [s.to_json() for s in stats.sorted()],
    }
    out = sys.stderr if destination == "console" else sys.stdout
    if args.json:
        json.dump(summary, out, indent=2, ensure_ascii=False)
        out.write("\n")
    else:
        _print_summary(out, summary, stats, tallies, elapsed, args)
    note = printer.summary(reader)
    if note:
        print(f"otel-online-eval score: {note}", file=sys.stderr)
    if run.processor.failed:
        print(
            f"otel-online-eval score: {run.processor.failed} eval span(s) could not be "
            f"exported to {destination}",
            file=sys.stderr,
        )
    if outcome != "done":
        done = run.sink.done
        pct = f" ({done / len(pairs) * 100:.0f}%)" if pairs else ""
        message = (
            f"otel-online-eval score: interrupted after {done} of {len(pairs)} "
            f"evaluation(s){pct}; the eval spans of those {done} were flushed to {destination}."
        )
        if outcome == "abandoned":
            message += f" {run.abandoned} evaluation(s) in flight were abandoned."
        if args.out:
            message += (
                f" To score the rest, run the same command with {args.out} among the inputs "
                "(spans already scored are skipped)."
            )
        print(message, file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        if outcome == "abandoned":
            os._exit(EXIT_INTERRUPTED)  # a hung scorer thread must not hold the exit
        return EXIT_INTERRUPTED
    if run.processor.failed:
        return EXIT_ERROR
    return EXIT_PARTIAL if printer.count else EXIT_OK


def _exporter(cfg: OnlineEvalConfig, out: str | None) -> tuple[SpanExporter, str]:
    if out:
        try:
            return OtlpJsonFileExporter(out, encode_spans_json), out
        except OSError as exc:
            raise ToolError(
                f"--out {out}: cannot open for appending: {exc.strerror or exc}"
            ) from exc
    if cfg.export is None and not (
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    ):
        raise ToolError(
            f"{cfg.source} has no export: section and no OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT "
            "is set; say where eval spans go with --out FILE"
        )
    if cfg.export is not None and cfg.export.file is not None:
        path = cfg.export.file.path
        try:  # the same lines as the configured file exporter, encoded faster
            return OtlpJsonFileExporter(path, encode_spans_json), path
        except OSError as exc:
            raise ToolError(
                f"export.file.path {path}: cannot open for appending: {exc.strerror or exc}"
            ) from exc
    try:
        exporter = build_exporter(cfg.export)
    except ConfigError as exc:
        raise ToolError(str(exc)) from exc
    return exporter, cfg.export.kind if cfg.export is not None else "otlp"


def _scan(
    reader: Any,
    rules: list[Rule],
    extra: CompiledFilter | None,
    cutoff: int | None,
    args: argparse.Namespace,
    tallies: dict[str, _RuleTally],
    cfg: OnlineEvalConfig,
) -> tuple[list[_Todo], int]:
    """Read everything: the candidate spans and traces, and what the input shows already
    scored (an eval span is a child of, and linked to, the span or trace anchor it scores)."""
    done: set[tuple[str, int, int]] = set()
    candidates: list[_Todo] = []
    too_old = 0
    ignore_sampling = not args.sample
    span_rules = [r for r in rules if not is_trace_rule(r)]
    traces = TraceCollector(rules, cfg.engine.assembly)
    for order, fs in enumerate(reader):
        view = fs.view
        if fs.eval_rule is not None:
            if fs.eval_rule and view.attributes.get(SCORER_ATTR) is None:
                if view.parent_span_id is not None:
                    done.add((fs.eval_rule, view.trace_id, view.parent_span_id))
                for link in view.links:
                    done.add((fs.eval_rule, link.trace_id, link.span_id))
            continue
        traces.add(fs, order)  # whole traces: --since applies to a trace's end
        if cutoff is not None and view.end_time_ns < cutoff:
            too_old += 1
            continue
        matched = []
        for rule in span_rules:
            decision = rule.decide(view, ignore_sampling=ignore_sampling)
            tally = tallies[rule.name]
            if decision.stage is not None and decision.stage.value == "selection":
                tally.not_selected += 1
                continue
            tally.selected += 1
            if not decision.matched:
                if decision.stage is not None and decision.stage.value == "sampling":
                    tally.sampled_out += 1
                else:
                    tally.filtered_out += 1
                continue
            if extra is not None and not extra(view):
                tally.extra_filtered_out += 1
                continue
            matched.append(rule)
        if matched:
            candidates.append(_Todo(view, matched, order))
    if traces:
        candidates.extend(_scan_traces(traces, rules, extra, cutoff, ignore_sampling, tallies))
        candidates.sort(key=lambda t: t.order)
    if args.rescore:
        return candidates, too_old
    todo = []
    for cand in candidates:
        keep = []
        for rule in cand.rules:
            span_id = cand.view.span_id if cand.trace is None else cand.trace.anchors[rule.name]
            if (rule.name, cand.view.trace_id, span_id) in done:
                tallies[rule.name].already_scored += 1
            else:
                keep.append(rule)
        if keep:
            cand.rules = keep
            todo.append(cand)
    return todo, too_old


def _scan_traces(
    traces: TraceCollector,
    rules: list[Rule],
    extra: CompiledFilter | None,
    cutoff: int | None,
    ignore_sampling: bool,
    tallies: dict[str, _RuleTally],
) -> list[_Todo]:
    """The traces each trace rule takes (decided as the engine does at the end of a file)."""
    todo: dict[int, _Todo] = {}
    out: list[_Todo] = []
    for rule in rules:
        if not is_trace_rule(rule):
            continue
        if is_session_rule(rule):
            out.extend(_scan_sessions(traces, rule, extra, cutoff, ignore_sampling, tallies))
            continue
        tally = tallies[rule.name]
        for ft in traces.traces(rule):
            if cutoff is not None and ft.end_ns < cutoff:
                continue  # its spans are counted as older than --since
            decision = decide_trace(rule, ft.view, ignore_sampling=ignore_sampling)
            if decision.stage == "selection":
                tally.not_selected += 1
                continue
            tally.selected += 1
            if decision.stage == "sampling":
                tally.sampled_out += 1
                continue
            if decision.stage == "incomplete":
                tally.skipped_incomplete += 1
                continue
            if decision.stage == "filter":
                tally.filtered_out += 1
                continue
            anchor = decision.anchor
            assert anchor is not None
            if extra is not None and not extra(TraceAnchor(anchor, ft.view)):
                tally.extra_filtered_out += 1
                continue
            item = todo.get(ft.trace_id)
            if item is None:
                first = ft.spans_read[0]
                work = _TraceWork(ft.spans_read, ft.end_ns)
                item = todo[ft.trace_id] = _Todo(first, [], ft.order, work)
            assert item.trace is not None
            item.rules.append(rule)
            item.trace.anchors[rule.name] = anchor.span_id
    return list(todo.values()) + out


def _scan_sessions(
    traces: TraceCollector,
    rule: Rule,
    extra: CompiledFilter | None,
    cutoff: int | None,
    ignore_sampling: bool,
    tallies: dict[str, _RuleTally],
) -> list[_Todo]:
    """A session rule's conversations, one item each: every span of its turns, fed together
    (tallies count traces: ``selected`` the turns, the others by why they are not)."""
    tally = tallies[rule.name]

    def keep(ft: Any, decision: Any) -> bool:
        anchor = decision.trace.anchor
        if extra is not None and not extra(TraceAnchor(anchor, ft.view)):
            tally.selected += 1
            tally.extra_filtered_out += 1
            return False
        return True

    scan = collect_sessions(rule, traces.traces(rule), ignore_sampling, keep)
    tally.no_key += scan.count("no_key")
    tally.sampled_out += scan.count("sampling")
    tally.filtered_out += scan.count("filter")
    tally.selected += len(scan.not_turns) - scan.count("no_key")
    todo = []
    for session in scan.sessions:
        tally.selected += len(session.traces)
        if cutoff is not None and session.end_ns < cutoff:
            continue  # its spans are counted as older than --since
        last = session.last
        spans = [s for ft in session.traces for s in ft.spans_read]
        work = _TraceWork(spans, session.end_ns, {rule.name: session.anchor_id})
        todo.append(_Todo(last.spans_read[0], [rule], session.order, work, session=True))
    return todo


def _open_rule(rule: Rule, sample: bool) -> Rule:
    """The rule as the engine runs it here: selection and filter already applied, sampling
    off (or, with ``sample``, the scorers' rates folded into the rule's)."""
    rate = rule.rate if rule.rate is not None else 1.0
    uses = []
    for use in rule.scorers:
        if use.sampling == 0:
            s = 0.0  # a scorer at 0 never runs
        elif sample:
            s = use.sampling * rate
        else:
            s = 1.0
        uses.append(ScorerUse(use.spec, s))
    opened = Rule(
        name=rule.name,
        scorers=tuple(uses),
        description=rule.description,
        sampling=1.0,
        sampling_seed=rule.sampling_seed,
        filter=None,
        apply_to=ApplyTo(),
    )
    if not is_trace_rule(rule):
        return opened
    # Fed whole traces already decided: the engine assembles them again, finds the same
    # anchor (apply_to), and hands them on at the end of the input only (no timer).
    completion = rule.completion or Completion()
    return dataclasses.replace(
        opened,
        apply_to=rule.apply_to,
        scope=rule.scope,
        completion=dataclasses.replace(
            completion, settle_s=_FOREVER_S, idle_s=_FOREVER_S, max_wait_s=_FOREVER_S
        ),
        session=None
        if rule.session is None
        else dataclasses.replace(rule.session, idle_s=_FOREVER_S, max_wait_s=_FOREVER_S),
        session_key=rule.session_key,
    )


class _Run:
    """The engine, its sink and the exporter for one ``score`` run."""

    def __init__(
        self,
        cfg: OnlineEvalConfig,
        rules: list[Rule],
        sample: bool,
        exporter: SpanExporter,
        stats: StatsTable,
        traces: list[_Todo],
    ) -> None:
        self.stats = stats
        opened = [_open_rule(r, sample) for r in rules]
        # Evaluations handed to the engine and not finished yet. Inline rules (built-in
        # heuristics) take microseconds: a large window saves hand-offs. Others (judges, code)
        # run at most max_concurrent_evals at once; a window just above that keeps them busy
        # and bounds what a Ctrl-C has to wait for.
        if all(r.inline for r in opened):
            self.window = 1024
        else:
            self.window = cfg.engine.max_concurrent_evals + 16
        batch = cfg.export.batch.max_export_batch_size if cfg.export is not None else None
        self.processor = BlockingBatchProcessor(
            exporter,
            max_batch=batch or 512,
            synchronous=isinstance(exporter, OtlpJsonFileExporter),
        )
        attrs: dict[str, dict[str, AttributeValue]] = {}
        for rule in rules:
            a: dict[str, AttributeValue] = {BACKFILL_ATTR: True}
            a["online_eval.sampling.rate"] = (rule.rate or 1.0) if sample else 1.0
            attrs[rule.name] = a
        self.ends: dict[tuple[str, int, int], int] = {}
        self.sink = CountingSink(Emitter(self.processor), self._record, attrs, self._target_attrs)
        # Traces are held in the engine until handed on (at most a window of them, and about
        # _TRACE_SPANS spans): its queue takes a window's spans, its assembly keeps them whole.
        self.trace_rules = [r.name for r in opened if is_trace_rule(r)]
        largest = max((len(t.trace.spans) for t in traces if t.trace is not None), default=0)
        queue = max(cfg.engine.queue_size, self.window + 16)
        if self.trace_rules:
            queue += max(_TRACE_SPANS, largest)
        engine_cfg = dataclasses.replace(
            cfg.engine, queue_size=queue, assembly=file_bounds(cfg.engine.assembly)
        )
        self.routes = {r.name: Route((r,)) for r in opened}
        self.engine = Engine(opened, self.sink, lambda payload: payload, engine_cfg)
        self.interrupts = 0
        self.abandoned = 0
        self._last_done = 0
        self._last_change = time.monotonic()
        self._stall_told = False

    def _record(self, result: EvalResult, end_ns: int) -> None:
        for name, score in result.scores.items():
            self.stats.get(result.rule, name).add_score(
                score.value, score.label, end_ns, score.metadata
            )
        for name in result.errors:
            self.stats.get(result.rule, name).add_error("error")
        for name in result.skipped:
            self.stats.get(result.rule, name).skipped += 1
        for name in result.sampled_out:
            self.stats.get(result.rule, name).sampled_out += 1

    def _target_attrs(self, rule: str, target: Target) -> dict[str, AttributeValue]:
        end = self.ends.get((rule, target.trace_id, target.parent_span_id or 0))
        return {SCORED_END_ATTR: end} if end else {}

    def dropped(self) -> int:
        """Evaluations handed to the engine that will not finish: dropped, or (a trace) lost
        or not evaluated after all."""
        stats = self.engine.stats()
        lost = sum(stats.dropped.values())
        if self.trace_rules:
            lost += sum(stats.assembly_lost.values())
            lost += sum(stats.filtered_out.get(name, 0) for name in self.trace_rules)
            lost += sum(stats.assembly_skipped_incomplete.get(n, 0) for n in self.trace_rules)
        return lost

    def _hand_on(self) -> None:
        """The held traces are complete (the input has no more of their spans): evaluate them.
        Not waited for here: the loops below wait for the evaluations, Ctrl-C included."""
        self.engine.end_of_input(timeout_millis=100)

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        self.interrupts += 1

    def _watch(self, done: int, waiting: int, progress: Progress) -> None:
        """Say so, once, when nothing has finished for a long time (slow or stuck scorers)."""
        now = time.monotonic()
        if done != self._last_done:
            self._last_done, self._last_change = done, now
        elif not self._stall_told and now - self._last_change >= _STALL_S:
            self._stall_told = True
            progress.finish()
            print(
                f"otel-online-eval score: no evaluation finished in the last {_STALL_S:g} s "
                f"({waiting} waiting); scorers may be slow or stuck. Ctrl-C stops.",
                file=sys.stderr,
            )

    def feed(self, pairs: list[tuple[_Todo, Rule]], progress: Progress) -> str:
        """Submit every (span or trace, rule), a window at a time; 'done', 'interrupted' or
        'abandoned'."""
        on_main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, self._on_sigint) if on_main else None
        sink, engine, cond = self.sink, self.engine, self.sink.cond
        submitted = 0
        dropped = 0
        held = held_spans = 0  # traces fed and not handed on yet, and their spans
        told = False
        try:
            for todo, rule in pairs:
                if self.interrupts:
                    break
                if submitted - sink.done - dropped >= self.window:
                    if held:  # they finish only once handed on
                        self._hand_on()
                        held = held_spans = 0
                    with cond:
                        # Wake up once half the window is free: one wake-up per many spans.
                        sink.wake_at = submitted - dropped - self.window // 2
                        while sink.done < sink.wake_at:
                            if self.interrupts:
                                break
                            cond.wait(0.1)
                            dropped = self.dropped()
                            sink.wake_at = submitted - dropped - self.window // 2
                            self._watch(sink.done, submitted - sink.done - dropped, progress)
                    progress.update(sink.done)
                    if self.interrupts:
                        break
                view, route = todo.view, self.routes[rule.name]
                if todo.trace is None:
                    self.ends[(rule.name, view.trace_id, view.span_id)] = view.end_time_ns
                    engine.submit(view, route, shared_hash(view.trace_id))
                else:
                    spans = todo.trace.spans
                    if held and held_spans + len(spans) > _TRACE_SPANS:
                        self._hand_on()
                        held = held_spans = 0
                    anchor = todo.trace.anchors[rule.name]
                    self.ends[(rule.name, view.trace_id, anchor)] = todo.trace.end_ns
                    trace_hash = shared_hash(view.trace_id)
                    for span in spans:  # a conversation's are of several traces
                        if span.trace_id != view.trace_id:
                            engine.submit(span, route, shared_hash(span.trace_id))
                        else:
                            engine.submit(span, route, trace_hash)
                    held += 1
                    held_spans += len(spans)
                submitted += 1
                progress.update(sink.done)
            if held:
                self._hand_on()
            while sink.done + dropped < submitted and self.interrupts < 2:
                if self.interrupts and not told:
                    told = True
                    progress.finish()
                    left = submitted - sink.done - dropped
                    print(
                        f"otel-online-eval score: stopping; finishing the {left} evaluation(s) "
                        "in flight (Ctrl-C again to abandon them)",
                        file=sys.stderr,
                    )
                with cond:
                    sink.wake_at = submitted - dropped
                    if sink.done < sink.wake_at:
                        cond.wait(0.1)
                dropped = self.dropped()
                self._watch(sink.done, submitted - sink.done - dropped, progress)
                progress.update(sink.done, "stopping" if self.interrupts else "")
            progress.update(sink.done, force=True)
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
            progress.finish()
        if self.interrupts >= 2:
            self.abandoned = submitted - sink.done - self.dropped()
            self.engine.shutdown(timeout_millis=0)
            return "abandoned"
        self.engine.end_of_input()
        self.engine.shutdown()
        return "interrupted" if self.interrupts else "done"


def _print_summary(
    out: Any,
    summary: dict[str, Any],
    stats: StatsTable,
    tallies: dict[str, _RuleTally],
    elapsed: float,
    args: argparse.Namespace,
) -> None:
    ev = summary["evaluations"]
    rate = ev["done"] / elapsed if elapsed > 0 else 0.0
    took = f"{elapsed:.1f} s" if elapsed < 60 else fmt_duration(elapsed)
    items = f"{summary['spans_scored']} span(s)"
    if summary["traces_scored"]:
        items += f", {summary['traces_scored']} trace(s)"
    if summary["conversations_scored"]:
        items += f", {summary['conversations_scored']} conversation(s)"
    print(
        f"scored {ev['done']} of {ev['planned']} evaluation(s) ({items}) in {took} "
        f"({rate:,.1f}/s); "
        f"{summary['eval_spans']['exported']} eval span(s) exported to "
        f"{summary['destination']}",
        file=out,
    )
    rows = []
    for name, t in tallies.items():
        rows.append(
            [
                name,
                str(t.selected),
                str(t.sampled_out) if args.sample else "off",
                str(t.filtered_out + t.extra_filtered_out),
                str(t.already_scored) if not args.rescore else "rescored",
                str(t.to_score),
            ]
        )
    print(file=out)
    print(
        render_table(
            ["RULE", "SELECTED", "SAMPLED OUT", "FILTERED OUT", "ALREADY SCORED", "SCORED"],
            rows,
            right=(1, 2, 3, 4, 5),
        ),
        file=out,
    )
    traced = [name for name, t in tallies.items() if t.scope == "trace"]
    if traced:
        print(f"(trace rules count traces: {', '.join(traced)})", file=out)
    sessions = [name for name, t in tallies.items() if t.scope == "session"]
    if sessions:
        print(
            f"(session rules count traces, SCORED conversations: {', '.join(sessions)})",
            file=out,
        )
    for name, t in tallies.items():
        if t.no_key:
            print(f"({name}: {t.no_key} trace(s) without a session key)", file=out)
    for name, t in tallies.items():
        if t.skipped_incomplete:
            print(
                f"({name}: {t.skipped_incomplete} incomplete trace(s) skipped, "
                "on_incomplete: skip)",
                file=out,
            )
    if summary["input"]["older_than_since"]:
        print(f"({summary['input']['older_than_since']} span(s) older than --since)", file=out)
    if len(stats):
        print(file=out)
        print(
            render_table(
                ["RULE", "SCORER", "COUNT", "MEAN", "PASS RATE", "ERRORS", "SKIPPED"],
                [
                    [
                        s.rule,
                        s.scorer,
                        str(s.count),
                        fmt_num(s.mean),
                        fmt_pct(s.pass_rate),
                        str(s.errors),
                        str(s.skipped),
                    ]
                    for s in stats.sorted()
                ],
                right=(2, 3, 4, 5, 6),
            ),
            file=out,
        )
        print("(pass rate: share of scores with value >= 0.5)", file=out)
