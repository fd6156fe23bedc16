"""Parsing ``when`` and ``filter`` expressions into an immutable tree (spec 04 §1, §2, §4, §5).

Theory of operation
-------------------
``_tokenize`` turns the text into tokens (strings, numbers, ``${path}`` references, words,
operators) with 1-based columns.  ``_Parser`` is a recursive-descent parser over the
grammar of spec 04 §2, with unary ``!`` binding tightest (``!${a} == true`` is
``(!${a}) == true``)::

    or_expr    = and_expr { ("||" | "OR") and_expr }
    and_expr   = comparison { ("&&" | "AND") comparison }
    comparison = unary [ cmp_op unary | "in" list | "matches" unary ]
    unary      = ("!" | "NOT") unary | operand

The two languages differ only in names.  In ``when`` every name is ``${path}`` and a bare
word is an error.  In ``filter`` a bare word on the *left* (of a comparison, ``in``,
``matches``, or as a function's first argument, or standing alone) is a field path of the
item, and on the *right* (and in ``in`` lists and later function arguments) it is a string
literal.  Every syntax problem is returned as an ``ExprError`` with code E1009; the
parser never raises.
"""

from __future__ import annotations

import re
from typing import Final, Literal, TypeAlias

import attrs

from prodigy_core.json_values import JSON, PATH_RE
from prodigy_core.reprs import value_class

Mode: TypeAlias = Literal["when", "filter"]
Side: TypeAlias = Literal["left", "right"]
CompareOp: TypeAlias = Literal["==", "!=", "<", "<=", ">", ">="]


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class ExprError:
    """A syntax (E1009) or evaluation (E3004, W6002, E2001) problem of an expression."""

    code: str
    message: str
    column: int = 0


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class Const:
    """A literal value (string, number, boolean, null)."""

    value: JSON


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class Ref:
    """``${path}``; ``exists`` is set for the pseudo-field ``${path.exists}``."""

    path: str
    exists: bool = False


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class Field:
    """A field path relative to the work item (filters only)."""

    path: str


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class Not:
    operand: Expr


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class And:
    left: Expr
    right: Expr


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class Or:
    left: Expr
    right: Expr


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class Compare:
    op: CompareOp
    left: Expr
    right: Expr


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class In:
    operand: Expr
    options: tuple[Expr, ...]


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class Matches:
    """``x matches pattern`` and ``matches(x, pattern)``."""

    operand: Expr
    pattern: Expr


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class Call:
    name: str
    args: tuple[Expr, ...]


Expr: TypeAlias = Const | Ref | Field | Not | And | Or | Compare | In | Matches | Call

# name -> allowed argument counts ("matches" is turned into a Matches node)
FUNCTIONS: Final[dict[str, frozenset[int]]] = {
    "contains": frozenset({2}),
    "starts_with": frozenset({2}),
    "ends_with": frozenset({2}),
    "matches": frozenset({2}),
    "is_null": frozenset({1}),
    "is_not_null": frozenset({1}),
    "is_number": frozenset({1}),
    "is_string": frozenset({1}),
    "is_bool": frozenset({1}),
    "is_array": frozenset({1}),
    "is_object": frozenset({1}),
    "length": frozenset({1, 2}),
}
_KEYWORDS: Final = {"true": True, "false": False, "null": None}
_OPERATOR_WORDS: Final = frozenset({"AND", "OR", "NOT", "in", "matches"})
_CMP_OPS: Final[dict[str, CompareOp]] = {
    "==": "==",
    "=": "==",
    "!=": "!=",
    "<": "<",
    "<=": "<=",
    ">": ">",
    ">=": ">=",
}

# --------------------------------------------------------------------------- tokens

TokenKind: TypeAlias = Literal["str", "num", "ref", "word", "op", "end"]


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class _Token:
    kind: TokenKind
    text: str
    value: JSON
    column: int


