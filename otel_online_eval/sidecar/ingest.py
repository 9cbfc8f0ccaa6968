"""What the receivers do with one export request, whatever the transport.

1. Decode it (protobuf, or OTLP/JSON). Undecodable: the whole request is invalid.
2. Check every span's ids (16-byte trace id, 8-byte span id, empty or 8-byte parent, not all
   zero). Bad spans are rejected and reported in ``partial_success``; the rest go on.
3. Hand the request to the forwarder: the received bytes as they are, or re-encoded without the
   rejected spans (and always for JSON input, which is forwarded as protobuf). A full forward
   buffer refuses the whole request with a retry hint, before anything is evaluated, so the
   client retries and nothing acknowledged is lost.
4. Route each span as the in-process processor does (cached route by name and parent kind, one
   hash of the trace id) and submit the few that some rule may sample to the engine, as copies
   (with a copy of their resource) so that the request is freed when its handler returns. Spans
   in the eval scope (``otel_online_eval``), or carrying the eval marker attribute, are never
   evaluated. The routes' ``seen`` counts are added only now, once the request is accepted: a
   refused request changes no count but the refusal's, however often the client retries it.
5. Under ``--workers`` with trace rules, a span of a trace that another worker owns (and that a
   trace rule may sample) is handed to that worker for its trace rules, and goes on here for
   the span rules only (see :mod:`otel_online_eval.sidecar.handoff`).

:meth:`Ingest.handle` never raises. An undecodable body is ``invalid`` (400 /
INVALID_ARGUMENT) with a message naming the problem; anything else that goes wrong is
``internal`` (500 / INTERNAL, which clients do not retry), logged (rate-limited) and counted.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import repeat, starmap
from typing import TYPE_CHECKING

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsPartialSuccess,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from otel_online_eval._ratelog import RateLimitedLog
from otel_online_eval.emit import RULE_ATTR, SCOPE
from otel_online_eval.otlp import (
    ProtoSpanView,
    SharedResource,
    decode_request_json,
    span_ids_problem,
)
from otel_online_eval.rules import LOCAL_PARENT, NO_PARENT, REMOTE_PARENT
from otel_online_eval.sampling import shared_hash

if TYPE_CHECKING:
    from otel_online_eval.engine import Engine, Route
    from otel_online_eval.genai import ExtractSettings
    from otel_online_eval.metrics import Tally
    from otel_online_eval.sidecar._handing import Outgoing, Peers
    from otel_online_eval.sidecar.log_ingest import LogIngest
    from otel_online_eval.sidecar.shipper import Shipper

__all__ = [
    "Ingest",
    "IngestResult",
    "ReceiverStats",
    "export_response",
    "make_proto_view",
    "safe_message",
]

logger = logging.getLogger(__name__)

_EVAL_SCOPE = SCOPE.name
_ZERO_TRACE = bytes(16)
_ZERO_SPAN = bytes(8)
_REMOTE_FLAGS = 0x300  # HAS_IS_REMOTE | IS_REMOTE
_MAX_MESSAGE = 1000  # characters of a refusal's message


@dataclass(frozen=True, slots=True)
class IngestResult:
    """What became of one request.

    ``status``: ``ok`` (maybe with rejected spans), ``invalid`` (undecodable: 400 /
    INVALID_ARGUMENT), ``unavailable`` (retry later: 503 / UNAVAILABLE, ``retry_after_s``) or
    ``internal`` (a defect of ours, logged: 500 / INTERNAL, not retried by clients).
    """

    status: str
    accepted: int = 0
    rejected: int = 0
    message: str = ""
    retry_after_s: float | None = None


class ReceiverStats:
    """Receiver counters, safe to bump from the servers' threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Counter[tuple[str, str]] = Counter()  # (transport, outcome)
        self.spans: Counter[str] = Counter()  # accepted / rejected
        self.rejects: Counter[str] = Counter()  # reason -> requests or spans refused
        self.bytes: Counter[str] = Counter()  # transport -> bytes received
        # The logs signal's, apart: (transport, outcome) and accepted / rejected records.
        self.log_requests: Counter[tuple[str, str]] = Counter()
        self.log_records: Counter[str] = Counter()
        self.log_rejects: Counter[str] = Counter()

    def request(self, transport: str, outcome: str, size: int) -> None:
        with self._lock:
            self.requests[(transport, outcome)] += 1
            self.bytes[transport] += size

    def log_request(self, transport: str, outcome: str, size: int) -> None:
        with self._lock:
            self.log_requests[(transport, outcome)] += 1
            self.bytes[transport] += size

    def add_records(self, accepted: int, rejected: int, reason: str | None) -> None:
        with self._lock:
            self.log_records["accepted"] += accepted
            self.log_records["rejected"] += rejected
            if reason:
                self.log_rejects[reason] += max(rejected, 1)

    def add(self, accepted: int, rejected: int, reason: str | None) -> None:
        with self._lock:
            self.spans["accepted"] += accepted
            self.spans["rejected"] += rejected
            if reason:
                self.rejects[reason] += max(rejected, 1)


