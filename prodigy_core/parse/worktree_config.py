"""``worktree_config``: the worktrees of MapReduce agents (spec 06 §9).

Every problem is reported with its path: unknown keys (W1001, with a suggestion), a
``parallel_worktrees`` that is not an integer ≥ 1, an ``allocation_strategy`` outside
``on_demand | pooled | reuse | dedicated``, durations and booleans of the wrong type,
and resource limits that are not integers ≥ 1.  The result is a
``prodigy_core.model.WorktreeConfig`` with the defaults of §9.1 filled in.
"""

from __future__ import annotations

from typing import Any

from prodigy_core.model import PoolCleanup, ResourceLimits, WorktreeConfig
from prodigy_core.parse import paths
from prodigy_core.parse.context import Ctx
from prodigy_core.parse.durations import want_duration
from prodigy_core.parse.suggest import check_keys

KEYS = frozenset({"parallel_worktrees", "allocation_strategy", "cleanup_policy",
                  "resource_limits"})
CLEANUP_KEYS = frozenset({"idle_timeout_secs", "max_age_secs", "cleanup_on_complete",
                          "keep_failed", "clean_ignored"})
LIMIT_KEYS = frozenset({"max_disk_mb", "max_memory_mb"})
STRATEGIES = ("on_demand", "pooled", "reuse", "dedicated")
# the original tool's spellings
ALIASES = {"OnDemand": "on_demand", "Pooled": "pooled", "Reuse": "reuse",
           "Dedicated": "dedicated"}


def parse_worktree_config(ctx: Ctx, value: object, path: str) -> WorktreeConfig | None:
    data = ctx.want_mapping(value, path)
    if data is None:
        return None
    check_keys(ctx, data, path, KEYS)
    fields: dict[str, Any] = {}
    if data.get("parallel_worktrees") is not None:
        count = ctx.want_int(data["parallel_worktrees"],
                             paths.child(path, "parallel_worktrees"), minimum=1)
        if count is not None:
            fields["parallel_worktrees"] = count
    if data.get("allocation_strategy") is not None:
        strategy = ctx.want_enum(data["allocation_strategy"],
                                 paths.child(path, "allocation_strategy"), STRATEGIES,
                                 ALIASES)
        if strategy is not None:
            fields["allocation_strategy"] = strategy
    if data.get("cleanup_policy") is not None:
        cleanup = _cleanup(ctx, data["cleanup_policy"], paths.child(path, "cleanup_policy"))
        if cleanup is not None:
            fields["cleanup_policy"] = cleanup
    if data.get("resource_limits") is not None:
        limits = _limits(ctx, data["resource_limits"], paths.child(path, "resource_limits"))
        if limits is not None:
            fields["resource_limits"] = limits
    return WorktreeConfig(**fields)


def _cleanup(ctx: Ctx, value: object, path: str) -> PoolCleanup | None:
    data = ctx.want_mapping(value, path)
    if data is None:
        return None
    check_keys(ctx, data, path, CLEANUP_KEYS)
    fields: dict[str, Any] = {}
    for key in ("idle_timeout_secs", "max_age_secs"):
        if data.get(key) is not None:
            seconds = want_duration(ctx, data[key], paths.child(path, key))
            if seconds is not None:
                fields[key] = seconds
    for key in ("cleanup_on_complete", "keep_failed", "clean_ignored"):
        if data.get(key) is not None:
            flag = ctx.want_bool(data[key], paths.child(path, key))
            if flag is not None:
                fields[key] = flag
    return PoolCleanup(**fields)


def _limits(ctx: Ctx, value: object, path: str) -> ResourceLimits | None:
    data = ctx.want_mapping(value, path)
    if data is None:
        return None
    check_keys(ctx, data, path, LIMIT_KEYS)
    fields: dict[str, Any] = {}
    for key in sorted(LIMIT_KEYS):
        if data.get(key) is not None:
            number = ctx.want_int(data[key], paths.child(path, key), minimum=1)
            if number is not None:
                fields[key] = number
    return ResourceLimits(**fields)
