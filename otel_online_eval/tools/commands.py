"""The ``test``, ``score``, ``explain`` and ``report`` subcommands.

Each reads OTLP files (see :mod:`otel_online_eval.tools._input`) and uses the same config,
rules, scorers and engine as the processor and the sidecar. Exit status: 0 done; 1 an error
(config, arguments, unreadable input without ``--keep-going``); 2 done, but bad input was
skipped (``--keep-going``); 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from otel_online_eval._errors import OnlineEvalError
from otel_online_eval.tools._common import EXIT_ERROR, EXIT_INTERRUPTED

__all__ = ["add_commands"]


def add_commands(sub: Any) -> None:
    """Register the tools' subcommands on the CLI's subparsers."""
    from otel_online_eval.tools._backfill import add_score_command
    from otel_online_eval.tools._explain import add_explain_command
    from otel_online_eval.tools._report import add_report_command
    from otel_online_eval.tools._trial import add_test_command

    before = set(sub.choices)
    add_test_command(sub)
    add_score_command(sub)
    add_explain_command(sub)
    add_report_command(sub)
    for name in set(sub.choices) - before:
        parser = sub.choices[name]
        run = parser.get_default("run")
        parser.set_defaults(run=_guarded(name, run))


def _guarded(name: str, run: Callable[[argparse.Namespace], int]) -> Callable[..., int]:
    """Run a command; our errors become one line on stderr and exit status 1."""

    def guarded(args: argparse.Namespace) -> int:
        try:
            return run(args)
        except OnlineEvalError as exc:
            print(f"otel-online-eval {name}: {exc}", file=sys.stderr)
            if getattr(args, "keep_going", None) is False and _is_input_error(exc):
                print(
                    f"otel-online-eval {name}: (with --keep-going, bad lines are reported "
                    "and the rest is processed)",
                    file=sys.stderr,
                )
            return EXIT_ERROR
        except KeyboardInterrupt:
            print(f"\notel-online-eval {name}: interrupted.", file=sys.stderr)
            return EXIT_INTERRUPTED

    return guarded


def _is_input_error(exc: BaseException) -> bool:
    from otel_online_eval.tools._input import InputError

    return isinstance(exc, InputError)
