"""Property-based fuzzing of the decode paths behind the receivers, on a fixed budget.

``Ingest.handle`` gets valid requests (protobuf and every OTLP/JSON spelling) and mutations of
them: bit flips, truncations, splices of two valid encodings; JSON with odd numbers, odd keys,
deep nesting, lone surrogates. It must always return an ``IngestResult`` (``ok`` or
``invalid``, never an exception, never ``internal``), and valid input must be accepted with
the right counts. The JSON decoder's own entry points get arbitrary JSON. Deterministic
(``derandomize``) and bounded (``max_examples``); the long coverage-guided run is ``make fuzz``
(fuzz/ingest_fuzz.py).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_online_eval.config import parse_config
from otel_online_eval.emit import SCOPE, Emitter
from otel_online_eval.engine import Engine
from otel_online_eval.otlp import decode_request_dict, decode_request_json, span_ids_problem
from otel_online_eval.sidecar.ingest import Ingest, ReceiverStats, make_proto_view
from tests.otlp_strategies import json_spellings, requests, to_otlp_json

FUZZ = settings(
    derandomize=True,
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def ingest() -> Iterator[Ingest]:
    config = parse_config(
        {
            "scorers": {"nonempty": {"type": "not_empty"}},
            # Half the spans are submitted (copied out of the request) and filtered out on the
            # engine: no eval span is made, so nothing draws from `random` while Hypothesis does.
            "rules": [
                {"name": "all", "scorers": ["nonempty"], "sampling": 0.5, "filter": "name = '-'"}
            ],
        }
    )
    engine = Engine(
        config.rules,
        Emitter(SimpleSpanProcessor(InMemorySpanExporter())),
        functools.partial(make_proto_view, presets=config.extract),
        config.engine,
    )
    try:
        yield Ingest(engine, None, ReceiverStats())
    finally:
        engine.shutdown()


def _counts(request: ExportTraceServiceRequest) -> tuple[int, int, int]:
    """(good spans, spans with bad ids, good spans outside the eval scope)."""
    good = bad = seen = 0
    for rs in request.resource_spans:
        for ss in rs.scope_spans:
            for span in ss.spans:
                if span_ids_problem(span.trace_id, span.span_id, span.parent_span_id):
                    bad += 1
                else:
                    good += 1
                    seen += ss.scope.name != SCOPE.name
    return good, bad, seen


def _check_valid(ingest: Ingest, body: bytes, fmt: str, request: ExportTraceServiceRequest) -> None:
    good, bad, seen = _counts(request)
    before = ingest.engine.stats().seen
    result = ingest.handle(body, fmt)
    assert (result.status, result.accepted, result.rejected) == ("ok", good, bad), result
    assert ingest.engine.stats().seen - before == seen
    if bad:
        assert result.message.startswith(f"{bad} span(s) rejected; the first: ")


def _check_any(ingest: Ingest, body: bytes, fmt: str) -> None:
    """Whatever the body: an answer, ok or invalid, that agrees with the decoder."""
    result = ingest.handle(body, fmt)
    assert result.status in ("ok", "invalid"), result
    result.message.encode("utf-8")
    try:
        if fmt == "json":
            request = decode_request_json(body, any_id_length=True)
        else:
            request = ExportTraceServiceRequest.FromString(body)
    except Exception:
        assert result.status == "invalid", result
        assert result.message.startswith("cannot decode the ")
        return
    good, bad, _ = _counts(request)
    assert (result.status, result.accepted, result.rejected) == ("ok", good, bad), result


# -- protobuf -------------------------------------------------------------------------------------


@FUZZ
@given(requests())
def test_valid_protobuf_is_accepted_with_the_right_counts(
    ingest: Ingest, request: ExportTraceServiceRequest
) -> None:
    _check_valid(ingest, request.SerializeToString(), "protobuf", request)


@st.composite
def _mutated(draw: st.DrawFn, encodings: st.SearchStrategy[bytes]) -> bytes:
    data = bytearray(draw(encodings))
    for _ in range(draw(st.integers(1, 4))):
        how = draw(st.sampled_from(["flip", "cut", "splice", "insert", "delete"]))
        if how == "flip" and data:
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif how == "cut":
            data = data[: draw(st.integers(0, len(data)))]
        elif how == "splice":
            other = draw(encodings)
            head, tail = draw(st.integers(0, len(data))), draw(st.integers(0, len(other)))
            data = data[:head] + other[tail:]
        elif how == "insert":
            i = draw(st.integers(0, len(data)))
            data[i:i] = draw(st.binary(min_size=1, max_size=4))
        elif how == "delete" and data:
            i = draw(st.integers(0, len(data) - 1))
            del data[i : i + draw(st.integers(1, 4))]
    return bytes(data)


PROTOBUF = requests().map(lambda r: r.SerializeToString())


@FUZZ
@given(_mutated(PROTOBUF))
def test_mutated_protobuf_gets_an_answer(ingest: Ingest, body: bytes) -> None:
    _check_any(ingest, body, "protobuf")


# -- OTLP/JSON -------------------------------------------------------------------------------------


@FUZZ
@given(requests(), st.data())
def test_valid_json_in_any_spelling_is_accepted_with_the_right_counts(
    ingest: Ingest, request: ExportTraceServiceRequest, pick: st.DataObject
) -> None:
    body = json.dumps(json_spellings(request, pick)).encode()
    _check_valid(ingest, body, "json", request)


ODD_NUMBERS = st.sampled_from(
    ["1e400", "-1e400", "1e-400", "-0", "0.0", "1.5", "2e3", "9" * 30, "-" + "9" * 20, "NaN",
     "Infinity", '"NaN"', '"1e3"', '" 7"', '"0x10"', "true", "null", '"\\ud800"', "[]", "{}"]
)  # fmt: skip
ODD_KEYS = st.sampled_from(
    ["resourceSpans\\ud800", "\\udc00", "resource_spans", "scope_spans", "trace_id", "intValue",
     "kind", "", "\\u0000", "__proto__", "values", "stringValue", "spans"]
)  # fmt: skip


@st.composite
def _odd_json(draw: st.DrawFn) -> bytes:
    """A valid request's JSON with numbers, keys, strings or structure made odd."""
    text = json.dumps(to_otlp_json(draw(requests())))
    for _ in range(draw(st.integers(1, 3))):
        how = draw(st.sampled_from(["number", "key", "string", "nest", "cut", "splice"]))
        positions = [i for i, c in enumerate(text) if c in ":,[{"] or [0]
        i = draw(st.sampled_from(positions)) + 1
        if how == "number":  # a value replaced by an odd one
            end = min((j for j in (text.find(c, i) for c in ",}]") if j >= 0), default=len(text))
            text = text[:i] + draw(ODD_NUMBERS) + text[end:]
        elif how == "key":
            text = text[:i] + f'"{draw(ODD_KEYS)}":{draw(ODD_NUMBERS)},' + text[i:]
        elif how == "string":
            lone = draw(st.sampled_from(["\\ud83d", "\\ude00x", "\\\\", "\\ud83d\\ude00"]))
            text = text[:i] + f'"{lone}",' + text[i:]
        elif how == "nest":
            depth = draw(st.integers(1, 120))
            text = text[:i] + "[" * depth + "1" + "]" * depth + "," + text[i:]
        elif how == "cut":
            text = text[:i]
        else:
            other = json.dumps(to_otlp_json(draw(requests())))
            text = text[:i] + other[draw(st.integers(0, len(other))) :]
    return text.encode("utf-8", "surrogatepass")