_NUMBER_RE: Final = re.compile(r"-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_IDENT_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_PATH_TAIL_RE: Final = re.compile(r"(?:\.[A-Za-z0-9_-]+|\[-?[0-9]+\])*")
_OPS: Final = ("==", "!=", ">=", "<=", "&&", "||", "=", "<", ">", "!", "(", ")", "[", "]", ",")
_STRING_ESCAPES: Final = frozenset("'\"\\")


class _SyntaxError(Exception):
    """Internal: unwinds the parser; converted to ``ExprError`` at the entry points."""

    def __init__(self, message: str, column: int) -> None:
        super().__init__(message)
        self.message = message
        self.column = column


def _string(text: str, i: int) -> tuple[str, int]:
    quote = text[i]
    out: list[str] = []
    j = i + 1
    while j < len(text):
        ch = text[j]
        if ch == "\\" and j + 1 < len(text) and text[j + 1] in _STRING_ESCAPES:
            out.append(text[j + 1])
            j += 2
        elif ch == quote:
            return "".join(out), j + 1
        else:
            out.append(ch)
            j += 1
    raise _SyntaxError("unterminated string literal", i + 1)


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i = 0
    while i < len(text):
        ch = text[i]
        col = i + 1
        if ch.isspace():
            i += 1
        elif ch in "'\"":
            value, j = _string(text, i)
            tokens.append(_Token(kind="str", text=text[i:j], value=value, column=col))
            i = j
        elif ch == "$":
            if text.startswith("${", i):
                close = text.find("}", i)
                if close < 0:
                    raise _SyntaxError("unterminated '${'", col)
                path = text[i + 2 : close]
                if not PATH_RE.fullmatch(path):
                    raise _SyntaxError(f"invalid variable reference '{text[i : close + 1]}'", col)
                tokens.append(_Token(kind="ref", text=text[i : close + 1], value=path, column=col))
                i = close + 1
            else:
                m = _IDENT_RE.match(text, i + 1)
                name = m.group() if m else ""
                raise _SyntaxError(f"'${name}' needs braces; write ${{{name}}}", col)
        elif (m := _NUMBER_RE.match(text, i)) is not None and (ch != "-" or len(m.group()) > 1):
            literal = m.group()
            number: int | float = (
                float(literal) if any(c in literal for c in ".eE") else int(literal)
            )
            tokens.append(_Token(kind="num", text=literal, value=number, column=col))
            i = m.end()
        elif (m := _IDENT_RE.match(text, i)) is not None:
            end = m.end()
            if m.group() not in _OPERATOR_WORDS and m.group() not in _KEYWORDS:
                tail = _PATH_TAIL_RE.match(text, end)
                end = tail.end() if tail else end
            tokens.append(_Token(kind="word", text=text[i:end], value=None, column=col))
            i = end
        else:
            op = next((o for o in _OPS if text.startswith(o, i)), None)
            if op is None:
                raise _SyntaxError(f"unexpected character '{ch}'", col)
            tokens.append(_Token(kind="op", text=op, value=None, column=col))
            i += len(op)
    tokens.append(_Token(kind="end", text="", value=None, column=len(text) + 1))
    return tokens


# --------------------------------------------------------------------------- parser


def _check_regex(pattern: Expr, column: int) -> None:
    if isinstance(pattern, Const) and isinstance(pattern.value, str):
        try:
            re.compile(pattern.value)
        except (re.error, OverflowError, RecursionError, ValueError) as exc:
            raise _SyntaxError(
                f"invalid regular expression '{pattern.value}': {exc}", column
            ) from None


class _Parser:
    def __init__(self, text: str, mode: Mode) -> None:
        self.tokens = _tokenize(text)
        self.pos = 0
        self.mode = mode

    # -- helpers
    @property
    def tok(self) -> _Token:
        return self.tokens[self.pos]

    def advance(self) -> _Token:
        tok = self.tokens[self.pos]
        self.pos += 1
        return tok

    def at_op(self, *ops: str) -> bool:
        return self.tok.kind == "op" and self.tok.text in ops

    def at_word(self, *words: str) -> bool:
        return self.tok.kind == "word" and self.tok.text in words

    def expect_op(self, op: str) -> _Token:
        if not self.at_op(op):
            raise _SyntaxError(f"expected '{op}', found {self.describe(self.tok)}", self.tok.column)
        return self.advance()

    @staticmethod
    def describe(tok: _Token) -> str:
        return "end of expression" if tok.kind == "end" else f"'{tok.text}'"

    # -- grammar
    def parse(self) -> Expr:
        expr = self.or_expr("left")
        if self.tok.kind != "end":
            raise _SyntaxError(f"unexpected {self.describe(self.tok)}", self.tok.column)
        return expr

    def or_expr(self, side: Side) -> Expr:
        left = self.and_expr(side)
        while self.at_op("||") or self.at_word("OR"):
            self.advance()
            left = Or(left=left, right=self.and_expr(side))
        return left

    def and_expr(self, side: Side) -> Expr:
        left = self.comparison(side)
        while self.at_op("&&") or self.at_word("AND"):
            self.advance()
            left = And(left=left, right=self.comparison(side))
        return left

    def comparison(self, side: Side) -> Expr:
        left = self.unary(side)
        if self.tok.kind == "op" and self.tok.text in _CMP_OPS:
            op = _CMP_OPS[self.advance().text]
            return Compare(op=op, left=left, right=self.unary("right"))
        if self.at_word("in"):
            self.advance()
            return In(operand=left, options=self.list_literal())
        if self.at_word("matches"):
            self.advance()
            column = self.tok.column
            pattern = self.unary("right")
            _check_regex(pattern, column)
            return Matches(operand=left, pattern=pattern)
        return left

    def unary(self, side: Side) -> Expr:
        if self.at_op("!") or self.at_word("NOT"):
            self.advance()
            return Not(operand=self.unary(side))
        return self.operand(side)

    def list_literal(self) -> tuple[Expr, ...]:
        start = self.tok
        if not self.at_op("["):
            raise _SyntaxError(
                f"'in' must be followed by a list such as ['a', 'b'], found {self.describe(start)}",
                start.column,
            )
        self.advance()
        items: list[Expr] = []
        while not self.at_op("]"):
            if items:
                self.expect_op(",")
            items.append(self.literal())
        self.advance()
        return tuple(items)

    def literal(self) -> Expr:
        tok = self.tok
        if tok.kind in ("str", "num"):
            self.advance()
            return Const(value=tok.value)
        if tok.kind == "ref":
            self.advance()
            return self.ref(tok)
        if tok.kind == "word" and tok.text in _KEYWORDS:
            self.advance()
            return Const(value=_KEYWORDS[tok.text])
        if tok.kind == "word" and tok.text not in _OPERATOR_WORDS:
            self.bare_word_check(tok)
            self.advance()
            return Const(value=tok.text)
        raise _SyntaxError(f"expected a literal, found {self.describe(tok)}", tok.column)

    @staticmethod
    def ref(tok: _Token) -> Ref:
        path = str(tok.value)
        if path.endswith(".exists"):
            return Ref(path=path[: -len(".exists")], exists=True)
        return Ref(path=path)

    def bare_word_check(self, tok: _Token) -> None:
        if self.mode == "when":
            raise _SyntaxError(
                f"bare word '{tok.text}' in when expression; write ${{{tok.text}}}", tok.column
            )

    def operand(self, side: Side) -> Expr:
        tok = self.tok
        if self.at_op("("):
            self.advance()
            inner = self.or_expr("left")
            self.expect_op(")")
            return inner
        if self.at_op("["):
            raise _SyntaxError("a list literal is only allowed after 'in'", tok.column)
        nxt = self.tokens[min(self.pos + 1, len(self.tokens) - 1)]
        followed_by_paren = nxt.kind == "op" and nxt.text == "("
        if tok.kind == "word" and tok.text == "matches" and followed_by_paren:
            return self.call()
        if tok.kind == "word" and tok.text not in _KEYWORDS and tok.text not in _OPERATOR_WORDS:
            if followed_by_paren:
                return self.call()
            if self.mode == "filter" and side == "left":
                self.advance()
                return Field(path=tok.text)
        if tok.kind in ("str", "num", "ref", "word") and tok.text not in _OPERATOR_WORDS:
            return self.literal()
        raise _SyntaxError(f"unexpected {self.describe(tok)}", tok.column)

    def call(self) -> Expr:
        name_tok = self.advance()
        name = name_tok.text
        if name not in FUNCTIONS:
            raise _SyntaxError(f"unknown function '{name}'", name_tok.column)
        self.expect_op("(")
        args: list[Expr] = []
        columns: list[int] = []
        while not self.at_op(")"):
            if args:
                self.expect_op(",")
            columns.append(self.tok.column)
            args.append(self.or_expr("left" if not args else "right"))
        self.advance()
        if len(args) not in FUNCTIONS[name]:
            counts = " or ".join(str(n) for n in sorted(FUNCTIONS[name]))
            raise _SyntaxError(
                f"function '{name}' takes {counts} argument(s), got {len(args)}", name_tok.column
            )
        if name == "matches":
            _check_regex(args[1], columns[1])
            return Matches(operand=args[0], pattern=args[1])
        return Call(name=name, args=tuple(args))


def _parse(text: str, mode: Mode) -> Expr | ExprError:
    try:
        return _Parser(text, mode).parse()
    except _SyntaxError as exc:
        return ExprError(code="E1009", message=exc.message, column=exc.column)
    except RecursionError:
        return ExprError(code="E1009", message="expression is nested too deeply", column=0)


def parse_when(text: str) -> Expr | ExprError:
    """Parse a ``when`` expression; names are ``${path}`` only (spec 04 §4)."""
    return _parse(text, "when")


def parse_filter(text: str) -> Expr | ExprError:
    """Parse a ``filter`` expression; bare names are item field paths (spec 04 §5)."""
    return _parse(text, "filter")


def when_references(expr: Expr) -> tuple[str, ...]:
    """Variable paths used by ``${...}`` references, in order, without duplicates.

    ``${name.exists}`` contributes ``name``.  Works for filters too.
    """
    found: list[str] = []

    def visit(node: Expr) -> None:
        match node:
            case Ref(path=path):
                if path not in found:
                    found.append(path)
            case Const() | Field():
                pass
            case Not(operand=operand):
                visit(operand)
            case And(left=left, right=right) | Or(left=left, right=right):
                visit(left)
                visit(right)
            case Compare(left=left, right=right):
                visit(left)
                visit(right)
            case In(operand=operand, options=options):
                visit(operand)
                for option in options:
                    visit(option)
            case Matches(operand=operand, pattern=pattern):
                visit(operand)
                visit(pattern)
            case Call(args=args):
                for arg in args:
                    visit(arg)

    visit(expr)
    return tuple(found)
