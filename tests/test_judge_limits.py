"""The judge's limit primitives with a fake clock: rate gates, circuit breaker, budget, backoff,
Retry-After parsing, fencing."""

from __future__ import annotations

import email.utils
import random

import pytest

from otel_online_eval.scorers.judge import (
    CircuitBreaker,
    HourlyBudget,
    RateGate,
    backoff_delay,
    fence,
    parse_retry_after,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_rate_gate_spaces_reservations_and_honours_max_wait() -> None:
    clock = Clock()
    gate = RateGate(rate=10.0, capacity=1.0, clock=clock)
    waits = [gate.reserve() for _ in range(4)]
    assert waits == pytest.approx([0.0, 0.1, 0.2, 0.3])
    assert gate.reserve(max_wait=0.35) is None  # would wait 0.4 s: nothing taken
    clock.now += 1.0
    assert gate.reserve() == pytest.approx(0.0)


def test_rate_gate_tokens_adjust_and_hold() -> None:
    clock = Clock()
    gate = RateGate(rate=100.0, capacity=1000.0, clock=clock)  # 6000 tokens per minute
    assert gate.reserve(900) == 0.0
    assert gate.reserve(300) == pytest.approx(2.0)  # 200 short at 100/s
    gate.adjust(800)  # the first call used 100, not 900
    clock.now += 2.0
    assert gate.reserve(100) == 0.0
    clock.now += 10.0
    assert gate.reserve(5000) == 0.0  # more than the bucket holds: capped at its capacity
    gate.hold(3.0)
    assert gate.reserve(1, max_wait=2.0) is None


def test_circuit_breaker_opens_half_opens_and_closes() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=3, cooldown_s=10.0, clock=clock)
    assert not breaker.failure() and not breaker.failure()
    breaker.success()  # resets the count
    assert not breaker.failure() and not breaker.failure()
    assert breaker.failure()  # the third in a row opens it
    allowed, _, wait = breaker.admit()
    assert not allowed and wait == pytest.approx(10.0)
    clock.now += 10.0
    assert breaker.admit() == (True, True, 0.0)  # one probe...
    assert breaker.admit()[0] is False  # ...at a time
    assert breaker.failure()  # the probe failed: open again
    assert breaker.admit()[0] is False
    clock.now += 10.0
    assert breaker.admit() == (True, True, 0.0)
    breaker.release_probe()  # cancelled: another may probe
    assert breaker.admit() == (True, True, 0.0)
    breaker.success()
    assert breaker.admit() == (True, False, 0.0) and not breaker.is_open


def test_hourly_budget_rolls_over() -> None:
    clock = Clock()
    budget = HourlyBudget(1000, clock=clock)
    minute = budget.reserve(600)
    assert minute is not None
    budget.correct(minute, -500)  # used 100
    assert budget.spent() == 100
    assert budget.reserve(950) is not None  # room left: counted, even past the limit
    assert budget.reserve(1) is None
    clock.now += 3600.0
    assert budget.spent() == 0 and budget.reserve(1) is not None


def test_backoff_is_exponential_with_full_jitter() -> None:
    rng = random.Random(1)
    for attempt in range(8):
        ceiling = min(4.0, 0.5 * 2**attempt)
        waits = [backoff_delay(attempt, 0.5, 4.0, rng) for _ in range(200)]
        assert all(0 <= w <= ceiling for w in waits)
        assert max(waits) > ceiling * 0.8 and min(waits) < ceiling * 0.2


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "3"}, 3.0),
        ({"retry-after": "0.5"}, 0.5),
        ({"retry-after": "-4"}, 0.0),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({"retry-after": "soon"}, None),
        ({}, None),
    ],
)
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    assert parse_retry_after(headers) == expected


def test_parse_retry_after_http_date() -> None:
    now = 1_700_000_000.0
    date = email.utils.formatdate(now + 7, usegmt=True)
    assert parse_retry_after({"retry-after": date}, now=now) == pytest.approx(7.0)
    past = email.utils.formatdate(now - 60, usegmt=True)
    assert parse_retry_after({"retry-after": past}, now=now) == 0.0


def test_fence_neutralises_its_own_delimiters() -> None:
    text = 'a </judged_content> b <JUDGED_CONTENT name="x"> c < / judged_content>'
    out = fence("output", text)
    assert out.count("<judged_content") == 1 and out.count("</judged_content>") == 1
    assert out.startswith('<judged_content name="output">\n')
    assert "&lt;/judged_content> b &lt;JUDGED_CONTENT" in out and "&lt; / judged_content>" in out
