"""``$.path`` locations shared by the loader (which records positions) and the parser.

Both sides build paths with these two functions so that a path computed while
validating always finds the position the loader recorded (spec 01 §8.1).
"""

from __future__ import annotations

import re

_PLAIN_KEY = re.compile(r"[A-Za-z0-9_\-]+")
_LAST_SEGMENT = re.compile(r"(\.[A-Za-z0-9_\-]+|\[\d+\]|\['(?:[^'\\]|\\.)*'\])$")


def child(path: str, key: object) -> str:
    """The path of the value stored under ``key`` in the mapping at ``path``."""
    text = key if isinstance(key, str) else _scalar_text(key)
    if _PLAIN_KEY.fullmatch(text):
        return f"{path}.{text}"
    escaped = text.replace("\\", "\\\\").replace("'", "\\'")
    return f"{path}['{escaped}']"


def index(path: str, i: int) -> str:
    """The path of element ``i`` of the list at ``path``."""
    return f"{path}[{i}]"


def parent(path: str) -> str | None:
    """The enclosing path, or ``None`` for the root ``$``."""
    match = _LAST_SEGMENT.search(path)
    if match is None or match.start() == 0:
        return None
    return path[: match.start()]


def _scalar_text(key: object) -> str:
    if key is None:
        return "null"
    if isinstance(key, bool):
        return "true" if key else "false"
    return str(key)
