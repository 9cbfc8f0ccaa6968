"""Static checks on a parsed expression.

The rule: an expression whose result is fixed by the types of its operands alone is an error,
because it is always a mistake — ``name = 1`` (never true), ``x = NULL`` (never true; use
``IS NULL``), ``kind = 'client'`` (kind is upper case), ``duration_ms LIKE '1%'``, ``'a' + 1``, a
string used as a condition. Anything whose type is only known at run time (attributes, JSON,
NULL-able fields) passes. MATCH patterns are compiled here, so a bad regex fails at load time.
"""

from __future__ import annotations

from otel_online_eval._errors import FilterSyntaxError
from otel_online_eval.query import ast
from otel_online_eval.query._fields import ENUM_VALUES, FIELDS, Type
from otel_online_eval.query._regex import RegexError, compile_regex

__all__ = ["check", "check_condition"]

_SCALARS = (Type.STR, Type.NUM, Type.BOOL, Type.NULL)
_CONDITION = (Type.BOOL, Type.ANY)


def check(node: ast.Node, text: str) -> Type:
    """The static type of ``node``; raises ``FilterSyntaxError`` on a fixed-by-type result."""
    return _Checker(text).type_of(node)


def check_condition(node: ast.Node, node_type: Type, text: str) -> None:
    """Raise unless ``node``, of static type ``node_type``, can be TRUE: a boolean or a value
    only known at run time."""
    _Checker(text).condition(node, node_type, "a filter")


