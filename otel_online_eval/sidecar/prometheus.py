"""The sidecar's ``GET /metrics``: engine, receiver and shipper counts in Prometheus text format.

Names are the self-metrics of :mod:`otel_online_eval.metrics` with dots as underscores and
``_total`` on counters, plus the receiver's and the two shippers' (``forward``, ``export``).
:func:`families` turns counts into plain data (JSON-able, so ``--workers`` siblings can share
theirs); :func:`exposition` writes any number of such sources as one document, each metric
family once, each source's samples with its own labels.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from otel_online_eval.engine import EngineStats
from otel_online_eval.sidecar.ingest import ReceiverStats
from otel_online_eval.sidecar.shipper import ShipperStats

__all__ = ["Family", "exposition", "families", "render"]

Family = tuple[str, str, str, list[tuple[dict[str, str], float]]]
"""(name, type, help, samples as (labels, value))."""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    # Whole counts in full: "%g" would print 12345678 as 1.23457e+07.
    if value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(value)


class _Families:
    def __init__(self) -> None:
        self.out: list[Family] = []

    def metric(
        self,
        name: str,
        kind: str,
        help_text: str,
        samples: Iterable[tuple[Mapping[str, str], float]],
    ) -> None:
        self.out.append((name, kind, help_text, [(dict(ls), float(v)) for ls, v in samples]))


def exposition(sources: Sequence[tuple[Mapping[str, str], Sequence[Family]]]) -> str:
    """One text document from ``(labels, families)`` sources; the labels go on every sample
    of their source (e.g. ``worker``)."""
    merged: dict[str, Family] = {}
    for common, fams in sources:
        for name, kind, help_text, samples in fams:
            family = merged.setdefault(name, (name, kind, help_text, []))
            family[3].extend(({**common, **labels}, value) for labels, value in samples)
    lines: list[str] = []
    for name, kind, help_text, samples in merged.values():
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            text = ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items())
            number = _number(value)
            lines.append(f"{name}{{{text}}} {number}" if text else f"{name} {number}")
    return "\n".join(lines) + "\n"


_ASSEMBLY: tuple[tuple[str, str, str, str, tuple[str, ...]], ...] = (
    (
        "assembly_spans",
        "online_eval_assembly_spans_total",
        "counter",
        "Sampled spans handed to trace assembly, by outcome",
        ("outcome",),
    ),
    (
        "assembly_late",
        "online_eval_assembly_late_total",
        "counter",
        "Spans of a trace already evaluated that were not buffered",
        (),
    ),
    (
        "assembly_traces",
        "online_eval_assembly_traces_total",
        "counter",
        "Traces handed to evaluation, by completion reason",
        ("reason",),
    ),
    (
        "assembly_evicted",
        "online_eval_assembly_evicted_total",
        "counter",
        "Traces evicted to make room, by the bound reached",
        ("reason",),
    ),
    (
        "assembly_dropped_traces",
        "online_eval_assembly_dropped_total",
        "counter",
        "Evicted traces dropped without evaluation",
        (),
    ),
    (
        "assembly_skipped_incomplete",
        "online_eval_assembly_skipped_incomplete_total",
        "counter",
        "Incomplete traces skipped",
        (),
    ),
    (
        "assembly_lost",
        "online_eval_assembly_lost_total",
        "counter",
        "Traces whose evaluation was lost, by reason",
        ("reason",),
    ),
    (
        "assembly_buffered_traces",
        "online_eval_assembly_buffered_traces",
        "gauge",
        "Traces being assembled",
        (),
    ),
    (
        "assembly_buffered_bytes",
        "online_eval_assembly_buffered_bytes",
        "gauge",
        "Estimated memory held by traces being assembled",
        (),
    ),
    (
        "assembly_turns",
        "online_eval_assembly_turns_total",
        "counter",
        "Session rules' assembled traces, by outcome",
        ("outcome",),
    ),
    (
        "assembly_sessions",
        "online_eval_assembly_sessions_total",
        "counter",
        "Conversations handed to evaluation, by reason",
        ("reason",),
    ),
)
"""Trace rules' assembly counts: EngineStats field, family, kind, help, labels after rule."""


def render(
    engine: EngineStats,
    receiver: ReceiverStats,
    shippers: Mapping[str, ShipperStats],
    common: Mapping[str, str] | None = None,
) -> str:
    """The exposition text of one process; ``common`` labels go on every sample."""
    return exposition([(common or {}, families(engine, receiver, shippers))])


