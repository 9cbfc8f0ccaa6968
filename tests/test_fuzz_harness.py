"""``make fuzz``'s harness (fuzz/ingest_fuzz.py) runs: it replays the bodies that once went
unanswered, and a short coverage-guided run from its own seeds finds nothing."""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import pytest

HARNESS = Path(__file__).resolve().parent.parent / "fuzz" / "ingest_fuzz.py"

# First byte: the path (0 protobuf, 1 JSON, 2/3 gzip then protobuf/JSON; see the harness).
ONCE_UNANSWERED = {
    "kind-1e400": b'\1{"resourceSpans":[{"scopeSpans":[{"spans":[{"kind":1e400}]}]}]}',
    "status-1e400": b'\1{"resourceSpans":[{"scopeSpans":[{"spans":[{"status":{"code":1e400}}]}]}]}',
    "lone-surrogate": b'\1{"resourceSpans\\ud800":[]}',
    "gzip-members": b"\3\x07" + gzip.compress(b'{"resourceSpans":') + gzip.compress(b"[]}"),
    "gzip-trailing": b"\2\x10" + gzip.compress(b"") + b"garbage",
}


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(HARNESS), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_the_inputs_that_once_went_unanswered_replay_cleanly(tmp_path: Path) -> None:
    files = []
    for name, data in ONCE_UNANSWERED.items():
        (tmp_path / name).write_bytes(data)
        files.append(str(tmp_path / name))
    crashes = tmp_path / "crashes"
    crashes.mkdir()
    done = _run(f"-artifact_prefix={crashes}/", *files, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    for name in files:
        assert f"Running: {name}" in done.stderr
    assert not list(crashes.iterdir())


@pytest.mark.slow
def test_a_short_fuzzing_run_finds_nothing(tmp_path: Path) -> None:
    crashes = tmp_path / "crashes"
    crashes.mkdir()
    corpus = tmp_path / "corpus"
    done = _run(f"-artifact_prefix={crashes}/", "-runs=30000", "-seed=1", str(corpus), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Done 30000 runs" in done.stderr
    assert {p.name for p in corpus.iterdir()} >= {"seed-protobuf", "seed-json", "seed-gzip-json"}
    assert not list(crashes.iterdir())
