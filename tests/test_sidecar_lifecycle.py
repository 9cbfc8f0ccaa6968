"""The sidecar's life: SIGTERM drains under load, SIGHUP reloads (and refuses a bad file),
``--workers`` shares the ports, and start-up failures say what is wrong and exit non-zero."""

from __future__ import annotations

import itertools
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import grpc
import pytest
import requests
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans
from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan
from prometheus_client.parser import text_string_to_metric_families

from otel_online_eval._libc import GLIBC
from otel_online_eval.sidecar.emit_proto import encode_attributes
from tests.otlp_receiver import OtlpGrpcReceiver, OtlpHttpReceiver, attrs
from tests.sidecar_helpers import (
    HOST,
    RawGrpcReceiver,
    Sidecar,
    eval_spans,
    export_to,
    forward_to,
    free_ports,
    grpc_health,
    make_trace,
    post_http,
    request_bytes,
    running_sidecar,
    send_grpc,
    sidecar_config,
    start_sidecar,
    wait_until,
    write_config,
)

ROOT = Path(__file__).parent.parent


# -- SIGTERM under load ---------------------------------------------------------------------------


class _Client(threading.Thread):
    """Keeps exporting 10 chat spans per request until told to stop (or 2000 requests, or 30 s);
    remembers the span ids of every request the sidecar acknowledged."""

    def __init__(self, sidecar: Sidecar, transport: str) -> None:
        super().__init__(name=f"client-{transport}", daemon=True)
        self.sidecar = sidecar
        self.transport = transport
        self.acked: list[int] = []
        self.acked_requests = 0
        self.refusals: Counter[str] = Counter()
        self.halt = threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + 30
        for _ in range(2000):
            if self.halt.is_set() or time.monotonic() > deadline:
                return
            trace = make_trace(f"load-{self.transport}", ("billing", "weather") * 5)
            body = request_bytes(trace.spans)
            try:
                if self.transport == "grpc":
                    send_grpc(self.sidecar.grpc_endpoint, body, timeout=3)
                else:
                    response = post_http(self.sidecar, body, timeout=3)
                    if response.status_code != 200:
                        self.refusals[str(response.status_code)] += 1
                        time.sleep(0.01)
                        continue
            except grpc.RpcError as error:
                self.refusals[error.code().name] += 1
                time.sleep(0.01)
                continue
            except requests.RequestException as error:
                self.refusals[type(error).__name__] += 1
                time.sleep(0.01)
                continue
            self.acked.extend(trace.ids())
            self.acked_requests += 1


@pytest.mark.slow
def test_sigterm_under_load_loses_nothing_acknowledged(
    tmp_path: Path, otlp_grpc_receiver: OtlpGrpcReceiver
) -> None:
    drain_timeout = 5.0
    with RawGrpcReceiver() as forward:
        config = sidecar_config(
            export=export_to(otlp_grpc_receiver),
            forward=forward_to(forward.endpoint),
            drain_timeout_s=drain_timeout,
            scorers={"slow": {"type": "python", "ref": "tests.sidecar_helpers:slow_score"}},
            rules=[{"name": "slow", "apply_to": {"span_names": ["chat"]}, "scorers": ["slow"]}],
        )
        sc = start_sidecar(tmp_path, config)
        clients = [_Client(sc, t) for t in ("grpc", "http", "grpc", "http")]
        try:
            for client in clients:
                client.start()
            wait_until(
                lambda: all(c.acked_requests >= 10 for c in clients),
                timeout=20,
                what="the clients to get going",
            )
            before = sc.metrics()
            started = time.monotonic()
            sc.send_signal(signal.SIGTERM)
            code = sc.proc.wait(drain_timeout + 10)
            took = time.monotonic() - started
        finally:
            for client in clients:
                client.halt.set()
            for client in clients:
                client.join(10)
            sc.kill()
        assert code == 0, sc.stderr()[-3000:]
        assert took < drain_timeout + 1, took
        assert not any(c.is_alive() for c in clients)

        [drained] = sc.log_messages("Drained")
        assert drained["complete"] is True
        assert drained["forward_dropped"] == drained["export_dropped"] == 0
        acked = {i for c in clients for i in c.acked}
        forwarded = forward.span_ids()
        # Everything acknowledged went on, exactly once.
        assert acked <= set(forwarded)
        assert len(forwarded) == len(set(forwarded))
        assert before.value("otlp_receiver_spans_total", result="accepted") <= len(forwarded)
        # Every chat span accepted was either evaluated (its eval span exported) or counted as
        # dropped; evaluations were still running when the signal came.
        chat = {int.from_bytes(s.span_id, "big") for _, _, s in forward.spans() if s.name == "chat"}
        evals = eval_spans(otlp_grpc_receiver.spans())
        parents = [int.from_bytes(s.parent_span_id, "big") for _, _, s in evals]
        assert len(parents) == len(set(parents))
        assert set(parents) <= chat
        assert len(parents) + drained["eval_dropped"] == len(chat)
        assert before.value("online_eval_evals_total") < len(parents)
        # Requests after the drain started were refused with answers clients retry (or found
        # the port closed); a call cut off when the gRPC grace ended is CANCELLED.
        refusals = sum((c.refusals for c in clients), Counter())
        retryable = {"UNAVAILABLE", "CANCELLED", "DEADLINE_EXCEEDED", "503", "ConnectionError"}
        assert set(refusals) <= retryable | {"ReadTimeout"}, refusals
        assert sc.log_messages("Draining")[0]["timeout_s"] == drain_timeout


