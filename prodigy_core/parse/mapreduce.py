"""MapReduce blocks: ``setup``, ``map``, ``reduce``, ``error_policy`` and its top-level
shorthands (spec 05 §1, §4.3, §10, §11; spec 01 §3.3)."""

from __future__ import annotations

from typing import Any

from pyrsistent import pmap

from prodigy_core.model import (
    CaptureOutputSpec,
    ErrorPolicy,
    JobBreaker,
    MapSpec,
    StepList,
    TimeoutConfig,
)
from prodigy_core.parse import paths
from prodigy_core.parse.context import Ctx, Phase
from prodigy_core.parse.durations import want_count, want_duration
from prodigy_core.parse.exprs import check_distinct, check_expression, check_json_path, check_regex
from prodigy_core.parse.names import check_variable_name
from prodigy_core.parse.retry import parse_item_retry
from prodigy_core.parse.steps import parse_step_list
from prodigy_core.parse.suggest import check_keys
from prodigy_core.parse.variables import check_text

MAP_KEYS = frozenset(
    {
        "input",
        "json_path",
        "filter",
        "sort_by",
        "distinct",
        "offset",
        "max_items",
        "max_parallel",
        "agent_template",
        "agent_timeout_secs",
        "timeout_config",
    }
)
SHORTHANDS = ("on_item_failure", "continue_on_failure", "max_failures", "failure_threshold", "error_collection")
POLICY_KEYS = frozenset(SHORTHANDS) | {"retry_config", "circuit_breaker"}
_TIMEOUT_KEYS = frozenset(
    {
        "agent_timeout_secs",
        "command_timeouts",
        "timeout_policy",
        "cleanup_grace_period_secs",
        "timeout_action",
        "enable_monitoring",
    }
)
_CAPTURE_KEYS = frozenset({"command_index", "source", "pattern", "json_path", "max_size", "multiline", "default"})
HIGH_PARALLELISM = 64


def parse_phase_steps(
    ctx: Ctx, value: object, path: str, phase: Phase, *, capture_outputs: bool = False
) -> StepList | None:
    """A list of steps, or ``{commands, timeout[, capture_outputs]}``."""
    if isinstance(value, list):
        return StepList(steps=parse_step_list(ctx, value, path, phase))
    data = ctx.want_mapping(value, path, "a list of steps or a mapping with `commands`")
    if data is None:
        return None
    valid = {"commands", "timeout"} | ({"capture_outputs"} if capture_outputs else set())
    check_keys(ctx, data, path, valid)
    if "commands" not in data:
        ctx.error("E1003", f"`{path[2:]}` needs `commands`", path)
        return None
    raw_commands = data["commands"]
    steps = parse_step_list(ctx, raw_commands, paths.child(path, "commands"), phase)
    timeout = None
    if "timeout" in data and data["timeout"] is not None:
        timeout = want_duration(ctx, data["timeout"], paths.child(path, "timeout"), reference=True)
    captures: tuple[tuple[str, CaptureOutputSpec], ...] = ()
    if capture_outputs and data.get("capture_outputs") is not None:
        count = len(raw_commands) if isinstance(raw_commands, list) else 0
        captures = _capture_outputs(ctx, data["capture_outputs"], paths.child(path, "capture_outputs"), count)
    return StepList(steps=steps, timeout=timeout, capture_outputs=captures)


def _capture_outputs(
    ctx: Ctx, value: object, path: str, count: int
) -> tuple[tuple[str, CaptureOutputSpec], ...]:
    data = ctx.want_mapping(value, path, "a mapping of names to step indexes or specs")
    if data is None:
        return ()
    out: list[tuple[str, CaptureOutputSpec]] = []
    for name, spec in data.items():
        at = paths.child(path, name)
        if not isinstance(name, str):
            ctx.error("E1004", f"variable name {name!r} is not a string", at, key=True)
            continue
        if not check_variable_name(ctx, name, at):
            continue
        parsed = _capture_output(ctx, spec, at, count)
        if parsed is not None:
            out.append((name, parsed))
    return tuple(out)


