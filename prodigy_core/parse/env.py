"""Workflow environment: ``env`` value forms, ``secrets``, ``env_files``, ``profiles``
(spec 11 §2-§5).  Also fills ``ctx.static_env`` for numeric references (spec 01 §3.4)."""

from __future__ import annotations

import re

from prodigy_core.model import (
    EnvConditional,
    EnvDynamic,
    EnvFile,
    EnvPerProfile,
    EnvStatic,
    EnvValue,
    Profile,
    SecretSource,
)
from prodigy_core.parse import paths
from prodigy_core.parse.context import Ctx
from prodigy_core.parse.exprs import check_expression
from prodigy_core.parse.suggest import check_keys
from prodigy_core.parse.variables import check_text

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SECRET_REF = re.compile(r"\$\{env[:.]([A-Za-z_][A-Za-z0-9_]*)\}")
_PROVIDER_REF = re.compile(r"\$\{([A-Za-z_]+):")


def scalar_text(value: object) -> str | None:
    """Static env text of a scalar: strings as is, numbers as written, booleans lower-case."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value)
    return None


def parse_env(ctx: Ctx, value: object, path: str) -> tuple[tuple[str, EnvValue], ...]:
    data = ctx.want_mapping(value, path, "a mapping of names to values")
    if data is None:
        return ()
    out: list[tuple[str, EnvValue]] = []
    for key, item in data.items():
        at = paths.child(path, key)
        if not _check_name(ctx, key, at):
            continue
        parsed = env_value(ctx, item, at)
        if parsed is not None:
            out.append((str(key), parsed))
    return tuple(out)


def _check_name(ctx: Ctx, key: object, at: str) -> bool:
    if isinstance(key, str) and _NAME.fullmatch(key):
        return True
    ctx.error("E1004", f"invalid environment variable name {key!r}", at, key=True)
    return False


def env_value(ctx: Ctx, value: object, path: str) -> EnvValue | None:
    if value is None:
        return EnvStatic(value=None)
    text = scalar_text(value)
    if text is not None:
        if isinstance(value, str):
            check_text(ctx, value, path, None)
        return EnvStatic(value=text)
    if not isinstance(value, dict):
        ctx.wrong_type(value, "a string, number, boolean, null or a value mapping", path)
        return None
    if "command" in value:
        check_keys(ctx, value, path, frozenset({"command", "cache"}))
        command = ctx.want_str(value["command"], paths.child(path, "command"))
        cache = ctx.want_bool(value["cache"], paths.child(path, "cache")) if "cache" in value else False
        if command is None:
            return None
        check_text(ctx, command, paths.child(path, "command"), None)
        return EnvDynamic(command=command, cache=bool(cache))
    if "condition" in value:
        check_keys(ctx, value, path, frozenset({"condition", "when_true", "when_false"}))
        condition = ctx.want_str(value["condition"], paths.child(path, "condition"))
        if condition is not None:
            check_expression(ctx, "when", condition, paths.child(path, "condition"))
        branches: dict[str, str] = {}
        for key in ("when_true", "when_false"):
            if key not in value:
                ctx.error("E1003", f"conditional env value needs '{key}'", path)
                continue
            branch = scalar_text(value[key])
            if branch is None:
                ctx.wrong_type(value[key], "a string", paths.child(path, key))
            else:
                branches[key] = branch
        if condition is None or len(branches) != 2:
            return None
        return EnvConditional(condition=condition, when_true=branches["when_true"], when_false=branches["when_false"])
    if "value" in value:
        check_keys(ctx, value, path, frozenset({"value", "secret"}))
        literal = value["value"]
        text = scalar_text(literal) if literal is not None else None
        if literal is not None and text is None:
            ctx.wrong_type(literal, "a string", paths.child(path, "value"))
            return None
        secret = ctx.want_bool(value["secret"], paths.child(path, "secret")) if "secret" in value else False
        return EnvStatic(value=text, secret=bool(secret))
    return _per_profile(ctx, value, path)


def _per_profile(ctx: Ctx, value: dict[object, object], path: str) -> EnvValue | None:
    entries: list[tuple[str, str | None]] = []
    default: str | None = None
    has_default = False
    for key, item in value.items():
        at = paths.child(path, key)
        text = scalar_text(item) if item is not None else None
        if item is not None and text is None:
            ctx.wrong_type(item, "a string", at)
            continue
        if key == "default":
            default, has_default = text, True
        elif isinstance(key, str):
            entries.append((key, text))
        else:
            ctx.error("E1004", f"profile name {key!r} is not a string", at, key=True)
    return EnvPerProfile(values=tuple(entries), default=default, has_default=has_default)


def parse_secrets(ctx: Ctx, value: object, path: str) -> tuple[tuple[str, SecretSource], ...]:
    data = ctx.want_mapping(value, path, "a mapping of names to secret sources")
    if data is None:
        return ()
    out: list[tuple[str, SecretSource]] = []
    for key, item in data.items():
        at = paths.child(path, key)
        if not _check_name(ctx, key, at):
            continue
        source = _secret(ctx, item, at)
        if source is not None:
            out.append((str(key), source))
    return tuple(out)


def _secret(ctx: Ctx, value: object, path: str) -> SecretSource | None:
    if isinstance(value, str):
        text = value.strip()
        if _NAME.fullmatch(text):
            return SecretSource(provider="env", key=text)
        match = _SECRET_REF.fullmatch(text)
        if match:
            return SecretSource(provider="env", key=match.group(1))
        provider = _PROVIDER_REF.match(text)
        if provider:
            ctx.error("E1016", f"secret provider '{provider.group(1)}' is not supported", path)
            return None
        ctx.error("E1004", f"invalid secret source {value!r}: expected a variable name or ${{env:NAME}}", path)
        return None
    data = ctx.want_mapping(value, path, "a secret source")
    if data is None:
        return None
    check_keys(ctx, data, path, frozenset({"provider", "key"}))
    provider_value = data.get("provider", "env")
    key = data.get("key")
    if provider_value not in ("env", "file"):
        ctx.error("E1016", f"secret provider {provider_value!r} is not supported", paths.child(path, "provider"))
        return None
    if key is None:
        ctx.error("E1003", "secret source needs 'key'", path)
        return None
    key_text = ctx.want_str(key, paths.child(path, "key"))
    if key_text is None:
        return None
    return SecretSource(provider="env" if provider_value == "env" else "file", key=key_text)


def parse_env_files(ctx: Ctx, value: object, path: str) -> tuple[EnvFile, ...]:
    items = ctx.want_list(value, path, "a list of paths")
    files: list[EnvFile] = []
    for i, item in enumerate(items or ()):
        at = paths.index(path, i)
        if isinstance(item, str):
            files.append(EnvFile(path=item))
            continue
        data = ctx.want_mapping(item, at, "a path or {path, required}")
        if data is None:
            continue
        check_keys(ctx, data, at, frozenset({"path", "required"}))
        if "path" not in data:
            ctx.error("E1003", "env_files entry needs 'path'", at)
            continue
        file_path = ctx.want_str(data["path"], paths.child(at, "path"))
        required = ctx.want_bool(data["required"], paths.child(at, "required")) if "required" in data else False
        if file_path is not None:
            files.append(EnvFile(path=file_path, required=bool(required)))
    return tuple(files)


def parse_profiles(ctx: Ctx, value: object, path: str) -> tuple[Profile, ...]:
    data = ctx.want_mapping(value, path, "a mapping of profile names to values")
    if data is None:
        return ()
    profiles: list[Profile] = []
    for name, body in data.items():
        at = paths.child(path, name)
        if not isinstance(name, str):
            ctx.error("E1004", f"profile name {name!r} is not a string", at, key=True)
            continue
        if body is None:
            body = {}
        mapping = ctx.want_mapping(body, at)
        if mapping is None:
            continue
        description: str | None = None
        values: list[tuple[str, EnvValue]] = []
        for key, item in mapping.items():
            item_path = paths.child(at, key)
            if key == "description":
                description = ctx.want_str(item, item_path)
                continue
            if not _check_name(ctx, key, item_path):
                continue
            parsed = env_value(ctx, item, item_path)
            if parsed is not None:
                values.append((str(key), parsed))
        profiles.append(Profile(name=name, description=description, values=tuple(values)))
    return tuple(profiles)


def static_environment(
    env: tuple[tuple[str, EnvValue], ...], profile: Profile | None
) -> dict[str, str]:
    """Static values of the workflow env with the active profile applied (spec 01 §3.4)."""
    values: dict[str, str] = {}
    layers = [env, profile.values if profile else ()]
    for layer in layers:
        for name, item in layer:
            if isinstance(item, EnvStatic):
                if item.value is None:
                    values.pop(name, None)
                else:
                    values[name] = item.value
            elif isinstance(item, EnvPerProfile):
                chosen = dict(item.values).get(profile.name) if profile else None
                if profile and profile.name in dict(item.values):
                    if chosen is not None:
                        values[name] = chosen
                elif item.has_default and item.default is not None:
                    values[name] = item.default
    return values