def test_sigterm_with_an_export_downstream_down_still_ends_in_time(tmp_path: Path) -> None:
    """Eval spans that cannot be delivered do not hold the process past its drain timeout."""
    dead_grpc, dead_http = free_ports(2)
    config = sidecar_config(
        export={"otlp": {"protocol": "grpc", "endpoint": f"{HOST}:{dead_grpc}", "insecure": True}},
        forward=forward_to(f"{HOST}:{dead_http}"),
        drain_timeout_s=2,
    )
    with running_sidecar(tmp_path, config) as sc:
        assert send_grpc(sc.grpc_endpoint, request_bytes(make_trace("stuck").spans)) is not None
        wait_until(lambda: sc.metrics().value("online_eval_evals_total") == 2)
        started = time.monotonic()
        code = sc.stop(timeout=30)
        took = time.monotonic() - started
    [drained] = sc.log_messages("Drained")
    assert took < 2 + 2, (took, sc.stderr()[-3000:])
    assert code == 3  # not everything could be delivered: a non-zero exit says so
    assert drained["complete"] is False
    assert drained["forward_dropped"] == 3
    assert drained["export_dropped"] == 6  # 2 eval spans, 4 score spans: counted, not lost


def _stuck_on(rx: OtlpGrpcReceiver, span_name: str) -> dict[str, Any]:
    """A config whose one rule scores ``span_name`` spans with a scorer that takes 30 s."""
    return sidecar_config(
        export=export_to(rx),
        drain_timeout_s=1,
        scorers={"stuck": {"type": "python", "ref": "tests.sidecar_helpers:stuck_score"}},
        rules=[{"name": "stuck", "apply_to": {"span_names": [span_name]}, "scorers": ["stuck"]}],
    )


def test_sigterm_counts_evaluations_it_could_not_finish(
    tmp_path: Path, otlp_grpc_receiver: OtlpGrpcReceiver
) -> None:
    with running_sidecar(tmp_path, _stuck_on(otlp_grpc_receiver, "chat")) as sc:
        body = request_bytes(make_trace("stuck", ("a", "b", "c", "d")).spans)
        assert send_grpc(sc.grpc_endpoint, body) == ExportTraceServiceResponse()
        wait_until(lambda: sc.metrics().value("online_eval_spans_sampled_total") == 4)
        started = time.monotonic()
        sc.send_signal(signal.SIGTERM)
        # While it drains, the HTTP side says so, and refuses new spans with a retry hint.
        wait_until(lambda: sc.get("/healthz").status_code == 503, what="draining health")
        assert sc.get("/healthz").text == "draining\n"
        refused = post_http(sc, body)
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
        code = sc.stop(timeout=30)
        took = time.monotonic() - started
    [drained] = sc.log_messages("Drained")
    assert took < 1 + 2, (took, sc.stderr()[-3000:])
    assert code == 3 and drained["complete"] is False
    assert drained["eval_dropped"] == 4
    assert eval_spans(otlp_grpc_receiver.spans()) == []


