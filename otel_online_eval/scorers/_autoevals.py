"""The ``autoevals`` scorer type: any scorer of Braintrust's autoevals library, from YAML.

::

    scorers:
      json_ok:   {type: autoevals, name: ValidJSON}
      factual:
        type: autoevals
        name: Factuality
        fields: {expected: "attributes['app.reference_answer']"}
        model: gpt-4o-mini
        base_url: ${env:OPENAI_BASE_URL:-https://api.openai.com/v1}
        api_key: ${env:OPENAI_API_KEY}
      grounded:
        type: autoevals
        name: Faithfulness
        fields: {context: "attributes['retrieval.documents']"}

``name`` is a scorer class exported by ``autoevals`` (``ValidJSON``, ``Levenshtein``,
``Moderation``, ``Humor``, ``Security``, ``Possible``, ``ClosedQA``, ``Factuality``,
``Faithfulness``, ...). ``args`` are passed to its constructor when it takes them (``threshold``
for Moderation), otherwise to every call (``criteria`` for ClosedQA). ``fields`` maps the call's
keyword arguments to values of the span: ``output`` (the answer) and, when the scorer takes it,
``input`` (the prompt) by default; any other name (``expected``, ``context``, ``instructions``)
to ``input``, ``output`` or a filter-language expression. A mapped value that is missing on a
span is an error for that span; the default ``input`` is simply left out.

Scorers that call an LLM get an OpenAI client made from ``base_url`` (``OPENAI_BASE_URL``, else
OpenAI's API), ``api_key`` (``OPENAI_API_KEY``), ``timeout_s`` and ``retries`` (the OpenAI
client's own retries, which honour ``Retry-After``). Unlike autoevals' default, a 429 is not
retried without end: it is an error once those retries are spent. The judge model and the
token usage the endpoint reports are recorded like the ``llm_judge`` type's.

autoevals scorers are synchronous: they run in the engine's thread pool, under the scorer's
``timeout_s``. An autoevals score of None is recorded as a skip; the classifier's ``choice``
becomes the label and its ``rationale`` the explanation.

Needs ``pip install 'otel-online-eval[autoevals]'`` (autoevals, and openai for the LLM scorers);
without it the configuration does not load.
"""

from __future__ import annotations

import contextvars
import inspect
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, attach, detach, set_value

from otel_online_eval._errors import MissingDependencyError, ScorerError, ScorerSkipped
from otel_online_eval._validate import Reader
from otel_online_eval.scorers._fields import Field, builtin_type, describe, quote_list
from otel_online_eval.scorers.base import EvalInput, Score
from otel_online_eval.scorers.registry import field_getter

__all__ = ["AutoevalsScorer", "build_autoevals"]

_DEFAULT_BASE_URL = "https://api.openai.com/v1"


@dataclass
class _Usage:
    model: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    calls: int = 0


_usage: contextvars.ContextVar[_Usage | None] = contextvars.ContextVar(
    "otel_online_eval_autoevals_usage", default=None
)


def _count_usage(response: Any) -> None:
    """Add the usage of a chat completion (an OpenAI SDK object) to the current call's tally."""
    tally = _usage.get()
    if tally is None:
        return
    usage = getattr(response, "usage", None)
    if usage is not None:
        for source, attr in (
            ("prompt_tokens", "input_tokens"),
            ("completion_tokens", "output_tokens"),
        ):
            value = getattr(usage, source, None)
            if isinstance(value, int) and not isinstance(value, bool):
                setattr(tally, attr, getattr(tally, attr) + value)
        tally.calls += 1
    model = getattr(response, "model", None)
    if isinstance(model, str):
        tally.model = model


