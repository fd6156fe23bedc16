"""The one step schema (spec 02) and the legacy step forms (spec 01 §5).

``parse_step`` checks one step mapping in any scope and returns a ``Step`` (or ``None``
when the step cannot be built).  The phase is only used for W1004 checks of the
interpolated strings; the fields accepted never depend on it.
"""

from __future__ import annotations

from typing import Any, cast

import attrs

from prodigy_core.model import CaptureFormat, CaptureStreams, CommitConfig, Step, StepKind
from prodigy_core.parse import paths
from prodigy_core.parse.context import Ctx, Phase
from prodigy_core.parse.durations import want_duration
from prodigy_core.parse.exprs import check_expression, check_regex
from prodigy_core.parse.handlers import parse_on_exit_code, parse_on_failure, parse_on_success
from prodigy_core.parse.names import check_step_id, check_variable_name
from prodigy_core.parse.repeat import parse_foreach, parse_goal_seek
from prodigy_core.parse.retry import parse_retry
from prodigy_core.parse.step_parts import (
    parse_outputs,
    parse_step_validate,
    parse_validate,
    parse_write_file,
)
from prodigy_core.parse.suggest import check_keys, unknown_key
from prodigy_core.parse.variables import check_text

COMMAND_KEYS: tuple[str, ...] = ("claude", "shell", "write_file", "foreach", "goal_seek", "workflow", "test")
NOT_YET = ("workflow",)
UNSUPPORTED = {
    "analyze": "the original tool's `analyze:` step kind is not supported; "
    "run your analysis as a `shell:` or `claude:` step",
    "handler": "the original tool's `handler:` step kind is not supported; "
    "use `shell:` or `claude:` steps with on_failure/on_success handlers",
}
FIELD_KEYS = frozenset(
    {
        "name",
        "id",
        "when",
        "timeout",
        "retry",
        "on_success",
        "on_failure",
        "on_exit_code",
        "allow_failure",
        "continue_on_error",
        "capture",
        "capture_format",
        "capture_streams",
        "capture_output",
        "output_file",
        "env",
        "clear_env",
        "working_dir",
        "commit_required",
        "auto_commit",
        "commit_config",
        "outputs",
        "validate",
        "step_validate",
        "skip_validation",
        "ignore_validation_failure",
        "validation_timeout",
        "model",
        "with",
        "temporary",
    }
)
STEP_KEYS = FIELD_KEYS | frozenset(COMMAND_KEYS)
LEGACY_NAME_KEYS = frozenset({"args", "options", "metadata"})
_CAPTURE_FORMATS: tuple[CaptureFormat, ...] = ("string", "json", "lines", "number", "boolean")
_COMMIT_KEYS = frozenset(
    {
        "message_template",
        "message_pattern",
        "author",
        "sign",
        "include_files",
        "exclude_files",
        "squash",
    }
)
_STREAM_KEYS = ("stdout", "stderr", "exit_code", "success", "duration")
_STREAM_STRINGS = {
    "stdout": CaptureStreams(),
    "stderr": CaptureStreams(stdout=False, stderr=True),
    "both": CaptureStreams(stdout=True, stderr=True),
}


def parse_step_list(ctx: Ctx, value: object, path: str, phase: Phase | None) -> tuple[Step, ...]:
    items = ctx.want_list(value, path, "a list of steps")
    steps: list[Step] = []
    for i, item in enumerate(items or ()):
        step = parse_step(ctx, item, paths.index(path, i), phase, 0)
        if step is not None:
            steps.append(step)
    return tuple(steps)


def parse_step(ctx: Ctx, value: object, path: str, phase: Phase | None, depth: int) -> Step | None:
    if isinstance(value, str):
        return _bare_string(ctx, value, path, phase)
    data = ctx.want_mapping(value, path, "a step (a mapping)")
    if data is None:
        return None
    for key, why in UNSUPPORTED.items():
        if key in data:
            ctx.error("E1016", f"unsupported step kind '{key}'", paths.child(path, key), key=True, help=why)
            return None
    kinds = [k for k in data if isinstance(k, str) and k in COMMAND_KEYS]
    if not kinds:
        if "name" in data:
            return _legacy_name(ctx, data, path, phase, depth)
        ctx.error(
            "E1007",
            "step has no command; expected one of claude, shell, write_file, foreach, goal_seek, workflow",
            path,
        )
        _check_step_keys(ctx, data, path)
        return None
    if len(kinds) > 1:
        ctx.error("E1008", f"step has more than one command key: {', '.join(kinds)}", path)
        _check_step_keys(ctx, data, path)
        return None
    kind = kinds[0]
    if kind in NOT_YET:
        ctx.error(
            "E1016",
            f"`{kind}` steps are not implemented yet in this version",
            paths.child(path, kind),
            key=True,
            help="sub-workflow composition is not available yet; inline the steps instead",
        )
        return None
    _check_step_keys(ctx, data, path)
    base = _command(ctx, kind, data, path, phase, depth)
    if base is None:
        return None
    return _fields(ctx, base, data, path, phase, depth)


