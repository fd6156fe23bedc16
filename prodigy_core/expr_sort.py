"""``sort_by`` and ``distinct`` for work items (spec 04 §6, §7.1).

Theory of operation
-------------------
``parse_sort_by`` turns ``"a DESC, b.c ASC NULLS FIRST"`` into ``SortKey`` values.
``sort_items`` sorts with one stable pass per key, last key first (the classic
least-significant-key-first technique): each pass orders the non-null values (stable, so
``reverse=True`` keeps equal items in place) and then puts the null/missing items, in
their current order, first or last.  Because every pass is stable, the result is ordered
by the first key, ties broken by the second, and so on, with complete ties in original
order.

``distinct_items`` keeps the first item of each value of a field under the equality of
spec 04 §3.3.  That equality is not transitive (``"1" == 1`` and ``1 == "1.0"`` but
``"1" != "1.0"``), so "already seen" is checked against every kept value; hash indexes
per kind of value keep that linear in the number of items.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Hashable, Sequence
from typing import Final

import attrs

from prodigy_core.expr_eval import item_field, numeric_value
from prodigy_core.expr_parse import ExprError
from prodigy_core.json_values import JSON, MISSING, PATH_RE, dumps_compact
from prodigy_core.reprs import shows_fields, value_class

__all__ = ["SortKey", "distinct_items", "parse_sort_by", "sort_items"]


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class SortKey:
    """One ``sort_by`` key: a field path, its direction and where nulls go."""

    path: str
    descending: bool = False
    nulls_first: bool = False


_DIRECTIONS: Final = {"ASC": False, "ASCENDING": False, "DESC": True, "DESCENDING": True}
_WORD_RE: Final = re.compile(r"\S+")


def parse_sort_by(text: str) -> tuple[SortKey, ...] | ExprError:
    """Parse ``path [ASC|DESC] [NULLS FIRST|LAST], …`` (keywords in any case); E1009 on error."""
    keys: list[SortKey] = []
    offset = 0
    for part in text.split(","):
        words = [(m.group(), offset + m.start() + 1) for m in _WORD_RE.finditer(part)]
        offset += len(part) + 1
        if not words:
            return ExprError(code="E1009", message="empty sort key in sort_by", column=offset)
        path, column = words[0]
        if not PATH_RE.fullmatch(path):
            return ExprError(code="E1009", message=f"invalid sort path '{path}'", column=column)
        rest = [(w.upper(), c) for w, c in words[1:]]
        descending = False
        if rest and rest[0][0] in _DIRECTIONS:
            descending = _DIRECTIONS[rest.pop(0)[0]]
        nulls_first = False
        if len(rest) >= 2 and rest[0][0] == "NULLS" and rest[1][0] in ("FIRST", "LAST"):
            nulls_first = rest[1][0] == "FIRST"
            rest = rest[2:]
        if rest:
            word, col = rest[0]
            return ExprError(
                code="E1009",
                message=f"unexpected '{word}' in sort key '{part.strip()}' "
                "(expected ASC, DESC, NULLS FIRST or NULLS LAST)",
                column=col,
            )
        keys.append(SortKey(path=path, descending=descending, nulls_first=nulls_first))
    return tuple(keys)


def _rank(value: JSON) -> int:
    if isinstance(value, bool):
        return 0
    if isinstance(value, int | float):
        return 1
    if isinstance(value, str):
        return 2
    if isinstance(value, list):
        return 3
    if isinstance(value, dict):
        return 4
    return -1  # null, only inside arrays


def _cmp(a: JSON, b: JSON) -> int:
    """Total order of spec 04 §6.2 (arrays element-wise, objects by canonical JSON)."""
    ra, rb = _rank(a), _rank(b)
    if ra != rb:
        return -1 if ra < rb else 1
    if isinstance(a, list) and isinstance(b, list):
        for x, y in zip(a, b, strict=False):
            c = _cmp(x, y)
            if c:
                return c
        return (len(a) > len(b)) - (len(a) < len(b))
    if isinstance(a, dict) and isinstance(b, dict):
        ka = json_sort_text(a)
        kb = json_sort_text(b)
        return (ka > kb) - (ka < kb)
    if isinstance(a, str) and isinstance(b, str):
        return (a > b) - (a < b)
    if isinstance(a, int | float) and isinstance(b, int | float):  # numbers or booleans
        return (a > b) - (a < b)
    return 0  # both null


def json_sort_text(value: JSON) -> str:
    """Canonical text of a value (object keys sorted) used to order objects."""
    if isinstance(value, dict):
        inner = ",".join(dumps_compact(k) + ":" + json_sort_text(value[k]) for k in sorted(value))
        return "{" + inner + "}"
    if isinstance(value, list):
        return "[" + ",".join(json_sort_text(v) for v in value) + "]"
    return dumps_compact(value)


def _cmp_first(p: tuple[JSON, JSON], q: tuple[JSON, JSON]) -> int:
    return _cmp(p[0], q[0])


def sort_items(items: Sequence[JSON], keys: tuple[SortKey, ...]) -> tuple[JSON, ...]:
    """Stable multi-key sort of work items (spec 04 §6)."""
    result = list(items)
    for key in reversed(keys):
        present: list[tuple[JSON, JSON]] = []
        nulls: list[JSON] = []
        for item in result:
            value = item_field(item, key.path)
            if value is None or value is MISSING:
                nulls.append(item)
            else:
                present.append((value, item))
        present.sort(key=functools.cmp_to_key(_cmp_first), reverse=key.descending)
        ordered = [item for _, item in present]
        result = nulls + ordered if key.nulls_first else ordered + nulls
    return tuple(result)


def _canonical(value: JSON) -> Hashable:
    """Hashable form for deep equality (bools distinct from numbers, 1 == 1.0)."""
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, int | float):
        return ("n", value)
    if isinstance(value, str):
        return ("s", value)
    if isinstance(value, list):
        return ("a", tuple(_canonical(v) for v in value))
    if isinstance(value, dict):
        return ("o", frozenset((k, _canonical(v)) for k, v in value.items()))
    return ("z",)


@shows_fields
@attrs.define(repr=False)
class _Seen:
    """Kept values, indexed so that ``equal(kept, candidate)`` is a few set lookups."""

    exact: set[Hashable] = attrs.Factory(set)
    number_values: set[int | float] = attrs.Factory(set)  # values of kept numbers only
    string_numbers: set[int | float] = attrs.Factory(set)  # values of kept numeric strings
    bools: set[bool] = attrs.Factory(set)  # kept booleans
    string_bools: set[bool] = attrs.Factory(set)  # kept strings "true"/"false" (any case)

    def matches(self, value: JSON) -> bool:
        if _canonical(value) in self.exact:
            return True
        if isinstance(value, bool):
            return value in self.string_bools
        if isinstance(value, int | float):
            return value in self.string_numbers
        if isinstance(value, str):
            num = numeric_value(value)
            if num is not None and num in self.number_values:
                return True
            flag = _bool_text(value)
            return flag is not None and flag in self.bools
        return False

    def add(self, value: JSON) -> None:
        self.exact.add(_canonical(value))
        if isinstance(value, bool):
            self.bools.add(value)
        elif isinstance(value, int | float):
            self.number_values.add(value)
        elif isinstance(value, str):
            num = numeric_value(value)
            if num is not None:
                self.string_numbers.add(num)
            flag = _bool_text(value)
            if flag is not None:
                self.string_bools.add(flag)


def _bool_text(value: str) -> bool | None:
    text = value.strip().lower()
    return True if text == "true" else (False if text == "false" else None)


def distinct_items(items: Sequence[JSON], path: str) -> tuple[JSON, ...]:
    """Keep the first item for each distinct value of field ``path`` (spec 04 §7.1)."""
    seen = _Seen()
    kept: list[JSON] = []
    for item in items:
        found = item_field(item, path)
        value: JSON = None if found is MISSING else found
        if seen.matches(value):
            continue
        seen.add(value)
        kept.append(item)
    return tuple(kept)
