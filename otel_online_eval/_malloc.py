"""Fewer glibc malloc arenas for the sidecar.

glibc gives each new thread its own arena, up to eight per core. The sidecar's handler threads
each decode requests of a megabyte or more and free them a moment later, so each arena grows,
gives its pages back, and grows again: the kernel's page faults then cost more CPU than the
decoding. Almost all of it runs under the GIL, one thread at a time, so a couple of shared
arenas serve every thread without lock contention and keep the pages warm. A user's own
``MALLOC_ARENA_MAX`` (or glibc tunable) wins.
"""

from __future__ import annotations

import os

from otel_online_eval._libc import GLIBC, libc

__all__ = ["SIDECAR_ARENAS", "limit_malloc_arenas"]

_M_ARENA_MAX = -8
SIDECAR_ARENAS = 2


def limit_malloc_arenas(arenas: int = SIDECAR_ARENAS) -> bool:
    """Cap glibc's malloc arenas for threads started from now on; True if it was set.

    Does nothing on other C libraries, or when the environment already chooses
    (``MALLOC_ARENA_MAX`` or ``glibc.malloc.arena_max`` in ``GLIBC_TUNABLES``).
    """
    if not GLIBC or libc is None:
        return False
    if "MALLOC_ARENA_MAX" in os.environ or "arena_max" in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    try:
        return bool(libc.mallopt(_M_ARENA_MAX, arenas))
    except AttributeError:  # pragma: no cover - a glibc without mallopt
        return False
