"""``otel-online-eval explain``: why a span has (or has no) scores.

For one span id: every rule's decision (selection, sampling, filter, each scorer's own
sampling), the input / output / model the scorers would see and the convention they were read
from, and the eval spans for it found in the input with their scores and errors.

A trace rule (``scope: trace``) decides the span's whole trace, as the engine does at the end of
a file (see :mod:`otel_online_eval.tools._traces`): sampled out by trace id, skipped as
incomplete (``on_incomplete: skip``), no span for the anchor, the filter false on the anchor with
its trace (the false part), or evaluated, with the trace's span count and completeness. The
trace's eval spans in the input are shown with it (child of the anchor, not of this span).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass, field
from typing import Any

from otel_online_eval.emit import SCORER_ATTR
from otel_online_eval.engine._deciding import session_hash
from otel_online_eval.genai import CONTENT_CAPTURE_HINT, no_content
from otel_online_eval.otlp import ProtoSpanView
from otel_online_eval.rules import Rule, Stage
from otel_online_eval.spanview import SpanView
from otel_online_eval.tools._common import (
    EXIT_OK,
    EXIT_PARTIAL,
    ErrorPrinter,
    ToolError,
    is_llm,
    load,
    reader_for,
    scorer_is_sampled_out,
)
from otel_online_eval.tools._input import FileSpan
from otel_online_eval.tools._text import fmt_num, fmt_time, one_line
from otel_online_eval.tools._traces import (
    TraceCollector,
    TraceDecision,
    anchor_words,
    collect_sessions,
    decide_trace,
    decide_turn,
    is_session_rule,
    is_trace_rule,
    trace_state,
)
from otel_online_eval.traceview import TraceAnchor

__all__ = ["add_explain_command", "run_explain"]

_HEX16 = re.compile(r"[0-9a-fA-F]{16}")
_HEX32 = re.compile(r"[0-9a-fA-F]{32}")


def add_explain_command(sub: Any) -> None:
    p = sub.add_parser(
        "explain",
        help="why a span was or was not scored: every rule's decision and the extracted fields",
        description=(
            "Find a span by id and show every rule's decision for it (selection, sampling, "
            "filter, scorer sampling), the input/output the scorers see and the convention "
            "they came from, and the eval spans for it present in the input."
        ),
    )
    p.add_argument("-c", "--config", required=True, help="the YAML config file")
    p.add_argument("--span-id", required=True, help="the span id: 16 hex digits")
    p.add_argument("--trace-id", help="the trace id (32 hex digits), when span ids repeat")
    p.add_argument(
        "--width", type=int, default=300, help="cut input and output to this many characters"
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument(
        "--keep-going", action="store_true", help="report bad lines and go on with the rest"
    )
    p.add_argument("spans", nargs="+", metavar="SPANS", help="OTLP files, directories, or -")
    p.set_defaults(run=run_explain)


@dataclass
class _ScoreSeen:
    scorer: str
    value: float | None
    label: str | None
    explanation: str | None
    error: str | None
    skipped: str | None

    def text(self) -> str:
        if self.error is not None:
            return f"{self.scorer}: ERROR {one_line(self.error, 120)}"
        if self.skipped is not None:
            return f"{self.scorer}: skipped ({self.skipped})"
        out = f"{self.scorer} = {fmt_num(self.value)}"
        return out + (f" ({self.label})" if self.label else "")


@dataclass
class _EvalSeen:
    rule: str
    trace_id: str
    span_id: str
    where: str
    end_ns: int
    status: str
    scores: list[_ScoreSeen] = field(default_factory=list)
    trace: dict[str, Any] | None = None  # a trace rule's: span count, completeness, revision


def run_explain(args: argparse.Namespace) -> int:
    cfg = load(args.config)
    if not _HEX16.fullmatch(args.span_id or ""):
        raise ToolError(f"--span-id must be 16 hex digits, got {args.span_id!r}")
    span_id = int(args.span_id, 16)
    trace_id: int | None = None
    if args.trace_id is not None:
        if not _HEX32.fullmatch(args.trace_id):
            raise ToolError(f"--trace-id must be 32 hex digits, got {args.trace_id!r}")
        trace_id = int(args.trace_id, 16)
    printer = ErrorPrinter("explain")
    reader = reader_for(cfg, args.spans, args.keep_going, printer)

    found: list[FileSpan] = []
    found_as_eval: list[FileSpan] = []
    evals: list[tuple[FileSpan, int]] = []  # eval spans naming the span (and its trace)
    scores: dict[tuple[int, int], list[_ScoreSeen]] = {}
    # Trace rules decide whole traces: every span is kept by trace until the span is found.
    traces = TraceCollector(cfg.rules, cfg.engine.assembly, only=trace_id)
    trace_evals: dict[int, list[FileSpan]] = {}  # trace rules' eval spans, by trace
    for fs in reader:
        v = fs.view
        if fs.eval_rule is not None:
            attrs = v.attributes
            if attrs.get(SCORER_ATTR) is not None and v.parent_span_id is not None:
                scores.setdefault((v.trace_id, v.parent_span_id), []).append(_score_seen(v))
            elif v.span_id == span_id and trace_id in (None, v.trace_id):
                found_as_eval.append(fs)
            else:
                scope = attrs.get("online_eval.scope")
                if scope in ("trace", "session"):
                    trace_evals.setdefault(v.trace_id, []).append(fs)
                if scope == "session":  # and of every earlier turn's trace it links to
                    for tid in {link.trace_id for link in v.links} - {v.trace_id}:
                        trace_evals.setdefault(tid, []).append(fs)
                for tid, sid in _targets(v):
                    if sid == span_id and trace_id in (None, tid):
                        evals.append((fs, tid))
                        break
            continue
        traces.add(fs)
        if v.span_id == span_id and trace_id in (None, v.trace_id):
            if not any(f.view.trace_id == v.trace_id for f in found):  # a file read twice
                found.append(fs)

    if not found:
        where = f"in {reader.spans} span(s) read from {reader.files} file(s)"
        if found_as_eval:
            raise ToolError(
                f"span {args.span_id} is an eval span ({found_as_eval[0].view.name!r} at "
                f"{found_as_eval[0].where}); eval spans are never scored themselves"
            )
        raise ToolError(f"span {args.span_id} not found {where}")

    docs = []
    for fs in found:
        seen: list[_EvalSeen] = []
        ids: set[int] = set()
        for efs, _ in evals:
            if efs.view.trace_id != fs.view.trace_id and not any(
                tid == fs.view.trace_id for tid, _ in _targets(efs.view)
            ):
                continue
            ids.add(efs.view.span_id)
            seen.append(_eval_seen(efs, scores))
        for efs in trace_evals.get(fs.view.trace_id, ()):
            if efs.view.span_id not in ids:  # the trace's, attached to another span (the anchor)
                ids.add(efs.view.span_id)
                seen.append(_eval_seen(efs, scores))
        docs.append(_explain_one(fs, list(cfg.rules), seen, args.width, traces))

    if args.json:
        json.dump(docs if len(docs) > 1 else docs[0], sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
    else:
        for i, doc in enumerate(docs):
            if i:
                print()
            _print_text(doc)
    note = printer.summary(reader)
    if note:
        print(f"otel-online-eval explain: {note}", file=sys.stderr)
    return EXIT_PARTIAL if printer.count else EXIT_OK


def _eval_seen(efs: FileSpan, scores: dict[tuple[int, int], list[_ScoreSeen]]) -> _EvalSeen:
    ev = efs.view
    attrs = ev.attributes
    trace = None
    if attrs.get("online_eval.scope") == "trace":
        trace = {
            "span_count": attrs.get("online_eval.trace.span_count"),
            "complete": attrs.get("online_eval.trace.complete"),
            "reason": attrs.get("online_eval.trace.reason"),
            "revision": attrs.get("online_eval.revision"),
            "anchor": f"{ev.parent_span_id:016x}" if ev.parent_span_id is not None else None,
        }
    return _EvalSeen(
        efs.eval_rule or "",
        ev.trace_id_hex,
        ev.span_id_hex,
        str(efs.where),
        ev.end_time_ns,
        ev.status_code,
        scores.get((ev.trace_id, ev.span_id), []),
        trace,
    )


def _targets(view: ProtoSpanView) -> list[tuple[int, int]]:
    """The spans an eval span is about: its parent and its links."""
    out = [(link.trace_id, link.span_id) for link in view.links]
    if view.parent_span_id is not None:
        out.append((view.trace_id, view.parent_span_id))
    return out


def _score_seen(view: ProtoSpanView) -> _ScoreSeen:
    attrs = view.attributes
    value = attrs.get("gen_ai.evaluation.score.value")
    label = attrs.get("gen_ai.evaluation.score.label")
    explanation = attrs.get("gen_ai.evaluation.explanation")
    skipped = attrs.get("online_eval.skipped")
    error = None
    if view.status_code == "ERROR":
        error = view.status_message or str(attrs.get("error.type", "error"))
    return _ScoreSeen(
        str(attrs.get(SCORER_ATTR, view.name.removeprefix("score "))),
        float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None,
        label if isinstance(label, str) else None,
        explanation if isinstance(explanation, str) else None,
        error,
        skipped if isinstance(skipped, str) else None,
    )


def _explain_one(
    fs: FileSpan,
    rules: list[Rule],
    evals: list[_EvalSeen],
    width: int,
    traces: TraceCollector,
) -> dict[str, Any]:
    v = fs.view
    g = v.genai
    resource = v.resource
    span = {
        "name": v.name,
        "trace_id": v.trace_id_hex,
        "span_id": v.span_id_hex,
        "parent_span_id": v.parent_span_id_hex,
        "parent": (
            "none (a trace root)"
            if v.parent_span_id is None
            else ("remote" if v.parent_is_remote else "in the same process")
        ),
        "kind": v.kind,
        "status": v.status_code + (f": {v.status_message}" if v.status_message else ""),
        "service": resource.get("service.name"),
        "scope": f"{v.scope_name} {v.scope_version}".strip(),
        "start": fmt_time(v.start_time_ns),
        "duration_ms": round(v.duration_ms, 3),
        "where": str(fs.where),
    }
    extracted = {
        "convention": g.convention,
        "model": g.model,
        "operation": g.operation,
        "input": _cut(g.input, width),
        "output": _cut(g.output, width),
        "input_chars": None if g.input is None else len(g.input),
        "output_chars": None if g.output is None else len(g.output),
        "system_instructions": _cut(g.system_instructions, width),
        "input_tokens": g.input_tokens,
        "output_tokens": g.output_tokens,
        "input_messages": len(g.input_messages),
        "output_messages": len(g.output_messages),
        "tool_calls": [c.name for c in g.tool_calls],
        "no_content": no_content(v),
    }
    return {
        "span": span,
        "extracted": extracted,
        "rules": [
            _session_rule_doc(rule, v, evals, traces)
            if is_session_rule(rule)
            else _trace_rule_doc(rule, v, evals, traces)
            if is_trace_rule(rule)
            else _rule_doc(rule, v, evals)
            for rule in rules
        ],
        "evals_in_input": [_eval_doc(e) for e in evals],
    }


def _cut(text: str | None, width: int) -> str | None:
    if text is None:
        return None
    return text if width <= 0 or len(text) <= width else text[: width - 1] + "…"


def _rule_doc(rule: Rule, view: ProtoSpanView, evals: list[_EvalSeen]) -> dict[str, Any]:
    decision = rule.decide(view)
    doc: dict[str, Any] = {
        "rule": rule.name,
        "description": rule.description or None,
        "would_score": decision.matched,
        "stage": decision.stage.value if decision.stage is not None else None,
        "reason": decision.reason,
        "detail": decision.detail,
    }
    if decision.stage is Stage.SELECTION:
        doc["verdict"] = f"not selected: {decision.reason}"
    else:
        sampled = rule.hash(view.trace_id) < rule.bound
        filt = rule.check_filter(view)
        doc["sampling"] = {"rate": rule.rate, "sampled": sampled}
        doc["filter"] = {
            "clause": rule.filter.source if rule.filter is not None else None,
            "passes": filt.matched,
            "false_part": filt.detail,
        }
        if not sampled:
            also = (
                "the filter passes" if filt.matched else f"the filter is false too: {filt.detail}"
            )
            doc["verdict"] = f"sampled out: {decision.reason} ({also})"
        elif not filt.matched:
            doc["verdict"] = f"filter false: {filt.detail}"
            missing = no_content(view)
            if missing is not None:
                doc["verdict"] += f" (no prompt or answer on the span: {missing})"
        else:
            doc["verdict"] = f"selected, {_sampled_in(rule)}"
        doc["scorers"] = _scorers_doc(rule, view, decision.matched)
    doc["evals_in_input"] = sum(1 for e in evals if e.rule == rule.name)
    return doc


def _sampled_in(rule: Rule) -> str:
    """The verdict's tail for a span or trace that is evaluated."""
    rate = "1" if rule.rate is None else f"{rule.rate:g}"
    clause = "filter true" if rule.filter is not None else "no filter"
    return f"sampled in (rate {rate}), {clause}"


