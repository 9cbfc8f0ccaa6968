"""The exception family of otel-online-eval.

::

    OnlineEvalError
     ├── ConfigError              every problem of one config load, each with file:line:col and path
     ├── FilterSyntaxError        a filter or field expression that does not parse or type-check
     ├── ScorerError              a scorer that failed at run time (recorded on its score span)
     │    └── ScorerSkipped       a scorer that chose not to run (budget, circuit open, paused)
     └── MissingDependencyError   also an ImportError; names the pip extra to install

Callers catch at the level they need; the CLI catches ``OnlineEvalError``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "ConfigError",
    "ConfigIssue",
    "FilterSyntaxError",
    "MissingDependencyError",
    "OnlineEvalError",
    "ScorerError",
    "ScorerSkipped",
]


class OnlineEvalError(Exception):
    """Base of every error this package raises on purpose."""


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One thing wrong with a configuration.

    Attributes:
        path: the YAML path of the offending value, e.g. ``rules[0].sampling``.
        message: what is wrong, with the value and what is allowed.
        file: the file it came from (``<config>`` for in-memory configs).
        line: 1-based line, 0 when unknown.
        column: 1-based column, 0 when unknown.
    """

    path: str
    message: str
    file: str = "<config>"
    line: int = 0
    column: int = 0

    def __str__(self) -> str:
        where = self.file
        if self.line:
            where += f":{self.line}:{self.column}"
        prefix = f"{self.path}: " if self.path else ""
        return f"{where}: {prefix}{self.message}"


class ConfigError(OnlineEvalError):
    """A configuration that cannot be loaded; ``issues`` lists every problem found."""

    def __init__(self, issues: Sequence[ConfigIssue]) -> None:
        self.issues: tuple[ConfigIssue, ...] = tuple(issues)
        count = len(self.issues)
        head = f"{count} problem{'s' if count != 1 else ''} in the configuration"
        super().__init__(head + ":\n" + "\n".join(f"  {i}" for i in self.issues))


class FilterSyntaxError(OnlineEvalError):
    """A filter clause that does not parse; ``column`` is 1-based within ``text``."""

    def __init__(self, message: str, text: str, position: int) -> None:
        self.message = message
        self.text = text
        self.position = position
        self.column = position + 1
        caret = " " * position + "^"
        super().__init__(f"{self.column}: {message}\n  {text}\n  {caret}")


class ScorerError(OnlineEvalError):
    """A scorer failed or returned something that is not a score."""


class ScorerSkipped(ScorerError):
    """Raised by a scorer that deliberately did not score (its budget is spent, its circuit
    is open, it is paused). Recorded as a skip with the reason, not as an error."""


class MissingDependencyError(OnlineEvalError, ImportError):
    """An optional feature whose package is not installed."""

    def __init__(self, feature: str, extra: str) -> None:
        super().__init__(
            f"{feature} needs an optional dependency: pip install 'otel-online-eval[{extra}]'"
        )
        self.extra = extra
