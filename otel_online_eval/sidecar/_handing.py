"""What the sidecar's ingest and its handoff share, below both of them: which worker owns a trace
or a conversation, a request of spans for each owner, and a session turn as one span (see
:mod:`otel_online_eval.sidecar.handoff` for the design)."""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from otel_online_eval.assembly import Turn
from otel_online_eval.emit import RULE_ATTR
from otel_online_eval.engine import Route

if TYPE_CHECKING:
    from otel_online_eval.engine import Engine
    from otel_online_eval.rules import Rule

__all__ = [
    "TURN_SCOPE",
    "HandoffPlan",
    "HandoffStats",
    "Outgoing",
    "Peers",
    "key_owner",
    "owner_of",
    "turn_of",
    "turn_request",
]


TURN_SCOPE = "otel_online_eval.turn"
"""The scope of the spans that carry a session rule's turn to the worker holding its
conversation."""


def key_owner(key: str, workers: int) -> int:
    """The worker that holds the conversation ``key``."""
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % workers


def turn_request(rule: str, key: str, turn: Turn) -> ExportTraceServiceRequest:
    """A turn as a one-span request: the turn's ids and times, its record in attributes."""
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    if isinstance(turn.resource, Resource):
        rs.resource.CopyFrom(turn.resource)
    ss = rs.scope_spans.add()
    ss.scope.name = TURN_SCOPE
    span = ss.spans.add()
    span.trace_id = turn.trace_id.to_bytes(16, "big")
    span.span_id = turn.span_id.to_bytes(8, "big")
    span.name = "online_eval.turn"
    span.start_time_unix_nano = turn.start_ns
    span.end_time_unix_nano = turn.end_ns
    values: dict[str, str | int | bool | None] = {
        "rule": rule,
        "key": key,
        "input": turn.input,
        "output": turn.output,
        "error_count": turn.error_count,
        "input_tokens": turn.input_tokens,
        "output_tokens": turn.output_tokens,
        "complete": turn.complete,
    }
    for name, value in values.items():
        if value is None:
            continue
        kv = span.attributes.add()
        kv.key = f"online_eval.turn.{name}"
        if isinstance(value, bool):
            kv.value.bool_value = value
        elif isinstance(value, int):
            kv.value.int_value = value
        else:
            kv.value.string_value = value
    return request


def turn_of(resource: Resource, span: Span) -> tuple[str, str, Turn] | None:
    """(rule, key, turn) from a turn span; None when it is not one."""
    values: dict[str, object] = {}
    for kv in span.attributes:
        which = kv.value.WhichOneof("value")
        if kv.key.startswith("online_eval.turn.") and which is not None:
            values[kv.key.removeprefix("online_eval.turn.")] = getattr(kv.value, which)
    rule, key = values.get("rule"), values.get("key")
    if not isinstance(rule, str) or not isinstance(key, str):
        return None

    def text(name: str) -> str | None:
        value = values.get(name)
        return value if isinstance(value, str) else None

    def number(name: str) -> int | None:
        value = values.get(name)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    turn = Turn(
        int.from_bytes(span.trace_id, "big"),
        int.from_bytes(span.span_id, "big"),
        text("input"),
        text("output"),
        span.start_time_unix_nano,
        span.end_time_unix_nano,
        number("error_count") or 0,
        number("input_tokens"),
        number("output_tokens"),
        values.get("complete") is not False,
        resource,
    )
    return rule, key, turn


def owner_of(trace_id: int, workers: int) -> int:
    """The worker that assembles the trace ``trace_id`` (the id as a big-endian integer)."""
    return trace_id % workers


