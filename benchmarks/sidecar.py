"""What the sidecar costs per span, measured against a no-op receiver, in one run.

Prints spans/s and receiver CPU µs per span (the receiving process's user + system time, read
from /proc) for:

  (a) a no-op OTLP/gRPC receiver written here (takes the bytes, answers OK, parses nothing);
  (b) the sidecar forwarding only (no rules), to a no-op downstream;
  (c0) forwarding and routing for the rules of (c), with an evaluation queue of one;
  (c) the sidecar evaluating: 10 rules at 10% sampling, heuristic scorers, eval spans exported
      over OTLP/gRPC to a counting downstream, no forwarding;
  (c+b) (c) with forwarding;

and for (c) the eval spans exported per second and the sidecar CPU per eval span. The load
generator is a separate process sending pre-built 512-span requests (12 GenAI attributes and a
1 KB prompt per span) over gRPC from several threads. The sidecar's CPU is also split by thread.
Target for (c): at most 6 µs of sidecar CPU per span at ingest.

With ``--http``, the same load goes to the OTLP/HTTP receiver instead: the same requests as
protobuf bodies POSTed over HTTP/1.1 keep-alive connections (one per client thread), rows (b)
and (c) only, then both again with the bodies gzip-compressed (compressed once, beforehand).

Run: ``.venv/bin/python benchmarks/sidecar.py`` (about 3 minutes; ``--quick`` for a smoke run;
``--http`` for the HTTP rows, about a minute).
"""

from __future__ import annotations

import gzip
import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from hotpath import ATTRS, SCORERS, ten_rules  # noqa: E402

METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


# The sidecar names its threads at the OS level (otel_online_eval._threads): CPU by role.
ROLES = (
    ("evaluation", ("oe-engine", "oe-scorer")),
    ("eval export", ("oe-emit", "oe-export")),
    ("forward sender", ("oe-forward",)),
)


def thread_cpu(pid: int) -> dict[int, tuple[str, float]]:
    """CPU seconds of each live thread of ``pid``, with its OS name."""
    ticks = os.sysconf("SC_CLK_TCK")
    out: dict[int, tuple[str, float]] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            text = (task / "stat").read_text()
        except OSError:
            continue  # the thread ended
        comm = text[text.index("(") + 1 : text.rindex(")")]
        fields = text.rsplit(")", 1)[1].split()
        out[int(task.name)] = (comm, (int(fields[11]) + int(fields[12])) / ticks)
    return out


def by_role(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]], total: float
) -> dict[str, float]:
    """CPU seconds between two readings by role; "ingest" is everything else: the gRPC
    handler threads (receive, decode, check ids, route, sample, submit, queue for forwarding),
    gRPC's own I/O threads (which also carry the forwarder's and exporter's bytes) and any
    thread that ended in between. It is an upper bound of the request path's CPU."""
    roles = {role: 0.0 for role, _ in ROLES}
    for tid, (comm, seconds) in after.items():
        spent = seconds - before.get(tid, (comm, 0.0))[1]
        for role, prefixes in ROLES:
            if comm.startswith(prefixes):
                roles[role] += spent
                break
    roles["ingest"] = total - sum(roles.values())
    return roles


# -- roles run as subprocesses --------------------------------------------------------------


