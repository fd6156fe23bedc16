"""``json_path`` for MapReduce items (spec 04 §8): jsonpath-ng, adapted to the spec's subset.

Theory of operation
-------------------
An expression is compiled once per text (``compile_json_path``, cached) with jsonpath-ng's
extended dialect; the compiled tree is then adapted in three places: filters accept ``&&``
and ``||`` (the library knows only ``&``) and compare with the rules of spec 04 §3 (the
library truncates floats to ints and raises on null); ``[*]`` and ``.*`` iterate array
elements and object member values alike; ``[i]`` indexes arrays only.  Nothing here raises
on an odd document: a failure is an ``ItemsError`` value (E1010 for a path that does not
compile), and a type error inside a filter makes it false for that item.
"""

from __future__ import annotations

import functools
import importlib
import re
from collections.abc import Callable, Mapping
from typing import Any, Final, TypeAlias

import attrs

from prodigy_core.expr_parse import CompareOp
from prodigy_core.expressions import (
    Compare,
    Const,
    eval_filter,
)
from prodigy_core.json_values import JSON, MISSING
from prodigy_core.reprs import value_class


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class ItemsError:
    """Loading or selecting items failed: E6002 (input), E1009 (filter, sort_by,
    distinct), E1010 (json_path), E2001 (unresolved ``${name}`` in a filter)."""

    code: str
    message: str
    line: int | None = None
    column: int | None = None



# --------------------------------------------------------------------------- json_path


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class _Test:
    """One comparison of a filter: ``target op value`` (``op`` None tests existence)."""

    target: Any
    op: str | None
    value: JSON


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class _All:
    parts: tuple[_Bool, ...]


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class _AnyOf:
    parts: tuple[_Bool, ...]


_Bool: TypeAlias = _Test | _All | _AnyOf


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class _Compiled:
    root: Any  # a jsonpath-ng tree with the adapted nodes below


class _BadPath(Exception):
    """Internal: a json_path that does not compile; becomes E1010."""


_PLACEHOLDER: Final = "__prodigy_filter_{}__"
_PLACEHOLDER_RE: Final = re.compile(r"__prodigy_filter_([0-9]+)__")
_QUOTES: Final = "'\"`"
_FILTER_OPEN_RE: Final = re.compile(r"\[\s*\?")
_NULL_RHS_RE: Final = re.compile(r"(?:==|!=)\s*null\s*\Z")
_FILTER_OPS: Final[Mapping[str, CompareOp]] = {
    "==": "==",
    "=": "==",
    "!=": "!=",
    "<": "<",
    "<=": "<=",
    ">": ">",
    ">=": ">=",
}


def _string_end(text: str, start: int) -> int:
    """Index just after the quoted string opening at ``start`` (or the end of text)."""
    quote = text[start]
    i = start + 1
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == quote:
            return i + 1
        i += 1
    return len(text)


def _filter_spans(text: str) -> list[tuple[int, int, int]]:
    """``(open, body_start, close)`` of every outermost ``[?…]`` filter in a path."""
    spans: list[tuple[int, int, int]] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c in _QUOTES:
            i = _string_end(text, i)
            continue
        question = _FILTER_OPEN_RE.match(text, i)
        if question is None:
            i += 1
            continue
        depth, j = 0, question.end()
        while j < len(text):
            if text[j] in _QUOTES:
                j = _string_end(text, j)
                continue
            if text[j] == "[":
                depth += 1
            elif text[j] == "]":
                if depth == 0:
                    break
                depth -= 1
            j += 1
        if j >= len(text):
            return spans  # unterminated: the library reports it
        spans.append((i, question.end(), j))
        i = j + 1
    return spans


def _body_tokens(body: str) -> list[tuple[str, str]]:
    """Split a filter body into ``(``, ``)``, ``&&``, ``||`` and ``atom`` tokens."""
    tokens: list[tuple[str, str]] = []
    atom: list[str] = []

    def flush() -> None:
        if "".join(atom).strip():
            tokens.append(("atom", "".join(atom).strip()))
        atom.clear()

    depth, i = 0, 0
    while i < len(body):
        c = body[i]
        if c in _QUOTES:
            end = _string_end(body, i)
            atom.append(body[i:end])
            i = end
            continue
        depth += {"[": 1, "]": -1}.get(c, 0)
        if depth == 0 and (body.startswith(("&&", "||"), i) or c in "&()"):
            op = body[i : i + 2] if body.startswith(("&&", "||"), i) else c
            flush()
            tokens.append(("&&" if op == "&" else op, op))
            i += len(op)
            continue
        atom.append(c)
        i += 1
    flush()
    return tokens


