"""Rules: which spans to score (selection, sampling, filter) and with which scorers.

A span is scored by a rule when, in this order:

1. **selection** (``apply_to``) picks it: a root span, a local root (no parent or a remote
   parent), or a span whose name is listed; several set means any of them; none set means
   every span;
2. **sampling** keeps its trace (see :mod:`otel_online_eval.sampling`);
3. the **filter** clause is true for it.

:meth:`Rule.decide` returns a :class:`Decision` that says which step stopped a span and why.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, Union

from otel_online_eval.assembly import Completion, SessionSettings
from otel_online_eval.sampling import FULL, SamplerFn, bound, sample_hash, seed_salt
from otel_online_eval.scorers._revision import annotator_kind, code_revision
from otel_online_eval.scorers.base import FunctionScorer, Scorer, is_async_scorer

if TYPE_CHECKING:
    from otel_online_eval.query import CompiledFilter
    from otel_online_eval.spanview import SpanView

__all__ = [
    "LOCAL_PARENT",
    "NO_PARENT",
    "REMOTE_PARENT",
    "SCOPES",
    "ApplyTo",
    "BulkheadConfig",
    "Decision",
    "Rule",
    "ScorerSpec",
    "ScorerUse",
    "Stage",
    "parent_state",
]

NO_PARENT, REMOTE_PARENT, LOCAL_PARENT = 0, 1, 2
"""Where a span's parent is: none (a trace root), in another process, or in this one."""

DEFAULT_TIMEOUT_S = 30.0

SCOPES = ("span", "trace", "session")
"""What one evaluation of a rule covers: one span, every span of one trace, or the traces
(turns) of one conversation."""


def parent_state(view: SpanView) -> int:
    if view.parent_span_id is None:
        return NO_PARENT
    return REMOTE_PARENT if view.parent_is_remote else LOCAL_PARENT


class Stage(Enum):
    """The step of a rule that turned a span away."""

    SELECTION = "selection"
    SAMPLING = "sampling"
    FILTER = "filter"


@dataclass(frozen=True, slots=True)
class Decision:
    """A rule's verdict on one span.

    Attributes:
        rule: the rule's name.
        matched: True when the span is to be scored.
        stage: the step that turned it away (None when matched).
        reason: the reason in words.
        detail: for the filter step, the sub-expression that was false.
    """

    rule: str
    matched: bool
    stage: Stage | None = None
    reason: str = "matched"
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class BulkheadConfig:
    """A scorer's own share of the engine, and when it is set aside (YAML ``bulkhead:``).

    Attributes:
        concurrency: its calls running at once (None: ``engine.threads`` for a sync scorer,
            which gets that many threads of its own, ``engine.max_concurrent_evals`` for an
            async one). A sync call that times out keeps its thread until it returns: that
            thread is this scorer's loss, never another scorer's.
        wait_s: how long a call may wait for a free slot before it is skipped as
            ``scorer busy`` (None: the scorer's ``timeout_s``; 0: never wait). The timeout
            starts when the call starts, not while it waits.
        quarantine_after: consecutive timeouts after which the scorer is quarantined: its calls
            are skipped for ``quarantine_s``, then one probe call is let through (0: never).
        quarantine_s: how long a quarantine lasts before the probe.
    """

    concurrency: int | None = None
    wait_s: float | None = None
    quarantine_after: int = 3
    quarantine_s: float = 30.0

    def __post_init__(self) -> None:
        if self.concurrency is not None and self.concurrency < 1:
            raise ValueError(f"bulkhead concurrency must be at least 1, got {self.concurrency}")
        if self.wait_s is not None and self.wait_s < 0:
            raise ValueError(f"bulkhead wait_s must be at least 0, got {self.wait_s}")
        if self.quarantine_after < 0:
            raise ValueError(
                f"bulkhead quarantine_after must be at least 0, got {self.quarantine_after}"
            )
        if self.quarantine_s <= 0:
            raise ValueError(f"bulkhead quarantine_s must be positive, got {self.quarantine_s}")


