"""The ``otel-online-eval`` command."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from otel_online_eval._errors import ConfigError
from otel_online_eval.config import OnlineEvalConfig, load_config

__all__ = ["main"]


def _summary(cfg: OnlineEvalConfig) -> str:
    lines = [f"{cfg.source}: valid — {len(cfg.rules)} rule(s), {len(cfg.scorers)} scorer(s)"]
    if cfg.export is not None:
        lines.append(f"export: {cfg.export.kind}")
    else:
        lines.append("export: otlp, configured by the OTEL_EXPORTER_OTLP_* environment")
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
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    print(_summary(cfg))
    return 0


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
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.run(args))
    except BrokenPipeError:  # the reader went away (`| head`): not an error of ours
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
