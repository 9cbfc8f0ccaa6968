"""The ``llm_judge`` scorer: render the template, pass the limits, ask, read the verdict.

One call, in order (every wait bounded by the scorer's overall ``timeout_s``):

1. render the prompt (a missing value is an error, before anything is spent);
2. skip when paused (after 401/403/404), when the circuit is open, or when the hourly token
   budget is spent (each a :class:`~otel_online_eval.ScorerSkipped` with the reason);
3. wait for a concurrency slot, a request slot and the estimated tokens (skip when none can
   be had before the deadline);
4. attempts: POST, retry on 429 / 5xx / timeout / connection error with exponential backoff
   and full jitter, or the server's ``Retry-After``; stop early when the circuit opens or no
   time is left;
5. the verdict becomes a :class:`~otel_online_eval.Score`: the choice's score, the choice as
   label, the reasons as explanation, the judge model and token usage as metadata.

The HTTP transport (:class:`~otel_online_eval.scorers.judge._http.AiohttpTransport`, an
aiohttp session with at most ``concurrency`` connections) and the concurrency semaphore belong
to the event loop that runs the scorer, made on first use; the transport is closed when that
loop shuts down its async generators (as the engine's loop and ``asyncio.run`` do), or by
:meth:`LLMJudge.aclose`. In a forked child the parent's transports are forgotten, never closed
(their connections are the parent's), and the child makes its own. Judge requests run with
OpenTelemetry instrumentation suppressed, so judge calls are never traced back into the
application's pipeline.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
import weakref
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, attach, detach, set_value

from otel_online_eval._errors import ScorerError, ScorerSkipped
from otel_online_eval.scorers.base import EvalInput, Score
from otel_online_eval.scorers.judge._client import (
    AnswerError,
    AttemptError,
    RequestBuilder,
    classify_status,
    parse_answer,
    server_message,
    usage_of,
)
from otel_online_eval.scorers.judge._config import JudgeConfig
from otel_online_eval.scorers.judge._http import (
    AiohttpTransport,
    HttpAnswerError,
    HttpError,
    HttpTimeout,
    Transport,
)
from otel_online_eval.scorers.judge._limits import (
    CircuitBreaker,
    HourlyBudget,
    Pause,
    RateGate,
    backoff_delay,
    parse_retry_after,
)
from otel_online_eval.scorers.judge._templates import Prompt

__all__ = ["JudgeSkipped", "JudgeStats", "LLMJudge"]

logger = logging.getLogger("otel_online_eval.scorers.judge")

_OUTPUT_ESTIMATE = 256  # answer tokens assumed before the call when max_tokens is not set
_VERSION = "0.1.0"
_MARGIN_S = 0.02  # stop this long before the engine's deadline, to report why


@dataclass
class JudgeStats:
    """What a judge scorer did since it was built (all counts)."""

    calls: int = 0
    requests: int = 0
    retries: int = 0
    scores: int = 0
    errors: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    input_tokens: int = 0
    output_tokens: int = 0
    circuit_opened: int = 0


class JudgeSkipped(ScorerSkipped):
    """A judge call that was not made; ``kind`` is ``paused``, ``circuit_open``, ``budget``,
    ``concurrency`` or ``rate_limit``."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class _LoopState:
    """What belongs to one event loop: the HTTP transport and the concurrency semaphore."""

    def __init__(self, transport: Transport, concurrency: int) -> None:
        self.transport = transport
        self.semaphore = asyncio.Semaphore(concurrency)
        self.owner: AsyncGenerator[None, None] | None = None


async def _own(
    loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState],
    loop: asyncio.AbstractEventLoop,
    state: _LoopState,
) -> AsyncGenerator[None, None]:
    """Suspended for the loop's life; ``loop.shutdown_asyncgens()`` closes it, and the
    transport. (The state refers to its loop, so the entry would otherwise never leave the
    weak dictionary.)"""
    try:
        yield
    finally:
        if loops.get(loop) is state:
            del loops[loop]
        await state.transport.aclose()


def _finish_now(owner: AsyncGenerator[None, None]) -> None:
    """Run ``owner``'s ``finally`` here, without a loop: it must not wait for anything (its
    transport was forgotten), and a finished generator is not handed to the loop's finalizer
    when it is collected."""
    closing = owner.aclose()
    try:
        closing.send(None)
    except StopIteration:
        return
    closing.close()  # pragma: no cover - it wanted to wait: give up