@dataclass(frozen=True, slots=True)
class ScorerSpec:
    """A configured scorer: the object, its name and the options common to all types.

    Attributes:
        name: the name rules use and eval spans show.
        scorer: the Scorer.
        type: the YAML type (``python-object`` for scorers given in code).
        timeout_s: how long one call may take before it is recorded as a timeout.
        scale: the top of the scorer's scale; values are divided by it.
        inline: run on the engine's loop rather than on threads of its own (sync, cheap and
            bounded scorers only: the timeout cannot interrupt them). Scorers in code opt in
            with a class attribute ``inline = True``.
        bulkhead: its share of the engine: concurrency, wait for a slot, quarantine.
        needs: what it scores beyond one span: ``trace`` or ``session`` (None: a span).
        revision: a short stable hash of its effective configuration, on every score
            (``online_eval.scorer.revision``); for a scorer given in code, of where it is
            defined.
        annotator: ``LLM`` for a judge, ``CODE`` otherwise (Phoenix's annotator kind).
    """

    name: str
    scorer: Scorer
    type: str = "python-object"
    timeout_s: float = DEFAULT_TIMEOUT_S
    scale: float = 1.0
    inline: bool = False
    bulkhead: BulkheadConfig = BulkheadConfig()
    needs: str | None = None
    revision: str = ""
    annotator: str = ""

    def __post_init__(self) -> None:
        if not self.revision:
            object.__setattr__(self, "revision", code_revision(self.scorer))
        if not self.annotator:
            object.__setattr__(self, "annotator", annotator_kind(self.scorer))


@dataclass(frozen=True, slots=True)
class ScorerUse:
    """A scorer as a rule uses it: ``sampling`` is a fraction of the rule's sample."""

    spec: ScorerSpec
    sampling: float = 1.0

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(frozen=True, slots=True)
class ApplyTo:
    """Span selection. Several criteria: any may match. None: every span is selected."""

    root_spans: bool = False
    local_root_spans: bool = False
    span_names: frozenset[str] = frozenset()

    @property
    def everything(self) -> bool:
        return not (self.root_spans or self.local_root_spans or self.span_names)

    def selects(self, name: str, parent: int) -> bool:
        if self.everything or name in self.span_names:
            return True
        if self.root_spans and parent == NO_PARENT:
            return True
        return self.local_root_spans and parent != LOCAL_PARENT

    def wanted(self) -> str:
        """What the selection picks, in words (``a root span or named one of [...]``)."""
        wanted = []
        if self.root_spans:
            wanted.append("a root span")
        if self.local_root_spans:
            wanted.append("a local root span")
        if self.span_names:
            wanted.append(f"named one of {sorted(self.span_names)}")
        return " or ".join(wanted)

    def why_not(self, name: str, parent: int) -> str:
        where = {
            NO_PARENT: "a root span",
            REMOTE_PARENT: "a span with a remote parent",
            LOCAL_PARENT: "a child span",
        }[parent]
        return f"{where} named {name!r} is not " + self.wanted()


ScorerLike = Union[Scorer, Callable[..., Any], ScorerSpec, ScorerUse, tuple[Any, float]]  # noqa: UP007