def _trace_rule_doc(
    rule: Rule, view: ProtoSpanView, evals: list[_EvalSeen], traces: TraceCollector
) -> dict[str, Any]:
    """A trace rule's decision for the span's trace (the engine's, at the end of the input)."""
    ft = traces.trace(rule, view.trace_id)
    assert ft is not None  # the span itself is in it
    trace = ft.view
    decision = decide_trace(rule, trace)
    anchor = decision.anchor
    doc: dict[str, Any] = {
        "rule": rule.name,
        "description": rule.description or None,
        "scope": "trace",
        "would_score": decision.matched,
        "stage": decision.stage,
        "reason": decision.reason,
        "detail": decision.detail,
        "trace": {
            "trace_id": f"{ft.trace_id:032x}",
            "span_count": ft.span_count,
            "complete": trace.complete,
            "reason": trace.reason,
            "on_incomplete": rule.on_incomplete,
        },
        "anchor": None
        if anchor is None
        else {
            "name": anchor.name,
            "span_id": anchor.span_id_hex,
            "is_this_span": anchor.span_id == view.span_id,
            "chosen_as": anchor_words(rule),
        },
        "sampling": {"rate": rule.rate, "sampled": rule.hash(ft.trace_id) < rule.bound},
    }
    if anchor is not None:
        filt = rule.check_filter(TraceAnchor(anchor, trace))
        doc["filter"] = {
            "clause": rule.filter.source if rule.filter is not None else None,
            "passes": filt.matched,
            "false_part": filt.detail,
        }
    if decision.stage == "sampling":
        otherwise = decide_trace(rule, trace, ignore_sampling=True)
        also = (
            "it would be evaluated otherwise"
            if otherwise.matched
            else f"otherwise: {_trace_verdict(otherwise)}"
        )
        doc["verdict"] = f"sampled out: {decision.reason} (by trace id; {also})"
    elif decision.matched:
        assert anchor is not None
        doc["verdict"] = (
            f"trace evaluated ({trace_state(trace)}) on its anchor; {_sampled_in(rule)}"
        )
    else:
        doc["verdict"] = _trace_verdict(decision)
    if decision.matched or decision.stage == "sampling":
        doc["scorers"] = _scorers_doc(rule, view, decision.matched)
    doc["evals_in_input"] = sum(1 for e in evals if e.rule == rule.name)
    return doc


