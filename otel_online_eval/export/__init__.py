"""Where eval spans go: the ``export:`` section, one resolver for both doors, and the builders.

- :mod:`~otel_online_eval.export.config`: the section's model, its load-time checks, its reader
  (also for the sidecar's ``forward: otlp:``).
- :mod:`~otel_online_eval.export.resolve`: endpoint, headers, TLS, timeout, compression and
  batching from the config, then the ``OTEL_EXPORTER_OTLP_*`` / ``OTEL_BSP_*`` environment, then
  the SDK's defaults; the in-process SDK exporters and the sidecar's senders get the same.
- :mod:`~otel_online_eval.export.tls`: the TLS client files and the one check of PEM files.
- :mod:`~otel_online_eval.export.build`: the in-process exporters and batching processor.
- :mod:`~otel_online_eval.export.file`: the OTLP/JSON file exporter.
"""

from otel_online_eval.export.build import build_exporter, build_span_processor
from otel_online_eval.export.config import (
    COMPRESSIONS,
    EXPORTER_KINDS,
    PROTOCOLS,
    BatchConfig,
    ConsoleExportConfig,
    ExportConfig,
    FileExportConfig,
    OtlpExportConfig,
    read_export_config,
    read_otlp_config,
)
from otel_online_eval.export.file import OtlpJsonFileExporter
from otel_online_eval.export.resolve import (
    DEFAULT_BATCH,
    BatchSettings,
    OtlpTarget,
    parse_headers,
    resolve_batch,
    resolve_otlp,
    resolve_protocol,
    resolve_tls,
)
from otel_online_eval.export.tls import TLS_FIELDS, OtlpTls, tls_file_problems

__all__ = [
    "COMPRESSIONS",
    "DEFAULT_BATCH",
    "EXPORTER_KINDS",
    "PROTOCOLS",
    "TLS_FIELDS",
    "BatchConfig",
    "BatchSettings",
    "ConsoleExportConfig",
    "ExportConfig",
    "FileExportConfig",
    "OtlpExportConfig",
    "OtlpJsonFileExporter",
    "OtlpTarget",
    "OtlpTls",
    "build_exporter",
    "build_span_processor",
    "parse_headers",
    "read_export_config",
    "read_otlp_config",
    "resolve_batch",
    "resolve_otlp",
    "resolve_protocol",
    "resolve_tls",
    "tls_file_problems",
]
