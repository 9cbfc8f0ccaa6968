"""Pieces every built-in scorer type shares: the value it reads, its text form, option helpers.

A text scorer reads one value per span through a :class:`Field` (the ``field`` option: ``input``,
``output`` or a filter-language expression). A missing value (None) is a
:class:`~otel_online_eval.ScorerError` with a hint, never a silent 0. Values that are not strings
become text the way a reader would expect: mappings and sequences as JSON, numbers with
``str()``, booleans as ``true`` / ``false``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from otel_online_eval._errors import ScorerError
from otel_online_eval._validate import Reader
from otel_online_eval.scorers.base import EvalInput, Scorer
from otel_online_eval.scorers.registry import FieldGetter, field_getter, register

__all__ = [
    "FAIL",
    "PASS",
    "Field",
    "as_text",
    "builtin_type",
    "describe",
    "quote_list",
    "read_field",
    "require_any",
    "text_values",
]

PASS = "pass"
FAIL = "fail"

_HINTS = {
    "output": "no answer text was found on the span; point `field:` at the attribute that "
    "holds it, or check the `extract` presets",
    "input": "no prompt text was found on the span; point `field:` at the attribute that "
    "holds it, or check the `extract` presets",
}


F = TypeVar("F", bound=Callable[[str, Reader], "Scorer | None"])


def builtin_type(type_name: str, inline: bool = True) -> Callable[[F], F]:
    """Register a factory under ``type_name`` so that it yields None whenever reading its
    options recorded an issue: a scorer is built only from options that are entirely right.
    ``inline``: the type's scorers are cheap enough to run on the engine's loop."""

    def add(factory: F) -> F:
        @functools.wraps(factory)
        def checked(name: str, opts: Reader) -> Scorer | None:
            before = len(opts.issues.items)
            scorer = factory(name, opts)
            return None if len(opts.issues.items) > before else scorer

        register(type_name, inline)(checked)
        return factory

    return add


@dataclass(frozen=True, slots=True)
class Field:
    """The value a scorer looks at.

    Attributes:
        label: what the user wrote for ``field`` (``output``, ``input`` or an expression).
        get: reads the value from an :class:`EvalInput` (None when absent).
    """

    label: str
    get: FieldGetter

    def value(self, inp: EvalInput) -> Any:
        """The value, never None.

        Raises:
            ScorerError: when the value is missing, with a hint on where to look.
        """
        value = self.get(inp)
        if value is None:
            raise ScorerError(self.missing_message(inp))
        return value

    def text(self, inp: EvalInput) -> str:
        """The value as text (see :func:`as_text`); raises like :meth:`value`."""
        return as_text(self.value(inp))

    def missing_message(self, inp: EvalInput) -> str:
        hint = _HINTS.get(self.label)
        if hint is not None:
            return f"{self.label} is missing: {hint}"
        if inp.span is None:
            return f"{self.label} is missing: there is no span to read it from"
        return f"{self.label} is missing: the expression has no value on this span"


def read_field(opts: Reader, key: str = "field", default: str = "output") -> Field:
    """Read the ``field`` option (see :func:`~otel_online_eval.scorers.field_getter`)."""
    raw = opts.raw(key, default)
    label = raw if isinstance(raw, str) else default
    return Field(label, field_getter(opts, key, default))


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def as_text(value: Any) -> str:
    """The text a scorer reads for ``value``.

    Strings are returned as they are, bytes are decoded as UTF-8, mappings and sequences are
    serialised as JSON, booleans become ``true`` / ``false`` and other values go through
    ``str()``.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (Mapping, list, tuple)):
        return json.dumps(_plain(value), ensure_ascii=False, default=str)
    return str(value)


def describe(value: Any) -> str:
    """A value's kind for a message: ``a list``, ``a number``, ``null``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, Mapping):
        return "a mapping"
    return type(value).__name__


def quote_list(values: Sequence[str], limit: int = 5) -> str:
    """``'a', 'b' and 3 more`` for messages."""
    shown = ", ".join(repr(v) for v in values[:limit])
    rest = len(values) - limit
    return f"{shown} and {rest} more" if rest > 0 else shown


def text_values(
    opts: Reader, key: str = "values", *, allow_scalar: bool = False
) -> list[str] | None:
    """A required, non-empty list of non-empty strings (whole numbers are accepted as text).

    Returns:
        The values, or None when the option is missing or wrong (issues recorded).
    """
    bad = False

    def one(value: Any, path: str) -> str | None:
        nonlocal bad
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        if not isinstance(value, str):
            opts.issues.add(path, f"must be a string, got {describe(value)}")
            bad = True
            return None
        if value == "":
            opts.issues.add(path, "must not be an empty string")
            bad = True
            return None
        return value

    if (
        allow_scalar
        and isinstance(opts.raw(key), (int, str))
        and not isinstance(opts.raw(key), bool)
    ):
        values = opts.list(key, one, None, required=True, allow_scalar=True)
    else:
        values = opts.list(key, one, None, required=True)
    if values is None or bad:
        return None
    if not values:
        opts.error(key, "must not be empty")
        return None
    return list(values)


def require_any(opts: Reader, keys: Iterable[str], found: Iterable[Any]) -> bool:
    """Record an issue on the scorer when none of ``keys`` was given (all of ``found`` None)."""
    if any(value is not None for value in found):
        return True
    names = ", ".join(f"'{k}'" for k in keys)
    opts.issues.add(opts.path, f"needs at least one of {names}")
    return False
