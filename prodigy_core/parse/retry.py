"""``retry:`` / ``retry_defaults:`` (spec 10 §2-§3) and the item ``retry_config`` (05 §10.4)."""

from __future__ import annotations

from typing import Any, Literal, cast

from prodigy_core.model import (
    Backoff,
    BackoffKind,
    CircuitBreakerSpec,
    ItemRetry,
    RetryMatcher,
    RetrySpec,
)
from prodigy_core.parse import paths
from prodigy_core.parse.context import Ctx
from prodigy_core.parse.durations import want_duration
from prodigy_core.parse.exprs import check_regex
from prodigy_core.parse.suggest import check_keys

RETRY_KEYS = frozenset(
    {
        "attempts",
        "backoff",
        "initial_delay",
        "max_delay",
        "jitter",
        "jitter_factor",
        "retry_on",
        "retry_budget",
        "on_failure",
        "circuit_breaker",
    }
)
ITEM_RETRY_KEYS = frozenset({"max_attempts", "backoff", "initial_delay", "max_delay", "jitter"})
BREAKER_KEYS = frozenset(
    {"name", "failure_threshold", "recovery_timeout", "success_threshold", "half_open_requests"}
)
RETRY_CLASSES = frozenset(
    {
        "network",
        "timeout",
        "server_error",
        "rate_limit",
        "command_failed",
        "commit_required",
        "validation_failed",
        "claude_error",
        "circuit_open",
    }
)
_BACKOFF_KINDS: tuple[BackoffKind, ...] = ("fixed", "linear", "exponential", "fibonacci", "custom")
_BACKOFF_KEYS: dict[str, frozenset[str]] = {
    "fixed": frozenset({"delay"}),
    "linear": frozenset({"increment", "initial"}),
    "exponential": frozenset({"base", "multiplier", "initial"}),
    "fibonacci": frozenset({"initial"}),
    "custom": frozenset({"delays"}),
}


def parse_retry(ctx: Ctx, value: object, path: str) -> RetrySpec | None:
    data = ctx.want_mapping(value, path, "a retry mapping")
    if data is None:
        return None
    check_keys(ctx, data, path, RETRY_KEYS)
    fields: dict[str, Any] = {}
    def at(key: str) -> str:
        return paths.child(path, key)

    if "attempts" in data:
        attempts = ctx.want_int(data["attempts"], at("attempts"), minimum=1)
        if attempts is not None:
            fields["attempts"] = attempts
    if "backoff" in data:
        backoff = parse_backoff(ctx, data["backoff"], at("backoff"))
        if backoff is not None:
            fields["backoff"] = backoff
    for key in ("initial_delay", "max_delay"):
        if key in data:
            seconds = want_duration(ctx, data[key], at(key))
            if seconds is not None:
                fields[key] = seconds
    if "jitter" in data:
        jitter = ctx.want_bool(data["jitter"], at("jitter"))
        if jitter is not None:
            fields["jitter"] = jitter
    if "jitter_factor" in data:
        factor = ctx.want_number(data["jitter_factor"], at("jitter_factor"), low=0.0, high=1.0)
        if factor is not None:
            fields["jitter_factor"] = factor
    if "retry_on" in data:
        fields["retry_on"] = _retry_on(ctx, data["retry_on"], at("retry_on"))
    if "retry_budget" in data and data["retry_budget"] is not None:
        fields["retry_budget"] = want_duration(ctx, data["retry_budget"], at("retry_budget"))
    if "on_failure" in data:
        _exhausted(ctx, data["on_failure"], at("on_failure"), fields)
    if "circuit_breaker" in data and data["circuit_breaker"] is not None:
        fields["circuit_breaker"] = _breaker(ctx, data["circuit_breaker"], at("circuit_breaker"))
    return RetrySpec(**fields)


def parse_item_retry(ctx: Ctx, value: object, path: str) -> ItemRetry | None:
    data = ctx.want_mapping(value, path)
    if data is None:
        return None
    check_keys(ctx, data, path, ITEM_RETRY_KEYS)
    fields: dict[str, Any] = {}
    if "max_attempts" in data:
        attempts = ctx.want_int(data["max_attempts"], paths.child(path, "max_attempts"), minimum=1)
        if attempts is not None:
            fields["max_attempts"] = attempts
    if "backoff" in data:
        backoff = parse_backoff(ctx, data["backoff"], paths.child(path, "backoff"))
        if backoff is not None:
            fields["backoff"] = backoff
    for key in ("initial_delay", "max_delay"):
        if key in data:
            seconds = want_duration(ctx, data[key], paths.child(path, key))
            if seconds is not None:
                fields[key] = seconds
    if "jitter" in data:
        jitter = ctx.want_bool(data["jitter"], paths.child(path, "jitter"))
        if jitter is not None:
            fields["jitter"] = jitter
    return ItemRetry(**fields)


