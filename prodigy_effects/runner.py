"""Starting and resuming standard runs: the production wiring around the interpreter.

``prepare_run`` turns a validated workflow and the command-line request into a
``RunContext`` (resolving the environment, inputs, ids and paths); ``execute`` opens the
storage, journal and lock, and drives the run machine with the interpreter.  Library
users can call these directly; the CLI is a thin layer over them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import attrs
import trio

from prodigy_core import run_machine
from prodigy_core.claude_config import ClaudeSettings, SettingsError, resolve_settings
from prodigy_core.context import InputSpec, RunContext, WorktreeSpec
from prodigy_core.envresolve import ResolvedEnv, resolve_environment
from prodigy_core.masking import display_secrets, step_env_secrets
from prodigy_core.model import Workflow
from prodigy_core.problems import Problem
from prodigy_core.reprs import value_class
from prodigy_core.support import claude_config
from prodigy_effects.claude_runner import ClaudeEffectRunner
from prodigy_effects.dryrun import DryRunEnv, PlanConsole
from prodigy_effects.env import Env
from prodigy_effects.interpreter import RunResult, interpret
from prodigy_effects.journal import JournalWriter, last_seq, read_events
from prodigy_effects.locks import acquire_lock
from prodigy_effects.masker import Masker
from prodigy_effects.production import (
    JournalAdapter,
    ProcessRunner,
    RealClock,
    RealFiles,
    RealGit,
    StorageStore,
    TerminalConsole,
    now_iso,
)
from prodigy_effects.storage import Storage
from prodigy_effects.worktrees import RealWorktrees, TerminalPrompter


class RunError(Exception):
    """A problem found before any work started (exit code ``exit_code``)."""

    def __init__(self, code: str, message: str, *, exit_code: int = 2,
                 hint: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.exit_code = exit_code
        self.hint = hint


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class Repo:
    root: str
    name: str
    is_git: bool


def find_repo(project_dir: Path) -> Repo:
    try:
        result = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=project_dir,
                                capture_output=True, text=True, check=False)
    except OSError:
        result = None
    if result is not None and result.returncode == 0 and result.stdout.strip():
        root = result.stdout.strip()
        return Repo(root=root, name=Path(root).name, is_git=True)
    return Repo(root=str(project_dir), name=project_dir.name, is_git=False)


MIN_GIT = (2, 25)


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class GitCheckout:
    """The user's git checkout a run starts from (spec 06 §2, §4.1)."""

    root: str          # the repository root: the main working tree
    name: str          # the repository name: the root's base name
    top: str           # the top of the user's checkout (a linked worktree's own top)
    head: str          # the commit HEAD points to
    branch: str | None  # the checked-out branch, or (detached) the default branch
    subdir: str = ""   # the project directory relative to ``top``


def _git_out(cwd: Path | str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                          check=False, env=env)


def git_version() -> tuple[int, ...] | None:
    try:
        result = subprocess.run(["git", "--version"], capture_output=True, text=True,
                                check=False)
    except OSError:
        return None
    import re

    found = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", result.stdout)
    return tuple(int(x) for x in found.groups() if x is not None) if found else None