def _call_if_alive(ref: weakref.WeakMethod[Callable[[], None]]) -> None:
    method = ref()
    if method is not None:
        method()


def default_transport(config: JudgeConfig) -> Transport:
    """The judge's transport for ``config``: aiohttp, with the endpoint's headers and bounds
    (made on the loop that will use it)."""
    headers = {
        "Content-Type": "application/json",
        "Accept": "application/json",
        "User-Agent": f"otel-online-eval/{_VERSION}",
    }
    if config.api_key:
        headers["Authorization"] = f"Bearer {config.api_key}"
    headers.update(config.headers)
    return AiohttpTransport(
        config.endpoint,
        config.query,
        headers,
        concurrency=config.limits.concurrency,
        max_body=config.limits.max_response_bytes,
    )


class LLMJudge:
    """Scores a span by asking an LLM through an OpenAI-compatible chat-completions endpoint.

    Args:
        name: the scorer's name.
        config: endpoint, model, request options and limits.
        prompt: the template, bound to the values it reads.
        rng: random source for backoff jitter (tests pass a seeded one).
        transport: makes the HTTP transport of one event loop, on that loop;
            :func:`default_transport` (aiohttp) when None.
    """

    def __init__(
        self,
        name: str,
        config: JudgeConfig,
        prompt: Prompt,
        rng: random.Random | None = None,
        transport: Callable[[JudgeConfig], Transport] | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self.prompt = prompt
        self.template = prompt.template
        limits = config.limits
        self._choices = self.template.choices
        self._builder = RequestBuilder(
            config.model, config.mode, self._choices, config.temperature, config.max_tokens
        )
        self._rng = rng or random.Random()
        self._breaker = CircuitBreaker(limits.circuit_failures, limits.circuit_cooldown_s)
        self._pause = Pause()
        self._rps = (
            RateGate(limits.requests_per_second, 1.0) if limits.requests_per_second else None
        )
        self._tpm = (
            RateGate(limits.tokens_per_minute / 60.0, float(limits.tokens_per_minute))
            if limits.tokens_per_minute
            else None
        )
        self._budget = (
            HourlyBudget(limits.budget_tokens_per_hour) if limits.budget_tokens_per_hour else None
        )
        self._out_estimate = config.max_tokens or _OUTPUT_ESTIMATE
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = (
            weakref.WeakKeyDictionary()
        )
        self._secrets = tuple(
            s for s in (config.api_key, *config.headers.values()) if s and len(s) >= 4
        )
        self._transport = transport or default_transport
        self.stats = JudgeStats()
        if hasattr(os, "register_at_fork"):
            forget = weakref.WeakMethod(self._after_fork_in_child)
            os.register_at_fork(after_in_child=lambda: _call_if_alive(forget))

    annotator_kind = "LLM"

    @property
    def revision_source(self) -> dict[str, object]:
        """What decides its scores beyond the YAML: the template's text and choice scores
        (a named template's text may change between releases), the model and how it is asked."""
        template = self.template
        return {
            "prompt": template.prompt,
            "choices": dict(template.choice_scores),
            "model": self.config.model,
            "mode": self.config.mode,
            "temperature": self.config.temperature,
        }

    def __repr__(self) -> str:
        return (
            f"LLMJudge({self.name!r}, model={self.config.model!r}, "
            f"endpoint={self.config.endpoint!r}, template={self.template.name!r})"
        )

    # -- the loop's resources ----------------------------------------------------------------

    async def _state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        state = self._loops.get(loop)
        if state is None:
            state = _LoopState(self._transport(self.config), self.config.limits.concurrency)
            self._loops[loop] = state
            owner = _own(self._loops, loop, state)
            await owner.__anext__()  # registers it with the loop's async-generator hooks
            state.owner = owner
        return state

    async def aclose(self) -> None:
        """Close this loop's HTTP transport (the loop's shutdown does it too)."""
        loop = asyncio.get_running_loop()
        state = self._loops.pop(loop, None)
        if state is not None:
            await state.transport.aclose()

    def _after_fork_in_child(self) -> None:
        # The parent's loops do not run here, and their connections are the parent's: forget
        # them, touching nothing; the child's loops make their own transports.
        states = list(self._loops.values())
        self._loops.clear()
        for state in states:
            state.transport.forget()
            if state.owner is not None:
                _finish_now(state.owner)

    # -- scoring ------------------------------------------------------------------------------

    async def score(self, inp: EvalInput) -> Score:
        """Judge one input (see the module docstring for the steps).

        Raises:
            ScorerSkipped: paused, circuit open, budget spent, or no slot before the deadline.
            ScorerError: the call failed, or the answer is not a valid verdict.
        """
        deadline = time.monotonic() + self.config.call_timeout_s - _MARGIN_S
        self.stats.calls += 1
        user = self.prompt.render(inp)
        token = attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
        try:
            return await self._judge(user, deadline)
        except JudgeSkipped as exc:
            self.stats.skipped[exc.kind] = self.stats.skipped.get(exc.kind, 0) + 1
            raise
        except ScorerError:
            self.stats.errors += 1
            raise
        finally:
            detach(token)

    def _skip(self, kind: str, message: str) -> JudgeSkipped:
        return JudgeSkipped(kind, message)

    async def _judge(self, user: str, deadline: float) -> Score:
        left = self._pause.left()
        if left > 0:
            raise self._skip("paused", f"paused for {left:.0f}s more: {self._pause.reason}")
        allowed, probe, wait = self._breaker.admit()
        if not allowed:
            when = f"next try in {wait:.1f}s" if wait > 0 else "a probe call is in flight"
            raise self._skip(
                "circuit_open",
                f"circuit open after {self._breaker.failures} consecutive failures calling "
                f"{self.config.endpoint}; {when}",
            )
        try:
            estimate = (len(self._builder.system) + len(user)) // 4 + self._out_estimate
            minute = None
            if self._budget is not None:
                minute = self._budget.reserve(estimate)
                if minute is None:
                    raise self._skip(
                        "budget",
                        f"token budget spent: {self._budget.spent()} of "
                        f"{self._budget.limit} judge tokens in the last hour; room again in "
                        f"{self._budget.resets_in():.0f}s",
                    )
            state = await self._state()
            semaphore = state.semaphore
            if semaphore.locked():
                try:
                    await asyncio.wait_for(semaphore.acquire(), deadline - time.monotonic())
                except asyncio.TimeoutError:
                    self._refund(minute, estimate)
                    raise self._skip(
                        "concurrency",
                        f"no free slot within the timeout (concurrency "
                        f"{self.config.limits.concurrency})",
                    ) from None
            else:
                await semaphore.acquire()
            try:
                return await self._attempts(state, user, deadline, estimate, minute)
            except (AnswerError, JudgeSkipped):
                raise  # settled with the answer's usage / given back already
            except ScorerError:
                self._settle(estimate, minute, 0, 0)  # no answer: nothing spent, give it back
                raise
            finally:
                semaphore.release()
        finally:
            if probe:
                self._breaker.release_probe()

    def _refund(self, minute: int | None, estimate: int) -> None:
        if minute is not None and self._budget is not None:
            self._budget.correct(minute, -estimate)

    async def _wait_for_rate(
        self, first: bool, estimate: int, deadline: float, minute: int | None
    ) -> None:
        wait = 0.0
        room = deadline - time.monotonic()
        if self._rps is not None:
            got = self._rps.reserve(1.0, room)
            if got is None:
                if first:
                    self._refund(minute, estimate)
                    rate = self.config.limits.requests_per_second
                    raise self._skip(
                        "rate_limit", f"no request slot within the timeout ({rate:g}/s)"
                    )
                raise ScorerError("no time left to retry within the request rate limit")
            wait = got
        if first and self._tpm is not None:
            got = self._tpm.reserve(float(estimate), room)
            if got is None:
                if self._rps is not None:
                    self._rps.adjust(1.0)
                self._refund(minute, estimate)
                raise self._skip(
                    "rate_limit",
                    f"tokens per minute ({self.config.limits.tokens_per_minute}) would not "
                    f"allow this call (about {estimate} tokens) within the timeout",
                )
            wait = max(wait, got)
        if wait > 0:
            await asyncio.sleep(wait)

    async def _attempts(
        self, state: _LoopState, user: str, deadline: float, estimate: int, minute: int | None
    ) -> Score:
        cfg = self.config
        limits = cfg.limits
        body = self._builder.body(user)
        attempt = 0
        while True:
            await self._wait_for_rate(attempt == 0, estimate, deadline, minute)
            timeout = min(limits.timeout_s, deadline - time.monotonic())
            if timeout <= 0:
                raise ScorerError(f"no time left for attempt {attempt + 1} within the timeout")
            self.stats.requests += 1
            try:
                response = await state.transport.post(body, timeout)
            except HttpTimeout:
                error = AttemptError(
                    f"no answer from {cfg.endpoint} within {timeout:.3g}s",
                    retryable=True,
                    counts_for_circuit=True,
                )
            except HttpAnswerError as exc:
                error = AttemptError(
                    f"bad answer from {cfg.endpoint}: {self._scrub(str(exc))}",
                    retryable=True,
                    counts_for_circuit=True,
                )
            except HttpError as exc:
                error = AttemptError(
                    f"cannot reach {cfg.endpoint}: {self._scrub(str(exc))}",
                    retryable=True,
                    counts_for_circuit=True,
                )
            else:
                status = response.status
                if 200 <= status < 300:
                    self._breaker.success()
                    return self._verdict(response.body, estimate, minute)
                error = classify_status(
                    status,
                    self._scrub(server_message(response.body)),
                    cfg.endpoint,
                    parse_retry_after(response.headers) if status in (429, 503) else None,
                )
            if error.auth:
                self._pause_for(error)
                raise error
            if error.counts_for_circuit and self._breaker.failure():
                self.stats.circuit_opened += 1
                logger.warning(
                    "Judge scorer %r: circuit open for %gs after %d consecutive failures "
                    "calling %s (last: %s).",
                    self.name,
                    limits.circuit_cooldown_s,
                    self._breaker.failures,
                    cfg.endpoint,
                    error,
                )
                raise ScorerError(
                    f"{error}; the circuit is now open for {limits.circuit_cooldown_s:g}s "
                    f"after {self._breaker.failures} consecutive failures"
                )
            if not error.retryable or attempt >= limits.retries:
                tries = f" (after {attempt + 1} attempts)" if attempt else ""
                raise ScorerError(f"{error}{tries}")
            if error.retry_after is not None:
                delay = error.retry_after
                if self._rps is not None:
                    self._rps.hold(delay)
            else:
                delay = backoff_delay(attempt, limits.backoff_s, limits.max_backoff_s, self._rng)
            left = deadline - time.monotonic()
            if delay >= left:
                raise ScorerError(
                    f"{error}; no time left for a retry (it would wait {delay:.3g}s, "
                    f"{max(0.0, left):.3g}s left of the scorer's timeout_s)"
                )
            await asyncio.sleep(delay)
            attempt += 1
            self.stats.retries += 1

    def _verdict(self, content: bytes, estimate: int, minute: int | None) -> Score:
        try:
            verdict = parse_answer(content, self.config.mode, self._choices)
        except AnswerError:
            self._settle(estimate, minute, *usage_of(content))  # spent, even if unusable
            raise
        self._settle(estimate, minute, verdict.input_tokens, verdict.output_tokens)
        meta: dict[str, Any] = {"online_eval.judge.request.model": self.config.model}
        if verdict.response_model:
            meta["online_eval.judge.response.model"] = verdict.response_model
        if verdict.input_tokens is not None:
            meta["online_eval.judge.usage.input_tokens"] = verdict.input_tokens
        if verdict.output_tokens is not None:
            meta["online_eval.judge.usage.output_tokens"] = verdict.output_tokens
        meta["template"] = self.template.name
        self.stats.scores += 1
        return Score(
            self.template.choice_scores[verdict.choice], verdict.choice, verdict.reasons, meta
        )

    def _settle(
        self, estimate: int, minute: int | None, input_tokens: int | None, output_tokens: int | None
    ) -> None:
        """Correct the token estimate with the reported usage."""
        if input_tokens is None and output_tokens is None:
            return  # no usage reported: the estimate stands
        actual = (input_tokens or 0) + (output_tokens or 0)
        self.stats.input_tokens += input_tokens or 0
        self.stats.output_tokens += output_tokens or 0
        if self._tpm is not None:
            self._tpm.adjust(float(estimate - actual))
        if minute is not None and self._budget is not None:
            self._budget.correct(minute, actual - estimate)

    def _pause_for(self, error: AttemptError) -> None:
        seconds = self.config.limits.auth_pause_s
        hint = {
            401: "check api_key",
            403: "check the key's permissions",
            404: "check base_url and model",
        }.get(error.status or 0, "check the configuration")
        reason = f"HTTP {error.status} from {self.config.endpoint} ({hint})"
        if self._pause.start(seconds, reason):
            logger.error(
                "Judge scorer %r: %s answered HTTP %s; pausing the scorer for %gs (%s). "
                "Its spans are skipped meanwhile.",
                self.name,
                self.config.endpoint,
                error.status,
                seconds,
                hint,
            )

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text
