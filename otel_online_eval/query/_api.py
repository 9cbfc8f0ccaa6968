"""``compile_filter`` and ``compile_value``: parse once, run many times, never raise per span."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from otel_online_eval._errors import FilterSyntaxError
from otel_online_eval.query import ast
from otel_online_eval.query._check import check_condition
from otel_online_eval.query._compiler import Getter, Pred, compile_cond, compile_getter
from otel_online_eval.query._fields import TRACE_FIELDS
from otel_online_eval.query._parser import TOO_DEEP, parse, parse_typed
from otel_online_eval.spanview import SpanView

__all__ = [
    "CompiledFilter",
    "CompiledValue",
    "compile_filter",
    "compile_value",
    "uses_trace_fields",
]

logger = logging.getLogger("otel_online_eval.query")

Explainer = Callable[[SpanView], str]


class CompiledFilter:
    """A compiled filter clause: call it with a ``SpanView`` to get True or False.

    Calling it never raises: if reading the span fails in an unexpected way, the answer is
    False, the failure is counted in ``errors`` and the first one is logged.

    Attributes:
        source: the clause as written.
        node: its syntax tree.
        errors: how many calls failed with an unexpected exception (and answered False).
    """

    __slots__ = ("_explainer", "_pred", "errors", "node", "source")

    def __init__(self, source: str, node: ast.Node, pred: Pred) -> None:
        self.source = source
        self.node = node
        self.errors = 0
        self._pred = pred
        self._explainer: Explainer | None = None

    def __call__(self, view: SpanView) -> bool:
        try:
            return self._pred(view)
        except Exception:
            self._failed(view)
            return False

    def why_false(self, view: SpanView) -> str | None:
        """Why the filter is false for ``view``, as source text; None when it is true.

        The answer is the smallest sub-expression responsible: for ``a AND b AND c`` the first
        conjunct that is false, looking inside nested ANDs and parenthesised groups; for any
        other expression (OR, NOT, a comparison) that whole expression.
        """
        if self(view):
            return None
        try:
            if self._explainer is None:
                self._explainer = _explainer(self.node, self.source)
            return self._explainer(view)
        except Exception:
            return self.source[self.node.start : self.node.end]

    def _failed(self, view: SpanView) -> None:
        self.errors += 1
        if self.errors == 1:
            logger.warning(
                "filter %r failed on %r; it counts as false", self.source, view, exc_info=True
            )

    def __repr__(self) -> str:
        return f"CompiledFilter({self.source!r})"


class CompiledValue:
    """A compiled value expression: call it with a ``SpanView`` to get the value (None when
    missing). Never raises; an unexpected failure gives None."""

    __slots__ = ("_getter", "node", "source")

    def __init__(self, source: str, node: ast.Node, getter: Getter) -> None:
        self.source = source
        self.node = node
        self._getter = getter

    def __call__(self, view: SpanView) -> Any:
        try:
            return self._getter(view)
        except Exception:
            logger.debug("value %r failed on %r", self.source, view, exc_info=True)
            return None

    def __repr__(self) -> str:
        return f"CompiledValue({self.source!r})"


def compile_filter(text: str) -> CompiledFilter:
    """Parse, check and compile a filter clause.

    Args:
        text: e.g. ``attributes['gen_ai.operation.name'] = 'chat' AND output IS NOT NULL``.

    Returns:
        A ``CompiledFilter``: ``(SpanView) -> bool``.

    Raises:
        FilterSyntaxError: the clause does not parse or check (see :func:`parse`), or it is not
            a condition (``name`` alone is a string, not TRUE or FALSE).
    """
    node, node_type = parse_typed(text)
    check_condition(node, node_type, text)
    try:
        return CompiledFilter(text, node, compile_cond(node))
    except RecursionError:
        raise FilterSyntaxError(TOO_DEEP, text, 0) from None


def compile_value(text: str) -> Callable[[SpanView], Any]:
    """Parse, check and compile a value expression such as ``json(attributes['x'])[0].role``.

    Returns:
        A function from a ``SpanView`` to the value; None when it is missing.

    Raises:
        FilterSyntaxError: the expression does not parse or check.
    """
    node = parse(text)
    try:
        return CompiledValue(text, node, compile_getter(node))
    except RecursionError:
        raise FilterSyntaxError(TOO_DEEP, text, 0) from None


def uses_trace_fields(expression: CompiledFilter | CompiledValue | ast.Node) -> bool:
    """Whether ``expression`` reads any ``trace.*`` field.

    Those fields are NULL on a span evaluated alone, so a rule that is not ``scope: trace``
    has no use for them; the configuration refuses such a rule with this test.
    """
    node = expression if isinstance(expression, ast.Node) else expression.node
    pending = [node]  # a loop, not recursion: a parsed expression may nest deeply
    while pending:
        current = pending.pop()
        if isinstance(current, ast.Field) and current.name in TRACE_FIELDS:
            return True
        pending.extend(ast.children(current))
    return False


def _explainer(node: ast.Node, text: str) -> Explainer:
    source = text[node.start : node.end]
    if not isinstance(node, ast.And):
        return lambda view: source
    children = [(compile_cond(op), _explainer(op, text)) for op in node.operands]

    def explain(view: SpanView) -> str:
        for pred, sub in children:
            try:
                ok = pred(view)
            except Exception:
                ok = False
            if not ok:
                return sub(view)
        return source  # only when the answer changed in between (now())

    return explain