@dataclass
class HandoffStats:
    """The handoff's own counts (bumped under the GIL from the handlers' threads)."""

    out: int = 0  # spans handed to a peer (offered to its shipper)
    received: int = 0  # spans received from peers and submitted to the engine
    no_trace_rule: int = 0  # received, but this worker's config has no trace rule
    turns_out: int = 0  # session turns handed to the worker holding their conversation
    turns_in: int = 0  # session turns received and added to a conversation here
    turns_kept: int = 0  # turns for another worker kept here (its buffer was full)
    turns_unusable: int = 0  # turns received for a session rule this worker does not have
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add_out(self, n: int) -> None:
        with self.lock:
            self.out += n

    def add_received(self, n: int, unusable: bool) -> None:
        with self.lock:
            self.received += n
            if unusable:
                self.no_trace_rule += n

    def add_turns(self, name: str, n: int = 1) -> None:
        with self.lock:
            setattr(self, name, getattr(self, name) + n)


class _Batch:
    """One owner's share of a request, as an ``ExportTraceServiceRequest`` being built."""

    __slots__ = ("request", "rs", "rs_source", "spans", "ss", "ss_source")

    def __init__(self) -> None:
        self.request = ExportTraceServiceRequest()
        self.rs: ResourceSpans | None = None
        self.ss: ScopeSpans | None = None
        self.rs_source: object = None
        self.ss_source: object = None
        self.spans = 0


class Outgoing:
    """The spans of one received request to hand off, batched per owner (resource and scope
    kept), and the routes whose ``submitted`` count they bump without reaching the engine."""

    __slots__ = ("batches", "unsubmitted")

    def __init__(self) -> None:
        self.batches: dict[int, _Batch] = {}
        self.unsubmitted: list[Route] = []

    def add(
        self, owner: int, resource_spans: ResourceSpans, scope_spans: ScopeSpans, span: Span
    ) -> None:
        batch = self.batches.get(owner)
        if batch is None:
            batch = self.batches[owner] = _Batch()
        if batch.rs is None or batch.rs_source is not resource_spans:
            batch.rs = batch.request.resource_spans.add()
            batch.rs.resource.CopyFrom(resource_spans.resource)
            batch.rs.schema_url = resource_spans.schema_url
            batch.rs_source, batch.ss_source = resource_spans, None
        if batch.ss is None or batch.ss_source is not scope_spans:
            batch.ss = batch.rs.scope_spans.add()
            batch.ss.scope.CopyFrom(scope_spans.scope)
            batch.ss.schema_url = scope_spans.schema_url
            batch.ss_source = scope_spans
        batch.ss.spans.add().CopyFrom(span)
        batch.spans += 1


class HandoffPlan:
    """Per engine: for each route with trace rules, the route the span rules alone take (its
    counters shared with the route's, so the span counts once where it arrived)."""

    __slots__ = ("engine", "locals", "me", "workers")

    def __init__(self, engine: Engine, me: int, workers: int) -> None:
        self.engine = engine
        self.me = me
        self.workers = workers
        self.locals: dict[int, tuple[Route, Route]] = {}  # id(route) -> (route, span rules')

    def local_route(self, route: Route, trace_id: int, hash_: int) -> Route | None:
        """The span-rules-only route when a trace rule may sample this trace, else None (the
        span takes its own route, whose trace rules count it as sampled out)."""
        if not _samples(route.trace_rules, trace_id, hash_):
            return None
        found = self.locals.get(id(route))
        if found is None:
            local = Route(route.span_rules)
            local.seen, local.submitted, local.ignored = route.seen, route.submitted, route.ignored
            found = self.locals[id(route)] = (route, local)
        return found[1]

    @staticmethod
    def is_eval_span(span: Span) -> bool:
        """Carries the eval marker: never evaluated, so never handed off."""
        return any(kv.key == RULE_ATTR for kv in span.attributes)

    @staticmethod
    def outgoing() -> Outgoing:
        return Outgoing()


def _samples(rules: tuple[Rule, ...], trace_id: int, hash_: int) -> bool:
    for rule in rules:
        if rule.sampling_is_callable or getattr(rule, "is_session", False):
            return True  # decided only where the trace is assembled
        if (rule.hash(trace_id) if rule.salt else hash_) < rule.bound:
            return True
    return False


class Peers(Protocol):
    """What ingest asks of the handoff (``Handoff`` is one)."""

    def plan(self, engine: Engine) -> HandoffPlan: ...

    def send(self, outgoing: Outgoing) -> None: ...
