"""The ``goal_seek`` and ``foreach`` step kinds (spec 12 §1 and §3).

``parse_goal_seek`` and ``parse_foreach`` check the mapping under the command key and
return the spec the step carries (``Step.goal_seek`` / ``Step.foreach``), or ``None``
after reporting what is wrong.  The nested steps (the goal's command, the ``do`` list)
use the one step schema; ``do`` steps are checked without a phase because their
``${item}``, ``${index}`` and ``${total}`` exist in every scope.
"""

from __future__ import annotations

import json
from typing import Any

from prodigy_core.model import ForeachSpec, GoalSeekSpec, Step
from prodigy_core.parse import paths
from prodigy_core.parse.context import Ctx, Phase
from prodigy_core.parse.durations import want_duration
from prodigy_core.parse.handlers import StepParser, command_step
from prodigy_core.parse.suggest import check_keys
from prodigy_core.parse.variables import check_text

GOAL_KEYS = frozenset({
    "goal", "claude", "shell", "command", "validate", "validator", "threshold",
    "max_attempts", "timeout_seconds", "fail_on_incomplete",
})
FOREACH_KEYS = frozenset({"foreach", "items", "do", "parallel", "max_items",
                          "continue_on_error"})
VALIDATORS = ("score", "exit_code", "json")
PARALLEL_TRUE = 10


def parse_goal_seek(ctx: Ctx, value: object, path: str, phase: Phase | None) -> GoalSeekSpec | None:
    data = ctx.want_mapping(value, path, "a goal_seek mapping (goal, command, validate, "
                                         "threshold, max_attempts)")
    if data is None:
        return None
    check_keys(ctx, data, path, GOAL_KEYS)

    def at(key: str) -> str:
        return paths.child(path, key)

    ok = True
    goal = None
    if "goal" not in data:
        ctx.error("E1003", "`goal_seek` needs `goal` (a description of the goal)", path,
                  help='add `goal: "…"`')
        ok = False
    else:
        goal = ctx.want_str(data["goal"], at("goal"), numbers=True)
    command = _goal_command(ctx, data, path, phase)
    validate = None
    if "validate" not in data:
        ctx.error("E1003", "`goal_seek` needs `validate` (a shell command that prints a "
                           "score)", path, help='add `validate: "…"`')
        ok = False
    else:
        validate = ctx.want_str(data["validate"], at("validate"))
        if validate is not None:
            check_text(ctx, validate, at("validate"), phase)
    fields: dict[str, Any] = {}
    if "validator" in data:
        fields["validator"] = ctx.want_enum(data["validator"], at("validator"), VALIDATORS)
    if "threshold" not in data:
        ctx.error("E1003", "`goal_seek` needs `threshold` (the score needed, 0–100)", path,
                  help="add `threshold: 80`")
        ok = False
    else:
        fields["threshold"] = ctx.want_number(data["threshold"], at("threshold"), low=0,
                                              high=100)
    if "max_attempts" not in data:
        ctx.error("E1003", "`goal_seek` needs `max_attempts` (1 or more)", path,
                  help="add `max_attempts: 5`")
        ok = False
    else:
        fields["max_attempts"] = ctx.want_int(data["max_attempts"], at("max_attempts"),
                                              minimum=1)
    if "timeout_seconds" in data and data["timeout_seconds"] is not None:
        fields["timeout_seconds"] = want_duration(ctx, data["timeout_seconds"],
                                                  at("timeout_seconds"))
    if "fail_on_incomplete" in data:
        fields["fail_on_incomplete"] = ctx.want_bool(data["fail_on_incomplete"],
                                                     at("fail_on_incomplete"))
    if not ok or goal is None or command is None or validate is None or \
            any(fields.get(k) is None for k in ("threshold", "max_attempts")):
        return None
    return GoalSeekSpec(goal=goal, command=command, validate=validate,
                        **{k: v for k, v in fields.items() if v is not None})


