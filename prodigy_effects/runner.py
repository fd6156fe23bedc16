"""Starting and resuming standard runs: the production wiring around the interpreter.

``prepare_run`` turns a validated workflow and the command-line request into a
``RunContext`` (resolving the environment, inputs, ids and paths); ``execute`` opens the
storage, journal and lock, and drives the run machine with the interpreter.  Library
users can call these directly; the CLI is a thin layer over them.
"""

from __future__ import annotations

import hashlib
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
from prodigy_core.context import InputSpec, RunContext
from prodigy_core.envresolve import ResolvedEnv, resolve_environment
from prodigy_core.masking import display_secrets, mask, mask_credentials, step_env_secrets
from prodigy_core.model import Workflow
from prodigy_core.problems import Problem
from prodigy_core.support import claude_config
from prodigy_effects.claude_runner import ClaudeEffectRunner
from prodigy_effects.dryrun import DryRunEnv, PlanConsole
from prodigy_effects.env import Env
from prodigy_effects.interpreter import RunResult, interpret
from prodigy_effects.journal import JournalWriter, last_seq, read_events
from prodigy_effects.locks import acquire_lock
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


class RunError(Exception):
    """A problem found before any work started (exit code ``exit_code``)."""

    def __init__(self, code: str, message: str, *, exit_code: int = 2,
                 hint: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.exit_code = exit_code
        self.hint = hint


@attrs.frozen(kw_only=True)
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


def workflow_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def new_session_id() -> str:
    return f"workflow-{int(time.time() * 1000)}"


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


def resolve_env(workflow: Workflow, *, repo_root: str, project_dir: str,
                environ: Mapping[str, str], profile: str | None,
                args: Sequence[str], file: str, dry_run: bool = False) -> ResolvedEnv:
    """Resolve the workflow environment; in a dry run no dynamic command is run."""
    contents: dict[str, str | None] = {}
    for entry in workflow.env_files:
        path = Path(repo_root) / entry.path
        try:
            contents[entry.path] = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            contents[entry.path] = None
    secret_files: dict[str, str | None] = {}
    for _name, source in workflow.secrets:
        if source.provider == "file":
            try:
                secret_files[source.key] = (Path(repo_root) / source.key).read_text("utf-8")
            except (OSError, UnicodeDecodeError):
                secret_files[source.key] = None
    return resolve_environment(workflow, environ=environ, profile=profile, args=args,
                               env_file_contents=contents, secret_files=secret_files,
                               run_dynamic=None if dry_run else _run_dynamic(project_dir),
                               file=file)


def map_inputs(project_dir: Path, patterns: Sequence[str],
               repo_root: Path | None = None) -> list[InputSpec]:
    """Inputs of ``--map`` patterns; ``FILE_PATH`` is relative to the repository root."""
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


@attrs.frozen(kw_only=True)
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
    import json

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
                  claude: ClaudeSettings | None = None) -> RunContext:
    wf = req.workflow
    return RunContext(
        claude=claude or ClaudeSettings(), is_root=os.geteuid() == 0,
        session_id=session_id, workflow_name=wf.name, workflow_path=req.workflow_path,
        workflow_hash=workflow_hash(req.workflow_text), project_dir=str(req.project_dir),
        repo_root=repo.root, repo_name=repo.name, worktree_name="",
        home=req.environ.get("HOME", ""), environ=tuple(sorted(req.environ.items())),
        workflow_env=resolved.values,
        secret_values=(*resolved.secret_values, *step_env_secrets(wf)),
        inherit_env=wf.inherit_env, strict_vars=req.strict_vars or wf.strict_variables,
        dry_run=req.dry_run, auto_yes=req.auto_yes, profile=req.profile,
        retry_defaults=wf.retry_defaults, args=req.args, inputs=tuple(inputs),
        max_iterations=max(1, req.max_iterations), fail_fast=req.fail_fast,
        started_at=now_iso(), seed=int.from_bytes(os.urandom(4), "big"),
    )


@attrs.frozen(kw_only=True)
class Wiring:
    storage: Storage
    out: TextIO
    err: TextIO


def _production_env(ctx: RunContext, storage: Storage, journal: JournalWriter,
                    req_verbosity: int, quiet: bool, json_mode: bool, out: TextIO,
                    err: TextIO) -> Env:
    masker = masker_for(ctx)
    return Env(
        commands=ProcessRunner(), files=RealFiles(), git=RealGit(), clock=RealClock(),
        store=StorageStore(storage=storage.with_mask(masker), session_id=ctx.session_id),
        journal=JournalAdapter(writer=journal, correlation_id=ctx.session_id),
        console=TerminalConsole(out=out, err=err, verbosity=req_verbosity, quiet=quiet,
                                json_mode=json_mode, mask=masker),
        claude=ClaudeEffectRunner(directory=storage.transcripts_dir(), mask=masker),
    )


def masker_for(ctx: RunContext) -> Any:
    secrets = ctx.secret_values

    def apply(text: str) -> str:
        return mask(text, secrets)

    return apply


def plan_masker(ctx: RunContext) -> Any:
    """The plan displays the environment: also mask sensitive names and credentials."""
    values = (*ctx.secret_values, *display_secrets(ctx.workflow_env))

    def apply(text: str) -> str:
        return mask_credentials(mask(text, values))

    return apply


def run_dry(req: RunRequest, ctx: RunContext, out: TextIO) -> RunResult:
    console = PlanConsole(out=out, json_mode=req.json_mode, mask=plan_masker(ctx))
    if not req.json_mode:
        out.write(f"Dry run: {req.workflow.name} (standard workflow)\n")
        out.write(f"  workflow: {req.workflow_path}\n")
        out.write(f"  profile: {req.profile or '-'}\n")
        out.write(f"  runs in: {ctx.project_dir}\n")
        out.write("Steps:\n")
    env = DryRunEnv(console)
    transition = run_machine.start(req.workflow, ctx)
    result = trio.run(_interpret, transition, env, False)
    if req.json_mode:
        import json

        plan = {"mode": "standard", "workflow": req.workflow.name, "path": req.workflow_path,
                "profile": req.profile, "worktree": None, "steps": console.steps,
                "items": None, "merge": None}
        out.write(plan_masker(ctx)(json.dumps(plan, indent=2)) + "\n")
    else:
        out.write("Nothing was run (dry run).\n")
    return result


async def _interpret(transition: Any, env: Env, signals: bool) -> RunResult:
    return await interpret(transition, run_machine.step, env, handle_signals=signals)


def execute(transition: run_machine.Transition, ctx: RunContext, storage: Storage,
            *, verbosity: int, quiet: bool, json_mode: bool, out: TextIO, err: TextIO,
            start_seq: int = 1) -> RunResult:
    """Drive a run with the production environment, holding its lock and journal."""
    lock = acquire_lock(storage, ctx.session_id)
    try:
        for warning in getattr(lock, "warnings", []) or []:
            text = str(warning)
            err.write((text if text.startswith("warning") else
                       f"warning[W5002]: {text.removeprefix('W5002: ')}") + "\n")
        journal = JournalWriter.open(storage.events_dir(ctx.repo_name, ctx.session_id),
                                     start_seq, datetime.now(UTC), mask=masker_for(ctx),
                                     host=socket.gethostname())
        try:
            env = _production_env(ctx, storage, journal, verbosity, quiet, json_mode, out, err)
            return trio.run(_interpret, transition, env, True)
        finally:
            journal.close()
    finally:
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
