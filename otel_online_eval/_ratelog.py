"""``RateLimitedLog``: one log line per kind of problem per interval, saying how many were quiet.

For hot paths (receiver handlers) where one bad client could otherwise write a traceback per
request.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

__all__ = ["RateLimitedLog"]


class RateLimitedLog:
    """Logs each ``kind`` at most once per ``every_s`` to ``logger``; safe from any thread.

    Args:
        logger: where the lines go.
        every_s: the least time between two lines of one kind.
    """

    def __init__(self, logger: logging.Logger, every_s: float = 10.0) -> None:
        self._logger = logger
        self._every = every_s
        self._last: dict[str, float] = {}
        self._quiet: dict[str, int] = {}
        self._lock = threading.Lock()

    def __call__(self, level: int, kind: str, msg: str, *args: Any, exc_info: bool = False) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._last.get(kind, -self._every) < self._every:
                self._quiet[kind] = self._quiet.get(kind, 0) + 1
                return
            if len(self._last) > 256:  # kinds may come from clients' errors: keep few
                self._last.clear()
                self._quiet.clear()
            self._last[kind] = now
            quiet = self._quiet.pop(kind, 0)
        if quiet:
            msg += " (%d more like it since the last report)"
            args = (*args, quiet)
        self._logger.log(level, msg, *args, exc_info=exc_info)
