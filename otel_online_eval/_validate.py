"""Typed reading of config mappings that collects every problem instead of stopping at one.

A :class:`Reader` wraps one mapping at one YAML path. Its accessors return a checked value (or
the default) and record an issue for anything wrong; :meth:`Reader.done` reports unknown keys.
The loader turns the recorded paths into file:line:column with the marks it kept while parsing.
"""

from __future__ import annotations

import builtins
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from otel_online_eval._errors import ConfigError, ConfigIssue

__all__ = ["KEY_SUFFIX", "Issues", "Mark", "Reader", "join_path"]

KEY_SUFFIX = "#key"
"""``marks[path + KEY_SUFFIX]`` is where the key of the value at ``path`` is written."""

T = TypeVar("T")
_MISSING: Any = object()


@dataclass(frozen=True, slots=True)
class Mark:
    """Where a value starts in its file (1-based); ``quoted`` when the scalar had a quote."""

    line: int
    column: int
    quoted: bool = False


def join_path(base: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{base}[{key}]"
    return f"{base}.{key}" if base else key


@dataclass
class Issues:
    """Collects problems; ``marks`` maps YAML paths to where their values start."""

    file: str = "<config>"
    marks: Mapping[str, Mark] = field(default_factory=dict)
    items: list[ConfigIssue] = field(default_factory=list)

    def add(self, path: str, message: str, offset: int | None = None, at_key: bool = False) -> None:
        """Record a problem at ``path``; ``offset`` is a column offset inside a scalar;
        ``at_key`` points at the key rather than the value (for unknown keys)."""
        mark = self.marks.get(path + KEY_SUFFIX) if at_key else None
        mark = mark or self._find_mark(path)
        line, column = (mark.line, mark.column) if mark else (0, 0)
        if mark and offset is not None:
            column += offset + (1 if mark.quoted else 0)
        self.items.append(ConfigIssue(path, message, self.file, line, column))

    def _find_mark(self, path: str) -> Mark | None:
        # A missing key has no mark of its own: point at the nearest enclosing value.
        while True:
            mark = self.marks.get(path)
            if mark is not None or not path:
                return mark
            cut = max(path.rfind("."), path.rfind("["))
            path = path[:cut] if cut > 0 else ""

    def __bool__(self) -> bool:
        return bool(self.items)

    def raise_if_any(self) -> None:
        if self.items:
            raise ConfigError(sorted(self.items, key=lambda i: (i.file, i.line, i.column)))


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a mapping",
    }.get(type(value), type(value).__name__)


class Reader:
    """Reads the keys of one mapping, recording issues under ``path``.

    Args:
        data: the value found at ``path`` (anything: a non-mapping is itself an issue).
        path: its YAML path, e.g. ``scorers.category``.
        issues: where problems go.
    """

    def __init__(self, data: Any, path: builtins.str, issues: Issues) -> None:
        self.path = path
        self.issues = issues
        self.ok = isinstance(data, Mapping)
        if data is not None and not self.ok:
            issues.add(path, f"must be a mapping, got {_type_name(data)}")
        self.data: Mapping[builtins.str, Any] = data if self.ok else {}
        self._seen: set[builtins.str] = set()

    def at(self, key: builtins.str | int) -> builtins.str:
        return join_path(self.path, key)

    def error(self, key: builtins.str, message: builtins.str, offset: int | None = None) -> None:
        self.issues.add(self.at(key), message, offset)

    def has(self, key: builtins.str) -> builtins.bool:
        return key in self.data

    def raw(self, key: builtins.str, default: Any = None) -> Any:
        self._seen.add(key)
        return self.data.get(key, default)

    def _get(self, key: builtins.str, default: Any, required: bool) -> Any:
        self._seen.add(key)
        if key not in self.data or self.data[key] is None:
            if required:
                self.issues.add(
                    self.at(key) if key in self.data else self.path,
                    f"'{key}' is required" if key not in self.data else "must not be empty",
                )
            return _MISSING
        return self.data[key]

    def str(self, key: builtins.str, default: Any = None, required: builtins.bool = False) -> Any:
        value = self._get(key, default, required)
        if value is _MISSING:
            return default
        if not isinstance(value, str):
            self.error(key, f"must be a string, got {_type_name(value)}")
            return default
        return value

    def bool(self, key: builtins.str, default: builtins.bool = False) -> builtins.bool:
        value = self._get(key, default, False)
        if value is _MISSING:
            return default
        if not isinstance(value, bool):
            self.error(key, f"must be true or false, got {value!r}")
            return default
        return value

    def number(
        self,
        key: builtins.str,
        default: Any = None,
        *,
        lo: float | None = None,
        hi: float | None = None,
        required: builtins.bool = False,
        integer: builtins.bool = False,
    ) -> Any:
        value = self._get(key, default, required)
        if value is _MISSING:
            return default
        kind = "a whole number" if integer else "a number"
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or (integer and not isinstance(value, int))
        ):
            self.error(key, f"must be {kind}, got {value!r}")
            return default
        if isinstance(value, float) and not math.isfinite(value):
            self.error(key, f"must be a finite number, got {value!r}")
            return default
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            if lo is not None and hi is not None:
                self.error(key, f"must be between {lo:g} and {hi:g}, got {value!r}")
            elif lo is not None:
                self.error(key, f"must be at least {lo:g}, got {value!r}")
            else:
                self.error(key, f"must be at most {hi:g}, got {value!r}")
            return default
        return value

    def choice(
        self,
        key: builtins.str,
        choices: Iterable[builtins.str],
        default: Any = None,
        required: builtins.bool = False,
    ) -> Any:
        value = self.str(key, _MISSING, required)
        if value is _MISSING:
            return default
        allowed = list(choices)
        if value not in allowed:
            self.error(key, f"unknown value {value!r}; expected one of: {', '.join(allowed)}")
            return default
        return value

    def list(
        self,
        key: builtins.str,
        item: Callable[[Any, builtins.str], T | None],
        default: Any = None,
        required: builtins.bool = False,
        allow_scalar: builtins.bool = False,
    ) -> Any:
        """A list whose items are checked by ``item(value, path)`` (None = rejected item)."""
        value = self._get(key, default, required)
        if value is _MISSING:
            return default
        if allow_scalar and not isinstance(value, list):
            value = [value]
        if not isinstance(value, list):
            self.error(key, f"must be a list, got {_type_name(value)}")
            return default
        out = []
        for i, elem in enumerate(value):
            checked = item(elem, join_path(self.at(key), i))
            if checked is not None:
                out.append(checked)
        return out

    def str_list(
        self,
        key: builtins.str,
        default: Any = None,
        required: builtins.bool = False,
        allow_scalar: builtins.bool = False,
    ) -> Any:
        def one(value: Any, path: builtins.str) -> Any:
            if not isinstance(value, str):
                self.issues.add(path, f"must be a string, got {_type_name(value)}")
                return None
            return value

        return self.list(key, one, default, required, allow_scalar)

    def sub(self, key: builtins.str) -> Reader:
        """A reader for the mapping under ``key`` (an empty one if absent)."""
        self._seen.add(key)
        return Reader(self.data.get(key), self.at(key), self.issues)

    def done(self) -> None:
        """Record every key that no accessor asked for."""
        known = sorted(self._seen)
        for key in self.data:
            if key not in self._seen:
                hint = f"; expected one of: {', '.join(known)}" if known else ""
                self.issues.add(self.at(str(key)), f"unknown key '{key}'{hint}", at_key=True)
