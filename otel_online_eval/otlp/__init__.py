"""The OTLP wire formats for traces: protobuf span views, the hand-written protobuf encoder of
eval spans, the OTLP/JSON decoder and encoder, and the check of span ids.

Used by the sidecar (receivers, eval span export) and the tools (files in and out); it knows
nothing of rules or the engine.
"""

from otel_online_eval.otlp._ids import (
    SPAN_ID_BYTES,
    TRACE_ID_BYTES,
    hex_id,
    id_problem,
    span_ids_problem,
)
from otel_online_eval.otlp._jsondec import (
    decode_logs_json,
    decode_request_dict,
    decode_request_json,
)
from otel_online_eval.otlp._jsonenc import (
    encode_spans_dict,
    encode_spans_json,
    request_to_dict,
    request_to_json,
)
from otel_online_eval.otlp._protoenc import (
    encode_attributes,
    encode_request,
    encode_resource,
    encode_scope,
    encode_span,
)
from otel_online_eval.otlp._protoview import (
    ProtoSpanView,
    SharedResource,
    decode_attributes,
    decode_value,
)

__all__ = [
    "SPAN_ID_BYTES",
    "TRACE_ID_BYTES",
    "ProtoSpanView",
    "SharedResource",
    "decode_attributes",
    "decode_logs_json",
    "decode_request_dict",
    "decode_request_json",
    "decode_value",
    "encode_attributes",
    "encode_request",
    "encode_resource",
    "encode_scope",
    "encode_span",
    "encode_spans_dict",
    "encode_spans_json",
    "hex_id",
    "id_problem",
    "request_to_dict",
    "request_to_json",
    "span_ids_problem",
]
