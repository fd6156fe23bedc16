"""Top-level shape, mode detection and workflow-level keys (spec 01 §2-§3).

Theory of operation
-------------------
``parse_workflow`` receives plain data (already read by the loader) and the position
tables.  It decides the mode from the parsed value (never from text), checks every
workflow-level key, then hands each phase's step list to ``steps.py``.  Every check
appends to one ``Ctx``; the workflow is returned only when no error was found.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from prodigy_core.gitvars import annotate as annotate_git_use
from prodigy_core.model import Mode, Profile, Workflow
from prodigy_core.parse import paths
from prodigy_core.parse.context import Ctx, Position, ScalarInfo
from prodigy_core.parse.env import (
    parse_env,
    parse_env_files,
    parse_profiles,
    parse_secrets,
    static_environment,
)
from prodigy_core.parse.mapreduce import (
    SHORTHANDS,
    parse_error_policy,
    parse_map,
    parse_phase_steps,
)
from prodigy_core.parse.retry import parse_retry
from prodigy_core.parse.settings import (
    parse_claude_config,
    parse_merge_conflicts,
)
from prodigy_core.parse.steps import parse_step_list
from prodigy_core.parse.suggest import unknown_key
from prodigy_core.parse.worktree_config import parse_worktree_config
from prodigy_core.problems import Problem, sorted_problems
from prodigy_core.reprs import value_class

COMMON_KEYS = frozenset(
    {
        "name",
        "description",
        "mode",
        "version",
        "env",
        "secrets",
        "env_files",
        "profiles",
        "inherit_env",
        "strict_variables",
        "retry_defaults",
        "merge",
        "merge_conflicts",
        "worktree",
        "worktree_config",
        "claude_config",
    }
)
COMPOSITION_KEYS = ("imports", "extends", "template", "parameters", "defaults", "workflows")
STANDARD_KEYS = frozenset({"commands", "steps"})
PHASE_KEYS = ("setup", "map", "reduce")
MAPREDUCE_KEYS = frozenset(PHASE_KEYS) | {"error_policy", *SHORTHANDS}


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class ParseResult:
    """A validated workflow (``None`` when any error was found) and every problem, sorted."""

    workflow: Workflow | None
    problems: tuple[Problem, ...]


def parse_workflow(
    data: object,
    *,
    file: str,
    positions: Mapping[str, Position],
    key_positions: Mapping[str, Position],
    stem: str,
    environ: Mapping[str, str],
    params: Mapping[str, str] = {},
    profile: str | None = None,
    scalar_info: Mapping[str, ScalarInfo] = {},
) -> ParseResult:
    """Validate plain workflow data and build the model (spec 01 §7)."""
    ctx = Ctx(
        file=file,
        positions=positions,
        key_positions=key_positions,
        scalar_info=scalar_info,
        environ=environ,
        params=params,
        profile=profile,
    )
    workflow: Workflow | None
    try:
        workflow = _parse(ctx, data, stem)
    except RecursionError:
        ctx.error("E1004", "workflow is nested too deeply", "$")
        workflow = None
    problems = sorted_problems(ctx.problems)
    if any(p.is_error for p in problems):
        workflow = None
    elif workflow is not None:
        workflow = annotate_git_use(workflow)  # which steps need git context (spec 03 §7)
    return ParseResult(workflow=workflow, problems=problems)


def _parse(ctx: Ctx, data: object, stem: str) -> Workflow | None:
    if data is None:
        ctx.error("E1002", "workflow file is empty", "$")
        return None
    if isinstance(data, list):
        _check_profile(ctx, ())
        steps = parse_step_list(ctx, data, "$", "workflow")
        return Workflow(name=stem, steps=steps)
    if not isinstance(data, dict):
        ctx.error(
            "E1002",
            "a workflow must be a list of steps or a mapping, not a single value",
            "$",
            help="see spec 01 §2 for the accepted forms",
        )
        return None
    return _mapping(ctx, data, stem)


def _mode(ctx: Ctx, data: dict[object, object]) -> Mode:
    if "mode" not in data or data["mode"] is None:
        return "standard"
    raw = data["mode"]
    if isinstance(raw, str) and raw.strip().lower() in ("standard", "mapreduce"):
        return "mapreduce" if raw.strip().lower() == "mapreduce" else "standard"
    ctx.error("E1005", f"invalid mode {raw!r}: expected one of standard, mapreduce", "$.mode")
    return "mapreduce" if "map" in data else "standard"


def _mapping(ctx: Ctx, data: dict[object, object], stem: str) -> Workflow | None:
    mode = _mode(ctx, data)
    _check_top_keys(ctx, data, mode)
    fields: dict[str, Any] = {"mode": mode}
    if "strict_variables" in data:
        strict = ctx.want_bool(data["strict_variables"], "$.strict_variables")
        ctx.strict_variables = bool(strict)
        fields["strict_variables"] = bool(strict)
    _names(ctx, data, mode, stem, fields)
    _environment(ctx, data, fields)
    if "inherit_env" in data:
        inherit = ctx.want_bool(data["inherit_env"], "$.inherit_env")
        if inherit is not None:
            fields["inherit_env"] = inherit
    if data.get("retry_defaults") is not None:
        fields["retry_defaults"] = parse_retry(ctx, data["retry_defaults"], "$.retry_defaults")
    if data.get("merge") is not None:
        fields["merge"] = parse_phase_steps(ctx, data["merge"], "$.merge", "merge")
    fields["extra"] = _extra(ctx, data)
    if data.get("worktree_config") is not None:
        fields["worktree_config"] = parse_worktree_config(ctx, data["worktree_config"], "$.worktree_config")
    if mode == "standard":
        _standard(ctx, data, fields)
    else:
        _mapreduce(ctx, data, fields)
    return Workflow(**{k: v for k, v in fields.items() if v is not None})


def _check_top_keys(ctx: Ctx, data: dict[object, object], mode: Mode) -> None:
    valid = COMMON_KEYS | (STANDARD_KEYS if mode == "standard" else MAPREDUCE_KEYS)
    phase_reported = False
    for key in data:
        at = paths.child("$", key)
        if isinstance(key, str) and key.startswith("x-"):
            continue
        if key in COMPOSITION_KEYS:
            ctx.error(
                "E1016",
                f"composition (`{key}`) is not supported yet in this version",
                at,
                key=True,
                help="inline the composed steps into this file",
            )
        elif isinstance(key, str) and key in valid:
            continue
        elif mode == "standard" and key in PHASE_KEYS:
            if not phase_reported:
                ctx.error(
                    "E1002",
                    f"`{key}` is only valid in a mapreduce workflow",
                    at,
                    key=True,
                    help="add `mode: mapreduce`",
                )
                phase_reported = True
        elif mode == "mapreduce" and key in STANDARD_KEYS:
            ctx.error(
                "E1002",
                f"`{key}` is not valid in a mapreduce workflow",
                at,
                key=True,
                help="a mapreduce workflow uses `setup`, `map` and `reduce`",
            )
        elif mode == "standard" and key in MAPREDUCE_KEYS:
            ctx.warning(
                "W1001",
                f"unknown key '{key}' in a standard workflow",
                at,
                key=True,
                help="this key is only valid in mapreduce workflows",
            )
        else:
            unknown_key(ctx, key, at, valid, "top")


def _names(ctx: Ctx, data: dict[object, object], mode: Mode, stem: str, fields: dict[str, object]) -> None:
    name = None
    if data.get("name") is not None:
        name = ctx.want_str(data["name"], "$.name", numbers=True)
    elif mode == "mapreduce":
        ctx.error("E1003", "missing required key 'name' (required in mapreduce workflows)", "$.name")
    fields["name"] = name if name is not None else stem
    if data.get("description") is not None:
        fields["description"] = ctx.want_str(data["description"], "$.description", numbers=True)
    if data.get("version") is not None:
        fields["version"] = ctx.want_str(data["version"], "$.version", numbers=True)
    if data.get("worktree") is not None:
        ctx.want_str(data["worktree"], "$.worktree")


def _environment(ctx: Ctx, data: dict[object, object], fields: dict[str, object]) -> None:
    env = parse_env(ctx, data["env"], "$.env") if data.get("env") is not None else ()
    fields["env"] = env
    if data.get("secrets") is not None:
        fields["secrets"] = parse_secrets(ctx, data["secrets"], "$.secrets")
    if data.get("env_files") is not None:
        fields["env_files"] = parse_env_files(ctx, data["env_files"], "$.env_files")
    profiles = parse_profiles(ctx, data["profiles"], "$.profiles") if data.get("profiles") is not None else ()
    fields["profiles"] = profiles
    active = _check_profile(ctx, profiles)
    ctx.static_env = static_environment(env, active)


def _check_profile(ctx: Ctx, profiles: tuple[Profile, ...]) -> Profile | None:
    if ctx.profile is None:
        return None
    for profile in profiles:
        if profile.name == ctx.profile:
            return profile
    defined = ", ".join(p.name for p in profiles) or "none"
    ctx.error(
        "E1013",
        f"unknown profile '{ctx.profile}'; defined profiles: {defined}",
        "$.profiles" if profiles else "$",
        key=True,
    )
    return None


def _extra(ctx: Ctx, data: dict[object, object]) -> tuple[tuple[str, object], ...]:
    extra: list[tuple[str, object]] = []
    parsers = {
        "merge_conflicts": parse_merge_conflicts,
        "claude_config": parse_claude_config,
    }
    for key, parser in parsers.items():
        if data.get(key) is not None:
            value = parser(ctx, data[key], paths.child("$", key))
            if value is not None:
                extra.append((key, value))
    if isinstance(data.get("worktree"), str):
        extra.append(("worktree", data["worktree"]))
    return tuple(extra)


def _standard(ctx: Ctx, data: dict[object, object], fields: dict[str, object]) -> None:
    present = [k for k in ("commands", "steps") if k in data]
    if len(present) == 2:
        later = max(present, key=lambda k: ctx.pos(paths.child("$", k), key=True))
        ctx.error(
            "E1017",
            "`commands` and `steps` are synonyms; use only one of them",
            paths.child("$", later),
            key=True,
        )
        return
    if not present:
        if "extends" not in data and "template" not in data:
            ctx.error("E1003", "a standard workflow needs `commands:` or `steps:`", "$")
        return
    key = present[0]
    fields["steps"] = parse_step_list(ctx, data[key], paths.child("$", key), "workflow")


def _mapreduce(ctx: Ctx, data: dict[object, object], fields: dict[str, object]) -> None:
    if data.get("setup") is not None:
        fields["setup"] = parse_phase_steps(ctx, data["setup"], "$.setup", "setup", capture_outputs=True)
    if "map" not in data:
        ctx.error("E1003", "missing required key 'map' (required in mapreduce workflows)", "$.map")
    else:
        fields["map"] = parse_map(ctx, data["map"], "$.map")
    if data.get("reduce") is not None:
        fields["reduce"] = parse_phase_steps(ctx, data["reduce"], "$.reduce", "reduce")
    fields["error_policy"] = parse_error_policy(ctx, data)
