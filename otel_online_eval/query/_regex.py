"""RE2, the linear-time regex engine behind MATCH and complex LIKE patterns.

RE2 never backtracks, so a pattern like ``(a+)+$`` on a long ``aaa…b`` answers in linear time:
a filter cannot be turned into a denial of service by the text it reads. Texts are passed as
UTF-8 bytes (``surrogatepass`` keeps odd Python strings matchable), which is also the wrapper's
fast path.
"""

from __future__ import annotations

from typing import Any

import re2

__all__ = ["RegexError", "compile_regex", "search"]

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # RE2 would print every bad pattern to stderr


class RegexError(ValueError):
    """A pattern RE2 cannot compile; the message is RE2's."""


def compile_regex(pattern: str) -> Any:
    """Compile ``pattern`` with RE2.

    Raises:
        RegexError: the pattern is not valid RE2 syntax (e.g. look-around, back-references).
    """
    try:
        return re2.compile(pattern, _OPTIONS)
    except re2.error as exc:
        raw = exc.args[0] if exc.args else exc
        message = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        raise RegexError(message) from exc


def search(regex: Any, text: str) -> bool:
    """True when ``regex`` matches somewhere in ``text``."""
    return regex.search(text.encode("utf-8", "surrogatepass")) is not None
