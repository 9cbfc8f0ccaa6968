"""The one check of span and trace ids, with the one message shape every caller reports.

A span needs a 16-byte trace id and an 8-byte span id, neither all zero, and a parent span id
that is empty or 8 bytes. Protobuf carries ids as bytes of
any length; OTLP/JSON as hex strings (:func:`hex_id`). The problems read like
``trace_id must be 16 bytes, not all zero (got 3 bytes)``, under the protobuf field names, in
the receivers' answers, the tools' errors and the JSON decoder's alike.
"""

from __future__ import annotations

__all__ = ["SPAN_ID_BYTES", "TRACE_ID_BYTES", "hex_id", "id_problem", "span_ids_problem"]

TRACE_ID_BYTES = 16
SPAN_ID_BYTES = 8
_ZERO_TRACE = bytes(TRACE_ID_BYTES)
_ZERO_SPAN = bytes(SPAN_ID_BYTES)


def id_problem(
    field: str, value: bytes, size: int, *, may_be_empty: bool = False, may_be_zero: bool = False
) -> str | None:
    """What is wrong with one id, or None.

    Args:
        field: the id's name in the message, e.g. ``trace_id`` or a JSON path.
        value: the id's bytes.
        size: the bytes it must have.
        may_be_empty: an absent id (no bytes) is fine (a root span's parent).
        may_be_zero: all zero bytes are fine (a link's ids are not checked for it).
    """
    n = len(value)
    if n == size:
        if may_be_zero or any(value):
            return None
        return f"{field} {_requirement(size, may_be_empty, may_be_zero)} (got all zero bytes)"
    if n == 0 and may_be_empty:
        return None
    return f"{field} {_requirement(size, may_be_empty, may_be_zero)} (got {n} bytes)"


def span_ids_problem(trace_id: bytes, span_id: bytes, parent_span_id: bytes) -> str | None:
    """What is wrong with a span's ids (the first problem), or None."""
    if len(trace_id) != TRACE_ID_BYTES or trace_id == _ZERO_TRACE:
        return id_problem("trace_id", trace_id, TRACE_ID_BYTES)
    if len(span_id) != SPAN_ID_BYTES or span_id == _ZERO_SPAN:
        return id_problem("span_id", span_id, SPAN_ID_BYTES)
    if parent_span_id and len(parent_span_id) != SPAN_ID_BYTES:
        return id_problem(
            "parent_span_id", parent_span_id, SPAN_ID_BYTES, may_be_empty=True, may_be_zero=True
        )
    return None


def hex_id(text: object, field: str, size: int | None) -> bytes:
    """The bytes of an OTLP/JSON id: hex digits (either case), two per byte.

    Args:
        text: the JSON value.
        field: the id's name or JSON path, for the message.
        size: the bytes the id must have when it is not empty, or None for any number (a
            receiver decodes such ids and rejects the span alone, as it does for protobuf).

    Raises:
        ValueError: not a string of hex digits, or (with ``size``) not that many bytes.
    """
    if type(text) is str:
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raw = None
        # fromhex skips whitespace between bytes: the length tells.
        if raw is not None and len(raw) * 2 == len(text):
            if size is None or not raw or len(raw) == size:
                return raw
            raise ValueError(f"{field} {_requirement(size, True, True)} (got {len(raw)} bytes)")
    shown = f"{text!r:.80}"
    digits = "hex digits, two per byte" if size is None else f"{2 * size} hex digits"
    raise ValueError(f"{field} must be {digits} (got {shown})")


def _requirement(size: int, may_be_empty: bool, may_be_zero: bool) -> str:
    if may_be_empty and may_be_zero:
        return f"must be empty or {size} bytes"
    if may_be_empty:
        return f"must be empty or {size} bytes, not all zero"
    if may_be_zero:
        return f"must be {size} bytes"
    return f"must be {size} bytes, not all zero"