def test_idle_client_connections_do_not_hold_up_the_drain(tmp_path: Path) -> None:
    """SDK exporters keep connections open between exports; a drain must not wait for them."""
    with running_sidecar(tmp_path, sidecar_config(drain_timeout_s=3)) as sc:
        host, port = sc.http_endpoint.rsplit(":", 1)
        with (
            socket.create_connection((host, int(port)), timeout=5),  # says nothing at all
            requests.Session() as keep_alive,
            grpc.insecure_channel(sc.grpc_endpoint) as channel,
        ):
            assert keep_alive.get(sc.url("/healthz"), timeout=5).status_code == 200
            grpc.channel_ready_future(channel).result(timeout=5)
            started = time.monotonic()
            assert sc.stop() == 0
            assert time.monotonic() - started < 3


# -- SIGHUP reload ---------------------------------------------------------------------------------

RELOAD_V1 = """\
receiver:
  grpc: {endpoint: "127.0.0.1:%(grpc)d"}
  http: {endpoint: "127.0.0.1:%(http)d"}
  drain_timeout_s: %(drain)s
scorers:
  nonempty: {type: not_empty}
rules:
  - name: %(rule)s
    apply_to: {span_names: [chat]}
    scorers: [nonempty]
export:
  otlp: %(export)s
  batch: {schedule_delay_ms: 50}
"""

RELOAD_INVALID = """\
receiver:
  grpc: {endpoint: "127.0.0.1:%(grpc)d"}
  http: {endpoint: "127.0.0.1:%(http)d"}
scorers:
  nonempty: {type: not_empty}
rules:
  - name: third
    apply_to: {span_names: [chat]}
    sampling: 2
    scorers: [nonempty, nope]
export:
  otlp: %(export)s
"""


def _rules_for(rx: OtlpGrpcReceiver | OtlpHttpReceiver, trace_id: int, n: int) -> list[str]:
    got = wait_until(
        lambda: len(evals := eval_spans(rx.spans(), trace_id)) >= n and evals,
        what=f"{n} eval spans of trace {trace_id:x}",
    )
    return sorted(str(attrs(s.attributes)["online_eval.rule"]) for _, _, s in got)


def test_sighup_reloads_rules_and_export_and_keeps_them_when_the_file_is_bad(
    tmp_path: Path, otlp_grpc_receiver: OtlpGrpcReceiver, otlp_http_receiver: OtlpHttpReceiver
) -> None:
    grpc_port, http_port = free_ports(2)
    values = {
        "grpc": grpc_port,
        "http": http_port,
        "export": f'{{protocol: grpc, endpoint: "{otlp_grpc_receiver.endpoint}", insecure: true}}',
        "drain": 3,
        "rule": "first",
    }
    with running_sidecar(tmp_path, RELOAD_V1 % values) as sc:
        path = sc.config_path

        def send() -> int:
            trace = make_trace("reload", ("billing",))
            assert post_http(sc, request_bytes(trace.spans)).status_code == 200
            return trace.trace_id

        assert _rules_for(otlp_grpc_receiver, send(), 1) == ["first"]

        # A new rule, and eval spans to another backend over another protocol.
        http_export = f'{{protocol: http/protobuf, endpoint: "{otlp_http_receiver.base_url}"}}'
        write_config(
            path, RELOAD_V1 % {**values, "rule": "second", "drain": 4, "export": http_export}
        )
        sc.send_signal(signal.SIGHUP)
        sc.wait_log("Config reloaded")
        assert _rules_for(otlp_http_receiver, send(), 1) == ["second"]
        assert sc.log_messages("receiver: and forward: changes take effect only after a restart")

        write_config(path, RELOAD_INVALID % values)
        sc.send_signal(signal.SIGHUP)
        [refused] = sc.wait_log("Reload refused")
        message = refused["message"]
        assert f"{path}:9:15: rules[0].sampling" in message
        assert f"{path}:10:25: rules[0].scorers[1]: unknown scorer 'nope'" in message
        assert refused["level"] == "error"
        trace_id = send()
        assert _rules_for(otlp_http_receiver, trace_id, 1) == ["second"]
        assert grpc_health(sc.grpc_endpoint) == "SERVING"
        assert sc.get("/healthz").status_code == 200
        assert sc.proc.poll() is None
        metrics = sc.metrics()
        assert metrics.value("online_eval_evals_total", rule="second") == 2
        # Counters go on across reloads: the first engine's counts are still there.
        assert metrics.value("online_eval_evals_total", rule="first") == 1
        assert metrics.value("online_eval_spans_seen_total") == 6  # 3 traces of 2 spans
        assert metrics.value("online_eval_shipper_sent_spans_total", pipeline="export") >= 3
        # One eval per trace, each of one rule, each where the config of its time said.
        assert len(eval_spans(otlp_grpc_receiver.spans())) == 1
        assert len(eval_spans(otlp_http_receiver.spans())) == 2
        assert sc.stop(signum=signal.SIGINT) == 0  # SIGINT drains too
    assert len(sc.log_messages("Drained")) == 1