def _session_rule_doc(
    rule: Rule, view: ProtoSpanView, evals: list[_EvalSeen], traces: TraceCollector
) -> dict[str, Any]:
    """A session rule's decision for the span's trace: a turn of which conversation, or why
    not (no key, sampled out by key, filter false); with the whole input read, the
    conversation as it ends at the end of the input."""
    ft = traces.trace(rule, view.trace_id)
    assert ft is not None  # the span itself is in it
    turn = decide_turn(rule, ft.view)
    anchor = turn.trace.anchor if turn.trace is not None else None
    doc: dict[str, Any] = {
        "rule": rule.name,
        "description": rule.description or None,
        "scope": "session",
        "would_score": turn.is_turn,
        "stage": turn.stage,
        "reason": turn.reason,
        "detail": turn.trace.detail if turn.trace is not None else None,
        "session_key": turn.key,
        "trace": {
            "trace_id": f"{ft.trace_id:032x}",
            "span_count": ft.span_count,
            "complete": ft.view.complete,
            "reason": ft.view.reason,
        },
        "anchor": None
        if anchor is None
        else {
            "name": anchor.name,
            "span_id": anchor.span_id_hex,
            "is_this_span": anchor.span_id == view.span_id,
            "chosen_as": anchor_words(rule),
        },
        "sampling": {
            "rate": rule.rate,
            "by": "session key",
            "sampled": None if turn.key is None else session_hash(turn.key, rule.salt) < rule.bound,
        },
        "conversation": None,
    }
    if turn.trace is not None and turn.trace.anchor is not None:
        filt = rule.check_filter(TraceAnchor(turn.trace.anchor, ft.view))
        doc["filter"] = {
            "clause": rule.filter.source if rule.filter is not None else None,
            "passes": filt.matched,
            "false_part": filt.detail,
        }
    if turn.stage == "no_key":
        key_words = rule.session.key if rule.session is not None and rule.session.key else None
        doc["verdict"] = (
            "not a turn: the trace has no session key ("
            + (key_words or "gen_ai.conversation.id or session.id, on a span or its resource")
            + ")"
        )
    elif turn.stage == "sampling":
        doc["verdict"] = f"not a turn: {turn.reason}"
    elif turn.stage == "filter":
        assert turn.trace is not None
        doc["verdict"] = f"not a turn of {turn.key!r}: " + _trace_verdict(turn.trace)
    else:
        doc["verdict"] = f"a turn of conversation {turn.key!r}"
        if traces.whole_input:
            scan = collect_sessions(rule, traces.traces(rule))
            for session in scan.sessions:
                ids = [t.trace_id for t in session.traces]
                if ft.trace_id in ids:
                    last = session.last
                    doc["conversation"] = {
                        "key": session.key,
                        "turns": session.view.turn_count,
                        "this_turn": ids.index(ft.trace_id) + 1,
                        "reason": session.view.reason,
                        "last_trace_id": f"{last.trace_id:032x}",
                        "last_anchor_span_id": f"{session.anchor_id:016x}",
                    }
                    doc["verdict"] += (
                        f" (turn {ids.index(ft.trace_id) + 1} of {session.view.turn_count}; "
                        f"evaluated at {session.view.reason} on the last turn's anchor "
                        f"{session.anchor_id:016x})"
                    )
                    break
        assert turn.key is not None
        doc["scorers"] = _scorers_doc(rule, view, True, session_hash(turn.key, rule.salt))
    doc["evals_in_input"] = sum(1 for e in evals if e.rule == rule.name)
    return doc


