"""Spans from files: OTLP/JSON lines, OTLP protobuf, gzip, directories and standard input.

What is read (the format is detected from the content, not the file name):

- **OTLP/JSON lines**, as the OpenTelemetry Collector's ``file`` exporter and this package's
  ``file`` exporter write them: one ``ExportTraceServiceRequest`` object per line, hex ids,
  64-bit integers as decimal strings or numbers. A file whose first line is a lone ``{`` is read
  as pretty-printed JSON: one or more objects one after the other.
- **OTLP protobuf**: a file holding one serialized ``ExportTraceServiceRequest``; or a sequence
  of them each preceded by its length as a 4-byte big-endian integer (what the Collector's
  ``file`` exporter writes with ``format: proto``); or each preceded by its length as a varint
  (protobuf's ``writeDelimitedTo``).
- Any of these **gzip**-compressed (``.gz`` or not: the magic number decides). zstd (the
  Collector's ``compression: zstd``) is recognised and refused with a hint to decompress first.
- A **directory**: every file below it, recursively, in name order (hidden files skipped).
- ``-``: standard input.

Unknown fields are ignored, as the OTLP specification asks of receivers: a file written by a
newer OpenTelemetry version still reads. A line that is valid JSON but holds logs or metrics
(``resourceLogs``, ``resourceMetrics``, ...) is skipped and counted; a JSON object with none of
the top-level keys of a telemetry request is an error, as is a span whose ids are not 16 / 8
bytes (:func:`otel_online_eval.otlp.span_ids_problem` says what is wrong).

Errors carry the place: ``file:line[:column]`` for JSON, ``file: message N (byte X)`` for
protobuf. Without ``keep_going`` the first one is raised as :class:`InputError`; with it, each
is reported to ``on_error`` and reading goes on with the next line (or, for protobuf, the next
message while the framing holds).
"""

from __future__ import annotations

import gzip
import json
import os
import sys
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any, cast

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otel_online_eval._errors import OnlineEvalError
from otel_online_eval.emit import RULE_ATTR, SCOPE
from otel_online_eval.otlp import (
    ProtoSpanView,
    SharedResource,
    decode_request_dict,
    span_ids_problem,
)

__all__ = ["FileSpan", "InputError", "SpanReader", "Where"]

_GZIP = b"\x1f\x8b"
_ZSTD = b"\x28\xb5\x2f\xfd"
_HEAD = 1 << 16
_CHUNK = 1 << 20
_WHITESPACE = b" \t\r\n"
# Bytes that never appear in JSON text but fill protobuf (tags and lengths).
_BINARY = bytes(b for b in range(32) if b not in (9, 10, 13))
_EVAL_SCOPE = SCOPE.name
_TRACE_KEYS = ("resourceSpans", "resource_spans")
_OTHER_SIGNALS = (
    "resourceLogs",
    "resource_logs",
    "resourceMetrics",
    "resource_metrics",
    "resourceProfiles",
    "resource_profiles",
)


@dataclass(frozen=True, slots=True)
class Where:
    """A place in the input: a line (JSON) or a message (protobuf) of a file."""

    source: str
    line: int = 0
    column: int = 0
    message: int = 0
    offset: int = -1

    def __str__(self) -> str:
        if self.line:
            return f"{self.source}:{self.line}" + (f":{self.column}" if self.column else "")
        if self.message:
            return f"{self.source}: message {self.message} (byte {self.offset})"
        if self.offset >= 0:
            return f"{self.source}: byte {self.offset}"
        return self.source