@pytest.mark.slow
def test_reloads_under_load_lose_no_evaluation(
    tmp_path: Path, otlp_grpc_receiver: OtlpGrpcReceiver
) -> None:
    """Each SIGHUP replaces the engine while requests are being handled; every chat span that
    was accepted is still evaluated exactly once, by the old engine or the new one."""
    with RawGrpcReceiver() as forward:
        config = sidecar_config(
            export=export_to(otlp_grpc_receiver),
            forward=forward_to(forward.endpoint),
            scorers={"slow": {"type": "python", "ref": "tests.sidecar_helpers:slow_score"}},
            rules=[{"name": "slow", "apply_to": {"span_names": ["chat"]}, "scorers": ["slow"]}],
        )
        sc = start_sidecar(tmp_path, config)
        clients = [_Client(sc, t) for t in ("grpc", "http", "grpc", "http")]
        try:
            for client in clients:
                client.start()
            for i in range(12):
                time.sleep(0.1)
                sc.send_signal(signal.SIGHUP)
                sc.wait_log("Config reloaded", i + 1)
        finally:
            for client in clients:
                client.halt.set()
            for client in clients:
                client.join(10)
        try:
            code = sc.stop()
        finally:
            sc.kill()
        assert code == 0
        [drained] = sc.log_messages("Drained")
        chat = {int.from_bytes(s.span_id, "big") for _, _, s in forward.spans() if s.name == "chat"}
        parents = [
            int.from_bytes(s.parent_span_id, "big")
            for _, _, s in eval_spans(otlp_grpc_receiver.spans())
        ]
        assert len(chat) >= 100
        assert drained["eval_dropped"] == 0
        missing = chat - set(parents)
        assert not missing, f"{len(missing)} of {len(chat)} accepted chat spans never evaluated"
        assert sorted(parents) == sorted(chat)  # and none twice


# -- --workers --------------------------------------------------------------------------------


@pytest.mark.slow
def test_two_workers_share_the_ports_and_stop_together(tmp_path: Path) -> None:
    grpc_port, http_port = free_ports(2)
    with RawGrpcReceiver() as forward:
        config = sidecar_config(grpc_port, http_port, forward=forward_to(forward.endpoint))
        sc = start_sidecar(tmp_path, config, args=["--workers", "2"], workers=2)
        try:
            serving = sc.log_messages("Sidecar serving")
            pids = {entry["pid"] for entry in serving}
            assert len(pids) == 2 and sc.pid not in pids
            assert {e["grpc"] for e in serving} == {f"{HOST}:{grpc_port}"}
            assert {e["http"] for e in serving} == {f"{HOST}:{http_port}"}
            for i in range(10):  # a new connection each: the kernel spreads them
                body = request_bytes(make_trace(f"w{i}", ("billing",)).spans)
                send_grpc(sc.grpc_endpoint, body)
                assert post_http(sc, body, headers={"Connection": "close"}).status_code == 200
            forward.wait_for_bodies(20)

            # Whichever worker a scrape reaches answers for both, each sample labelled with its
            # worker: its own counts as they are, its sibling's as the sibling last published
            # them (every second). So wait until both have published all their requests; one
            # scrape that adds up is not enough, as the next may reach the other worker, which
            # may still read its sibling's counts of a moment ago.
            [metrics_dir] = {_argument(pid, "--metrics-dir") for pid in pids}
            wait_until(
                lambda: _published_ok_requests(Path(metrics_dir)) == 20,
                timeout=10,
                what="both workers' requests published",
            )
            for _ in range(4):  # new connections: different workers answer, all alike
                response = requests.get(sc.url("/metrics"), headers={"Connection": "close"})
                parsed = list(text_string_to_metric_families(response.text))
                requests_total = next(f for f in parsed if f.name == "otlp_receiver_requests")
                workers = {s.labels["worker"] for s in requests_total.samples}
                assert workers == {"0", "1"}, response.text
                per_worker = Counter[str]()
                for sample in requests_total.samples:
                    per_worker[sample.labels["worker"]] += int(sample.value)
                assert sum(per_worker.values()) == 20 and all(per_worker.values()), per_worker
            assert Path(metrics_dir).is_dir()
            # SIGHUP goes to every worker.
            sc.send_signal(signal.SIGHUP)
            assert len(sc.wait_log("Config reloaded", 2)) == 2
            code = sc.stop(timeout=20)
        finally:
            sc.kill()
        assert code == 0, sc.stderr()[-3000:]
        assert len(sc.log_messages("Drained")) == 2
        for pid in pids:
            assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid), pid
        assert not Path(metrics_dir).exists()  # the parent cleans up


