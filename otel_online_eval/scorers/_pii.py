"""The ``pii`` scorer: personal data in the text, by kind, never by value.

Detectors (RE2 patterns, linear in the text, then a check in Python):

* ``email`` — ``local@domain.tld``.
* ``phone`` — international numbers with a leading ``+``; North American ``(555) 123-4567``,
  ``555-123-4567``, ``555.123.4567``; national numbers with a leading 0 in groups
  (``020 7946 0958``). 7 to 15 digits. Bare digit runs are not phones (they are mostly ids).
* ``credit_card`` — 13 to 19 digits, optionally in groups split by spaces or dashes, that pass
  the Luhn check.
* ``iban`` — upper-case IBANs, plain or in groups of four, 15 to 34 characters, that pass the
  ISO 13616 mod-97 check.
* ``ipv4`` — dotted quads with every octet in 0-255 (not a part of a longer dotted number).
* ``ipv6`` — anything :mod:`ipaddress` accepts with at least two non-zero-length groups
  (``::1`` and ``::`` are not reported).

Characters claimed by one detector are not reported again by a later one, in the order
email, iban, credit_card, ipv6, ipv4, phone (so a card number is not also a phone number).
"""

from __future__ import annotations

import bisect
import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import re2

from otel_online_eval._validate import Reader
from otel_online_eval.scorers._fields import FAIL, PASS, Field, builtin_type, describe, read_field
from otel_online_eval.scorers._heuristics import compile_re2
from otel_online_eval.scorers.base import EvalInput, Score

__all__ = ["PII_KINDS", "PiiScorer", "find_pii", "iban_ok", "luhn_ok"]

PII_KINDS: tuple[str, ...] = ("email", "phone", "credit_card", "iban", "ipv4", "ipv6")
"""Every detector, in the order used in metadata and messages."""

_NOUNS = {
    "email": ("email address", "email addresses"),
    "phone": ("phone number", "phone numbers"),
    "credit_card": ("credit card number", "credit card numbers"),
    "iban": ("IBAN", "IBANs"),
    "ipv4": ("IPv4 address", "IPv4 addresses"),
    "ipv6": ("IPv6 address", "IPv6 addresses"),
}