def _check_step_keys(ctx: Ctx, data: dict[object, object], path: str) -> None:
    for key in data:
        if not isinstance(key, str) or key not in STEP_KEYS:
            unknown_key(ctx, key, paths.child(path, key), STEP_KEYS, "step")


def _bare_string(ctx: Ctx, value: str, path: str, phase: Phase | None) -> Step:
    text = value.strip()
    command = text if text.startswith("/") else f"/{text}"
    ctx.warning(
        "W1002",
        "a bare string step is deprecated",
        path,
        help=f'write `- claude: "{command}"` with `commit_required: true`',
    )
    check_text(ctx, value, path, phase)
    return Step(kind="claude", command=command, commit_required=True, source=path)


def _legacy_name(
    ctx: Ctx, data: dict[object, object], path: str, phase: Phase | None, depth: int
) -> Step | None:
    name = ctx.want_str(data["name"], paths.child(path, "name"))
    if name is None:
        return None
    parts = [name.strip() if name.strip().startswith("/") else "/" + name.strip()]
    if "args" in data:
        args_path = paths.child(path, "args")
        raw = data["args"]
        items = raw if isinstance(raw, list) else [raw]
        for i, item in enumerate(items):
            at = paths.index(args_path, i) if isinstance(raw, list) else args_path
            text = ctx.want_str(item, at, numbers=True)
            if text is not None:
                check_text(ctx, text, at, phase)
                parts.append(text)
    for ignored in ("options", "metadata"):
        if ignored in data:
            ctx.warning("W1002", f"'{ignored}' of the legacy name form is ignored", paths.child(path, ignored), key=True)
    ctx.warning(
        "W1002",
        "a step with only `name:` (and `args:`) is deprecated",
        path,
        help=f'write `claude: "{" ".join(parts)}"`',
    )
    valid = (FIELD_KEYS - {"name"}) | LEGACY_NAME_KEYS
    rest = {k: v for k, v in data.items() if k != "name"}
    for key in rest:
        if not isinstance(key, str) or key not in valid:
            unknown_key(ctx, key, paths.child(path, key), valid | {"name"}, "step")
    base = Step(kind="claude", command=" ".join(parts), source=path)
    fields_data = {k: v for k, v in rest.items() if k not in LEGACY_NAME_KEYS}
    return _fields(ctx, base, fields_data, path, phase, depth)


def _command(
    ctx: Ctx, kind: str, data: dict[object, object], path: str, phase: Phase | None, depth: int
) -> Step | None:
    at = paths.child(path, kind)
    if kind == "write_file":
        spec = parse_write_file(ctx, data[kind], at, phase)
        return None if spec is None else Step(kind="write_file", write_file=spec, source=path)
    if kind == "test":
        return _legacy_test(ctx, data[kind], at, path, phase, depth)
    if kind == "goal_seek":
        goal = parse_goal_seek(ctx, data[kind], at, phase)
        return None if goal is None else Step(kind="goal_seek", command=goal.goal,
                                              goal_seek=goal, source=path)
    if kind == "foreach":
        each = parse_foreach(ctx, data[kind], at, depth, parse_step)
        if each is None:
            return None
        label = each.source if each.source is not None else (each.items_json or "")
        return Step(kind="foreach", command=label, foreach=each, source=path)
    text = ctx.want_str(data[kind], at)
    if text is None:
        return None
    check_text(ctx, text, at, phase)
    return Step(kind=cast(StepKind, kind), command=text, source=path)


