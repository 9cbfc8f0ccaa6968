"""Log records waiting for their spans: the join of OpenTelemetry events (log records with a
span id) to the spans they belong to.

The GenAI instrumentations in event mode write prompts and answers as log records while the
model call's span is open, so a record usually arrives before its span ends; one that arrives
first waits here, up to ``ttl_s``, for the span to take it. Bounded: past ``max_records`` the
oldest records go first, counted. Records of traces that no rule may sample are not held,
only counted (``not_sampled``).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

from otel_online_eval.spanview import EventView

__all__ = ["RECORD_WAIT_S", "JoinStore"]

RECORD_WAIT_S = 30.0
"""How long a record waits for its span at least (``extract.join_s`` when it is longer)."""

_Key = tuple[int, int]


class JoinStore:
    """Records by (trace id, span id), oldest first; safe to offer from any thread.

    Args:
        ttl_s: how long a record waits for its span.
        max_records: the most records held; past it the oldest are dropped.
        clock: monotonic seconds (a parameter for tests).
    """

    def __init__(
        self,
        ttl_s: float = 2.0,
        max_records: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl_s
        self._max = max_records
        self._clock = clock
        self._lock = threading.Lock()
        self._held: OrderedDict[_Key, tuple[float, list[EventView]]] = OrderedDict()
        self._size = 0
        self.joined = 0
        """Records taken by their span."""
        self.expired = 0
        """Records whose span never came within ``ttl_s``."""
        self.dropped = 0
        """Records pushed out by ``max_records``."""
        self.joined_spans = 0
        """Spans that took at least one record."""
        self.not_sampled = 0
        """Records not held: no rule may sample their trace."""

    def offer(self, event: EventView, trace_id: int, span_id: int) -> None:
        """Hold ``event`` for span ``span_id`` of ``trace_id``."""
        self.offer_many(((event, trace_id, span_id),))

    def offer_many(
        self, records: Iterable[tuple[EventView, int, int]], not_sampled: int = 0
    ) -> None:
        """Hold each (event, trace id, span id), in order; count ``not_sampled`` records that
        the caller did not offer."""
        now = self._clock()
        held = self._held
        with self._lock:
            self.not_sampled += not_sampled
            self._expire(now)
            for event, trace_id, span_id in records:
                key = (trace_id, span_id)
                entry = held.get(key)
                if entry is None:
                    held[key] = (now + self._ttl, [event])
                else:
                    entry[1].append(event)
                self._size += 1
            while self._size > self._max and self._held:
                _, (_, events) = self._held.popitem(last=False)
                self._size -= len(events)
                self.dropped += len(events)

    @property
    def held(self) -> int:
        """Records held now."""
        return self._size

    def holds(self, trace_id: int, span_id: int) -> bool:
        """True when records wait for the span."""
        return (trace_id, span_id) in self._held

    def take(self, trace_id: int, span_id: int) -> tuple[EventView, ...]:
        """The records held for the span, in arrival order, removed from the store."""
        if not self._held:  # the common case, without the lock: nothing waits
            return ()
        with self._lock:
            entry = self._held.pop((trace_id, span_id), None)
            self._expire(self._clock())
            if entry is None:
                return ()
            events = entry[1]
            self._size -= len(events)
            self.joined += len(events)
            self.joined_spans += 1
            return tuple(events)

    def _expire(self, now: float) -> None:
        held = self._held
        while held:
            key, (deadline, events) = next(iter(held.items()))
            if deadline > now:
                return
            del held[key]
            self._size -= len(events)
            self.expired += len(events)
