"""Give our threads their names at the OS level too, so ``top -H``, ``ps -L`` and py-spy
show which part of the engine or the sidecar is using the CPU."""

from __future__ import annotations

import threading

from otel_online_eval._libc import libc

__all__ = ["name_os_thread"]

_PR_SET_NAME = 15


def name_os_thread() -> None:
    """Set the calling thread's OS name from its Python name (Linux; 15 bytes at most,
    ``online-eval-`` shortened to ``oe-``). Does nothing elsewhere or on failure."""
    if libc is None:
        return
    name = threading.current_thread().name.replace("online-eval-", "oe-")
    try:
        libc.prctl(_PR_SET_NAME, name.encode("ascii", "replace")[:15], 0, 0, 0)
    except (AttributeError, OSError):  # pragma: no cover - prctl missing
        pass
