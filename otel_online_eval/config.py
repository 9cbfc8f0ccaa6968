"""The YAML configuration: loading, validation, and the model it produces.

Everything is checked at load, and every problem is reported at once with file:line:column and
the YAML path (``rules.yaml:14:12: rules[0].sampling: must be between 0 and 1, got 1.5``):
unknown keys, unknown scorer types, filters that do not parse, ``python:`` refs that do not
import, unset environment variables, rules that name unknown scorers. A config either loads
whole or raises :class:`~otel_online_eval.ConfigError`; it is never half-loaded.

Sections::

    extract:  {presets: [genai], join_s}           where input/output are read from
    scorers:  {NAME: {type: ..., timeout_s, scale, bulkhead, ...type options}}
    rules:    [{name, description, scope, filter, sampling, sampling_seed, apply_to, scorers,
                completion, late, on_incomplete}]   (the last three: trace rules only)
    export:   {otlp: {...}} | {console: {}} | {file: {path}}, plus batch: {...}
    engine:   {queue_size, max_concurrent_evals, threads, shutdown_timeout_s, assembly}
    receiver: {grpc, http, tls, auth, drain_timeout_s}     the sidecar only
    forward:  {otlp, queue, retry}                          the sidecar only
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from otel_online_eval._errors import FilterSyntaxError
from otel_online_eval._validate import Issues, Reader
from otel_online_eval._yaml import load_yaml
from otel_online_eval.assembly import AssemblyBounds, Completion, SessionSettings
from otel_online_eval.engine._config import EngineConfig
from otel_online_eval.export import ExportConfig, read_export_config
from otel_online_eval.genai import PRESETS
from otel_online_eval.query import compile_filter, compile_value, uses_trace_fields
from otel_online_eval.rules import SCOPES, ApplyTo, BulkheadConfig, Rule, ScorerSpec, ScorerUse
from otel_online_eval.scorers import SCORER_TYPES
from otel_online_eval.scorers._revision import scorer_revision
from otel_online_eval.scorers.registry import INLINE_TYPES, SESSION_TYPES, TRACE_TYPES
from otel_online_eval.sidecar.config import (
    ForwardConfig,
    ReceiverConfig,
    read_forward_config,
    read_receiver_config,
)

__all__ = ["EngineConfig", "ExtractConfig", "OnlineEvalConfig", "load_config", "parse_config"]


@dataclass(frozen=True, slots=True)
class ExtractConfig:
    """Where input, output, model and usage are read from (the ``extract:`` section).

    Attributes:
        presets: the conventions to try, in order (None: every known preset, in the default
            order); the first that finds content wins.
        input: the project's own attribute keys holding the input, tried before any preset;
            the first key present wins.
        output: the same for the output.
        input_text: what the ``input`` text is: ``last_user`` (the last user message) or
            ``conversation`` (every input message, one ``role: text`` line each).
        join_s: how long a log record of a span (an OpenTelemetry event: the GenAI
            instrumentations' prompts and answers in event mode) waits for its span to be
            evaluated with it.
    """

    presets: tuple[str, ...] | None = None
    input: tuple[str, ...] = ()
    output: tuple[str, ...] = ()
    input_text: str = "last_user"
    join_s: float = 2.0

    @property
    def is_default(self) -> bool:
        """True when views may extract with the defaults (``join_s`` is not the views')."""
        return replace(self, join_s=2.0) == ExtractConfig()


@dataclass(frozen=True)
class OnlineEvalConfig:
    """A loaded, validated configuration."""

    rules: tuple[Rule, ...] = ()
    scorers: Mapping[str, ScorerSpec] = field(default_factory=dict)
    export: ExportConfig | None = None
    engine: EngineConfig = field(default_factory=EngineConfig)
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    source: str = "<config>"
    receiver: ReceiverConfig | None = None
    forward: ForwardConfig | None = None


_TOP_KEYS = ("extract", "scorers", "rules", "export", "engine")


def load_config(
    path: str | os.PathLike[str], env: Mapping[str, str] | None = None
) -> OnlineEvalConfig:
    """Load and validate a YAML file.

    Raises:
        ConfigError: listing every problem, each with file:line:column.
    """
    name = os.fspath(path)
    issues = Issues(file=name)
    try:
        text = Path(name).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        issues.add("", f"cannot read the file: {exc}")
        issues.raise_if_any()
        raise AssertionError("unreachable") from exc
    return _parse(load_yaml(text, issues, env), issues, name)


def parse_config(
    data: Mapping[str, Any] | str, env: Mapping[str, str] | None = None, source: str = "<config>"
) -> OnlineEvalConfig:
    """Validate a config given as a mapping or as YAML text.

    Raises:
        ConfigError: listing every problem.
    """
    issues = Issues(file=source)
    if isinstance(data, str):
        return _parse(load_yaml(data, issues, env), issues, source)
    return _parse(data, issues, source)


def _parse(data: Any, issues: Issues, source: str) -> OnlineEvalConfig:
    if data is None and not issues:
        issues.add("", "the configuration is empty; it needs at least 'scorers' and 'rules'")
    top = Reader(data, "", issues)
    extract = _read_extract(top.sub("extract"))
    scorers = _read_scorers(top.sub("scorers"))
    rules = _read_rules(top, scorers)
    export = read_export_config(top.sub("export")) if top.has("export") else None
    engine = _read_engine(top.sub("engine"))
    receiver = read_receiver_config(top.sub("receiver")) if top.has("receiver") else None
    forward = read_forward_config(top.sub("forward")) if top.has("forward") else None
    top.done()
    issues.raise_if_any()
    return OnlineEvalConfig(rules, scorers, export, engine, extract, source, receiver, forward)


def _read_extract(r: Reader) -> ExtractConfig:
    from otel_online_eval.genai import INPUT_TEXT_MODES

    presets = r.str_list("presets")
    keys = {side: r.str_list(side, allow_scalar=True) for side in ("input", "output")}
    input_text = r.choice("input_text", INPUT_TEXT_MODES, default="last_user")
    join_s = r.number("join_s", 2.0, lo=0, hi=600)
    r.done()
    for side, names in keys.items():
        for i, key in enumerate(names or ()):
            if not key.strip():
                r.issues.add(f"{r.at(side)}[{i}]", "must be an attribute key, got an empty string")
    if presets is not None:
        seen: set[str] = set()
        for i, name in enumerate(presets):
            if name not in PRESETS:
                r.issues.add(
                    f"{r.at('presets')}[{i}]",
                    f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}",
                )
            elif name in seen:
                r.issues.add(f"{r.at('presets')}[{i}]", f"preset {name!r} is listed twice")
            seen.add(name)
        if not presets and not (keys["input"] or keys["output"]):
            r.error(
                "presets",
                "must name at least one preset (or give 'input'/'output' keys); "
                f"known presets: {', '.join(PRESETS)}",
            )
    return ExtractConfig(
        tuple(presets) if presets is not None else None,
        tuple(keys["input"] or ()),
        tuple(keys["output"] or ()),
        input_text,
        float(join_s),
    )


def _needs(kind: str, opts: Reader) -> str | None:
    """What a scorer scores beyond one span: ``trace``, ``session`` or None."""
    template = opts.data.get("template") if kind == "llm_judge" else None
    if not isinstance(template, str):  # an inline template is checked when it is built
        template = None
    for name in (kind, template):
        if name in TRACE_TYPES:
            return "trace"
        if name in SESSION_TYPES:
            return "session"
    return None


def _read_scorers(r: Reader) -> dict[str, ScorerSpec]:
    specs: dict[str, ScorerSpec] = {}
    for name in r.data:
        opts = r.sub(str(name))
        if not opts.ok:
            continue
        kind = opts.choice("type", sorted(SCORER_TYPES), required=True)
        timeout_s = opts.number("timeout_s", 30.0, lo=0.001)
        scale = opts.number("scale", 1.0, lo=1e-9)
        bulkhead = _read_bulkhead(opts.sub("bulkhead"))
        if kind is None:
            continue
        scorer = SCORER_TYPES[kind](str(name), opts)
        needs = _needs(kind, opts)
        opts.done()
        if scorer is not None:
            specs[str(name)] = ScorerSpec(
                str(name),
                scorer,
                kind,
                float(timeout_s),
                float(scale),
                inline=kind in INLINE_TYPES,
                bulkhead=bulkhead,
                needs=needs,
                revision=scorer_revision(kind, opts.data, scorer),
            )
    return specs


def _read_bulkhead(r: Reader) -> BulkheadConfig:
    """A scorer's ``bulkhead:`` (common to every type): its share of the engine."""
    d = BulkheadConfig()
    concurrency = r.number("concurrency", None, lo=1, hi=10_000, integer=True)
    wait_s = r.number("wait_s", None, lo=0)
    after = r.number("quarantine_after", d.quarantine_after, lo=0, hi=1_000_000, integer=True)
    quarantine_s = r.number("quarantine_s", d.quarantine_s, lo=0.001)
    r.done()
    return BulkheadConfig(
        None if concurrency is None else int(concurrency),
        None if wait_s is None else float(wait_s),
        int(after),
        float(quarantine_s),
    )


def _read_rules(top: Reader, scorers: Mapping[str, ScorerSpec]) -> tuple[Rule, ...]:
    seen: set[str] = set()

    def one(value: Any, path: str) -> Rule | None:
        r = Reader(value, path, top.issues)
        if not r.ok:
            return None
        name = r.str("name", required=True)
        if name is not None:
            if name in seen:
                r.error("name", f"duplicate rule name {name!r}; rule names must be unique")
            seen.add(name)
        description = r.str("description", "")
        scope = r.choice("scope", SCOPES, default="span")
        sampling = r.number("sampling", 1.0, lo=0.0, hi=1.0)
        seed = r.number("sampling_seed", None, integer=True, lo=0)
        clause = r.str("filter")
        compiled = None
        if clause is not None:
            try:
                compiled = compile_filter(clause)
            except FilterSyntaxError as exc:
                r.error("filter", f"filter does not parse: {exc.message}", exc.position)
        if compiled is not None and scope == "span" and uses_trace_fields(compiled):
            r.error(
                "filter",
                "trace.* fields are known only to rules with scope: trace or session "
                f"(this rule's scope is {scope})",
            )
        apply_to = _read_apply_to(r.sub("apply_to"))
        trace_only = _read_trace_options(r, scope)
        session, session_key = _read_session(r, scope)
        uses = r.list("scorers", lambda v, p: _read_use(v, p, scorers, top.issues), required=True)
        if r.data.get("scorers") == []:
            r.error("scorers", "must name at least one scorer")
        if uses:
            names = [u.name for u in uses]
            repeated = sorted({n for n in names if names.count(n) > 1})
            if repeated:
                r.error("scorers", f"names a scorer twice: {', '.join(repeated)}")
                uses = None
        if uses:
            _check_scorer_scopes(r, scope, uses)
        r.done()
        if name is None or uses is None or trace_only is None or session is None:
            return None
        completion, late, on_incomplete = trace_only
        return Rule(
            name=name,
            scorers=tuple(uses),
            description=description,
            sampling=float(sampling),
            sampling_seed=seed,
            filter=compiled,
            apply_to=apply_to,
            scope=scope,
            completion=completion,
            late=late,
            on_incomplete=on_incomplete,
            session=session if scope == "session" else None,
            session_key=session_key,
        )

    rules = top.list("rules", one, default=[])
    return tuple(rules)


_TRACE_KEYS = {
    "completion": ("trace", "session"),
    "late": ("trace",),
    "on_incomplete": ("trace",),
}


def _read_trace_options(r: Reader, scope: str) -> tuple[Completion | None, str, str] | None:
    """A trace rule's completion, late and on_incomplete (None when they do not check); a
    session rule's completion (of each trace that becomes a turn)."""
    for key, scopes in _TRACE_KEYS.items():
        if scope not in scopes and r.has(key):
            r.raw(key)
            only = " or ".join(scopes)
            r.error(key, f"applies to rules with scope: {only} only (this rule's is {scope})")
    if scope == "span":
        return Completion(), "ignore", "evaluate"
    if scope == "session":
        completion = _read_completion(r.sub("completion")) if r.has("completion") else Completion()
        return None if completion is None else (completion, "ignore", "evaluate")
    late = r.choice("late", ("ignore", "reevaluate"), default="ignore")
    on_incomplete = r.choice("on_incomplete", ("evaluate", "skip"), default="evaluate")
    completion = _read_completion(r.sub("completion")) if r.has("completion") else Completion()
    return None if completion is None else (completion, late, on_incomplete)


def _read_session(r: Reader, scope: str) -> tuple[SessionSettings | None, Any]:
    """A session rule's ``session:`` and its compiled key (None settings: it does not check)."""
    if scope != "session":
        if r.has("session"):
            r.raw("session")
            r.error(
                "session", f"applies to rules with scope: session only (this rule's is {scope})"
            )
        return SessionSettings(), None
    sub = r.sub("session")
    d = SessionSettings()
    key = sub.str("key")
    idle_s = float(sub.number("idle_s", d.idle_s, lo=0.001))
    max_turns = int(sub.number("max_turns", d.max_turns, lo=1, integer=True))
    max_wait_s = float(sub.number("max_wait_s", d.max_wait_s, lo=0.001))
    sub.done()
    compiled = None
    if key is not None:
        try:
            compiled = compile_value(key)
        except FilterSyntaxError as exc:
            sub.error("key", f"key does not parse: {exc.message}", exc.position)
            return None, None
    return SessionSettings(key, idle_s, max_turns, max_wait_s), compiled


def _read_completion(r: Reader) -> Completion | None:
    d = Completion()
    settle_s = float(r.number("settle_s", d.settle_s, lo=0))
    idle_s = float(r.number("idle_s", d.idle_s, lo=0.001))
    max_wait_s = float(r.number("max_wait_s", d.max_wait_s, lo=0.001))
    end_on = r.sub("end_on")
    names = end_on.str_list("span_names", [], allow_scalar=True)
    end_on.done()
    r.done()
    if settle_s > idle_s:
        r.error(
            "settle_s",
            f"must not exceed idle_s ({idle_s:g}), got {settle_s:g}: a complete trace would "
            "wait longer than an incomplete one",
        )
        return None
    if max_wait_s < idle_s:
        r.error(
            "max_wait_s",
            f"must be at least idle_s ({idle_s:g}), got {max_wait_s:g}",
        )
        return None
    return Completion(settle_s, idle_s, max_wait_s, frozenset(names))


def _check_scorer_scopes(r: Reader, scope: str, uses: list[ScorerUse]) -> None:
    """A scorer of whole traces or sessions in a rule that scores less: an error at load."""
    raw = r.data.get("scorers")
    where: dict[str, str] = {}
    if isinstance(raw, list):
        for i, item in enumerate(raw):
            name = item if isinstance(item, str) else (item or {}).get("scorer")
            if isinstance(name, str):
                where.setdefault(name, f"{r.at('scorers')}[{i}]")
    for use in uses:
        needs = use.spec.needs
        # The conversation templates read one trace's transcript too; session_turns cannot.
        reads_trace = needs == "session" and use.spec.type == "llm_judge"
        if needs is None or needs == scope or (reads_trace and scope == "trace"):
            continue
        r.issues.add(
            where.get(use.name, r.at("scorers")),
            f"scorer {use.name!r} ({use.spec.type}) scores a whole {needs}; use it in a rule "
            f"with scope: {needs} (this rule's scope is {scope})",
        )


def _read_apply_to(r: Reader) -> ApplyTo:
    root = r.bool("root_spans", False)
    local_root = r.bool("local_root_spans", False)
    names = r.str_list("span_names", [], allow_scalar=True)
    r.done()
    return ApplyTo(root, local_root, frozenset(names))


def _read_use(
    value: Any, path: str, scorers: Mapping[str, ScorerSpec], issues: Issues
) -> ScorerUse | None:
    rate = 1.0
    if isinstance(value, str):
        name, name_path = value, path
    else:
        r = Reader(value, path, issues)
        if not r.ok:
            return None
        name = r.str("scorer", required=True)
        rate = float(r.number("sampling", 1.0, lo=0.0, hi=1.0))
        name_path = r.at("scorer")
        r.done()
        if name is None:
            return None
    spec = scorers.get(name)
    if spec is None:
        if name not in _failed_scorer_names(issues):
            known = ", ".join(sorted(scorers)) or "none defined"
            issues.add(name_path, f"unknown scorer {name!r}; scorers defined: {known}")
        return None
    return ScorerUse(spec, rate)


def _failed_scorer_names(issues: Issues) -> set[str]:
    """Scorers that exist but failed validation (their rule references are not reported)."""
    return {
        i.path.split(".")[1]
        for i in issues.items
        if i.path.startswith("scorers.") and i.path.count(".") >= 1
    }


def _read_assembly(r: Reader) -> AssemblyBounds:
    d = AssemblyBounds()

    def whole(key: str, default: int) -> int:
        return int(r.number(key, default, lo=1, integer=True))

    bounds = AssemblyBounds(
        max_traces=whole("max_traces", d.max_traces),
        max_spans_per_trace=whole("max_spans_per_trace", d.max_spans_per_trace),
        max_bytes=whole("max_bytes", d.max_bytes),
        on_full=r.choice("on_full", ("evaluate", "drop"), default=d.on_full),
        remember=whole("remember", d.remember),
        max_sessions=whole("max_sessions", d.max_sessions),
    )
    r.done()
    return bounds


def _read_engine(r: Reader) -> EngineConfig:
    d = EngineConfig()
    cfg = EngineConfig(
        queue_size=int(r.number("queue_size", d.queue_size, lo=1, integer=True)),
        max_concurrent_evals=int(
            r.number("max_concurrent_evals", d.max_concurrent_evals, lo=1, integer=True)
        ),
        threads=int(r.number("threads", d.threads, lo=1, hi=256, integer=True)),
        shutdown_timeout_s=float(r.number("shutdown_timeout_s", d.shutdown_timeout_s, lo=0)),
        assembly=_read_assembly(r.sub("assembly")),
    )
    r.done()
    return cfg
