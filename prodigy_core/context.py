"""What a run knows about its world, and the variables and environments built from it.

Theory of operation
-------------------
``RunContext`` is fixed for the duration of a run: ids, paths, Prodigy's own process
environment (a snapshot taken by the interpreter — the core never reads it), the
resolved workflow environment (and the entries of it that each step computes again),
the secret values to mask at start and the command-line switches.  The functions here
are pure: they derive the built-in variables of a moment (spec 03 §5.1) and the
environment of a child process (spec 11 §1, §7).
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping

import attrs
from pyrsistent import PMap, pmap

from prodigy_core.claude_config import ClaudeSettings
from prodigy_core.interpolate import Var
from prodigy_core.model import EnvConditional, EnvDynamic, RetrySpec
from prodigy_core.reprs import value_class

MINIMAL_ENV_NAMES = ("PATH", "HOME", "USER", "LOGNAME", "SHELL", "TMPDIR", "TERM", "TZ", "LANG")


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class InputSpec:
    """One input of input mode (spec 03 §8.2)."""

    arg: str
    file: str | None = None
    file_path: str | None = None


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class WorktreeSpec:
    """The session worktree a run works in (spec 06 §3).

    Decided before the run starts: ``name`` (the session id, or the ``--worktree`` name),
    ``path`` (``<storage>/worktrees/<repo>/<name>``), ``branch`` (``prodigy-<name>``),
    ``base_commit`` (the user's ``HEAD``, or the named worktree's ``HEAD`` when it is
    reused), ``original_branch`` (spec 06 §4.1; None when there is no branch at all),
    ``named`` (never removed automatically) and ``auto_cleanup`` (``PRODIGY_AUTO_CLEANUP``).
    ``user_dir`` is the directory the user started Prodigy in (inside the user's checkout);
    ``repo_lock`` the path of the per-repository git lock (``prodigy_effects.repolock``);
    ``subdir`` the project directory relative to the top of the checkout (steps run in
    the same subdirectory of the worktree).
    """

    name: str
    path: str
    branch: str
    base_commit: str
    original_branch: str | None = None
    named: bool = False
    reuse: bool = False
    auto_cleanup: bool = True
    user_dir: str = ""
    repo_lock: str = ""
    subdir: str = ""


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class RunContext:
    session_id: str
    workflow_name: str
    workflow_path: str
    workflow_hash: str = ""
    project_dir: str
    repo_root: str
    repo_name: str = ""
    worktree_name: str = ""
    home: str = ""
    environ: tuple[tuple[str, str], ...] = ()
    workflow_env: tuple[tuple[str, str], ...] = ()
    # workflow env entries computed again each time a step's environment is built (spec
    # 11 §2.2, §2.3): conditional and dynamic values, in evaluation order
    # (``prodigy_core.step_env``); ``env_cache`` holds the values of ``cache: true``
    # dynamic entries that were computed before the run (they are not run again)
    late_env: tuple[tuple[str, EnvDynamic | EnvConditional], ...] = ()
    # where each ``late_env`` entry is defined (``file:line:column  at $.path``)
    env_sources: tuple[tuple[str, str], ...] = ()
    env_cache: tuple[tuple[str, str], ...] = ()
    secret_values: tuple[str, ...] = ()
    inherit_env: bool = True
    strict_vars: bool = False
    dry_run: bool = False
    auto_yes: bool = False
    profile: str | None = None
    retry_defaults: RetrySpec | None = None
    args: tuple[str, ...] = ()
    inputs: tuple[InputSpec, ...] = ()
    max_iterations: int = 1
    fail_fast: bool = False
    started_at: str = ""
    seed: int = 0
    claude: ClaudeSettings = ClaudeSettings()
    is_root: bool = False
    # the session worktree (None: the run works in ``project_dir`` itself, as library
    # users and the tests of the spine may ask); ``project_dir`` is then inside it
    worktree: WorktreeSpec | None = None
    # MapReduce progress: seconds between progress lines while agents run (None: none)
    progress_interval: float | None = None
    # variables Prodigy sets for one scope (spec 11 §7): ``PRODIGY_JOB_ID`` in every
    # scope of a MapReduce job, the item's variables in an agent, the map counts in reduce
    extra_env: tuple[tuple[str, str], ...] = ()
    # a step's failure report is detail (-v) rather than info: MapReduce agents, whose
    # failures the job reports by its ``error_collection`` mode (spec 05 §10.6)
    quiet_failures: bool = False
    # put before each streamed output line of a command (spec 05 §18: ``[<item_id>] ``)
    output_prefix: str = ""
    # a MapReduce agent's ``resource_limits.max_memory_mb`` (spec 06 §9.4)
    memory_limit_mb: int | None = None

    @property
    def start_commit(self) -> str | None:
        """The commit the scope's worktree started from (``workflow.*``, spec 03 §7.2)."""
        return self.worktree.base_commit if self.worktree is not None else None

    @property
    def environ_map(self) -> dict[str, str]:
        return dict(self.environ)


def builtin_variables(
    ctx: RunContext, *, iteration: int, input_index: int | None
) -> PMap[str, Var]:
    """Built-in variables of spec 03 §5.1 plus the workflow environment (trusted)."""
    out: dict[str, Var] = {}
    for name, value in ctx.workflow_env:
        out[name] = Var(value=value)
    env = ctx.environ_map
    arg: str | None = None
    if input_index is not None and ctx.inputs:
        current = ctx.inputs[input_index]
        arg = current.arg
        out["ARG_1"] = Var(value=current.arg)
        out["INDEX"] = Var(value=input_index + 1)
        out["TOTAL"] = Var(value=len(ctx.inputs))
        if current.file is not None:
            out["FILE"] = Var(value=current.file)
        if current.file_path is not None:
            out["FILE_PATH"] = Var(value=current.file_path)
    elif ctx.args:
        arg = ctx.args[0]
        for i, value in enumerate(ctx.args, start=1):
            out[f"ARG_{i}"] = Var(value=value)
    elif "PRODIGY_ARG" in env:
        arg = env["PRODIGY_ARG"]
    if arg is not None:
        out["ARG"] = Var(value=arg)
    out["PROJECT_ROOT"] = Var(value=ctx.project_dir)
    out["REPO_ROOT"] = Var(value=ctx.repo_root)
    out["WORKTREE"] = Var(value=ctx.worktree_name)
    out["ITERATION"] = Var(value=iteration)
    out["workflow.name"] = Var(value=ctx.workflow_name)
    out["workflow.id"] = Var(value=ctx.session_id)
    out["workflow.path"] = Var(value=ctx.workflow_path)
    out["workflow.iteration"] = Var(value=iteration)
    if ctx.profile is not None:
        out["workflow.profile"] = Var(value=ctx.profile)
    return pmap(out)


def base_environment(ctx: RunContext, *, clear: bool) -> dict[str, str]:
    """Layer 1 of spec 11 §1: Prodigy's environment, or the minimal one."""
    env = ctx.environ_map
    if ctx.inherit_env and not clear:
        return dict(env)
    return {
        name: value
        for name, value in env.items()
        if name in MINIMAL_ENV_NAMES or name.startswith("LC_")
    }


def child_environment(
    ctx: RunContext,
    *,
    step_env: Mapping[str, str],
    clear: bool,
    iteration: int,
    attempt: int,
    input_index: int | None,
    timeout: float | None,
) -> tuple[tuple[str, str], ...]:
    """The full environment of a child process (spec 11 §1 layers 1–7)."""
    env = base_environment(ctx, clear=clear)
    env.update(dict(ctx.workflow_env))
    env.update(step_env)
    env["PRODIGY_AUTOMATION"] = "true"
    env["PRODIGY_SESSION_ID"] = ctx.session_id
    env["PRODIGY_WORKTREE"] = ctx.project_dir
    env["PRODIGY_REPO_ROOT"] = ctx.repo_root
    env["PRODIGY_ITERATION"] = str(iteration)
    env["PRODIGY_ATTEMPT"] = str(attempt)
    env.update(dict(ctx.extra_env))
    if ctx.profile is not None:
        env["PRODIGY_PROFILE"] = ctx.profile
    if ctx.auto_yes:
        env["PRODIGY_AUTO_MERGE"] = "true"
        env["PRODIGY_AUTO_CONFIRM"] = "true"
    if timeout is not None:
        env["PRODIGY_COMMAND_TIMEOUT"] = str(int(timeout))
    if input_index is not None and ctx.inputs:
        env["ARG"] = ctx.inputs[input_index].arg
        env["PRODIGY_ARG"] = ctx.inputs[input_index].arg
        env["ARG_1"] = ctx.inputs[input_index].arg
    elif ctx.args:
        env["ARG"] = ctx.args[0]
        env["PRODIGY_ARG"] = ctx.args[0]
        for i, value in enumerate(ctx.args, start=1):
            env[f"ARG_{i}"] = value
    big = [name for name, value in env.items() if len(value.encode("utf-8", "replace")) > 65536]
    for name in big:
        del env[name]
    return tuple(sorted(env.items()))


def resolve_dir(ctx: RunContext, working_dir: str | None) -> str:
    """The directory a step runs in (spec 02 §10.3)."""
    if not working_dir:
        return ctx.project_dir
    path = working_dir
    if path == "~" or path.startswith("~/"):
        path = ctx.home + path[1:]
    if not posixpath.isabs(path):
        path = posixpath.join(ctx.project_dir, path)
    return posixpath.normpath(path)
