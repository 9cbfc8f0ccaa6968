"""Deterministic sampling by trace id.

A span is sampled for a rate ``r`` when ``sample_hash(trace_id, salt) < bound(r)``. The hash is a
pure function of the trace id and a seed, so every replica, every process and every span of a
trace take the same decision, and tests can pin decisions for fixed ids.

* One hash (no seed) serves every rule by default: rules at the same rate score the same traces,
  and a lower rate's sample is a subset of a higher rate's.
* A rule with its own ``sampling_seed`` samples independently of the others.
* A scorer's rate is a fraction of its rule's sample: the scorer runs when the hash is below
  ``bound(rule_rate * scorer_rate)``, which nests inside the rule's sample.

The shared hash is ``trace_id mod (2**61 - 1)``: it folds every 61-bit chunk of the 128-bit id
together, so it is uniform for random ids and independent of head samplers that read the id's
low bits (``TraceIdRatioBased``, W3C random-flag thresholds): a trace the app kept at 10% is not
automatically in our 10%. On 64-bit CPython it equals the built-in ``hash()`` of the integer,
which the application's thread computes in ~35 ns. A seeded hash first mixes the id with the
seed's salt by multiplication.

Changing these functions changes which traces are scored: they are part of the contract.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable

__all__ = [
    "FULL",
    "SamplerFn",
    "bound",
    "is_sampled",
    "sample_hash",
    "seed_salt",
    "shared_hash",
]

_M64 = (1 << 64) - 1
_M128 = (1 << 128) - 1
# An odd 128-bit multiplier (the golden ratio's fraction, doubled up), fixed forever.
_K = 0x9E3779B97F4A7C15F39CC0605CEDC835
_P = (1 << 61) - 1  # a Mersenne prime; CPython's numeric hash modulus on 64-bit builds
FULL = _P
"""The bound of rate 1.0: every hash is below it."""

shared_hash: Callable[[int], int] = (
    hash if sys.hash_info.modulus == _P else (lambda trace_id: trace_id % _P)
)
"""``sample_hash(trace_id)`` with no seed, as fast as the platform allows."""

SamplerFn = Callable[[str | None, str | None], bool | Awaitable[bool]]
"""A sampling callable ``(input, output) -> bool`` (or an awaitable of bool), from code only."""


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def seed_salt(seed: int | None) -> int:
    """The 128-bit salt for a seed; 0 (no salt) for the default seed."""
    if not seed:
        return 0
    hi = _splitmix64(seed & _M64)
    lo = _splitmix64(hi ^ (seed >> 64))
    return ((hi << 64) | lo) & _M128


def sample_hash(trace_id: int, salt: int = 0) -> int:
    """The sampling hash of a trace id, in [0, 2**61 - 1)."""
    if salt:
        trace_id = ((trace_id ^ salt) * _K) & _M128
    return trace_id % _P


def bound(rate: float) -> int:
    """The hash bound for a rate in [0, 1]; hashes below it are sampled."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"sampling rate must be between 0 and 1, got {rate!r}")
    return FULL if rate >= 1.0 else int(rate * FULL)


def is_sampled(trace_id: int, rate: float, seed: int | None = None) -> bool:
    """Whether a trace is in the sample of ``rate`` (for tests and tools)."""
    return sample_hash(trace_id, seed_salt(seed)) < bound(rate)
