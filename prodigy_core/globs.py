"""Path globs for ``commit_config.include_files``/``exclude_files``, ``outputs`` and ``batch``.

Patterns are matched against repository-relative paths written with ``/``
(spec 02 §12.3, §13):

- ``*`` matches any run of characters except ``/``; ``?`` one character except ``/``;
  ``[abc]``/``[!abc]`` a character class; ``**`` any run including ``/`` (``**/``
  also matches nothing, so ``**/x`` matches ``x``).
- A pattern without ``/`` matches the file name in any directory (``*.md`` matches
  ``docs/a.md``).  A leading ``/`` anchors it at the repository root instead.
- A pattern also matches every path below a directory it matches (``build`` and
  ``build/`` match ``build/x.o``), as in ``.gitignore``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import cache


@cache
def _compile(pattern: str, *, below: bool = True) -> re.Pattern[str]:
    out: list[str] = []
    i = 0
    n = len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            if pattern.startswith("**", i):
                i += 2
                if i < n and pattern[i] == "/":
                    out.append("(?:.*/)?")
                    i += 1
                else:
                    out.append(".*")
                continue
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = pattern.find("]", i + 2 if pattern.startswith("[!", i) else i + 1)
            if end < 0:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1:end]
                negate = body.startswith("!")
                if negate:
                    body = body[1:]
                body = body.replace("\\", "\\\\").replace("^", "\\^")
                out.append(f"[^/{body}]" if negate else f"[{body}]")
                i = end
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out) + (r"(?:/.*)?\Z" if below else r"\Z"), re.DOTALL)


def path_matches(pattern: str, path: str) -> bool:
    """Does the repository-relative ``path`` match the glob ``pattern``?"""
    pattern = pattern.strip()
    if not pattern:
        return False
    pattern = pattern.removeprefix("./")
    if pattern.endswith("/"):
        pattern = pattern.rstrip("/")
    if pattern.startswith("/"):
        return bool(_compile(pattern.lstrip("/")).match(path))
    if "/" not in pattern:
        parts = path.split("/")
        return any(_compile(pattern).match("/".join(parts[i:])) for i in range(len(parts)))
    return bool(_compile(pattern).match(path))


def file_matches(pattern: str, path: str) -> bool:
    """Does the file ``path`` match ``pattern`` as ``prodigy batch`` reads it (spec 08 §2.3)?

    A pattern without ``/`` matches the file name in any directory; a pattern with ``/``
    matches the whole relative path (a leading ``./`` or ``/`` is ignored), ``**`` matching
    any number of directories.  Unlike ``path_matches`` there is no directory rule: ``src/*``
    matches ``src/a.py`` but not ``src/lib/b.py``.
    """
    if not pattern:
        return False
    if "/" not in pattern:
        return bool(_compile(pattern, below=False).match(path.rsplit("/", 1)[-1]))
    pattern = pattern.removeprefix("./").lstrip("/")
    return bool(_compile(pattern, below=False).match(path))


def select_paths(
    paths: Iterable[str], include: Iterable[str] = (), exclude: Iterable[str] = ()
) -> tuple[str, ...]:
    """The paths kept by ``include_files`` (all when empty) minus ``exclude_files``; sorted."""
    inc = tuple(include)
    exc = tuple(exclude)
    kept = {
        p for p in paths
        if (not inc or any(path_matches(g, p) for g in inc))
        and not any(path_matches(g, p) for g in exc)
    }
    return tuple(sorted(kept))
