"""Running scorers: inline ones on the loop, the rest behind their bulkheads, every outcome
counted (ok, error, timeout, skipped with its reason, sampled out) and timed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from otel_online_eval._errors import ScorerError, ScorerSkipped
from otel_online_eval.emit import ScorerRun
from otel_online_eval.engine._bulkhead import Bulkhead
from otel_online_eval.engine._config import EngineConfig
from otel_online_eval.rules import Rule, ScorerSpec, ScorerUse
from otel_online_eval.scorers.base import (
    JUDGE_MODEL,
    EvalInput,
    FunctionScorer,
    Score,
    is_async_scorer,
    to_score,
)

__all__ = ["ScorerRunner", "ScorerTimeoutError"]

_BULKHEADS_KEPT = 1024  # beyond this many scorers, idle bulkheads are forgotten


class ScorerTimeoutError(ScorerError):
    """A scorer call that did not finish within its timeout."""


class ScorerRunner:
    """Runs one engine's scorer calls and keeps their counts; lives on the engine's loop.

    Args:
        config: the engine's settings (default concurrency per scorer).
        log: a rate-limited warning ``(key, msg, *args)``.
    """

    def __init__(self, config: EngineConfig, log: Callable[..., None]) -> None:
        self.config = config
        self._log = log
        self.record_duration: Callable[[float, dict[str, str]], None] = lambda s, a: None
        self.scores: dict[tuple[str, str, str], int] = {}
        self.skips: dict[tuple[str, str, str], int] = {}
        self.tokens: dict[tuple[str, str, str, str], int] = {}
        self.quarantined: dict[str, int] = {}
        self.bulkheads: dict[int, Bulkhead] = {}
        self.loop: asyncio.AbstractEventLoop | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """(Re)start on ``loop``: new bulkheads (after a fork the old threads are gone)."""
        self.loop = loop
        self.bulkheads = {}

    def shutdown(self) -> None:
        for bulkhead in list(self.bulkheads.values()):
            bulkhead.shutdown()

    def _need_loop(self) -> asyncio.AbstractEventLoop:
        assert self.loop is not None, "ScorerRunner.start() was not called"
        return self.loop

    def stuck(self) -> dict[str, int]:
        return {b.name: b.stuck for b in list(self.bulkheads.values()) if b.sync}

    async def run_all(
        self, name: str, uses: Sequence[ScorerUse], inp: EvalInput, rule: Rule | None, hash_: int
    ) -> tuple[list[ScorerRun], list[str]]:
        """Run the scorers that sampling keeps: inline ones now, the rest concurrently."""
        runs: list[ScorerRun | None] = []
        waiting: list[Awaitable[ScorerRun]] = []
        sampled_out: list[str] = []
        for use in uses:
            if rule is not None and hash_ >= rule.scorer_bound(use):
                sampled_out.append(use.name)
                self.count_score(name, use.name, "sampled_out")
            elif use.spec.inline:
                runs.append(self.run_inline(name, use, inp))
            else:
                runs.append(None)
                waiting.append(self.run_scorer(name, use, inp))
        if len(waiting) == 1:
            done = iter((await waiting[0],))
            return [r if r is not None else next(done) for r in runs], sampled_out
        if waiting:
            done = iter(await asyncio.gather(*waiting))
            return [r if r is not None else next(done) for r in runs], sampled_out
        return [r for r in runs if r is not None], sampled_out

    def run_inline(self, rule: str, use: ScorerUse, inp: EvalInput) -> ScorerRun:
        spec = use.spec
        start, started = time.time_ns(), time.monotonic()
        try:
            return self._finish(
                rule, use, to_score(spec.scorer.score(inp), spec.scale), None, start, started
            )
        except ScorerSkipped as exc:
            return self._skip(rule, use, str(exc), _skip_kind(exc), start, started, ran=True)
        except Exception as exc:
            return self._finish(rule, use, None, exc, start, started)

    async def run_scorer(self, rule: str, use: ScorerUse, inp: EvalInput) -> ScorerRun:
        """One call behind the scorer's bulkhead: quarantine, a slot, then the timed call."""
        spec = use.spec
        bulkhead = self.bulkhead(spec)
        start, started = time.time_ns(), time.monotonic()
        reason, probe = bulkhead.admit(started)
        if reason is not None:
            return self._skip(rule, use, reason, "quarantined", start, started)
        try:
            granted = await bulkhead.acquire()
        except asyncio.CancelledError:
            if probe:
                bulkhead.probe_not_run()
            raise
        if not granted:
            if probe:
                bulkhead.probe_not_run()
            if bulkhead.hopeless:
                why = (
                    f"scorer busy: all {bulkhead.limit} of its threads are held by calls that "
                    "timed out"
                )
            else:
                why = f"scorer busy: no free slot of {bulkhead.limit} within {bulkhead.wait_s:g}s"
            return self._skip(rule, use, why, "busy", start, started)
        start, started = time.time_ns(), time.monotonic()  # its time starts now
        try:
            if bulkhead.sync:
                result = await bulkhead.call_sync(spec.scorer.score, inp, spec.timeout_s)
            else:
                result = await bulkhead.call_async(spec.scorer.score, inp, spec.timeout_s)
            score = to_score(result, spec.scale)
        except (asyncio.TimeoutError, TimeoutError):
            bulkhead.timed_out(probe)
            if bulkhead.times_quarantined != self.quarantined.get(spec.name, 0):
                self.quarantined[spec.name] = bulkhead.times_quarantined
            error = ScorerTimeoutError(f"scorer {spec.name!r} timed out after {spec.timeout_s:g}s")
            return self._finish(rule, use, None, error, start, started, timed_out=True)
        except ScorerSkipped as exc:
            bulkhead.answered(probe)
            return self._skip(rule, use, str(exc), _skip_kind(exc), start, started, ran=True)
        except asyncio.CancelledError:
            if probe:
                bulkhead.probe_not_run()
            raise
        except Exception as exc:
            bulkhead.answered(probe)
            return self._finish(rule, use, None, exc, start, started)
        bulkhead.answered(probe)
        return self._finish(rule, use, score, None, start, started)

    def bulkhead(self, spec: ScorerSpec) -> Bulkhead:
        # One bulkhead per scorer object (a plain function's FunctionScorer wrapper may be made
        # anew for each direct evaluate() call: the function is the scorer then).
        scorer = spec.scorer
        owner: object = scorer.fn if isinstance(scorer, FunctionScorer) else scorer
        bulkhead = self.bulkheads.get(id(owner))
        if bulkhead is not None and bulkhead.owner is owner:
            return bulkhead
        if len(self.bulkheads) >= _BULKHEADS_KEPT:
            for key, old in list(self.bulkheads.items()):
                if old.idle:
                    old.shutdown()
                    del self.bulkheads[key]
        sync = not is_async_scorer(scorer)
        limits = spec.bulkhead
        if limits.concurrency is not None:
            limit = limits.concurrency
        else:
            limit = self.config.threads if sync else self.config.max_concurrent_evals
        bulkhead = Bulkhead(
            spec.name,
            owner,
            sync=sync,
            limit=limit,
            wait_s=spec.timeout_s if limits.wait_s is None else limits.wait_s,
            quarantine_after=limits.quarantine_after,
            quarantine_s=limits.quarantine_s,
            loop=self._need_loop(),
        )
        self.bulkheads[id(owner)] = bulkhead
        return bulkhead

    def _skip(
        self,
        rule: str,
        use: ScorerUse,
        reason: str,
        kind: str,
        start: int,
        started: float,
        ran: bool = False,
    ) -> ScorerRun:
        key = (rule, use.name, kind)
        self.skips[key] = self.skips.get(key, 0) + 1
        return self._finish(rule, use, None, None, start, started, skipped=reason, ran=ran)

    def _finish(
        self,
        rule: str,
        use: ScorerUse,
        score: Score | None,
        error: BaseException | None,
        start: int,
        started: float,
        timed_out: bool = False,
        skipped: str | None = None,
        ran: bool = True,
    ) -> ScorerRun:
        if skipped is not None:
            outcome = "skipped"
        else:
            outcome = "ok" if error is None else ("timeout" if timed_out else "error")
        if ran:  # a call the engine skipped (busy, quarantined) took no time of the scorer's
            self.record_duration(time.monotonic() - started, {"rule": rule, "scorer": use.name})
        self.count_score(rule, use.name, outcome)
        if score is not None and score.metadata:
            self.count_tokens(rule, use.name, score.metadata)
        if error is not None:
            self._log(
                f"scorer:{use.name}", "Scorer %r failed in rule %r: %s", use.name, rule, error
            )
        spec = use.spec
        return ScorerRun(
            use.name,
            score,
            error,
            start,
            time.time_ns(),
            use.sampling,
            timed_out,
            skipped,
            spec.revision,
            spec.annotator,
        )

    def count_tokens(self, rule: str, scorer: str, metadata: Mapping[str, Any]) -> None:
        # A judge reports its usage as score metadata under the project's names (not the
        # GenAI ones: no backend may count a judge call as the app's model call).
        model = str(metadata.get(JUDGE_MODEL, ""))
        for kind in ("input", "output"):
            n = metadata.get(f"online_eval.judge.usage.{kind}_tokens")
            if isinstance(n, int) and not isinstance(n, bool) and n > 0:
                key = (rule, scorer, model, kind)
                self.tokens[key] = self.tokens.get(key, 0) + n

    def count_score(self, rule: str, scorer: str, outcome: str) -> None:
        key = (rule, scorer, outcome)
        self.scores[key] = self.scores.get(key, 0) + 1


def _skip_kind(exc: ScorerSkipped) -> str:
    kind = getattr(exc, "kind", None)
    return kind if isinstance(kind, str) and kind else "scorer"
