"""The ``llm_judge`` options: the endpoint, the model, how to ask, and the limits.

Field comments are the user reference (docs/judges.md repeats them with examples).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from otel_online_eval._validate import Reader
from otel_online_eval.scorers._fields import describe

__all__ = ["JudgeConfig", "Limits", "read_judge_config", "read_limits"]

MODES = ("tools", "json_schema")
DEFAULT_TIMEOUT_S = 30.0  # the scorer-level timeout_s default (rules.DEFAULT_TIMEOUT_S)
MAX_RESPONSE_BYTES = 4 * 1024 * 1024  # a verdict is a few KB; reasoning models' answers < 1 MB
_EMPTY: Mapping[str, str] = MappingProxyType({})
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an HTTP field name (RFC 9110, 5.1)
_BREAKS = re.compile(r"[\r\n\x00]")


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-scorer limits. The scorer's own ``timeout_s`` (30 s by default, enforced by the
    engine) caps each call as a whole: waits, attempts and backoff included. The judge never
    starts a wait or an attempt it cannot finish within it, and clips the last attempt's
    timeout to what is left, so that it records why it stopped rather than a bare timeout.
    With the defaults the worst case (3 attempts of 8 s and two backoffs of at most 0.5 and 1 s)
    is 25.5 s.

    Attributes:
        concurrency: judge calls in flight at once.
        requests_per_second: requests started per second, evenly spaced; None: no limit.
        tokens_per_minute: judge tokens (prompt + answer) per minute; each call is counted
            before it starts by estimate (prompt characters / 4 + ``max_tokens`` or 256), then
            corrected with the usage the endpoint reports. None: no limit.
        timeout_s: one HTTP attempt.
        retries: attempts after the first, on 429, 5xx, timeouts and connection errors.
        backoff_s: the first backoff's ceiling; each retry doubles it (full jitter: the wait is
            uniform between 0 and the ceiling). A ``Retry-After`` on 429 / 503 is waited instead.
        max_backoff_s: the highest ceiling.
        circuit_failures: consecutive failed attempts (5xx, timeout, connection) that open the
            circuit: no calls, every span skipped, for ``circuit_cooldown_s``; then one probe.
        circuit_cooldown_s: how long the circuit stays open.
        auth_pause_s: on 401 / 403 / 404 the scorer pauses (skips) this long and logs an error.
        budget_tokens_per_hour: judge tokens over the last hour; beyond it calls are skipped.
            None: no budget.
        max_response_bytes: the largest answer body accepted, counted after decompression
            (gzip / deflate); a larger one ends the attempt with an error and its connection
            is dropped, so a compressed bomb costs at most this much memory per call.
    """

    concurrency: int = 8
    requests_per_second: float | None = None
    tokens_per_minute: int | None = None
    timeout_s: float = 8.0
    retries: int = 2
    backoff_s: float = 0.5
    max_backoff_s: float = 4.0
    circuit_failures: int = 5
    circuit_cooldown_s: float = 30.0
    auth_pause_s: float = 300.0
    budget_tokens_per_hour: int | None = None
    max_response_bytes: int = MAX_RESPONSE_BYTES


@dataclass(frozen=True, slots=True)
class JudgeConfig:
    """Where and how the judge is asked.

    Attributes:
        base_url: the OpenAI-compatible API root; requests go to ``{base_url}/chat/completions``.
        model: the judge model (for Azure, the deployment is in ``base_url``).
        api_key: sent as ``Authorization: Bearer``; never logged nor shown in errors or repr.
        headers: extra request headers (Azure: ``api-key``); values are never logged.
        query: query parameters (Azure: ``api-version``).
        temperature: sampling temperature; None leaves it out of the request.
        max_tokens: the judge's answer limit; None leaves it out.
        mode: ``tools`` (a forced ``select_choice`` function call) or ``json_schema`` (a
            JSON-schema ``response_format``, for servers without tool calls).
        limits: see :class:`Limits`.
        call_timeout_s: the scorer's ``timeout_s``: the whole call's deadline.
        max_chars: the longest value placed in the prompt; longer values are cut, with a note.
    """

    base_url: str
    model: str
    api_key: str | None = field(default=None, repr=False)
    headers: Mapping[str, str] = field(default_factory=lambda: _EMPTY, repr=False)
    query: Mapping[str, str] = field(default_factory=lambda: _EMPTY, repr=False)
    temperature: float | None = 0.0
    max_tokens: int | None = None
    mode: str = "tools"
    limits: Limits = field(default_factory=Limits)
    call_timeout_s: float = DEFAULT_TIMEOUT_S
    max_chars: int = 20_000

    @property
    def endpoint(self) -> str:
        """The URL that is called, without the query (safe to log)."""
        return self.base_url.rstrip("/") + "/chat/completions"


