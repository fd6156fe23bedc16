"""Resolving the workflow environment once, at start (spec 11 §1–§5).

Pure: the caller reads env files, runs dynamic commands (when it wants them run at
start) and passes in their results; this module decides the values, layer by layer, in
file order, and reports problems (missing secrets, unknown profile…) as data, at the
file, line, column and ``$.path`` of the field when the caller gives the positions the
loader recorded.  It also lists the entries that each step computes again
(``ResolvedEnv.late``: conditional and dynamic values, see ``prodigy_core.step_env``).
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
    Profile,
    Workflow,
)
from prodigy_core.parse import paths
from prodigy_core.problems import Problem
from prodigy_core.reprs import value_class

Positions = Mapping[str, tuple[int, int]]
LateEntry = tuple[str, EnvDynamic | EnvConditional]


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class ResolvedEnv:
    """The workflow environment at start.

    ``late`` are the entries computed again for each step (``RunContext.late_env``);
    ``cached`` the values of ``cache: true`` dynamic entries computed here (or given as
    known), which are not run again (``RunContext.env_cache``).
    """

    values: tuple[tuple[str, str], ...] = ()
    secret_values: tuple[str, ...] = ()
    problems: tuple[Problem, ...] = ()
    warnings: tuple[Problem, ...] = ()
    late: tuple[LateEntry, ...] = ()
    cached: tuple[tuple[str, str], ...] = ()
    # where each late entry is defined: ``file:line:column  at $.path`` (for run-time
    # errors such as E2005)
    sources: tuple[tuple[str, str], ...] = ()


def position(positions: Positions | None, path: str) -> tuple[int, int]:
    """(line, column) of the value at ``path``, or of its nearest recorded parent."""
    current: str | None = path
    while positions and current is not None:
        found = positions.get(current)
        if found is not None:
            return found
        current = paths.parent(current)
    return 0, 0


def _at(problem: Problem, path: str, positions: Positions | None) -> Problem:
    line, column = position(positions, path)
    return attrs.evolve(problem, path=path, line=line, column=column)


def env_file_problems(
    workflow: Workflow, contents: Mapping[str, str | None], *, file: str = "",
    positions: Positions | None = None, validating: bool = False,
) -> tuple[tuple[Problem, ...], tuple[Problem, ...]]:
    """``(errors, warnings)`` about missing ``env_files`` (``contents`` None: missing).

    At run time a missing required file is E2004 and any other W1005 (spec 11 §4.1);
    ``validating`` (``prodigy validate``, spec 01 §7) reports every missing file as W1005.
    """
    errors: list[Problem] = []
    warnings: list[Problem] = []
    for i, entry in enumerate(workflow.env_files):
        if contents.get(entry.path) is not None:
            continue
        at = paths.index("$.env_files", i)
        if entry.required and not validating:
            errors.append(_at(Problem(
                severity="error", code="E2004", file=file,
                message=f"env file '{entry.path}' not found",
                help="create it in the repository root or mark it `required: false`"),
                at, positions))
        else:
            note = " (it is required: the run will stop with E2004)" if entry.required else ""
            warnings.append(_at(Problem(
                severity="warning", code="W1005", file=file,
                message=f"env file '{entry.path}' not found in the repository root{note}"),
                at, positions))
    return tuple(errors), tuple(warnings)


def conditional_value(entry: EnvConditional, variables: Mapping[str, Var],
                      environ: Mapping[str, str]) -> str:
    """The value of a conditional env entry with these variables (spec 11 §2.3)."""
    from prodigy_core.expr_eval import MISSING, Missing, eval_when
    from prodigy_core.expr_parse import ExprError, parse_when

    parsed = parse_when(entry.condition)
    if isinstance(parsed, ExprError):
        return entry.when_false

    def resolve(path: str) -> JSON | Missing:
        var = lookup(path, variables, environ)
        return MISSING if var is None else var.value

    return entry.when_true if eval_when(parsed, resolve) is True else entry.when_false


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
    known_cache: Mapping[str, str] | None = None,
    file: str = "",
    positions: Positions | None = None,
) -> ResolvedEnv:
    """Compute layers 2–5 of spec 11 §1 (env files, env, profile, secrets).

    Dynamic entries are run with ``run_dynamic`` (None: not at start; they are then
    computed per step only), except ``cache: true`` entries found in ``known_cache``.
    ``positions`` (the loader's ``$.path`` → (line, column)) locate the problems.
    """
    problems: list[Problem] = []
    warnings: list[Problem] = []
    values: dict[str, str] = {}
    secrets: list[str] = []
    cached: dict[str, str] = {}
    known = known_cache or {}
    contents = env_file_contents or {}
    missing, missing_warnings = env_file_problems(workflow, contents, file=file,
                                                  positions=positions)
    problems.extend(missing)
    warnings.extend(missing_warnings)
    for entry in workflow.env_files:
        text = contents.get(entry.path)
        if text is None:
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
            problems.append(_at(Problem(
                severity="error", code="E1013", file=file,
                message=f"unknown profile '{profile}'; defined: {names}"),
                "$.profiles", positions))

    def variables() -> dict[str, Var]:
        out = {name: Var(value=value) for name, value in values.items()}
        if args:
            out["ARG"] = Var(value=args[0])
            for i, value in enumerate(args, start=1):
                out[f"ARG_{i}"] = Var(value=value)
        return out

    def evaluate(name: str, value: EnvValue, at: str) -> None:
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
            if value.cache and name in known:
                values[name] = cached[name] = known[name]
                return
            if run_dynamic is None:
                return
            env_now = dict(environ)
            env_now.update(values)
            result = run_dynamic(value.command, env_now)
            if isinstance(result, Problem):
                problems.append(_at(attrs.evolve(result, file=result.file or file), at,
                                    positions))
            else:
                values[name] = result
                if value.cache:
                    cached[name] = result
        elif isinstance(value, EnvConditional):
            values[name] = conditional_value(value, variables(), environ)
        elif isinstance(value, EnvPerProfile):
            entries = dict(value.values)
            if profile is not None and profile in entries:
                picked = entries[profile]
            elif value.has_default:
                picked = value.default
            else:
                warnings.append(_at(Problem(
                    severity="warning", code="W1014", file=file,
                    message=f"env '{name}' has no value for the active profile and no "
                            "default; it is unset"), at, positions))
                values.pop(name, None)
                return
            if picked is None:
                values.pop(name, None)
            else:
                values[name] = interpolate(picked, variables(), environ=environ,
                                           positional=tuple(args)).text

    for name, value, at in env_entries(workflow, active):
        evaluate(name, value, at)
    files = secret_files or {}
    for name, source in workflow.secrets:
        at = paths.child("$.secrets", name)
        if source.provider == "env":
            secret = environ.get(source.key)
            if secret is None:
                problems.append(_at(Problem(
                    severity="error", code="E2003", file=file,
                    message=f"Secret '{name}' not found: environment variable {source.key} "
                            "is not set"), at, positions))
                continue
        else:
            content = files.get(source.key)
            if content is None:
                problems.append(_at(Problem(
                    severity="error", code="E2003", file=file,
                    message=f"Secret '{name}' not found: file {source.key} does not exist"),
                    at, positions))
                continue
            secret = content[:-1] if content.endswith("\n") else content
        values[name] = secret
        secrets.append(secret)
    secret_names = {value: name for name, value in values.items() if value in secrets}
    for secret in secrets:
        if 0 < len(secret) < 4:
            name = secret_names.get(secret, "?")
            warnings.append(_at(Problem(
                severity="warning", code="W1013", file=file,
                message=f"secret '{name}' is shorter than 4 characters and cannot be "
                        "masked"), paths.child("$.secrets", name), positions))
    late = late_entries(workflow, active)
    profile_names = {name for name, _ in active.values} if active else set()
    sources: list[tuple[str, str]] = []
    for name, _entry in late:
        at = paths.child(paths.child("$.profiles", active.name), name) \
            if active is not None and name in profile_names else paths.child("$.env", name)
        line, column = position(positions, at)
        sources.append((name, f"{file}:{line}:{column}  at {at}" if line else f"{file}  at {at}"))
    return ResolvedEnv(values=tuple(values.items()), secret_values=tuple(secrets),
                       problems=tuple(problems), warnings=tuple(warnings), late=late,
                       cached=tuple(cached.items()), sources=tuple(sources))


def env_entries(workflow: Workflow,
                active: Profile | None) -> list[tuple[str, EnvValue, str]]:
    """The ``env`` entries in the order they are computed, with their ``$.path``: the
    workflow's, where the active profile's value of a name takes the place of the
    workflow's value of that name — so a later value built from it (``API_URL:
    "https://${APP_ENV}.example.com"``) sees the profile's — then the names only the
    profile defines, in its order."""
    overrides: dict[str, tuple[EnvValue, str]] = {}
    if active is not None:
        at = paths.child("$.profiles", active.name)
        overrides = {name: (value, paths.child(at, name)) for name, value in active.values}
    out: list[tuple[str, EnvValue, str]] = []
    for name, value in workflow.env:
        if name in overrides:
            profile_value, at = overrides.pop(name)
            out.append((name, profile_value, at))
        else:
            out.append((name, value, paths.child("$.env", name)))
    out.extend((name, value, at) for name, (value, at) in overrides.items())
    return out


def late_entries(workflow: Workflow, active: Profile | None = None) -> tuple[LateEntry, ...]:
    """The conditional and dynamic entries that are the final definition of their name
    (a later static value, profile value or secret of the same name replaces them)."""
    ordered = [(name, value) for name, value, _ in env_entries(workflow, active)]
    last: dict[str, int] = {name: i for i, (name, _) in enumerate(ordered)}
    secret_names = {name for name, _ in workflow.secrets}
    out: list[LateEntry] = []
    for i, (name, value) in enumerate(ordered):
        if isinstance(value, EnvDynamic | EnvConditional) and last[name] == i and \
                name not in secret_names:
            out.append((name, value))
    return tuple(out)
