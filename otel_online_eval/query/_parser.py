"""Recursive-descent parser: text -> checked AST.

Precedence, loosest first: ``OR`` < ``AND`` < ``NOT`` < comparison (``= != < IS IN LIKE MATCH
CONTAINS``) < ``+ -`` < ``* /`` < unary ``-`` < postfix (``[i]``, ``.key``).
"""

from __future__ import annotations

import difflib
from typing import NoReturn

from otel_online_eval._errors import FilterSyntaxError
from otel_online_eval.query import ast
from otel_online_eval.query._check import check
from otel_online_eval.query._fields import (
    FIELD_ALIASES,
    FIELDS,
    FUNCTIONS,
    INTERVAL_UNITS,
    KNOWN_FIELDS_TEXT,
    KNOWN_TRACE_FIELDS_TEXT,
    TRACE_FIELDS,
    Type,
)
from otel_online_eval.query._lexer import Tok, Token, describe, tokenize

__all__ = ["TOO_DEEP", "parse", "parse_typed"]

_COMPARE_OPS: dict[str, ast.CompareOp] = {
    "=": "=",
    "==": "=",
    "!=": "!=",
    "<>": "!=",
    "<": "<",
    "<=": "<=",
    ">": ">",
    ">=": ">=",
}
_PREDICATE_KEYWORDS = frozenset({"IS", "IN", "LIKE", "ILIKE", "MATCH", "CONTAINS", "INCLUDES"})
_NEGATABLE = frozenset({"IN", "LIKE", "ILIKE", "MATCH", "CONTAINS", "INCLUDES"})
TOO_DEEP = "expression nested too deeply"
_UNITS_TEXT = "ms, millisecond(s), second(s), minute(s), hour(s), day(s)"
_FIELD_NAMES = sorted(
    {*FIELDS, *FIELD_ALIASES, "attributes", "resource", "scope.name", "scope.version"}
)
_TRACE_NAMES = sorted(name.removeprefix("trace.") for name in TRACE_FIELDS)


def parse(text: str) -> ast.Node:
    """Parse and check a filter or value expression.

    Args:
        text: the expression, e.g. ``attributes['gen_ai.operation.name'] = 'chat'``.

    Returns:
        The root of the syntax tree; every node carries its source offsets.

    Raises:
        FilterSyntaxError: a syntax error, an unknown field or function, a wrong number of
            arguments, a bad INTERVAL unit, a MATCH pattern that is not a valid RE2 string
            literal, or an expression whose result is fixed by its types (``name = 1``).
    """
    return parse_typed(text)[0]


def parse_typed(text: str) -> tuple[ast.Node, Type]:
    """:func:`parse`, also returning the static type of the whole expression."""
    if not isinstance(text, str):
        raise TypeError(f"a filter must be a str, got {type(text).__name__}")
    try:
        parser = _Parser(text)
        node = parser.expression()
        parser.finish()
        return node, check(node, text)
    except RecursionError:
        raise FilterSyntaxError(TOO_DEEP, text, 0) from None