def _str_map(opts: Reader, key: str) -> dict[str, str]:
    raw = opts.raw(key)
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        opts.error(key, f"must be a mapping of name -> string, got {describe(raw)}")
        return {}
    out = {}
    for name, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            opts.issues.add(f"{opts.at(key)}.{name}", f"must be a string, got {describe(value)}")
            continue
        out[str(name)] = str(value)
    return out


def _check_headers(opts: Reader, headers: dict[str, str]) -> None:
    """Names must be HTTP tokens and values single lines: a CR or LF would end the head."""
    for name, value in headers.items():
        where = f"{opts.at('headers')}.{name}"
        if not _TOKEN.fullmatch(name):
            opts.issues.add(where, f"{name!r} is not an HTTP header name")
        elif _BREAKS.search(value):
            opts.issues.add(where, "the value must not hold a CR, LF or NUL character")


def read_limits(opts: Reader, call_timeout_s: float) -> Limits:
    """The ``limits:`` mapping, checked against the scorer's overall ``timeout_s``."""
    d = Limits()
    rps = opts.number("requests_per_second", None, lo=1e-6)
    tpm = opts.number("tokens_per_minute", None, lo=1, integer=True)
    budget = opts.number("budget_tokens_per_hour", None, lo=1, integer=True)
    limits = Limits(
        concurrency=int(opts.number("concurrency", d.concurrency, lo=1, hi=10_000, integer=True)),
        requests_per_second=None if rps is None else float(rps),
        tokens_per_minute=None if tpm is None else int(tpm),
        timeout_s=float(opts.number("timeout_s", d.timeout_s, lo=0.001)),
        retries=int(opts.number("retries", d.retries, lo=0, hi=100, integer=True)),
        backoff_s=float(opts.number("backoff_s", d.backoff_s, lo=0)),
        max_backoff_s=float(opts.number("max_backoff_s", d.max_backoff_s, lo=0)),
        circuit_failures=int(
            opts.number("circuit_failures", d.circuit_failures, lo=1, integer=True)
        ),
        circuit_cooldown_s=float(opts.number("circuit_cooldown_s", d.circuit_cooldown_s, lo=0)),
        auth_pause_s=float(opts.number("auth_pause_s", d.auth_pause_s, lo=0)),
        budget_tokens_per_hour=None if budget is None else int(budget),
        max_response_bytes=int(
            opts.number(
                "max_response_bytes", d.max_response_bytes, lo=1024, hi=1 << 30, integer=True
            )
        ),
    )
    if opts.has("timeout_s") and limits.timeout_s > call_timeout_s:
        opts.error(
            "timeout_s",
            f"one attempt ({limits.timeout_s:g}s) may not take longer than the scorer's "
            f"timeout_s ({call_timeout_s:g}s), which caps the whole call; raise the scorer's "
            "timeout_s or lower limits.timeout_s",
        )
    if limits.max_backoff_s < limits.backoff_s:
        opts.error(
            "max_backoff_s",
            f"must be at least backoff_s ({limits.backoff_s:g}), got {limits.max_backoff_s:g}",
        )
    opts.done()
    return limits


def read_judge_config(opts: Reader) -> JudgeConfig | None:
    """The endpoint, model, request options and limits of an ``llm_judge`` scorer."""
    raw_timeout = opts.data.get("timeout_s", DEFAULT_TIMEOUT_S)
    call_timeout = (
        float(raw_timeout)
        if isinstance(raw_timeout, (int, float)) and not isinstance(raw_timeout, bool)
        else DEFAULT_TIMEOUT_S
    )
    base_url = opts.str("base_url", required=True)
    if base_url is not None and not base_url.startswith(("http://", "https://")):
        opts.error("base_url", f"must start with http:// or https://, got {base_url!r}")
    model = opts.str("model", required=True)
    if model is not None and not model.strip():
        opts.error("model", "must not be empty")
    api_key = opts.str("api_key")
    if api_key and _BREAKS.search(api_key):
        opts.error("api_key", "must not hold a CR, LF or NUL character (a trailing newline?)")
    headers = _str_map(opts, "headers")
    _check_headers(opts, headers)
    query = _str_map(opts, "query")
    temperature = opts.number("temperature", 0.0, lo=0, hi=2)
    max_tokens = opts.number("max_tokens", None, lo=1, integer=True)
    mode = opts.choice("mode", MODES, "tools")
    max_chars = opts.number("max_chars", 20_000, lo=100, integer=True)
    limits = read_limits(opts.sub("limits"), call_timeout)
    if base_url is None or model is None:
        return None
    return JudgeConfig(
        base_url=base_url,
        model=model,
        api_key=api_key or None,
        headers=MappingProxyType(headers),
        query=MappingProxyType(query),
        temperature=None if temperature is None else float(temperature),
        max_tokens=None if max_tokens is None else int(max_tokens),
        mode=mode,
        limits=limits,
        call_timeout_s=call_timeout,
        max_chars=int(max_chars),
    )