def _capture_output(ctx: Ctx, spec: object, at: str, count: int) -> CaptureOutputSpec | None:
    if isinstance(spec, int) and not isinstance(spec, bool):
        index = _command_index(ctx, spec, at, count)
        return None if index is None else CaptureOutputSpec(command_index=index)
    data = ctx.want_mapping(spec, at, "a step index or a capture spec")
    if data is None:
        return None
    check_keys(ctx, data, at, _CAPTURE_KEYS)
    if "command_index" not in data:
        ctx.error("E1003", "capture_outputs entry needs 'command_index'", at)
        return None
    index = _command_index(ctx, data["command_index"], paths.child(at, "command_index"), count)
    fields: dict[str, Any] = {}
    if "source" in data:
        source = ctx.want_enum(data["source"], paths.child(at, "source"), ("stdout", "stderr", "both", "combined"))
        if source is not None:
            fields["source"] = "both" if source == "combined" else source
    if "pattern" in data and data["pattern"] is not None:
        pattern = ctx.want_str(data["pattern"], paths.child(at, "pattern"))
        if pattern is not None:
            check_regex(ctx, pattern, paths.child(at, "pattern"))
            fields["pattern"] = pattern
    if "json_path" in data and data["json_path"] is not None:
        json_path = ctx.want_str(data["json_path"], paths.child(at, "json_path"))
        if json_path is not None:
            check_json_path(ctx, json_path, paths.child(at, "json_path"))
            fields["json_path"] = json_path
    if "max_size" in data:
        size = ctx.want_int(data["max_size"], paths.child(at, "max_size"), minimum=1)
        if size is not None:
            fields["max_size"] = size
    if "multiline" in data:
        mode = ctx.want_enum(
            data["multiline"], paths.child(at, "multiline"), ("preserve", "join", "first_line", "last_line", "array")
        )
        if mode is not None:
            fields["multiline"] = mode
    if "default" in data:
        fields["default"] = _freeze_json(data["default"])
        fields["has_default"] = True
    if index is None:
        return None
    return CaptureOutputSpec(command_index=index, **fields)


