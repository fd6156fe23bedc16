"""Load-time checks of expressions: ``when``/``filter``/``sort_by``/``distinct`` (E1009)
and ``json_path`` (E1010, W1010), spec 04."""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable

from prodigy_core import expressions
from prodigy_core.parse.context import Ctx

_FIELD_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*(?:\.[A-Za-z0-9_\-]+|\[-?\d+\])*")
_PARSERS: dict[str, Callable[[str], object]] = {
    "when": expressions.parse_when,
    "filter": expressions.parse_filter,
    "sort_by": expressions.parse_sort_by,
}


def check_expression(ctx: Ctx, kind: str, text: str, path: str) -> None:
    """Report E1009 when ``text`` (a ``when``/``filter``/``sort_by``) does not parse."""
    result = _PARSERS[kind](text)
    if isinstance(result, expressions.ExprError):
        column = result.column
        at = ctx.locate(path, text, column - 1) if column > 0 else ctx.pos(path)
        suffix = f" (at column {column} of the expression)" if column > 0 else ""
        ctx.error("E1009", f"invalid {kind} expression: {result.message}{suffix}", path, at=at)


def check_distinct(ctx: Ctx, text: str, path: str) -> None:
    candidate = text.strip()
    if candidate.startswith("item."):
        candidate = candidate[len("item.") :]
    if not _FIELD_PATH.fullmatch(candidate):
        ctx.error("E1009", f"invalid distinct field path {text!r}", path)


def check_json_path(ctx: Ctx, text: str, path: str) -> None:
    """E1010 when ``text`` does not compile with ``jsonpath_ng.ext``; W1010 outside the subset."""
    if not text.strip():
        return
    # the same compiler the run uses (``&&``/``||`` in filters included, spec 04 §8.2);
    # imported lazily: jsonpath_ng is slow to import and only needed here
    compiled = importlib.import_module("prodigy_core.json_path").check_json_path(text)
    if compiled is not None:
        ctx.error("E1010", compiled.message.removeprefix("E1010: "), path)
        return
    if "`" in text or re.search(r"!(?!=)", text) or re.search(r"@\.[\w.]+\s*[-+*/%]\s*", text):
        ctx.warning(
            "W1010",
            f"json_path {text!r} uses a form outside the guaranteed subset",
            path,
            help="see spec 04 §8.2 for the supported forms",
        )


def check_regex(ctx: Ctx, text: str, path: str) -> None:
    try:
        re.compile(text)
    except re.error as exc:
        ctx.error("E1009", f"invalid regular expression {text!r}: {exc}", path)