@FUZZ
@given(_odd_json())
def test_odd_json_gets_an_answer(ingest: Ingest, body: bytes) -> None:
    _check_any(ingest, body, "json")


@FUZZ
@given(_mutated(requests().map(lambda r: json.dumps(to_otlp_json(r)).encode())))
def test_mutated_json_bytes_get_an_answer(ingest: Ingest, body: bytes) -> None:
    _check_any(ingest, body, "json")


# -- the JSON decoder's own entry points ---------------------------------------------------------

KEYS = st.sampled_from(
    ["resourceSpans", "scopeSpans", "spans", "resource", "scope", "attributes", "key", "value",
     "stringValue", "intValue", "doubleValue", "boolValue", "bytesValue", "arrayValue",
     "kvlistValue", "values", "traceId", "spanId", "parentSpanId", "kind", "status", "code",
     "events", "links", "name", "flags", "startTimeUnixNano", "entityRefs", "idKeys"]
) | st.text(max_size=4)  # fmt: skip
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=20,
)


@FUZZ
@given(st.dictionaries(KEYS, JSON_VALUES, max_size=3) | JSON_VALUES, st.booleans())
def test_the_decoder_raises_only_value_errors(data: Any, any_id_length: bool) -> None:
    for decode in (
        lambda: decode_request_dict(data, any_id_length=any_id_length),
        lambda: decode_request_json(json.dumps(data), any_id_length=any_id_length),
    ):
        try:
            request = decode()
        except ValueError as exc:
            str(exc).encode("utf-8")
        else:
            assert isinstance(request, ExportTraceServiceRequest)
            # What is accepted can be forwarded as protobuf and read back.
            body = request.SerializeToString()
            assert ExportTraceServiceRequest.FromString(body).SerializeToString() == body
