"""YAML to plain Python values, keeping where each value was and expanding ``${env:...}``.

The document is composed (not constructed) so that every value keeps its mark; the result is
plain dicts, lists and scalars plus a table from YAML path (``rules[0].sampling``) to
:class:`Mark`. Environment references are expanded inside scalars after parsing, so a variable
can never inject YAML structure; an unquoted scalar is typed again after expansion, so
``sampling: ${env:RATE:-0.1}`` is a number.

Forms: ``${env:VAR}`` (an error when VAR is unset), ``${env:VAR:-default}`` (default when unset
or empty), ``$$`` for a literal ``$``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import yaml
import yaml.constructor
import yaml.resolver
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from otel_online_eval._validate import KEY_SUFFIX, Issues, Mark, join_path

__all__ = ["load_yaml"]

_ENV = re.compile(r"\$\$|\$\{env:([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$\{([^}]*)\}")


class _Constructor(yaml.constructor.SafeConstructor):
    pass


def _expand(text: str, path: str, mark: Mark, issues: Issues, env: Mapping[str, str]) -> str | None:
    if "$" not in text:
        return text
    failed = False

    def one(m: re.Match[str]) -> str:
        nonlocal failed
        if m.group(0) == "$$":
            return "$"
        name, default, bad = m.group(1), m.group(2), m.group(3)
        if bad is not None:
            issues.add(
                path,
                f"cannot expand '{m.group(0)}': write ${{env:NAME}} or ${{env:NAME:-default}}",
                m.start(),
            )
            failed = True
            return ""
        value = env.get(name)
        if value is None or (value == "" and default is not None):
            if default is None:
                issues.add(
                    path,
                    f"environment variable {name} is not set and "
                    f"'{m.group(0)}' has no default (write ${{env:{name}:-default}})",
                    m.start(),
                )
                failed = True
                return ""
            return default
        return value

    out = _ENV.sub(one, text)
    return None if failed else out


class _Builder:
    def __init__(self, issues: Issues, env: Mapping[str, str]) -> None:
        self.issues = issues
        self.env = env
        self.marks: dict[str, Mark] = {}
        self.constructor = _Constructor()
        self.resolver = yaml.resolver.Resolver()

    def build(self, node: Node, path: str) -> Any:
        quoted = isinstance(node, ScalarNode) and node.style in ("'", '"')
        mark = Mark(node.start_mark.line + 1, node.start_mark.column + 1, quoted)
        self.marks[path] = mark
        if isinstance(node, MappingNode):
            return self._mapping(node, path)
        if isinstance(node, SequenceNode):
            return [self.build(child, join_path(path, i)) for i, child in enumerate(node.value)]
        assert isinstance(node, ScalarNode)
        if node.tag == "tag:yaml.org,2002:str" and "$" in node.value:
            expanded = _expand(node.value, path, mark, self.issues, self.env)
            if expanded is None:
                return None
            if node.style is None:  # unquoted: type it again, as if written literally
                tag = self.resolver.resolve(ScalarNode, expanded, (True, False))  # type: ignore[no-untyped-call]
                node = ScalarNode(tag, expanded, node.start_mark, node.end_mark)
            else:
                return expanded
        return self.constructor.construct_object(node, deep=True)

    def _mapping(self, node: MappingNode, path: str) -> dict[Any, Any]:
        self.constructor.flatten_mapping(node)
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                self.issues.add(path, "mapping keys must be plain strings")
                continue
            key = self.constructor.construct_object(key_node)
            if not isinstance(key, str):
                key = str(key)
            child = join_path(path, key)
            self.marks[child + KEY_SUFFIX] = Mark(
                key_node.start_mark.line + 1, key_node.start_mark.column + 1
            )
            if key in out:
                self.marks[child] = Mark(
                    key_node.start_mark.line + 1, key_node.start_mark.column + 1
                )
                self.issues.add(child, f"duplicate key '{key}'")
                continue
            out[key] = self.build(value_node, child)
        return out


def load_yaml(text: str, issues: Issues, env: Mapping[str, str] | None = None) -> Any:
    """Parse one YAML document into plain values, filling ``issues.marks``.

    Args:
        text: the document.
        issues: where problems go; its ``marks`` are replaced with this document's.
        env: the environment for ``${env:...}`` (``os.environ`` when None).

    Returns:
        The value, or None when the document is empty or does not parse (an issue says why).
    """
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (0, 0)
        issues.marks = {"": Mark(line, col)}
        issues.add("", f"not valid YAML: {problem}")
        return None
    if node is None:
        return None
    builder = _Builder(issues, os.environ if env is None else env)
    issues.marks = builder.marks  # filled as values are built, so expansion errors have lines
    return builder.build(node, "")