def luhn_ok(digits: str) -> bool:
    """The Luhn checksum of a string of digits."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def iban_ok(iban: str) -> bool:
    """The ISO 13616 mod-97 check of an IBAN without spaces (upper case)."""
    if not 15 <= len(iban) <= 34 or not iban.isalnum() or not iban.isascii():
        return False
    rearranged = iban[4:] + iban[:4]
    numeric = "".join(str(int(ch, 36)) for ch in rearranged)
    return int(numeric) % 97 == 1


def _digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())


# A check gets the whole text and the match's span; it returns the span to report or None.
_Check = Callable[[str, int, int], "tuple[int, int] | None"]


def _before(text: str, start: int) -> str:
    return text[start - 1] if start > 0 else ""


def _after(text: str, end: int, n: int = 1) -> str:
    return text[end : end + n]


def _check_email(text: str, start: int, end: int) -> tuple[int, int] | None:
    local = text[start : text.index("@", start)]
    if local.startswith(".") or local.endswith(".") or ".." in local:
        return None
    return start, end


def _check_iban(text: str, start: int, end: int) -> tuple[int, int] | None:
    # A printed IBAN may be followed by an upper-case word the pattern swallowed as a last
    # group: drop trailing groups until the checksum holds.
    while True:
        if iban_ok(text[start:end].replace(" ", "")):
            return start, end
        cut = text.rfind(" ", start, end)
        if cut <= start:
            return None
        end = cut


def _check_card(text: str, start: int, end: int) -> tuple[int, int] | None:
    digits = _digits(text[start:end])
    if not 13 <= len(digits) <= 19 or not digits.strip("0") or not luhn_ok(digits):
        return None
    return start, end


def _check_ipv4(text: str, start: int, end: int) -> tuple[int, int] | None:
    prev = _before(text, start)
    nxt = _after(text, end, 2)
    if prev in (".",) or (nxt[:1] == "." and nxt[1:2].isdigit()):
        return None
    return start, end


def _check_ipv6(text: str, start: int, end: int) -> tuple[int, int] | None:
    prev = _before(text, start)
    nxt = _after(text, end)
    if (prev and (prev.isalnum() or prev in ":_")) or (nxt and (nxt.isalnum() or nxt in ":_")):
        return None
    candidate = text[start:end]
    if sum(1 for group in candidate.split(":") if group) < 2:
        return None
    try:
        ipaddress.IPv6Address(candidate)
    except ValueError:
        return None
    return start, end


def _check_phone(text: str, start: int, end: int) -> tuple[int, int] | None:
    prev = _before(text, start)
    nxt = _after(text, end, 2)
    if (prev and (prev.isalnum() or prev in "+_")) or (nxt[:1].isalnum() or nxt[:1] == "_"):
        return None
    # Part of a longer run of digit groups ("0000 0000 0000 0000", "1 2 3 4 5 6 7 8 9"):
    # not a phone number on its own.
    if (nxt[:1] in (" ", "-", ".") and nxt[1:2].isdigit()) or (
        prev in (" ", "-", ".") and _before(text, start - 1).isdigit()
    ):
        return None
    digits = _digits(text[start:end])
    low = 8 if text[start] == "+" else 7
    if not low <= len(digits) <= 15 or not digits.strip("0"):
        return None
    return start, end


_PHONE = "|".join(
    (
        r"\+[0-9]{1,3}(?:[ .-]?\([0-9]{1,4}\))?(?:[ .-]?[0-9]{1,5}){1,7}",
        r"\(?\b[0-9]{3}\)?[ .-]?[0-9]{3}[ .-][0-9]{4}\b",
        r"\b0[0-9]{1,4}[ -][0-9]{3,4}[ -]?[0-9]{3,4}\b",
    )
)
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"

_DETECTORS: tuple[tuple[str, str, _Check], ...] = (
    ("email", r"[A-Za-z0-9._%+-]+@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,}", _check_email),
    ("iban", r"\b[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b", _check_iban),
    ("credit_card", r"\b[0-9](?:[ -]?[0-9]){12,18}\b", _check_card),
    ("ipv6", r"(?i)[0-9a-f]{0,4}(?::[0-9a-f]{0,4}){2,7}(?:\.[0-9]{1,3}){0,3}", _check_ipv6),
    ("ipv4", rf"\b(?:{_OCTET}\.){{3}}{_OCTET}\b", _check_ipv4),
    ("phone", _PHONE, _check_phone),
)

_COMPILED: tuple[tuple[str, re2._Regexp[str], _Check], ...] = tuple(
    (kind, compile_re2(pattern), check) for kind, pattern, check in _DETECTORS
)


def find_pii(text: str, kinds: Sequence[str] = PII_KINDS) -> dict[str, list[tuple[int, int]]]:
    """Where each kind of personal data occurs.

    Args:
        text: the text to scan.
        kinds: the detectors to run.

    Returns:
        kind -> the (start, end) character spans found, for the kinds found at least once.
    """
    wanted = set(kinds)
    starts: list[int] = []
    ends: list[int] = []
    found: dict[str, list[tuple[int, int]]] = {}
    for kind, pattern, check in _COMPILED:
        if kind not in wanted:
            continue
        for match in pattern.finditer(text):
            span = check(text, *match.span())
            if span is None:
                continue
            i = bisect.bisect_left(starts, span[1])
            if i and ends[i - 1] > span[0]:
                continue  # overlaps characters an earlier detector claimed
            starts.insert(i, span[0])
            ends.insert(i, span[1])
            found.setdefault(kind, []).append(span)
    return found


def _phrase(kind: str, count: int) -> str:
    singular, plural = _NOUNS[kind]
    return f"{count} {singular if count == 1 else plural}"


@dataclass(slots=True, eq=False)
class PiiScorer:
    """1 / pass when no personal data of the configured kinds is found; the metadata names
    the kinds found and the count, never the values."""

    name: str
    field: Field
    kinds: tuple[str, ...] = PII_KINDS

    def score(self, inp: EvalInput) -> Score:
        found = find_pii(self.field.text(inp), self.kinds)
        kinds = [k for k in PII_KINDS if k in found]
        count = sum(len(found[k]) for k in kinds)
        meta = {"kinds": ",".join(kinds), "count": count}
        if not count:
            return Score(1.0, PASS, f"no PII found (checked: {', '.join(self.kinds)})", meta)
        parts = ", ".join(_phrase(k, len(found[k])) for k in kinds)
        return Score(0.0, FAIL, f"found {parts}", meta)


@builtin_type("pii")
def build_pii(name: str, opts: Reader) -> PiiScorer | None:
    """``pii``: ``field``, ``kinds`` (a subset of email, phone, credit_card, iban, ipv4, ipv6;
    default all)."""
    field = read_field(opts)

    def one(value: Any, path: str) -> str | None:
        if not isinstance(value, str):
            opts.issues.add(path, f"must be a string, got {describe(value)}")
        elif value not in PII_KINDS:
            opts.issues.add(
                path, f"unknown kind {value!r}; expected one of: {', '.join(PII_KINDS)}"
            )
        else:
            return value
        return None

    kinds = opts.list("kinds", one, None, allow_scalar=isinstance(opts.raw("kinds"), str))
    if kinds is None:
        return PiiScorer(name, field)  # absent (or wrong, and then the issue discards it)
    if not kinds and opts.has("kinds") and opts.raw("kinds") == []:
        opts.error("kinds", "must not be empty; leave it out to check every kind")
        return None
    return PiiScorer(name, field, tuple(k for k in PII_KINDS if k in kinds))