def _published_ok_requests(metrics_dir: Path) -> float:
    """The requests answered OK, as the workers' published metric files count them."""
    total = 0.0
    for path in metrics_dir.glob("worker-*.json"):
        for name, _, _, samples in json.loads(path.read_text()):
            if name == "otlp_receiver_requests_total":
                total += sum(value for labels, value in samples if labels["outcome"] == "ok")
    return total


def _argument(pid: int, flag: str) -> str:
    args = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    return args[args.index(flag) + 1]


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


# -- start-up failures ------------------------------------------------------------------------


def _serve(config: Path, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "otel_online_eval.cli", "serve", "-c", str(config), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_with_a_config_error_exits_non_zero_with_file_and_line(
    tmp_path: Path, workers: int
) -> None:
    grpc_port, http_port = free_ports(2)
    path = write_config(
        tmp_path / "broken.yaml",
        f"""\
receiver:
  grpc: {{endpoint: "127.0.0.1:{grpc_port}"}}
  http: {{endpoint: "127.0.0.1:{http_port}", max_body_bytes: 10}}
  tls: {{cert_file: /nonexistent/server.crt, key_file: /nonexistent/server.key}}
scorers:
  nonempty: {{type: not_empty}}
rules:
  - name: r
    scorers: [nonempty]
    filter: "name = "
""",
    )
    result = _serve(path, "--workers", str(workers))
    assert result.returncode != 0
    err = result.stderr
    assert f"{path}:3:" in err and "max_body_bytes" in err
    assert f"{path}:4:" in err and "no such file: '/nonexistent/server.crt'" in err
    assert f"{path}:10:" in err and "rules[0].filter" in err
    assert "Sidecar serving" not in err


@pytest.mark.parametrize("taken", ["grpc", "http"])
def test_serve_on_a_port_in_use_exits_non_zero_with_a_clear_error(
    tmp_path: Path, taken: str
) -> None:
    grpc_port, http_port = free_ports(2)
    port = grpc_port if taken == "grpc" else http_port
    blocker = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        blocker.bind((HOST, port))
        blocker.listen(1)
        path = write_config(tmp_path / "c.yaml", sidecar_config(grpc_port, http_port))
        result = _serve(path)
    finally:
        blocker.close()
    assert result.returncode != 0
    assert "cannot start the receivers" in result.stderr, result.stderr
    assert f"{port}" in result.stderr
    assert "Traceback" not in result.stderr


def test_default_bind_address_is_loopback(tmp_path: Path) -> None:
    from otel_online_eval.config import load_config
    from otel_online_eval.sidecar.config import ReceiverConfig

    defaults = ReceiverConfig()
    assert defaults.grpc is not None and defaults.http is not None
    assert defaults.grpc.endpoint == "127.0.0.1:4317"
    assert defaults.http.endpoint == "127.0.0.1:4318"
    path = write_config(
        tmp_path / "c.yaml",
        "receiver: {grpc: {max_message_bytes: 2048}, http: {max_body_bytes: 2048}}\n"
        "scorers: {n: {type: not_empty}}\nrules: [{name: r, scorers: [n]}]\n",
    )
    loaded = load_config(path).receiver
    assert loaded is not None and loaded.grpc is not None and loaded.http is not None
    assert loaded.grpc.endpoint.startswith("127.0.0.1:")
    assert loaded.http.endpoint.startswith("127.0.0.1:")


def test_threads_carry_their_role_in_their_os_names(tmp_path: Path) -> None:
    """benchmarks/sidecar.py splits the CPU by these names; operators see them in top -H."""
    with OtlpGrpcReceiver() as forward_rx, OtlpGrpcReceiver() as export_rx:
        config = sidecar_config(
            forward=forward_to(forward_rx.endpoint), export=export_to(export_rx)
        )
        with running_sidecar(tmp_path, config) as sidecar:
            # gRPC's handler threads start with the first request.
            health = requests.get(sidecar.url("/healthz"), timeout=5)
            assert health.status_code == 200
            channel = grpc.insecure_channel(sidecar.grpc_endpoint)
            export = channel.unary_unary(
                "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
            )
            assert export(b"", timeout=5) == b""  # an empty request is a valid one
            channel.close()
            names = {
                (task / "comm").read_text().strip()
                for task in Path(f"/proc/{sidecar.pid}/task").iterdir()
            }
    assert {"oe-engine", "oe-emit", "oe-export", "oe-forward"} <= names, names
    assert any(name.startswith("otlp-grpc") for name in names), names
    assert {"otlp-http_0", "otlp-http_1", "otlp-http_2", "otlp-http_3"} <= names, names


# -- memory ---------------------------------------------------------------------------------------


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _big_request(index: int) -> bytes:
    """100 spans of 10 KB each; one of them, named ``sampled``, is what the rule scores."""
    prompt = encode_attributes({"gen_ai.prompt": "x" * 10_000})
    spans = [
        ProtoSpan(
            trace_id=(index * 1000 + i + 1).to_bytes(16, "big"),
            span_id=(i + 1).to_bytes(8, "big"),
            name="sampled" if i == 0 else "other",
            start_time_unix_nano=1,
            end_time_unix_nano=2,
            attributes=prompt,
        )
        for i in range(100)
    ]
    request = ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=spans)])]
    )
    return request.SerializeToString()


