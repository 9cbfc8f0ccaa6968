"""The sidecar: receivers, forwarder and engine put together, with drain and reload.

``otel-online-eval serve -c sidecar.yaml`` runs one :class:`Sidecar` per process. SIGTERM (or
SIGINT) drains: health turns NOT_SERVING, new requests get UNAVAILABLE, requests in progress
finish, queued evaluations finish and their eval spans are exported, the forward buffer is sent,
all within ``receiver.drain_timeout_s``; what cannot be finished is counted as dropped. SIGHUP
reloads the rules, scorers and export from the same file: an invalid file is reported and the
running config keeps going; receiver and forward settings need a restart.

``/metrics`` counts go on across reloads: a retired engine's final counts are kept and added to
the running one's. Under ``--workers``, each worker writes its metric families to a shared
directory every second, and whichever worker a scrape reaches answers for all of them, each
sample labelled with its ``worker``. With trace rules, the workers hand spans to the worker that
assembles their trace (:mod:`otel_online_eval.sidecar.handoff`), so no trace is split.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, TypeVar

from opentelemetry.sdk.trace.export import SpanExporter

from otel_online_eval._batch import build_batcher
from otel_online_eval._errors import ConfigError
from otel_online_eval._threads import name_os_thread
from otel_online_eval.config import OnlineEvalConfig, load_config
from otel_online_eval.emit import Emitter, EvalSink
from otel_online_eval.engine import Engine, EngineStats
from otel_online_eval.export import (
    ExportConfig,
    OtlpExportConfig,
    resolve_batch,
    resolve_otlp,
)
from otel_online_eval.sidecar.config import ReceiverConfig, RetryConfig
from otel_online_eval.sidecar.emit_proto import ProtoEmitter
from otel_online_eval.sidecar.grpc_server import GrpcReceiver
from otel_online_eval.sidecar.handoff import Handoff
from otel_online_eval.sidecar.http_server import HttpReceiver
from otel_online_eval.sidecar.ingest import Ingest, ReceiverStats, make_proto_view
from otel_online_eval.sidecar.log_ingest import LogIngest
from otel_online_eval.sidecar.prometheus import Family, exposition, families
from otel_online_eval.sidecar.shipper import Shipper, ShipperStats, make_sender
from otel_online_eval.sinks import build_score_sinks

__all__ = ["Sidecar"]

logger = logging.getLogger(__name__)

_EXPORT_BUFFER_BYTES = 64 * 1024 * 1024
_PUBLISH_EVERY_S = 1.0

Counts = TypeVar("Counts", EngineStats, ShipperStats)


def _plus(a: Counts, b: Counts) -> Counts:
    """Two sets of counts added field by field (numbers, and dicts key by key)."""
    values: dict[str, Any] = {}
    for f in fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, dict):
            merged = dict(x)
            for key, value in y.items():
                merged[key] = merged.get(key, 0) + value
            values[f.name] = merged
        else:
            values[f.name] = x + y
    return type(a)(**values)


def build_sink(config: OnlineEvalConfig, exporter: SpanExporter | None = None) -> EvalSink:
    """Eval spans as protobuf straight to OTLP (the fast path), or through any SpanExporter
    (console, file, or one given in code).

    Target and batching are resolved as in-process (:func:`~otel_online_eval.export.resolve_otlp`,
    :func:`~otel_online_eval.export.resolve_batch`): the same endpoint, headers, TLS and
    timeout, and the same batch delay, queue and batch sizes, ``OTEL_BSP_*`` included.

    Raises:
        ConfigError: a bad ``OTEL_EXPORTER_OTLP_*`` / ``OTEL_BSP_*`` value or TLS file.
    """
    export = config.export or ExportConfig()
    if exporter is not None or export.kind != "otlp":
        # counts what it exports and drops
        return Emitter(build_batcher(export, exporter), build_score_sinks(export))
    batch = resolve_batch(export.batch)
    target = resolve_otlp(export.otlp or OtlpExportConfig(), path="export.otlp")
    shipper = Shipper("export", make_sender(target), _EXPORT_BUFFER_BYTES, RetryConfig())
    return ProtoEmitter(
        shipper,
        batch.schedule_delay_ms / 1000,
        batch.max_export_batch_size,
        batch.max_queue_size,
        build_score_sinks(export),
    )


class Sidecar:
    """One sidecar process's worth of serving.

    Args:
        config: the loaded config (``receiver:`` defaults apply when absent).
        config_path: the file to reload from on SIGHUP.
        exporter: send eval spans through this SpanExporter instead of the config's export.
        reuse_port: share the ports with sibling worker processes.
        worker: this worker's index, for metrics labels.
        metrics_dir: where the workers share their metrics (``--workers``), and their
            handoff sockets.
        workers_total: how many workers there are (``--workers``): with more than one, spans
            of traces another worker owns are handed to it.
    """

    def __init__(
        self,
        config: OnlineEvalConfig,
        *,
        config_path: str | None = None,
        exporter: SpanExporter | None = None,
        reuse_port: bool = False,
        worker: int | None = None,
        metrics_dir: str | None = None,
        workers_total: int | None = None,
    ) -> None:
        self.config = config
        self.config_path = config_path
        self._exporter = exporter
        self.receiver_config = config.receiver or ReceiverConfig()
        self.stats = ReceiverStats()
        self.forwarder: Shipper | None = None
        self.logs_forwarder: Shipper | None = None
        if config.forward is not None:
            forward = config.forward
            self.forwarder = Shipper(
                "forward",
                make_sender(resolve_otlp(forward.otlp, path="forward.otlp")),
                forward.max_queue_bytes,
                forward.retry,
            )
            # Log requests go to the same collector's logs endpoint, each with its own buffer.
            # A logs target the environment leaves unusable (OTEL_EXPORTER_OTLP_LOGS_* or a
            # TRACES_-only setting) must not stop a sidecar that may never see a log record.
            try:
                logs_target = resolve_otlp(forward.otlp, path="forward.otlp", signal="logs")
            except ConfigError as exc:
                logger.warning(
                    "forward.otlp has no usable logs endpoint, so log records are joined to "
                    "their spans but not forwarded: %s",
                    exc,
                )
            else:
                self.logs_forwarder = Shipper(
                    "forward_logs",
                    make_sender(logs_target, "logs"),
                    forward.max_queue_bytes,
                    forward.retry,
                )
        self.engine = self._build_engine(config)
        self.ingest = Ingest(self.engine, self.forwarder, self.stats)
        self.ingest.logs = LogIngest(self.ingest, self.logs_forwarder)
        self._labels = {"worker": str(worker)} if worker is not None else {}
        # Counts of engines replaced by reloads: those still shutting down, and the final
        # counts of those done (their eval-span export shipper's with them).
        self._stats_lock = threading.Lock()
        self._retiring: list[Engine] = []
        self._past_engine = EngineStats()
        self._past_export = ShipperStats()
        self._metrics_dir = Path(metrics_dir) if metrics_dir and worker is not None else None
        self._worker = worker
        # Always made with several workers: a reload may bring trace rules in.
        self.handoff: Handoff | None = None
        if workers_total is not None and workers_total > 1 and self._metrics_dir is not None:
            assert worker is not None
            self.handoff = Handoff(self._metrics_dir, worker, workers_total, self.engine)
            self.ingest.handoff = self.handoff
            self.engine.turn_owner = self.handoff.route_turn
        rc = self.receiver_config
        self.grpc: GrpcReceiver | None = None
        self.http: HttpReceiver | None = None
        if rc.grpc is not None:
            self.grpc = GrpcReceiver(rc.grpc, self.ingest, rc.tls, rc.auth, reuse_port)
        if rc.http is not None:
            self.http = HttpReceiver(
                rc.http, self.ingest, self.metrics_text, rc.tls, rc.auth, reuse_port
            )
        self._stopped = threading.Event()
        self._drain_lock = threading.Lock()
        self._drained = False

    def _build_engine(self, config: OnlineEvalConfig) -> Engine:
        make_view = functools.partial(make_proto_view, presets=config.extract)
        return Engine(
            config.rules,
            build_sink(config, self._exporter),
            make_view,
            config.engine,
            size_of=_received_size,
            join_s=config.extract.join_s,
            expect_records=True,
        )

    def start(self) -> None:
        if self.handoff is not None:
            self.handoff.start()
        if self.grpc is not None:
            self.grpc.start()
        if self.http is not None:
            self.http.start()
        if self._metrics_dir is not None:
            threading.Thread(
                target=self._publish_metrics, name="online-eval-metrics", daemon=True
            ).start()
        logger.info(
            "Sidecar serving",
            extra={
                "grpc": self.grpc.endpoint if self.grpc else None,
                "http": self.http.endpoint if self.http else None,
                "rules": len(self.config.rules),
                "forward": self.forwarder is not None,
                "handoff": str(self.handoff.path) if self.handoff else None,
                "pid": os.getpid(),
            },
        )

    def metric_families(self) -> list[Family]:
        """This process's metrics, reloaded engines' counts included."""
        with self._stats_lock:
            engines = [*self._retiring, self.engine]
            engine, export = self._past_engine, self._past_export
        has_export = export != ShipperStats()
        for e in engines:
            engine = _plus(engine, e.stats())
            if isinstance(e.emitter, ProtoEmitter):
                export = _plus(export, e.emitter.shipper.stats)
                has_export = True
        shippers = {}
        if self.forwarder is not None:
            shippers["forward"] = self.forwarder.stats
        if self.logs_forwarder is not None:
            shippers["forward_logs"] = self.logs_forwarder.stats
        if has_export:
            shippers["export"] = export
        if self.handoff is not None:
            shippers["handoff"] = self.handoff.shipper_stats()
        out = families(engine, self.stats, shippers)
        if self.handoff is not None:
            out += self.handoff.families()
        return out

    def metrics_text(self) -> str:
        sources: list[tuple[Mapping[str, str], list[Family]]] = [
            (self._labels, self.metric_families())
        ]
        if self._metrics_dir is not None:
            sources += self._sibling_metrics()
        return exposition(sources)

    def _publish_metrics(self) -> None:
        name_os_thread()
        while True:
            self._write_metrics()
            if self._stopped.wait(_PUBLISH_EVERY_S):
                return

    def _write_metrics(self) -> None:
        assert self._metrics_dir is not None
        target = self._metrics_dir / f"worker-{self._worker}.json"
        temporary = target.with_suffix(".tmp")
        try:
            temporary.write_text(json.dumps(self.metric_families()))
            os.replace(temporary, target)  # readers never see half a file
        except OSError as exc:
            logger.warning("Cannot share this worker's metrics: %s", exc)

    def _sibling_metrics(self) -> list[tuple[Mapping[str, str], list[Family]]]:
        assert self._metrics_dir is not None
        out: list[tuple[Mapping[str, str], list[Family]]] = []
        for path in sorted(self._metrics_dir.glob("worker-*.json")):
            worker = path.stem.removeprefix("worker-")
            if worker == str(self._worker):
                continue
            try:
                fams: list[Family] = [
                    (name, kind, help_text, [(dict(ls), float(v)) for ls, v in samples])
                    for name, kind, help_text, samples in json.loads(path.read_text())
                ]
            except (OSError, ValueError, TypeError) as exc:
                logger.warning("Cannot read worker %s's metrics: %s", worker, exc)
                continue
            out.append(({"worker": worker}, fams))
        return out

    def stats_snapshot(self) -> Mapping[str, object]:
        stats: EngineStats = self.engine.stats()
        return {"engine": stats, "receiver": self.stats}

    def reload(self) -> bool:
        """Load the config file again and swap rules, scorers and export; False if invalid."""
        if self.config_path is None:
            logger.warning("Reload asked for, but the sidecar was not started from a file.")
            return False
        try:
            config = load_config(self.config_path)
        except ConfigError as exc:
            logger.error("Reload refused; the running config stays in force.\n%s", exc)
            return False
        if config.receiver != self.config.receiver or config.forward != self.config.forward:
            logger.warning("receiver: and forward: changes take effect only after a restart.")
        try:
            new_engine = self._build_engine(config)
        except ConfigError as exc:  # what only shows when built: OTEL_* values, TLS files
            logger.error("Reload refused; the running config stays in force.\n%s", exc)
            return False
        with self._stats_lock:
            old_engine, self.engine = self.engine, new_engine
            self._retiring.append(old_engine)
        self.ingest.engine = new_engine
        if self.handoff is not None:
            self.handoff.ingest.engine = new_engine
            new_engine.turn_owner = self.handoff.route_turn
        self.config = config

        def retire() -> None:
            # Requests that started with the old engine submit to it first: shut down any
            # sooner, it would drop their spans and count them where no one looks any more.
            self.ingest.wait_idle(old_engine, 5.0)
            if self.handoff is not None:
                self.handoff.ingest.wait_idle(old_engine, 5.0)
            old_engine.shutdown()
            with self._stats_lock:
                self._past_engine = _plus(
                    self._past_engine, replace(old_engine.stats(), queue_size=0)
                )
                sink = old_engine.emitter
                if isinstance(sink, ProtoEmitter):
                    final = replace(sink.shipper.stats, queued_bytes=0, queued_requests=0)
                    self._past_export = _plus(self._past_export, final)
                self._retiring.remove(old_engine)

        threading.Thread(target=retire, name="online-eval-retire", daemon=True).start()
        logger.info("Config reloaded", extra={"rules": len(config.rules)})
        return True

    def drain(self, timeout_s: float | None = None) -> bool:
        """Stop accepting, finish and flush everything within ``timeout_s``; idempotent.

        Returns:
            False when something could not be finished in time (it is counted as dropped).
        """
        with self._drain_lock:
            if self._drained:
                return True
            self._drained = True
        timeout_s = self.receiver_config.drain_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout_s
        logger.info("Draining", extra={"timeout_s": timeout_s})
        self.ingest.closed = True
        if self.grpc is not None:
            self.grpc.set_serving(False)
        if self.http is not None:
            self.http.serving = False
        grace = min(5.0, timeout_s / 4)
        if self.grpc is not None:
            self.grpc.stop(grace)
        self.ingest.wait_idle(self.engine, grace)  # requests already accepted submit first
        ok = [True, True, True]
        if self.handoff is not None:
            # Spans for the peers go out; the peers' spans for us come in before the engine
            # shuts down (so its buffered traces are whole), within half the time left.
            left = max(0.0, deadline - time.monotonic())
            ok[2] = self.handoff.finish_sending(left / 2)
            left = max(0.0, deadline - time.monotonic())
            ok[2] = self.handoff.wait_for_peers(left / 2) and ok[2]
            self.handoff.stop_receiving(min(grace, max(0.0, deadline - time.monotonic())))
        sink = self.engine.emitter

        def finish_engine() -> None:
            left = max(0.0, deadline - time.monotonic())
            ok[0] = self.engine.shutdown(int(left * 1000))

        def finish_forward() -> None:
            if self.forwarder is not None:
                ok[1] = self.forwarder.shutdown(max(0.0, deadline - time.monotonic()))
            if self.logs_forwarder is not None:
                left = max(0.0, deadline - time.monotonic())
                ok[1] = self.logs_forwarder.shutdown(left) and ok[1]

        # Daemons: one stuck past its deadline must not keep the process alive.
        workers = [
            threading.Thread(target=finish_engine, daemon=True),
            threading.Thread(target=finish_forward, daemon=True),
        ]
        for w in workers:
            w.start()
        for w in workers:
            w.join(max(0.0, deadline - time.monotonic()) + 5)
        if self.http is not None:
            self.http.stop(grace)
        self._stopped.set()
        if self._metrics_dir is not None:
            self._write_metrics()  # the final counts, for a sibling still serving
        engine = self.engine.stats()
        logger.info(
            "Drained",
            extra={
                "complete": all(ok),
                "eval_dropped": sum(engine.dropped.values()),
                "forward_dropped": self.forwarder.stats.dropped_spans if self.forwarder else 0,
                "forward_logs_dropped": (
                    self.logs_forwarder.stats.dropped_spans if self.logs_forwarder else 0
                ),
                "handoff_dropped": (
                    self.handoff.shipper_stats().refused_spans
                    + self.handoff.shipper_stats().dropped_spans
                    if self.handoff
                    else 0
                ),
                "export_dropped": (
                    sink.shipper.stats.dropped_spans + sink.dropped_spans
                    if isinstance(sink, ProtoEmitter)
                    else 0
                ),
            },
        )
        return all(ok)

    def wait(self, timeout_s: float | None = None) -> bool:
        return self._stopped.wait(timeout_s)


def _received_size(item: tuple[Any, ...]) -> int:
    """About what holding a received span (its copied message and view) costs, in bytes, as
    trace assembly counts it: fitted to RSS with 50,000 held spans (1.4 KB bare, about twice
    its encoded size, 150 bytes per attribute)."""
    span = item[0]
    return 1400 + 2 * int(span.ByteSize()) + 150 * len(span.attributes)