class _Checker:
    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def src(self, node: ast.Node) -> str:
        source = self.text[node.start : node.end]
        return source if len(source) <= 40 else source[:37] + "..."

    def error(self, message: str, node: ast.Node) -> FilterSyntaxError:
        return FilterSyntaxError(message, self.text, node.start)

    def condition(self, node: ast.Node, t: Type, what: str) -> None:
        if t not in _CONDITION:
            raise self.error(
                f"{what} must be a condition, but {self.src(node)} is {t.value}; "
                "compare it with something (=, !=, IS NULL, LIKE, ...)",
                node,
            )

    def type_of(self, node: ast.Node) -> Type:
        if isinstance(node, ast.Literal):
            return _literal_type(node.value)
        if isinstance(node, ast.Field):
            return FIELDS[node.name]
        if isinstance(node, ast.AttributeRef):
            return Type.ANY
        if isinstance(node, ast.Subscript):
            target = self.type_of(node.target)
            if target in _SCALARS:
                raise self.error(
                    f"cannot index {self.src(node.target)}: it is {target.value}, "
                    "not a list or an object",
                    node.target,
                )
            index = self.type_of(node.index)
            if index not in (Type.NUM, Type.STR, Type.ANY) or (
                isinstance(node.index, ast.Literal) and isinstance(node.index.value, float)
            ):
                raise self.error(
                    "an index must be an integer or a string key, but "
                    f"{self.src(node.index)} is {_describe_literal(node.index, index)}",
                    node.index,
                )
            return Type.ANY
        if isinstance(node, ast.Member):
            target = self.type_of(node.target)
            if target in _SCALARS:
                raise self.error(
                    f"cannot read '.{node.name}' of {self.src(node.target)}: it is "
                    f"{target.value}, not an object",
                    node.target,
                )
            return Type.ANY
        if isinstance(node, ast.Call):
            return self.call(node)
        if isinstance(node, ast.Interval):
            return Type.NUM
        if isinstance(node, ast.Neg):
            self.number(node.operand, "'-'")
            return Type.NUM
        if isinstance(node, ast.BinaryOp):
            self.number(node.left, f"'{node.op}'")
            self.number(node.right, f"'{node.op}'")
            return Type.NUM
        if isinstance(node, ast.Compare):
            self.compare(node.op, node.left, node.right)
            return Type.BOOL
        if isinstance(node, ast.IsNull):
            self.type_of(node.operand)
            return Type.BOOL
        if isinstance(node, ast.In):
            for option in node.options:
                self.compare("IN", node.operand, option)
            return Type.BOOL
        if isinstance(node, ast.Like):
            word = "ILIKE" if node.case_insensitive else "LIKE"
            self.string(node.operand, word)
            self.string(node.pattern, f"a {word} pattern")
            return Type.BOOL
        if isinstance(node, ast.Match):
            self.string(node.operand, "MATCH")
            pattern = node.pattern.value
            assert isinstance(pattern, str)
            try:
                compile_regex(pattern)
            except RegexError as exc:
                raise self.error(f"invalid regular expression: {exc}", node.pattern) from exc
            return Type.BOOL
        if isinstance(node, ast.Contains):
            container = self.type_of(node.operand)
            item = self.type_of(node.item)
            if container not in (Type.STR, Type.LIST, Type.ANY):
                raise self.error(
                    f"CONTAINS needs a string or a list, but {self.src(node.operand)} is "
                    f"{container.value}",
                    node.operand,
                )
            if item is Type.NULL:
                raise self.error("CONTAINS NULL is never true; use IS NULL", node.item)
            if container is Type.STR and item not in (Type.STR, Type.ANY):
                raise self.error(
                    f"a string can only contain a string, but {self.src(node.item)} is "
                    f"{item.value}",
                    node.item,
                )
            return Type.BOOL
        if isinstance(node, ast.Not):
            self.condition(node.operand, self.type_of(node.operand), "the operand of NOT")
            return Type.BOOL
        if isinstance(node, (ast.And, ast.Or)):
            word = "AND" if isinstance(node, ast.And) else "OR"
            for operand in node.operands:
                self.condition(operand, self.type_of(operand), f"each side of {word}")
            return Type.BOOL
        raise TypeError(f"unknown node {type(node).__name__}")  # pragma: no cover

    def call(self, node: ast.Call) -> Type:
        types = [self.type_of(arg) for arg in node.args]
        for arg, t in zip(node.args, types, strict=True):
            if t is Type.NULL:
                raise self.error(f"{node.name}(NULL) is always NULL", arg)
        if node.name in ("lower", "upper"):
            if types[0] not in (Type.STR, Type.ANY):
                raise self.error(
                    f"{node.name}() needs a string, but {self.src(node.args[0])} is "
                    f"{types[0].value}",
                    node.args[0],
                )
            return Type.STR
        if node.name == "length":
            if types[0] not in (Type.STR, Type.LIST, Type.ANY):
                raise self.error(
                    f"length() needs a string or a list, but {self.src(node.args[0])} is "
                    f"{types[0].value}",
                    node.args[0],
                )
            return Type.NUM
        if node.name == "now":
            return Type.NUM
        return Type.ANY  # json()

    def number(self, node: ast.Node, op: str) -> None:
        t = self.type_of(node)
        if t not in (Type.NUM, Type.ANY):
            raise self.error(f"{op} needs numbers, but {self.src(node)} is {t.value}", node)

    def string(self, node: ast.Node, what: str) -> None:
        t = self.type_of(node)
        if t not in (Type.STR, Type.ANY):
            raise self.error(f"{what} needs a string, but {self.src(node)} is {t.value}", node)

    def compare(self, op: str, left: ast.Node, right: ast.Node) -> None:
        lt = self.type_of(left)
        rt = self.type_of(right)
        for side, t in ((left, lt), (right, rt)):
            if t is Type.NULL:
                if op == "IN":
                    raise self.error("NULL in an IN list never matches; use IS NULL", side)
                if op == "!=":
                    raise self.error("'!= NULL' is always true; use IS NOT NULL", side)
                raise self.error(f"'{op} NULL' is never true; use IS NULL", side)
        if op in ("<", "<=", ">", ">="):
            for side, t in ((left, lt), (right, rt)):
                if t not in (Type.NUM, Type.STR, Type.ANY):
                    raise self.error(
                        f"'{op}' orders numbers or strings, but {self.src(side)} is {t.value}",
                        side,
                    )
        if Type.ANY not in (lt, rt) and lt is not rt:
            result = "always true" if op == "!=" else "never true"
            raise self.error(
                f"cannot compare {self.src(left)} ({lt.value}) with {self.src(right)} "
                f"({rt.value}): '{op}' would be {result}",
                right,
            )
        if op in ("=", "!=", "IN"):
            self._enum(left, right)
            self._enum(right, left)

    def _enum(self, field: ast.Node, other: ast.Node) -> None:
        if not isinstance(field, ast.Field) or not isinstance(other, ast.Literal):
            return
        allowed = ENUM_VALUES.get(field.name)
        if allowed is None or other.value in allowed:
            return
        name = "status" if field.name == "status.code" else field.name
        raise self.error(
            f"{name} is never {self.src(other)}; its values are {', '.join(allowed)}", other
        )


def _literal_type(value: ast.LiteralValue) -> Type:
    if value is None:
        return Type.NULL
    if isinstance(value, bool):
        return Type.BOOL
    if isinstance(value, str):
        return Type.STR
    return Type.NUM


def _describe_literal(node: ast.Node, t: Type) -> str:
    if isinstance(node, ast.Literal) and isinstance(node.value, float):
        return "not an integer"
    return t.value
