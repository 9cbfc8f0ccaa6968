"""The ``otel-online-eval`` command."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence

from otel_online_eval._errors import ConfigError, ConfigIssue
from otel_online_eval.config import OnlineEvalConfig, load_config
from otel_online_eval.export import ExportConfig, OtlpTarget, resolve_batch, resolve_otlp
from otel_online_eval.rules import Rule

__all__ = ["main"]


def _target(t: OtlpTarget) -> str:
    headers = ", ".join(name for name, _ in t.headers) or "none"  # names only: values are secrets
    return (
        f"otlp {t.protocol} {t.endpoint} ({'plaintext' if t.insecure else 'TLS'}, "
        f"headers: {headers}, timeout {t.timeout_s:g} s, compression {t.compression or 'none'})"
    )


def _resolved(cfg: OnlineEvalConfig) -> list[str]:
    """The export and forward settings as they resolve with this environment (both doors
    resolve them the same way).

    Raises:
        ConfigError: every bad ``OTEL_EXPORTER_OTLP_*`` / ``OTEL_BSP_*`` value or TLS file.
    """
    export = cfg.export or ExportConfig()
    lines: list[str] = []
    issues: list[ConfigIssue] = []
    try:
        lines.append(
            f"export: {_target(resolve_otlp(export.otlp)) if export.otlp else export.kind}"
        )
    except ConfigError as exc:
        issues.extend(exc.issues)
    try:
        batch = resolve_batch(export.batch)
        lines.append(
            f"  batch: delay {batch.schedule_delay_ms:g} ms, queue {batch.max_queue_size} spans, "
            f"{batch.max_export_batch_size} spans per export"
        )
    except ConfigError as exc:
        issues.extend(exc.issues)
    if cfg.forward is not None:
        try:
            forward = resolve_otlp(cfg.forward.otlp, path="forward.otlp")
            lines.append(f"forward (serve): {_target(forward)}")
        except ConfigError as exc:
            issues.extend(exc.issues)
    if issues:
        raise ConfigError(issues)
    return lines


def _summary(cfg: OnlineEvalConfig) -> str:
    lines = [f"{cfg.source}: valid — {len(cfg.rules)} rule(s), {len(cfg.scorers)} scorer(s)"]
    lines.extend(_resolved(cfg))
    if cfg.receiver is not None:
        rc = cfg.receiver
        parts = [
            f"grpc {rc.grpc.endpoint}" if rc.grpc else "",
            f"http {rc.http.endpoint}" if rc.http else "",
            "tls" if rc.tls else "",
            "bearer token" if rc.auth else "",
        ]
        lines.append("receiver (serve): " + ", ".join(p for p in parts if p))
    for rule in cfg.rules:
        sel = rule.apply_to
        picks = []
        if sel.root_spans:
            picks.append("root spans")
        if sel.local_root_spans:
            picks.append("local root spans")
        if sel.span_names:
            picks.append("spans named " + ", ".join(sorted(sel.span_names)))
        rate = "callable" if rule.rate is None else f"{rule.rate:.4g}"
        lines.append("")
        lines.append(f"rule {rule.name}" + (f" — {rule.description}" if rule.description else ""))
        if rule.is_trace:
            lines.append(_scope_line(rule))
        else:
            lines.append(f"  applies to: {' or '.join(picks) if picks else 'every span'}")
        lines.append(
            f"  sampling:   {rate}"
            + (f" (seed {rule.sampling_seed})" if rule.sampling_seed else "")
        )
        lines.append(f"  filter:     {rule.filter.source if rule.filter else '(none)'}")
        scorers = [
            f"{u.name} [{u.spec.type}]" + (f" at {u.sampling:g}" if u.sampling != 1 else "")
            for u in rule.scorers
        ]
        lines.append(f"  scorers:    {', '.join(scorers)}")
    return "\n".join(lines)


def _validate(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.config)
        summary = _summary(cfg)  # resolves export and forward: OTEL_* values, TLS files
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    print(summary)
    return 0


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and any ``extra=`` fields."""

    _STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in self._STANDARD:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def _serve(args: argparse.Namespace) -> int:
    # gRPC's own logging is not JSON; keep it to errors unless asked otherwise.
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    if args.workers > 1:
        from otel_online_eval.sidecar.workers import run_workers

        return run_workers(args.config, args.workers, args.log_format, args.log_level)
    from otel_online_eval._malloc import limit_malloc_arenas
    from otel_online_eval.sidecar.server import Sidecar

    limit_malloc_arenas()  # before the server's threads start (see _malloc)
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    try:
        sidecar = Sidecar(
            cfg,
            config_path=args.config,
            reuse_port=args.reuse_port,
            worker=args.worker_index,
            metrics_dir=args.metrics_dir,
            workers_total=args.workers_total,
        )
    except ConfigError as exc:  # what only shows when it is built: OTEL_* values, TLS files
        print(str(exc), file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"otel-online-eval: cannot start the receivers: {exc}", file=sys.stderr)
        return 1
    stop, reload = threading.Event(), threading.Event()

    def on_stop(*_: object) -> None:
        stop.set()

    def on_reload(*_: object) -> None:
        reload.set()
        stop.set()

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, on_reload)
    sidecar.start()
    while True:
        while not stop.wait(0.5):  # a timed wait lets the signal handlers run promptly
            pass
        stop.clear()
        if not reload.is_set():
            break
        reload.clear()
        sidecar.reload()
    return 0 if sidecar.drain() else 3


