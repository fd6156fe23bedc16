"""MapReduce work items: loading, selecting, naming and reporting them (spec 05).

Theory of operation
-------------------
The data path of a map phase is a chain of pure functions.  The interpreter supplies
text (the input file, or the stdout of the input command) and a UTC stamp; the rest is
decided here:

1. ``parse_input_document`` and ``parse_command_output`` turn the text into one JSON
   document (§5.2, §5.3).  Line-based command output already *is* the item list, so it
   is selected with ``apply_json_path=False``.
2. ``select`` runs the fixed pipeline json_path → filter → sort_by → distinct → offset →
   max_items (spec 04 §7.3) and returns the items together with the warnings the
   engine prints (W6001–W6003); ``select_items`` is the same without the warnings.
   Item indexes and ids are assigned on the final list by the caller.
3. ``item_variables`` binds one item for its agent (spec 03 §5.4).  Identifiers
   (``item_id``, ``agent_id``, ``job_id_for`` …, §2) are derived, never drawn.
4. When an agent ends, ``agent_result`` builds its §9 record; a failure is classified
   from a structured ``ItemFailure`` (``error_type``, ``error_signature``,
   ``manual_review_required``, §13).  ``map_variables`` binds the records for reduce.

``json_path`` is jsonpath-ng's extended dialect, compiled once per expression text
(``_compile_json_path``).  The compiled tree is adapted to the guaranteed subset of spec
04 §8.2 in three places: filters accept ``&&`` and ``||`` (the library knows only ``&``)
and compare with the rules of spec 04 §3 (the library truncates floats to ints and
raises on null); ``[*]`` and ``.*`` iterate array elements and object member values
alike; ``[i]`` indexes arrays only (the library indexes strings and raises on a
negative index past the start).  Nothing here raises on an odd document: a failure is
an ``ItemsError`` value, and a type error inside a filter makes it false for that item.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, Final, Literal, TypeAlias

import attrs

from prodigy_core.expr_parse import CompareOp
from prodigy_core.expressions import (
    Compare,
    Const,
    ExprError,
    distinct_items,
    eval_filter,
    parse_filter,
    parse_sort_by,
    sort_items,
)
from prodigy_core.interpolate import Var, lookup
from prodigy_core.json_values import JSON, MISSING, PATH_RE, Missing, dumps_compact
from prodigy_core.model import MapSpec

__all__ = [
    "AgentStatus",
    "FailureKind",
    "ItemFailure",
    "ItemsError",
    "ItemsWarning",
    "Selection",
    "agent_branch",
    "agent_id",
    "agent_result",
    "agent_worktree_name",
    "check_json_path",
    "duration_json",
    "error_signature",
    "error_type",
    "error_type_name",
    "item_id",
    "item_variables",
    "job_id_for",
    "manual_review_required",
    "map_variables",
    "merge_conflict_failure",
    "parse_command_output",
    "parse_input_document",
    "reprocess_job_id",
    "select",
    "select_items",
    "success_rate",
]


@attrs.frozen(kw_only=True)
class ItemsError:
    """Loading or selecting items failed: E6002 (input), E1009 (filter, sort_by,
    distinct), E1010 (json_path), E2001 (unresolved ``${name}`` in a filter)."""

    code: str
    message: str
    line: int | None = None
    column: int | None = None


@attrs.frozen(kw_only=True)
class ItemsWarning:
    """A warning while selecting items: W6001 (json_path ignored for line input),
    W6002 (filter type error), W6003 (json_path matched nothing)."""

    code: str
    message: str


@attrs.frozen(kw_only=True)
class Selection:
    """The final item list of §5.4 and the warnings produced on the way."""

    items: tuple[JSON, ...]
    warnings: tuple[ItemsWarning, ...] = ()


# --------------------------------------------------------------------------- input text


@attrs.frozen(kw_only=True)
class _Unparsed:
    message: str
    line: int
    column: int


class _BadConstant(ValueError):
    pass


def _reject_constant(name: str) -> JSON:
    raise _BadConstant(name)


def _position(text: str, offset: int) -> tuple[int, int]:
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


def _loads(text: str) -> JSON | _Unparsed:
    """Strict JSON (no NaN/Infinity); a failure carries line and column (1-based)."""
    try:
        value: JSON = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        return _Unparsed(message=exc.msg, line=exc.lineno, column=exc.colno)
    except _BadConstant as exc:
        line, column = _position(text, max(text.find(str(exc)), 0))
        return _Unparsed(message=f"'{exc}' is not valid JSON", line=line, column=column)
    except RecursionError:
        return _Unparsed(message="JSON nested too deeply", line=1, column=1)
    return value


def _e6002(name: str, failure: _Unparsed, line: int) -> ItemsError:
    return ItemsError(
        code="E6002",
        message=(
            f"map input not parseable: {name}: {failure.message} "
            f"(line {line}, column {failure.column})"
        ),
        line=line,
        column=failure.column,
    )


def parse_input_document(text: str, name: str) -> JSON | ItemsError:
    """The JSON document of a map input file (spec 05 §5.2).

    One JSON document; if that fails and ``name`` ends with ``.jsonl`` or ``.ndjson``, the
    list of the non-empty lines parsed one by one.  Otherwise E6002 with line and column
    (of the failing line, for line-delimited files).  A leading BOM is ignored.
    """
    text = text.removeprefix("\ufeff")
    whole = _loads(text)
    if not isinstance(whole, _Unparsed):
        return whole
    if not name.lower().endswith((".jsonl", ".ndjson")):
        return _e6002(name, whole, whole.line)
    values: list[JSON] = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        value = _loads(line)
        if isinstance(value, _Unparsed):
            return _e6002(name, value, number)
        values.append(value)
    return values


def parse_command_output(stdout: str) -> tuple[JSON, bool]:
    """The document of a map input command's stdout and whether json_path applies (§5.3).

    The whole stdout as one JSON document → ``(document, True)``; otherwise one item per
    non-empty stripped line (JSON if it starts with ``{``/``[`` and parses, else the
    string) → ``(items, False)``.
    """
    if stdout.strip():
        whole = _loads(stdout)
        if not isinstance(whole, _Unparsed):
            return whole, True
    items: list[JSON] = []
    for raw in stdout.split("\n"):
        line = raw.strip()
        if not line:
            continue
        if line[0] in "{[":
            value = _loads(line)
            if not isinstance(value, _Unparsed):
                items.append(value)
                continue
        items.append(line)
    return items, False


# --------------------------------------------------------------------------- json_path


@attrs.frozen(kw_only=True)
class _Test:
    """One comparison of a filter: ``target op value`` (``op`` None tests existence)."""

    target: Any
    op: str | None
    value: JSON


@attrs.frozen(kw_only=True)
class _All:
    parts: tuple[_Bool, ...]


@attrs.frozen(kw_only=True)
class _AnyOf:
    parts: tuple[_Bool, ...]


_Bool: TypeAlias = _Test | _All | _AnyOf


@attrs.frozen(kw_only=True)
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
def _compile_json_path(text: str) -> _Compiled | ItemsError:
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
    compiled = _compile_json_path(text.strip())
    return compiled if isinstance(compiled, ItemsError) else None


def _apply_json_path(document: JSON, text: str) -> tuple[JSON, ...] | ItemsError:
    compiled = _compile_json_path(text)
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


# --------------------------------------------------------------------------- pipeline


def _blank(text: str | None) -> bool:
    return text is None or not text.strip()


def _e1009(kind: str, text: str, err: ExprError) -> ItemsError:
    where = f" (at column {err.column} of the expression)" if err.column > 0 else ""
    return ItemsError(
        code="E1009",
        message=f"invalid {kind} expression '{text}': {err.message}{where}",
        column=err.column or None,
    )


def _apply_filter(
    items: tuple[JSON, ...], text: str, variables: Mapping[str, Var]
) -> tuple[tuple[JSON, ...], ItemsWarning | None] | ItemsError:
    expr = parse_filter(text)
    if isinstance(expr, ExprError):
        return _e1009("filter", text, expr)

    def resolve(path: str) -> JSON | Missing:
        var = lookup(path, variables)
        return MISSING if var is None else var.value

    kept: list[JSON] = []
    failed = 0
    first = ""
    for position, item in enumerate(items):
        result = eval_filter(expr, item, resolve)
        if isinstance(result, ExprError):
            if result.code == "E2001":
                return ItemsError(code="E2001", message=result.message)
            failed += 1
            first = first or f"first at position {position}: {result.message}"
        elif result:
            kept.append(item)
    warning = None
    if failed:
        warning = ItemsWarning(
            code="W6002",
            message=f"filter '{text}' is false for {failed} item(s) after a type error; {first}",
        )
    return tuple(kept), warning


def select(
    document: JSON,
    spec: MapSpec,
    *,
    apply_json_path: bool = True,
    variables: Mapping[str, Var] | None = None,
) -> Selection | ItemsError:
    """The final item list of spec 05 §5.4, with warnings.

    ``variables`` are those at the end of setup, for ``${name}`` in ``filter``.  Without
    a json_path (or for line input) an array document yields its elements and any other
    value one item (spec 04 §8.3).
    """
    warnings: list[ItemsWarning] = []
    path = (spec.json_path or "").strip()
    items: tuple[JSON, ...]
    if path and apply_json_path:
        found = _apply_json_path(document, path)
        if isinstance(found, ItemsError):
            return found
        if not found:
            warnings.append(
                ItemsWarning(code="W6003", message=f"json_path '{path}' matched nothing")
            )
        items = found
    else:
        if path:
            warnings.append(
                ItemsWarning(code="W6001", message=f"json_path '{path}' ignored for line input")
            )
        items = tuple(document) if isinstance(document, list) else (document,)
    if not _blank(spec.filter):
        assert spec.filter is not None
        filtered = _apply_filter(items, spec.filter, variables or {})
        if isinstance(filtered, ItemsError):
            return filtered
        items, warning = filtered
        if warning is not None:
            warnings.append(warning)
    if not _blank(spec.sort_by):
        assert spec.sort_by is not None
        keys = parse_sort_by(spec.sort_by)
        if isinstance(keys, ExprError):
            return _e1009("sort_by", spec.sort_by, keys)
        items = sort_items(items, keys)
    if not _blank(spec.distinct):
        assert spec.distinct is not None
        field = spec.distinct.strip()
        if not PATH_RE.fullmatch(field):
            return ItemsError(code="E1009", message=f"invalid distinct field path '{field}'")
        items = distinct_items(items, field)
    items = items[max(spec.offset or 0, 0) :]
    if spec.max_items is not None:
        items = items[: max(spec.max_items, 0)]
    return Selection(items=items, warnings=tuple(warnings))


def select_items(
    document: JSON,
    spec: MapSpec,
    *,
    apply_json_path: bool = True,
    variables: Mapping[str, Var] | None = None,
) -> tuple[JSON, ...] | ItemsError:
    """``select`` without the warnings."""
    result = select(document, spec, apply_json_path=apply_json_path, variables=variables)
    return result if isinstance(result, ItemsError) else result.items


# --------------------------------------------------------------------------- variables


def item_variables(
    item: JSON,
    *,
    index: int,
    total: int,
    item_id: str,
    item_file: str,
    agent_id: str,
    job_id: str,
) -> dict[str, Var]:
    """The agent variables of one item (spec 03 §5.4).

    ``item`` is bound to the item itself, so ``${item.a.b}`` walks it and ``${item}``
    renders with spec 03 §4.1.  The one case where that rendering is not compact JSON —
    an array of strings, which §4.1 joins with ", " — binds ``item`` to the JSON text and
    each ``item[i]`` / ``item[-i]`` explicitly.  Item data is untrusted (shell-escaped).
    """
    text = dumps_compact(item)
    out: dict[str, Var] = {}
    if isinstance(item, list) and all(isinstance(e, str) for e in item):
        out["item"] = Var(value=text, trusted=False)
        for i, element in enumerate(item):
            out[f"item[{i}]"] = Var(value=element, trusted=False)
            out[f"item[{i - len(item)}]"] = Var(value=element, trusted=False)
    else:
        out["item"] = Var(value=item, trusted=False)
    out["item_json"] = Var(value=text, trusted=False)
    out["item_id"] = Var(value=item_id)
    out["item_index"] = Var(value=index)
    out["item_total"] = Var(value=total)
    out["item_file"] = Var(value=item_file)
    out["agent_id"] = Var(value=agent_id)
    out["job.id"] = Var(value=job_id)
    return out


def success_rate(successful: int, total: int) -> int | float:
    """``successful / total × 100`` to 2 decimals, an int when whole, 0 for no items."""
    if total <= 0:
        return 0
    rate = round(successful * 100 / total, 2)
    return int(rate) if rate == int(rate) else rate


def map_variables(
    results: Sequence[Mapping[str, JSON]],
    results_file: str,
    *,
    total: int | None = None,
    duration_secs: float | None = None,
    job_id: str | None = None,
) -> dict[str, Var]:
    """The reduce variables of spec 03 §5.5 from the agent results (§9).

    ``map.results`` is the compact JSON text of the results ordered by ``item_index``
    (untrusted).  ``total`` defaults to the number of results; ``map.duration`` and
    ``job.id`` are bound when given.
    """
    ordered = sorted(results, key=lambda r: _index_key(r.get("item_index")))
    successful = sum(1 for r in ordered if r.get("status") == "Success")
    count = len(ordered) if total is None else total
    text = dumps_compact([dict(r) for r in ordered])
    cost = 0.0
    for r in ordered:
        value = r.get("cost_usd")
        if isinstance(value, int | float) and not isinstance(value, bool):
            cost += value
    out = {
        "map.total": Var(value=count),
        "map.successful": Var(value=successful),
        "map.failed": Var(value=len(ordered) - successful),
        "map.success_rate": Var(value=success_rate(successful, count)),
        "map.results": Var(value=text, trusted=False),
        "map.results_json": Var(value=text, trusted=False),
        "map.results_file": Var(value=results_file),
        "map.cost_usd": Var(value=cost),
    }
    if duration_secs is not None:
        out["map.duration"] = Var(value=float(duration_secs))
    if job_id is not None:
        out["job.id"] = Var(value=job_id)
    return out


def _index_key(value: JSON | None) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return (0, value)
    return (1, 0)


# --------------------------------------------------------------------------- identifiers

_STAMP_RE: Final = re.compile(r"[0-9]{8}_[0-9]{6}")


def item_id(index: int) -> str:
    """``item_<index>`` (spec 05 §2)."""
    return f"item_{index}"


def agent_id(job_id: str, index: int, attempt: int = 1) -> str:
    """``<job_id>_agent_<index>``, with ``_attempt_<n>`` for attempts n ≥ 2."""
    if attempt < 1:
        raise ValueError(f"attempt must be >= 1, got {attempt}")
    base = f"{job_id}_agent_{index}"
    return base if attempt == 1 else f"{base}_attempt_{attempt}"


def agent_branch(agent_id: str) -> str:
    """``prodigy-mapreduce-agent-<agent_id>``."""
    return f"prodigy-mapreduce-agent-{agent_id}"


def agent_worktree_name(agent_id: str) -> str:
    """``mapreduce-agent-<agent_id>`` (spec 06 §5)."""
    return f"mapreduce-agent-{agent_id}"


def job_id_for(utc_stamp: str, existing: Collection[str]) -> str:
    """``mapreduce-<YYYYMMDD_HHMMSS>``, or the first free ``-2``, ``-3``, … variant."""
    if not _STAMP_RE.fullmatch(utc_stamp):
        raise ValueError(f"expected a YYYYMMDD_HHMMSS stamp, got {utc_stamp!r}")
    base = f"mapreduce-{utc_stamp}"
    if base not in existing:
        return base
    n = 2
    while f"{base}-{n}" in existing:
        n += 1
    return f"{base}-{n}"


def reprocess_job_id(job_id: str, unix_seconds: int) -> str:
    """``<job_id>-reprocess-<unix seconds>`` (DLQ retry job, §2)."""
    return f"{job_id}-reprocess-{unix_seconds}"


# --------------------------------------------------------------------------- DLQ

FailureKind: TypeAlias = Literal[
    "timeout",
    "command_failed",
    "commit_required",
    "merge_conflict",
    "worktree",
    "validation",
    "resource",
    "unknown",
]


@attrs.frozen(kw_only=True)
class ItemFailure:
    """The structured cause of an item failure (spec 05 §13.2).

    ``exit_code`` is meaningful for ``command_failed`` (``-1`` when unknown);
    ``conflicting_files`` for ``merge_conflict``.
    """

    kind: FailureKind
    message: str = ""
    exit_code: int | None = None
    conflicting_files: tuple[str, ...] = ()


_TYPE_NAMES: Final[Mapping[FailureKind, str]] = {
    "timeout": "Timeout",
    "command_failed": "CommandFailed",
    "commit_required": "CommitValidationFailed",
    "merge_conflict": "MergeConflict",
    "worktree": "WorktreeError",
    "validation": "ValidationFailed",
    "resource": "ResourceExhausted",
    "unknown": "Unknown",
}
_HEX_RUN_RE: Final = re.compile(r"(?<![0-9a-z])[0-9a-f]{7,}(?![0-9a-z])")
_DIGITS_RE: Final = re.compile(r"[0-9]+")
_MANUAL_RE: Final = re.compile(r"permission denied|access denied|corrupt", re.IGNORECASE)


def merge_conflict_failure(conflicting_files: Sequence[str]) -> ItemFailure:
    """The failure of a conflicting merge, message ``merge conflict in: a, b`` (§8.2)."""
    return ItemFailure(
        kind="merge_conflict",
        message="merge conflict in: " + ", ".join(conflicting_files),
        conflicting_files=tuple(conflicting_files),
    )


def error_type(cause: ItemFailure) -> JSON:
    """The DLQ ``error_type`` JSON of a cause: ``"Timeout"``,
    ``{"CommandFailed": {"exit_code": n}}``, ``"MergeConflict"``, …"""
    if cause.kind == "command_failed":
        code = -1 if cause.exit_code is None else cause.exit_code
        return {"CommandFailed": {"exit_code": code}}
    return _TYPE_NAMES[cause.kind]


def error_type_name(error_type_value: JSON) -> str:
    """The name of an ``error_type`` JSON value (``"CommandFailed"`` for the object form)."""
    if isinstance(error_type_value, str):
        return error_type_value
    if isinstance(error_type_value, dict) and len(error_type_value) == 1:
        return next(iter(error_type_value))
    return "Unknown"


def error_signature(type_name: str, message: str) -> str:
    """First 16 hex digits of SHA-256 of ``<type>: <normalised first line>`` (§13.3).

    The first line is lower-cased; runs of 7+ hex characters (standing alone, so SHAs
    but not words such as "succeeded") and then runs of digits become ``#``;
    whitespace runs collapse to one space and the ends are trimmed.
    """
    first = message.split("\n", 1)[0].lower()
    first = _DIGITS_RE.sub("#", _HEX_RUN_RE.sub("#", first))
    first = " ".join(first.split())
    return hashlib.sha256(f"{type_name}: {first}".encode()).hexdigest()[:16]


def manual_review_required(type_name: str, message: str) -> bool:
    """True for ``ValidationFailed`` and messages naming permission/access/corruption (§13.4)."""
    return type_name == "ValidationFailed" or _MANUAL_RE.search(message) is not None


# --------------------------------------------------------------------------- agent result

AgentStatus: TypeAlias = Literal["success", "failed", "timeout"]


def duration_json(seconds: float) -> dict[str, JSON]:
    """``{"secs": s, "nanos": n}`` (the original's duration form); negative → zero."""
    total = max(round(seconds * 1_000_000_000), 0)
    secs, nanos = divmod(total, 1_000_000_000)
    return {"secs": secs, "nanos": nanos}


def agent_result(
    *,
    item_id: str,
    item_index: int,
    status: AgentStatus,
    duration_secs: float,
    error: str | None = None,
    output: str = "",
    commits: Sequence[str] = (),
    files_modified: Sequence[str] = (),
    worktree_path: str | None = None,
    branch_name: str | None = None,
    worktree_session_id: str | None = None,
    json_log_location: str | None = None,
    cost_usd: float | None = None,
    attempts: int = 1,
    uncommitted_files: Sequence[str] = (),
) -> dict[str, JSON]:
    """The agent result object of spec 05 §9, optional fields omitted when empty.

    ``status`` becomes ``"Success"``, ``{"Failed": error}`` or ``"Timeout"``; ``error``
    is kept for failed and timed-out results only.
    """
    status_json: JSON
    if status == "success":
        status_json = "Success"
    elif status == "failed":
        status_json = {"Failed": error or ""}
    else:
        status_json = "Timeout"
    result: dict[str, JSON] = {"item_id": item_id, "item_index": item_index, "status": status_json}
    optional: list[tuple[str, JSON]] = [
        ("output", output),
        ("commits", list(commits)),
        ("files_modified", list(files_modified)),
        ("duration", duration_json(duration_secs)),
        ("error", error if status != "success" else None),
        ("worktree_path", worktree_path),
        ("branch_name", branch_name),
        ("worktree_session_id", worktree_session_id),
        ("json_log_location", json_log_location),
        ("cost_usd", cost_usd),
        ("attempts", attempts),
        ("uncommitted_files", list(uncommitted_files)),
    ]
    for key, value in optional:
        if value is not None and value != "" and value != []:
            result[key] = value
    return result