@dataclass(eq=False)
class AutoevalsScorer:
    """Adapts one autoevals scorer instance to the Scorer protocol (sync: the thread pool).

    Attributes:
        name: the YAML name.
        evaluator: the autoevals scorer instance.
        fields: call keyword -> (value reader, required).
        call_args: constant keyword arguments for every call.
        model: the judge model, when the scorer calls an LLM.
    """

    name: str
    evaluator: Any
    fields: Mapping[str, tuple[Field, bool]]
    call_args: Mapping[str, Any] = field(default_factory=dict)
    model: str | None = None

    @property
    def annotator_kind(self) -> str:
        """``LLM`` for the autoevals scorers that ask a model."""
        return "LLM" if self.model is not None else "CODE"

    def score(self, inp: EvalInput) -> Score:
        kwargs = dict(self.call_args)
        for key, (reader, required) in self.fields.items():
            value = reader.get(inp)
            if value is None:
                if required:
                    raise ScorerError(reader.missing_message(inp))
                continue
            kwargs[key] = value
        output = kwargs.pop("output", None)
        kwargs.setdefault("expected", None)
        tally = _Usage()
        reset = _usage.set(tally)
        token = attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
        try:
            # Not ``eval(output, expected, **kw)``: it passes ``expected`` by position, which
            # lands on ValidJSON's ``schema``.
            run = getattr(self.evaluator, "_run_eval_sync", self.evaluator.eval)
            result = run(output, **kwargs)
        finally:
            detach(token)
            _usage.reset(reset)
        return self._to_score(result, tally)

    def _to_score(self, result: Any, tally: _Usage) -> Score:
        value = getattr(result, "score", None)
        raw_meta = getattr(result, "metadata", None)
        metadata: dict[str, Any] = dict(raw_meta) if isinstance(raw_meta, Mapping) else {}
        if value is None:
            raise ScorerSkipped(f"autoevals {type(self.evaluator).__name__} returned no score")
        label = metadata.pop("choice", None)
        explanation = metadata.pop("rationale", None)
        if self.model is not None:
            metadata["online_eval.judge.request.model"] = self.model
        if tally.calls:
            if tally.model:
                metadata["online_eval.judge.response.model"] = tally.model
            metadata["online_eval.judge.usage.input_tokens"] = tally.input_tokens
            metadata["online_eval.judge.usage.output_tokens"] = tally.output_tokens
        return Score(
            value,
            label if isinstance(label, str) else None,
            explanation if isinstance(explanation, str) else None,
            metadata,
        )

    def __repr__(self) -> str:
        return f"AutoevalsScorer({self.name!r}, {type(self.evaluator).__name__})"


def _import_autoevals(opts: Reader) -> Any:
    try:
        import autoevals  # type: ignore[import-untyped, import-not-found, unused-ignore]
    except ImportError:
        opts.error("type", str(MissingDependencyError("the autoevals scorer type", "autoevals")))
        return None
    return autoevals