def _freeze_json(value: object) -> object:
    """A JSON value made immutable without losing its shape: mappings become ``PMap``s,
    lists tuples (``prodigy_core.job_capture.thaw`` turns it back)."""
    if isinstance(value, dict):
        return pmap({str(k): _freeze_json(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_freeze_json(v) for v in value)
    return value


def _command_index(ctx: Ctx, value: object, path: str, count: int) -> int | None:
    index = ctx.want_int(value, path, minimum=0)
    if index is not None and index >= count:
        ctx.error("E1005", f"command_index {index} is out of range: setup has {count} step(s)", path)
        return None
    return index


def parse_map(ctx: Ctx, value: object, path: str) -> MapSpec | None:
    data = ctx.want_mapping(value, path, "a mapping")
    if data is None:
        return None
    check_keys(ctx, data, path, MAP_KEYS, "map")
    def at(key: str) -> str:
        return paths.child(path, key)

    fields: dict[str, Any] = {}
    ok = True
    if "input" not in data:
        ctx.error("E1003", "missing required key 'input' in `map`", at("input"))
        ok = False
    else:
        text = ctx.want_str(data["input"], at("input"))
        if text is None:
            ok = False
        else:
            check_text(ctx, text, at("input"), "setup")
            fields["input"] = text
    if data.get("json_path") is not None:
        json_path = ctx.want_str(data["json_path"], at("json_path"))
        if json_path is not None:
            check_json_path(ctx, json_path, at("json_path"))
            fields["json_path"] = json_path
    for key in ("filter", "sort_by"):
        if data.get(key) is not None:
            text = ctx.want_str(data[key], at(key))
            if text is not None:
                check_expression(ctx, key, text, at(key))
                fields[key] = text
    if data.get("distinct") is not None:
        text = ctx.want_str(data["distinct"], at("distinct"))
        if text is not None:
            check_distinct(ctx, text, at("distinct"))
            fields["distinct"] = text
    for key, minimum in (("offset", 0), ("max_items", 1), ("max_parallel", 1)):
        if data.get(key) is not None:
            number = want_count(ctx, data[key], at(key), minimum=minimum, reference=True)
            if number is not None:
                fields[key] = number
    parallel = fields.get("max_parallel")
    if isinstance(parallel, int) and parallel > HIGH_PARALLELISM:
        ctx.warning("W1008", f"very high parallelism: max_parallel is {parallel}", at("max_parallel"),
                    help=f"values above {HIGH_PARALLELISM} rarely help and can exhaust resources")
    if data.get("agent_timeout_secs") is not None:
        fields["agent_timeout_secs"] = want_duration(ctx, data["agent_timeout_secs"], at("agent_timeout_secs"), reference=True)
    if data.get("timeout_config") is not None:
        config = _timeout_config(ctx, data["timeout_config"], at("timeout_config"))
        fields["timeout_config"] = config
        if config is not None and config.agent_timeout_secs is not None and "agent_timeout_secs" not in fields:
            fields["agent_timeout_secs"] = config.agent_timeout_secs
    if "agent_template" not in data:
        ctx.error("E1003", "missing required key 'agent_template' in `map`", at("agent_template"))
        ok = False
    else:
        template = data["agent_template"]
        template_path = at("agent_template")
        if isinstance(template, dict) and "commands" in template:
            ctx.warning("W1002", "`agent_template: {commands: [...]}` is deprecated", template_path,
                        help="write the step list directly under `agent_template`")
            check_keys(ctx, template, template_path, {"commands"})
            template = template["commands"]
            template_path = paths.child(template_path, "commands")
        fields["agent_template"] = parse_step_list(ctx, template, template_path, "agent")
    if not ok:
        return None
    return MapSpec(**{k: v for k, v in fields.items() if v is not None})


def _timeout_config(ctx: Ctx, value: object, path: str) -> TimeoutConfig | None:
    data = ctx.want_mapping(value, path)
    if data is None:
        return None
    check_keys(ctx, data, path, _TIMEOUT_KEYS)
    fields: dict[str, Any] = {}
    def at(key: str) -> str:
        return paths.child(path, key)

    if data.get("agent_timeout_secs") is not None:
        fields["agent_timeout_secs"] = want_duration(ctx, data["agent_timeout_secs"], at("agent_timeout_secs"), reference=True)
    if data.get("cleanup_grace_period_secs") is not None:
        seconds = want_duration(ctx, data["cleanup_grace_period_secs"], at("cleanup_grace_period_secs"))
        if seconds is not None:
            fields["cleanup_grace_period_secs"] = seconds
    if data.get("command_timeouts") is not None:
        table = ctx.want_mapping(data["command_timeouts"], at("command_timeouts"))
        entries: list[tuple[str, float]] = []
        for key, item in (table or {}).items():
            seconds = want_duration(ctx, item, paths.child(at("command_timeouts"), key))
            if seconds is not None:
                entries.append((str(key), seconds))
        fields["command_timeouts"] = tuple(entries)
    if "timeout_policy" in data:
        fields["timeout_policy"] = ctx.want_enum(
            data["timeout_policy"], at("timeout_policy"), ("hybrid", "per_agent", "per_command"),
            {"Hybrid": "hybrid", "PerAgent": "per_agent", "PerCommand": "per_command"},
        )
    if "timeout_action" in data:
        fields["timeout_action"] = ctx.want_enum(
            data["timeout_action"], at("timeout_action"), ("dlq", "skip", "fail", "graceful_terminate"),
            {"Dlq": "dlq", "Skip": "skip", "Fail": "fail", "GracefulTerminate": "graceful_terminate"},
        )
    if "enable_monitoring" in data:
        fields["enable_monitoring"] = ctx.want_bool(data["enable_monitoring"], at("enable_monitoring"))
    return TimeoutConfig(**{k: v for k, v in fields.items() if v is not None})


def parse_error_policy(ctx: Ctx, top: dict[object, object]) -> ErrorPolicy:
    """``error_policy`` plus the top-level shorthands; the value inside wins (W1006)."""
    merged: dict[str, tuple[object, str]] = {}
    for key in SHORTHANDS:
        if key in top:
            merged[key] = (top[key], paths.child("$", key))
    fields: dict[str, Any] = {}
    policy = top.get("error_policy")
    if policy is not None:
        data = ctx.want_mapping(policy, "$.error_policy")
        if data is not None:
            check_keys(ctx, data, "$.error_policy", POLICY_KEYS)
            for key in SHORTHANDS:
                if key in data:
                    if key in merged:
                        ctx.warning("W1006", f"'{key}' is set both at top level and in error_policy; "
                                    "the error_policy value is used", paths.child("$", key), key=True)
                    merged[key] = (data[key], paths.child("$.error_policy", key))
            if data.get("retry_config") is not None:
                fields["retry_config"] = parse_item_retry(ctx, data["retry_config"], "$.error_policy.retry_config")
            if data.get("circuit_breaker") is not None:
                fields["circuit_breaker"] = _job_breaker(ctx, data["circuit_breaker"], "$.error_policy.circuit_breaker")
    for key, (value, at) in merged.items():
        parsed = _policy_value(ctx, key, value, at)
        if parsed is not None:
            fields[key] = parsed
    if fields.get("continue_on_failure") is False and "on_item_failure" not in fields:
        fields["on_item_failure"] = "stop"
    return ErrorPolicy(**{k: v for k, v in fields.items() if v is not None})


def _policy_value(ctx: Ctx, key: str, value: object, at: str) -> object:
    if key == "on_item_failure":
        return ctx.want_enum(value, at, ("dlq", "retry", "skip", "stop"))
    if key == "continue_on_failure":
        return ctx.want_bool(value, at)
    if key == "max_failures":
        return ctx.want_int(value, at, minimum=1)
    if key == "failure_threshold":
        return ctx.want_number(value, at, low=0.0, high=1.0)
    text = value if isinstance(value, str) else ""
    if text in ("aggregate", "immediate"):
        return text
    if text.startswith("batched:") and text[len("batched:"):].strip().isdigit() and int(text[8:]) >= 1:
        return text
    ctx.error("E1005", f"invalid error_collection {value!r}: expected aggregate, immediate or batched:N", at)
    return None


def _job_breaker(ctx: Ctx, value: object, path: str) -> JobBreaker | None:
    data = ctx.want_mapping(value, path)
    if data is None:
        return None
    check_keys(ctx, data, path, {"failure_threshold", "success_threshold", "timeout", "half_open_requests"})
    fields: dict[str, Any] = {}
    for key in ("failure_threshold", "success_threshold", "half_open_requests"):
        if key in data:
            fields[key] = ctx.want_int(data[key], paths.child(path, key), minimum=1)
    if data.get("timeout") is not None:
        fields["timeout"] = want_duration(ctx, data["timeout"], paths.child(path, "timeout"))
    return JobBreaker(**{k: v for k, v in fields.items() if v is not None})
