"""The span rules' side of the engine: each span decided (sampling, filter) and scored."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Sequence

from otel_online_eval.emit import ScorerRun, Target
from otel_online_eval.engine._core import EngineCore, Item, link_to, response_id, rule_attrs
from otel_online_eval.genai import CONTENT_CAPTURE_HINT, no_content
from otel_online_eval.rules import Rule
from otel_online_eval.scorers.base import EvalInput
from otel_online_eval.spanview import SpanView

__all__ = ["SpanRules"]

logger = logging.getLogger("otel_online_eval.engine")


class SpanRules(EngineCore):
    """Span rules: a span's view, each rule's decision, its scorers, its eval span."""

    def _view_of(self, item: Item) -> SpanView | None:
        """The item's view; None when it is not to be evaluated (counted either way)."""
        payload, route, hash_ = item
        try:
            view = self._make_view(payload)
        except Exception as exc:
            self._decide_dropped(route, hash_, None, "error")
            self._log_limited("engine_error", "Evaluation failed: %r", exc)
            return None
        if view is None:  # an eval span, in the sidecar: never evaluated, not selected
            route.ignored.add()
            return None
        view.join(self._joins.take(view.trace_id, view.span_id))
        return view

    # -- spans waiting for their log records ------------------------------------------------

    def _start(self, item: Item) -> None:
        """Look at a span taken from the queue: evaluate it, or park it to wait for its log
        records. The caller has checked the in-flight limit for non-inline routes."""
        view = self._view_of(item)
        if view is None or self._parks(item, view):
            return
        self._resume(item, view)

    def _resume(self, item: Item, view: SpanView) -> None:
        if item[1].inline:
            self._process_inline(item, view)
        else:
            self._inflight += 1
            self._start_task(self._process(item, view), counts_inflight=True)

    def _parks(self, item: Item, view: SpanView) -> bool:
        """Park a span that waits for its log records (True), up to ``join_s``.

        It waits when it looks like a GenAI operation yet carries no content, took no
        record when it arrived, and some span rule's rate sampling keeps it: its prompt and
        answer are likely in log records still on their way (the sidecar gets the two
        signals in separate requests, in either order).
        """
        _, route, hash_ = item
        if not self._expects_records or self._join_s <= 0 or not route.span_rules or view.joined:
            return False
        if not any(
            rule.sampling_is_callable
            or (hash_ if not rule.salt else rule.hash(view.trace_id)) < rule.bound
            for rule in route.span_rules
        ):
            return False
        try:
            if no_content(view) is None:
                return False
        except Exception:  # decided (and counted) when it is evaluated
            return False
        if len(self._parked) >= self.config.queue_size:
            self._waits["full"] += 1
            return False
        key = (view.trace_id, view.span_id)
        self._parked[key] = (item, view, self._loop.call_later(self._join_s, self._unpark, key))
        # A record offered between the span's first look and its parking did not see it
        # parked: look again (the record thread offers before it looks for parked spans).
        if self._joins.holds(*key):
            self._unpark(key, "records")
        return True

    def _unpark(self, key: tuple[int, int], why: str = "timeout") -> None:
        """End a span's wait (``why``: ``timeout``, ``records``, ``flush``) and evaluate it."""
        entry = self._parked.pop(key, None)
        if entry is None:
            return
        item, view, timer = entry
        timer.cancel()
        view.join(self._joins.take(*key))
        self._waits["records" if view.joined else why] += 1
        self._resume(item, view)

    def _records_came(self, keys: set[tuple[int, int]]) -> None:
        """Records of parked spans arrived (scheduled by ``submit_records``)."""
        for key in keys:
            self._unpark(key, "records")

    def _unpark_all(self) -> None:
        """A flush: parked spans are evaluated now, with what records they have."""
        for key in list(self._parked):
            self._unpark(key, "flush")

    # -- evaluation -----------------------------------------------------------------------

    def _process_inline(self, item: Item, view: SpanView) -> None:
        """Evaluate a span whose rules all decide and score without awaiting anything."""
        payload, route, hash_ = item
        if route.trace_rules:
            self._buffer(payload, view, route, hash_)
        for rule in route.span_rules:
            rule_hash = self._decide(rule, view, hash_)
            if rule_hash is None:
                continue
            try:
                start = time.time_ns()
                inp = _eval_input(view, rule.name)
                runs, sampled_out = [], []
                for use in rule.scorers:
                    if rule_hash >= rule.scorer_bound(use):
                        sampled_out.append(use.name)
                        self._runner.count_score(rule.name, use.name, "sampled_out")
                    else:
                        runs.append(self._runner.run_inline(rule.name, use, inp))
                self._emit_rule(view, rule, runs, sampled_out, start)
            except Exception as exc:
                self._rule_lost(rule, "error", exc)

    def _decide(self, rule: Rule, view: SpanView, hash_: int) -> int | None:
        """Rate sampling and filter (counted); the rule's hash when the span is to be scored."""
        counts = self._counts[rule.name]
        rule_hash = hash_ if not rule.salt else rule.hash(view.trace_id)
        if rule_hash >= rule.bound:
            counts.sampled_out.add()
            return None
        counts.sampled.add()
        return rule_hash if self._filter_passes(rule, view) else None

    def _filter_passes(self, rule: Rule, view: SpanView) -> bool:
        """The filter, for a sampled span; spans with no content are counted and told once."""
        counts = self._counts[rule.name]
        try:
            missing = no_content(view)
            if missing is not None:
                counts.no_content.add()
                self._tell_no_content(rule, view, missing)
            if rule.filter is None or rule.filter(view):
                return True
        except Exception as exc:
            self._rule_lost(rule, "error", exc)
            return False
        counts.filtered_out.add()
        return False

    def _tell_no_content(self, rule: Rule, view: SpanView, marker: str) -> None:
        if rule.name in self._told_no_content:
            return
        self._told_no_content.add(rule.name)
        logger.warning(
            "Rule %r: span %r (scope %r) looks like a GenAI operation (%s) but carries no "
            "prompt or answer that any preset reads, so its scorers have nothing to score. %s "
            "Counted in online_eval.spans.no_content; said once per rule.",
            rule.name,
            view.name,
            view.scope_name,
            marker,
            CONTENT_CAPTURE_HINT,
        )

    async def _process(self, item: Item, view: SpanView) -> None:
        payload, route, hash_ = item
        if route.trace_rules:
            self._buffer(payload, view, route, hash_)
        evals = []
        for rule in route.span_rules:
            if rule.sampling_is_callable:
                evals.append(self._sample_and_evaluate(view, rule))
                continue
            rule_hash = self._decide(rule, view, hash_)
            if rule_hash is not None:
                evals.append(self._evaluate_span(view, rule, rule_hash))
        if len(evals) == 1:
            await evals[0]  # in this task: gather would make a task for it
        elif evals:
            await asyncio.gather(*evals)

    async def _sample_and_evaluate(self, view: SpanView, rule: Rule) -> None:
        counts = self._counts[rule.name]
        try:
            kept = await self._callable_sample(rule, view)
        except asyncio.CancelledError:
            counts.sampled.add()  # not decided: counted as sampled, and lost
            self._rule_lost(rule, "shutdown")
            raise
        if not kept:
            counts.sampled_out.add()
            return
        counts.sampled.add()
        if self._filter_passes(rule, view):
            await self._evaluate_span(view, rule, rule.hash(view.trace_id))

    async def _callable_sample(self, rule: Rule, view: SpanView) -> bool:
        sampler = rule.sampling
        assert callable(sampler)
        g = view.genai
        try:
            if inspect.iscoroutinefunction(sampler):
                verdict = await sampler(g.input, g.output)
            else:
                verdict = await self._in_pool(sampler, g.input, g.output)
                if inspect.isawaitable(verdict):
                    verdict = await verdict
        except Exception:
            self._log_limited(
                f"sampler:{rule.name}",
                "Sampling callable of rule %r raised; the span is not sampled.",
                rule.name,
                exc_info=True,
            )
            return False
        return verdict is True

    async def _evaluate_span(self, view: SpanView, rule: Rule, rule_hash: int) -> None:
        try:
            start = time.time_ns()
            runs, sampled_out = await self._runner.run_all(
                rule.name, rule.scorers, _eval_input(view, rule.name), rule, rule_hash
            )
            self._emit_rule(view, rule, runs, sampled_out, start)
        except asyncio.CancelledError:
            self._rule_lost(rule, "shutdown")
            raise
        except Exception as exc:
            self._rule_lost(rule, "error", exc)

    def _emit_rule(
        self,
        view: SpanView,
        rule: Rule,
        runs: Sequence[ScorerRun],
        sampled_out: Sequence[str],
        start: int,
    ) -> None:
        target = Target(
            view.trace_id,
            view.span_id,
            link_to(view),
            self.emitter.resource_of(view),
            view.name,
            response_id=response_id(view),
        )
        self.emitter.emit(
            target, rule.name, runs, sampled_out, start, time.time_ns(), rule_attrs(rule)
        )
        self._counts[rule.name].evals.add()


def _eval_input(view: SpanView, rule: str) -> EvalInput:
    g = view.genai
    return EvalInput(g.input, g.output, view, rule, g.model)
