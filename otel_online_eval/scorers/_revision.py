"""A scorer's revision: a short stable hash of what decides its scores, so that a shift in scores
can be told apart from a change of the evaluator (``online_eval.scorer.revision``)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

__all__ = ["annotator_kind", "code_revision", "scorer_revision"]

# Options that say how a scorer runs or where it connects, not what it scores.
_OPERATIONAL = frozenset(
    {"api_key", "headers", "timeout_s", "bulkhead", "limits", "budget", "scale", "proxy"}
)


def _digest(data: Any) -> str:
    text = json.dumps(data, sort_keys=True, default=repr, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def scorer_revision(kind: str, params: Mapping[str, Any], scorer: object) -> str:
    """The revision of a configured scorer: its type, its parameters (not the operational ones:
    credentials, limits, timeouts), and what the scorer object adds (a judge: its template's
    text and choices, whether the template was named or inline)."""
    kept = {k: v for k, v in params.items() if k not in _OPERATIONAL and k != "type"}
    extra = getattr(scorer, "revision_source", None)
    return _digest({"type": kind, "params": kept, "source": extra})


def code_revision(scorer: object) -> str:
    """The revision of a scorer given in code: where it is defined and what it adds."""
    target = getattr(scorer, "fn", scorer)
    where = (
        getattr(target, "__module__", None),
        getattr(target, "__qualname__", type(target).__qualname__),
    )
    return _digest({"code": where, "source": getattr(scorer, "revision_source", None)})


def annotator_kind(scorer: object) -> str:
    """``LLM`` for a scorer that asks a model (a judge), else ``CODE``."""
    return "LLM" if getattr(scorer, "annotator_kind", "CODE") == "LLM" else "CODE"