def _legacy_test(
    ctx: Ctx, value: object, at: str, path: str, phase: Phase | None, depth: int
) -> Step | None:
    data = ctx.want_mapping(value, at, "a mapping with `command`")
    if data is None:
        return None
    ctx.warning(
        "W1002",
        "`test:` steps are deprecated",
        at,
        key=True,
        help="write `shell: <command>` with the same `on_failure`",
    )
    check_keys(ctx, data, at, frozenset({"command", "on_failure"}))
    if "command" not in data:
        ctx.error("E1003", "`test` needs `command`", at)
        return None
    text = ctx.want_str(data["command"], paths.child(at, "command"))
    if text is None:
        return None
    check_text(ctx, text, paths.child(at, "command"), phase)
    on_failure = None
    if "on_failure" in data:
        on_failure = parse_on_failure(
            ctx, data["on_failure"], paths.child(at, "on_failure"), phase, depth, parse_step
        )
    return Step(kind="shell", command=text, on_failure=on_failure, legacy_test=True, source=path)


def _fields(
    ctx: Ctx, step: Step, data: dict[object, object], path: str, phase: Phase | None, depth: int
) -> Step:
    def at(key: str) -> str:
        return paths.child(path, key)

    fields: dict[str, Any] = {}
    if "name" in data:
        fields["name"] = ctx.want_str(data["name"], at("name"), numbers=True)
    if "id" in data:
        ident = ctx.want_str(data["id"], at("id"))
        if ident is not None and check_step_id(ctx, ident, at("id")):
            fields["id"] = ident
    if "when" in data and data["when"] is not None:
        when = data["when"]
        if isinstance(when, bool):
            fields["when"] = when
        elif isinstance(when, str):
            check_expression(ctx, "when", when, at("when"))
            fields["when"] = when
        else:
            ctx.wrong_type(when, "an expression string or a boolean", at("when"))
    if "timeout" in data and data["timeout"] is not None:
        fields["timeout"] = want_duration(ctx, data["timeout"], at("timeout"), reference=True)
    if "retry" in data and data["retry"] is not None:
        fields["retry"] = parse_retry(ctx, data["retry"], at("retry"))
    if "on_success" in data:
        fields["on_success"] = parse_on_success(ctx, data["on_success"], at("on_success"), phase, depth, parse_step)
    if "on_failure" in data and step.on_failure is None:
        fields["on_failure"] = parse_on_failure(ctx, data["on_failure"], at("on_failure"), phase, depth, parse_step)
    if "on_exit_code" in data:
        fields["on_exit_code"] = parse_on_exit_code(
            ctx, data["on_exit_code"], at("on_exit_code"), phase, depth, parse_step
        )
    allow = False
    for key in ("allow_failure", "continue_on_error"):
        if key in data:
            allow = bool(ctx.want_bool(data[key], at(key))) or allow
    fields["allow_failure"] = allow
    _capture(ctx, data, path, fields)
    for key in ("output_file", "working_dir", "model"):
        if key in data and data[key] is not None:
            text = ctx.want_str(data[key], at(key))
            if text is not None:
                check_text(ctx, text, at(key), phase)
                fields[key] = text
    if "env" in data and data["env"] is not None:
        fields["env"] = _step_env(ctx, data["env"], at("env"), phase)
    for key in ("clear_env", "commit_required", "auto_commit", "skip_validation", "ignore_validation_failure"):
        if key in data:
            flag = ctx.want_bool(data[key], at(key))
            if flag is not None:
                fields[key] = flag
    if "commit_config" in data and data["commit_config"] is not None:
        fields["commit_config"] = _commit_config(ctx, data["commit_config"], at("commit_config"), phase)
    if "outputs" in data and data["outputs"] is not None:
        if "id" not in data:
            ctx.error("E1003", "`outputs` needs an `id` on the step", at("outputs"), key=True)
        fields["outputs"] = parse_outputs(ctx, data["outputs"], at("outputs"))
    if "validate" in data and data["validate"] is not None:
        fields["validate"] = parse_validate(ctx, data["validate"], at("validate"), phase, depth, parse_step)
    if "step_validate" in data and data["step_validate"] is not None:
        fields["step_validate"] = parse_step_validate(ctx, data["step_validate"], at("step_validate"), phase)
    if "validation_timeout" in data and data["validation_timeout"] is not None:
        fields["validation_timeout"] = want_duration(ctx, data["validation_timeout"], at("validation_timeout"))
    if "temporary" in data:
        ctx.want_bool(data["temporary"], at("temporary"))
        ctx.warning(
            "W1002",
            "`temporary` has no effect: step env is always scoped to the step",
            at("temporary"),
            key=True,
            help="remove `temporary`",
        )
    return attrs.evolve(step, **{k: v for k, v in fields.items() if v is not None})


