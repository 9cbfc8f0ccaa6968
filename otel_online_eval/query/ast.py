"""The syntax tree of the filter language.

Every node is a frozen dataclass that knows where it came from: ``start`` and ``end`` are 0-based
offsets into the parsed text, so ``text[node.start:node.end]`` is the node's own source (without
the parentheses around it, if any). Nodes are built by :func:`otel_online_eval.query.parse`, which
has already checked names, arity and types; the compiler and the reference evaluator trust them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal as _Lit

__all__ = [
    "And",
    "ArithOp",
    "AttributeRef",
    "AttributeSource",
    "BinaryOp",
    "Call",
    "Compare",
    "CompareOp",
    "Contains",
    "Field",
    "In",
    "Interval",
    "IsNull",
    "Like",
    "Literal",
    "LiteralValue",
    "Match",
    "Member",
    "Neg",
    "Node",
    "Not",
    "Or",
    "Subscript",
    "children",
]

LiteralValue = str | int | float | bool | None
CompareOp = _Lit["=", "!=", "<", "<=", ">", ">="]
ArithOp = _Lit["+", "-", "*", "/"]
AttributeSource = _Lit["attributes", "resource"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Node:
    """Base of every node: the node's source span ``[start, end)`` in the parsed text."""

    start: int
    end: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Literal(Node):
    """A string, number, TRUE / FALSE or NULL."""

    value: LiteralValue


@dataclass(frozen=True, slots=True, kw_only=True)
class Field(Node):
    """A built-in field by its canonical name (``status`` is ``status.code``): a span field, or
    a ``trace.*`` field of the trace the span anchors."""

    name: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AttributeRef(Node):
    """``attributes['k']`` (``dotted=False``, one part) or ``attributes.a.b`` (``dotted=True``).

    A dotted reference looks up the longest key ``'.'.join(parts[:i])`` that exists and follows
    the remaining parts as a path into its value. ``source`` is ``attributes`` or ``resource``.
    """

    source: AttributeSource
    parts: tuple[str, ...]
    dotted: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Subscript(Node):
    """``target[index]``: list index (int) or mapping key (str)."""

    target: Node
    index: Node


@dataclass(frozen=True, slots=True, kw_only=True)
class Member(Node):
    """``target.name``: mapping key, or list index when ``name`` is all digits."""

    target: Node
    name: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Call(Node):
    """A function call; ``name`` is lower case."""

    name: str
    args: tuple[Node, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Interval(Node):
    """``INTERVAL amount unit``; ``nanos`` is the length in nanoseconds."""

    amount: int | float
    unit: str
    nanos: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Neg(Node):
    """Unary minus."""

    operand: Node


@dataclass(frozen=True, slots=True, kw_only=True)
class BinaryOp(Node):
    """Arithmetic: ``+ - * /``."""

    op: ArithOp
    left: Node
    right: Node


@dataclass(frozen=True, slots=True, kw_only=True)
class Compare(Node):
    """``= != < <= > >=`` (``==`` is parsed as ``=``, ``<>`` as ``!=``)."""

    op: CompareOp
    left: Node
    right: Node


@dataclass(frozen=True, slots=True, kw_only=True)
class IsNull(Node):
    """``operand IS NULL`` or, negated, ``IS NOT NULL``."""

    operand: Node
    negated: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class In(Node):
    """``operand [NOT] IN (options...)``."""

    operand: Node
    options: tuple[Node, ...]
    negated: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Like(Node):
    """``operand [NOT] LIKE|ILIKE pattern``."""

    operand: Node
    pattern: Node
    negated: bool
    case_insensitive: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Match(Node):
    """``operand [NOT] MATCH 'regex'``: an RE2 search; the pattern is a string literal."""

    operand: Node
    pattern: Literal
    negated: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Contains(Node):
    """``operand [NOT] CONTAINS|INCLUDES item``: substring or list member."""

    operand: Node
    item: Node
    negated: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Not(Node):
    """``NOT operand``."""

    operand: Node


@dataclass(frozen=True, slots=True, kw_only=True)
class And(Node):
    """``a AND b AND ...``: one node per chain; parentheses start a nested node."""

    operands: tuple[Node, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Or(Node):
    """``a OR b OR ...``."""

    operands: tuple[Node, ...]


def children(node: Node) -> tuple[Node, ...]:
    """The direct sub-expressions of ``node``, left to right."""
    if isinstance(node, Subscript):
        return (node.target, node.index)
    if isinstance(node, Member):
        return (node.target,)
    if isinstance(node, Call):
        return node.args
    if isinstance(node, (Neg, Not)):
        return (node.operand,)
    if isinstance(node, (BinaryOp, Compare)):
        return (node.left, node.right)
    if isinstance(node, IsNull):
        return (node.operand,)
    if isinstance(node, In):
        return (node.operand, *node.options)
    if isinstance(node, Like):
        return (node.operand, node.pattern)
    if isinstance(node, Match):
        return (node.operand, node.pattern)
    if isinstance(node, Contains):
        return (node.operand, node.item)
    if isinstance(node, (And, Or)):
        return node.operands
    return ()
