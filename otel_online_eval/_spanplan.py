"""``SpanPlan``: one eval or score span as plain data, below every encoder of it (the SDK
emitter in ``emit.py``, the protobuf one in ``otlp/``), so the wire formats need not import
the emitter."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from opentelemetry.trace import SpanContext
from opentelemetry.util.types import AttributeValue

__all__ = ["SpanPlan"]


@dataclass(frozen=True, slots=True)
class SpanPlan:
    """One eval or score span, in a form any encoder (SDK or protobuf) can turn into a span.

    ``status`` is (code, description) with code ``UNSET`` or ``ERROR``; events are
    (name, time_ns, attributes). ``link`` is the scored span; ``more_links`` are (span, what
    it is: ``supersedes`` for the eval span a re-evaluation replaces), each written with
    ``online_eval.link`` set to that word.
    """

    trace_id: int
    span_id: int
    parent_span_id: int | None
    name: str
    start_ns: int
    end_ns: int
    attributes: Mapping[str, AttributeValue]
    events: tuple[tuple[str, int, Mapping[str, AttributeValue]], ...] = ()
    link: SpanContext | None = None
    status: tuple[str, str | None] = ("UNSET", None)
    more_links: tuple[tuple[SpanContext, str], ...] = ()