def parse_backoff(ctx: Ctx, value: object, path: str) -> Backoff | None:
    """Bare kind names and ``{kind: {...}}`` mappings; original capitalised names too."""
    if isinstance(value, str):
        kind = _kind(value)
        if kind is None or kind == "custom":
            ctx.error(
                "E1005",
                f"invalid backoff {value!r}: expected one of {', '.join(_BACKOFF_KINDS)}",
                path,
                help="custom backoff needs {custom: {delays: [...]}}" if kind == "custom" else None,
            )
            return None
        return Backoff(kind=kind)
    data = ctx.want_mapping(value, path, "a backoff name or mapping")
    if data is None:
        return None
    if len(data) != 1:
        ctx.error("E1004", "backoff mapping must have exactly one kind key", path)
        return None
    ((raw_kind, options),) = data.items()
    kind = _kind(raw_kind) if isinstance(raw_kind, str) else None
    sub = paths.child(path, raw_kind)
    if kind is None:
        ctx.error(
            "E1005",
            f"invalid backoff kind {raw_kind!r}: expected one of {', '.join(_BACKOFF_KINDS)}",
            sub,
            key=True,
        )
        return None
    if options is None:
        options = {}
    opts = ctx.want_mapping(options, sub)
    if opts is None:
        return None
    check_keys(ctx, opts, sub, _BACKOFF_KEYS[kind])
    fields: dict[str, Any] = {"kind": kind}
    for key, target in (("delay", "initial"), ("initial", "initial"), ("increment", "increment")):
        if key in opts:
            fields[target] = want_duration(ctx, opts[key], paths.child(sub, key))
    for key in ("base", "multiplier"):
        if key in opts:
            base = ctx.want_number(opts[key], paths.child(sub, key), low=0.0)
            if base is not None:
                fields["base"] = base
    if "delays" in opts:
        delays_path = paths.child(sub, "delays")
        items = ctx.want_list(opts["delays"], delays_path)
        delays: list[float] = []
        for i, item in enumerate(items or ()):
            seconds = want_duration(ctx, item, paths.index(delays_path, i))
            if seconds is not None:
                delays.append(seconds)
        fields["delays"] = tuple(delays)
    elif kind == "custom":
        ctx.error("E1003", "custom backoff needs 'delays'", sub)
    return Backoff(**fields)


def _kind(text: str) -> BackoffKind | None:
    lowered = text.strip().lower()
    return lowered if lowered in _BACKOFF_KINDS else None


def _retry_on(ctx: Ctx, value: object, path: str) -> tuple[RetryMatcher, ...]:
    items = ctx.want_list(value, path, "a list of retry matchers")
    matchers: list[RetryMatcher] = []
    for i, item in enumerate(items or ()):
        at = paths.index(path, i)
        if isinstance(item, str):
            if item in RETRY_CLASSES:
                matchers.append(RetryMatcher(kind=item))
            else:
                ctx.error(
                    "E1005",
                    f"invalid retry_on matcher {item!r}: expected one of "
                    f"{', '.join(sorted(RETRY_CLASSES))}, {{pattern: …}} or {{exit_code: […]}}",
                    at,
                )
            continue
        data = ctx.want_mapping(item, at, "a retry matcher")
        if data is None:
            continue
        check_keys(ctx, data, at, frozenset({"pattern", "exit_code"}))
        if "pattern" in data:
            pattern = ctx.want_str(data["pattern"], paths.child(at, "pattern"))
            if pattern is not None:
                check_regex(ctx, pattern, paths.child(at, "pattern"))
                matchers.append(RetryMatcher(kind="pattern", pattern=pattern))
        elif "exit_code" in data:
            codes_value = data["exit_code"]
            codes_path = paths.child(at, "exit_code")
            raw = codes_value if isinstance(codes_value, list) else [codes_value]
            codes = [c for c in raw if isinstance(c, int) and not isinstance(c, bool)]
            if len(codes) != len(raw) or not codes:
                ctx.wrong_type(codes_value, "an exit code or a list of exit codes", codes_path)
            else:
                matchers.append(RetryMatcher(kind="exit_code", exit_codes=tuple(codes)))
        else:
            ctx.error("E1003", "retry matcher needs 'pattern' or 'exit_code'", at)
    return tuple(matchers)


def _exhausted(ctx: Ctx, value: object, path: str, fields: dict[str, object]) -> None:
    if isinstance(value, str) and value in ("stop", "continue"):
        fields["exhausted"] = cast(Literal["stop", "continue"], value)
        return
    if isinstance(value, dict) and set(value) == {"fallback"}:
        sub = paths.child(path, "fallback")
        data = ctx.want_mapping(value["fallback"], sub)
        if data is None:
            return
        check_keys(ctx, data, sub, frozenset({"command"}))
        if "command" not in data:
            ctx.error("E1003", "fallback needs 'command'", sub)
            return
        command = ctx.want_str(data["command"], paths.child(sub, "command"))
        if command is not None:
            fields["exhausted"] = "fallback"
            fields["fallback_command"] = command
        return
    ctx.error(
        "E1005",
        f"invalid retry on_failure {value!r}: expected stop, continue or {{fallback: {{command}}}}",
        path,
    )


def _breaker(ctx: Ctx, value: object, path: str) -> CircuitBreakerSpec | None:
    data = ctx.want_mapping(value, path)
    if data is None:
        return None
    check_keys(ctx, data, path, BREAKER_KEYS)
    fields: dict[str, Any] = {}
    if "name" in data:
        fields["name"] = ctx.want_str(data["name"], paths.child(path, "name"))
    for key in ("failure_threshold", "success_threshold", "half_open_requests"):
        if key in data:
            number = ctx.want_int(data[key], paths.child(path, key), minimum=1)
            if number is not None:
                fields[key] = number
    if "recovery_timeout" in data:
        seconds = want_duration(ctx, data["recovery_timeout"], paths.child(path, "recovery_timeout"))
        if seconds is not None:
            fields["recovery_timeout"] = seconds
    return CircuitBreakerSpec(**fields)