def _goal_command(ctx: Ctx, data: dict[object, object], path: str,
                  phase: Phase | None) -> Step | None:
    given = [k for k in ("claude", "shell", "command") if k in data]
    if not given:
        ctx.error("E1003", "`goal_seek` needs one of `claude`, `shell` or `command` (what "
                           "runs each attempt)", path, help='add `shell: "…"` or `claude: "/…"`')
        return None
    if len(given) > 1:
        ctx.error("E1008", f"`goal_seek` has more than one command: {', '.join(given)}", path,
                  help="keep exactly one of claude, shell, command")
        return None
    key = given[0]
    at = paths.child(path, key)
    text = ctx.want_str(data[key], at)
    if text is None:
        return None
    if key == "command":
        return command_step(ctx, text, at, phase)
    check_text(ctx, text, at, phase)
    return Step(kind="claude" if key == "claude" else "shell", command=text, source=at)


def parse_foreach(ctx: Ctx, value: object, path: str, depth: int,
                  parse_step: StepParser) -> ForeachSpec | None:
    if isinstance(value, list | str):
        ctx.error("E1004", "`foreach` takes a mapping with the items and the steps", path,
                  help="write `foreach: {foreach: <items>, do: [<steps>]}`")
        return None
    data = ctx.want_mapping(value, path, "a foreach mapping (foreach, do)")
    if data is None:
        return None
    check_keys(ctx, data, path, FOREACH_KEYS)

    def at(key: str) -> str:
        return paths.child(path, key)

    ok = True
    items_json: str | None = None
    source: str | None = None
    keys = [k for k in ("foreach", "items") if k in data]
    if not keys:
        ctx.error("E1003", "`foreach` needs `foreach` (or `items`): a list, a variable "
                           "reference or a command", path,
                  help='add `foreach: ["a", "b"]` or `foreach: "ls *.md"`')
        ok = False
    elif len(keys) > 1:
        ctx.error("E1008", "`foreach` has both `foreach` and `items`", path,
                  help="keep one of them (`items` is an alias)")
        ok = False
    else:
        raw = data[keys[0]]
        if isinstance(raw, list):
            try:
                items_json = json.dumps(raw, ensure_ascii=False, default=str)
            except (TypeError, ValueError):
                ctx.error("E1004", "foreach items must be plain values", at(keys[0]))
                ok = False
        elif isinstance(raw, str):
            check_text(ctx, raw, at(keys[0]), None)
            source = raw
        else:
            ctx.wrong_type(raw, "a list of items, a variable reference or a command",
                           at(keys[0]))
            ok = False
    steps: list[Step] = []
    if "do" not in data:
        ctx.error("E1003", "`foreach` needs `do` (the steps run for each item)", path,
                  help='add `do: [{shell: "echo ${item}"}]`')
        ok = False
    else:
        items = ctx.want_list(data["do"], at("do"), "a list of steps")
        if items is not None and not items:
            ctx.error("E1005", "`do` is empty: give at least one step", at("do"))
            ok = False
        for i, item in enumerate(items or ()):
            step = parse_step(ctx, item, paths.index(at("do"), i), None, depth + 1)
            if step is not None:
                steps.append(step)
    fields: dict[str, Any] = {}
    if "parallel" in data:
        parallel = data["parallel"]
        if isinstance(parallel, bool):
            fields["parallel"] = PARALLEL_TRUE if parallel else 1
        else:
            fields["parallel"] = ctx.want_int(parallel, at("parallel"), minimum=1)
    if "max_items" in data and data["max_items"] is not None:
        fields["max_items"] = ctx.want_int(data["max_items"], at("max_items"), minimum=1)
    if "continue_on_error" in data:
        fields["continue_on_error"] = ctx.want_bool(data["continue_on_error"],
                                                    at("continue_on_error"))
    if (fields.get("parallel") or 1) > 1:
        for i, step in enumerate(steps):
            if step.commit_required:
                ctx.warning("W1009", "`commit_required` in a parallel `foreach`: commits "
                                     "from parallel items in one worktree can interleave",
                            paths.child(paths.index(at("do"), i), "commit_required"),
                            help="use MapReduce for isolated parallel work, or `parallel: "
                                 "false`")
    if not ok:
        return None
    return ForeachSpec(do=tuple(steps), items_json=items_json, source=source,
                       **{k: v for k, v in fields.items() if v is not None})
