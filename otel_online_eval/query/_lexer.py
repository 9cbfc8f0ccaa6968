"""Split a filter clause into tokens, each with its 0-based offset."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from otel_online_eval._errors import FilterSyntaxError
from otel_online_eval.query._fields import KEYWORDS

__all__ = ["Tok", "Token", "describe", "tokenize"]


class Tok(enum.Enum):
    STRING = "string"
    NUMBER = "number"
    IDENT = "name"
    KEYWORD = "keyword"
    OP = "operator"
    END = "end of input"


@dataclass(frozen=True, slots=True)
class Token:
    """One token: its kind, its value (upper-cased keyword, operator text, decoded literal or
    identifier) and its source span ``[start, end)``."""

    kind: Tok
    value: str | int | float
    start: int
    end: int
    text: str


_TWO_CHAR_OPS = frozenset({"==", "!=", "<>", "<=", ">="})
_ONE_CHAR_OPS = frozenset("()[],.=<>+-*/")
_WHITESPACE = frozenset(" \t\r\n\f\v")


def describe(token: Token) -> str:
    """How a message names a token: ``'AND'``, ``string 'abc'``, ``end of input``."""
    if token.kind is Tok.END:
        return "end of input"
    text = token.text if len(token.text) <= 40 else token.text[:37] + "..."
    if token.kind is Tok.STRING:
        return f"string {text}"
    return f"'{text}'"


def tokenize(text: str) -> list[Token]:
    """The tokens of ``text``, ending with one ``END`` token.

    Raises:
        FilterSyntaxError: an unterminated string, a malformed number or a stray character.
    """
    tokens: list[Token] = []
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c in _WHITESPACE:
            i += 1
            continue
        start = i
        if c == "'" or c == '"':
            value, i = _string(text, i)
            tokens.append(Token(Tok.STRING, value, start, i, text[start:i]))
        elif c.isascii() and c.isdigit():
            i = _digits(text, i)
            is_float = False
            if i + 1 < n and text[i] == "." and _is_digit(text[i + 1]):
                i = _digits(text, i + 1)
                is_float = True
            if i < n and text[i] in "eE":
                j = i + 1
                if j < n and text[j] in "+-":
                    j += 1
                if j < n and _is_digit(text[j]):
                    i = _digits(text, j)
                    is_float = True
            raw = text[start:i]
            if i < n and (_is_ident_char(text[i])):
                raise FilterSyntaxError(
                    f"malformed number '{raw}{text[i]}': a number cannot be followed by a letter",
                    text,
                    start,
                )
            number: int | float = float(raw) if is_float else int(raw)
            tokens.append(Token(Tok.NUMBER, number, start, i, raw))
        elif c == "_" or (c.isascii() and c.isalpha()):
            while i < n and _is_ident_char(text[i]):
                i += 1
            word = text[start:i]
            upper = word.upper()
            if upper in KEYWORDS:
                tokens.append(Token(Tok.KEYWORD, upper, start, i, word))
            else:
                tokens.append(Token(Tok.IDENT, word, start, i, word))
        elif text[i : i + 2] in _TWO_CHAR_OPS:
            i += 2
            tokens.append(Token(Tok.OP, text[start:i], start, i, text[start:i]))
        elif c in _ONE_CHAR_OPS:
            i += 1
            tokens.append(Token(Tok.OP, c, start, i, c))
        else:
            hint = ""
            if c == "!":
                hint = "; use NOT or !="
            elif c in "&|":
                hint = "; use AND / OR"
            raise FilterSyntaxError(f"unexpected character {c!r}{hint}", text, start)
    tokens.append(Token(Tok.END, "", n, n, ""))
    return tokens


def _is_digit(c: str) -> bool:
    return c.isascii() and c.isdigit()


def _is_ident_char(c: str) -> bool:
    return c == "_" or (c.isascii() and c.isalnum())


def _digits(text: str, i: int) -> int:
    n = len(text)
    while i < n and _is_digit(text[i]):
        i += 1
    return i


def _string(text: str, start: int) -> tuple[str, int]:
    """A quoted string starting at ``start``; a doubled quote is one quote. No other escapes:
    backslashes are kept as they are (so LIKE and MATCH patterns read naturally)."""
    quote = text[start]
    parts: list[str] = []
    i = start + 1
    n = len(text)
    while True:
        j = text.find(quote, i)
        if j < 0:
            raise FilterSyntaxError(
                f"unterminated string: no closing {quote} for the string that starts here",
                text,
                start,
            )
        parts.append(text[i:j])
        if j + 1 < n and text[j + 1] == quote:
            parts.append(quote)
            i = j + 2
            continue
        return "".join(parts), j + 1
