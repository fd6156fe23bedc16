"""Claude invocation settings and the exact command line (spec 07 §1–§2).

Pure: the caller passes Prodigy's environment, the workflow's ``claude_config`` and the
parsed config files; ``resolve_settings`` applies the precedence of §2.1 and
``invocation`` builds the argument vector (never a shell string) and decides whether the
prompt goes on standard input (§1.2).
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping

import attrs

from prodigy_core.reprs import value_class

ROOT_SAFE_PERMISSIONS = (
    "--permission-mode", "acceptEdits",
    "--allowedTools", "Bash,Edit,Write,Read,Glob,Grep,NotebookEdit",
)
NON_ROOT_PERMISSIONS = ("--dangerously-skip-permissions",)


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class ClaudeSettings:
    executable: str = "claude"
    permission_args: tuple[str, ...] | None = None
    extra_args: tuple[str, ...] = ()
    model: str | None = None
    idle_timeout: float = 900.0
    prompt_stdin_threshold: int = 100_000
    console_output: bool | None = None


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class Invocation:
    argv: tuple[str, ...]
    stdin: str | None = None


class SettingsError(ValueError):
    """A setting has a value of the wrong shape (reported with its source)."""


def _args(value: object, source: str) -> tuple[str, ...]:
    if isinstance(value, str):
        try:
            return tuple(shlex.split(value))
        except ValueError as exc:
            raise SettingsError(f"{source}: cannot split {value!r}: {exc}") from exc
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise SettingsError(f"{source}: expected a list of arguments, got {value!r}")


def _number(value: object, source: str) -> float:
    if isinstance(value, bool):
        raise SettingsError(f"{source}: expected a number of seconds, got {value!r}")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError as exc:
            raise SettingsError(f"{source}: expected a number of seconds, got {value!r}") from exc
    raise SettingsError(f"{source}: expected a number of seconds, got {value!r}")


def _bool(value: object, source: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
        return value.strip().lower() in ("true", "1")
    raise SettingsError(f"{source}: expected true or false, got {value!r}")


_KEYS = {
    "executable": "executable",
    "permission_args": "permission_args",
    "extra_args": "extra_args",
    "model": "model",
    "idle_timeout_secs": "idle_timeout",
    "prompt_stdin_threshold": "prompt_stdin_threshold",
    "console_output": "console_output",
}

_ENV = {
    "PRODIGY_CLAUDE_PATH": "executable",
    "PRODIGY_CLAUDE_PERMISSION_ARGS": "permission_args",
    "PRODIGY_CLAUDE_ARGS": "extra_args",
    "PRODIGY_CLAUDE_MODEL": "model",
    "PRODIGY_CLAUDE_IDLE_TIMEOUT": "idle_timeout",
    "PRODIGY_CLAUDE_CONSOLE_OUTPUT": "console_output",
}


def _apply(settings: ClaudeSettings, field: str, value: object, source: str) -> ClaudeSettings:
    if field == "permission_args":
        return attrs.evolve(settings, permission_args=_args(value, source))
    if field == "extra_args":
        return attrs.evolve(settings, extra_args=_args(value, source))
    if field == "idle_timeout":
        return attrs.evolve(settings, idle_timeout=_number(value, source))
    if field == "prompt_stdin_threshold":
        return attrs.evolve(settings, prompt_stdin_threshold=int(_number(value, source)))
    if field == "console_output":
        return attrs.evolve(settings, console_output=_bool(value, source))
    if not isinstance(value, str) or not value.strip():
        raise SettingsError(f"{source}: expected a non-empty string, got {value!r}")
    if field == "executable":
        return attrs.evolve(settings, executable=value.strip())
    return attrs.evolve(settings, model=value.strip())


def resolve_settings(
    *,
    environ: Mapping[str, str],
    workflow: Mapping[str, object] | None = None,
    project: Mapping[str, object] | None = None,
    global_config: Mapping[str, object] | None = None,
) -> ClaudeSettings:
    """Settings by precedence: environment > workflow > project file > global file."""
    settings = ClaudeSettings()
    layers = (("global config claude", global_config), ("project config claude", project),
              ("claude_config", workflow))
    for label, layer in layers:
        for key, value in (layer or {}).items():
            field = _KEYS.get(key)
            if field is not None and value is not None:
                settings = _apply(settings, field, value, f"{label}.{key}")
    for name, field in _ENV.items():
        if environ.get(name):
            settings = _apply(settings, field, environ[name], name)
    for key, value in environ.items():
        if key.startswith("PRODIGY__CLAUDE__"):
            field = _KEYS.get(key[len("PRODIGY__CLAUDE__"):].lower())
            if field is not None and value:
                settings = _apply(settings, field, value, key)
    return settings


def permission_args(settings: ClaudeSettings, *, is_root: bool) -> tuple[str, ...]:
    if settings.permission_args is not None:
        return settings.permission_args
    return ROOT_SAFE_PERMISSIONS if is_root else NON_ROOT_PERMISSIONS


def invocation(settings: ClaudeSettings, prompt: str, *, model: str | None,
               is_root: bool) -> Invocation:
    """The argument vector of one call (spec 07 §1.1–§1.2)."""
    use_stdin = prompt.startswith("-") or \
        len(prompt.encode("utf-8")) > settings.prompt_stdin_threshold
    argv: list[str] = [settings.executable, "-p"]
    if not use_stdin:
        argv.append(prompt)
    argv += ["--output-format", "stream-json", "--verbose"]
    chosen = model or settings.model
    if chosen:
        argv += ["--model", chosen]
    argv += permission_args(settings, is_root=is_root)
    argv += settings.extra_args
    return Invocation(argv=tuple(argv), stdin=prompt if use_stdin else None)
