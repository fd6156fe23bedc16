"""Sub-structures of a step: ``write_file`` (spec 02 §5), ``outputs`` (§13),
``step_validate`` (§14) and the completeness ``validate`` (spec 12 §2)."""

from __future__ import annotations

import re
from typing import Any, cast

from prodigy_core.model import (
    OnIncomplete,
    Step,
    StepValidate,
    ValidateSpec,
    WriteFileSpec,
    WriteFormat,
)
from prodigy_core.parse import paths
from prodigy_core.parse.context import Ctx, Phase
from prodigy_core.parse.durations import want_duration
from prodigy_core.parse.handlers import StepParser, command_step, handler_step
from prodigy_core.parse.suggest import check_keys
from prodigy_core.parse.variables import check_text

_WRITE_KEYS = frozenset({"path", "content", "format", "mode", "create_dirs"})
_WRITE_FORMATS: tuple[WriteFormat, ...] = ("text", "json", "yaml")
_VALIDATE_KEYS = frozenset(
    {"shell", "claude", "command", "commands", "result_file", "threshold", "timeout", "expected_schema", "on_incomplete"}
)
_INCOMPLETE_KEYS = frozenset(
    {"claude", "shell", "commands", "max_attempts", "fail_workflow", "prompt", "commit_required"}
)


def parse_write_file(ctx: Ctx, value: object, path: str, phase: Phase | None) -> WriteFileSpec | None:
    data = ctx.want_mapping(value, path, "a write_file mapping")
    if data is None:
        return None
    check_keys(ctx, data, path, _WRITE_KEYS)
    ok = True
    texts: dict[str, str] = {}
    for key in ("path", "content"):
        if key not in data:
            ctx.error("E1003", f"write_file needs '{key}'", path)
            ok = False
            continue
        text = ctx.want_str(data[key], paths.child(path, key), numbers=key == "content")
        if text is None:
            ok = False
            continue
        check_text(ctx, text, paths.child(path, key), phase)
        texts[key] = text
    if "path" in texts and _unsafe_path(texts["path"]):
        ctx.error(
            "E1004",
            f"write_file path {texts['path']!r} must be relative and must not contain '..'",
            paths.child(path, "path"),
        )
        ok = False
    fields: dict[str, Any] = {}
    if "format" in data:
        fmt = ctx.want_enum(data["format"], paths.child(path, "format"), _WRITE_FORMATS)
        if fmt is not None:
            fields["format"] = cast(WriteFormat, fmt)
    if "mode" in data:
        mode = data["mode"]
        mode_text = str(mode) if isinstance(mode, int | str) and not isinstance(mode, bool) else ""
        if re.fullmatch(r"0?[0-7]{3,4}|0o[0-7]{3,4}", mode_text.strip()):
            fields["mode"] = mode_text.strip().replace("0o", "0")
        else:
            ctx.error("E1004", f"invalid file mode {mode!r}: expected an octal string such as \"0644\"", paths.child(path, "mode"))
    if "create_dirs" in data:
        flag = ctx.want_bool(data["create_dirs"], paths.child(path, "create_dirs"))
        if flag is not None:
            fields["create_dirs"] = flag
    if not ok:
        return None
    return WriteFileSpec(path=texts["path"], content=texts["content"], **fields)


def _unsafe_path(text: str) -> bool:
    if text.startswith(("/", "\\")) or re.match(r"[A-Za-z]:[\\/]", text):
        return True
    return any(part == ".." for part in re.split(r"[\\/]", text))


def parse_outputs(ctx: Ctx, value: object, path: str) -> tuple[tuple[str, str], ...]:
    data = ctx.want_mapping(value, path, "a mapping of output names to {file_pattern}")
    if data is None:
        return ()
    outputs: list[tuple[str, str]] = []
    for key, spec in data.items():
        at = paths.child(path, key)
        if not isinstance(key, str):
            ctx.error("E1004", f"output name {key!r} is not a string", at, key=True)
            continue
        entry = ctx.want_mapping(spec, at, "a mapping with file_pattern")
        if entry is None:
            continue
        check_keys(ctx, entry, at, frozenset({"file_pattern"}))
        if "file_pattern" not in entry:
            ctx.error("E1003", f"output '{key}' needs 'file_pattern'", at)
            continue
        pattern = ctx.want_str(entry["file_pattern"], paths.child(at, "file_pattern"))
        if pattern is not None:
            outputs.append((key, pattern))
    return tuple(outputs)


def parse_step_validate(ctx: Ctx, value: object, path: str, phase: Phase | None) -> StepValidate | None:
    timeout: float | None = None
    raw: object = value
    if isinstance(value, dict):
        check_keys(ctx, value, path, frozenset({"commands", "timeout"}))
        if "commands" not in value:
            ctx.error("E1003", "step_validate mapping needs 'commands'", path)
            return None
        raw = value["commands"]
        path_cmds = paths.child(path, "commands")
        if "timeout" in value and value["timeout"] is not None:
            timeout = want_duration(ctx, value["timeout"], paths.child(path, "timeout"))
    else:
        path_cmds = path
    if isinstance(raw, str):
        check_text(ctx, raw, path_cmds, phase)
        return StepValidate(commands=(raw,), timeout=timeout)
    commands = ctx.want_str_list(raw, path_cmds)
    if commands is None:
        return None
    for i, text in enumerate(commands):
        check_text(ctx, text, paths.index(path_cmds, i), phase)
    return StepValidate(commands=commands, timeout=timeout)


