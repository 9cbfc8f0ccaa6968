"""A fake OpenAI-compatible server for tests: a real HTTP server on 127.0.0.1.

It speaks ``POST /v1/chat/completions`` (plain JSON and ``stream: true`` server-sent events),
records every request, and answers what the test scripts::

    with FakeOpenAI() as server:
        server.script(text("Paris"))                      # every request: this answer
        server.script(tool_call("get_weather", {"city": "Paris"}), error(500))  # in turn
        client = OpenAI(base_url=server.base_url, api_key="test")
        ...
        server.requests[0].body["messages"]

A reply is a :class:`Reply`: a status, headers, a JSON body or a list of SSE chunks, and an
optional delay. Replies given to :meth:`FakeOpenAI.script` are used in order, the last one
repeating; :meth:`FakeOpenAI.respond_with` takes a function of the request instead.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

__all__ = [
    "FakeOpenAI",
    "Reply",
    "Request",
    "completion",
    "error",
    "fake_openai",
    "quiet",
    "text",
    "tool_call",
]


@dataclass
class Request:
    """One request the server received."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class Reply:
    """What to answer: ``body`` as JSON, or ``chunks`` as server-sent events."""

    status: int = 200
    body: dict[str, Any] | None = None
    chunks: list[dict[str, Any]] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


def completion(
    message: dict[str, Any],
    model: str = "gpt-4o-mini",
    finish_reason: str = "stop",
    prompt_tokens: int = 11,
    completion_tokens: int = 7,
) -> dict[str, Any]:
    """A chat.completion body with one choice."""
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [
            {"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": None}
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def text(content: str, **kwargs: Any) -> Reply:
    """An assistant answer; streamed as chunks when the request asks for a stream."""
    return Reply(body=completion({"role": "assistant", "content": content}, **kwargs))


def tool_call(
    name: str, arguments: dict[str, Any], call_id: str = "call_1", **kwargs: Any
) -> Reply:
    """An assistant message that calls one tool (function)."""
    message = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": call_id,
                "type": "function",
                "function": {"name": name, "arguments": json.dumps(arguments)},
            }
        ],
    }
    return Reply(body=completion(message, finish_reason="tool_calls", **kwargs))


def error(
    status: int,
    message: str = "fake error",
    headers: dict[str, str] | None = None,
    delay_s: float = 0.0,
) -> Reply:
    """An OpenAI-style error answer (429 with ``{'Retry-After': '1'}``, 500, 401, ...)."""
    body = {"error": {"message": message, "type": "fake_error", "code": str(status)}}
    return Reply(status=status, body=body, headers=dict(headers or {}), delay_s=delay_s)


def _stream_chunks(body: dict[str, Any], include_usage: bool) -> list[dict[str, Any]]:
    """The chunks a streaming server sends for ``body`` (content split into words)."""
    choice = body["choices"][0]
    message = choice["message"]
    base = {
        "id": body["id"],
        "object": "chat.completion.chunk",
        "created": body["created"],
        "model": body["model"],
    }
    chunks = [
        {
            **base,
            "choices": [
                {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
            ],
        }
    ]
    content = message.get("content") or ""
    words = content.split(" ")
    for i, word in enumerate(words):
        piece = word if i == len(words) - 1 else word + " "
        if piece:
            chunks.append(
                {
                    **base,
                    "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}],
                }
            )
    for i, call in enumerate(message.get("tool_calls") or []):
        args = call["function"]["arguments"]
        half = len(args) // 2
        chunks.append(
            {
                **base,
                "choices": [
                    {
                        "index": 0,
                        "delta": {
                            "tool_calls": [
                                {
                                    "index": i,
                                    "id": call["id"],
                                    "type": "function",
                                    "function": {
                                        "name": call["function"]["name"],
                                        "arguments": args[:half],
                                    },
                                }
                            ]
                        },
                        "finish_reason": None,
                    }
                ],
            }
        )
        chunks.append(
            {
                **base,
                "choices": [
                    {
                        "index": 0,
                        "delta": {
                            "tool_calls": [{"index": i, "function": {"arguments": args[half:]}}]
                        },
                        "finish_reason": None,
                    }
                ],
            }
        )
    chunks.append(
        {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": choice["finish_reason"]}]}
    )
    if include_usage:
        chunks.append({**base, "choices": [], "usage": body["usage"]})
    return chunks


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = {"_raw": raw.decode("utf-8", "replace")}
        request = Request(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
        reply = self.server.fake._record(request)
        if reply.delay_s:
            time.sleep(reply.delay_s)
        if reply.status == 200 and body.get("stream") and reply.body is not None:
            options = body.get("stream_options") or {}
            chunks = reply.chunks or _stream_chunks(reply.body, bool(options.get("include_usage")))
            self._send_stream(chunks, reply.headers)
        else:
            self._send_json(reply.status, reply.body or {}, reply.headers)

    def _send_json(self, status: int, body: dict[str, Any], headers: dict[str, str]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _send_stream(self, chunks: Sequence[dict[str, Any]], headers: dict[str, str]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        for chunk in chunks:
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.flush()
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, fake: FakeOpenAI) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.fake = fake


class FakeOpenAI:
    """The server; starts on construction, stops with :meth:`stop` or the ``with`` block."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._replies: list[Reply] = [text("ok")]
        self._responder: Callable[[Request], Reply] | None = None
        self.requests: list[Request] = []
        self._server = _Server(self)
        self.port = self._server.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def script(self, *replies: Reply) -> None:
        """Answer these in turn; the last one repeats."""
        with self._lock:
            self._replies = list(replies)
            self._responder = None

    def respond_with(self, responder: Callable[[Request], Reply]) -> None:
        """Answer with ``responder(request)``."""
        with self._lock:
            self._responder = responder

    def _record(self, request: Request) -> Reply:
        with self._lock:
            self.requests.append(request)
            if self._responder is not None:
                return self._responder(request)
            return self._replies.pop(0) if len(self._replies) > 1 else self._replies[0]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeOpenAI:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def quiet(server: FakeOpenAI) -> FakeOpenAI:
    """Stop ``server`` printing a traceback when a client hangs up before a (delayed) reply is
    written, as clients that time out do."""
    inner = server._server

    def handle_error(request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            _Server.handle_error(inner, request, client_address)

    inner.handle_error = handle_error  # type: ignore[method-assign]
    return server


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    """A fresh fake OpenAI server for one test."""
    with FakeOpenAI() as server:
        yield server
