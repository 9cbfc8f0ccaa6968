"""Deterministic trace-id sampling: pinned decisions, rates, nesting, independence."""

from __future__ import annotations

import random

import pytest
from opentelemetry.sdk.trace.sampling import Decision, TraceIdRatioBased

from otel_online_eval.sampling import (
    FULL,
    bound,
    is_sampled,
    sample_hash,
    seed_salt,
    shared_hash,
)

_RNG = random.Random(1234)
IDS = [_RNG.getrandbits(128) for _ in range(20_000)]


@pytest.mark.parametrize(
    ("trace_id", "expected_hash"),
    [
        # Changing these values changes which traces every deployment scores: a breaking change.
        (0x0AF7651916CD43DD8448EB211C80319C, 2018760427955703946),
        (0x4BF92F3577B34DA6A3CE929D0E0E4736, 258970485367813246),
        (0x00000000000000000000000000000001, 1),
        (0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF, 63),
    ],
)
def test_hash_is_pinned(trace_id: int, expected_hash: int) -> None:
    assert sample_hash(trace_id) == expected_hash
    assert shared_hash(trace_id) == expected_hash  # the hot path's fast form agrees


def test_pinned_decisions_and_seeds() -> None:
    tid = 0x4BF92F3577B34DA6A3CE929D0E0E4736  # hash ~0.1123 shared, ~0.6601 with seed 42
    assert is_sampled(tid, 0.113) and not is_sampled(tid, 0.112)
    assert is_sampled(tid, 0.661, seed=42) and not is_sampled(tid, 0.660, seed=42)
    assert seed_salt(0) == 0 and seed_salt(None) == 0 and seed_salt(42) != seed_salt(43)


@pytest.mark.parametrize("rate", [0.01, 0.1, 0.5, 0.9])
def test_rate_is_respected(rate: float) -> None:
    kept = sum(is_sampled(t, rate) for t in IDS) / len(IDS)
    assert abs(kept - rate) < 4 * (rate * (1 - rate) / len(IDS)) ** 0.5 + 1e-3


def test_edges() -> None:
    assert bound(0.0) == 0 and bound(1.0) == FULL
    assert not any(is_sampled(t, 0.0) for t in IDS[:1000])
    assert all(is_sampled(t, 1.0) for t in IDS[:1000])
    with pytest.raises(ValueError, match="between 0 and 1"):
        bound(1.5)


def test_lower_rates_nest_inside_higher_ones() -> None:
    low = {t for t in IDS if is_sampled(t, 0.1)}
    high = {t for t in IDS if is_sampled(t, 0.3)}
    assert low and low <= high


def test_a_seed_samples_independently() -> None:
    a = {t for t in IDS if is_sampled(t, 0.5)}
    b = {t for t in IDS if is_sampled(t, 0.5, seed=7)}
    overlap = len(a & b) / len(IDS)
    assert abs(overlap - 0.25) < 0.02  # independent: 0.5 * 0.5


def test_independent_of_the_sdk_head_sampler() -> None:
    # Traces the app kept with TraceIdRatioBased(0.1) must not all fall in our 10% sample.
    head = TraceIdRatioBased(0.1)
    kept = [
        t for t in IDS if head.should_sample(None, t, "x").decision is Decision.RECORD_AND_SAMPLE
    ]
    ours = sum(is_sampled(t, 0.1) for t in kept) / len(kept)
    assert 0.06 < ours < 0.14
