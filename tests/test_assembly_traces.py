"""Trace assembly: completion read from the structure, the fallback timers, late spans, bounds."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otel_online_eval.assembly import (
    REASONS,
    AssemblyBounds,
    Completion,
    TraceAssembler,
    TraceUnit,
)


@dataclass(frozen=True)
class Span:
    trace_id: int
    span_id: int
    parent_span_id: int | None
    name: str = "step"
    parent_is_remote: bool = False


T = 0xABC


def tree(trace_id: int = T) -> list[Span]:
    """root(1) -> agent(2) -> chat(3), tool(4) -> http(5); in the order they end."""
    return [
        Span(trace_id, 3, 2, "chat"),
        Span(trace_id, 5, 4, "http"),
        Span(trace_id, 4, 2, "tool"),
        Span(trace_id, 2, 1, "agent"),
        Span(trace_id, 1, None, "root"),
    ]


def feed(asm: TraceAssembler[Span], spans: list[Span], at: float, step: float = 0.0) -> None:
    for i, span in enumerate(spans):
        assert asm.add(span, 100, at + i * step) == []


def ids(unit: TraceUnit[Span]) -> list[int]:
    return sorted(s.span_id for s in unit.spans)


def test_a_trace_is_complete_settle_s_after_its_root_ends_with_every_parent_seen() -> None:
    asm: TraceAssembler[Span] = TraceAssembler(Completion(settle_s=2))
    feed(asm, tree(), at=10.0, step=0.1)  # the root arrives at 10.4
    assert asm.next_due() == pytest.approx(12.4)
    assert asm.due(12.39) == []
    (unit,) = asm.due(12.4)
    assert (unit.reason, unit.complete, unit.revision) == ("complete", True, 1)
    assert ids(unit) == [1, 2, 3, 4, 5]
    assert len(asm) == 0 and asm.bytes == 0
    assert asm.next_due() is None


def test_a_dangling_parent_holds_the_trace_until_the_parent_arrives() -> None:
    asm: TraceAssembler[Span] = TraceAssembler(Completion(settle_s=1, idle_s=30))
    spans = tree()
    tool = spans.pop(2)  # the tool span (parent of http) arrives last, after the root
    feed(asm, spans, at=0.0)
    assert asm.due(5.0) == []  # root ended, but http's parent (tool) was never seen
    asm.add(tool, 100, 6.0)
    assert asm.due(6.9) == []
    (unit,) = asm.due(7.0)
    assert unit.reason == "complete" and ids(unit) == [1, 2, 3, 4, 5]


def test_a_new_span_restarts_the_settle_time() -> None:
    asm: TraceAssembler[Span] = TraceAssembler(Completion(settle_s=2))
    feed(asm, tree(), at=0.0)
    asm.add(Span(T, 6, 1, "after-root"), 100, 1.5)
    assert asm.due(2.0) == []
    (unit,) = asm.due(3.5)
    assert len(unit.spans) == 6


def test_a_span_whose_parent_is_missing_unsettles_a_trace() -> None:
    asm: TraceAssembler[Span] = TraceAssembler(Completion(settle_s=2, idle_s=10))
    feed(asm, tree(), at=0.0)
    asm.add(Span(T, 7, 99, "orphan"), 100, 1.0)  # parent 99 never arrives
    assert asm.due(5.0) == []
    (unit,) = asm.due(11.0)
    assert (unit.reason, unit.complete) == ("idle", False)


def test_a_trace_whose_root_never_ends_is_evaluated_when_idle() -> None:
    asm: TraceAssembler[Span] = TraceAssembler(Completion(settle_s=2, idle_s=30))
    feed(asm, tree()[:-1], at=0.0, step=1.0)  # everything but the root; last at 3.0
    assert asm.next_due() == pytest.approx(33.0)
    assert asm.due(32.9) == []
    (unit,) = asm.due(33.0)
    assert (unit.reason, unit.complete) == ("idle", False)
    assert ids(unit) == [2, 3, 4, 5]


def test_a_trace_that_never_goes_quiet_is_evaluated_at_max_wait() -> None:
    asm: TraceAssembler[Span] = TraceAssembler(Completion(settle_s=1, idle_s=10, max_wait_s=60))
    at, span_id = 0.0, 10
    while at < 59:
        asm.add(Span(T, span_id, 1), 100, at)  # the root (1) never arrives
        assert asm.due(at) == []
        at += 5.0
        span_id += 1
    (unit,) = asm.due(60.0)
    assert (unit.reason, unit.complete, len(unit.spans)) == ("max_wait", False, 12)


def test_end_on_completes_a_trace_without_its_root() -> None:
    asm: TraceAssembler[Span] = TraceAssembler(
        Completion(settle_s=1, end_on=frozenset({"final-answer"}))
    )
    asm.add(Span(T, 3, 2, "chat"), 100, 0.0)
    assert asm.due(5.0) == []
    asm.add(Span(T, 4, 2, "final-answer"), 100, 5.0)
    (unit,) = asm.due(6.0)
    assert (unit.reason, unit.complete) == ("end_on", True)


def test_local_roots_makes_a_span_with_a_remote_parent_the_root() -> None:
    remote_root = [Span(T, 2, 9, "handler", parent_is_remote=True), Span(T, 3, 2, "chat")]
    local: TraceAssembler[Span] = TraceAssembler(Completion(settle_s=1, local_roots=True))
    feed(local, remote_root, at=0.0)
    (unit,) = local.due(1.0)
    assert unit.reason == "complete"
    whole: TraceAssembler[Span] = TraceAssembler(Completion(settle_s=1, idle_s=5))
    feed(whole, remote_root, at=0.0)
    assert whole.due(1.0) == []  # in the sidecar the upstream span may still come
    assert [u.reason for u in whole.due(5.0)] == ["idle"]


def test_late_spans_are_counted_and_ignored_by_default() -> None:
    asm: TraceAssembler[Span] = TraceAssembler(Completion(settle_s=1, idle_s=5))
    feed(asm, tree(), at=0.0)
    assert len(asm.due(1.0)) == 1
    asm.add(Span(T, 8, 1, "late"), 100, 2.0)
    assert asm.counts.late == 1
    assert len(asm) == 0 and asm.bytes == 0
    assert asm.due(100.0) == []  # never a second, partial evaluation


def test_late_reevaluate_evaluates_the_whole_trace_again_as_the_next_revision() -> None:
    asm: TraceAssembler[Span] = TraceAssembler(
        Completion(settle_s=1, idle_s=5, max_wait_s=10), late="reevaluate"
    )
    feed(asm, tree(), at=0.0)
    (first,) = asm.due(1.0)
    assert first.revision == 1
    asm.add(Span(T, 8, 1, "late"), 100, 20.0)  # past the first max_wait: its timers start again
    assert asm.counts.late == 1 and len(asm) == 1
    assert asm.due(20.9) == []
    (second,) = asm.due(21.0)
    assert (second.revision, second.reason) == (2, "complete")
    assert ids(second) == [1, 2, 3, 4, 5, 8]
    asm.add(Span(T, 9, 1, "later"), 100, 22.0)
    (third,) = asm.due(23.0)
    assert third.revision == 3 and len(third.spans) == 7


def test_duplicates_are_kept_once() -> None:
    asm: TraceAssembler[Span] = TraceAssembler(Completion(settle_s=1))
    feed(asm, tree() + tree()[:2], at=0.0)
    (unit,) = asm.due(1.0)
    assert len(unit.spans) == 5 and asm.counts.duplicates == 2


def test_spans_over_max_spans_per_trace_are_dropped_and_counted_but_still_count_as_seen() -> None:
    asm: TraceAssembler[Span] = TraceAssembler(
        Completion(settle_s=1), AssemblyBounds(max_spans_per_trace=3)
    )
    feed(asm, tree(), at=0.0)
    (unit,) = asm.due(1.0)
    # The root was over the limit, yet its end still completes the trace.
    assert (unit.reason, len(unit.spans), unit.dropped_spans) == ("complete", 3, 2)
    assert asm.counts.dropped_spans == 2


def test_max_traces_evaluates_the_oldest_early() -> None:
    asm: TraceAssembler[Span] = TraceAssembler(Completion(), AssemblyBounds(max_traces=2))
    asm.add(Span(1, 1, 9), 100, 0.0)
    asm.add(Span(2, 1, 9), 100, 1.0)
    (evicted,) = asm.add(Span(3, 1, 9), 100, 2.0)
    assert (evicted.trace_id, evicted.reason, evicted.complete) == (1, "evicted", False)
    assert len(asm) == 2
    asm.add(Span(1, 2, 9), 100, 3.0)  # trace 1 was evaluated: late, never a new half
    assert asm.counts.late == 1 and len(asm) == 2


def test_on_full_drop_drops_the_oldest_and_counts_it() -> None:
    asm: TraceAssembler[Span] = TraceAssembler(
        Completion(), AssemblyBounds(max_traces=1, on_full="drop")
    )
    asm.add(Span(1, 1, 9), 100, 0.0)
    assert asm.add(Span(2, 1, 9), 100, 1.0) == []
    assert asm.counts.dropped_traces == 1 and asm.counts.released == {}
    asm.add(Span(1, 2, 9), 100, 2.0)
    assert asm.counts.late == 1


def test_max_bytes_evicts_the_oldest_traces_and_forgets_kept_ones_first() -> None:
    asm: TraceAssembler[Span] = TraceAssembler(
        Completion(settle_s=1), AssemblyBounds(max_bytes=1000), late="reevaluate"
    )
    feed(asm, tree(), at=0.0)  # 500 bytes
    assert len(asm.due(1.0)) == 1  # kept for re-evaluation: still 500 bytes held
    for i in range(4):  # 400 bytes in flight, 900 in all
        assert asm.add(Span(100 + i, 1, 9), 100, 2.0) == []
    assert asm.add(Span(200, 1, 9), 200, 3.0) == []  # 1100: the kept trace is forgotten
    assert asm.bytes == 600
    asm.add(Span(T, 8, 1), 100, 4.0)  # still recognised as evaluated, but its spans are gone
    assert asm.counts.late == 1 and len(asm) == 5
    evicted = asm.add(Span(300, 1, 9), 500, 5.0)
    assert [u.trace_id for u in evicted] == [100]
    assert asm.bytes <= 1000


def test_drain_hands_on_everything_in_flight_as_shutdown() -> None:
    asm: TraceAssembler[Span] = TraceAssembler(Completion(settle_s=1))
    feed(asm, tree(1), at=0.0)
    feed(asm, tree(2)[:2], at=0.0)
    units = asm.drain()
    assert sorted((u.trace_id, u.reason, len(u.spans)) for u in units) == [
        (1, "shutdown", 5),
        (2, "shutdown", 2),
    ]
    assert asm.counts.released == {"shutdown": 2}
    assert len(asm) == 0 and asm.next_due() is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"settle_s": -1}, "settle_s must be a finite number at least 0"),
        ({"idle_s": 0}, "idle_s must be a finite number more than 0"),
        ({"max_wait_s": float("nan")}, "max_wait_s must be a finite number"),
        ({"settle_s": 40, "idle_s": 30}, "settle_s (40) must not exceed idle_s (30)"),
    ],
)
def test_completion_settings_are_checked(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Completion(**kwargs)  # type: ignore[arg-type]


def test_bounds_and_late_are_checked() -> None:
    with pytest.raises(ValueError, match="max_traces must be a whole number of at least 1"):
        AssemblyBounds(max_traces=0)
    with pytest.raises(
        ValueError, match="max_bytes must be a whole number of at least 1, got True"
    ):
        AssemblyBounds(max_bytes=True)
    with pytest.raises(ValueError, match="on_full must be 'evaluate' or 'drop'"):
        AssemblyBounds(on_full="keep")
    with pytest.raises(ValueError, match="late must be 'ignore' or 'reevaluate'"):
        TraceAssembler(late="twice")


def _random_tree(rng: random.Random, trace_id: int, size: int) -> list[Span]:
    spans = [Span(trace_id, 1, None, "root")]
    for sid in range(2, size + 1):
        spans.append(Span(trace_id, sid, rng.randrange(1, sid)))
    return spans


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 40), st.randoms(use_true_random=False))
def test_any_arrival_order_gives_one_complete_evaluation(size: int, rng: random.Random) -> None:
    spans = _random_tree(rng, T, size)
    rng.shuffle(spans)
    asm: TraceAssembler[Span] = TraceAssembler(Completion(settle_s=2, idle_s=30))
    at, units = 0.0, []
    for span in spans:
        asm.add(span, 10, at)
        units += asm.due(at)
        at += rng.uniform(0, 1.9)  # always within settle_s of the previous span
    assert units == []
    units = asm.due(at + 2)
    assert len(units) == 1 and units[0].reason == "complete"
    assert ids(units[0]) == list(range(1, size + 1))


_EVENTS = st.lists(st.tuples(st.integers(0, 7), st.integers(1, 6), st.integers(0, 6)), max_size=200)


def _run(
    asm: TraceAssembler[Span], events: list[tuple[int, int, int]], max_traces: int, max_bytes: int
) -> list[TraceUnit[Span]]:
    handed: list[TraceUnit[Span]] = []
    at = 0.0
    for trace_id, span_id, parent in events:
        span = Span(trace_id, span_id, None if parent == 0 else parent)
        handed += asm.add(span, 100, at)
        assert len(asm) <= max_traces and asm.bytes <= max_bytes
        at += 0.5
        handed += asm.due(at)
    handed += asm.drain()
    assert {u.reason for u in handed} <= set(REASONS)
    return handed


@settings(max_examples=100, deadline=None)
@given(_EVENTS, st.integers(1, 5), st.integers(100, 2000), st.integers(1, 6))
def test_every_span_is_handed_on_once_or_counted_and_bounds_hold(
    events: list[tuple[int, int, int]], max_traces: int, max_bytes: int, max_spans: int
) -> None:
    """Under any mix of traces, duplicates, late spans, timers and bounds: every span added is in
    exactly one evaluation or counted as late, duplicate or dropped, and no bound is passed."""
    asm: TraceAssembler[Span] = TraceAssembler(
        Completion(settle_s=1, idle_s=3, max_wait_s=8),
        AssemblyBounds(max_traces=max_traces, max_bytes=max_bytes, max_spans_per_trace=max_spans),
    )
    handed = _run(asm, events, max_traces, max_bytes)
    c = asm.counts
    assert sum(len(u.spans) for u in handed) + c.late + c.duplicates + c.dropped_spans == len(
        events
    )
    assert sum(c.released.values()) == len(handed)
    seen = [(u.trace_id, s.span_id) for u in handed for s in u.spans]
    assert len(seen) == len(set(seen))  # no span in two evaluations


@settings(max_examples=100, deadline=None)
@given(_EVENTS, st.integers(1, 5), st.integers(100, 2000), st.integers(1, 8))
def test_reevaluated_traces_stay_one_trace_under_any_bounds(
    events: list[tuple[int, int, int]], max_traces: int, max_bytes: int, remember: int
) -> None:
    """With late: reevaluate, an evaluated trace is never evaluated again as a new first
    revision (its id is kept even when its spans are let go for room), revisions count up one
    by one, and the bounds hold counting the spans kept for re-evaluation."""
    asm: TraceAssembler[Span] = TraceAssembler(
        Completion(settle_s=1, idle_s=3, max_wait_s=8),
        AssemblyBounds(max_traces=max_traces, max_bytes=max_bytes, remember=remember),
        late="reevaluate",
    )
    handed = _run(asm, events, max_traces, max_bytes)
    last: dict[int, int] = {}
    for unit in handed:
        if remember >= 8:  # every evaluated trace is remembered: never a second first revision
            assert unit.revision == last.get(unit.trace_id, 0) + 1
        last[unit.trace_id] = unit.revision
    assert asm.bytes + asm._kept_bytes <= max_bytes
