"""What the tools share: config and rule lookup, exit codes, input errors, LLM scorers."""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from otel_online_eval._errors import ConfigError, OnlineEvalError
from otel_online_eval.config import OnlineEvalConfig, load_config
from otel_online_eval.rules import Rule, ScorerSpec, ScorerUse
from otel_online_eval.scorers.base import EvalInput
from otel_online_eval.spanview import SpanView
from otel_online_eval.tools._input import InputError, SpanReader

__all__ = [
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_PARTIAL",
    "LLM_TYPES",
    "ErrorPrinter",
    "ToolError",
    "eval_input",
    "is_llm",
    "load",
    "parse_since",
    "pick_rules",
    "reader_for",
    "rule_summary",
]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_PARTIAL = 2  # finished, but bad input was skipped (--keep-going)
EXIT_INTERRUPTED = 130

LLM_TYPES = frozenset({"llm_judge", "autoevals"})
"""Scorer types that may call a language model (``--no-llm`` leaves them out)."""


class ToolError(OnlineEvalError):
    """A problem the user must fix; printed as ``otel-online-eval <command>: <message>``."""


def load(path: str) -> OnlineEvalConfig:
    try:
        return load_config(path)
    except ConfigError as exc:
        raise ToolError(str(exc)) from exc


def pick_rules(cfg: OnlineEvalConfig, names: Sequence[str] | None) -> list[Rule]:
    """The rules named (all of them when none are), in the config's order."""
    known = {r.name: r for r in cfg.rules}
    if not names:
        return list(cfg.rules)
    missing = [n for n in names if n not in known]
    if missing:
        listed = ", ".join(known) or "none"
        raise ToolError(f"{cfg.source}: no rule named {missing[0]!r}; the rules are: {listed}")
    wanted = set(names)
    return [r for r in cfg.rules if r.name in wanted]


def is_llm(spec: ScorerSpec) -> bool:
    """True for scorers that call a language model: ``llm_judge``, and ``autoevals`` scorers
    with an LLM client (heuristic autoevals scorers such as ``ValidJSON`` are not)."""
    if spec.type == "llm_judge":
        return True
    if spec.type == "autoevals":
        scorer: Any = spec.scorer
        evaluator = getattr(scorer, "evaluator", None)
        if evaluator is not None and hasattr(scorer, "model"):
            return scorer.model is not None or getattr(evaluator, "client", None) is not None
        return True
    return spec.type in LLM_TYPES


def eval_input(view: SpanView, rule: str) -> EvalInput:
    """What the engine gives scorers for ``view`` (the same fields)."""
    g = view.genai
    return EvalInput(g.input, g.output, view, rule, g.model)


def rule_summary(rule: Rule) -> list[str]:
    """A few lines describing a rule: selection, sampling, filter, scorers."""
    sel = rule.apply_to
    picks = []
    if sel.root_spans:
        picks.append("root spans")
    if sel.local_root_spans:
        picks.append("local root spans")
    if sel.span_names:
        picks.append("spans named " + ", ".join(sorted(sel.span_names)))
    rate = "callable" if rule.rate is None else f"{rule.rate:g}"
    scorers = ", ".join(
        f"{u.name} [{u.spec.type}" + (f", sampling {u.sampling:g}" if u.sampling != 1 else "") + "]"
        for u in rule.scorers
    )
    if rule.scope == "session":
        from otel_online_eval.tools._traces import anchor_words

        settings = rule.session
        key = settings.key if settings is not None and settings.key else None
        applies = (
            f"  scope:      session; key {key or 'gen_ai.conversation.id, else session.id'}; "
            f"turns anchored on {anchor_words(rule)}; conversations end at the end of the input"
        )
    elif rule.scope == "trace":
        from otel_online_eval.tools._traces import anchor_words

        incomplete = "skipped" if rule.on_incomplete == "skip" else "evaluated"
        applies = (
            f"  scope:      trace; anchored on {anchor_words(rule)}; incomplete traces {incomplete}"
        )
    else:
        applies = f"  applies to: {' or '.join(picks) if picks else 'every span'}"
    return [
        f"rule {rule.name}" + (f" — {rule.description}" if rule.description else ""),
        applies,
        f"  sampling:   {rate}" + (f" (seed {rule.sampling_seed})" if rule.sampling_seed else ""),
        f"  filter:     {rule.filter.source if rule.filter else '(none)'}",
        f"  scorers:    {scorers or '(none)'}",
    ]


def scorer_is_sampled_out(rule: Rule, use: ScorerUse, view: SpanView) -> bool:
    """Whether the scorer's own sampling leaves it out for this span (rule sampled in)."""
    return rule.hash(view.trace_id) >= rule.scorer_bound(use)


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", re.IGNORECASE)


def parse_since(text: str, now: float | None = None) -> int:
    """``--since``: a duration back from now (``90s``, ``30m``, ``24h``, ``7d``, ``2w``) or an
    ISO 8601 time (``2024-05-01``, ``2024-05-01T12:00:00Z``; UTC when no offset is given).

    Returns:
        The cut-off in ns since the epoch.

    Raises:
        ToolError: anything else.
    """
    now = time.time() if now is None else now
    m = _DURATION.fullmatch(text)
    if m:
        return int((now - float(m.group(1)) * _UNITS[m.group(2).lower()]) * 1e9)
    try:
        dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ToolError(
            f"--since {text!r}: expected a duration such as 90s, 30m, 24h, 7d, 2w, or an ISO "
            "8601 time such as 2024-05-01T12:00:00Z"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp() * 1e9)


class ErrorPrinter:
    """Prints input errors met under ``--keep-going`` (the first 20, then a count)."""

    LIMIT = 20

    def __init__(self, command: str) -> None:
        self.command = command
        self.count = 0

    def __call__(self, error: InputError) -> None:
        self.count += 1
        if self.count <= self.LIMIT:
            print(f"otel-online-eval {self.command}: skipped: {error}", file=sys.stderr)
        elif self.count == self.LIMIT + 1:
            print(
                f"otel-online-eval {self.command}: more bad input; only a count follows",
                file=sys.stderr,
            )

    def summary(self, reader: SpanReader) -> str | None:
        """A closing line about skipped input, if any."""
        parts = []
        if self.count:
            parts.append(f"{self.count} bad line(s) or message(s) skipped")
        if reader.other_signals:
            parts.append(f"{reader.other_signals} line(s) of logs/metrics ignored")
        return "; ".join(parts) if parts else None


def reader_for(
    cfg: OnlineEvalConfig | None, paths: Sequence[str], keep_going: bool, printer: ErrorPrinter
) -> SpanReader:
    extract = None if cfg is None or cfg.extract.is_default else cfg.extract
    return SpanReader(paths, keep_going=keep_going, extract=extract, on_error=printer)
