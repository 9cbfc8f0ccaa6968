"""The hand-written protobuf encoder of eval spans against the SDK's ``encode_spans``.

The sidecar's ``ProtoEmitter`` writes each ``SpanPlan`` with ``encode_span`` and groups them
with ``encode_request``; the in-process ``Emitter`` makes SDK ``ReadableSpan``s of the same
plans for the SDK's exporters. Both must say the same: the parsed messages are compared equal,
except for the W3C trace flags in the low bits of ``flags``, which the hand-written encoder
writes as the OTLP specification asks and the Python SDK leaves out
(open-telemetry/opentelemetry-python#4666); the expected messages get them added.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from otel_online_eval._spanplan import SpanPlan
from otel_online_eval.emit import SCOPE, Emitter, PlanningEmitter, ScorerRun, Target
from otel_online_eval.otlp import encode_request, encode_resource, encode_scope, encode_span
from otel_online_eval.scorers.base import Score

LINK_ATTRS = {"online_eval.link": "scored_span"}  # what every eval span's link carries
VALUES: dict[str, Any] = {
    "str": "hé ✓",
    "empty str": "",
    "long str": "x" * 300,
    "true": True,
    "false": False,
    "int": 42,
    "negative": -(2**63),
    "max": 2**63 - 1,
    "float": 0.25,
    "negative float": -1e300,
    "inf": math.inf,
    "strs": ("a", "b"),
    "bools": (True, False),
    "ints": (1, -2, 2**40),
    "floats": (1.5, -0.0),
    "empty": (),
}


class _Capture(PlanningEmitter):
    """The plans an evaluation makes, as both emitters receive them."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[tuple[Sequence[SpanPlan], Any]] = []

    def _export(self, plans: Sequence[SpanPlan], resource: Any) -> None:
        self.batches.append((plans, resource))


def _hand(batches: Sequence[tuple[Sequence[SpanPlan], Resource]]) -> ExportTraceServiceRequest:
    """As the ProtoEmitter writes them: encoded spans grouped by resource, in the eval scope."""
    groups: dict[int, tuple[Any, list[bytes]]] = {}
    for plans, res in batches:
        group = groups.setdefault(id(res), (encode_resource(res), []))
        group[1].extend(encode_span(p) for p in plans)
    return ExportTraceServiceRequest.FromString(
        encode_request(groups.values(), encode_scope(SCOPE))
    )


def _sdk(batches: Sequence[tuple[Sequence[SpanPlan], Resource]]) -> ExportTraceServiceRequest:
    """As the in-process path writes them: the Emitter's ReadableSpans, the SDK's encoder."""
    exporter = InMemorySpanExporter()
    emitter = Emitter(SimpleSpanProcessor(exporter))
    for plans, resource in batches:
        emitter._export(plans, resource)
    return _with_trace_flags(encode_spans(exporter.get_finished_spans()))


def _with_trace_flags(request: ExportTraceServiceRequest) -> ExportTraceServiceRequest:
    """The SDK's encoding plus the W3C sampled flag it leaves out of ``flags`` (eval spans and
    their links are sampled)."""
    for rs in request.resource_spans:
        for ss in rs.scope_spans:
            for span in ss.spans:
                span.flags |= TraceFlags.SAMPLED
                for link in span.links:
                    link.flags |= TraceFlags.SAMPLED
    return request


def _same(a: ExportTraceServiceRequest, b: ExportTraceServiceRequest) -> None:
    assert a == b or a.SerializeToString(deterministic=True) == b.SerializeToString(
        deterministic=True
    ), f"hand-written:\n{a}\nSDK:\n{b}"


# -- the plans an evaluation makes in production ------------------------------------------------


def _evaluation(resource: Resource) -> list[tuple[Sequence[SpanPlan], Any]]:
    capture = _Capture()
    scored = SpanContext(
        0x5B8EFFF798038103D269B633813FC60C, 0xEEE19B7EC3C1B174, False, TraceFlags(1)
    )
    target = Target(scored.trace_id, scored.span_id, scored, resource, "chat")
    try:
        raise RuntimeError("the judge said no")
    except RuntimeError as exc:
        error = exc
    runs = [
        ScorerRun("good", Score(0.75, "pass", "fine", {"model": "m", **VALUES}), None, 10, 20),
        ScorerRun("boom", None, error, 11, 21),
        ScorerRun("slow", None, TimeoutError("timed out after 2s"), 12, 22, timed_out=True),
        ScorerRun("busy", None, None, 13, 13, skipped="scorer busy"),
        ScorerRun("half", Score(None, "n/a"), None, 14, 24, sampling_rate=0.5),
    ]
    capture.emit(target, "rule", runs, ["sampled-out"], 5, 30, {"online_eval.sampling.rate": 0.1})
    # and one with no parent and no link (an evaluate() call that scores no span)
    root = Target(0x1, None, None, resource)
    capture.emit(root, "direct", runs[:1], [], 1, 2)
    return capture.batches