class _BodyParser:
    """``or = and {"||" and}; and = unary {"&&" unary}; unary = "(" or ")" | atom``."""

    def __init__(self, tokens: list[tuple[str, str]], atom: Callable[[str], _Bool]) -> None:
        self.tokens = tokens
        self.atom = atom
        self.pos = 0

    def peek(self) -> str:
        return self.tokens[self.pos][0] if self.pos < len(self.tokens) else "end"

    def parse(self) -> _Bool:
        tree = self.disjunction()
        if self.pos != len(self.tokens):
            raise _BadPath(f"unexpected '{self.tokens[self.pos][1]}' in filter")
        return tree

    def disjunction(self) -> _Bool:
        parts = [self.conjunction()]
        while self.peek() == "||":
            self.pos += 1
            parts.append(self.conjunction())
        return parts[0] if len(parts) == 1 else _AnyOf(parts=tuple(parts))

    def conjunction(self) -> _Bool:
        parts = [self.unary()]
        while self.peek() == "&&":
            self.pos += 1
            parts.append(self.unary())
        return parts[0] if len(parts) == 1 else _All(parts=tuple(parts))

    def unary(self) -> _Bool:
        kind = self.peek()
        if kind == "(":
            self.pos += 1
            tree = self.disjunction()
            if self.peek() != ")":
                raise _BadPath("missing ')' in filter")
            self.pos += 1
            return tree
        if kind == "atom":
            self.pos += 1
            return self.atom(self.tokens[self.pos - 1][1])
        if kind == "end":
            raise _BadPath("unexpected end of filter")
        raise _BadPath(f"expected a comparison before '{self.tokens[self.pos][1]}' in filter")


