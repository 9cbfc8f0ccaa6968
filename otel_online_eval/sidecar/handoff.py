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

import logging
import threading
import time
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ScopeSpans, Span

from otel_online_eval._ratelog import RateLimitedLog
from otel_online_eval.assembly import Turn
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

from otel_online_eval.sidecar._handing import (
    TURN_SCOPE,
    HandoffPlan,
    HandoffStats,
    Outgoing,
    key_owner,
    owner_of,
    turn_of,
    turn_request,
)

__all__ = [
    "TURN_SCOPE",
    "Handoff",
    "HandoffIngest",
    "HandoffStats",
    "Outgoing",
    "key_owner",
    "owner_of",
    "turn_of",
    "turn_request",
]

logger = logging.getLogger(__name__)

_MAX_MESSAGE = 64 * 1024 * 1024
_PEER_BUFFER_BYTES = 32 * 1024 * 1024
_SOCKET_PATH_LIMIT = 100  # sun_path is 108 bytes on Linux, 104 on macOS
_RETRY = RetryConfig(initial_backoff_s=0.05, max_backoff_s=1.0, max_elapsed_s=60.0)


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
            found = turn_of(resource, span)
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
        self._plan: HandoffPlan | None = None
        self._log = RateLimitedLog(logger)

    # -- sending ----------------------------------------------------------------------------

    def plan(self, engine: Engine) -> HandoffPlan:
        plan = self._plan
        if plan is None or plan.engine is not engine:
            plan = self._plan = HandoffPlan(engine, self.me, self.workers)
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
