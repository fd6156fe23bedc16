"""JSON values: the type, default rendering, and path walking shared by every language.

Theory of operation
-------------------
Every variable, work item, capture and expression operand is a plain JSON value built
from ``None``, ``bool``, ``int``, ``float``, ``str``, ``list`` and ``dict``.  Three pure
operations on such values are shared by interpolation (spec 03) and expressions
(spec 04), so they live here and nowhere else:

* ``render_value`` — the default text of a value (spec 03 §4.1);
* ``parse_path`` / ``walk`` — the path syntax ``a.b[0].c`` (spec 03 §1.1) and the walk
  through a JSON value (spec 03 §2.1 step 2);
* ``MISSING`` — the sentinel for "does not resolve", distinct from JSON ``null``.

Python's ``bool`` is a subclass of ``int``; every type test here checks ``bool`` first.
"""

from __future__ import annotations

import enum
import json
import re
from typing import Final, Literal, TypeAlias

JSON: TypeAlias = bool | int | float | str | list["JSON"] | dict[str, "JSON"] | None


class Missing(enum.Enum):
    """Type of the ``MISSING`` sentinel: a path that does not resolve (not JSON null)."""

    MISSING = "MISSING"


MISSING: Final = Missing.MISSING

# A path segment after the first: ``.name`` or ``[integer]``.
_FIRST_SEGMENT = r"[A-Za-z0-9_-]+"
_NEXT_SEGMENT = r"\.[A-Za-z0-9_-]+|\[-?[0-9]+\]"
PATH_RE: Final = re.compile(rf"{_FIRST_SEGMENT}(?:{_NEXT_SEGMENT})*")
_NEXT_SEGMENT_RE: Final = re.compile(r"\.([A-Za-z0-9_-]+)|\[(-?[0-9]+)\]")

Segment: TypeAlias = str | int
"""``.name`` is a ``str`` segment, ``[i]`` an ``int`` segment."""


def parse_path(path: str) -> tuple[tuple[int, Segment], ...] | None:
    """Split ``path`` into ``(end_offset, segment)`` pairs; ``None`` if it is not a path.

    The first pair is the root name (always a ``str``).  ``end_offset`` is where that
    segment ends in ``path``, so ``path[:end_offset]`` is the textual prefix.
    """
    first = re.match(_FIRST_SEGMENT, path)
    if first is None:
        return None
    parts: list[tuple[int, Segment]] = [(first.end(), first.group())]
    pos = first.end()
    while pos < len(path):
        m = _NEXT_SEGMENT_RE.match(path, pos)
        if m is None:
            return None
        name, index = m.group(1), m.group(2)
        parts.append((m.end(), name if name is not None else int(index)))
        pos = m.end()
    return tuple(parts)


def walk(value: JSON, segments: tuple[Segment, ...]) -> JSON | Missing:
    """Walk ``segments`` through ``value`` (spec 03 §2.1); ``MISSING`` if it fails."""
    current: JSON = value
    for seg in segments:
        if isinstance(seg, int):
            if not isinstance(current, list):
                return MISSING
            index = seg
        elif isinstance(current, dict):
            if seg not in current:
                return MISSING
            current = current[seg]
            continue
        elif isinstance(current, list) and seg.isdigit():
            index = int(seg)
        else:
            return MISSING
        if index < 0:
            index += len(current)
        if not 0 <= index < len(current):
            return MISSING
        current = current[index]
    return current


def walk_path(value: JSON, path: str) -> JSON | Missing:
    """Walk a whole textual path (all segments, including the first) through ``value``."""
    parts = parse_path(path)
    if parts is None:
        return MISSING
    return walk(value, tuple(seg for _, seg in parts))


def dumps_compact(value: JSON) -> str:
    """Compact JSON: no spaces, member order preserved, non-ASCII as-is."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def render_value(value: JSON, *, git_list: bool = False) -> str:
    """Default rendering of a resolved value (spec 03 §4.1).

    An empty array counts as "all strings" and renders as the empty string.
    """
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(e, str) for e in value):
        return (" " if git_list else ", ").join(e for e in value if isinstance(e, str))
    return dumps_compact(value)


TypeName = Literal["null", "boolean", "number", "string", "array", "object"]


def type_name(value: JSON) -> TypeName:
    """The JSON type name used in messages ("cannot compare string with boolean")."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"