def _library_error(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _compile_atom(ext: Any, text: str) -> _Bool:
    """One comparison, compiled by the library as ``$[?(<text>)]``."""
    try:
        node = ext.parse(f"$[?({text})]")
    except Exception as exc:  # the library raises several unrelated types
        raise _BadPath(f"invalid filter term '{text}': {_library_error(exc)}") from None
    expressions = getattr(node.right, "expressions", None)
    if not isinstance(expressions, list) or not expressions:
        raise _BadPath(f"invalid filter term '{text}'")
    tests: list[_Bool] = []
    for expr in expressions:
        value = None if _NULL_RHS_RE.search(text) else expr.value
        if expr.op == "=~":
            try:
                re.compile(str(value))
            except re.error as exc:
                raise _BadPath(f"invalid regular expression '{value}': {exc}") from None
        tests.append(_Test(target=expr.target, op=expr.op, value=value))
    return tests[0] if len(tests) == 1 else _All(parts=tuple(tests))


def _children(jp: Any, datum: Any) -> list[Any]:
    """Array elements or object member values of a datum, each in its context."""
    value = datum.value
    if isinstance(value, list):
        return [jp.DatumInContext(v, path=jp.Index(i), context=datum) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return [jp.DatumInContext(v, path=jp.Fields(k), context=datum) for k, v in value.items()]
    return []


def _compare(op: str, a: JSON, b: JSON) -> bool:
    if op == "=~":
        return isinstance(a, str) and isinstance(b, str) and re.search(b, a) is not None
    cmp_op = _FILTER_OPS.get(op)
    if cmp_op is None:
        return False
    test = Compare(op=cmp_op, left=Const(value=a), right=Const(value=b))
    return eval_filter(test, None, lambda _path: MISSING) is True  # type error → false


def _holds(tree: _Bool, datum: Any) -> bool:
    match tree:
        case _All(parts=parts):
            return all(_holds(p, datum) for p in parts)
        case _AnyOf(parts=parts):
            return any(_holds(p, datum) for p in parts)
        case _Test(target=target, op=op, value=value):
            try:
                found = [m.value for m in target.find(datum)]
            except Exception:  # the library raises several unrelated types
                return False
            if op is None:
                return bool(found)
            return any(_compare(op, v, value) for v in found)
    raise AssertionError(f"unknown filter node {tree!r}")  # pragma: no cover


class _Filter:
    """``[?(…)]``: the children for which the boolean tree holds."""

    def __init__(self, jp: Any, tree: _Bool) -> None:
        self.jp = jp
        self.tree = tree

    def find(self, datum: Any) -> list[Any]:
        datum = self.jp.DatumInContext.wrap(datum)
        return [child for child in _children(self.jp, datum) if _holds(self.tree, child)]


class _Wildcard:
    """``[*]`` and ``.*``: every element of an array or member value of an object."""

    def __init__(self, jp: Any) -> None:
        self.jp = jp

    def find(self, datum: Any) -> list[Any]:
        return _children(self.jp, self.jp.DatumInContext.wrap(datum))


class _ListIndex:
    """``[i]`` / ``[i,j]``: elements of an array (negative from the end), nothing else."""

    def __init__(self, jp: Any, indices: tuple[int, ...]) -> None:
        self.jp = jp
        self.indices = indices

    def find(self, datum: Any) -> list[Any]:
        datum = self.jp.DatumInContext.wrap(datum)
        value = datum.value
        if not isinstance(value, list):
            return []
        return [
            self.jp.DatumInContext(value[i], path=self.jp.Index(i % len(value)), context=datum)
            for i in self.indices
            if -len(value) <= i < len(value)
        ]


def _adapt(node: Any, jp: Any, ext_filter: Any, filters: list[_Bool], used: set[int]) -> Any:
    """The replacement for ``node`` (children adapted in place; the tree is ours)."""
    if isinstance(node, ext_filter.Filter):
        exprs = node.expressions
        field: Any = getattr(getattr(exprs[0].target, "right", None), "fields", ()) if exprs else ()
        match = _PLACEHOLDER_RE.fullmatch(str(field[0])) if len(field) == 1 else None
        if match is not None and len(exprs) == 1:
            used.add(int(match.group(1)))
            return _Filter(jp, filters[int(match.group(1))])
        return node
    if isinstance(node, jp.Slice) and node.start is None and node.end is None and node.step is None:
        return _Wildcard(jp)
    if isinstance(node, jp.Fields) and node.fields == ("*",):
        return _Wildcard(jp)
    if isinstance(node, jp.Index):
        return _ListIndex(jp, tuple(node.indices))
    for attr in ("left", "right"):
        child = getattr(node, attr, None)
        if child is not None:
            setattr(node, attr, _adapt(child, jp, ext_filter, filters, used))
    return node


@functools.lru_cache(maxsize=128)
def compile_json_path(text: str) -> _Compiled | ItemsError:
    """Compile ``text`` once: filters are replaced by placeholders, parsed by
    ``_BodyParser``, and the library tree is adapted (see the module docstring)."""
    # imported lazily: jsonpath_ng is slow to import and only needed here
    jp = importlib.import_module("jsonpath_ng")
    ext = importlib.import_module("jsonpath_ng.ext")
    ext_filter = importlib.import_module("jsonpath_ng.ext.filter")
    try:
        filters: list[_Bool] = []
        pieces: list[str] = []
        pos = 0
        for start, body, end in _filter_spans(text):
            tokens = _body_tokens(text[body:end])
            filters.append(_BodyParser(tokens, functools.partial(_compile_atom, ext)).parse())
            pieces += [text[pos:start], f"[?(@.{_PLACEHOLDER.format(len(filters) - 1)})]"]
            pos = end + 1
        pieces.append(text[pos:])
        try:
            root = ext.parse("".join(pieces))
        except Exception as exc:  # the library raises several unrelated types
            raise _BadPath(_library_error(exc)) from None
        used: set[int] = set()
        root = _adapt(root, jp, ext_filter, filters, used)
        if len(used) != len(filters):
            raise _BadPath("filter in an unsupported position")
    except _BadPath as exc:
        return ItemsError(code="E1010", message=f"invalid json_path '{text}': {exc}")
    except RecursionError:
        return ItemsError(code="E1010", message=f"invalid json_path '{text}': nested too deeply")
    return _Compiled(root=root)


def check_json_path(text: str) -> ItemsError | None:
    """E1010 if ``text`` is not empty and does not compile (same compiler as ``select``)."""
    if not text.strip():
        return None
    compiled = compile_json_path(text.strip())
    return compiled if isinstance(compiled, ItemsError) else None


def apply_json_path(document: JSON, text: str) -> tuple[JSON, ...] | ItemsError:
    compiled = compile_json_path(text)
    if isinstance(compiled, ItemsError):
        return compiled
    try:
        values: tuple[JSON, ...] = tuple(m.value for m in compiled.root.find(document))
    except Exception as exc:  # the library raises several unrelated types
        return ItemsError(
            code="E6002",
            message=f"json_path '{text}' failed on the input document: {_library_error(exc)}",
        )
    return values