def _capture(ctx: Ctx, data: dict[object, object], path: str, fields: dict[str, object]) -> None:
    def at(key: str) -> str:
        return paths.child(path, key)

    if "capture" in data and data["capture"] is not None:
        name = ctx.want_str(data["capture"], at("capture"))
        if name is not None and check_variable_name(ctx, name, at("capture")):
            fields["capture"] = name
    if "capture_output" in data:
        value = data["capture_output"]
        if isinstance(value, str) and value.strip().lower() not in ("true", "false"):
            if "capture" in data:
                ctx.error("E1017", "`capture` and a named `capture_output` conflict; use `capture`", at("capture_output"), key=True)
            elif check_variable_name(ctx, value, at("capture_output")):
                fields["capture"] = value
        else:
            flag = ctx.want_bool(value, at("capture_output"))
            if flag is not None:
                fields["capture_output"] = flag
    if "capture_format" in data:
        fmt = ctx.want_enum(data["capture_format"], at("capture_format"), _CAPTURE_FORMATS)
        if fmt is not None:
            fields["capture_format"] = fmt
    if "capture_streams" in data:
        fields["capture_streams"] = _streams(ctx, data["capture_streams"], at("capture_streams"))


def _streams(ctx: Ctx, value: object, path: str) -> CaptureStreams | None:
    if isinstance(value, str):
        streams = _STREAM_STRINGS.get(value.strip())
        if streams is None:
            ctx.error("E1005", f"invalid capture_streams {value!r}: expected stdout, stderr or both", path)
            return None
        ctx.warning("W1002", "the string form of capture_streams is deprecated", path, help="use the mapping form, e.g. {stdout: true, stderr: true}")
        return streams
    data = ctx.want_mapping(value, path, "a mapping of stream flags")
    if data is None:
        return None
    check_keys(ctx, data, path, frozenset(_STREAM_KEYS))
    flags: dict[str, bool] = {}
    for key in _STREAM_KEYS:
        if key in data:
            flag = ctx.want_bool(data[key], paths.child(path, key))
            if flag is not None:
                flags[key] = flag
    return CaptureStreams(**flags)


def _step_env(ctx: Ctx, value: object, path: str, phase: Phase | None) -> tuple[tuple[str, str], ...]:
    data = ctx.want_mapping(value, path, "a mapping of names to strings")
    if data is None:
        return ()
    pairs: list[tuple[str, str]] = []
    for key, item in data.items():
        at = paths.child(path, key)
        if not isinstance(key, str):
            ctx.error("E1004", f"environment name {key!r} is not a string", at, key=True)
            continue
        if isinstance(item, bool):
            text: str | None = "true" if item else "false"
        else:
            text = ctx.want_str(item, at, numbers=True)
        if text is not None:
            check_text(ctx, text, at, phase)
            pairs.append((key, text))
    return tuple(pairs)


def _commit_config(ctx: Ctx, value: object, path: str, phase: Phase | None) -> CommitConfig | None:
    data = ctx.want_mapping(value, path)
    if data is None:
        return None
    check_keys(ctx, data, path, _COMMIT_KEYS)
    fields: dict[str, Any] = {}
    for key in ("message_template", "message_pattern", "author"):
        if key in data and data[key] is not None:
            text = ctx.want_str(data[key], paths.child(path, key))
            if text is None:
                continue
            if key == "message_template":
                check_text(ctx, text, paths.child(path, key), phase)
            if key == "message_pattern":
                check_regex(ctx, text, paths.child(path, key))
            fields[key] = text
    for key in ("sign", "squash"):
        if key in data:
            flag = ctx.want_bool(data[key], paths.child(path, key))
            if flag is not None:
                fields[key] = flag
    for key in ("include_files", "exclude_files"):
        if key in data and data[key] is not None:
            globs = ctx.want_str_list(data[key], paths.child(path, key))
            if globs is not None:
                fields[key] = globs
    return CommitConfig(**fields)
