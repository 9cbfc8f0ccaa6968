"""The C library, loaded once through ctypes, for the few OS settings Python does not expose."""

from __future__ import annotations

import ctypes
import ctypes.util
import platform
import sys

__all__ = ["GLIBC", "libc"]

libc: ctypes.CDLL | None = None
if sys.platform.startswith("linux"):
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:  # pragma: no cover - no libc to load
        libc = None

GLIBC = libc is not None and platform.libc_ver()[0] == "glibc"
"""True when the C library is glibc (mallopt and its malloc tunables apply)."""