def export_response(
    result: IngestResult, logs: bool
) -> ExportTraceServiceResponse | ExportLogsServiceResponse:
    """The OTLP success answer, with ``partial_success`` when some items were rejected."""
    if logs:
        answer = ExportLogsServiceResponse()
        if result.rejected:
            answer.partial_success.CopyFrom(
                ExportLogsPartialSuccess(
                    rejected_log_records=result.rejected, error_message=result.message
                )
            )
        return answer
    response = ExportTraceServiceResponse()
    if result.rejected:
        response.partial_success.CopyFrom(
            ExportTracePartialSuccess(rejected_spans=result.rejected, error_message=result.message)
        )
    return response


def make_proto_view(
    item: tuple[Span, SharedResource, tuple[str, str]],
    presets: Sequence[str] | ExtractSettings | None = None,
) -> ProtoSpanView | None:
    """The engine's view factory for received spans; None for eval spans (never evaluated)."""
    span, resource, scope = item
    for kv in span.attributes:
        if kv.key == RULE_ATTR:
            return None
    return ProtoSpanView(span, resource, scope, presets)


def _bad_ids(span: Span) -> str | None:
    return span_ids_problem(span.trace_id, span.span_id, span.parent_span_id)


def _add(tally: Tally, n: int) -> None:
    """Bump ``tally`` ``n`` times in one C-level loop (each bump atomic under the GIL)."""
    deque(starmap(tally.add, repeat((), n)), maxlen=0)


def safe_message(message: str) -> str:
    """A refusal's message as valid UTF-8 text of bounded length (clients' bytes end up in it)."""
    if len(message) > _MAX_MESSAGE:
        message = message[: _MAX_MESSAGE - 3] + "..."
    if not message.isascii():
        message = message.encode("utf-8", "backslashreplace").decode("utf-8")
    return message