def families(
    engine: EngineStats, receiver: ReceiverStats, shippers: Mapping[str, ShipperStats]
) -> list[Family]:
    """The metric families of one process's counts."""
    d = _Families()
    d.metric("online_eval_spans_seen_total", "counter", "Spans looked at", [({}, engine.seen)])
    for key, help_text in (
        ("selected", "Spans a rule's apply_to picked"),
        ("not_selected", "Seen spans a rule's apply_to did not pick"),
        ("sampled", "Selected spans kept by a rule's sampling"),
        ("sampled_out", "Selected spans a rule's sampling refused"),
        ("filtered_out", "Sampled spans a rule's filter refused"),
        ("no_content", "Sampled spans that look like a GenAI operation but carry no content"),
    ):
        d.metric(
            f"online_eval_spans_{key}_total",
            "counter",
            help_text,
            [({"rule": r}, v) for r, v in getattr(engine, key).items()],
        )
    d.metric(
        "online_eval_spans_dropped_total",
        "counter",
        "Sampled spans whose evaluation was lost, by rule and reason",
        [({"rule": r, "reason": k}, v) for (r, k), v in sorted(engine.dropped_by_rule.items())],
    )
    d.metric(
        "online_eval_evals_total",
        "counter",
        "Evaluations exported",
        [({"rule": r}, v) for r, v in engine.evals.items()],
    )
    d.metric(
        "online_eval_logs_records_total",
        "counter",
        "Log records given to the join with their spans, by outcome",
        [({"outcome": k}, v) for k, v in sorted(engine.log_records.items())],
    )
    d.metric(
        "online_eval_logs_joined_spans_total",
        "counter",
        "Spans evaluated with joined log records",
        [({}, engine.joined_spans)],
    )
    d.metric(
        "online_eval_logs_span_waits_total",
        "counter",
        "Spans with no content that waited for their log records, by how the wait ended",
        [({"outcome": k}, v) for k, v in sorted(engine.span_waits.items())],
    )
    d.metric(
        "online_eval_scores_total",
        "counter",
        "Scorer runs by outcome",
        [
            ({"rule": r, "scorer": s, "outcome": o}, v)
            for (r, s, o), v in sorted(engine.scores.items())
        ],
    )
    d.metric(
        "online_eval_scores_skipped_total",
        "counter",
        "Skipped scorer runs by reason: busy, quarantined, or the scorer's own",
        [
            ({"rule": r, "scorer": s, "reason": k}, v)
            for (r, s, k), v in sorted(engine.skipped.items())
        ],
    )
    d.metric(
        "online_eval_scorer_quarantined_total",
        "counter",
        "Times a scorer was quarantined after consecutive timeouts",
        [({"scorer": s}, v) for s, v in sorted(engine.quarantined.items())],
    )
    d.metric(
        "online_eval_scorer_stuck",
        "gauge",
        "Sync scorer calls that timed out and still hold one of the scorer's threads",
        [({"scorer": s}, v) for s, v in sorted(engine.stuck.items())],
    )
    d.metric(
        "online_eval_eval_spans_scheduled_total",
        "counter",
        "Eval and score spans handed to the export side",
        [({}, engine.eval_spans_scheduled)],
    )
    d.metric(
        "online_eval_eval_spans_exported_total",
        "counter",
        "Eval and score spans exported",
        [({}, engine.eval_spans_exported)],
    )
    d.metric(
        "online_eval_eval_spans_dropped_total",
        "counter",
        "Eval and score spans lost, by reason",
        [({"reason": k}, v) for k, v in sorted(engine.eval_spans_dropped.items())],
    )
    d.metric(
        "online_eval_judge_tokens_total",
        "counter",
        "Tokens used by LLM judges",
        [
            ({"rule": r, "scorer": s, "model": m, "type": t}, v)
            for (r, s, m, t), v in sorted(engine.tokens.items())
        ],
    )
    d.metric(
        "online_eval_queue_size", "gauge", "Spans waiting for evaluation", [({}, engine.queue_size)]
    )
    for field, name, kind, help_text, labels in _ASSEMBLY:
        values = getattr(engine, field)
        samples = []
        for key, v in sorted(values.items()):
            keys = key if isinstance(key, tuple) else (key,)
            samples.append((dict(zip(("rule", *labels), keys, strict=True)), v))
        if samples:
            d.metric(name, kind, help_text, samples)
    d.metric(
        "otlp_receiver_requests_total",
        "counter",
        "Export requests by transport, outcome",
        [({"transport": t, "outcome": o}, v) for (t, o), v in sorted(receiver.requests.items())],
    )
    d.metric(
        "otlp_receiver_spans_total",
        "counter",
        "Spans received, accepted or rejected",
        [({"result": k}, v) for k, v in sorted(receiver.spans.items())],
    )
    d.metric(
        "otlp_receiver_rejects_total",
        "counter",
        "Refusals by reason",
        [({"reason": k}, v) for k, v in sorted(receiver.rejects.items())],
    )
    d.metric(
        "otlp_receiver_log_requests_total",
        "counter",
        "Logs export requests by transport, outcome",
        [
            ({"transport": t, "outcome": o}, v)
            for (t, o), v in sorted(receiver.log_requests.items())
        ],
    )
    d.metric(
        "otlp_receiver_log_records_total",
        "counter",
        "Log records received, accepted or rejected",
        [({"result": k}, v) for k, v in sorted(receiver.log_records.items())],
    )
    d.metric(
        "otlp_receiver_log_rejects_total",
        "counter",
        "Logs refusals by reason",
        [({"reason": k}, v) for k, v in sorted(receiver.log_rejects.items())],
    )
    d.metric(
        "otlp_receiver_bytes_total",
        "counter",
        "Request bytes received",
        [({"transport": k}, v) for k, v in sorted(receiver.bytes.items())],
    )
    for field, kind, help_text in (
        ("sent_spans", "counter", "Spans delivered downstream"),
        ("sent_requests", "counter", "Requests delivered downstream"),
        ("retries", "counter", "Retried attempts"),
        ("failures", "counter", "Failed attempts"),
        ("refused_spans", "counter", "Spans refused because the buffer was full"),
        ("dropped_spans", "counter", "Spans given up on after retries or at shutdown"),
        ("queued_bytes", "gauge", "Bytes waiting to be sent"),
    ):
        suffix = "_total" if kind == "counter" else ""
        d.metric(
            f"online_eval_shipper_{field}{suffix}",
            kind,
            help_text,
            [({"pipeline": name}, getattr(s, field)) for name, s in shippers.items()],
        )
    return d.out
