"""Variable names written by the author: ``capture``, ``id`` (spec 02 §2, 03 §2.3)."""

from __future__ import annotations

import re

from prodigy_core.parse.context import Ctx

RESERVED_ROOTS = frozenset(
    {"env", "item", "map", "merge", "error", "workflow", "step", "job", "validation", "last"}
)
_ID = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")
_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*(?:\.[A-Za-z_][A-Za-z0-9_\-]*)*")


def _root(name: str) -> str:
    return re.split(r"[.\[]", name, maxsplit=1)[0]


def check_variable_name(ctx: Ctx, name: str, path: str) -> bool:
    """E1004 for a malformed name, E1005 for a reserved root; True when usable."""
    if not _VARIABLE.fullmatch(name):
        ctx.error("E1004", f"invalid variable name {name!r}", path)
        return False
    if _root(name) in RESERVED_ROOTS:
        ctx.error(
            "E1005",
            f"'{name}' uses the reserved name '{_root(name)}'",
            path,
            help="reserved: " + ", ".join(sorted(RESERVED_ROOTS)),
        )
        return False
    return True


def check_step_id(ctx: Ctx, name: str, path: str) -> bool:
    if not _ID.fullmatch(name):
        ctx.error("E1004", f"invalid step id {name!r}: expected [A-Za-z_][A-Za-z0-9_-]*", path)
        return False
    if name in RESERVED_ROOTS:
        ctx.error("E1005", f"step id '{name}' is a reserved name", path)
        return False
    if name in ctx.step_ids:
        ctx.error("E1004", f"duplicate step id '{name}'", path)
        return False
    ctx.step_ids.add(name)
    return True
