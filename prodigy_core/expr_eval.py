"""Evaluating ``when`` and ``filter`` trees: truthiness, equality, ordering, functions.

Theory of operation
-------------------
``_Evaluator`` walks an ``Expr`` (see ``expr_parse``) and produces a JSON value.  Names are
resolved through two callables: ``ref`` for ``${path}`` references and ``field`` for item
field paths (filters only).  A name that does not resolve is ``null``; the pseudo-field
``${name.exists}`` asks whether ``name`` resolves at all (spec 04 §4.2).

The comparison rules of spec 04 §3 are plain functions (``equal``, ``compare``,
``truthy``) so that ``distinct`` and ``sort_by`` (``expr_sort``) use exactly the same
ones.  A type error (ordering incompatible types, ``length`` of a number) unwinds with an
internal exception and is returned as an ``ExprError``: E3004 for ``when``, W6002 for
``filter`` (the caller treats the item as not matching).  ``&&`` and ``||`` short-circuit,
so the right side of a false ``&&`` is never evaluated and cannot fail.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final, Literal

from prodigy_core.expr_parse import (
    And,
    Call,
    Compare,
    CompareOp,
    Const,
    Expr,
    ExprError,
    Field,
    In,
    Matches,
    Not,
    Or,
    Ref,
)
from prodigy_core.json_values import (
    JSON,
    MISSING,
    Missing,
    render_value,
    type_name,
    walk_path,
)

__all__ = [
    "MISSING",
    "Missing",
    "compare",
    "equal",
    "eval_filter",
    "eval_when",
    "item_field",
    "numeric_value",
    "truthy",
]

Resolver = Callable[[str], JSON | Missing]

_NUMERIC_RE: Final = re.compile(r"\s*[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\s*")


class _EvalError(Exception):
    """Internal: a type error during evaluation; becomes an ``ExprError``."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class _Unresolved(Exception):
    """Internal: a ``${name}`` in a filter did not resolve (E2001)."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path


# --------------------------------------------------------------------------- value rules


def truthy(value: JSON | Missing) -> bool:
    """Truthiness (spec 04 §3.2)."""
    if value is None or value is MISSING:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, str):
        return value != "" and value.lower() not in ("false", "0")
    return len(value) > 0


def _is_number(value: JSON) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def numeric_value(value: str) -> int | float | None:
    """The number a (trimmed) numeric string denotes, else ``None``."""
    if not _NUMERIC_RE.fullmatch(value):
        return None
    text = value.strip()
    if any(c in text for c in ".eE"):
        return float(text)
    try:
        return int(text)
    except ValueError:  # more digits than int() accepts from text
        return float(text)


def _deep_equal(a: JSON, b: JSON) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if _is_number(a) and _is_number(b):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_deep_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_deep_equal(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def equal(a: JSON, b: JSON) -> bool:
    """Equality of spec 04 §3.3 (``==``, ``in``, ``distinct``)."""
    if a is None or b is None:
        return a is None and b is None
    if _is_number(a) and isinstance(b, str):
        return numeric_value(b) == a
    if isinstance(a, str) and _is_number(b):
        return numeric_value(a) == b
    if isinstance(a, bool) and isinstance(b, str):
        return b.strip().lower() == ("true" if a else "false")
    if isinstance(a, str) and isinstance(b, bool):
        return a.strip().lower() == ("true" if b else "false")
    return _deep_equal(a, b)


def compare(a: JSON, b: JSON) -> Literal[-1, 0, 1]:
    """Ordering of spec 04 §3.4; raises the internal error on incompatible types."""
    left: JSON = a
    right: JSON = b
    if _is_number(a) and isinstance(b, str):
        num = numeric_value(b)
        right = b if num is None else num
    elif isinstance(a, str) and _is_number(b):
        num = numeric_value(a)
        left = a if num is None else num
    if _is_number(left) and _is_number(right):
        assert isinstance(left, int | float) and isinstance(right, int | float)
        return -1 if left < right else (1 if left > right else 0)
    if isinstance(left, str) and isinstance(right, str):
        return -1 if left < right else (1 if left > right else 0)
    raise _EvalError(f"cannot compare {type_name(a)} with {type_name(b)}")


_ORDER_TESTS: Final[dict[CompareOp, Callable[[int], bool]]] = {
    "<": lambda c: c < 0,
    "<=": lambda c: c <= 0,
    ">": lambda c: c > 0,
    ">=": lambda c: c >= 0,
}


def item_field(item: JSON, path: str) -> JSON | Missing:
    """A filter/sort field path on a work item (spec 04 §5.1, §5.3).

    For an object without an ``item`` field, ``item`` is the item itself and a leading
    ``item.`` is removed.  For any other item the only field path is ``item``.
    """
    if not isinstance(item, dict):
        return item if path == "item" else MISSING
    if "item" not in item:
        if path == "item":
            return item
        if path.startswith("item."):
            path = path[len("item.") :]
    return walk_path(item, path)


# --------------------------------------------------------------------------- evaluation


def _text(value: JSON) -> str:
    return render_value(value)


def _search(value: JSON, pattern: JSON) -> bool:
    if value is None or pattern is None:
        return False
    try:
        return re.search(_text(pattern), _text(value)) is not None
    except (re.error, OverflowError, RecursionError, ValueError) as exc:
        raise _EvalError(f"invalid regular expression '{_text(pattern)}': {exc}") from None


def _contains(x: JSON, v: JSON) -> bool:
    if isinstance(x, list):
        return any(equal(e, v) for e in x)
    if v is None:
        return False
    if isinstance(x, str):
        return _text(v) in x
    if isinstance(x, dict):
        return _text(v) in x
    return False


def _length(x: JSON) -> int:
    if x is None:
        return 0
    if isinstance(x, str | list | dict):
        return len(x)
    raise _EvalError(f"length() of {type_name(x)}")


def _affix(x: JSON, v: JSON, *, prefix: bool) -> bool:
    if not isinstance(x, str) or not isinstance(v, str):
        return False
    return x.startswith(v) if prefix else x.endswith(v)


_TYPE_TESTS: Final[dict[str, Callable[[JSON], bool]]] = {
    "is_null": lambda x: x is None,
    "is_not_null": lambda x: x is not None,
    "is_number": _is_number,
    "is_string": lambda x: isinstance(x, str),
    "is_bool": lambda x: isinstance(x, bool),
    "is_array": lambda x: isinstance(x, list),
    "is_object": lambda x: isinstance(x, dict),
}


class _Evaluator:
    def __init__(self, ref: Resolver, field: Callable[[str], JSON | Missing] | None) -> None:
        self.ref = ref
        self.field = field

    def value(self, node: Expr) -> JSON:
        match node:
            case Const(value=value):
                return value
            case Ref(path=path, exists=exists):
                resolved = self.ref(path)
                if exists:
                    return resolved is not MISSING
                if resolved is MISSING:
                    if self.field is not None:
                        raise _Unresolved(path)
                    return None
                return resolved
            case Field(path=path):
                found = self.field(path) if self.field is not None else MISSING
                return None if found is MISSING else found
            case Not(operand=operand):
                return not truthy(self.value(operand))
            case And(left=left, right=right):
                return truthy(self.value(left)) and truthy(self.value(right))
            case Or(left=left, right=right):
                return truthy(self.value(left)) or truthy(self.value(right))
            case Compare(op=op, left=left, right=right):
                a, b = self.value(left), self.value(right)
                if op == "==":
                    return equal(a, b)
                if op == "!=":
                    return not equal(a, b)
                return _ORDER_TESTS[op](compare(a, b))
            case In(operand=operand, options=options):
                x = self.value(operand)
                return any(equal(x, self.value(o)) for o in options)
            case Matches(operand=operand, pattern=pattern):
                return _search(self.value(operand), self.value(pattern))
            case Call(name=name, args=args):
                return self.call(name, tuple(self.value(a) for a in args))
        raise AssertionError(f"unknown expression node {node!r}")  # pragma: no cover

    @staticmethod
    def call(name: str, args: tuple[JSON, ...]) -> JSON:
        if name in _TYPE_TESTS:
            return _TYPE_TESTS[name](args[0])
        if name == "contains":
            return _contains(args[0], args[1])
        if name in ("starts_with", "ends_with"):
            return _affix(args[0], args[1], prefix=name == "starts_with")
        if name == "length":
            n = _length(args[0])
            return n if len(args) == 1 else equal(n, args[1])
        raise AssertionError(f"unknown function {name}")  # pragma: no cover


def eval_when(expr: Expr, resolve: Resolver) -> bool | ExprError:
    """Evaluate a ``when`` tree; truthiness applied (spec 04 §4).  Errors are E3004."""
    try:
        return truthy(_Evaluator(resolve, None).value(expr))
    except _EvalError as exc:
        return ExprError(code="E3004", message=f"failed to evaluate when condition: {exc.message}")


def eval_filter(expr: Expr, item: JSON, resolve_var: Resolver) -> bool | ExprError:
    """Evaluate a ``filter`` tree for one item (spec 04 §5).

    A type error is returned as W6002 and an unresolved ``${name}`` as E2001; either way
    the item does not match and the caller decides what to report.
    """
    evaluator = _Evaluator(resolve_var, lambda path: item_field(item, path))
    try:
        return truthy(evaluator.value(expr))
    except _EvalError as exc:
        return ExprError(code="W6002", message=f"filter type error: {exc.message}")
    except _Unresolved as exc:
        return ExprError(code="E2001", message=f"unresolved variable '${{{exc.path}}}' in filter")
