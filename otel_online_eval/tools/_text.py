"""Plain-text output: tables, numbers, truncation, and a progress bar for terminals."""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import IO

__all__ = [
    "Progress",
    "fmt_duration",
    "fmt_num",
    "fmt_pct",
    "fmt_time",
    "one_line",
    "render_table",
    "truncate",
]


def truncate(text: str | None, width: int) -> str:
    """``text`` cut to ``width`` characters with an ellipsis (0: no limit)."""
    if text is None:
        return ""
    if width <= 0 or len(text) <= width:
        return text
    return text[: max(width - 1, 0)] + "…"


def one_line(text: str | None, width: int = 0) -> str:
    """``text`` with line breaks shown as ``⏎``, then truncated."""
    if text is None:
        return ""
    return truncate(text.replace("\r\n", "⏎").replace("\n", "⏎").replace("\r", "⏎"), width)


def fmt_num(value: float | None, digits: int = 3) -> str:
    """A score: ``-`` when absent, integers without decimals, others with ``digits``."""
    if value is None:
        return "-"
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.{digits}f}".rstrip("0").rstrip(".")


def fmt_pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f}%"


def fmt_time(ns: int) -> str:
    """A timestamp (ns since the epoch) in UTC, ISO 8601 with milliseconds."""
    if ns <= 0:
        return "-"
    dt = datetime.fromtimestamp(ns / 1e9, tz=timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def fmt_duration(seconds: float) -> str:
    seconds = max(0, int(seconds + 0.5))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def render_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    right: Sequence[int] = (),
    max_width: int = 0,
) -> str:
    """A table with a header and a rule under it; columns in ``right`` are right-aligned.

    With ``max_width`` the last column is cut so that lines fit (never below 20 characters).
    """
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    if max_width and len(widths) > 1:
        fixed = sum(widths[:-1]) + 2 * (len(widths) - 1)
        widths[-1] = min(widths[-1], max(max_width - fixed, 20))

    def line(cells: Sequence[str]) -> str:
        out = []
        for i, cell in enumerate(cells):
            cell = truncate(cell, widths[i]) if i == len(cells) - 1 else cell
            out.append(cell.rjust(widths[i]) if i in right else cell.ljust(widths[i]))
        return "  ".join(out).rstrip()

    lines = [line(headers), "  ".join("-" * w for w in widths)]
    lines.extend(line(row) for row in rows)
    return "\n".join(lines)


def terminal_width(stream: IO[str]) -> int:
    """The terminal's width when ``stream`` is one, else 0 (no limit)."""
    try:
        if stream.isatty():
            return shutil.get_terminal_size((100, 24)).columns
    except (AttributeError, ValueError, OSError):
        pass
    return 0


class Progress:
    """A one-line progress bar with rate and ETA, redrawn at most 10 times a second.

    Disabled (prints nothing) unless ``enabled``; the callers enable it when stderr is a
    terminal.
    """

    def __init__(self, total: int, stream: IO[str], enabled: bool, unit: str = "spans") -> None:
        self.total = total
        self.stream = stream
        self.enabled = enabled and total > 0
        self.unit = unit
        self.start = time.monotonic()
        self._last = 0.0
        self._drawn = False

    def update(self, done: int, note: str = "", force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < 0.1:
            return
        self._last = now
        elapsed = max(now - self.start, 1e-9)
        rate = done / elapsed
        frac = min(done / self.total, 1.0)
        width = 24
        filled = int(frac * width)
        bar = "█" * filled + "░" * (width - filled)
        eta = fmt_duration((self.total - done) / rate) if rate > 0 and done < self.total else "-"
        text = (
            f"\rscoring {done}/{self.total} {bar} {frac * 100:5.1f}%  "
            f"{rate:,.1f} {self.unit}/s  ETA {eta}"
        )
        if note:
            text += f"  {note}"
        self.stream.write(text + "\x1b[K")
        self.stream.flush()
        self._drawn = True

    def finish(self) -> None:
        if self._drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._drawn = False
