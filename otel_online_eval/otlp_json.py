"""OTLP/JSON for traces, under the module name it has always had: see :mod:`otel_online_eval.otlp`.

The OTLP/JSON encoding is the proto3 JSON mapping of ``ExportTraceServiceRequest`` with hex ids;
it is what the Collector's ``file`` exporter writes, one request a line::

    line = encode_spans_json(spans)            # one line, no newline
    request = decode_request_json(line)        # ExportTraceServiceRequest
"""

from __future__ import annotations

from otel_online_eval.otlp import (
    decode_request_dict,
    decode_request_json,
    encode_spans_dict,
    encode_spans_json,
    request_to_dict,
    request_to_json,
)

__all__ = [
    "decode_request_dict",
    "decode_request_json",
    "encode_spans_dict",
    "encode_spans_json",
    "request_to_dict",
    "request_to_json",
]