def _trace_verdict(decision: TraceDecision) -> str:
    """A trace rule's verdict past sampling, in words."""
    if decision.stage == "filter":
        return f"filter false: {decision.detail}"
    if decision.stage is not None:  # incomplete, or no anchor
        return f"not evaluated: {decision.reason}"
    return "evaluated"


def _scorers_doc(
    rule: Rule, view: SpanView, matched: bool, hash_: int | None = None
) -> list[dict[str, Any]]:
    """Which scorers run; ``hash_``: the sampling hash (a session rule's, by key), else the
    span's trace id's."""
    scorers = []
    for use in rule.scorers:
        out = (
            scorer_is_sampled_out(rule, use, view)
            if hash_ is None
            else hash_ >= rule.scorer_bound(use)
        )
        runs = use.sampling > 0 and not out
        entry: dict[str, Any] = {
            "scorer": use.name,
            "type": use.spec.type,
            "llm": is_llm(use.spec),
            "sampling": use.sampling,
            "runs": runs and matched,
        }
        if not runs:
            entry["why_not"] = (
                "its sampling is 0"
                if use.sampling == 0
                else f"sampled out at {use.sampling:g} of the rule's sample"
            )
        scorers.append(entry)
    return scorers


def _eval_doc(e: _EvalSeen) -> dict[str, Any]:
    return {
        "rule": e.rule,
        "trace_id": e.trace_id,
        "span_id": e.span_id,
        "where": e.where,
        "ended": fmt_time(e.end_ns),
        "status": e.status,
        "trace": e.trace,
        "scores": [
            {
                "scorer": s.scorer,
                "value": s.value,
                "label": s.label,
                "explanation": s.explanation,
                "error": s.error,
                "skipped": s.skipped,
            }
            for s in e.scores
        ],
    }