def test_a_backlog_holds_the_sampled_spans_not_the_requests_they_came_in(
    tmp_path: Path, otlp_grpc_receiver: OtlpGrpcReceiver
) -> None:
    """60 requests of 1 MB wait for a stuck scorer: the sidecar keeps one 10 KB span of each."""
    with running_sidecar(tmp_path, _stuck_on(otlp_grpc_receiver, "sampled")) as sc:
        send_grpc(sc.grpc_endpoint, _big_request(0))  # warm up: threads, imports, buffers
        wait_until(lambda: sc.metrics().value("online_eval_spans_sampled_total") == 1)
        before = _rss_bytes(sc.pid)
        for index in range(1, 61):
            send_grpc(sc.grpc_endpoint, _big_request(index))
        wait_until(lambda: sc.metrics().value("online_eval_spans_sampled_total") == 61)
        grown = _rss_bytes(sc.pid) - before
        sc.stop(timeout=30)
    # Holding the requests would be 60 MB and more; the sampled spans are 0.6 MB.
    assert grown < 25 * 2**20, f"the sidecar grew by {grown / 2**20:.1f} MiB"


def _malloc_heaps(pid: int) -> int:
    """glibc's thread arenas, one 64 MiB-aligned reservation each, counted in /proc/PID/maps:
    an anonymous read-write start followed by its unused, inaccessible rest."""
    rows = [line.split() for line in Path(f"/proc/{pid}/maps").read_text().splitlines()]
    heap = 64 << 20
    count = 0
    for row, after in itertools.pairwise(rows):
        start = int(row[0].split("-")[0], 16)
        after_end = int(after[0].split("-")[1], 16)
        if (
            start % heap == 0
            and len(row) == 5
            and row[1] == "rw-p"
            and len(after) == 5
            and after[1] == "---p"
            and after_end - start == heap
        ):
            count += 1
    return count


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc arenas")
def test_the_sidecar_shares_two_malloc_arenas_among_its_threads(tmp_path: Path) -> None:
    """See otel_online_eval._malloc: per-thread arenas cost more in page faults than decoding."""
    with running_sidecar(tmp_path, sidecar_config()) as sc:
        for index in range(8):  # several handler threads
            send_grpc(sc.grpc_endpoint, _big_request(index))
        heaps = _malloc_heaps(sc.pid)
    # The main arena has no such reservation; the second does (a third when threads raced to
    # make it, see test_malloc). Without the cap there are about ten.
    assert heaps <= 2, heaps
