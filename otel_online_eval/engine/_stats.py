"""The engine's counts as one snapshot (:class:`EngineStats`) and as metric readings."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from otel_online_eval.assembly import REASONS, SESSION_REASONS
from otel_online_eval.emit import ExportCounts
from otel_online_eval.engine._core import EngineCore, Marker
from otel_online_eval.engine._counts import DROP_REASONS, EngineStats

__all__ = ["WAIT_OUTCOMES", "Readings"]

WAIT_OUTCOMES = ("records", "timeout", "flush", "full")
"""How a span's wait for its log records ended (``online_eval.logs.span_waits``)."""


class Readings(EngineCore):
    """``stats()`` and the readings the self-metrics are observed through."""

    def stats(self) -> EngineStats:
        """A snapshot of the counts (for tests, tools and the metrics callbacks)."""
        names = [r.name for r in self.router.rules]
        selected = dict.fromkeys(names, 0)
        prefiltered = dict.fromkeys(names, 0)  # sampled out by the route's bound
        seen = 0
        for route in self.router.routes():
            # In this order: each counter is bumped after the one read after it.
            ignored = route.ignored.value
            submitted = route.submitted.value
            n = route.seen.value
            seen += n
            for rule in route.rules:
                selected[rule.name] += n - ignored
                prefiltered[rule.name] += n - submitted
        counts = {name: self._counts[name] for name in names}
        dropped_by_rule = {
            (name, reason): c.dropped[reason].value
            for name, c in counts.items()
            for reason in DROP_REASONS
        }
        dropped = dict.fromkeys(DROP_REASONS, 0)
        for (_, reason), n in dropped_by_rule.items():
            dropped[reason] += n
        export = self._export_counts()
        # Every rule appears, at 0 when nothing happened yet: a zero is not a gap.
        return EngineStats(
            seen=seen,
            dropped=dropped,
            queue_size=sum(1 for i in list(self._queue) if not isinstance(i, Marker)),
            selected=selected,
            not_selected={r: seen - selected[r] for r in names},
            sampled={r: c.sampled.value for r, c in counts.items()},
            sampled_out={r: c.sampled_out.value + prefiltered[r] for r, c in counts.items()},
            filtered_out={r: c.filtered_out.value for r, c in counts.items()},
            evals={r: c.evals.value for r, c in counts.items()},
            no_content={r: c.no_content.value for r, c in counts.items()},
            dropped_by_rule=dropped_by_rule,
            scores=dict(self._runner.scores),
            skipped=dict(self._runner.skips),
            tokens=dict(self._runner.tokens),
            quarantined={**self._scorer_names(), **self._runner.quarantined},
            stuck=self._runner.stuck(),
            eval_spans_scheduled=export.scheduled,
            eval_spans_exported=export.exported,
            eval_spans_dropped=dict(export.dropped),
            **self._assembly_stats(),
            log_records=self._record_counts(),
            joined_spans=self._joins.joined_spans,
            span_waits={k: self._waits.get(k, 0) for k in WAIT_OUTCOMES},
        )

    def _record_counts(self) -> dict[str, int]:
        joins = self._joins
        return {
            "joined": joins.joined,
            "expired": joins.expired,
            "dropped": joins.dropped,
            "not_sampled": joins.not_sampled,
        }

    def _assembly_stats(self) -> dict[str, Any]:
        """The trace rules' counts, as EngineStats fields (each rule at 0 until it counts)."""
        traces = self._traces
        spans: dict[tuple[str, str], int] = {}
        released: dict[tuple[str, str], int] = {}
        evicted: dict[tuple[str, str], int] = {}
        late, dropped = {}, {}
        for name, c in traces.assembly_counts().items():
            spans.update(
                {
                    (name, "buffered"): c.spans,
                    (name, "duplicate"): c.duplicates,
                    (name, "over_limit"): c.dropped_spans,
                }
            )
            released.update({(name, reason): c.released.get(reason, 0) for reason in REASONS})
            evicted.update({(name, b): c.evicted.get(b, 0) for b in ("max_traces", "max_bytes")})
            late[name] = c.late - c.reopened
            dropped[name] = c.dropped_traces
        held = traces.in_flight()
        sessions: dict[tuple[str, str], int] = {}
        for name, sc in traces.session_counts().items():
            sessions.update({(name, r): sc.released.get(r, 0) for r in SESSION_REASONS})
        return {
            "assembly_turns": {
                (n, outcome): t.value
                for n, c in traces.counts.items()
                if self.router.rules_by_name[n].is_session
                for outcome, t in c.turns.items()
            },
            "assembly_sessions": sessions,
            "assembly_spans": spans,
            "assembly_late": late,
            "assembly_traces": released,
            "assembly_evicted": evicted,
            "assembly_dropped_traces": dropped,
            "assembly_skipped_incomplete": {
                n: c.skipped_incomplete.value for n, c in traces.counts.items()
            },
            "assembly_lost": {
                (n, reason): t.value
                for n, c in traces.counts.items()
                for reason, t in c.lost.items()
            },
            "assembly_buffered_traces": {n: t for n, (t, _) in held.items()},
            "assembly_buffered_bytes": {n: b for n, (_, b) in held.items()},
        }

    def _scorer_names(self) -> dict[str, int]:
        """Every rule's scorers that run behind a bulkhead, at 0."""
        return {u.name: 0 for r in self.router.rules for u in r.scorers if not u.spec.inline}

    def _export_counts(self) -> ExportCounts:
        counts = getattr(self.emitter, "export_counts", None)
        found = counts() if callable(counts) else None
        return found if isinstance(found, ExportCounts) else ExportCounts()

    def _readings(self) -> dict[str, Callable[[], Iterable[tuple[float, dict[str, str]]]]]:
        def per_rule(attr: str) -> Callable[[], Iterable[tuple[float, dict[str, str]]]]:
            return lambda: [(v, {"rule": k}) for k, v in getattr(self.stats(), attr).items()]

        return {
            "online_eval.spans.seen": lambda: [(self.stats().seen, {})],
            "online_eval.spans.selected": per_rule("selected"),
            "online_eval.spans.not_selected": per_rule("not_selected"),
            "online_eval.spans.sampled": per_rule("sampled"),
            "online_eval.spans.sampled_out": per_rule("sampled_out"),
            "online_eval.spans.filtered_out": per_rule("filtered_out"),
            "online_eval.spans.no_content": per_rule("no_content"),
            "online_eval.spans.dropped": lambda: [
                (v, {"rule": r, "reason": k}) for (r, k), v in self.stats().dropped_by_rule.items()
            ],
            "online_eval.evals": per_rule("evals"),
            "online_eval.logs.records": lambda: [
                (v, {"outcome": k}) for k, v in self._record_counts().items()
            ],
            "online_eval.logs.joined_spans": lambda: [(self._joins.joined_spans, {})],
            "online_eval.logs.span_waits": lambda: [
                (self._waits.get(k, 0), {"outcome": k}) for k in WAIT_OUTCOMES
            ],
            "online_eval.scores": lambda: [
                (v, {"rule": r, "scorer": s, "outcome": o})
                for (r, s, o), v in dict(self._runner.scores).items()
            ],
            "online_eval.scores.skipped": lambda: [
                (v, {"rule": r, "scorer": s, "reason": k})
                for (r, s, k), v in dict(self._runner.skips).items()
            ],
            "online_eval.scorer.quarantined": lambda: [
                (v, {"scorer": s}) for s, v in self.stats().quarantined.items()
            ],
            "online_eval.scorer.stuck": lambda: [
                (v, {"scorer": s}) for s, v in self.stats().stuck.items()
            ],
            "online_eval.queue.size": lambda: [(len(self._queue), {})],
            "online_eval.judge.tokens": lambda: [
                (v, {"rule": r, "scorer": s, "gen_ai.request.model": m, "gen_ai.token.type": t})
                for (r, s, m, t), v in dict(self._runner.tokens).items()
            ],
            **self._assembly_readings(),
            "online_eval.eval_spans.scheduled": lambda: [(self._export_counts().scheduled, {})],
            "online_eval.eval_spans.exported": lambda: [(self._export_counts().exported, {})],
            "online_eval.eval_spans.dropped": lambda: [
                (v, {"reason": k}) for k, v in self._export_counts().dropped.items()
            ],
        }

    def _assembly_readings(self) -> dict[str, Callable[[], Iterable[tuple[float, dict[str, str]]]]]:
        def by(field: str, *labels: str) -> Callable[[], Iterable[tuple[float, dict[str, str]]]]:
            def read() -> Iterable[tuple[float, dict[str, str]]]:
                values: dict[Any, int] = self._assembly_stats()[field]
                out = []
                for key, v in values.items():
                    keys = key if isinstance(key, tuple) else (key,)
                    out.append((v, dict(zip(("rule", *labels), keys, strict=True))))
                return out

            return read

        return {
            "online_eval.assembly.spans": by("assembly_spans", "outcome"),
            "online_eval.assembly.late": by("assembly_late"),
            "online_eval.assembly.traces": by("assembly_traces", "reason"),
            "online_eval.assembly.evicted": by("assembly_evicted", "reason"),
            "online_eval.assembly.dropped": by("assembly_dropped_traces"),
            "online_eval.assembly.skipped_incomplete": by("assembly_skipped_incomplete"),
            "online_eval.assembly.lost": by("assembly_lost", "reason"),
            "online_eval.assembly.buffered.traces": by("assembly_buffered_traces"),
            "online_eval.assembly.buffered.bytes": by("assembly_buffered_bytes"),
            "online_eval.assembly.turns": by("assembly_turns", "outcome"),
            "online_eval.assembly.sessions": by("assembly_sessions", "reason"),
        }
