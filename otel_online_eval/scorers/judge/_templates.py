"""Judge prompt templates: loading them, checking them, and rendering them with fenced data.

A template is data: a ``prompt`` with ``{{placeholders}}`` and ``choice_scores`` (each choice
the judge may pick, with its score in [0, 1]). The built-in ones are YAML files in
``otel_online_eval/scorers/templates/``; a config may give one inline (``template: {prompt,
choice_scores}``) or as a file (``template_file:``).

A placeholder is one of:

* ``input``, ``output``: the extracted prompt and answer;
* ``system_instructions``: the system prompt the judged model was given;
* ``conversation``: the judged model's input messages, one ``role: text`` block each;
* ``context``: retrieved documents, read with the scorer's ``context:`` expression;
* ``transcript``: the whole trace's messages (``EvalInput.trace``), else the session's
  (``EvalInput.session``), one ``role: text`` block each, tool calls and results included;
* ``tool_calls``: the trace's tool runs, each with its name, arguments and result or error;
* a name from the scorer's ``variables:`` (name -> filter-language expression);
* any other filter-language value expression over the span, such as
  ``attributes['app.user_tier']`` or ``json(attributes['x']).field``.

Every value is placed in the prompt as a *fenced* block::

    <judged_content name="output">
    ...the value...
    </judged_content>

and any text inside the value that looks like the fence itself (``<judged_content``,
``</judged_content``) is neutralised (``&lt;/judged_content``), so the judged text cannot close
its block and speak to the judge as the prompt. The system message tells the judge that
fenced text is data, never instructions.

A value longer than ``max_chars`` is cut with a note: most keep their start; ``transcript`` and
``tool_calls`` keep their start and their end (the task and how it ended), cutting the middle.
Without a trace (or a session, for ``transcript``) those two are an error that names the rule
scope they need.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from otel_online_eval._errors import FilterSyntaxError, ScorerError
from otel_online_eval._validate import Issues, Reader
from otel_online_eval.scorers._fields import as_text, describe
from otel_online_eval.scorers.base import EvalInput

if TYPE_CHECKING:
    from otel_online_eval.genai import Message
    from otel_online_eval.traceview import ToolCallRecord

__all__ = [
    "BUILTIN_TEMPLATES",
    "FENCE_TAG",
    "Prompt",
    "Template",
    "builtin_template",
    "fence",
    "parse_template",
]

FENCE_TAG = "judged_content"
_FENCE_IN_TEXT = re.compile(r"<(\s*/?\s*" + FENCE_TAG + r")", re.IGNORECASE)
_PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

RESERVED = (
    "input",
    "output",
    "system_instructions",
    "conversation",
    "context",
    "transcript",
    "tool_calls",
)
"""Placeholders with a fixed meaning (see the module docstring)."""

WHOLE_TRACE = {"transcript": "scope: trace (or scope: session)", "tool_calls": "scope: trace"}
"""Placeholders that read a whole trace (or session), with the rule scope each needs."""

_TEMPLATE_KEYS = ("prompt", "choice_scores", "description")


def _builtin_names() -> tuple[str, ...]:
    folder = resources.files("otel_online_eval.scorers").joinpath("templates")
    try:
        names = [p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml")]
    except (FileNotFoundError, NotADirectoryError):  # pragma: no cover - broken install
        return ()
    return tuple(sorted(names))


BUILTIN_TEMPLATES: tuple[str, ...] = _builtin_names()
"""Names of the templates shipped with the package (``template: relevance``)."""


@dataclass(frozen=True, slots=True)
class Template:
    """A judge prompt and the scores of its choices.

    Attributes:
        name: the built-in name, the file name, or ``inline``.
        prompt: the text with ``{{placeholders}}``.
        choice_scores: choice -> score in [0, 1], in the order the judge is shown them.
        description: what the template checks, in one line.
        placeholders: the placeholder expressions, in order of first use.
    """

    name: str
    prompt: str
    choice_scores: Mapping[str, float]
    description: str | None = None
    placeholders: tuple[str, ...] = field(default=())

    @property
    def choices(self) -> tuple[str, ...]:
        return tuple(self.choice_scores)

    @property
    def needs_trace(self) -> bool:
        """True when the prompt reads a whole trace or session (``{{transcript}}``,
        ``{{tool_calls}}``): the judge scores nothing in a rule with ``scope: span``."""
        return any(p in WHOLE_TRACE for p in self.placeholders)


def fence(name: str, text: str) -> str:
    """``text`` as a delimited data block named ``name``, with fence look-alikes neutralised."""
    return (
        f'<{FENCE_TAG} name="{name}">\n' + _FENCE_IN_TEXT.sub(r"&lt;\1", text) + f"\n</{FENCE_TAG}>"
    )


def _placeholders(prompt: str) -> tuple[list[tuple[str, int]], list[str]]:
    """(expression, offset) of each ``{{...}}``, and the problems found."""
    found: list[tuple[str, int]] = []
    problems = []
    for match in _PLACEHOLDER.finditer(prompt):
        expr = match.group(1).strip()
        if not expr:
            problems.append(f"empty placeholder at offset {match.start()}")
        else:
            found.append((expr, match.start()))
    rest = _PLACEHOLDER.sub("", prompt)
    if "{{" in rest or "}}" in rest:
        problems.append("has an unbalanced '{{' or '}}'")
    return found, problems


def parse_template(
    data: Any, name: str, issues: Issues, path: str, where: str | None = None
) -> Template | None:
    """Check a template given as a mapping (inline, from a file, or built in).

    Args:
        data: the parsed YAML.
        name: what to call it.
        issues: where problems go.
        path: the YAML path to blame.
        where: a prefix for messages about a file (``'judge.yaml': ``).

    Returns:
        The template, or None when it is wrong (issues recorded).
    """
    prefix = f"{where}: " if where else ""
    if not isinstance(data, Mapping):
        issues.add(path, f"{prefix}a template must be a mapping with 'prompt' and 'choice_scores'")
        return None
    before = len(issues.items)
    unknown = [str(k) for k in data if k not in _TEMPLATE_KEYS]
    if unknown:
        issues.add(
            path,
            f"{prefix}unknown template key {unknown[0]!r}; expected one of: "
            + ", ".join(_TEMPLATE_KEYS),
        )
    prompt = data.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        issues.add(path, f"{prefix}'prompt' must be a non-empty string, got {describe(prompt)}")
        prompt = None
    scores = _choice_scores(data.get("choice_scores"), issues, path, prefix)
    description = data.get("description")
    if description is not None and not isinstance(description, str):
        issues.add(path, f"{prefix}'description' must be a string")
    if prompt is None or scores is None or len(issues.items) > before:
        return None
    found, problems = _placeholders(prompt)
    for problem in problems:
        issues.add(path, f"{prefix}the prompt {problem}")
    if problems:
        return None
    exprs = tuple(dict.fromkeys(expr for expr, _ in found))
    return Template(name, prompt, scores, description, exprs)


def _choice_scores(raw: Any, issues: Issues, path: str, prefix: str) -> dict[str, float] | None:
    if not isinstance(raw, Mapping) or not raw:
        issues.add(
            path,
            f"{prefix}'choice_scores' must be a non-empty mapping of choice -> score, "
            f"got {describe(raw)}",
        )
        return None
    out: dict[str, float] = {}
    for key, value in raw.items():
        choice = str(key) if isinstance(key, (str, int)) and not isinstance(key, bool) else None
        if not choice or not choice.strip() or choice != choice.strip():
            issues.add(path, f"{prefix}choice {key!r} must be a non-empty string without spaces")
            continue
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or not 0.0 <= value <= 1.0
        ):
            issues.add(
                path,
                f"{prefix}the score of choice {choice!r} must be between 0 and 1, got {value!r}",
            )
            continue
        out[choice] = float(value)
    return out if len(out) == len(raw) else None


def builtin_template(name: str, issues: Issues, path: str) -> Template | None:
    """Load a built-in template by name; an unknown name is an issue listing the known ones."""
    if name not in BUILTIN_TEMPLATES:
        issues.add(
            path,
            f"unknown template {name!r}; built-in templates: {', '.join(BUILTIN_TEMPLATES)} "
            "(or give 'template' as a mapping, or 'template_file')",
        )
        return None
    text = (
        resources.files("otel_online_eval.scorers")
        .joinpath("templates")
        .joinpath(f"{name}.yaml")
        .read_text(encoding="utf-8")
    )
    return parse_template(yaml.safe_load(text), name, issues, path, f"built-in template {name!r}")


def template_from_file(text: str, issues: Issues, path: str) -> Template | None:
    """Load a template from a YAML file (relative to the config file's directory)."""
    file = Path(text).expanduser()
    if not file.is_absolute() and issues.file and not issues.file.startswith("<"):
        file = Path(issues.file).parent / file
    try:
        raw = file.read_text(encoding="utf-8")
    except OSError as exc:
        issues.add(path, f"cannot read {str(file)!r}: {exc.strerror or exc}")
        return None
    except UnicodeDecodeError as exc:
        issues.add(path, f"cannot read {str(file)!r}: not UTF-8 ({exc.reason})")
        return None
    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        issues.add(path, f"{str(file)!r} is not valid YAML: {exc}")
        return None
    return parse_template(data, file.stem, issues, path, repr(str(file)))


# --- rendering ------------------------------------------------------------------------------

Getter = Callable[[EvalInput], Any]


def _input(inp: EvalInput) -> Any:
    return inp.input


def _output(inp: EvalInput) -> Any:
    return inp.output


def _system(inp: EvalInput) -> Any:
    return inp.span.genai.system_instructions if inp.span is not None else None


def _conversation(inp: EvalInput) -> Any:
    if inp.span is None:
        return inp.input
    messages = inp.span.genai.input_messages
    if not messages:
        return inp.input
    return "\n\n".join(f"{m.role}: {m.text}" for m in messages)


def _dialogue(inp: EvalInput) -> Any:
    """What ``{{transcript}}`` reads: the trace, else the session (None without either)."""
    return inp.trace if inp.trace is not None else inp.session


def render_messages(messages: Sequence[Message]) -> str | None:
    """A transcript as text: ``role: text`` per message, blank-line separated; a tool call as
    ``[calls name {arguments}]``, a tool's answer as ``tool (name): result``. None when empty."""
    names: dict[str, str] = {}
    blocks = []
    for m in messages:
        lines = [m.text] if m.text else []
        if not lines:  # tool results sent in a message of another role (pydantic-ai's user)
            lines = [as_text(r.result) for r in m.tool_results if r.result is not None]
        for call in m.tool_calls:
            args = "" if call.arguments is None else " " + as_text(call.arguments)
            lines.append(f"[calls {call.name}{args}]")
            if call.id:
                names[call.id] = call.name
        tools = sorted({t for r in m.tool_results if (t := r.name or names.get(r.id or ""))})
        role = f"{m.role} ({', '.join(tools)})" if tools else m.role
        blocks.append(f"{role}: " + "\n".join(lines))
    return "\n\n".join(blocks) or None


def _transcript(inp: EvalInput) -> Any:
    source = _dialogue(inp)
    return None if source is None else render_messages(source.messages)


def render_tool_calls(calls: Sequence[ToolCallRecord]) -> str:
    """Each tool run: its number and name, its arguments, its result or its error."""
    if not calls:
        return "(no tool was run)"
    blocks = []
    for i, call in enumerate(calls, 1):
        args = "(none)" if call.arguments is None else as_text(call.arguments)
        if call.error is not None:
            outcome = f"error: {call.error}"
        else:
            outcome = "result: " + (
                "(none recorded)" if call.result is None else as_text(call.result)
            )
        blocks.append(f"{i}. {call.name}\n   arguments: {args}\n   {outcome}")
    return "\n".join(blocks)


def _tool_calls(inp: EvalInput) -> Any:
    return None if inp.trace is None else render_tool_calls(inp.trace.tool_calls)


_FIXED: dict[str, Getter] = {
    "input": _input,
    "output": _output,
    "system_instructions": _system,
    "conversation": _conversation,
    "transcript": _transcript,
    "tool_calls": _tool_calls,
}

_HINTS = {
    "input": "no prompt text was found on the span; check the `extract` presets",
    "output": "no answer text was found on the span; check the `extract` presets",
    "system_instructions": "the span has no system instructions",
    "conversation": "the span has no input messages",
    "context": "the `context:` expression has no value on this span",
    "transcript": "the trace has no chat messages",
}


@dataclass(frozen=True, slots=True)
class _Slot:
    expr: str
    label: str
    get: Getter


@dataclass(frozen=True, slots=True)
class Prompt:
    """A template bound to the getters of its placeholders; renders the user message.

    Attributes:
        template: the template.
        max_chars: the longest value placed in the prompt; longer ones are cut with a note.
    """

    template: Template
    pieces: tuple[str | _Slot, ...]
    suffix: str
    max_chars: int

    def render(self, inp: EvalInput) -> str:
        """The user message for ``inp``.

        Raises:
            ScorerError: when a value the template needs is missing.
        """
        out = []
        for piece in self.pieces:
            if isinstance(piece, str):
                out.append(piece)
                continue
            value = piece.get(inp)
            if value is None:
                raise ScorerError(self._missing(piece, inp))
            text = as_text(value)
            if len(text) > self.max_chars:
                cut = len(text) - self.max_chars
                if piece.expr in WHOLE_TRACE:  # keep how it started and how it ended
                    head = self.max_chars // 2
                    tail = text[len(text) - (self.max_chars - head) :]
                    text = f"{text[:head]}\n[... {cut} characters not shown ...]\n{tail}"
                else:
                    text = f"{text[: self.max_chars]}\n[... {cut} more characters not shown]"
            out.append(fence(piece.label, text))
        out.append(self.suffix)
        return "".join(out)

    def _missing(self, piece: _Slot, inp: EvalInput) -> str:
        scope = WHOLE_TRACE.get(piece.expr)
        has = inp.trace if piece.expr == "tool_calls" else _dialogue(inp)
        if scope is not None and has is None:
            return (
                f"template {self.template.name!r} uses {{{{{piece.expr}}}}}, which reads a "
                f"whole trace, and this evaluation is of one span: use the judge in a rule "
                f"with {scope}"
            )
        hint = _HINTS.get(piece.expr, "the expression has no value on this span")
        return f"{piece.label} is missing: {hint}"


def bind_prompt(
    template: Template,
    opts: Reader,
    context: Getter | None,
    variables: Mapping[str, Getter],
    suffix: str,
    max_chars: int,
    template_key: str,
) -> Prompt | None:
    """Resolve every placeholder of ``template`` to a getter, compiling expressions once.

    Problems (an unknown field, ``{{context}}`` without a ``context:`` option) are recorded
    on ``template_key`` and None is returned.
    """
    from otel_online_eval.query import compile_value

    slots: dict[str, _Slot] = {}
    ok = True
    for expr in template.placeholders:
        if expr in _FIXED:
            slots[expr] = _Slot(expr, expr, _FIXED[expr])
        elif expr == "context":
            if context is None:
                opts.error(
                    template_key,
                    f"template {template.name!r} uses {{{{context}}}}: set the scorer's "
                    "'context' option to the expression that holds the retrieved documents, "
                    "e.g. context: \"attributes['retrieval.documents']\"",
                )
                ok = False
            else:
                slots[expr] = _Slot(expr, "context", context)
        elif expr in variables:
            slots[expr] = _Slot(expr, expr, variables[expr])
        else:
            try:
                getter = compile_value(expr)
            except FilterSyntaxError as exc:
                known = ", ".join([*RESERVED, *variables])
                opts.error(
                    template_key,
                    f"template {template.name!r}: placeholder {{{{{expr}}}}} is neither a "
                    f"known name ({known}) nor a valid expression: {exc.message}",
                )
                ok = False
                continue
            slots[expr] = _Slot(expr, _label(expr), _from_span(getter))
    if not ok:
        return None
    pieces: list[str | _Slot] = []
    last = 0
    for match in _PLACEHOLDER.finditer(template.prompt):
        pieces.append(template.prompt[last : match.start()])
        pieces.append(slots[match.group(1).strip()])
        last = match.end()
    pieces.append(template.prompt[last:])
    return Prompt(template, tuple(p for p in pieces if p != ""), suffix, max_chars)


def _label(expr: str) -> str:
    """A fence name for an expression: the expression itself, quotes made harmless."""
    return expr.replace('"', "'").replace("\n", " ")


def _from_span(getter: Callable[[Any], Any]) -> Getter:
    def get(inp: EvalInput) -> Any:
        return getter(inp.span) if inp.span is not None else None

    return get


def read_variables(opts: Reader, key: str = "variables") -> dict[str, Getter]:
    """``variables:``: name -> filter-language expression, each compiled once."""
    from otel_online_eval.query import compile_value

    raw = opts.raw(key)
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        opts.error(key, f"must be a mapping of name -> expression, got {describe(raw)}")
        return {}
    out: dict[str, Getter] = {}
    for name, text in raw.items():
        at = opts.at(key) + f".{name}"
        if not isinstance(name, str) or not _NAME.match(name):
            opts.issues.add(at, f"variable name {name!r} must be an identifier")
            continue
        if name in RESERVED:
            opts.issues.add(at, f"{name!r} is a built-in placeholder; choose another name")
            continue
        if not isinstance(text, str):
            opts.issues.add(at, f"must be a filter-language expression, got {describe(text)}")
            continue
        try:
            out[name] = _from_span(compile_value(text))
        except FilterSyntaxError as exc:
            opts.issues.add(at, f"not a valid expression: {exc.message}", exc.position)
    return out


def choices_text(choices: Sequence[str]) -> str:
    return ", ".join(choices)