def git_checkout(project: Path) -> GitCheckout:
    """Check the repository requirements of spec 06 §1–§2; ``RunError`` E4001/E4002."""
    if not Path(project).is_dir():
        raise RunError("E4001", f"not a git repository: {project} does not exist",
                       hint="pass -p/--path with a directory inside a git repository")
    # the usual case in one process: not bare, its top level and common directory; a git
    # that understands ``--path-format`` (2.31) is new enough, so its version is only
    # asked when this does not work
    try:
        both = _git_out(project, "rev-parse", "--is-bare-repository", "--show-toplevel",
                        "--path-format=absolute", "--git-common-dir")
    except OSError:
        both = None
    lines = both.stdout.splitlines() if both is not None else []
    if both is not None and both.returncode == 0 and len(lines) == 3 and \
            lines[0] == "false" and lines[1]:
        top_dir, common_dir = lines[1], Path(lines[2])
    else:
        version = git_version()
        if version is None:
            raise RunError("E4001", "git is not installed (it must be on PATH)",
                           hint="install git 2.25 or newer")
        if version[:2] < MIN_GIT:
            raise RunError("E4001", f"git {'.'.join(map(str, version))} is too old; "
                                    f"Prodigy needs git 2.25 or newer", hint="upgrade git")
        bare = _git_out(project, "rev-parse", "--is-bare-repository")
        if bare.returncode == 0 and bare.stdout.strip() == "true":
            raise RunError("E4001", f"{project} is a bare repository; Prodigy needs a "
                                    f"working tree",
                           hint="run Prodigy in a clone with a checkout")
        top = _git_out(project, "rev-parse", "--show-toplevel")
        if top.returncode != 0 or not top.stdout.strip():
            raise RunError("E4001", f"not a git repository: {project}",
                           hint="run `git init` and make a first commit, or pass -p/--path "
                                "with a directory inside a git repository")
        top_dir = top.stdout.strip()
        common = _git_out(project, "rev-parse", "--path-format=absolute", "--git-common-dir")
        common_dir = Path(common.stdout.strip()) if common.returncode == 0 \
            else Path(top_dir) / ".git"
    root = str(common_dir.parent) if common_dir.name == ".git" else top_dir
    head_sha, branch = _head_from_files(top_dir)
    if head_sha is None:
        head = _git_out(project, "rev-parse", "--verify", "-q", "HEAD")
        if head.returncode != 0 or not head.stdout.strip():
            raise RunError("E4002", "repository has no commits; make an initial commit first",
                           hint="git add -A && git commit -m 'initial commit'")
        head_sha = head.stdout.strip()
        branch_out = _git_out(project, "symbolic-ref", "--short", "-q", "HEAD")
        branch = branch_out.stdout.strip() if branch_out.returncode == 0 else ""
    if not branch:
        branch = _default_branch(project) or ""
    try:
        subdir = Path(project).resolve().relative_to(Path(top_dir).resolve()).as_posix()
    except ValueError:
        subdir = ""
    return GitCheckout(root=root, name=Path(root).name, top=top_dir,
                       head=head_sha, branch=branch or None,
                       subdir="" if subdir == "." else subdir)


def _head_from_files(top: str) -> tuple[str | None, str]:
    """``HEAD``'s commit and branch read from git's files in the usual case (a branch
    with a loose ref); ``(None, "")`` otherwise, and git is asked."""
    from prodigy_effects.worktrees import head_branch, loose_head

    sha = loose_head(top)
    return (sha, head_branch(top) or "") if sha is not None else (None, "")


def _default_branch(cwd: Path) -> str | None:
    origin = _git_out(cwd, "symbolic-ref", "-q", "refs/remotes/origin/HEAD")
    names = []
    if origin.returncode == 0 and origin.stdout.strip():
        names.append(origin.stdout.strip().removeprefix("refs/remotes/origin/"))
    names += ["main", "master"]
    for name in names:
        if _git_out(cwd, "show-ref", "--verify", "-q", f"refs/heads/{name}").returncode == 0:
            return name
    return None


WORKTREE_NAME = r"[A-Za-z0-9._-]+"


def check_worktree_name(name: str) -> None:
    import re

    if not re.fullmatch(WORKTREE_NAME, name) or name.startswith(".") or name in ("..",):
        raise RunError("E8001", f"invalid worktree name '{name}': use letters, digits, '.', "
                                f"'_' and '-' only, not starting with '.'",
                       hint="for example --worktree exp-a")


