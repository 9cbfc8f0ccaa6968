"""``serve --workers N``: N processes sharing the receivers' ports with SO_REUSEPORT.

The parent starts the workers (``serve --reuse-port --worker-index i``), passes SIGTERM, SIGINT
and SIGHUP on to them, and exits when they all have, with the worst exit status. The kernel
spreads new connections across the workers. Each worker drains on its own. A scrape of
``/metrics`` reaches one worker, which answers for all: the workers share their metrics through
a private directory the parent makes and removes (see ``Sidecar.metrics_text``). In the same
directory each worker serves its handoff socket: with trace rules, spans of a trace reach the
worker that owns it, ``trace_id % N`` (see :mod:`otel_online_eval.sidecar.handoff`).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
import time

__all__ = ["run_workers"]


def run_workers(config: str, workers: int, log_format: str, log_level: str) -> int:
    """Run ``workers`` sidecar processes until a signal stops them; returns the exit status."""
    metrics_dir = tempfile.mkdtemp(prefix="otel-online-eval-metrics-")  # mode 0700
    try:
        return _run(config, workers, log_format, log_level, metrics_dir)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _run(config: str, workers: int, log_format: str, log_level: str, metrics_dir: str) -> int:
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "otel_online_eval.cli",
                "serve",
                "-c",
                config,
                "--reuse-port",
                "--worker-index",
                str(i),
                "--metrics-dir",
                metrics_dir,
                "--workers-total",
                str(workers),
                "--log-format",
                log_format,
                "--log-level",
                log_level,
            ]
        )
        for i in range(workers)
    ]

    def relay(signum: int, _: object) -> None:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, relay)
    while any(proc.poll() is None for proc in procs):
        time.sleep(0.2)
        if any(proc.returncode not in (None, 0) for proc in procs):
            relay(signal.SIGTERM, None)  # one failed: stop the others, report
    return max((proc.returncode or 0) for proc in procs)
