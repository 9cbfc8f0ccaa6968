"""What the engine counts, per rule, and the snapshot it gives out (:class:`EngineStats`).

The identities between the counts (``docs/metrics.md``), per rule, once nothing is in flight:

- ``seen = selected + not_selected``
- ``selected = sampled + sampled_out``
- ``sampled = filtered_out + evals + dropped`` (dropped: every reason)

Sampling is decided even for a span that is dropped before the engine reached it (its rate
decision is a pure function of the trace id), so a drop never leaves a span uncounted; a span
dropped before a callable sampler could run for it counts as sampled (and dropped).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from otel_online_eval.metrics import Tally

__all__ = ["DROP_REASONS", "EngineStats", "RuleCounts"]

DROP_REASONS = ("queue_full", "shutdown", "error")
"""Why an evaluation was lost: the queue was full, the engine shut down first, or a bug."""


class RuleCounts:
    """One rule's counters; any thread may bump them (they are ``Tally``s)."""

    __slots__ = ("dropped", "evals", "filtered_out", "no_content", "sampled", "sampled_out")

    def __init__(self) -> None:
        self.sampled = Tally()
        self.sampled_out = Tally()
        self.filtered_out = Tally()
        self.evals = Tally()
        self.no_content = Tally()
        self.dropped = {reason: Tally() for reason in DROP_REASONS}

    def lost(self) -> int:
        return sum(t.value for t in self.dropped.values())


@dataclass
class EngineStats:
    """Counts since the engine started, per rule where it applies.

    Attributes:
        seen: spans the front door looked at.
        dropped: evaluations lost, by reason (summed over rules; per rule in
            ``dropped_by_rule``).
        queue_size: spans waiting for the engine.
        selected: per rule, spans its ``apply_to`` picked (eval spans the sidecar receives
            are not: they are never evaluated).
        not_selected: per rule, seen spans it did not select.
        sampled: per rule, selected spans its sampling kept.
        sampled_out: per rule, selected spans its sampling refused.
        filtered_out: per rule, sampled spans its filter refused.
        evals: per rule, evaluations handed to the exporter.
        no_content: per rule, sampled spans that look like a GenAI operation but carry no
            prompt or answer that any preset reads (content capture off?); also counted in
            ``filtered_out`` or ``evals``.
        dropped_by_rule: (rule, reason) -> sampled spans whose evaluation was lost.
        scores: (rule, scorer, outcome) -> scorer runs.
        skipped: (rule, scorer, reason) -> scorer runs skipped: ``busy``, ``quarantined``,
            or the scorer's own reason (a judge's ``circuit_open``, ``budget``, ...).
        tokens: (rule, scorer, model, type) -> judge tokens.
        quarantined: scorer -> times it was quarantined.
        stuck: scorer -> calls that timed out and still hold one of its threads.
        eval_spans_scheduled: eval and score spans handed to the export side.
        eval_spans_exported: of those, exported.
        eval_spans_dropped: of those, lost, by reason (``queue_full``, ``failed``,
            ``shutdown``).
        assembly_spans: (trace rule, outcome) -> sampled spans handed to trace assembly:
            ``buffered``, ``duplicate`` (its id already seen in the trace), ``over_limit``
            (past ``max_spans_per_trace``).
        assembly_late: trace rule -> spans of a trace already evaluated that were not
            buffered (``late: ignore``, or the trace's spans were let go).
        assembly_traces: (trace rule, reason) -> traces handed to evaluation: ``complete``,
            ``end_on``, ``idle``, ``max_wait``, ``evicted``, ``shutdown``.
        assembly_evicted: (trace rule, bound) -> traces evicted to make room, by the bound
            reached (``max_traces``, ``max_bytes``); evaluated early or dropped.
        assembly_dropped_traces: trace rule -> evicted traces dropped (``on_full: drop``).
        assembly_skipped_incomplete: trace rule -> incomplete traces skipped
            (``on_incomplete: skip``).
        assembly_lost: (trace rule, reason) -> traces whose evaluation was lost (``error``,
            ``shutdown``).
        assembly_buffered_traces, assembly_buffered_bytes: trace rule -> held now.
        assembly_turns: (session rule, outcome) -> its assembled traces: ``added`` (a turn),
            ``no_key`` (no session key), ``sampled_out`` (by the key's hash),
            ``filtered_out``.
        assembly_sessions: (session rule, reason) -> conversations handed to evaluation:
            ``idle``, ``max_turns``, ``max_wait``, ``evicted``, ``shutdown``, ``end_of_input``.
        log_records: log records given to the join, by outcome: ``joined`` (taken by their
            span), ``expired`` (no span came), ``dropped`` (past the store's cap),
            ``not_sampled`` (of traces no rule may sample: not held).
        joined_spans: spans evaluated with at least one joined record.
        span_waits: spans with no content that waited for their records, by how the wait
            ended: ``records`` (they came), ``timeout`` (``join_s`` passed), ``flush`` (a flush
            or shutdown), ``full`` (no wait: too many spans waiting).
    """

    seen: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    queue_size: int = 0
    selected: dict[str, int] = field(default_factory=dict)
    not_selected: dict[str, int] = field(default_factory=dict)
    sampled: dict[str, int] = field(default_factory=dict)
    sampled_out: dict[str, int] = field(default_factory=dict)
    filtered_out: dict[str, int] = field(default_factory=dict)
    evals: dict[str, int] = field(default_factory=dict)
    no_content: dict[str, int] = field(default_factory=dict)
    dropped_by_rule: dict[tuple[str, str], int] = field(default_factory=dict)
    scores: dict[tuple[str, str, str], int] = field(default_factory=dict)
    skipped: dict[tuple[str, str, str], int] = field(default_factory=dict)
    tokens: dict[tuple[str, str, str, str], int] = field(default_factory=dict)
    quarantined: dict[str, int] = field(default_factory=dict)
    stuck: dict[str, int] = field(default_factory=dict)
    eval_spans_scheduled: int = 0
    eval_spans_exported: int = 0
    eval_spans_dropped: dict[str, int] = field(default_factory=dict)
    assembly_spans: dict[tuple[str, str], int] = field(default_factory=dict)
    assembly_late: dict[str, int] = field(default_factory=dict)
    assembly_traces: dict[tuple[str, str], int] = field(default_factory=dict)
    assembly_evicted: dict[tuple[str, str], int] = field(default_factory=dict)
    assembly_dropped_traces: dict[str, int] = field(default_factory=dict)
    assembly_skipped_incomplete: dict[str, int] = field(default_factory=dict)
    assembly_lost: dict[tuple[str, str], int] = field(default_factory=dict)
    assembly_buffered_traces: dict[str, int] = field(default_factory=dict)
    assembly_buffered_bytes: dict[str, int] = field(default_factory=dict)
    assembly_turns: dict[tuple[str, str], int] = field(default_factory=dict)
    assembly_sessions: dict[tuple[str, str], int] = field(default_factory=dict)
    log_records: dict[str, int] = field(default_factory=dict)
    joined_spans: int = 0
    span_waits: dict[str, int] = field(default_factory=dict)