def test_eval_spans_of_an_evaluation_encode_as_the_sdk_encodes_them() -> None:
    """ERROR status with its message, exception events, links, every attribute type."""
    resource = Resource({"service.name": "app", **VALUES})
    batches = _evaluation(resource) + _evaluation(Resource({}))
    hand, sdk = _hand(batches), _sdk(batches)
    spans = [s for rs in hand.resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert {s.status.code for s in spans} == {0, 2}
    assert any(e.name == "exception" for s in spans for e in s.events)
    assert any(s.links for s in spans)
    _same(hand, sdk)


# -- spans made with the real SDK, re-planned -------------------------------------------------


def _plan_of(span: ReadableSpan) -> SpanPlan:
    """A ReadableSpan as a plan (what an eval span can say: internal, one link, UNSET/ERROR)."""
    ctx = span.get_span_context()
    assert ctx is not None and span.start_time is not None and span.end_time is not None
    assert span.kind is SpanKind.INTERNAL and len(span.links) <= 1
    return SpanPlan(
        ctx.trace_id,
        ctx.span_id,
        span.parent.span_id if span.parent is not None else None,
        span.name,
        span.start_time,
        span.end_time,
        dict(span.attributes or {}),
        tuple((e.name, e.timestamp, dict(e.attributes or {})) for e in span.events),
        span.links[0].context if span.links else None,
        (span.status.status_code.name, span.status.description),
    )


def _sdk_spans() -> list[ReadableSpan]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource({"service.name": "sdk", **VALUES}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer(SCOPE.name, SCOPE.version)
    scored = SpanContext(0xABC, 0xDEF, False, TraceFlags(1))
    with tracer.start_as_current_span(
        "eval r", attributes=VALUES, links=[Link(scored, LINK_ATTRS)]
    ):
        with tracer.start_as_current_span("score a") as child:
            child.set_status(Status(StatusCode.ERROR, "ValueError: bad answer"))
            try:
                raise ValueError("bad answer")
            except ValueError as exc:
                child.record_exception(exc, {"extra": 1})
            child.add_event("note", {"list": ("x", "y"), "n": 1.5})
        with tracer.start_as_current_span("score b") as plain:
            plain.set_status(Status(StatusCode.ERROR))  # no description
    provider.shutdown()
    return list(exporter.get_finished_spans())


def test_spans_made_by_the_sdk_encode_alike() -> None:
    spans = _sdk_spans()
    assert any(e.name == "exception" for s in spans for e in s.events)
    resource = spans[0].resource
    hand = _hand([([_plan_of(s) for s in spans], Resource(resource.attributes))])
    _same(hand, _with_trace_flags(encode_spans(spans)))


# -- any attribute values ------------------------------------------------------------------------

_SCALARS = {
    "str": st.text(max_size=20),
    "bool": st.booleans(),
    "int": st.integers(-(2**63), 2**63 - 1),
    "float": st.floats(allow_nan=False),
}
ATTRIBUTE_VALUES = st.one_of(
    *_SCALARS.values(), *(st.lists(s, max_size=4).map(tuple) for s in _SCALARS.values())
)
ATTRIBUTES = st.dictionaries(st.text(max_size=12), ATTRIBUTE_VALUES, max_size=6)


@settings(derandomize=True, max_examples=150, deadline=None)
@given(
    ATTRIBUTES,
    st.lists(st.tuples(st.text(max_size=8), st.integers(0, 2**64 - 1), ATTRIBUTES), max_size=3),
    st.none() | st.text(max_size=20),
    ATTRIBUTES,
    st.integers(0, 2**64 - 1),
)
def test_any_plan_encodes_as_the_sdk_encodes_it(
    attrs: Mapping[str, Any],
    events: list[tuple[str, int, Mapping[str, Any]]],
    error: str | None,
    resource_attrs: Mapping[str, Any],
    start: int,
) -> None:
    link = SpanContext(7, 9, False, TraceFlags(1))
    status = ("UNSET", None) if error is None else ("ERROR", error)
    plan = SpanPlan(3, 4, 5, "score x", start, start, attrs, tuple(events), link, status)
    root = SpanPlan(3, 5, None, "eval x", 0, 2**64 - 1, {}, (), None, ("ERROR", None))
    batches = [([plan, root], Resource(resource_attrs))]
    _same(_hand(batches), _sdk(batches))