def _print_text(doc: dict[str, Any]) -> None:
    s, x = doc["span"], doc["extracted"]
    print(f"span {s['span_id']}  {s['name']!r}  ({s['where']})")
    print(f"  trace   {s['trace_id']}")
    parent = s["parent_span_id"] or "-"
    print(f"  parent  {parent} ({s['parent']})")
    print(
        f"  kind {s['kind']}  status {s['status']}  service {s['service'] or '-'}  "
        f"scope {s['scope'] or '-'}"
    )
    print(f"  started {s['start']}  duration {s['duration_ms']:g} ms")
    print()
    conv = x["convention"] or "none found"
    print(f"extracted fields (convention: {conv})")
    tokens = ""
    if x["input_tokens"] is not None or x["output_tokens"] is not None:
        tokens = f"  tokens {x['input_tokens'] or 0} in / {x['output_tokens'] or 0} out"
    print(f"  model   {x['model'] or '-'}  operation {x['operation'] or '-'}{tokens}")
    for key in ("input", "output"):
        value = x[key]
        if value is None:
            print(f"  {key:<7} (none)")
        else:
            extra = f"  [{x[key + '_chars']} chars]" if len(value) < x[key + "_chars"] else ""
            print(f"  {key:<7} {json.dumps(value, ensure_ascii=False)}{extra}")
    if x["tool_calls"]:
        print(f"  tool calls: {', '.join(x['tool_calls'])}")
    if x["no_content"] is not None:
        print(
            f"  no prompt or answer: the span looks like a GenAI operation ({x['no_content']}) "
            "but carries neither, so its rules' scorers have nothing to score."
        )
        print(f"  {CONTENT_CAPTURE_HINT}")
    print()
    print("rules")
    width = max((len(r["rule"]) for r in doc["rules"]), default=4)
    for r in doc["rules"]:
        head = "WOULD SCORE" if r["would_score"] else "NOT SCORED "
        print(f"  {r['rule']:<{width}}  {head}  {r['verdict']}")
        if r.get("scope") in ("trace", "session"):
            t, a = r["trace"], r["anchor"]
            state = t["reason"] if t["complete"] else f"incomplete ({t['reason']})"
            line = f"trace: {t['span_count']} span(s), {state}"
            if a is not None:
                this = ", this span" if a["is_this_span"] else ""
                line += f"; anchor {a['name']!r} {a['span_id']} ({a['chosen_as']}{this})"
            print(f"  {'':<{width}}    {line}")
            c = r.get("conversation")
            if c is not None:
                print(
                    f"  {'':<{width}}    conversation {c['key']!r}: turn {c['this_turn']} of "
                    f"{c['turns']}, ends {c['reason']}, eval on {c['last_anchor_span_id']} in "
                    f"trace {c['last_trace_id']}"
                )
        for sc in r.get("scorers", ()):
            if not r["would_score"]:
                break
            mark = "runs" if sc["runs"] else f"does not run: {sc['why_not']}"
            llm = " (LLM)" if sc["llm"] else ""
            print(f"  {'':<{width}}    · {sc['scorer']} [{sc['type']}]{llm}: {mark}")
        if r["evals_in_input"]:
            print(f"  {'':<{width}}    {r['evals_in_input']} eval span(s) for it in the input")
    print()
    evals = doc["evals_in_input"]
    if not evals:
        print("eval spans for this span in the input: none")
        return
    of_trace = " (and its trace)" if any(e["trace"] is not None for e in evals) else ""
    print(f"eval spans for this span{of_trace} in the input")
    for e in evals:
        print(f"  eval {e['rule']}  span {e['span_id']}  ended {e['ended']}  ({e['where']})")
        t = e["trace"]
        if t is not None:
            state = t["reason"] if t["complete"] else f"incomplete ({t['reason']})"
            print(
                f"    of the trace: {t['span_count']} span(s), {state}, revision "
                f"{t['revision']}, on {t['anchor']}"
            )
        for sc in e["scores"]:
            seen = _ScoreSeen(
                sc["scorer"],
                sc["value"],
                sc["label"],
                sc["explanation"],
                sc["error"],
                sc["skipped"],
            )
            print(f"    {seen.text()}")
        if not e["scores"]:
            print("    (its score spans are not in the input)")