def _configure_logging(fmt: str, level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="otel-online-eval",
        description="Online evaluation for LLM applications, built on OpenTelemetry.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    validate = sub.add_parser("validate", help="check a config file and summarise its rules")
    validate.add_argument("-c", "--config", required=True, help="the YAML config file")
    validate.set_defaults(run=_validate)
    serve = sub.add_parser(
        "serve", help="run the OTLP sidecar: receive, forward and evaluate spans"
    )
    serve.add_argument("-c", "--config", required=True, help="the YAML config file")
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes sharing the ports (SO_REUSEPORT), for several cores",
    )
    serve.add_argument("--log-format", choices=["json", "text"], default="json")
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="info")
    serve.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    serve.add_argument("--worker-index", type=int, default=None, help=argparse.SUPPRESS)
    serve.add_argument("--metrics-dir", default=None, help=argparse.SUPPRESS)
    serve.add_argument("--workers-total", type=int, default=None, help=argparse.SUPPRESS)
    serve.set_defaults(run=_serve)
    from otel_online_eval.tools.commands import add_commands

    add_commands(sub)
    args = parser.parse_args(argv)
    if args.command == "serve":
        _configure_logging(args.log_format, args.log_level)
    else:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.run(args))
    except BrokenPipeError:  # the reader went away (`| head`): not an error of ours
        sys.stderr.close()
        return 0


def _scope_line(rule: Rule) -> str:
    """A trace or session rule's scope, anchor and completion, for ``validate``."""
    from otel_online_eval.assembly import Completion, SessionSettings
    from otel_online_eval.engine._deciding import anchor_words

    c = rule.completion or Completion()
    done = f"settle_s {c.settle_s:g}, idle_s {c.idle_s:g}, max_wait_s {c.max_wait_s:g}"
    if c.end_on:
        done += ", end_on " + ", ".join(sorted(c.end_on))
    if rule.is_session:
        s = rule.session or SessionSettings()
        key = s.key or "gen_ai.conversation.id, else session.id"
        return (
            f"  scope:      session; key {key}; idle_s {s.idle_s:g}, max_turns {s.max_turns}, "
            f"max_wait_s {s.max_wait_s:g}; each trace a turn once complete ({done})"
        )
    return (
        f"  scope:      trace; anchored on {anchor_words(rule)}; complete after {done}; "
        f"late spans: {rule.late}; incomplete traces: {rule.on_incomplete}"
    )


if __name__ == "__main__":
    sys.exit(main())
