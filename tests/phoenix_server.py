"""A real Arize Phoenix for tests: ``phoenix serve`` from ``.venv-phoenix`` (``make test`` builds
it) as a subprocess on free 127.0.0.1 ports, offline (telemetry and external resources off), its
database in a temporary directory; waited for (bounded), killed at the end::

    with PhoenixServer(tmp_dir) as phoenix:
        phoenix.otlp_url            # http://127.0.0.1:<port>/v1/traces
        phoenix.span_annotations(["<span id>"])

The ``phoenix`` fixture (one server per test session) skips when ``.venv-phoenix`` is missing,
and fails then under ``make test`` (``OE_REQUIRE_PHOENIX=1``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest
import requests

from tests.sidecar_helpers import HOST, ROOT, free_ports

__all__ = ["PHOENIX_BIN", "PhoenixServer", "phoenix"]

PHOENIX_BIN = ROOT / ".venv-phoenix" / "bin" / "phoenix"
_START_TIMEOUT_S = 90.0


class PhoenixServer:
    """One ``phoenix serve`` process (see the module docstring)."""

    def __init__(self, working_dir: Path) -> None:
        self.working_dir = working_dir
        self.port, self.grpc_port = free_ports(2)
        self.base_url = f"http://{HOST}:{self.port}"
        self.otlp_url = f"{self.base_url}/v1/traces"
        self.log_path = working_dir / "phoenix.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("PHOENIX_", "OTEL_")) and k not in ("HTTP_PROXY", "HTTPS_PROXY")
        }
        env.update(
            PHOENIX_HOST=HOST,
            PHOENIX_PORT=str(self.port),
            PHOENIX_GRPC_PORT=str(self.grpc_port),
            PHOENIX_WORKING_DIR=str(self.working_dir),
            PHOENIX_TELEMETRY_ENABLED="false",
            PHOENIX_ALLOW_EXTERNAL_RESOURCES="false",
            NO_PROXY="127.0.0.1,localhost",
        )
        return env

    def start(self) -> None:
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [str(PHOENIX_BIN), "serve"],
            env=self.env(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=self.working_dir,
        )
        log.close()
        deadline = time.monotonic() + _START_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"phoenix exited ({self.proc.returncode}):\n{self.log_tail()}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{self.base_url}/healthz", timeout=2).status_code == 200:
                    return
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"phoenix not ready within {_START_TIMEOUT_S}s:\n{self.log_tail()}"
                )
            time.sleep(0.2)

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)

    def __enter__(self) -> PhoenixServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ REST queries

    def span_annotations(
        self, span_ids: Sequence[str], project: str = "default"
    ) -> list[dict[str, Any]]:
        """Every annotation of ``span_ids`` (``GET /v1/projects/{project}/span_annotations``)."""
        response = requests.get(
            f"{self.base_url}/v1/projects/{project}/span_annotations",
            params={"span_ids": list(span_ids), "limit": 1000},
            timeout=10,
        )
        if response.status_code == 404:  # the project does not exist yet: no spans arrived
            return []
        response.raise_for_status()
        data: list[dict[str, Any]] = response.json()["data"]
        return data

    def spans(self, project: str = "default") -> list[dict[str, Any]]:
        """The project's spans (``GET /v1/projects/{project}/spans``), newest first."""
        response = requests.get(
            f"{self.base_url}/v1/projects/{project}/spans", params={"limit": 1000}, timeout=10
        )
        if response.status_code == 404:
            return []
        response.raise_for_status()
        data: list[dict[str, Any]] = response.json()["data"]
        return data


@pytest.fixture(scope="session")
def phoenix() -> Iterator[PhoenixServer]:
    if not PHOENIX_BIN.exists():
        missing = f"{PHOENIX_BIN} is missing: `make test` (or `make phoenix`) builds it"
        if os.environ.get("OE_REQUIRE_PHOENIX"):  # make test: a missing Phoenix is a failure
            pytest.fail(missing)
        pytest.skip(missing)
    with tempfile.TemporaryDirectory(prefix="phoenix-") as tmp, PhoenixServer(Path(tmp)) as px:
        yield px
