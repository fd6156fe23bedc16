"""Unknown keys and "did you mean" suggestions (spec 01 §6)."""

from __future__ import annotations

import difflib
from collections.abc import Collection, Iterable

from prodigy_core.parse import paths
from prodigy_core.parse.context import Ctx

# Where an alias applies: "step" (a step mapping), "map" (the map block), "any".
_ALIASES: dict[str, tuple[str, str]] = {
    "retry_config": ("retry", "step"),
    "retry_on_failure": ("retry", "step"),
    "retries": ("retry", "step"),
    "on_error": ("on_failure", "step"),
    "on_fail": ("on_failure", "step"),
    "onFailure": ("on_failure", "step"),
    "if": ("when", "step"),
    "condition": ("when", "step"),
    "cwd": ("working_dir", "step"),
    "workdir": ("working_dir", "step"),
    "working_directory": ("working_dir", "step"),
    "environment": ("env", "any"),
    "run": ("shell", "step"),
    "bash": ("shell", "step"),
    "sh": ("shell", "step"),
    "cmd": ("shell", "step"),
    "command": ("shell", "step"),
    "prompt": ("claude", "step"),
    "timeout_per_agent": ("map.agent_timeout_secs", "any"),
    "parallel": ("max_parallel", "map"),
    "max_workers": ("max_parallel", "map"),
    "concurrency": ("max_parallel", "map"),
    "capture_outputs": ("capture", "step"),
    "steps": ("agent_template", "map"),
}


def suggest(key: str, valid: Collection[str], location: str) -> str | None:
    """The key the author probably meant, or ``None``."""
    alias = _ALIASES.get(key)
    if alias is not None:
        target, where = alias
        if where in ("any", location):
            if location == "map" and target == "map.agent_timeout_secs":
                return "agent_timeout_secs"
            return target
    best: tuple[float, str] | None = None
    for candidate in sorted(valid):
        ratio = difflib.SequenceMatcher(None, key.lower(), candidate.lower()).ratio()
        if ratio >= 0.6 and (best is None or ratio > best[0]):
            best = (ratio, candidate)
    return best[1] if best else None


def unknown_key(
    ctx: Ctx, key: object, path: str, valid: Iterable[str], location: str, note: str | None = None
) -> None:
    """Report W1001 for ``key`` (whose value is at ``path``)."""
    valid_keys = sorted(set(valid))
    text = key if isinstance(key, str) else repr(key)
    hint = suggest(text, valid_keys, location)
    if hint is not None:
        message = f"unknown key '{text}' (did you mean '{hint}'?)"
        ctx.warning("W1001", message, path, key=True, suggestion=hint, help=note or "")
    else:
        listed = ", ".join(valid_keys)
        ctx.warning(
            "W1001", f"unknown key '{text}'", path, key=True, help=note or f"valid keys here: {listed}"
        )


def check_keys(
    ctx: Ctx,
    mapping: dict[object, object],
    path: str,
    valid: Collection[str],
    location: str = "other",
) -> None:
    """Report W1001 for every key of ``mapping`` not in ``valid``."""
    for key in mapping:
        if not isinstance(key, str) or key not in valid:
            unknown_key(ctx, key, paths.child(path, key), valid, location)