def parse_validate(
    ctx: Ctx, value: object, path: str, phase: Phase | None, depth: int, parse_step: StepParser
) -> ValidateSpec | None:
    if isinstance(value, list | str):
        items = value if isinstance(value, list) else [value]
        base = path if isinstance(value, str) else None
        steps = _steps(ctx, items, path, base, phase, depth, parse_step)
        return ValidateSpec(commands=steps)
    data = ctx.want_mapping(value, path, "a validation list or mapping")
    if data is None:
        return None
    check_keys(ctx, data, path, _VALIDATE_KEYS)
    fields: dict[str, Any] = {}
    commands = _command_keys(ctx, data, path, phase, depth, parse_step, "validate")
    if commands is not None:
        fields["commands"] = commands
    if "result_file" in data and data["result_file"] is not None:
        fields["result_file"] = ctx.want_str(data["result_file"], paths.child(path, "result_file"))
    if "threshold" in data:
        threshold = ctx.want_number(data["threshold"], paths.child(path, "threshold"), low=0, high=100)
        if threshold is not None:
            fields["threshold"] = threshold
    if "timeout" in data and data["timeout"] is not None:
        fields["timeout"] = want_duration(ctx, data["timeout"], paths.child(path, "timeout"))
    if "expected_schema" in data:
        schema = ctx.want_mapping(data["expected_schema"], paths.child(path, "expected_schema"), "a JSON Schema object")
        if schema is not None:
            fields["expected_schema"] = _freeze(schema)
    if "on_incomplete" in data and data["on_incomplete"] is not None:
        fields["on_incomplete"] = _on_incomplete(
            ctx, data["on_incomplete"], paths.child(path, "on_incomplete"), phase, depth, parse_step
        )
    return ValidateSpec(**{k: v for k, v in fields.items() if v is not None})


def _on_incomplete(
    ctx: Ctx, value: object, path: str, phase: Phase | None, depth: int, parse_step: StepParser
) -> OnIncomplete | None:
    if isinstance(value, list):
        return OnIncomplete(commands=_steps(ctx, value, path, None, phase, depth, parse_step))
    data = ctx.want_mapping(value, path, "a list or mapping")
    if data is None:
        return None
    check_keys(ctx, data, path, _INCOMPLETE_KEYS)
    fields: dict[str, Any] = {}
    commands = _command_keys(ctx, data, path, phase, depth, parse_step, "on_incomplete")
    if commands is not None:
        fields["commands"] = commands
    if "max_attempts" in data:
        attempts = ctx.want_int(data["max_attempts"], paths.child(path, "max_attempts"), minimum=1)
        if attempts is not None:
            fields["max_attempts"] = attempts
    for key in ("fail_workflow", "commit_required"):
        if key in data:
            flag = ctx.want_bool(data[key], paths.child(path, key))
            if flag is not None:
                fields[key] = flag
    if "prompt" in data and data["prompt"] is not None:
        fields["prompt"] = ctx.want_str(data["prompt"], paths.child(path, "prompt"))
    return OnIncomplete(**{k: v for k, v in fields.items() if v is not None})


def _command_keys(
    ctx: Ctx,
    data: dict[object, object],
    path: str,
    phase: Phase | None,
    depth: int,
    parse_step: StepParser,
    what: str,
) -> tuple[Step, ...] | None:
    present = [k for k in ("shell", "claude", "command", "commands") if k in data]
    if not present:
        ctx.error("E1003", f"{what} needs one of 'shell', 'claude' or 'commands'", path)
        return None
    if len(present) > 1:
        ctx.error("E1008", f"{what} has several command keys: {', '.join(present)}", path)
        return None
    key = present[0]
    at = paths.child(path, key)
    if key == "commands":
        items = ctx.want_list(data[key], at, "a list of commands")
        return None if items is None else _steps(ctx, items, at, None, phase, depth, parse_step)
    if key == "command":
        ctx.warning("W1002", "`command` is deprecated here", at, key=True, help="use `shell`")
    text = ctx.want_str(data[key], at)
    if text is None:
        return None
    check_text(ctx, text, at, phase)
    return (Step(kind="claude" if key == "claude" else "shell", command=text, source=path),)


def _steps(
    ctx: Ctx,
    items: list[object],
    path: str,
    single: str | None,
    phase: Phase | None,
    depth: int,
    parse_step: StepParser,
) -> tuple[Step, ...]:
    steps: list[Step] = []
    for i, item in enumerate(items):
        at = single if single is not None else paths.index(path, i)
        if isinstance(item, str):
            steps.append(command_step(ctx, item, at, phase))
            continue
        step = handler_step(ctx, item, at, phase, depth + 1, parse_step)
        if step is not None:
            steps.append(step)
    return tuple(steps)


def _freeze(value: object) -> object:
    if isinstance(value, dict):
        return tuple((str(k), _freeze(v)) for k, v in value.items())
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


freeze = _freeze
