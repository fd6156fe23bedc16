"""Resolving the workflow environment once, at start (spec 11 §1–§5).

Pure: the caller reads env files, runs cached dynamic commands and passes in their
results; this module decides the values, layer by layer, in file order, and reports
problems (missing secrets, unknown profile…) as data.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import attrs

from prodigy_core.interpolate import Var, interpolate, lookup
from prodigy_core.json_values import JSON
from prodigy_core.model import (
    EnvConditional,
    EnvDynamic,
    EnvPerProfile,
    EnvStatic,
    EnvValue,
    Workflow,
)
from prodigy_core.problems import Problem


@attrs.frozen(kw_only=True)
class ResolvedEnv:
    values: tuple[tuple[str, str], ...] = ()
    secret_values: tuple[str, ...] = ()
    problems: tuple[Problem, ...] = ()
    warnings: tuple[Problem, ...] = ()


def parse_dotenv(text: str, file: str) -> tuple[tuple[tuple[str, str], ...], tuple[Problem, ...]]:
    """Parse a dotenv file (spec 11 §4.2)."""
    out: list[tuple[str, str]] = []
    problems: list[Problem] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export "):].lstrip()
        name, sep, value = line.partition("=")
        name = name.strip()
        if not sep or not name.replace("_", "a").isalnum() or name[0].isdigit():
            problems.append(Problem(severity="error", code="E2004", file=file, line=number,
                                    column=1, message=f"malformed line in env file: {raw!r}",
                                    help="write NAME=VALUE"))
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == "'":
            value = value[1:-1]
        elif len(value) >= 2 and value[0] == value[-1] == '"':
            body = value[1:-1]
            value = (body.replace("\\\\", "\x00").replace("\\n", "\n").replace("\\t", "\t")
                     .replace('\\"', '"').replace("\x00", "\\"))
        else:
            cut = value.find(" #")
            if cut >= 0:
                value = value[:cut].rstrip()
        out.append((name, value))
    return tuple(out), tuple(problems)


def resolve_environment(
    workflow: Workflow,
    *,
    environ: Mapping[str, str],
    profile: str | None,
    args: Sequence[str] = (),
    env_file_contents: Mapping[str, str | None] | None = None,
    secret_files: Mapping[str, str | None] | None = None,
    run_dynamic: Callable[[str, Mapping[str, str]], str | Problem] | None = None,
    file: str = "",
) -> ResolvedEnv:
    """Compute layers 2–5 of spec 11 §1 (env files, env, profile, secrets)."""
    problems: list[Problem] = []
    warnings: list[Problem] = []
    values: dict[str, str] = {}
    secrets: list[str] = []
    contents = env_file_contents or {}
    for entry in workflow.env_files:
        text = contents.get(entry.path)
        if text is None:
            if entry.required:
                problems.append(Problem(severity="error", code="E2004", file=file,
                                        message=f"env file '{entry.path}' not found",
                                        help="create it in the repository root or mark it "
                                             "`required: false`"))
            else:
                warnings.append(Problem(severity="warning", code="W1005", file=file,
                                        message=f"env file '{entry.path}' not found"))
            continue
        pairs, more = parse_dotenv(text, entry.path)
        problems.extend(more)
        values.update(dict(pairs))

    active = None
    if profile is not None:
        for candidate in workflow.profiles:
            if candidate.name == profile:
                active = candidate
        if active is None:
            names = ", ".join(p.name for p in workflow.profiles) or "(none defined)"
            problems.append(Problem(severity="error", code="E1013", file=file, path="$.profiles",
                                    message=f"unknown profile '{profile}'; defined: {names}"))

    def variables() -> dict[str, Var]:
        out = {name: Var(value=value) for name, value in values.items()}
        if args:
            out["ARG"] = Var(value=args[0])
            for i, value in enumerate(args, start=1):
                out[f"ARG_{i}"] = Var(value=value)
        return out

    def evaluate(name: str, value: EnvValue) -> None:
        if isinstance(value, EnvStatic):
            if value.value is None:
                values.pop(name, None)
                return
            text = interpolate(value.value, variables(), environ=environ,
                               positional=tuple(args)).text
            values[name] = text
            if value.secret:
                secrets.append(text)
        elif isinstance(value, EnvDynamic):
            if run_dynamic is None:
                return
            env_now = dict(environ)
            env_now.update(values)
            result = run_dynamic(value.command, env_now)
            if isinstance(result, Problem):
                problems.append(result)
            else:
                values[name] = result
        elif isinstance(value, EnvConditional):
            from prodigy_core.expr_eval import MISSING, Missing, eval_when
            from prodigy_core.expr_parse import ExprError, parse_when

            parsed = parse_when(value.condition)
            chosen = value.when_false
            if not isinstance(parsed, ExprError):
                vars_now = variables()

                def resolve(path: str) -> JSON | Missing:
                    var = lookup(path, vars_now, environ)
                    return MISSING if var is None else var.value

                verdict = eval_when(parsed, resolve)
                if verdict is True:
                    chosen = value.when_true
            values[name] = chosen
        elif isinstance(value, EnvPerProfile):
            entries = dict(value.values)
            if profile is not None and profile in entries:
                picked = entries[profile]
            elif value.has_default:
                picked = value.default
            else:
                warnings.append(Problem(severity="warning", code="W1014", file=file,
                                        message=f"env '{name}' has no value for the active "
                                                "profile and no default; it is unset"))
                values.pop(name, None)
                return
            if picked is None:
                values.pop(name, None)
            else:
                values[name] = interpolate(picked, variables(), environ=environ,
                                           positional=tuple(args)).text

    for name, value in workflow.env:
        evaluate(name, value)
    if active is not None:
        for name, value in active.values:
            evaluate(name, value)
    files = secret_files or {}
    for name, source in workflow.secrets:
        if source.provider == "env":
            secret = environ.get(source.key)
            if secret is None:
                problems.append(Problem(
                    severity="error", code="E2003", file=file, path=f"$.secrets.{name}",
                    message=f"Secret '{name}' not found: environment variable {source.key} "
                            "is not set"))
                continue
        else:
            content = files.get(source.key)
            if content is None:
                problems.append(Problem(
                    severity="error", code="E2003", file=file, path=f"$.secrets.{name}",
                    message=f"Secret '{name}' not found: file {source.key} does not exist"))
                continue
            secret = content[:-1] if content.endswith("\n") else content
        values[name] = secret
        secrets.append(secret)
    secret_names = {value: name for name, value in values.items() if value in secrets}
    for secret in secrets:
        if 0 < len(secret) < 4:
            name = secret_names.get(secret, "?")
            warnings.append(Problem(severity="warning", code="W1013", file=file,
                                    path=f"$.secrets.{name}",
                                    message=f"secret '{name}' is shorter than 4 characters "
                                            "and cannot be masked"))
    return ResolvedEnv(values=tuple(values.items()), secret_values=tuple(secrets),
                       problems=tuple(problems), warnings=tuple(warnings))
