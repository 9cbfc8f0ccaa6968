"""What keeps a judge cheap and honest: rate gates, a circuit breaker, a pause, a budget, backoff.

None of these objects touches asyncio: they are plain state under a small lock, so one scorer
used by several engines (several event loops) shares its limits. The scorer turns their answers
into waits (``asyncio.sleep``) or skips.

* :class:`RateGate`: a token bucket that hands out *reservations*: ``reserve(n)`` says how long
  to wait for ``n`` tokens and takes them, so waiters are served in order and the measured rate
  is the configured one. Requests per second use a bucket of one (requests evenly spaced);
  tokens per minute a bucket of a minute's tokens refilled continuously.
* :class:`CircuitBreaker`: ``failures`` consecutive failed attempts open it for ``cooldown_s``;
  then one probe call is let through (half-open): success closes it, failure opens it again.
* :class:`Pause`: set after 401 / 403 / 404; the scorer skips until it ends.
* :class:`HourlyBudget`: judge tokens spent in the last hour, by minute.
* :func:`backoff_delay` (exponential, full jitter) and :func:`parse_retry_after`.
"""

from __future__ import annotations

import email.utils
import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping

__all__ = [
    "CircuitBreaker",
    "HourlyBudget",
    "Pause",
    "RateGate",
    "backoff_delay",
    "parse_retry_after",
]

Clock = Callable[[], float]


class RateGate:
    """A token bucket with reservations.

    Args:
        rate: tokens added per second.
        capacity: the most tokens the bucket holds (the largest burst).
        clock: monotonic seconds.
    """

    def __init__(self, rate: float, capacity: float, clock: Clock = time.monotonic) -> None:
        if rate <= 0 or capacity <= 0:
            raise ValueError("rate and capacity must be positive")
        self.rate = rate
        self.capacity = capacity
        self._clock = clock
        self._tokens = capacity
        self._stamp = clock()
        self._hold_until = 0.0
        self._lock = threading.Lock()

    def _refill(self, now: float) -> None:
        if now > self._stamp:
            self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now

    def reserve(self, n: float = 1.0, max_wait: float = math.inf) -> float | None:
        """Take ``n`` tokens (at most ``capacity``); return how long to wait before using them.

        Returns:
            The wait in seconds, or None (nothing taken) when it would exceed ``max_wait``.
        """
        n = min(n, self.capacity)
        with self._lock:
            now = self._clock()
            self._refill(now)
            hold = max(0.0, self._hold_until - now)
            # Tokens may go negative: later callers wait behind earlier reservations.
            deficit = n - self._tokens
            wait = max(hold, deficit / self.rate if deficit > 0 else 0.0)
            if wait > max_wait:
                return None
            self._tokens -= n
            return wait

    def adjust(self, n: float) -> None:
        """Give back ``n`` tokens (or take more, with ``n`` < 0) after the fact."""
        with self._lock:
            self._refill(self._clock())
            self._tokens = min(self.capacity, self._tokens + n)

    def hold(self, seconds: float) -> None:
        """Hand out nothing for ``seconds`` (the endpoint said Retry-After)."""
        with self._lock:
            self._hold_until = max(self._hold_until, self._clock() + seconds)