class InputError(OnlineEvalError):
    """Input that cannot be read: a file, a line or a message, with its place."""

    def __init__(self, where: Where, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where = where
        self.message = message


@dataclass(slots=True)
class FileSpan:
    """A span read from the input.

    Attributes:
        view: the span, as rules, filters and scorers read it.
        where: the line or message it came from.
        eval_rule: for eval and score spans (this package's output), the rule they belong to.
    """

    view: ProtoSpanView
    where: Where
    eval_rule: str | None = None

    @property
    def is_eval(self) -> bool:
        return self.eval_rule is not None


class SpanReader:
    """Iterates over the spans of some inputs, in order.

    Args:
        paths: files, directories, or ``-`` for standard input.
        keep_going: report bad lines to ``on_error`` and go on, instead of raising.
        extract: how the views extract GenAI fields (the config's ``extract:``), None for the
            defaults.
        on_error: called with each error when ``keep_going`` is set.
        stdin: the stream ``-`` reads (``sys.stdin.buffer`` when None).

    Attributes:
        errors: the errors met so far (with ``keep_going``).
        files: files read.
        records: JSON lines or protobuf messages decoded.
        spans: spans produced.
        other_signals: JSON lines holding logs, metrics or profiles (skipped).
    """

    def __init__(
        self,
        paths: Sequence[str],
        *,
        keep_going: bool = False,
        extract: Any = None,
        on_error: Callable[[InputError], None] | None = None,
        stdin: IO[bytes] | None = None,
    ) -> None:
        self.paths = list(paths)
        self.keep_going = keep_going
        self.extract = extract
        self.on_error = on_error
        self.stdin = stdin
        self.errors: list[InputError] = []
        self.files = 0
        self.records = 0
        self.spans = 0
        self.other_signals = 0

    # -- errors ------------------------------------------------------------------------------

    def _fail(self, where: Where, message: str) -> None:
        error = InputError(where, message)
        if not self.keep_going:
            raise error
        self.errors.append(error)
        if self.on_error is not None:
            self.on_error(error)

    # -- files -------------------------------------------------------------------------------

    def sources(self) -> Iterator[str]:
        """The files to read, directories expanded (missing paths are reported)."""
        for path in self.paths:
            if path == "-":
                yield path
            elif os.path.isdir(path):
                found = sorted(_walk(path))
                if not found:
                    self._fail(Where(path), "the directory holds no files")
                yield from found
            elif os.path.exists(path):
                yield path
            else:
                self._fail(Where(path), "no such file or directory")

    def __iter__(self) -> Iterator[FileSpan]:
        for where, request in self.requests():
            yield from self._spans(where, request)

    def requests(self) -> Iterator[tuple[Where, ExportTraceServiceRequest]]:
        """Every decoded request with its place, file after file."""
        for source in self.sources():
            try:
                yield from self._read(source)
            except OSError as exc:
                self._fail(Where(source), f"cannot read: {exc.strerror or exc}")
            except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
                self._fail(Where(source), f"truncated or corrupt gzip data: {exc}")

    def _read(self, source: str) -> Iterator[tuple[Where, ExportTraceServiceRequest]]:
        if source == "-":
            name = "<stdin>"
            stream: IO[bytes] = self.stdin if self.stdin is not None else sys.stdin.buffer
            yield from self._read_stream(name, stream)
            return
        with open(source, "rb") as f:
            yield from self._read_stream(source, f)

    def _read_stream(
        self, name: str, stream: IO[bytes]
    ) -> Iterator[tuple[Where, ExportTraceServiceRequest]]:
        self.files += 1
        head = _read_some(stream, _HEAD)
        if head.startswith(_GZIP):
            prefixed: Any = _Prefixed(head, stream)
            stream = cast(IO[bytes], gzip.GzipFile(fileobj=prefixed, mode="rb"))
            head = _read_some(stream, _HEAD)
        if head.startswith(_ZSTD):
            self._fail(
                Where(name),
                "zstd-compressed data is not supported: decompress it first "
                f"(zstd -d {name if name != '<stdin>' else '<file>'})",
            )
            return
        start = head.lstrip(_WHITESPACE)
        if not start:
            return  # empty: no spans
        looks_json = start[:1] in (b"{", b"[")
        if looks_json and len(head.translate(None, _BINARY)) != len(head):
            # Control bytes: protobuf that happens to start like JSON, or JSON with raw
            # control characters (invalid, reported by line). Protobuf if it decodes as such.
            data = head + stream.read()
            if any(f.valid() for f in _framings(data)):
                yield from self._read_protobuf(name, data)
            else:
                yield from self._read_json_lines(name, iter(data.split(b"\n")))
        elif looks_json:
            first_line = start.split(b"\n", 1)[0].strip()
            if first_line in (b"{", b"["):
                yield from self._read_json_document(name, head + stream.read())
            else:
                yield from self._read_json_lines(name, _lines(head, stream))
        else:
            yield from self._read_protobuf(name, head + stream.read())

    # -- JSON --------------------------------------------------------------------------------

    def _read_json_lines(
        self, name: str, lines: Iterable[bytes]
    ) -> Iterator[tuple[Where, ExportTraceServiceRequest]]:
        for lineno, raw in enumerate(lines, 1):
            if not raw.strip():
                continue
            where = Where(name, lineno)
            try:
                data = json.loads(raw)
            except json.JSONDecodeError as exc:
                self._fail(Where(name, lineno, exc.colno), f"not valid JSON: {exc.msg}")
                continue
            except UnicodeDecodeError as exc:
                self._fail(where, f"not UTF-8 text: {exc.reason} at byte {exc.start}")
                continue
            request = self._decode_json(where, data)
            if request is not None:
                yield where, request

    def _read_json_document(
        self, name: str, data: bytes
    ) -> Iterator[tuple[Where, ExportTraceServiceRequest]]:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            self._fail(Where(name), f"not UTF-8 text: {exc.reason} at byte {exc.start}")
            return
        decoder = json.JSONDecoder()
        pos, end = 0, len(text)
        while True:
            while pos < end and text[pos] in " \t\r\n":
                pos += 1
            if pos >= end:
                return
            line = text.count("\n", 0, pos) + 1
            try:
                value, pos = decoder.raw_decode(text, pos)
            except json.JSONDecodeError as exc:
                self._fail(
                    Where(name, exc.lineno, exc.colno), f"not valid JSON: {exc.msg} (reading stops)"
                )
                return
            where = Where(name, line)
            request = self._decode_json(where, value)
            if request is not None:
                yield where, request

    def _decode_json(self, where: Where, data: Any) -> ExportTraceServiceRequest | None:
        if isinstance(data, list):
            self._fail(
                where,
                "a JSON array; expected one OTLP/JSON ExportTraceServiceRequest object per line",
            )
            return None
        if not isinstance(data, dict):
            self._fail(
                where, f"expected an OTLP/JSON ExportTraceServiceRequest object, got {data!r:.40}"
            )
            return None
        if not any(k in data for k in _TRACE_KEYS):
            if any(k in data for k in _OTHER_SIGNALS):
                self.other_signals += 1
                return None
            if data:
                keys = ", ".join(sorted(data)[:5])
                self._fail(
                    where,
                    f"not an OTLP trace request: no 'resourceSpans' (top-level keys: {keys})",
                )
                return None
        try:
            request = decode_request_dict(data)
        except ValueError as exc:
            self._fail(where, f"not an OTLP/JSON trace request: {exc}")
            return None
        self.records += 1
        return request

    # -- protobuf ----------------------------------------------------------------------------

    def _read_protobuf(
        self, name: str, data: bytes
    ) -> Iterator[tuple[Where, ExportTraceServiceRequest]]:
        framings = _framings(data)
        chosen = None
        for framing in framings:
            if framing.valid():
                chosen = framing
                break
        if chosen is None:
            chosen = framings[0]
        for i, (offset, body) in enumerate(chosen.frames, 1):
            where = Where(name, message=i, offset=offset)
            try:
                request = ExportTraceServiceRequest.FromString(body)
            except (DecodeError, RecursionError) as exc:
                self._fail(
                    where,
                    f"cannot decode a protobuf ExportTraceServiceRequest ({chosen.name}): {exc}",
                )
                continue
            self.records += 1
            yield where, request
        if chosen.problem is not None:
            offset, message = chosen.problem
            self._fail(Where(name, offset=offset), f"{message} ({chosen.name})")

    # -- spans -------------------------------------------------------------------------------

    def _spans(self, where: Where, request: ExportTraceServiceRequest) -> Iterator[FileSpan]:
        extract = self.extract
        for i, resource_spans in enumerate(request.resource_spans):
            shared = SharedResource(resource_spans.resource)
            for j, scope_spans in enumerate(resource_spans.scope_spans):
                scope = scope_spans.scope
                names = (scope.name, scope.version)
                eval_scope = scope.name == _EVAL_SCOPE
                for k, span in enumerate(scope_spans.spans):
                    problem = _bad_ids(span)
                    if problem is not None:
                        path = f"resourceSpans[{i}].scopeSpans[{j}].spans[{k}]"
                        self._fail(where, f"{path}: {problem}")
                        continue
                    rule = None
                    for kv in span.attributes:
                        if kv.key == RULE_ATTR:
                            rule = kv.value.string_value
                            break
                    if rule is None and eval_scope:
                        rule = ""
                    self.spans += 1
                    yield FileSpan(ProtoSpanView(span, shared, names, extract), where, rule)


@dataclass
class _Framing:
    """One way to cut a protobuf file into messages."""

    name: str
    frames: list[tuple[int, bytes]]
    problem: tuple[int, str] | None  # (byte offset, message) where the framing broke

    def valid(self) -> bool:
        """Every message decodes, the framing holds, and there are spans with good ids."""
        if self.problem is not None or not self.frames:
            return False
        spans = 0
        for _, body in self.frames:
            try:
                request = ExportTraceServiceRequest.FromString(body)
            except (DecodeError, RecursionError):
                return False
            for rs in request.resource_spans:
                for ss in rs.scope_spans:
                    for span in ss.spans:
                        if _bad_ids(span) is not None:
                            return False
                        spans += 1
        return spans > 0


def _framings(data: bytes) -> list[_Framing]:
    """The framings to try, most likely first."""
    single = _Framing("one serialized ExportTraceServiceRequest", [(0, data)], None)
    fixed = _Framing("messages with 4-byte big-endian length prefixes", *_fixed_frames(data))
    varint = _Framing("messages with varint length prefixes", *_varint_frames(data))
    if data[:1] == b"\x00":
        return [fixed, varint, single]
    if data[:1] == b"\x0a":
        return [single, fixed, varint]
    return [varint, fixed, single]


def _fixed_frames(data: bytes) -> tuple[list[tuple[int, bytes]], tuple[int, str] | None]:
    frames: list[tuple[int, bytes]] = []
    pos, end = 0, len(data)
    while pos < end:
        if end - pos < 4:
            return frames, (pos, f"truncated: {end - pos} byte(s) where a 4-byte length belongs")
        size = int.from_bytes(data[pos : pos + 4], "big")
        if pos + 4 + size > end:
            return frames, (
                pos,
                f"truncated: a message of {size} bytes is announced, {end - pos - 4} are left",
            )
        frames.append((pos, data[pos + 4 : pos + 4 + size]))
        pos += 4 + size
    return frames, None


def _varint_frames(data: bytes) -> tuple[list[tuple[int, bytes]], tuple[int, str] | None]:
    frames: list[tuple[int, bytes]] = []
    pos, end = 0, len(data)
    while pos < end:
        size, shift, start = 0, 0, pos
        while True:
            if pos >= end or shift > 63:
                return frames, (start, "truncated or invalid varint length prefix")
            byte = data[pos]
            pos += 1
            size |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        if pos + size > end:
            return frames, (
                start,
                f"truncated: a message of {size} bytes is announced, {end - pos} are left",
            )
        frames.append((start, data[pos : pos + size]))
        pos += size
    return frames, None


def _bad_ids(span: Any) -> str | None:
    return span_ids_problem(span.trace_id, span.span_id, span.parent_span_id)


def _walk(root: str) -> Iterator[str]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if not name.startswith("."):
                path = os.path.join(dirpath, name)
                if os.path.isfile(path):
                    yield path


def _read_some(stream: IO[bytes], n: int) -> bytes:
    """Up to ``n`` bytes, fewer only at the end of the stream."""
    parts, got = [], 0
    while got < n:
        chunk = stream.read(n - got)
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def _lines(head: bytes, stream: IO[bytes]) -> Iterator[bytes]:
    """The lines of ``head`` followed by the rest of ``stream``, without their newlines."""
    pending: list[bytes] = []
    chunk = head
    while chunk:
        parts = chunk.split(b"\n")
        if len(parts) == 1:
            pending.append(chunk)
        else:
            pending.append(parts[0])
            yield b"".join(pending)
            yield from parts[1:-1]
            pending = [parts[-1]]
        chunk = stream.read(_CHUNK)
    tail = b"".join(pending)
    if tail:
        yield tail


class _Prefixed:
    """A readable stream: ``head`` and then the rest of ``stream`` (for the gzip reader)."""

    def __init__(self, head: bytes, stream: IO[bytes]) -> None:
        self._head = head
        self._stream = stream

    def read(self, n: int = -1) -> bytes:
        if self._head:
            if n is None or n < 0:
                out, self._head = self._head + self._stream.read(), b""
                return out
            out, self._head = self._head[:n], self._head[n:]
            return out
        return self._stream.read(n)