class Ingest:
    """Decodes, checks, forwards and routes export requests.

    Args:
        engine: the evaluation engine (replaced on reload).
        forwarder: where received spans go on to, if anywhere.
        stats: the receiver's counters.
    """

    def __init__(self, engine: Engine, forwarder: Shipper | None, stats: ReceiverStats) -> None:
        self.engine = engine
        self.forwarder = forwarder
        self.stats = stats
        self.closed = False
        # Under --workers with trace rules: where spans of traces other workers own go.
        self.handoff: Peers | None = None
        # The logs signal's requests (set by the sidecar).
        self.logs: LogIngest | None = None
        self._log = RateLimitedLog(logger)
        # Requests being handled, by the engine they started with: a replaced engine is shut
        # down only once they have all submitted to it (see wait_idle).
        self._active: Counter[Engine] = Counter()
        self._active_cond = threading.Condition()

    def wait_idle(self, engine: Engine, timeout_s: float) -> bool:
        """Wait until no request that started with ``engine`` is still being handled."""
        with self._active_cond:
            return self._active_cond.wait_for(lambda: engine not in self._active, timeout_s)

    def handle(self, body: bytes, fmt: str) -> IngestResult:
        """Process one request body; ``fmt`` is ``protobuf`` or ``json``. Never raises."""
        try:
            return self._decode_and_handle(body, fmt)
        except Exception:  # a defect: answer it (500 / INTERNAL) rather than drop the connection
            self.stats.add(0, 0, "internal_error")
            self._log(
                logging.ERROR,
                "internal",
                "Internal error while handling a %s export request of %d bytes.",
                fmt,
                len(body),
                exc_info=True,
            )
            return IngestResult(
                "internal", message="internal error while handling the request (it is logged)"
            )

    def _decode_and_handle(self, body: bytes, fmt: str) -> IngestResult:
        if self.closed:
            return IngestResult(
                "unavailable", message="the receiver is shutting down", retry_after_s=1.0
            )
        try:
            if fmt == "json":
                request = decode_request_json(body, any_id_length=True)
            else:
                request = ExportTraceServiceRequest.FromString(body)
        except (DecodeError, ValueError, RecursionError) as exc:
            kind = "OTLP/JSON" if fmt == "json" else "protobuf"
            self.stats.add(0, 0, "invalid")
            return IngestResult(
                "invalid", message=safe_message(f"cannot decode the {kind} request: {exc}")
            )

        engine = self.engine  # one engine for the whole request, even if a reload swaps it
        with self._active_cond:
            self._active[engine] += 1
        try:
            return self._handle(engine, request, body, fmt)
        finally:
            with self._active_cond:
                self._active[engine] -= 1
                if not self._active[engine]:
                    del self._active[engine]
                    self._active_cond.notify_all()

    def _handle(
        self, engine: Engine, request: ExportTraceServiceRequest, body: bytes, fmt: str
    ) -> IngestResult:
        rejected, first_problem, candidates, total, seen, outgoing = self._scan(engine, request)
        if self.forwarder is not None and total > rejected:  # nothing left: nothing to send
            if rejected or fmt == "json":
                _remove_rejected(request)
                body = request.SerializeToString()
            if not self.forwarder.offer(body, total - rejected):
                self.stats.add(0, 0, "forward_buffer_full")
                return IngestResult(
                    "unavailable",
                    message="the forwarding buffer is full; retry later",
                    retry_after_s=2.0,
                )
        # Accepted: now the request counts.
        for route, n in seen:
            _add(route.seen, n)
        if outgoing is not None and self.handoff is not None:
            for route in outgoing.unsubmitted:  # handed off whole: no span rule to run here
                route.submitted.add()
            self.handoff.send(outgoing)
        submit = engine.submit
        for item, route, hash_ in candidates:
            submit(item, route, hash_)
        self.stats.add(total - rejected, rejected, "invalid_span" if rejected else None)
        message = ""
        if rejected:
            message = f"{rejected} span(s) rejected; the first: {first_problem}"
        return IngestResult("ok", total - rejected, rejected, message)

    def _scan(
        self, engine: Engine, request: ExportTraceServiceRequest
    ) -> tuple[
        int, str, list[tuple[object, Route, int]], int, list[tuple[Route, int]], Outgoing | None
    ]:
        """Check and route every span: (rejected, the first problem, the spans to submit,
        total spans, (route, spans) runs to add to the routes' ``seen`` if accepted, and the
        spans to hand to the workers that own their traces)."""
        router = engine.router
        handoff = self.handoff
        plan = handoff.plan(engine) if handoff is not None else None
        outgoing: Outgoing | None = None
        cache, route_of = router.cache, router.route
        rejected, total = 0, 0
        first_problem = ""
        candidates: list[tuple[object, Route, int]] = []
        # Runs of spans with one route (a request's spans share few routes, often in a row).
        seen: list[tuple[Route, int]] = []
        last: Route | None = None
        run = 0
        for resource_spans in request.resource_spans:
            shared: SharedResource | None = None
            for scope_spans in resource_spans.scope_spans:
                scope = scope_spans.scope
                evaluate = scope.name != _EVAL_SCOPE
                names: tuple[str, str] | None = None
                for span in scope_spans.spans:
                    total += 1
                    # Each field read makes a new object: read each once.
                    trace_id, span_id, parent = span.trace_id, span.span_id, span.parent_span_id
                    if (
                        len(trace_id) != 16
                        or len(span_id) != 8
                        or (parent and len(parent) != 8)
                        or trace_id == _ZERO_TRACE
                        or span_id == _ZERO_SPAN
                    ):
                        rejected += 1
                        first_problem = first_problem or str(_bad_ids(span))
                        continue
                    if not evaluate:
                        continue
                    if not parent:
                        state = NO_PARENT
                    elif span.flags & _REMOTE_FLAGS == _REMOTE_FLAGS:
                        state = REMOTE_PARENT
                    else:
                        state = LOCAL_PARENT
                    name = span.name
                    route = cache[state].get(name) or route_of(name, state)
                    if route is last:
                        run += 1
                    else:
                        if last is not None:
                            seen.append((last, run))
                        last, run = route, 1
                    if route.bound:
                        trace_int = int.from_bytes(trace_id, "big")
                        hash_ = shared_hash(trace_int)
                        if hash_ < route.bound:
                            if plan is not None and route.trace_rules:
                                owner = trace_int % plan.workers
                                local = (
                                    plan.local_route(route, trace_int, hash_)
                                    if owner != plan.me
                                    else None
                                )
                                if local is not None and not plan.is_eval_span(span):
                                    if outgoing is None:
                                        outgoing = plan.outgoing()
                                    outgoing.add(owner, resource_spans, scope_spans, span)
                                    if not local.rules:
                                        outgoing.unsubmitted.append(local)
                                        continue
                                    route = local  # the span rules only, counted as route's
                            # Queued spans are copies: a sub-message would keep the whole
                            # request's memory alive until its last sampled span is scored.
                            if shared is None:
                                resource = Resource()
                                resource.CopyFrom(resource_spans.resource)
                                shared = SharedResource(resource)
                            if names is None:
                                names = (scope.name, scope.version)
                            sampled = Span()
                            sampled.CopyFrom(span)
                            candidates.append(((sampled, shared, names), route, hash_))
        if last is not None:
            seen.append((last, run))
        return rejected, first_problem, candidates, total, seen, outgoing


def _remove_rejected(request: ExportTraceServiceRequest) -> None:
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            spans = scope_spans.spans
            for i in range(len(spans) - 1, -1, -1):
                if _bad_ids(spans[i]) is not None:
                    del spans[i]