def _params(fn: Callable[..., Any]) -> tuple[set[str], bool]:
    """Keyword names ``fn`` takes, and whether it takes ``**kwargs``."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return set(), True
    names = {
        p.name
        for p in sig.parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"
    }
    return names, any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())


def _openai_client(opts: Reader, name: str) -> Any:
    """An OpenAI client for LLM-based autoevals scorers, counting token usage."""
    try:
        import openai  # type: ignore[import-not-found, unused-ignore]
        from autoevals.oai import (  # type: ignore[import-untyped, import-not-found, unused-ignore]
            LLMClient,
        )
    except ImportError:
        opts.error(
            "name",
            str(MissingDependencyError(f"autoevals {name} (an LLM scorer)", "autoevals")),
        )
        return None
    base_url = opts.str("base_url") or os.environ.get("OPENAI_BASE_URL") or _DEFAULT_BASE_URL
    api_key = opts.str("api_key") or os.environ.get("OPENAI_API_KEY")
    timeout = float(opts.number("timeout_s", 30.0, lo=0.001))
    retries = int(opts.number("retries", 2, lo=0, hi=20, integer=True))
    if not api_key:
        opts.issues.add(
            opts.path,
            f"autoevals {name} calls an LLM: set 'api_key' (or OPENAI_API_KEY in the environment)",
        )
        return None

    class _Never(Exception):
        """Stands in for openai.RateLimitError: autoevals would retry it up to 100 times."""

    class _BoundedClient(LLMClient):  # type: ignore[misc]
        def __post_init__(self) -> None:
            super().__post_init__()
            self.RateLimitError = _Never
            complete: Callable[..., Any] = self.__dict__["complete"]

            def counted(**kwargs: Any) -> Any:
                response = complete(**kwargs)
                _count_usage(response)
                return response

            self.__dict__["complete"] = counted

    client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=retries, timeout=timeout)
    return _BoundedClient(openai=client)


@builtin_type("autoevals", inline=False)
def build_autoevals(name: str, opts: Reader) -> AutoevalsScorer | None:
    """``autoevals``: ``name``, ``args``, ``fields``, ``model``, ``base_url``, ``api_key``,
    ``retries`` (see the module docstring)."""
    cls_name = opts.str("name", required=True)
    raw_args = opts.raw("args")
    raw_fields = opts.raw("fields")
    model = opts.str("model")
    for key in ("base_url", "api_key", "retries"):
        opts.raw(key)  # read with the client, when the scorer calls an LLM
    if raw_args is not None and not isinstance(raw_args, Mapping):
        opts.error("args", f"must be a mapping of arguments, got {describe(raw_args)}")
        return None
    if raw_fields is not None and not isinstance(raw_fields, Mapping):
        opts.error("fields", f"must be a mapping of argument -> field, got {describe(raw_fields)}")
        return None
    module = _import_autoevals(opts)
    if module is None or cls_name is None:
        return None
    from autoevals.score import (  # type: ignore[import-untyped, import-not-found, unused-ignore]
        Scorer as AutoevalsBase,
    )

    cls = getattr(module, cls_name, None)
    if not (inspect.isclass(cls) and issubclass(cls, AutoevalsBase)):
        known = sorted(
            n
            for n in dir(module)
            if inspect.isclass(getattr(module, n))
            and issubclass(getattr(module, n), AutoevalsBase)
            and not n.startswith("_")
            and n not in ("Scorer", "ScorerWithPartial", "LLMClassifier", "OpenAIScorer")
        )
        opts.error("name", f"autoevals has no scorer {cls_name!r}; it has {quote_list(known, 40)}")
        return None
    ctor_names, _ = _params(cls)
    args = dict(raw_args or {})
    ctor_args = {k: v for k, v in args.items() if k in ctor_names}
    if model is not None:
        if "model" not in ctor_names:
            opts.error("model", f"autoevals {cls_name} takes no model")
            return None
        ctor_args["model"] = model
    llm = "client" in ctor_names
    if llm and model is None and "model" in ctor_names:
        opts.issues.add(
            opts.path, f"autoevals {cls_name} calls an LLM: set 'model' (the judge model)"
        )
        return None
    if llm:
        client = _openai_client(opts, cls_name)
        if client is None:
            return None
        ctor_args["client"] = client
    try:
        evaluator: Any = cls(**ctor_args)
    except Exception as exc:
        opts.error("args" if args else "name", f"autoevals {cls_name}(...) failed: {exc}")
        return None
    call_names, call_any = _params(getattr(evaluator, "_run_eval_sync", evaluator.eval))
    # An argument goes to the constructor when it takes it, and to every call when the call
    # names it too (ValidJSON reads ``schema`` from the call) or when the constructor does not.
    call_args = {
        k: v for k, v in args.items() if k not in ctor_names or k in call_names - {"output"}
    }
    bad = [k for k in call_args if k not in call_names and not call_any]
    if bad:
        accepted = sorted((ctor_names | call_names) - {"client", "api_key", "base_url"})
        opts.error(
            "args", f"autoevals {cls_name} takes no argument {bad[0]!r}; it takes {accepted}"
        )
        return None
    fields: dict[str, tuple[Field, bool]] = {"output": (Field("output", _output), True)}
    if "input" in call_names or call_any:
        fields["input"] = (Field("input", _input), False)
    for key, text in (raw_fields or {}).items():
        at = f"{opts.at('fields')}.{key}"
        if not isinstance(key, str) or not key.isidentifier():
            opts.issues.add(at, f"argument name {key!r} must be an identifier")
            continue
        if key not in call_names and not call_any:
            opts.issues.add(at, f"autoevals {cls_name} takes no argument {key!r}")
            continue
        sub = Reader({key: text}, opts.at("fields"), opts.issues)
        label = text if isinstance(text, str) else key
        fields[key] = (Field(label, field_getter(sub, key)), True)
    return AutoevalsScorer(name, evaluator, fields, call_args, model if llm else None)


def _input(inp: EvalInput) -> Any:
    return inp.input


def _output(inp: EvalInput) -> Any:
    return inp.output
