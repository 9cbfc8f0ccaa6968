"""``serve --workers N`` with trace rules: each trace is assembled by one worker, its owner.

The kernel spreads connections, not traces, over the workers, so one trace's spans may reach
several of them. Trace rules (``scope: trace``) must see whole traces, so every trace has an
owner, worker ``trace_id % N``, and the others hand their spans of it to the owner:

* Each worker serves a private OTLP/gRPC receiver on a Unix socket, ``handoff-{i}.sock`` in the
  directory the parent makes for the workers (mode 0700: only the sidecar's user can connect).
* A span that arrives at a worker that does not own its trace, and that some trace rule samples,
  is forwarded and evaluated by the span rules there as any other span, and also copied, with
  its resource and scope, into one ``ExportTraceServiceRequest`` per owner for the request it
  came in (:class:`Outgoing`), which a :class:`~otel_online_eval.sidecar.shipper.Shipper` per
  peer (bounded buffer, retries) sends to the owner's socket. The span is not buffered where it
  arrived.
* The owner's handoff receiver (:class:`HandoffIngest`) submits what it receives to its engine
  on a route of the trace rules only: never forwarded again, never evaluated by span rules, not
  counted again as received or seen. Its trace rules decide their sampling there, and count it.

Counts (``/metrics``): ``online_eval_handoff_spans_total{direction="out"}`` (spans handed to a
peer), ``{direction="in"}`` (spans received from peers and submitted to the engine), and
``online_eval_handoff_dropped_spans_total{reason}`` (``buffer_full``: the peer's buffer was
full; ``failed``: not delivered after retries, or still queued at shutdown; ``no_trace_rule``:
received by a worker whose config has no trace rule). Summed over workers, once settled,
``out = in + dropped{buffer_full, failed}``. The peer shippers' own counts are
``online_eval_shipper_*{pipeline="handoff"}``.

A handed-off span is ``seen`` and ``selected`` (for every trace rule) by the worker it reached,
and ``sampled`` or ``sampled_out`` by the owner: the per-rule identity
``selected = sampled + sampled_out`` of a trace rule holds summed over the workers, plus the
handoff drops (every trace rule selected those spans, none decided them).

Session rules (``scope: session``): each worker assembles the traces it owns into turns; a turn
whose conversation another worker holds (``key_owner``: a hash of the session key) is handed to
it as one span of the scope ``otel_online_eval.turn`` (its compact record as attributes, under
the anchor's resource), over the same sockets, and that worker adds it to the conversation, so
a conversation is evaluated once, whole. A turn that cannot be queued for its peer (a full
buffer) is kept where it is, and so are the turns left at shutdown (the peers stop listening
first): a conversation may then be evaluated in parts, never lost.

Drain (SIGTERM reaches every worker): each worker stops its public receivers, sends what it
holds for its peers (within the drain timeout), and marks ``handoff-{i}.done``; it keeps its own
handoff receiver open until every peer has marked done (or half the time left has passed), and
only then shuts down its engine, whose buffered traces are then whole.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from otel_online_eval._ratelog import RateLimitedLog
from otel_online_eval.assembly import Turn
from otel_online_eval.emit import RULE_ATTR
from otel_online_eval.engine import Route
from otel_online_eval.otlp import SharedResource
from otel_online_eval.sampling import shared_hash
from otel_online_eval.sidecar.config import GrpcReceiverConfig, RetryConfig
from otel_online_eval.sidecar.grpc_server import GrpcReceiver
from otel_online_eval.sidecar.ingest import Ingest, IngestResult, ReceiverStats
from otel_online_eval.sidecar.shipper import (
    _RETRYABLE_GRPC,
    EXPORT_METHOD,
    SendResult,
    Shipper,
    ShipperStats,
    _grpc_retry_after,
)

if TYPE_CHECKING:
    from otel_online_eval.engine import Engine
    from otel_online_eval.rules import Rule
    from otel_online_eval.sidecar.prometheus import Family

__all__ = ["Handoff", "HandoffIngest", "HandoffStats", "Outgoing", "owner_of"]

logger = logging.getLogger(__name__)

_MAX_MESSAGE = 64 * 1024 * 1024
_PEER_BUFFER_BYTES = 32 * 1024 * 1024
_SOCKET_PATH_LIMIT = 100  # sun_path is 108 bytes on Linux, 104 on macOS
_RETRY = RetryConfig(initial_backoff_s=0.05, max_backoff_s=1.0, max_elapsed_s=60.0)


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


def _turn_of(resource: Resource, span: Span) -> tuple[str, str, Turn] | None:
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


class _Plan:
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


class HandoffIngest(Ingest):
    """The handoff receiver's requests: spans for this worker's trace rules only."""

    def __init__(self, engine: Engine, stats: HandoffStats) -> None:
        super().__init__(engine, None, ReceiverStats())
        self.handoff_stats = stats
        self._route: tuple[Engine, Route] | None = None

    def _trace_route(self, engine: Engine) -> Route:
        cached = self._route
        if cached is None or cached[0] is not engine:
            rules = tuple(rule for rule in engine.router.rules if rule.is_trace)
            cached = self._route = (engine, Route(rules))
        return cached[1]

    def _handle(
        self, engine: Engine, request: ExportTraceServiceRequest, body: bytes, fmt: str
    ) -> IngestResult:
        route = self._trace_route(engine)
        submit = engine.submit
        n = 0
        for resource_spans in request.resource_spans:
            resource = Resource()
            resource.CopyFrom(resource_spans.resource)
            shared = SharedResource(resource)
            for scope_spans in resource_spans.scope_spans:
                names = (scope_spans.scope.name, scope_spans.scope.version)
                if names[0] == TURN_SCOPE:
                    self._turns(engine, resource, scope_spans)
                    continue
                for span in scope_spans.spans:
                    n += 1
                    if not route.rules:
                        continue
                    copy = Span()
                    copy.CopyFrom(span)
                    hash_ = shared_hash(int.from_bytes(span.trace_id, "big"))
                    submit((copy, shared, names), route, hash_)
        self.handoff_stats.add_received(n, not route.rules)
        return IngestResult("ok", n)

    def _turns(self, engine: Engine, resource: Resource, scope_spans: ScopeSpans) -> None:
        for span in scope_spans.spans:
            found = _turn_of(resource, span)
            if found is not None and engine.receive_turn(*found):
                self.handoff_stats.add_turns("turns_in")
            else:
                self.handoff_stats.add_turns("turns_unusable")


class _UnixSender:
    """Sends raw request bytes to a peer's handoff socket (a shipper's sender)."""

    def __init__(self, path: Path) -> None:
        self._channel = grpc.insecure_channel(
            f"unix:{path}",
            options=[
                ("grpc.max_send_message_length", _MAX_MESSAGE),
                # A peer that starts a moment later is retried soon, not after gRPC's 1-120 s.
                ("grpc.initial_reconnect_backoff_ms", 50),
                ("grpc.min_reconnect_backoff_ms", 50),
                ("grpc.max_reconnect_backoff_ms", 1000),
            ],
        )
        self._call = self._channel.unary_unary(
            EXPORT_METHOD, request_serializer=None, response_deserializer=None
        )

    def send(self, body: bytes) -> SendResult:
        try:
            self._call(body, timeout=10.0)
            return SendResult(True)
        except grpc.RpcError as exc:
            code = exc.code()
            return SendResult(
                False,
                code in _RETRYABLE_GRPC,
                _grpc_retry_after(exc),
                f"{code.name}: {exc.details()}",
            )

    def close(self) -> None:
        self._channel.close()


def socket_path(directory: Path, worker: int) -> Path:
    return directory / f"handoff-{worker}.sock"


class Handoff:
    """One worker's side of the handoff: its receiver, and a shipper per peer.

    Args:
        directory: the workers' private directory (mode 0700).
        me: this worker's index.
        workers: how many workers there are.
        engine: the engine handed-off spans are submitted to (replaced on reload).

    Raises:
        OSError: the socket cannot be made (its path too long for a Unix socket, or taken).
    """

    def __init__(self, directory: str | Path, me: int, workers: int, engine: Engine) -> None:
        self.directory = Path(directory)
        self.me = me
        self.workers = workers
        self.stats = HandoffStats()
        self.ingest = HandoffIngest(engine, self.stats)
        self.path = socket_path(self.directory, me)
        if len(str(self.path)) > _SOCKET_PATH_LIMIT:
            raise OSError(f"the handoff socket path is too long for a Unix socket: {self.path}")
        self.path.unlink(missing_ok=True)
        self.receiver = GrpcReceiver(
            GrpcReceiverConfig(endpoint=f"unix:{self.path}", max_message_bytes=_MAX_MESSAGE),
            self.ingest,
            threads=4,
        )
        if not self.receiver.port:
            raise OSError(f"cannot listen for handoffs on {self.path}")
        self.peers: dict[int, Shipper] = {
            i: Shipper(
                f"handoff-{i}",
                _UnixSender(socket_path(self.directory, i)),
                _PEER_BUFFER_BYTES,
                _RETRY,
            )
            for i in range(workers)
            if i != me
        }
        self._plan: _Plan | None = None
        self._log = RateLimitedLog(logger)

    # -- sending ----------------------------------------------------------------------------

    def plan(self, engine: Engine) -> _Plan:
        plan = self._plan
        if plan is None or plan.engine is not engine:
            plan = self._plan = _Plan(engine, self.me, self.workers)
        return plan

    def route_turn(self, rule: Rule, key: str, turn: Turn) -> bool:
        """The engine's ``turn_owner``: hand a turn to the worker holding its conversation.

        Returns:
            True when it was queued for that worker; False when the conversation is this
            worker's, or the peer's buffer is full (the turn is then kept here, counted).
        """
        owner = key_owner(key, self.workers)
        if owner == self.me:
            return False
        body = turn_request(rule.name, key, turn).SerializeToString()
        if not self.peers[owner].offer(body, 1):
            self.stats.add_turns("turns_kept")
            self._log(
                logging.WARNING,
                "turn_full",
                "Handoff to worker %d: its buffer is full; a turn of conversation it holds is "
                'evaluated here instead (online_eval_handoff_turns_total{direction="kept"}).',
                owner,
            )
            return False
        self.stats.add_turns("turns_out")
        return True

    def send(self, outgoing: Outgoing) -> None:
        """Queue each owner's batch for its peer; a full buffer is counted and logged."""
        for owner, batch in outgoing.batches.items():
            self.stats.add_out(batch.spans)
            if not self.peers[owner].offer(batch.request.SerializeToString(), batch.spans):
                self._log(
                    logging.ERROR,
                    "handoff_full",
                    "Handoff to worker %d: its buffer is full; %d span(s) of traces it "
                    "assembles are dropped (counted in online_eval_handoff_dropped_spans_total).",
                    owner,
                    batch.spans,
                )

    # -- life ---------------------------------------------------------------------------------

    def start(self) -> None:
        self.receiver.start()

    def finish_sending(self, timeout_s: float) -> bool:
        """Send what is queued for the peers (the rest is dropped and counted), then mark this
        worker done with sending."""
        ok = [True]

        def finish(shipper: Shipper) -> None:
            if not shipper.shutdown(timeout_s):
                ok[0] = False

        threads = [
            threading.Thread(target=finish, args=(s,), daemon=True) for s in self.peers.values()
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout_s + 6)
        try:
            (self.directory / f"handoff-{self.me}.done").touch()
        except OSError as exc:
            logger.warning("Cannot mark this worker's handoffs done: %s", exc)
        return ok[0]

    def wait_for_peers(self, timeout_s: float) -> bool:
        """Wait until every peer has sent all it had for this worker, or ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        waiting = [self.directory / f"handoff-{i}.done" for i in self.peers]
        while True:
            waiting = [p for p in waiting if not p.exists()]
            if not waiting:
                return True
            if time.monotonic() >= deadline:
                logger.warning(
                    "Draining: %d peer worker(s) did not finish their handoffs in time.",
                    len(waiting),
                )
                return False
            time.sleep(0.02)

    def stop_receiving(self, grace_s: float) -> None:
        """Refuse new handoffs, and let those being handled submit to the engine."""
        self.ingest.closed = True
        self.receiver.stop(grace_s)
        self.ingest.wait_idle(self.ingest.engine, grace_s)
        self.path.unlink(missing_ok=True)

    # -- counts -----------------------------------------------------------------------------

    def shipper_stats(self) -> ShipperStats:
        """The peer shippers' counts, added up (``pipeline="handoff"``)."""
        names = [f.name for f in fields(ShipperStats)]
        stats = [shipper.stats for shipper in self.peers.values()]
        return ShipperStats(**{n: sum(getattr(s, n) for s in stats) for n in names})

    def families(self) -> list[Family]:
        shippers = self.shipper_stats()
        stats = self.stats
        samples_spans: list[tuple[dict[str, str], float]] = [
            ({"direction": "out"}, float(stats.out)),
            ({"direction": "in"}, float(stats.received)),
        ]
        samples_dropped: list[tuple[dict[str, str], float]] = [
            ({"reason": "buffer_full"}, float(shippers.refused_spans)),
            ({"reason": "failed"}, float(shippers.dropped_spans)),
            ({"reason": "no_trace_rule"}, float(stats.no_trace_rule)),
        ]
        turns: list[tuple[dict[str, str], float]] = [
            ({"direction": "out"}, float(stats.turns_out)),
            ({"direction": "in"}, float(stats.turns_in)),
            ({"direction": "kept"}, float(stats.turns_kept)),
            ({"direction": "unusable"}, float(stats.turns_unusable)),
        ]
        return [
            (
                "online_eval_handoff_turns_total",
                "counter",
                "Session turns handed to the worker holding their conversation (out), received "
                "(in), kept here for a full buffer (kept), received without their rule (unusable)",
                turns,
            ),
            (
                "online_eval_handoff_spans_total",
                "counter",
                "Spans of traces another worker assembles, handed to it (out) or from it (in)",
                samples_spans,
            ),
            (
                "online_eval_handoff_dropped_spans_total",
                "counter",
                "Handed-off spans not delivered (buffer_full, failed) or unusable (no_trace_rule)",
                samples_dropped,
            ),
        ]
