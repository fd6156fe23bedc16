"""Workflow-level settings kept as frozen data in ``Workflow.extra``: ``merge_conflicts``
(spec 06 §6.2), ``worktree``, ``worktree_config`` (06 §9) and ``claude_config`` (07 §2)."""

from __future__ import annotations

from typing import Any

from prodigy_core.parse import paths
from prodigy_core.parse.context import Ctx
from prodigy_core.parse.durations import want_duration
from prodigy_core.parse.step_parts import freeze
from prodigy_core.parse.suggest import check_keys
from prodigy_core.parse.variables import check_text

_MERGE_CONFLICT_KEYS = frozenset({"strategy", "claude", "timeout", "verify"})
_WORKTREE_KEYS = frozenset({"parallel_worktrees", "allocation_strategy", "cleanup_policy", "resource_limits"})
_CLEANUP_KEYS = frozenset(
    {"idle_timeout_secs", "max_age_secs", "cleanup_on_complete", "keep_failed", "clean_ignored"}
)
_LIMIT_KEYS = frozenset({"max_disk_mb", "max_memory_mb"})
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


def parse_worktree_config(ctx: Ctx, value: object, path: str) -> object:
    data = ctx.want_mapping(value, path)
    if data is None:
        return None
    check_keys(ctx, data, path, _WORKTREE_KEYS)
    out: dict[str, Any] = {}
    if data.get("parallel_worktrees") is not None:
        out["parallel_worktrees"] = ctx.want_int(data["parallel_worktrees"], paths.child(path, "parallel_worktrees"), minimum=1)
    if "allocation_strategy" in data:
        out["allocation_strategy"] = ctx.want_enum(
            data["allocation_strategy"], paths.child(path, "allocation_strategy"),
            ("on_demand", "pooled", "reuse", "dedicated"),
        )
    if data.get("cleanup_policy") is not None:
        sub = paths.child(path, "cleanup_policy")
        policy = ctx.want_mapping(data["cleanup_policy"], sub)
        if policy is not None:
            check_keys(ctx, policy, sub, _CLEANUP_KEYS)
            cleaned: dict[str, object] = {}
            for key in ("idle_timeout_secs", "max_age_secs"):
                if key in policy:
                    cleaned[key] = want_duration(ctx, policy[key], paths.child(sub, key))
            for key in ("cleanup_on_complete", "keep_failed", "clean_ignored"):
                if key in policy:
                    cleaned[key] = ctx.want_bool(policy[key], paths.child(sub, key))
            out["cleanup_policy"] = cleaned
    if data.get("resource_limits") is not None:
        sub = paths.child(path, "resource_limits")
        limits = ctx.want_mapping(data["resource_limits"], sub)
        if limits is not None:
            check_keys(ctx, limits, sub, _LIMIT_KEYS)
            out["resource_limits"] = {
                key: ctx.want_int(limits[key], paths.child(sub, key), minimum=1) for key in limits if key in _LIMIT_KEYS
            }
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
