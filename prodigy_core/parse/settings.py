"""Workflow-level settings kept as frozen data in ``Workflow.extra``: ``merge_conflicts``
(spec 06 §6.2), ``worktree`` and ``claude_config`` (07 §2).  ``worktree_config`` (06 §9)
is a model class of its own (``prodigy_core.parse.worktree_config``)."""

from __future__ import annotations

from typing import Any

from prodigy_core.parse import paths
from prodigy_core.parse.context import Ctx
from prodigy_core.parse.durations import want_duration
from prodigy_core.parse.step_parts import freeze
from prodigy_core.parse.suggest import check_keys
from prodigy_core.parse.variables import check_text

_MERGE_CONFLICT_KEYS = frozenset({"strategy", "claude", "timeout", "verify"})
_CLAUDE_KEYS = frozenset(
    {
        "executable",
        "permission_args",
        "extra_args",
        "model",
        "idle_timeout_secs",
        "prompt_stdin_threshold",
        "console_output",
    }
)


def parse_merge_conflicts(ctx: Ctx, value: object, path: str) -> object:
    data = ctx.want_mapping(value, path)
    if data is None:
        return None
    check_keys(ctx, data, path, _MERGE_CONFLICT_KEYS)
    out: dict[str, Any] = {}
    if "strategy" in data:
        out["strategy"] = ctx.want_enum(data["strategy"], paths.child(path, "strategy"), ("abort", "claude"))
    for key in ("claude", "verify"):
        if data.get(key) is not None:
            text = ctx.want_str(data[key], paths.child(path, key))
            if text is not None:
                check_text(ctx, text, paths.child(path, key), "merge")
                out[key] = text
    if data.get("timeout") is not None:
        out["timeout"] = want_duration(ctx, data["timeout"], paths.child(path, "timeout"))
    return freeze(out)


def parse_claude_config(ctx: Ctx, value: object, path: str) -> object:
    data = ctx.want_mapping(value, path)
    if data is None:
        return None
    check_keys(ctx, data, path, _CLAUDE_KEYS)
    out: dict[str, Any] = {}
    for key in ("executable", "model"):
        if data.get(key) is not None:
            out[key] = ctx.want_str(data[key], paths.child(path, key))
    for key in ("permission_args", "extra_args"):
        if data.get(key) is not None:
            out[key] = ctx.want_str_list(data[key], paths.child(path, key))
    for key in ("idle_timeout_secs", "prompt_stdin_threshold"):
        if data.get(key) is not None:
            out[key] = ctx.want_int(data[key], paths.child(path, key), minimum=0)
    if "console_output" in data:
        out["console_output"] = ctx.want_bool(data["console_output"], paths.child(path, "console_output"))
    return freeze(out)
