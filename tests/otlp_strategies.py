"""Hypothesis strategies for OTLP trace requests (every field of the schema), and their OTLP/JSON
spellings: lowerCamelCase or proto names, enums as integers or names, 64-bit integers as
strings or numbers, ids in hex. Shared by the codec parity tests and the ingest fuzz tests."""

from __future__ import annotations

import base64
import math
from typing import Any

from google.protobuf import json_format
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    ArrayValue,
    EntityRef,
    InstrumentationScope,
    KeyValue,
    KeyValueList,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

__all__ = ["HEX_IDS", "INT64_KEYS", "json_spellings", "requests", "to_base64_ids", "to_otlp_json"]

NAN = math.nan
U32 = st.integers(0, 2**32 - 1)
U64 = st.integers(0, 2**64 - 1)
I32 = st.integers(-(2**31), 2**31 - 1)
I64 = st.integers(-(2**63), 2**63 - 1)
TEXT = st.text(max_size=6)
HEX_IDS = ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id")
# Fields whose proto3 JSON is a decimal string: 64-bit integers.
INT64_KEYS = frozenset(
    {
        "intValue",
        "int_value",
        "startTimeUnixNano",
        "start_time_unix_nano",
        "endTimeUnixNano",
        "end_time_unix_nano",
        "timeUnixNano",
        "time_unix_nano",
    }
)


def _any_value(children: st.SearchStrategy[AnyValue] | None = None) -> st.SearchStrategy[AnyValue]:
    scalars = st.one_of(
        st.builds(lambda v: AnyValue(string_value=v), TEXT),
        st.builds(lambda v: AnyValue(bool_value=v), st.booleans()),
        st.builds(lambda v: AnyValue(int_value=v), I64),
        # NaN as JSON knows it: one NaN (a payload or sign does not survive the text).
        st.builds(lambda v: AnyValue(double_value=v), st.floats(allow_nan=False) | st.just(NAN)),
        st.builds(lambda v: AnyValue(bytes_value=v), st.binary(max_size=6)),
        st.builds(lambda v: AnyValue(string_value_strindex=v), I32),
        st.just(AnyValue()),
    )

    def extend(inner: st.SearchStrategy[AnyValue]) -> st.SearchStrategy[AnyValue]:
        return st.one_of(
            st.builds(
                lambda vs: AnyValue(array_value=ArrayValue(values=vs)), st.lists(inner, max_size=3)
            ),
            st.builds(
                lambda kvs: AnyValue(kvlist_value=KeyValueList(values=kvs)),
                st.lists(_key_value(inner), max_size=3),
            ),
        )

    return st.recursive(scalars, extend, max_leaves=5)


def _key_value(values: st.SearchStrategy[AnyValue]) -> st.SearchStrategy[KeyValue]:
    def make(key: str, value: AnyValue | None, strindex: int) -> KeyValue:
        kv = KeyValue(key=key, key_strindex=strindex)
        if value is not None:
            kv.value.CopyFrom(value)
        return kv

    return st.builds(make, TEXT, st.none() | values, st.sampled_from([0, 0, 3]))


ATTRIBUTES = st.lists(_key_value(_any_value()), max_size=3)


def _span() -> st.SearchStrategy[Span]:
    event = st.builds(
        lambda t, n, a, d: Span.Event(
            time_unix_nano=t, name=n, attributes=a, dropped_attributes_count=d
        ),
        U64,
        TEXT,
        ATTRIBUTES,
        U32,
    )
    link = st.builds(
        lambda tid, sid, ts, a, d, f: Span.Link(
            trace_id=tid,
            span_id=sid,
            trace_state=ts,
            attributes=a,
            dropped_attributes_count=d,
            flags=f,
        ),
        st.binary(min_size=16, max_size=16),
        st.binary(min_size=8, max_size=8),
        TEXT,
        ATTRIBUTES,
        U32,
        U32,
    )
    status = st.none() | st.builds(
        lambda m, c: Status(message=m, code=c), TEXT, st.sampled_from([0, 1, 2, 7])
    )

    def make(
        tid: bytes, sid: bytes, parent: bytes, ts: str, flags: int, name: str, kind: int,
        times: tuple[int, int], attrs: list[KeyValue], counts: tuple[int, int, int],
        events: list[Span.Event], links: list[Span.Link], st_: Status | None,
    ) -> Span:  # fmt: skip
        span = Span(
            trace_id=tid, span_id=sid, parent_span_id=parent, trace_state=ts, flags=flags,
            name=name, kind=kind, start_time_unix_nano=times[0], end_time_unix_nano=times[1],
            attributes=attrs, dropped_attributes_count=counts[0], events=events,
            dropped_events_count=counts[1], links=links, dropped_links_count=counts[2],
        )  # fmt: skip
        if st_ is not None:
            span.status.CopyFrom(st_)
        return span

    return st.builds(
        make,
        st.binary(min_size=16, max_size=16),
        st.binary(min_size=8, max_size=8),
        st.sampled_from([b"", b"\x01" * 8]) | st.binary(min_size=8, max_size=8),
        TEXT,
        U32,
        TEXT,
        st.sampled_from([0, 1, 2, 3, 4, 5, 9]),
        st.tuples(U64, U64),
        ATTRIBUTES,
        st.tuples(U32, U32, U32),
        st.lists(event, max_size=2),
        st.lists(link, max_size=2),
        status,
    )


