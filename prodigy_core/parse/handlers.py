"""Handlers: ``on_failure`` (spec 10 §4), ``on_success`` and ``on_exit_code`` (§5).

Handler steps are full steps; ``parse_step`` is passed in by ``steps.py`` (which owns the
step schema) to avoid an import cycle.  ``depth`` counts handler nesting; beyond
``MAX_HANDLER_DEPTH`` the handler is rejected with E1004.
"""

from __future__ import annotations

import re
from typing import Any, Protocol, cast

from prodigy_core.model import OnFailure, Step, Strategy
from prodigy_core.parse import paths
from prodigy_core.parse.context import Ctx, Phase
from prodigy_core.parse.durations import want_duration
from prodigy_core.parse.names import check_variable_name
from prodigy_core.parse.suggest import check_keys
from prodigy_core.parse.variables import check_text

MAX_HANDLER_DEPTH = 5
ON_FAILURE_KEYS = frozenset(
    {
        "commands",
        "claude",
        "shell",
        "strategy",
        "max_attempts",
        "max_retries",
        "retry_original",
        "fail_workflow",
        "handler_failure_fatal",
        "timeout",
        "capture",
        "commit_required",
    }
)
_STRATEGIES: tuple[Strategy, ...] = ("recovery", "fallback", "cleanup", "custom")


class StepParser(Protocol):
    def __call__(
        self, ctx: Ctx, value: object, path: str, phase: Phase | None, depth: int
    ) -> Step | None: ...


def command_step(ctx: Ctx, text: str, path: str, phase: Phase | None) -> Step:
    """A string handler command: ``/x`` or ``claude: x`` → Claude, else (``shell:``) shell."""
    check_text(ctx, text, path, phase)
    stripped = text.strip()
    if stripped.startswith("claude:"):
        return Step(kind="claude", command=stripped[len("claude:") :].strip(), source=path)
    if stripped.startswith("shell:"):
        return Step(kind="shell", command=stripped[len("shell:") :].strip(), source=path)
    if stripped.startswith("/"):
        return Step(kind="claude", command=stripped, source=path)
    return Step(kind="shell", command=text, source=path)


def handler_step(
    ctx: Ctx, value: object, path: str, phase: Phase | None, depth: int, parse_step: StepParser
) -> Step | None:
    if depth > MAX_HANDLER_DEPTH:
        ctx.error(
            "E1004",
            f"handlers are nested more than {MAX_HANDLER_DEPTH} levels deep",
            path,
        )
        return None
    if isinstance(value, str):
        return command_step(ctx, value, path, phase)
    if not isinstance(value, dict):
        ctx.wrong_type(value, "a step mapping or a command string", path)
        return None
    return parse_step(ctx, value, path, phase, depth)


def parse_on_success(
    ctx: Ctx, value: object, path: str, phase: Phase | None, depth: int, parse_step: StepParser
) -> Step | None:
    if value is None:
        return None
    return handler_step(ctx, value, path, phase, depth + 1, parse_step)


def parse_on_exit_code(
    ctx: Ctx, value: object, path: str, phase: Phase | None, depth: int, parse_step: StepParser
) -> tuple[tuple[int, Step], ...]:
    data = ctx.want_mapping(value, path, "a mapping of exit codes to steps")
    if data is None:
        return ()
    entries: list[tuple[int, Step]] = []
    for key, entry in data.items():
        at = paths.child(path, key)
        code: int | None = None
        if isinstance(key, int) and not isinstance(key, bool):
            code = key
        elif isinstance(key, str) and re.fullmatch(r"\s*-?\d+\s*", key):
            code = int(key)
        if code is None:
            ctx.error("E1004", f"on_exit_code key {key!r} is not an integer exit code", at, key=True)
            continue
        step = handler_step(ctx, entry, at, phase, depth + 1, parse_step)
        if step is not None:
            entries.append((code, step))
    return tuple(entries)