def run_noop_receiver(port: int, count: bool) -> None:
    """A gRPC receiver that answers OK; with ``count``, it parses to count spans. It caps malloc
    arenas as the sidecar does, so that (a) and the sidecar differ only in what they do."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    from otel_online_eval._malloc import limit_malloc_arenas

    limit_malloc_arenas()

    spans = [0]
    lock = threading.Lock()

    def export(body: bytes, context: Any) -> bytes:
        if count:
            request = ExportTraceServiceRequest.FromString(body)
            n = sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
            with lock:
                spans[0] += n
        return b""

    server = grpc.server(
        futures.ThreadPoolExecutor(8), options=[("grpc.max_receive_message_length", 1 << 26)]
    )
    handler = grpc.unary_unary_rpc_method_handler(export)
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "opentelemetry.proto.collector.trace.v1.TraceService", {"Export": handler}
            ),
        )
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGUSR1, lambda *_: print(spans[0], flush=True))
    while not stop.wait(0.2):
        pass
    server.stop(0)


def build_requests(n: int, seed: int = 1) -> list[bytes]:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )
    from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

    from otel_online_eval.sidecar.emit_proto import encode_attributes

    rng = random.Random(seed)
    attrs = encode_attributes(ATTRS)
    resource = {"attributes": encode_attributes({"service.name": "bench", "host.name": "h1"})}
    now = time.time_ns()
    bodies = []
    for _ in range(n):
        spans = []
        for i in range(512):
            root = i % 4 == 0
            span = Span(
                trace_id=rng.getrandbits(128).to_bytes(16, "big"),
                span_id=rng.getrandbits(64).to_bytes(8, "big"),
                name="chat" if not root else "POST /support",
                kind=Span.SPAN_KIND_CLIENT,
                start_time_unix_nano=now,
                end_time_unix_nano=now + rng.randint(100, 2000) * 1_000_000,
                attributes=attrs,
            )
            if not root:
                span.parent_span_id = rng.getrandbits(64).to_bytes(8, "big")
            spans.append(span)
        request = ExportTraceServiceRequest(
            resource_spans=[
                ResourceSpans(
                    resource=resource,
                    scope_spans=[ScopeSpans(scope={"name": "bench"}, spans=spans)],
                )
            ]
        )
        bodies.append(request.SerializeToString())
    return bodies


def run_load(port: int, requests: int, threads: int) -> None:
    """Send ``requests`` pre-built requests; print one JSON line with what happened."""
    bodies = build_requests(16)
    channel = grpc.insecure_channel(
        f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", 1 << 26)]
    )
    call = channel.unary_unary(METHOD)
    grpc.channel_ready_future(channel).result(timeout=10)
    sent = [0, 0]  # ok, failed
    lock = threading.Lock()
    next_index = iter(range(requests))

    def worker() -> None:
        for i in next_index:
            try:
                call(bodies[i % len(bodies)], timeout=30)
                with lock:
                    sent[0] += 1
            except grpc.RpcError:
                with lock:
                    sent[1] += 1

    started = time.perf_counter()
    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    elapsed = time.perf_counter() - started
    print(json.dumps({"ok": sent[0], "failed": sent[1], "seconds": elapsed}), flush=True)


def run_load_http(port: int, requests: int, threads: int, compress: bool) -> None:
    """Send ``requests`` pre-built requests as OTLP/HTTP POSTs, each client thread on its own
    keep-alive connection; print one JSON line with what happened."""
    bodies = build_requests(16)
    headers = {"Content-Type": "application/x-protobuf"}
    if compress:
        bodies = [gzip.compress(b, 1) for b in bodies]
        headers["Content-Encoding"] = "gzip"
    sent = [0, 0]  # ok, failed
    lock = threading.Lock()
    next_index = iter(range(requests))

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for i in next_index:
            ok = False
            try:
                conn.request("POST", "/v1/traces", bodies[i % len(bodies)], headers)
                response = conn.getresponse()
                response.read()
                ok = response.status == 200
                if response.will_close:
                    conn.close()
            except (OSError, http.client.HTTPException):
                conn.close()  # reconnects on the next request
            with lock:
                sent[0 if ok else 1] += 1
        conn.close()

    started = time.perf_counter()
    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    elapsed = time.perf_counter() - started
    print(json.dumps({"ok": sent[0], "failed": sent[1], "seconds": elapsed}), flush=True)


# -- the driver -----------------------------------------------------------------------------


def spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wait_port(port: int, timeout: float = 20, proc: subprocess.Popen[str] | None = None) -> None:
    """Wait until something accepts connections on ``port``; fails with ``proc``'s output if
    it exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        if proc is not None and proc.poll() is not None:
            _, err = proc.communicate()
            raise RuntimeError(f"the process for port {port} exited ({proc.returncode}):\n{err}")
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def wait_idle(pid: int, timeout: float = 120) -> float:
    """Wait until the process uses under 2% of a core for 0.5 s; returns when it went idle."""
    deadline = time.monotonic() + timeout
    last = cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = cpu_seconds(pid)
        if now - last < 0.01:
            return time.perf_counter() - 0.5
        last = now
    return time.perf_counter()