def _resource() -> st.SearchStrategy[Resource | None]:
    ref = st.builds(
        lambda s, t, i, d: EntityRef(schema_url=s, type=t, id_keys=i, description_keys=d),
        TEXT,
        TEXT,
        st.lists(TEXT, max_size=2),
        st.lists(TEXT, max_size=2),
    )
    return st.none() | st.builds(
        lambda a, d, r: Resource(attributes=a, dropped_attributes_count=d, entity_refs=r),
        ATTRIBUTES,
        U32,
        st.lists(ref, max_size=2),
    )


def _scope_spans() -> st.SearchStrategy[ScopeSpans]:
    scope = st.none() | st.builds(
        lambda n, v, a, d: InstrumentationScope(
            name=n, version=v, attributes=a, dropped_attributes_count=d
        ),
        TEXT,
        TEXT,
        ATTRIBUTES,
        U32,
    )

    def make(sc: InstrumentationScope | None, spans: list[Span], url: str) -> ScopeSpans:
        out = ScopeSpans(spans=spans, schema_url=url)
        if sc is not None:
            out.scope.CopyFrom(sc)
        return out

    return st.builds(make, scope, st.lists(_span(), max_size=3), TEXT)


def _resource_spans() -> st.SearchStrategy[ResourceSpans]:
    def make(res: Resource | None, scopes: list[ScopeSpans], url: str) -> ResourceSpans:
        out = ResourceSpans(scope_spans=scopes, schema_url=url)
        if res is not None:
            out.resource.CopyFrom(res)
        return out

    return st.builds(make, _resource(), st.lists(_scope_spans(), max_size=2), TEXT)


def requests() -> st.SearchStrategy[ExportTraceServiceRequest]:
    """Valid requests touching every field of the trace schema (ids of the right sizes)."""
    return st.builds(
        lambda rs: ExportTraceServiceRequest(resource_spans=rs),
        st.lists(_resource_spans(), max_size=2),
    )


def _walk_ids(data: Any, convert: Any) -> Any:
    if isinstance(data, dict):
        return {
            k: convert(v) if k in HEX_IDS and isinstance(v, str) else _walk_ids(v, convert)
            for k, v in data.items()
        }
    if isinstance(data, list):
        return [_walk_ids(v, convert) for v in data]
    return data


def to_otlp_json(
    request: ExportTraceServiceRequest, *, proto_names: bool = False, enum_ints: bool = True
) -> dict[str, Any]:
    """OTLP/JSON by the library: protobuf's proto3 JSON, with the ids in hex."""
    data = json_format.MessageToDict(
        request, preserving_proto_field_name=proto_names, use_integers_for_enums=enum_ints
    )
    return _walk_ids(data, lambda v: base64.b64decode(v).hex())  # type: ignore[no-any-return]


def to_base64_ids(data: Any) -> Any:
    """Proto3 JSON as protobuf's own parser reads it: the hex ids back to base64."""
    return _walk_ids(data, lambda v: base64.b64encode(bytes.fromhex(v)).decode())


def _numbers(data: Any, pick: st.DataObject) -> Any:
    if isinstance(data, dict):
        out = {}
        for k, v in data.items():
            if k in INT64_KEYS and isinstance(v, str) and pick.draw(st.booleans()):
                v = int(v)
            out[k] = _numbers(v, pick)
        return out
    if isinstance(data, list):
        return [_numbers(v, pick) for v in data]
    return data


def json_spellings(request: ExportTraceServiceRequest, pick: st.DataObject) -> dict[str, Any]:
    """One of the spellings a valid OTLP/JSON sender may use for ``request``."""
    data = to_otlp_json(
        request,
        proto_names=pick.draw(st.booleans(), label="proto names"),
        enum_ints=pick.draw(st.booleans(), label="enums as integers"),
    )
    if pick.draw(st.booleans(), label="some int64 as numbers"):
        data = _numbers(data, pick)
    return data