class _Parser:
    __slots__ = ("i", "outer", "text", "tokens")

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.i = 0
        # id(node) -> (node, start, end) with the parentheses around it; holding the node keeps
        # its id from being reused by another node while parsing.
        self.outer: dict[int, tuple[ast.Node, int, int]] = {}
        if self.tokens[0].kind is Tok.END:
            raise FilterSyntaxError("empty expression: expected a condition", text, 0)

    def lo(self, node: ast.Node) -> int:
        """Where ``node`` starts, counting parentheses around it."""
        entry = self.outer.get(id(node))
        return node.start if entry is None else entry[1]

    def hi(self, node: ast.Node) -> int:
        """Where ``node`` ends, counting parentheses around it."""
        entry = self.outer.get(id(node))
        return node.end if entry is None else entry[2]

    # -- token helpers ----------------------------------------------------------------------

    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def peek(self, offset: int = 1) -> Token:
        return self.tokens[min(self.i + offset, len(self.tokens) - 1)]

    def advance(self) -> Token:
        token = self.tokens[self.i]
        if token.kind is not Tok.END:
            self.i += 1
        return token

    def is_op(self, *ops: str) -> bool:
        return self.tok.kind is Tok.OP and self.tok.value in ops

    def is_kw(self, *words: str) -> bool:
        return self.tok.kind is Tok.KEYWORD and self.tok.value in words

    def fail(self, expected: str, token: Token | None = None) -> NoReturn:
        token = token or self.tok
        raise FilterSyntaxError(
            f"expected {expected} but found {describe(token)}", self.text, token.start
        )

    def expect_op(self, op: str) -> Token:
        if not self.is_op(op):
            self.fail(f"'{op}'")
        return self.advance()

    def finish(self) -> None:
        if self.tok.kind is not Tok.END:
            if self.is_op(")"):
                raise FilterSyntaxError(
                    "unbalanced ')': no '(' to close", self.text, self.tok.start
                )
            self.fail("AND, OR or end of input")

    # -- grammar ----------------------------------------------------------------------------

    def expression(self) -> ast.Node:
        return self.or_()

    def or_(self) -> ast.Node:
        first = self.and_()
        operands = [first]
        while self.is_kw("OR"):
            self.advance()
            operands.append(self.and_())
        if len(operands) == 1:
            return first
        return ast.Or(operands=tuple(operands), start=self.lo(first), end=self.hi(operands[-1]))

    def and_(self) -> ast.Node:
        first = self.not_()
        operands = [first]
        while self.is_kw("AND"):
            self.advance()
            operands.append(self.not_())
        if len(operands) == 1:
            return first
        return ast.And(operands=tuple(operands), start=self.lo(first), end=self.hi(operands[-1]))

    def not_(self) -> ast.Node:
        if self.is_kw("NOT"):
            token = self.advance()
            operand = self.not_()
            return ast.Not(operand=operand, start=token.start, end=self.hi(operand))
        return self.comparison()

    def comparison(self) -> ast.Node:
        left = self.additive()
        node = self.predicate(left)
        if node is not left and (
            (self.tok.kind is Tok.OP and self.tok.value in _COMPARE_OPS)
            or (self.tok.kind is Tok.KEYWORD and self.tok.value in _PREDICATE_KEYWORDS)
            or (self.is_kw("NOT") and self.peek().value in _NEGATABLE)
        ):
            raise FilterSyntaxError(
                f"expected AND or OR but found {describe(self.tok)}: comparisons do not chain",
                self.text,
                self.tok.start,
            )
        return node

    def predicate(self, left: ast.Node) -> ast.Node:
        tok = self.tok
        if tok.kind is Tok.OP and tok.value in _COMPARE_OPS:
            self.advance()
            right = self.additive()
            op = _COMPARE_OPS[str(tok.value)]
            return ast.Compare(
                op=op, left=left, right=right, start=self.lo(left), end=self.hi(right)
            )
        if tok.kind is not Tok.KEYWORD:
            return left
        if tok.value == "IS":
            self.advance()
            negated = False
            if self.is_kw("NOT"):
                self.advance()
                negated = True
            if not self.is_kw("NULL"):
                self.fail("NULL" if negated else "NULL or NOT NULL")
            end = self.advance().end
            return ast.IsNull(operand=left, negated=negated, start=self.lo(left), end=end)
        negated = False
        if tok.value == "NOT":
            if self.peek().kind is not Tok.KEYWORD or self.peek().value not in _NEGATABLE:
                self.fail("IN, LIKE, ILIKE, MATCH or CONTAINS after NOT", self.peek())
            self.advance()
            negated = True
            tok = self.tok
        word = tok.value
        if word == "IN":
            self.advance()
            self.expect_op("(")
            if self.is_op(")"):
                self.fail("a value")
            options = [self.additive()]
            while self.is_op(","):
                self.advance()
                options.append(self.additive())
            if not self.is_op(")"):
                self.fail("',' or ')'")
            end = self.advance().end
            return ast.In(
                operand=left, options=tuple(options), negated=negated, start=self.lo(left), end=end
            )
        if word in ("LIKE", "ILIKE"):
            self.advance()
            pattern = self.additive()
            return ast.Like(
                operand=left,
                pattern=pattern,
                negated=negated,
                case_insensitive=word == "ILIKE",
                start=self.lo(left),
                end=self.hi(pattern),
            )
        if word == "MATCH":
            self.advance()
            pattern = self.additive()
            if not isinstance(pattern, ast.Literal) or not isinstance(pattern.value, str):
                raise FilterSyntaxError(
                    "MATCH needs a string literal pattern (regular expressions are compiled "
                    f"once, when the filter loads) but found {self.source(pattern)}",
                    self.text,
                    pattern.start,
                )
            return ast.Match(
                operand=left,
                pattern=pattern,
                negated=negated,
                start=self.lo(left),
                end=self.hi(pattern),
            )
        if word in ("CONTAINS", "INCLUDES"):
            self.advance()
            item = self.additive()
            return ast.Contains(
                operand=left, item=item, negated=negated, start=self.lo(left), end=self.hi(item)
            )
        return left

    def additive(self) -> ast.Node:
        left = self.multiplicative()
        while self.is_op("+", "-"):
            op: ast.ArithOp = "+" if self.advance().value == "+" else "-"
            right = self.multiplicative()
            left = ast.BinaryOp(
                op=op, left=left, right=right, start=self.lo(left), end=self.hi(right)
            )
        return left

    def multiplicative(self) -> ast.Node:
        left = self.unary()
        while self.is_op("*", "/"):
            op: ast.ArithOp = "*" if self.advance().value == "*" else "/"
            right = self.unary()
            left = ast.BinaryOp(
                op=op, left=left, right=right, start=self.lo(left), end=self.hi(right)
            )
        return left

    def unary(self) -> ast.Node:
        if self.is_op("-"):
            token = self.advance()
            operand = self.unary()
            value = operand.value if isinstance(operand, ast.Literal) else None
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return ast.Literal(value=-value, start=token.start, end=self.hi(operand))
            return ast.Neg(operand=operand, start=token.start, end=self.hi(operand))
        return self.postfix(self.primary())

    def postfix(self, node: ast.Node) -> ast.Node:
        while True:
            if self.is_op("["):
                self.advance()
                index = self.expression()
                end = self.expect_op("]").end
                node = ast.Subscript(target=node, index=index, start=self.lo(node), end=end)
            elif self.is_op("."):
                self.advance()
                for name, end in self.member_names():
                    node = ast.Member(target=node, name=name, start=self.lo(node), end=end)
            else:
                return node

    def member_names(self) -> list[tuple[str, int]]:
        """The name(s) after a '.': an identifier or keyword, or digits (``.0``); a token like
        ``0.1`` (lexed as a number) is the two names ``0`` and ``1``."""
        token = self.tok
        if token.kind in (Tok.IDENT, Tok.KEYWORD):
            self.advance()
            return [(token.text, token.end)]
        if token.kind is Tok.NUMBER:
            self.advance()
            return [(part, token.end) for part in token.text.split(".")]
        self.fail("a name after '.'")

    def primary(self) -> ast.Node:
        tok = self.tok
        if tok.kind is Tok.STRING or tok.kind is Tok.NUMBER:
            self.advance()
            return ast.Literal(value=tok.value, start=tok.start, end=tok.end)
        if tok.kind is Tok.KEYWORD:
            if tok.value in ("TRUE", "FALSE", "NULL"):
                self.advance()
                value = {"TRUE": True, "FALSE": False, "NULL": None}[str(tok.value)]
                return ast.Literal(value=value, start=tok.start, end=tok.end)
            if tok.value == "INTERVAL":
                return self.interval()
            self.fail("a value")
        if tok.kind is Tok.OP and tok.value == "(":
            self.advance()
            inner = self.expression()
            if not self.is_op(")"):
                self.fail("')'")
            close = self.advance()
            # The node keeps its own span; its parent spans the parentheses too.
            self.outer[id(inner)] = (inner, tok.start, close.end)
            return inner
        if tok.kind is Tok.IDENT:
            if self.peek().kind is Tok.OP and self.peek().value == "(":
                return self.call()
            return self.field()
        self.fail("a value")

    def interval(self) -> ast.Node:
        start = self.advance().start
        amount = self.tok
        if amount.kind is not Tok.NUMBER:
            hint = ""
            if amount.kind is Tok.STRING:
                hint = "; write it as INTERVAL 1 hour"
            raise FilterSyntaxError(
                f"expected a number after INTERVAL but found {describe(amount)}{hint}",
                self.text,
                amount.start,
            )
        self.advance()
        unit = self.tok
        factor = INTERVAL_UNITS.get(str(unit.text).lower()) if unit.kind is Tok.IDENT else None
        if factor is None:
            raise FilterSyntaxError(
                f"expected an INTERVAL unit ({_UNITS_TEXT}) but found {describe(unit)}",
                self.text,
                unit.start,
            )
        self.advance()
        value = amount.value
        assert not isinstance(value, str)
        try:
            nanos = value * factor if isinstance(value, int) else round(value * factor)
        except OverflowError:
            raise FilterSyntaxError(
                f"INTERVAL {amount.text} {unit.text} is too long", self.text, amount.start
            ) from None
        return ast.Interval(
            amount=value, unit=unit.text.lower(), nanos=nanos, start=start, end=unit.end
        )

    def call(self) -> ast.Node:
        name_tok = self.advance()
        name = name_tok.text.lower()
        arity = FUNCTIONS.get(name)
        if arity is None:
            known = ", ".join(sorted(FUNCTIONS))
            raise FilterSyntaxError(
                f"unknown function '{name_tok.text}'; known functions: {known}",
                self.text,
                name_tok.start,
            )
        self.advance()  # "("
        args: list[ast.Node] = []
        if not self.is_op(")"):
            args.append(self.expression())
            while self.is_op(","):
                self.advance()
                args.append(self.expression())
        if not self.is_op(")"):
            self.fail("',' or ')'")
        end = self.advance().end
        if len(args) != arity:
            wanted = {0: "no arguments", 1: "1 argument"}.get(arity, f"{arity} arguments")
            given = "1 was" if len(args) == 1 else f"{len(args)} were"
            raise FilterSyntaxError(
                f"{name}() takes {wanted} but {given} given", self.text, name_tok.start
            )
        return ast.Call(name=name, args=tuple(args), start=name_tok.start, end=end)

    def field(self) -> ast.Node:
        tok = self.advance()
        word = tok.text.lower()
        if word in ("attributes", "resource"):
            return self.attribute_ref(tok, "attributes" if word == "attributes" else "resource")
        if word in ("status", "scope", "trace"):
            if self.is_op(".") and self.peek().kind in (Tok.IDENT, Tok.KEYWORD):
                sub = self.peek()
                full = f"{word}.{sub.text.lower()}"
                if full in FIELDS:
                    self.advance()
                    self.advance()
                    return ast.Field(name=full, start=tok.start, end=sub.end)
                self.unknown_field(f"{word}.{sub.text}", tok)
            if word == "status":
                return ast.Field(name="status.code", start=tok.start, end=tok.end)
            self.unknown_field(tok.text, tok)
        if word in FIELDS and "." not in word:
            return ast.Field(name=word, start=tok.start, end=tok.end)
        self.unknown_field(tok.text, tok)

    def attribute_ref(self, tok: Token, source: str) -> ast.Node:
        kind: ast.AttributeSource = "attributes" if source == "attributes" else "resource"
        if self.is_op("["):
            self.advance()
            key = self.tok
            if key.kind is not Tok.STRING:
                self.fail(f"a string key after '{tok.text}['")
            self.advance()
            end = self.expect_op("]").end
            return ast.AttributeRef(
                source=kind, parts=(str(key.value),), dotted=False, start=tok.start, end=end
            )
        if not self.is_op("."):
            self.fail(f"'[' or '.' after '{tok.text}'")
        parts: list[str] = []
        end = tok.end
        while self.is_op("."):
            self.advance()
            for name, name_end in self.member_names():
                parts.append(name)
                end = name_end
        return ast.AttributeRef(
            source=kind, parts=tuple(parts), dotted=True, start=tok.start, end=end
        )

    def unknown_field(self, word: str, tok: Token) -> NoReturn:
        lowered = word.lower()
        if lowered.startswith("trace.") or lowered == "trace":
            self.unknown_trace_field(word, tok)
        message = f"unknown field '{word}'; known fields: {KNOWN_FIELDS_TEXT}"
        if lowered == "now":
            message += "; did you mean now()?"
        else:
            close = difflib.get_close_matches(lowered, _FIELD_NAMES, n=1, cutoff=0.6)
            if close:
                message += f"; did you mean '{close[0]}'?"
        raise FilterSyntaxError(message, self.text, tok.start)

    def unknown_trace_field(self, word: str, tok: Token) -> NoReturn:
        # Only the trace fields are listed: whoever wrote 'trace.' wants one of them. A bare
        # 'trace' may also be a mistyped trace_id, so it is matched against every field.
        bare = word.lower() == "trace"
        message = f"unknown field '{word}'; "
        if bare:
            message += "a trace field is written trace.<name>; "
        message += f"known trace fields: {KNOWN_TRACE_FIELDS_TEXT}"
        if bare:
            close = difflib.get_close_matches("trace", _FIELD_NAMES, n=1, cutoff=0.6)
        else:
            # Matched without the shared 'trace.', which would make every name look close.
            close = [
                f"trace.{name}"
                for name in difflib.get_close_matches(
                    word.lower().removeprefix("trace."), _TRACE_NAMES, n=1, cutoff=0.6
                )
            ]
        if close:
            message += f"; did you mean '{close[0]}'?"
        raise FilterSyntaxError(message, self.text, tok.start)

    def source(self, node: ast.Node) -> str:
        text = self.text[node.start : node.end]
        return text if len(text) <= 40 else text[:37] + "..."
