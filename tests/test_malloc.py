"""The sidecar caps glibc's malloc arenas (otel_online_eval._malloc), unless the user chose."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from otel_online_eval._libc import GLIBC

pytestmark = pytest.mark.skipif(not GLIBC, reason="glibc's mallopt")

ROOT = Path(__file__).resolve().parent.parent

# Eight threads allocate at once, then malloc_info counts the arenas (one <heap> each).
_PROGRAM = """
import ctypes, re, sys, tempfile, threading
from otel_online_eval._malloc import limit_malloc_arenas
print(limit_malloc_arenas() if sys.argv[1] == "limit" else None)
barrier, hold = threading.Barrier(8), []
def work():
    barrier.wait()
    hold.extend(bytearray(1000) for _ in range(1000))
threads = [threading.Thread(target=work) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
libc = ctypes.CDLL("libc.so.6")
libc.fopen.restype = ctypes.c_void_p
libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
libc.fclose.argtypes = [ctypes.c_void_p]
with tempfile.NamedTemporaryFile(suffix=".xml") as out:
    f = libc.fopen(out.name.encode(), b"w")
    libc.malloc_info(0, f)
    libc.fclose(f)
    print(len(re.findall(r"<heap nr=", open(out.name).read())))
"""


def _arenas(mode: str, **env: str) -> tuple[str, int]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_"))}
    done = subprocess.run(
        [sys.executable, "-c", _PROGRAM, mode],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**environ, **env},
        check=True,
    )
    result, count = done.stdout.split()
    return result, int(count)


# glibc can go one arena past its limit when threads race to make one (seen on a loaded
# machine), so the checks below allow one more.


def test_limit_caps_the_arenas_of_threads_started_after() -> None:
    result, capped = _arenas("limit")
    assert result == "True" and capped in (2, 3)
    _, unlimited = _arenas("none")
    assert unlimited > 3  # without it, each of the eight threads gets its own arena (9)


@pytest.mark.parametrize(
    "env", [{"MALLOC_ARENA_MAX": "6"}, {"GLIBC_TUNABLES": "glibc.malloc.arena_max=6"}]
)
def test_the_users_own_setting_wins(env: dict[str, str]) -> None:
    result, count = _arenas("limit", **env)
    assert result == "False"
    assert count in (6, 7)