class CircuitBreaker:
    """Stops calling an endpoint that keeps failing.

    Args:
        failures: consecutive failed attempts that open the circuit.
        cooldown_s: how long it stays open before one probe is let through.
        clock: monotonic seconds.
    """

    CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"

    def __init__(self, failures: int, cooldown_s: float, clock: Clock = time.monotonic) -> None:
        self.failures = failures
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._lock = threading.Lock()
        self.state = self.CLOSED
        self.consecutive = 0
        self.opened_at = 0.0
        self._probing = False
        self.times_opened = 0

    def admit(self) -> tuple[bool, bool, float]:
        """May a call go ahead?

        Returns:
            (allowed, is_probe, seconds until the next probe when refused).
        """
        with self._lock:
            if self.state == self.CLOSED:
                return True, False, 0.0
            left = self.opened_at + self.cooldown_s - self._clock()
            if self.state == self.OPEN and left > 0:
                return False, False, left
            if self._probing:
                return False, False, 0.0
            self.state = self.HALF_OPEN
            self._probing = True
            return True, True, 0.0

    def release_probe(self) -> None:
        """A probe call ended without an answer either way (cancelled): allow another."""
        with self._lock:
            self._probing = False

    def success(self) -> None:
        with self._lock:
            self.state = self.CLOSED
            self.consecutive = 0
            self._probing = False

    def failure(self) -> bool:
        """Record a failed attempt; True when this one opened (or re-opened) the circuit."""
        with self._lock:
            self.consecutive += 1
            self._probing = False
            if self.state == self.HALF_OPEN or (
                self.state == self.CLOSED and self.consecutive >= self.failures
            ):
                self.state = self.OPEN
                self.opened_at = self._clock()
                self.times_opened += 1
                return True
            return False

    @property
    def is_open(self) -> bool:
        return self.state != self.CLOSED


class Pause:
    """A scorer's self-imposed pause (after the endpoint refused its credentials)."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self.until = 0.0
        self.reason = ""

    def left(self) -> float:
        return max(0.0, self.until - self._clock())

    def start(self, seconds: float, reason: str) -> bool:
        """Pause for ``seconds``; True when it was not already paused (say so loudly once)."""
        fresh = self.left() <= 0
        self.until = max(self.until, self._clock() + seconds)
        self.reason = reason
        return fresh


class HourlyBudget:
    """Judge tokens spent over the last hour, kept per minute.

    Args:
        limit: the most tokens per rolling hour.
        clock: monotonic seconds.
    """

    def __init__(self, limit: int, clock: Clock = time.monotonic) -> None:
        self.limit = limit
        self._clock = clock
        self._lock = threading.Lock()
        self._minutes: deque[list[int]] = deque()  # [minute, tokens], oldest first
        self._spent = 0

    def _prune(self, minute: int) -> None:
        while self._minutes and self._minutes[0][0] <= minute - 60:
            self._spent -= self._minutes.popleft()[1]

    def spent(self) -> int:
        with self._lock:
            self._prune(int(self._clock() // 60))
            return self._spent

    def reserve(self, tokens: int) -> int | None:
        """Count ``tokens`` now if the budget has room; the minute they were counted in, or None
        when the budget is spent."""
        with self._lock:
            minute = int(self._clock() // 60)
            self._prune(minute)
            if self._spent >= self.limit:
                return None
            if self._minutes and self._minutes[-1][0] == minute:
                self._minutes[-1][1] += tokens
            else:
                self._minutes.append([minute, tokens])
            self._spent += tokens
            return minute

    def correct(self, minute: int, delta: int) -> None:
        """Change what was counted in ``minute`` by ``delta`` (actual usage - estimate)."""
        with self._lock:
            for entry in self._minutes:
                if entry[0] == minute:
                    delta = max(delta, -entry[1])
                    entry[1] += delta
                    self._spent += delta
                    return

    def resets_in(self) -> float:
        """Seconds until the oldest counted minute leaves the window."""
        with self._lock:
            if not self._minutes:
                return 0.0
            return max(0.0, (self._minutes[0][0] + 60) * 60 - self._clock())


def backoff_delay(attempt: int, base_s: float, max_s: float, rng: random.Random) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(max_s, base_s * 2**attempt)]."""
    return rng.uniform(0.0, min(max_s, base_s * (2.0 ** min(attempt, 30))))


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date).

    Args:
        headers: response headers (case-insensitive mapping, or lower-case keys).
        now: the current wall-clock time (``time.time()``), for HTTP dates.

    Returns:
        The delay (never negative), or None when there is no usable header.
    """
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            value = float(ms) / 1000.0
            if math.isfinite(value):
                return max(0.0, value)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    try:
        value = float(raw)
        return max(0.0, value) if math.isfinite(value) else None
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)