def worktree_spec(storage: Storage, checkout: GitCheckout, name: str, *, named: bool,
                  environ: Mapping[str, str]) -> WorktreeSpec:
    """Where the session worktree of a run is (spec 06 §3)."""
    path = storage.worktree_path(checkout.name, name)
    base = checkout.head
    if named and path.is_dir():
        head = _git_out(path, "rev-parse", "--verify", "-q", "HEAD")
        if head.returncode == 0 and head.stdout.strip():
            base = head.stdout.strip()
    auto = environ.get("PRODIGY_AUTO_CLEANUP", "").strip().lower() not in ("false", "0", "no")
    return WorktreeSpec(name=name, path=str(path), branch=f"prodigy-{name}", base_commit=base,
                        original_branch=checkout.branch, named=named, reuse=named,
                        auto_cleanup=auto, user_dir=checkout.top,
                        repo_lock=str(storage.repo_lock_file(checkout.name)),
                        subdir=checkout.subdir)


def workflow_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def new_session_id(storage: Storage | None = None) -> str:
    """``workflow-<unix ms>`` (spec 09 §2).  Given the storage, the id is reserved there:
    runs started in the same millisecond (several ``prodigy run`` at once) take the next
    free millisecond instead of sharing an id.  The reservation (an empty
    ``resume_locks/<id>.id`` file, created exclusively) is removed once the session lock
    is held (``execute``)."""
    ms = int(time.time() * 1000)
    if storage is None:
        return f"workflow-{ms}"
    folder = storage.root / "resume_locks"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for candidate in range(ms, ms + 10_000):
            sid = f"workflow-{candidate}"
            if storage.session_file(sid).exists() or storage.lock_file(sid).exists():
                continue
            try:
                os.close(os.open(folder / f"{sid}.id",
                                 os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
            except FileExistsError:
                continue
            return sid
    except OSError:
        pass  # an unusable storage root is reported (E5001) when the run writes to it
    return f"workflow-{ms}"


def _run_dynamic(cwd: str) -> Any:
    def run(command: str, env: Mapping[str, str]) -> str | Problem:
        try:
            result = subprocess.run(["sh", "-c", command], cwd=cwd, env=dict(env),
                                    capture_output=True, text=True, timeout=60, check=False)
        except subprocess.TimeoutExpired:
            return Problem(severity="error", code="E2005",
                           message=f"dynamic env command timed out after 60 s: {command}")
        if result.returncode != 0:
            return Problem(severity="error", code="E2005",
                           message=f"dynamic env command failed with exit code "
                                   f"{result.returncode}: {command}\n{result.stderr.strip()}")
        return result.stdout.rstrip("\n")

    return run


def env_file_contents(workflow: Workflow, repo_root: str) -> dict[str, str | None]:
    """The text of each ``env_files`` entry (None: missing or unreadable); paths are
    relative to the repository root (spec 11 §4.1)."""
    contents: dict[str, str | None] = {}
    for entry in workflow.env_files:
        path = Path(repo_root) / entry.path
        try:
            contents[entry.path] = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError, ValueError):
            contents[entry.path] = None
    return contents


def resolve_env(workflow: Workflow, *, repo_root: str, project_dir: str,
                environ: Mapping[str, str], profile: str | None,
                args: Sequence[str], file: str, dry_run: bool = False,
                dynamic_at_start: bool = True, known_cache: Mapping[str, str] | None = None,
                positions: Mapping[str, tuple[int, int]] | None = None) -> ResolvedEnv:
    """Resolve the workflow environment; in a dry run no dynamic command is run.

    With ``dynamic_at_start`` dynamic commands run now in ``project_dir`` (a MapReduce
    job, whose map input needs them); otherwise only the step machine runs them, in the
    session worktree, each time a step's environment is built (``prodigy_core.step_env``).
    ``known_cache``: values of ``cache: true`` entries computed before (not run again).
    ``positions`` (``LoadOutcome.positions``) give the problems their line and column.
    """
    contents = env_file_contents(workflow, repo_root)
    secret_files: dict[str, str | None] = {}
    for _name, source in workflow.secrets:
        if source.provider == "file":
            try:
                secret_files[source.key] = (Path(repo_root) / source.key).read_text("utf-8")
            except (OSError, UnicodeDecodeError, ValueError):
                secret_files[source.key] = None
    run = _run_dynamic(project_dir) if dynamic_at_start and not dry_run else None
    return resolve_environment(workflow, environ=environ, profile=profile, args=args,
                               env_file_contents=contents, secret_files=secret_files,
                               run_dynamic=run, known_cache=known_cache, file=file,
                               positions=positions)


def committed_files(top: Path) -> set[str] | None:
    """Paths tracked at ``HEAD`` in the checkout at ``top`` (None outside git)."""
    listed = _git_out(top, "ls-tree", "-r", "-z", "--name-only", "HEAD")
    if listed.returncode != 0:
        return None
    return {p for p in listed.stdout.split("\0") if p}


def map_inputs(project_dir: Path, patterns: Sequence[str],
               repo_root: Path | None = None,
               warnings: list[str] | None = None) -> list[InputSpec]:
    """Inputs of ``--map`` patterns; ``FILE_PATH`` is relative to the repository root.

    With ``warnings``, a file that is not committed at ``HEAD`` is left out (the run works
    on a worktree of ``HEAD``, where it does not exist) and named in a warning.
    """
    tracked = committed_files(repo_root) if repo_root is not None and \
        warnings is not None else None
    found: dict[str, InputSpec] = {}
    for pattern in patterns:
        if Path(pattern).is_absolute():
            try:
                pattern = str(Path(pattern).relative_to(project_dir.resolve()))
            except ValueError:
                raise RunError("E8001", f"--map pattern '{pattern}' is outside the project "
                               f"directory {project_dir}",
                               hint="give a pattern relative to the project directory") from None
        try:
            found_paths = list(project_dir.glob(pattern))
        except (ValueError, NotImplementedError) as exc:
            raise RunError("E8001", f"--map pattern '{pattern}' is not valid: {exc}") from None
        matches = sorted(p for p in found_paths if p.is_file())
        if tracked is not None and repo_root is not None and warnings is not None:
            kept = []
            for path in matches:
                try:
                    rel_path = path.resolve().relative_to(repo_root.resolve()).as_posix()
                except ValueError:
                    rel_path = ""
                if rel_path in tracked:
                    kept.append(path)
                else:
                    warnings.append(f"--map: {rel_path or path} is not committed, so it is "
                                    f"not in the session worktree; it is left out")
            if matches and not kept:
                raise RunError("E8002", f"--map pattern '{pattern}' matched only files that "
                                        f"are not committed",
                               hint="commit them first: the run works on a worktree of HEAD")
            matches = kept
        if not matches:
            raise RunError("E8002", f"--map pattern '{pattern}' matched nothing",
                           hint="check the pattern; it is relative to the project directory")
        for path in matches:
            base = (repo_root or project_dir).resolve()
            try:
                rel = path.resolve().relative_to(base).as_posix()
            except ValueError:
                rel = path.relative_to(project_dir).as_posix()
            stem = path.stem
            found[rel] = InputSpec(arg=stem.split("-", 1)[0] if "-" in stem else stem,
                                   file=path.name, file_path=rel)
    return [found[k] for k in sorted(found)]


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class RunRequest:
    workflow: Workflow
    workflow_path: str
    workflow_text: str
    project_dir: Path
    environ: Mapping[str, str]
    args: tuple[str, ...] = ()
    map_patterns: tuple[str, ...] = ()
    max_iterations: int = 1
    fail_fast: bool = False
    strict_vars: bool = False
    dry_run: bool = False
    auto_yes: bool = False
    profile: str | None = None
    verbosity: int = 0
    quiet: bool = False
    json_mode: bool = False


def _config_section(path: Path, section: str) -> dict[str, object]:
    """One section of a YAML config file (missing file → empty)."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError):
        return {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise RunError("E1001", f"cannot read config file {path}: {exc}",
                       hint="fix or remove the file") from exc
    if not isinstance(data, dict):
        return {}
    value = data.get(section)
    return value if isinstance(value, dict) else {}


def claude_settings(workflow: Workflow, *, environ: Mapping[str, str], repo_root: str,
                    storage_root: Path) -> ClaudeSettings:
    """Claude settings by precedence (spec 07 §2.1); a bad value is a ``RunError``."""
    try:
        return resolve_settings(
            environ=environ, workflow=claude_config(workflow),
            project=_config_section(Path(repo_root) / ".prodigy" / "config.yml", "claude"),
            global_config=_config_section(storage_root / "config.yml", "claude"))
    except SettingsError as exc:
        raise RunError("E1004", f"invalid Claude setting: {exc}") from exc


CLAUDE_CHECK_TTL = 24 * 3600.0


def _claude_identity(exe: str, environ: Mapping[str, str]) -> tuple[str, list[int]] | None:
    """The resolved executable and what identifies its content (size, mtime, inode)."""
    import shutil

    path = exe if os.sep in exe else shutil.which(exe, path=environ.get("PATH"))
    if path is None:
        return None
    try:
        real = os.path.realpath(path)
        st = os.stat(real)
    except OSError:
        return None
    return real, [st.st_size, st.st_mtime_ns, st.st_ino]


def check_claude(settings: ClaudeSettings, environ: Mapping[str, str],
                 cache_dir: Path | None = None) -> str | None:
    """Run ``<executable> --version`` (30 s); the reason it is unusable, or None.

    A success is remembered in ``cache_dir`` for the same executable file (same path,
    size, modification time and inode) for a day, so that a run does not pay the CLI's
    start-up time twice; any change of the file runs the check again.
    """
    exe = settings.executable
    identity = _claude_identity(exe, environ)
    cache = cache_dir / "claude-check.json" if cache_dir is not None else None
    if identity is not None and cache is not None:
        try:
            known = json.loads(cache.read_text(encoding="utf-8"))
            entry = known.get(identity[0]) if isinstance(known, dict) else None
            if isinstance(entry, dict) and entry.get("identity") == identity[1] and \
                    time.time() - float(entry.get("checked_at", 0)) < CLAUDE_CHECK_TTL:
                return None
        except (OSError, ValueError, TypeError):
            pass
    try:
        result = subprocess.run([exe, "--version"], env=dict(environ), capture_output=True,
                                text=True, timeout=30, check=False)
    except FileNotFoundError:
        return "not found"
    except PermissionError:
        return "not executable"
    except subprocess.TimeoutExpired:
        return "`--version` did not answer within 30 s"
    except OSError as exc:
        return str(exc.strerror or exc)
    if result.returncode != 0:
        return f"`--version` exited with {result.returncode}: {result.stderr.strip()[:200]}"
    if identity is not None and cache is not None:
        try:
            from prodigy_effects.fsutil import atomic_write_json

            atomic_write_json(cache, {identity[0]: {"identity": identity[1],
                                                    "checked_at": time.time(),
                                                    "version": result.stdout.strip()[:200]}})
        except OSError:
            pass  # only a cache
    return None


def build_context(req: RunRequest, *, session_id: str, repo: Repo,
                  resolved: ResolvedEnv, inputs: Sequence[InputSpec],
                  claude: ClaudeSettings | None = None,
                  worktree: WorktreeSpec | None = None) -> RunContext:
    wf = req.workflow
    project_dir = str(req.project_dir)
    if worktree is not None:
        project_dir = worktree.path + (f"/{worktree.subdir}" if worktree.subdir else "")
    return RunContext(
        claude=claude or ClaudeSettings(), is_root=os.geteuid() == 0, worktree=worktree,
        session_id=session_id, workflow_name=wf.name, workflow_path=req.workflow_path,
        workflow_hash=workflow_hash(req.workflow_text), project_dir=project_dir,
        repo_root=repo.root, repo_name=repo.name,
        worktree_name=worktree.name if worktree is not None else "",
        home=req.environ.get("HOME", ""), environ=tuple(sorted(req.environ.items())),
        workflow_env=resolved.values, late_env=resolved.late, env_cache=resolved.cached,
        env_sources=resolved.sources,
        secret_values=(*resolved.secret_values, *step_env_secrets(wf)),
        inherit_env=wf.inherit_env, strict_vars=req.strict_vars or wf.strict_variables,
        dry_run=req.dry_run, auto_yes=req.auto_yes, profile=req.profile,
        retry_defaults=wf.retry_defaults, args=req.args, inputs=tuple(inputs),
        max_iterations=max(1, req.max_iterations), fail_fast=req.fail_fast,
        started_at=now_iso(), seed=int.from_bytes(os.urandom(4), "big"),
    )


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class Wiring:
    storage: Storage
    out: TextIO
    err: TextIO


def production_env(ctx: RunContext, storage: Storage, journal: JournalWriter,
                   req_verbosity: int, quiet: bool, json_mode: bool, out: TextIO,
                   err: TextIO, *, correlation_id: str | None = None,
                   masker: Masker | None = None) -> Env:
    """The production environment of a run (a job adds its ``jobs``).

    ``masker`` is the run's live masker (``masker_for``), shared with its journal; the
    console, the store and the transcripts use it, and ``RegisterSecret`` extends it.
    """
    masker = masker if masker is not None else masker_for(ctx)
    return Env(
        commands=ProcessRunner(), files=RealFiles(), git=RealGit(), clock=RealClock(),
        store=StorageStore(storage=storage.with_mask(masker), session_id=ctx.session_id),
        journal=JournalAdapter(writer=journal, correlation_id=correlation_id or ctx.session_id),
        console=TerminalConsole(out=out, err=err, verbosity=req_verbosity, quiet=quiet,
                                json_mode=json_mode, mask=masker),
        claude=ClaudeEffectRunner(directory=storage.transcripts_dir(), mask=masker),
        worktrees=RealWorktrees(
            meta_file=lambda name: storage.worktree_meta_file(ctx.repo_name, name),
            clock=now_iso, mask=masker),
        prompter=TerminalPrompter(out=out, enabled=not json_mode),
        secrets=masker,
    )


def masker_for(ctx: RunContext) -> Masker:
    """A new live masker of the run's secrets (one per run: see ``prodigy_effects.masker``)."""
    return Masker(ctx.secret_values)


def plan_masker(ctx: RunContext) -> Masker:
    """The plan displays the environment: also mask sensitive names and credentials."""
    return Masker((*ctx.secret_values, *display_secrets(ctx.workflow_env)), credentials=True)


def masked_outcome(outcome: Any, masker: Masker) -> Any:
    """A run's outcome (the ``--json`` summary) with secrets masked in every string."""
    if isinstance(outcome, str):
        return masker(outcome)
    if isinstance(outcome, dict):
        return {masker(str(k)): masked_outcome(v, masker) for k, v in outcome.items()}
    if isinstance(outcome, list | tuple):
        return [masked_outcome(v, masker) for v in outcome]
    return outcome


def run_dry(req: RunRequest, ctx: RunContext, out: TextIO) -> RunResult:
    masker = plan_masker(ctx)
    console = PlanConsole(out=out, json_mode=req.json_mode, mask=masker)
    if not req.json_mode:
        out.write(f"Dry run: {req.workflow.name} (standard workflow)\n")
        out.write(f"  workflow: {req.workflow_path}\n")
        described = {p.name: p.description for p in req.workflow.profiles}
        note = f" ({described[req.profile]})" if req.profile and described.get(req.profile) \
            else ""
        out.write(masker(f"  profile: {req.profile or '-'}{note}") + "\n")
        wt = ctx.worktree
        if wt is not None:
            action = "reuse or create" if wt.named else "create"
            out.write(f"  worktree: would {action} {wt.path}\n")
            out.write(f"    branch {wt.branch} from {wt.base_commit[:12]} (original branch: "
                      f"{wt.original_branch or '-'})\n")
        out.write(f"  runs in: {ctx.project_dir}\n")
        out.write("Steps:\n")
    env = DryRunEnv(console, secrets=masker)
    transition = run_machine.start(req.workflow, ctx)
    result: RunResult = trio.run(_interpret, transition, env, False)
    if req.json_mode:
        wt = ctx.worktree
        plan = {"mode": "standard", "workflow": req.workflow.name, "path": req.workflow_path,
                "profile": req.profile,
                "worktree": None if wt is None else {
                    "name": wt.name, "path": wt.path, "branch": wt.branch,
                    "base_commit": wt.base_commit, "original_branch": wt.original_branch,
                    "named": wt.named},
                "steps": console.steps, "items": None,
                "merge": None if wt is None else _merge_plan(req.workflow, wt)}
        out.write(masker(json.dumps(plan, indent=2)) + "\n")
    else:
        wt = ctx.worktree
        if wt is not None:
            plan_merge = _merge_plan(req.workflow, wt)
            how = "custom merge workflow" if plan_merge["custom"] else "git merge --no-ff"
            out.write(f"Merge: {wt.branch} into {plan_merge['target'] or '-'} ({how})\n")
        out.write("Nothing was run (dry run).\n")
    return result


def _merge_plan(workflow: Workflow, wt: WorktreeSpec) -> dict[str, Any]:
    return {"source": wt.branch, "target": wt.original_branch,
            "custom": workflow.merge is not None,
            "steps": len(workflow.merge.steps) if workflow.merge is not None else 0}


async def _interpret(transition: Any, env: Env, signals: bool,
                     step: Any = run_machine.step) -> RunResult:
    return await interpret(transition, step, env, handle_signals=signals)


def execute(transition: Any, ctx: RunContext, storage: Storage,
            *, verbosity: int, quiet: bool, json_mode: bool, out: TextIO, err: TextIO,
            start_seq: int = 1, step: Any = run_machine.step) -> RunResult:
    """Drive a machine (by default a run) with the production environment, holding its
    session lock and journal."""
    lock = acquire_lock(storage, ctx.session_id)
    with contextlib.suppress(OSError):  # the id's reservation (new_session_id)
        (storage.root / "resume_locks" / f"{ctx.session_id}.id").unlink()
    named = None
    try:
        if ctx.worktree is not None and ctx.worktree.named:
            # two runs never share a named worktree (spec 06 §3.4, E5004)
            named = acquire_lock(storage, f"worktree-{ctx.worktree.name}")
    except BaseException:
        lock.release()
        raise
    try:
        for warning in getattr(lock, "warnings", []) or []:
            text = str(warning)
            err.write((text if text.startswith("warning") else
                       f"warning[W5002]: {text.removeprefix('W5002: ')}") + "\n")
        masker = masker_for(ctx)
        journal = JournalWriter.open(storage.events_dir(ctx.repo_name, ctx.session_id),
                                     start_seq, datetime.now(UTC), mask=masker,
                                     host=socket.gethostname())
        try:
            env = production_env(ctx, storage, journal, verbosity, quiet, json_mode, out, err,
                                 masker=masker)
            result: RunResult = trio.run(_interpret, transition, env, True, step)
            return attrs.evolve(result, outcome=masked_outcome(result.outcome, masker))
        finally:
            journal.close()
    finally:
        if named is not None:
            named.release()
        lock.release()


def later_events(storage: Storage, repo_name: str, session_id: str,
                 after_seq: int) -> list[dict[str, Any]]:
    run_dir = storage.events_dir(repo_name, session_id)
    if not run_dir.exists():
        return []
    return [e for e in read_events(run_dir) if isinstance(e.get("seq"), int)
            and e["seq"] > after_seq]


def next_seq(storage: Storage, repo_name: str, session_id: str) -> int:
    run_dir = storage.events_dir(repo_name, session_id)
    return (last_seq(run_dir) if run_dir.exists() else 0) + 1