@dataclass(frozen=True)
class Rule:
    """One online-evaluation rule.

    Attributes:
        name: unique name, shown on eval spans as ``eval {name}``.
        scorers: the scorers to run, each with its own sampling rate.
        description: what the rule checks, in words.
        sampling: a rate in [0, 1], or a callable ``(input, output) -> bool`` (sync or async).
        sampling_seed: sample independently of other rules (None: the shared hash).
        filter: a compiled filter clause, or None.
        apply_to: span selection; for a trace rule, the span that anchors the evaluation
            (none set: the trace's root).
        scope: ``span`` (each selected span is scored) or ``trace`` (the trace's spans are
            buffered until it is complete, then scored once; sampling is by trace id).
        completion: for a trace rule, when its trace is complete (None: the defaults).
        late: for a trace rule, what a span of a trace already evaluated does: ``ignore``
            (counted) or ``reevaluate`` (the trace is scored again, as its next revision).
        on_incomplete: for a trace rule, a trace handed on by a fallback (idle, max_wait,
            evicted, shutdown) is ``evaluate``d (marked incomplete) or ``skip``ped (counted).
        session: for a session rule, its key and when a conversation is evaluated (None: the
            defaults). Its traces are assembled as a trace rule's (``completion``), each
            becomes a turn, and its ``filter`` decides which traces are turns.
        session_key: the compiled ``session.key`` expression (set by ``create`` and the
            config loader; None: ``gen_ai.conversation.id``, else ``session.id``).
    """

    name: str
    scorers: tuple[ScorerUse, ...]
    description: str = ""
    sampling: float | SamplerFn = 1.0
    sampling_seed: int | None = None
    filter: CompiledFilter | None = None
    apply_to: ApplyTo = field(default_factory=ApplyTo)
    scope: str = "span"
    completion: Completion | None = None
    late: str = "ignore"
    on_incomplete: str = "evaluate"
    session: SessionSettings | None = None
    session_key: Callable[[SpanView], Any] | None = field(default=None, repr=False)
    salt: int = field(init=False, repr=False)
    bound: int = field(init=False, repr=False)
    inline: bool = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.sampling, (int, float)) and not isinstance(self.sampling, bool):
            rate_bound = bound(float(self.sampling))
        elif callable(self.sampling):
            rate_bound = FULL
        else:
            raise TypeError(
                f"rule {self.name!r}: sampling must be a number in [0, 1] or a "
                f"callable, got {self.sampling!r}"
            )
        if self.scope not in SCOPES:
            raise ValueError(
                f"rule {self.name!r}: scope must be one of {SCOPES}, got {self.scope!r}"
            )
        if self.scope != "span" and callable(self.sampling):
            raise ValueError(
                f"rule {self.name!r}: a {self.scope} rule samples by {self.scope} (its id or "
                "key), so its sampling must be a rate, not a callable"
            )
        if self.late not in ("ignore", "reevaluate"):
            raise ValueError(f"rule {self.name!r}: late must be 'ignore' or 'reevaluate'")
        if self.on_incomplete not in ("evaluate", "skip"):
            raise ValueError(f"rule {self.name!r}: on_incomplete must be 'evaluate' or 'skip'")
        names = [use.name for use in self.scorers]
        if len(set(names)) != len(names):
            raise ValueError(f"rule {self.name!r}: scorer names must be unique, got {names}")
        for use in self.scorers:
            bound(use.sampling)  # raises ValueError when out of range
        object.__setattr__(self, "salt", seed_salt(self.sampling_seed))
        object.__setattr__(self, "bound", rate_bound)
        # Decided without awaiting anything: rate sampling and inline scorers only.
        object.__setattr__(
            self,
            "inline",
            not callable(self.sampling) and all(use.spec.inline for use in self.scorers),
        )

    @classmethod
    def create(
        cls,
        name: str,
        scorers: Iterable[ScorerLike],
        *,
        description: str = "",
        filter: str | None = None,
        sampling: float | SamplerFn = 1.0,
        sampling_seed: int | None = None,
        root_spans: bool = False,
        local_root_spans: bool = False,
        span_names: Iterable[str] = (),
        timeout_s: float = DEFAULT_TIMEOUT_S,
        bulkhead: BulkheadConfig | None = None,
        scope: str = "span",
        completion: Completion | None = None,
        late: str = "ignore",
        on_incomplete: str = "evaluate",
        session: SessionSettings | None = None,
    ) -> Rule:
        """Build a rule in code.

        Args:
            name: the rule's name.
            scorers: Scorer objects, plain callables ``fn(EvalInput)``, ScorerSpec/ScorerUse,
                or ``(scorer, rate)`` pairs.
            description: what the rule checks.
            filter: a filter clause (compiled here; raises FilterSyntaxError).
            sampling: rate or callable.
            sampling_seed: independent sampling.
            root_spans: select trace roots.
            local_root_spans: select spans without a parent in this process.
            span_names: select spans with these names.
            timeout_s: the timeout of scorers given as objects or callables.
            bulkhead: the bulkhead of scorers given as objects or callables (the defaults of
                :class:`BulkheadConfig` when None).
            scope: ``span`` or ``trace``.
            completion: a trace rule's completion settings.
            late: a trace rule's late spans: ``ignore`` or ``reevaluate``.
            on_incomplete: a trace rule's incomplete traces: ``evaluate`` or ``skip``.
            session: a session rule's key (a filter-language expression, compiled here) and
                completion.
        """
        from otel_online_eval.query import compile_filter, compile_value

        uses = tuple(_as_use(s, timeout_s, bulkhead) for s in scorers)
        return cls(
            name=name,
            scorers=uses,
            description=description,
            sampling=sampling,
            sampling_seed=sampling_seed,
            filter=compile_filter(filter) if filter else None,
            apply_to=ApplyTo(root_spans, local_root_spans, frozenset(span_names)),
            scope=scope,
            completion=completion,
            late=late,
            on_incomplete=on_incomplete,
            session=session,
            session_key=compile_value(session.key) if session and session.key else None,
        )

    @property
    def rate(self) -> float | None:
        """The sampling rate, None for callable sampling."""
        return None if callable(self.sampling) else float(self.sampling)

    @property
    def is_trace(self) -> bool:
        """True for a rule that assembles whole traces: ``scope: trace`` or ``session``."""
        return self.scope != "span"

    @property
    def is_session(self) -> bool:
        return self.scope == "session"

    @property
    def sampling_is_callable(self) -> bool:
        return callable(self.sampling)

    def hash(self, trace_id: int) -> int:
        return sample_hash(trace_id, self.salt)

    def scorer_bound(self, use: ScorerUse) -> int:
        """The hash bound under which ``use`` runs: nested inside the rule's sample."""
        rate = self.rate
        return bound(use.sampling * (1.0 if rate is None else rate))

    def decide(self, view: SpanView, ignore_sampling: bool = False) -> Decision:
        """Selection, rate sampling and filter for one span (a callable sampler is not run).

        Args:
            view: the span.
            ignore_sampling: decide as if the rate were 1.
        """
        parent = parent_state(view)
        if not self.apply_to.selects(view.name, parent):
            return Decision(
                self.name, False, Stage.SELECTION, self.apply_to.why_not(view.name, parent)
            )
        if not ignore_sampling and self.hash(view.trace_id) >= self.bound:
            return Decision(
                self.name, False, Stage.SAMPLING, f"trace sampled out at rate {self.rate:g}"
            )
        return self.check_filter(view)

    def check_filter(self, view: SpanView) -> Decision:
        if self.filter is not None and not self.filter(view):
            detail = self.filter.why_false(view)
            return Decision(self.name, False, Stage.FILTER, "filter is false", detail)
        return Decision(self.name, True)


def _as_use(item: Any, timeout_s: float, bulkhead: BulkheadConfig | None = None) -> ScorerUse:
    if isinstance(item, ScorerUse):
        return item
    if isinstance(item, tuple) and len(item) == 2:
        return ScorerUse(_as_use(item[0], timeout_s, bulkhead).spec, float(item[1]))
    if isinstance(item, ScorerSpec):
        return ScorerUse(item)
    limits = bulkhead or BulkheadConfig()
    if isinstance(item, Scorer) and not inspect.isfunction(item):
        inline = getattr(item, "inline", False) is True and not is_async_scorer(item)
        return ScorerUse(
            ScorerSpec(item.name, item, timeout_s=timeout_s, inline=inline, bulkhead=limits)
        )
    if callable(item):
        scorer = FunctionScorer(item)
        return ScorerUse(ScorerSpec(scorer.name, scorer, timeout_s=timeout_s, bulkhead=limits))
    raise TypeError(f"not a scorer: {item!r}")
