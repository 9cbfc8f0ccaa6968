"""Our threads carry their names at the OS level (Linux), for top -H, ps -L and py-spy."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest

from otel_online_eval import OnlineEvalSpanProcessor, Rule
from otel_online_eval._threads import name_os_thread

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux /proc")


def _os_name(native_id: int) -> str:
    return Path(f"/proc/self/task/{native_id}/comm").read_text().strip()


def test_name_os_thread_shortens_and_truncates() -> None:
    seen: list[str] = []

    def run() -> None:
        name_os_thread()
        seen.append(_os_name(threading.get_native_id()))

    for name in ("online-eval-forward", "a-thread-name-longer-than-fifteen"):
        thread = threading.Thread(target=run, name=name)
        thread.start()
        thread.join(5)
    assert seen == ["oe-forward", "a-thread-name-l"]


def test_engine_threads_are_named() -> None:
    class Constant:
        name = "constant"

        def score(self, inp: object) -> float:
            return 1.0

    class WhereAmI:
        name = "where_am_i"

        def score(self, inp: object) -> float:
            seen.append(_os_name(threading.get_native_id()))
            return 1.0

    seen: list[str] = []
    processor = OnlineEvalSpanProcessor(rules=[Rule.create("r", [Constant()])])
    try:
        engine = processor._engine
        assert engine._thread.native_id is not None
        # The loop thread names itself as it starts, maybe after the constructor returned.
        deadline = time.monotonic() + 5
        while _os_name(engine._thread.native_id) != "oe-engine" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _os_name(engine._thread.native_id) == "oe-engine"
        sampler_thread = engine._pool.submit(threading.get_native_id).result(5)
        assert _os_name(sampler_thread).startswith("oe-sampler")
        processor.evaluate("direct", output="x", scorers=[WhereAmI()]).result(5)
        assert len(seen) == 1 and seen[0].startswith("oe-scorer")  # its own threads
    finally:
        processor.shutdown()
