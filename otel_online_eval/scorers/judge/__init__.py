"""LLM-as-judge: the ``llm_judge`` scorer type over any OpenAI-compatible chat-completions API.

::

    scorers:
      relevance:
        type: llm_judge
        base_url: ${env:OPENAI_BASE_URL:-https://api.openai.com/v1}
        model: gpt-4o-mini
        api_key: ${env:OPENAI_API_KEY}
        template: relevance            # built-in, or {prompt, choice_scores}, or template_file
        limits: {concurrency: 8, requests_per_second: 5, timeout_s: 8, retries: 2}

Modules: ``_config`` (options and limits), ``_templates`` (templates, placeholders, fencing),
``_client`` (request body, verdict parsing, HTTP errors), ``_limits`` (rate gates, circuit
breaker, pause, budget, backoff), ``_scorer`` (:class:`LLMJudge`). User reference:
docs/judges.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from otel_online_eval._validate import Issues, Reader
from otel_online_eval.scorers._fields import builtin_type, describe
from otel_online_eval.scorers.judge._client import FUNCTION, SYSTEM_PROMPT, suffix_for
from otel_online_eval.scorers.judge._config import JudgeConfig, Limits, read_judge_config
from otel_online_eval.scorers.judge._limits import (
    CircuitBreaker,
    HourlyBudget,
    RateGate,
    backoff_delay,
    parse_retry_after,
)
from otel_online_eval.scorers.judge._scorer import JudgeSkipped, JudgeStats, LLMJudge
from otel_online_eval.scorers.judge._templates import (
    BUILTIN_TEMPLATES,
    FENCE_TAG,
    Template,
    bind_prompt,
    builtin_template,
    fence,
    parse_template,
    read_variables,
    template_from_file,
)
from otel_online_eval.scorers.registry import field_getter

__all__ = [
    "BUILTIN_TEMPLATES",
    "FENCE_TAG",
    "FUNCTION",
    "SYSTEM_PROMPT",
    "CircuitBreaker",
    "HourlyBudget",
    "JudgeConfig",
    "JudgeSkipped",
    "JudgeStats",
    "LLMJudge",
    "Limits",
    "RateGate",
    "Template",
    "backoff_delay",
    "build_llm_judge",
    "fence",
    "llm_judge",
    "parse_retry_after",
]


def _read_template(opts: Reader) -> tuple[Template | None, str]:
    """The template and the key to blame for its problems."""
    raw = opts.raw("template")
    file_text = opts.str("template_file")
    if raw is not None and file_text is not None:
        opts.error("template_file", "give either 'template' or 'template_file', not both")
        return None, "template"
    if file_text is not None:
        return template_from_file(file_text, opts.issues, opts.at("template_file")), (
            "template_file"
        )
    if isinstance(raw, str):
        return builtin_template(raw, opts.issues, opts.at("template")), "template"
    if isinstance(raw, Mapping):
        return parse_template(raw, "inline", opts.issues, opts.at("template")), "template"
    if raw is None:
        if not opts.has("template_file"):
            opts.issues.add(
                opts.path,
                "needs 'template' (a built-in name such as relevance, or a mapping with "
                "'prompt' and 'choice_scores') or 'template_file'",
            )
    else:
        opts.error(
            "template",
            f"must be a built-in template name or a mapping with 'prompt' and 'choice_scores', "
            f"got {describe(raw)}",
        )
    return None, "template"


@builtin_type("llm_judge", inline=False)
def build_llm_judge(name: str, opts: Reader) -> LLMJudge | None:
    """``llm_judge``: ``base_url``, ``model``, ``api_key``, ``headers``, ``query``,
    ``temperature``, ``max_tokens``, ``mode: tools|json_schema``, ``template`` /
    ``template_file``, ``context``, ``variables``, ``max_chars``, ``limits``."""
    config = read_judge_config(opts)
    template, template_key = _read_template(opts)
    context = field_getter(opts, "context") if opts.has("context") else None
    variables = read_variables(opts)
    if config is None or template is None:
        return None
    prompt = bind_prompt(
        template,
        opts,
        context,
        variables,
        suffix_for(config.mode, template.choices),
        config.max_chars,
        template_key,
    )
    if prompt is None:
        return None
    return LLMJudge(name, config, prompt)


def llm_judge(name: str, **options: Any) -> LLMJudge:
    """Build a judge in code with the options of the YAML type.

    ::

        judge = llm_judge("relevance", base_url="http://localhost:8000/v1",
                          model="qwen2.5-7b", template="relevance",
                          limits={"concurrency": 4})
        Rule.create("quality", [judge], span_names=["chat"])

    Raises:
        ConfigError: listing every problem with the options.
    """
    issues = Issues(file="<llm_judge>")
    opts = Reader(dict(options), name, issues)
    opts.number("timeout_s", 30.0, lo=0.001)  # the whole call's deadline (Rule.create's too)
    scorer = build_llm_judge(name, opts)
    opts.done()
    issues.raise_if_any()
    assert scorer is not None
    return scorer