def load(port: int, requests: int, threads: int, transport: str = "grpc") -> dict[str, Any]:
    """Run the load generator; ``transport`` is ``grpc``, ``http`` or ``http-gzip``."""
    flag = "--load" if transport == "grpc" else f"--load-{transport}"
    proc = spawn(__file__, flag, str(port), str(requests), str(threads))
    out, err = proc.communicate(timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(err)
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return err


def measure(
    name: str, pid: int, port: int, requests: int, threads: int, transport: str = "grpc"
) -> dict[str, Any]:
    load(port, 4, 2, transport)  # warm up: connections, caches
    cpu0, threads0 = cpu_seconds(pid), thread_cpu(pid)
    result = load(port, requests, threads, transport)
    cpu = cpu_seconds(pid) - cpu0
    roles = by_role(threads0, thread_cpu(pid), cpu)
    spans = result["ok"] * 512
    row = {
        "name": name,
        "spans": spans,
        "failed_requests": result["failed"],
        "spans_per_s": spans / result["seconds"],
        "cpu_us_per_span": cpu / spans * 1e6 if spans else float("nan"),
        "cpu_s": cpu,
        "threads0": threads0,
        "roles_us_per_span": {k: v / spans * 1e6 for k, v in roles.items()} if spans else {},
    }
    print(
        f"   {name:44} {row['spans_per_s']:10.0f} spans/s  {row['cpu_us_per_span']:6.2f} us "
        f"CPU/span  ({spans} spans, {result['failed']} failed requests)",
        flush=True,
    )
    if name.startswith("(a)"):
        return row
    print(f"   {'':44} by thread: " + by_role_text(row["roles_us_per_span"]), flush=True)
    return row


def by_role_text(roles: dict[str, float]) -> str:
    order = ("ingest", "forward sender", "evaluation", "eval export")
    return ", ".join(f"{k} {roles[k]:.2f}" for k in order if roles.get(k, 0) >= 0.005) + " us"


def sidecar_config(
    path: Path,
    port: int,
    forward_port: int | None,
    export_port: int | None,
    rate: float | None,
    queue_size: int = 100_000,
    transport: str = "grpc",
) -> None:
    """A sidecar config receiving on ``port`` over ``transport`` only (the other is off)."""
    receiver: dict[str, Any] = {"grpc": False, "http": False, "drain_timeout_s": 30}
    if transport == "grpc":
        receiver["grpc"] = {"endpoint": f"127.0.0.1:{port}", "max_message_bytes": 1 << 26}
    else:
        receiver["http"] = {"endpoint": f"127.0.0.1:{port}", "max_body_bytes": 1 << 26}
    config: dict[str, Any] = {
        "receiver": receiver,
        "engine": {"queue_size": queue_size},
    }
    if forward_port is not None:
        # A buffer large enough that the load never meets backpressure: we measure CPU.
        config["forward"] = {
            "otlp": {"protocol": "grpc", "endpoint": f"127.0.0.1:{forward_port}", "insecure": True},
            "queue": {"max_bytes": 1 << 30},
        }
    if rate is None:
        config.update({"scorers": {}, "rules": []})
    else:
        rules = ten_rules(rate)
        config.update({"scorers": SCORERS, "rules": rules["rules"]})
    if export_port is not None:
        config["export"] = {
            "otlp": {"protocol": "grpc", "endpoint": f"127.0.0.1:{export_port}", "insecure": True},
            "batch": {"schedule_delay_ms": 200},
        }
    path.write_text(yaml.safe_dump(config))


def sidecar_row(
    tmp: Path,
    label: str,
    rate: float | None,
    queue: int,
    forward: bool,
    requests: int,
    threads: int,
    transport: str,
    procs: list[subprocess.Popen[str]],
) -> dict[str, Any]:
    """Start a sidecar (with a no-op downstream and a counting export receiver), measure it
    under the load, wait for its evaluations to finish, stop everything; one row."""
    downstream_port, export_port, port = free_port(), free_port(), free_port()
    downstream = spawn(__file__, "--noop", str(downstream_port))
    exports = spawn(__file__, "--count", str(export_port))
    procs += [downstream, exports]
    config = tmp / "sidecar.yaml"
    sidecar_config(
        config,
        port,
        downstream_port if forward else None,
        export_port if rate is not None else None,
        rate,
        queue,
        "grpc" if transport == "grpc" else "http",
    )
    sidecar = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "otel_online_eval.cli",
            "serve",
            "-c",
            str(config),
            "--log-level",
            "warning",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    procs.append(sidecar)
    for waited, proc in ((downstream_port, downstream), (export_port, exports), (port, sidecar)):
        wait_port(waited, proc=proc)
    started = time.perf_counter()
    row = measure(label, sidecar.pid, port, requests, threads, transport)
    if rate is not None and queue > 1:
        # Let the engine finish what it queued (the process goes idle), then count all the
        # CPU it took and the eval spans that arrived.
        cpu_after_load = cpu_seconds(sidecar.pid)
        idle_at = wait_idle(sidecar.pid)
        eval_cpu = cpu_seconds(sidecar.pid) - cpu_after_load
        all_cpu = row["cpu_s"] + eval_cpu
        whole = by_role(row["threads0"], thread_cpu(sidecar.pid), all_cpu)
        row["whole_roles_us_per_span"] = {k: v / row["spans"] * 1e6 for k, v in whole.items()}
        print(
            f"   {'':44} {all_cpu / row['spans'] * 1e6:10.2f} us CPU/span "
            f"including evaluation that finished after the load "
            f"({eval_cpu:.2f} s more)"
        )
        print(f"   {'':44} by thread: " + by_role_text(row["whole_roles_us_per_span"]))
        err = stop(sidecar)
        exports.send_signal(signal.SIGUSR1)
        line = exports.stdout.readline() if exports.stdout else "0"
        eval_spans = int(line.strip() or 0)
        total = idle_at - started
        row["eval_spans"] = eval_spans
        row["all_cpu_us_per_span"] = all_cpu / row["spans"] * 1e6
        print(
            f"   {'':44} {eval_spans / total:10.0f} eval spans/s exported "
            f"({eval_spans} in {total:.1f} s)"
        )
        if eval_spans:
            print(
                f"   {'':44} {all_cpu / eval_spans * 1e6:10.1f} us sidecar CPU "
                "per eval span exported (all sidecar CPU / eval spans)"
            )
    else:
        err = stop(sidecar)
    if "Traceback" in err:
        print(err, file=sys.stderr)
    stop(downstream)
    stop(exports)
    return row


def main() -> int:
    quick = "--quick" in sys.argv
    over_http = "--http" in sys.argv
    requests = 60 if quick else 400
    threads = 4
    print(
        f"sidecar benchmark{' (OTLP/HTTP)' if over_http else ''}: {requests} requests of 512 "
        f"spans, {threads} client threads, {os.cpu_count()} cores"
    )
    rows = []
    procs: list[subprocess.Popen[str]] = []
    try:
        if over_http:
            with tempfile.TemporaryDirectory() as tmp:
                for transport in ("http", "http-gzip"):
                    for label, rate, forward in (
                        (f"(b) {transport}, forwarding only", None, True),
                        (f"(c) {transport}, 10 rules @ 0.1, no forwarding", 0.1, False),
                    ):
                        rows.append(
                            sidecar_row(
                                Path(tmp), label, rate, 100_000, forward, requests, threads,
                                transport, procs,
                            )
                        )  # fmt: skip
            for row in rows:
                print(
                    f"{row['name']}: {row['spans_per_s']:.0f} spans/s, "
                    f"{row['roles_us_per_span'].get('ingest', 0):.2f} us/span at ingest"
                )
            return 0
        port = free_port()
        noop = spawn(__file__, "--noop", str(port))
        procs.append(noop)
        wait_port(port)
        rows.append(measure("(a) no-op receiver", noop.pid, port, requests, threads))
        stop(noop)

        with tempfile.TemporaryDirectory() as tmp:
            for label, rate, queue, forward in (
                ("(b) sidecar, forwarding only", None, 100_000, True),
                ("(c0) sidecar, forwarding + routing, no evaluation", 0.1, 1, True),
                ("(c) sidecar, 10 rules @ 0.1, no forwarding", 0.1, 100_000, False),
                ("(c+b) sidecar, forwarding + 10 rules @ 0.1", 0.1, 100_000, True),
            ):
                rows.append(
                    sidecar_row(
                        Path(tmp), label, rate, queue, forward, requests, threads, "grpc", procs
                    )
                )
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    a, b, _, c, cb = rows
    print(
        f"ratios: (b)/(a) CPU per span {b['cpu_us_per_span'] / a['cpu_us_per_span']:.1f}x, "
        f"(c)/(a) {c['cpu_us_per_span'] / a['cpu_us_per_span']:.1f}x"
    )
    at_ingest = c["roles_us_per_span"]["ingest"]
    print(
        f"target (<= 6 us sidecar CPU per span at ingest): (c) at ingest {at_ingest:.2f} us/span "
        f"({'met' if at_ingest <= 6 else 'MISSED'}); with forwarding (c+b) "
        f"{cb['roles_us_per_span']['ingest']:.2f} at ingest + "
        f"{cb['roles_us_per_span']['forward sender']:.2f} forward sender. Whole process, "
        f"evaluation included: (c) {c['all_cpu_us_per_span']:.2f}, "
        f"(c+b) {cb['all_cpu_us_per_span']:.2f} us/span"
    )
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] in ("--noop", "--count"):
        run_noop_receiver(int(sys.argv[2]), count=sys.argv[1] == "--count")
    elif len(sys.argv) > 4 and sys.argv[1] == "--load":
        run_load(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    elif len(sys.argv) > 4 and sys.argv[1] in ("--load-http", "--load-http-gzip"):
        compress = sys.argv[1] == "--load-http-gzip"
        run_load_http(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), compress)
    else:
        sys.exit(main())
