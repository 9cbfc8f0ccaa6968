"""otel-online-eval: online evaluation for LLM applications, built on OpenTelemetry.

Spans are matched against YAML rules as they end, scored in the background, and the results
exported as eval spans (children of, and linked to, the scored span) through any exporter.
"""

from otel_online_eval._errors import (
    ConfigError,
    ConfigIssue,
    FilterSyntaxError,
    MissingDependencyError,
    OnlineEvalError,
    ScorerError,
    ScorerSkipped,
)
from otel_online_eval.config import OnlineEvalConfig, load_config, parse_config
from otel_online_eval.emit import EvalResult
from otel_online_eval.engine import EngineStats
from otel_online_eval.processor import OnlineEvalSpanProcessor, evaluate
from otel_online_eval.rules import (
    ApplyTo,
    BulkheadConfig,
    Decision,
    Rule,
    ScorerSpec,
    ScorerUse,
    Stage,
)
from otel_online_eval.scorers import EvalInput, FunctionScorer, Score, Scorer
from otel_online_eval.spanview import SdkSpanView, SpanView

__version__ = "0.1.0"

__all__ = [
    "ApplyTo",
    "BulkheadConfig",
    "ConfigError",
    "ConfigIssue",
    "Decision",
    "EngineStats",
    "EvalInput",
    "EvalResult",
    "FilterSyntaxError",
    "FunctionScorer",
    "MissingDependencyError",
    "OnlineEvalConfig",
    "OnlineEvalError",
    "OnlineEvalSpanProcessor",
    "Rule",
    "Score",
    "Scorer",
    "ScorerError",
    "ScorerSkipped",
    "ScorerSpec",
    "ScorerUse",
    "SdkSpanView",
    "SpanView",
    "Stage",
    "evaluate",
    "load_config",
    "parse_config",
]
