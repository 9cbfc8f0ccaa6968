"""Score sinks: where scores go besides the eval spans, for backends that have scores of their
own. One per ``export:`` score target; today ``phoenix`` (span annotations,
:mod:`otel_online_eval.sinks.phoenix`).
"""

from __future__ import annotations

from otel_online_eval.emit import ScoreSink
from otel_online_eval.export.config import ExportConfig

__all__ = ["build_score_sinks"]


def build_score_sinks(export: ExportConfig | None) -> list[ScoreSink]:
    """The score sinks an ``export:`` section asks for (none when it is absent).

    Each sink starts its own sender thread: build them once per emitter, and shut them down
    with it (the emitters do).
    """
    if export is None:
        return []
    sinks: list[ScoreSink] = []
    if export.phoenix is not None:
        from otel_online_eval.sinks.phoenix import PhoenixSink

        sinks.append(PhoenixSink.from_config(export.phoenix))
    return sinks