def parse_on_failure(
    ctx: Ctx, value: object, path: str, phase: Phase | None, depth: int, parse_step: StepParser
) -> OnFailure | None:
    if value is None or value is False:
        return None
    if value is True:
        return OnFailure(allow=True)
    if isinstance(value, str):
        if value.strip().lower() in ("true", "false"):
            allow = ctx.want_bool(value, path)
            return OnFailure(allow=True) if allow else None
        step = handler_step(ctx, value, path, phase, depth + 1, parse_step)
        return OnFailure(commands=(step,) if step else ())
    if isinstance(value, list):
        return OnFailure(commands=_handler_list(ctx, value, path, phase, depth, parse_step))
    data = ctx.want_mapping(value, path, "true, false, a command, a list or a mapping")
    if data is None:
        return None
    return _detailed(ctx, data, path, phase, depth, parse_step)


def _handler_list(
    ctx: Ctx, items: list[object], path: str, phase: Phase | None, depth: int, parse_step: StepParser
) -> tuple[Step, ...]:
    steps: list[Step] = []
    for i, item in enumerate(items):
        step = handler_step(ctx, item, paths.index(path, i), phase, depth + 1, parse_step)
        if step is not None:
            steps.append(step)
    return tuple(steps)


def _detailed(
    ctx: Ctx,
    data: dict[object, object],
    path: str,
    phase: Phase | None,
    depth: int,
    parse_step: StepParser,
) -> OnFailure | None:
    check_keys(ctx, data, path, ON_FAILURE_KEYS, "step")
    def at(key: str) -> str:
        return paths.child(path, key)

    single = [k for k in ("claude", "shell") if k in data]
    commands: tuple[Step, ...] = ()
    if "commands" in data and single:
        ctx.error(
            "E1008",
            f"on_failure has both 'commands' and '{single[0]}'; use one of them",
            path,
        )
    elif len(single) > 1:
        ctx.error("E1008", "on_failure has both 'claude' and 'shell'; use one of them", path)
    elif "commands" in data:
        items = ctx.want_list(data["commands"], at("commands"), "a list of handler commands")
        if items is not None:
            commands = _handler_list(ctx, items, at("commands"), phase, depth, parse_step)
    elif single:
        kind = single[0]
        text = ctx.want_str(data[kind], at(kind))
        if text is not None:
            check_text(ctx, text, at(kind), phase)
            commands = (Step(kind="claude" if kind == "claude" else "shell", command=text, source=path),)
    else:
        ctx.error("E1003", "on_failure mapping needs 'commands', 'claude' or 'shell'", path)
    fields: dict[str, Any] = {"commands": commands}
    if "strategy" in data:
        strategy = ctx.want_enum(data["strategy"], at("strategy"), _STRATEGIES)
        if strategy is not None:
            fields["strategy"] = cast(Strategy, strategy)
            fields["strategy_given"] = True
    max_attempts: int | None = None
    if "max_attempts" in data:
        max_attempts = ctx.want_int(data["max_attempts"], at("max_attempts"), minimum=1)
    elif "max_retries" in data:
        retries = ctx.want_int(data["max_retries"], at("max_retries"), minimum=0)
        max_attempts = None if retries is None else retries + 1
    if "retry_original" in data:
        retry_original = ctx.want_bool(data["retry_original"], at("retry_original"))
        if retry_original and max_attempts is None and "max_attempts" not in data:
            max_attempts = 2
    fields["max_attempts"] = max_attempts
    for key in ("fail_workflow", "handler_failure_fatal", "commit_required"):
        if key in data:
            flag = ctx.want_bool(data[key], at(key))
            if flag is not None:
                fields[key] = flag
    if "timeout" in data and data["timeout"] is not None:
        fields["timeout"] = want_duration(ctx, data["timeout"], at("timeout"))
    if "capture" in data:
        name = ctx.want_str(data["capture"], at("capture"))
        if name is not None and check_variable_name(ctx, name, at("capture")):
            fields["capture"] = name
    strategy_value = fields.get("strategy", "recovery")
    if max_attempts is not None and max_attempts >= 2 and strategy_value != "recovery":
        ctx.warning(
            "W1012",
            f"strategy '{strategy_value}' has no effect in a fix loop (max_attempts >= 2)",
            at("strategy"),
        )
    return OnFailure(**fields)
