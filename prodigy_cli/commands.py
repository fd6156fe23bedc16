"""Command implementations: wiring the production environment, rendering results."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TextIO

from prodigy_core import run_machine
from prodigy_core.problems import Problem
from prodigy_core.support import runtime_gaps
from prodigy_effects.storage import Storage, StorageError, resolve_storage_root


class _Watch:
    """A text stream that remembers whether anything was written, and the first error."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.written = False
        self.first_error: str | None = None

    def write(self, text: str) -> int:
        if text:
            self.written = True
            for line in text.splitlines():
                if self.first_error is None and line.startswith("error["):
                    self.first_error = line
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def dispatch(args: argparse.Namespace, *, out: TextIO, err: TextIO, environ: dict[str, str],
             cwd: str) -> int:
    if args.command in ("run", "resume", "exec", "batch", "resume-job") and \
            getattr(args, "json", False):
        # --json: stdout carries exactly one JSON document, also when the run never started
        watched_out, watched_err = _Watch(out), _Watch(err)
        code = _dispatch(args, out=watched_out, err=watched_err,  # type: ignore[arg-type]
                         environ=environ, cwd=cwd)
        if not watched_out.written:
            error = watched_err.first_error or f"exited with {code} before the run started"
            match = error.split("]: ", 1)
            doc = {"status": "failed", "exit_code": code, "session_id": None,
                   "error": {"code": match[0].removeprefix("error[") if len(match) == 2
                             else None, "message": match[-1], "details": {}}}
            out.write(json.dumps(doc) + "\n")
        return code
    return _dispatch(args, out=out, err=err, environ=environ, cwd=cwd)


def _dispatch(args: argparse.Namespace, *, out: TextIO, err: TextIO, environ: dict[str, str],
              cwd: str) -> int:
    try:
        if args.command == "run":
            if args.resume:
                if args.workflow:
                    err.write(f"warning: --resume {args.resume} resumes the session's own "
                              f"workflow; '{args.workflow}' is ignored\n")
                args.id = args.resume
                args.force = False
                args.from_checkpoint = None
                return cmd_resume(args, out=out, err=err, environ=environ, cwd=cwd)
            if not args.workflow:
                err.write("error[E8001]: `prodigy run` needs a workflow file "
                          "(or --resume ID)\n")
                return 2
            return cmd_run(args, out=out, err=err, environ=environ, cwd=cwd)
        if args.command == "resume":
            return cmd_resume(args, out=out, err=err, environ=environ, cwd=cwd)
        if args.command == "exec":
            return cmd_exec(args, out=out, err=err, environ=environ, cwd=cwd)
        if args.command == "batch":
            from prodigy_cli.cmd_batch import cmd_batch

            return cmd_batch(args, out=out, err=err, environ=environ, cwd=cwd)
        if args.command == "resume-job":
            from prodigy_cli.cmd_jobs import cmd_resume_job

            return cmd_resume_job(args, out=out, err=err, environ=environ, cwd=cwd)
        if args.command == "validate":
            from prodigy_cli.cmd_validate import cmd_validate

            shown = args.workflow
            if not Path(shown).is_absolute() and Path(cwd).resolve() != Path.cwd().resolve():
                shown = str(_abs(cwd, shown))
            return cmd_validate(shown, strict=args.strict, as_json=args.json,
                                profile=args.profile, environ=environ, out=out, err=err,
                                cwd=cwd)
        if args.command == "init":
            from prodigy_cli.cmd_init import cmd_init

            return cmd_init(args, out=out, err=err, cwd=cwd)
        if args.command in ("analytics", "logs"):
            return _claude_reports(args, out=out, err=err, environ=environ, cwd=cwd)
        from prodigy_cli import inspect_cmds

        return inspect_cmds.dispatch(args, out=out, err=err, environ=environ, cwd=cwd)
    except StorageError as exc:
        err.write(f"error[{exc.code}]: {exc}\n")
        return 2
    except KeyboardInterrupt:
        err.write("Interrupted.\n")
        return 130


def _claude_reports(args: argparse.Namespace, *, out: TextIO, err: TextIO,
                    environ: dict[str, str], cwd: str) -> int:
    """``prodigy analytics`` and ``prodigy logs`` (spec 14 §4, spec 08 §2.15)."""
    storage = storage_for(environ)
    if args.command == "logs":
        from prodigy_cli.cmd_logs import cmd_logs

        return cmd_logs(args, storage=storage, out=out, err=err, environ=environ, cwd=cwd)
    from prodigy_cli.cmd_analytics import cmd_analytics

    return cmd_analytics(args, storage=storage, out=out, err=err, environ=environ, cwd=cwd)


def _abs(cwd: str, path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() else Path(cwd) / p


def storage_for(environ: dict[str, str]) -> Storage:
    home = Path(environ.get("HOME") or Path.home())
    return Storage(resolve_storage_root(environ, home))


def print_problems(problems: tuple[Problem, ...] | list[Problem], err: TextIO,
                   mask: Callable[[str], str] | None = None) -> None:
    """Print problems, masked with ``mask`` (spec 11 §9.2: error messages too)."""
    for problem in problems:
        text = problem.render()
        err.write((mask(text) if mask is not None else text) + "\n")


def early_mask(workflow: Any, environ: Mapping[str, str]) -> Callable[[str], str]:
    """A masker of the secrets known before the environment is resolved."""
    from prodigy_core.masking import known_secrets
    from prodigy_effects.masker import Masker

    return Masker(known_secrets(workflow, environ)) if workflow is not None else _same


def _same(text: str) -> str:
    return text


def print_env_problems(resolved: Any, workflow: Any, environ: Mapping[str, str],
                       err: TextIO, *, warnings: bool = True) -> bool:
    """Print the problems of a resolved environment, masked with every secret it knows
    (a failing dynamic command's stderr may show one); True when there are errors."""
    from prodigy_core.masking import known_secrets, step_env_secrets
    from prodigy_effects.masker import Masker

    masker = Masker((*resolved.secret_values, *step_env_secrets(workflow),
                     *known_secrets(workflow, environ)))
    if warnings:
        print_problems(resolved.warnings, err, masker)
    print_problems(resolved.problems, err, masker)
    return bool(resolved.problems)


def _verbosity(args: argparse.Namespace) -> tuple[int, bool]:
    return int(getattr(args, "verbose", 0) or 0), bool(getattr(args, "quiet", False))


EXEC_PATH = "(exec)"


def step_kind(command: str) -> tuple[str, str]:
    """``(kind, text)`` of a command given to ``exec``/``batch`` (spec 08 §2.2): a
    ``claude:`` prefix (removed) or a leading ``/`` → claude; a ``shell:`` prefix (removed)
    or anything else → shell."""
    text = command.strip()
    if text.startswith("claude:"):
        return "claude", text[len("claude:"):].strip()
    if text.startswith("/"):
        return "claude", text
    if text.startswith("shell:"):
        return "shell", text[len("shell:"):].strip()
    return "shell", command


def exec_workflow(command: str, *, retry: int, timeout: str | None,
                  model: str | None) -> str:
    """The one-step workflow of ``prodigy exec`` (spec 08 §2.2), as JSON text."""
    kind, body = step_kind(command)
    step: dict[str, Any] = {kind: body}
    if retry > 1:
        step["retry"] = {"attempts": retry}
    if timeout:
        step["timeout"] = timeout
    if model and kind == "claude":
        step["model"] = model
    return json.dumps({"name": "exec", "commands": [step]}, indent=2)


def cmd_exec(args: argparse.Namespace, *, out: TextIO, err: TextIO, environ: dict[str, str],
             cwd: str) -> int:
    """``prodigy exec <command>``: ``run`` of a one-step workflow; the merge is automatic."""
    from prodigy_effects.workflow_io import load_workflow_text

    if args.retry < 1:
        err.write(f"error[E8001]: --retry must be at least 1 (got {args.retry})\n")
        return 2
    text = exec_workflow(args.exec_command, retry=args.retry, timeout=args.timeout,
                         model=args.model)
    loaded = load_workflow_text(text, display_path=EXEC_PATH, stem="exec", environ=environ)
    (err if args.json else out).write(f"Executing command: {args.exec_command}\n")
    run_args = front_end_run_args(args, EXEC_PATH, yes=True)
    return cmd_run(run_args, out=out, err=err, environ=environ, cwd=cwd, preloaded=loaded)


def front_end_run_args(args: argparse.Namespace, workflow: str, *, yes: bool,
                       **more: Any) -> argparse.Namespace:
    """The ``run`` options of a command that runs a generated workflow (``exec``,
    ``batch``, ``goal-seek``): its own ``--path``, ``--json``, ``-v``/``-q``, nothing else."""
    return argparse.Namespace(
        workflow=workflow, path=args.path, param=[], param_file=None, worktree=None,
        max_iterations=1, profile=None, strict=False, map=[], args=[], fail_fast=False,
        strict_vars=False, dry_run=False, yes=yes, json=args.json,
        verbose=getattr(args, "verbose", 0), quiet=getattr(args, "quiet", False), **more)


def cmd_run(args: argparse.Namespace, *, out: TextIO, err: TextIO, environ: dict[str, str],
            cwd: str, preloaded: Any = None) -> int:
    from prodigy_effects import runner
    from prodigy_effects.workflow_io import load_workflow_file

    project = _abs(cwd, args.path) if args.path else Path(cwd)
    if not project.is_dir():
        err.write(f"error[E8001]: project directory {project} does not exist\n")
        return 2
    wf_path = _abs(cwd, args.workflow) if preloaded is None else Path(args.workflow)
    if args.param or args.param_file:
        err.write("error[E1016]: --param/--param-file need workflow composition, which is not "
                  "available yet in this version of Prodigy\n")
        return 2
    if args.max_iterations < 1:
        err.write(f"error[E8001]: -n/--max-iterations must be at least 1 (got "
                  f"{args.max_iterations})\n")
        return 2
    profile = args.profile or environ.get("PRODIGY_PROFILE")
    loaded = preloaded or load_workflow_file(wf_path, display_path=args.workflow,
                                             environ=environ, profile=profile,
                                             strict=args.strict)
    print_problems(loaded.problems, err, early_mask(loaded.workflow, environ))
    if loaded.workflow is None or any(p.is_error for p in loaded.problems):
        errors = sum(1 for p in loaded.problems if p.is_error)
        warnings = len(loaded.problems) - errors
        err.write(f"✗ {errors} error(s), {warnings} warning(s)\n")
        return 2
    workflow = loaded.workflow
    gaps = runtime_gaps(workflow, file=args.workflow)
    if gaps:
        import attrs

        from prodigy_core.envresolve import position

        located = []
        for gap in gaps:  # with the field's line and column
            line, column = position(loaded.positions, gap.path)
            located.append(attrs.evolve(gap, line=line, column=column) if line else gap)
        print_problems(located, err)
        return 2
    verbosity, quiet = _verbosity(args)
    try:
        checkout = runner.git_checkout(project)
        named = args.worktree or _workflow_worktree(workflow)
        if named:
            runner.check_worktree_name(named)
        repo = runner.Repo(root=checkout.root, name=checkout.name, is_git=True)
        map_warnings: list[str] = []
        inputs = runner.map_inputs(project, args.map, Path(checkout.top),
                                   warnings=map_warnings) if args.map else []
        for text in map_warnings:
            err.write(f"warning[W4001]: {text}\n")
    except runner.RunError as exc:
        _run_error(exc, err)
        return exc.exit_code
    # dynamic env values run in the session worktree (spec 11 §2.2): per step, and the
    # ``cache: true`` ones once when the run or job starts
    resolved = runner.resolve_env(workflow, repo_root=checkout.top, project_dir=str(project),
                                  environ=environ, profile=profile, args=tuple(args.args),
                                  file=args.workflow, dry_run=args.dry_run,
                                  dynamic_at_start=False,
                                  positions=loaded.positions)
    if print_env_problems(resolved, workflow, environ, err):
        return 2
    from prodigy_core.context import InputSpec

    all_inputs = [InputSpec(arg=a) for a in args.args] + list(inputs) if (inputs or
                                                                          len(args.args) > 0) \
        else []
    req = runner.RunRequest(
        workflow=workflow, workflow_path=str(wf_path), workflow_text=loaded.text or "",
        project_dir=project, environ=environ, args=tuple(args.args),
        map_patterns=tuple(args.map), max_iterations=args.max_iterations,
        fail_fast=args.fail_fast, strict_vars=args.strict_vars, dry_run=args.dry_run,
        auto_yes=args.yes, profile=profile, verbosity=verbosity, quiet=quiet,
        json_mode=args.json,
    )
    mapreduce = workflow.mode == "mapreduce"
    claude = _claude_settings(workflow, environ, repo.root, dry_run=args.dry_run, err=err)
    if claude is None:
        return 2
    storage = storage_for(environ)
    if mapreduce:
        from prodigy_effects import job_runner

        session_id = job_runner.new_session_id()
    else:
        # reserved in the storage (runs started in the same millisecond get different
        # ids); a dry run writes nothing
        session_id = runner.new_session_id(None if args.dry_run else storage)
    try:
        worktree = runner.worktree_spec(storage, checkout, named or session_id,
                                        named=bool(named), environ=environ)
    except ValueError as exc:
        err.write(f"error[E8001]: {exc}\n")
        return 2
    ctx = runner.build_context(req, session_id=session_id, repo=repo, resolved=resolved,
                               inputs=all_inputs, claude=claude, worktree=worktree)
    if args.dry_run:
        if mapreduce:
            return _job_plan(workflow, ctx, out, json_mode=args.json)
        result = runner.run_dry(req, ctx, out)
        return 0 if result.exit_code == 0 else result.exit_code
    if mapreduce:
        return _run_job(workflow, ctx, storage, loaded.text or "", wf_path, args,
                        verbosity=verbosity, quiet=quiet, out=out, err=err)
    storage.ensure()
    human = err if args.json else out
    human.write(f"Starting session: {session_id}\n")
    storage.with_mask(runner.masker_for(ctx)).write_snapshot(session_id, {"workflow_path": str(wf_path),
                                        "source_text": loaded.text or "",
                                        "workflow_hash": ctx.workflow_hash})
    transition = run_machine.start(workflow, ctx)
    try:
        result = runner.execute(transition, ctx, storage, verbosity=verbosity, quiet=quiet,
                                json_mode=args.json, out=out, err=err)
    except StorageError as exc:
        err.write(f"error[{exc.code}]: {exc}\n")
        return 1 if exc.code == "E5004" else 2
    outcome = result.outcome
    hook = getattr(args, "on_outcome", None)
    if hook is not None:
        outcome = hook(outcome) or outcome  # a front end may amend the summary
    if args.json:
        out.write(json.dumps(outcome) + "\n")
    return result.exit_code


def _stored_worktree(session: dict[str, Any], storage: Any, repo_name: str,
                     environ: dict[str, str]) -> Any:
    """The session worktree recorded in a session record (None for runs without one)."""
    from prodigy_core.context import WorktreeSpec

    doc = session.get("worktree")
    if not isinstance(doc, dict) or not doc.get("path") or not doc.get("branch"):
        return None
    auto = environ.get("PRODIGY_AUTO_CLEANUP", "").strip().lower() not in ("false", "0", "no")
    return WorktreeSpec(
        name=str(doc.get("name")), path=str(doc["path"]), branch=str(doc["branch"]),
        base_commit=str(doc.get("base_commit") or ""),
        original_branch=doc.get("original_branch") if isinstance(
            doc.get("original_branch"), str) else None,
        named=bool(doc.get("named")), reuse=bool(doc.get("named")), auto_cleanup=auto,
        repo_lock=str(storage.repo_lock_file(repo_name)), subdir=str(doc.get("subdir") or ""))


def _run_job(workflow: Any, ctx: Any, storage: Any, text: str, wf_path: Path,
             args: argparse.Namespace, *, verbosity: int, quiet: bool, out: TextIO,
             err: TextIO) -> int:
    """``prodigy run`` of a MapReduce workflow (spec 05 §3)."""
    from prodigy_core import job_machine
    from prodigy_effects import job_runner, runner

    storage.ensure()
    job_id = job_runner.new_job_id(storage, ctx.repo_name)
    config = job_runner.job_config(storage, ctx.repo_name, job_id, ctx.session_id)
    human = err if args.json else out
    human.write(f"Starting session: {ctx.session_id}\n")
    snapshot = {"workflow_path": str(wf_path), "source_text": text,
                "workflow_hash": ctx.workflow_hash, "job_id": job_id}
    masked = storage.with_mask(runner.masker_for(ctx))
    masked.write_snapshot(ctx.session_id, snapshot)
    from prodigy_effects.fsutil import atomic_write_json

    atomic_write_json(Path(config.job_dir) / "workflow.snapshot.json", snapshot)
    import attrs

    ctx = attrs.evolve(ctx, progress_interval=1.0)
    transition = job_machine.start(workflow, ctx, config)
    try:
        result = job_runner.execute_job(transition, ctx, config, storage, verbosity=verbosity,
                                        quiet=quiet, json_mode=args.json, out=out, err=err)
    except StorageError as exc:
        err.write(f"error[{exc.code}]: {exc}\n")
        return 1 if exc.code == "E5004" else 2
    if args.json:
        out.write(json.dumps(result.outcome) + "\n")
    return result.exit_code


def _job_plan(workflow: Any, ctx: Any, out: TextIO, *, json_mode: bool) -> int:
    """The plan of a MapReduce run: nothing is run, created or written."""
    from prodigy_core.display import display_name

    spec = workflow.map
    setup = workflow.setup.steps if workflow.setup is not None else ()
    reduce = workflow.reduce.steps if workflow.reduce is not None else ()
    wt = ctx.worktree
    plan = {
        "mode": "mapreduce", "workflow": workflow.name,
        "worktree": None if wt is None else {"name": wt.name, "path": wt.path,
                                             "branch": wt.branch,
                                             "base_commit": wt.base_commit,
                                             "original_branch": wt.original_branch},
        "setup": [display_name(s) for s in setup],
        "map": {"input": spec.input, "json_path": spec.json_path, "filter": spec.filter,
                "sort_by": spec.sort_by, "max_parallel": spec.max_parallel,
                "agent_template": [display_name(s) for s in spec.agent_template]},
        "reduce": [display_name(s) for s in reduce],
        "merge": {"source": wt.branch if wt else None,
                  "target": wt.original_branch if wt else None,
                  "custom": workflow.merge is not None},
    }
    if json_mode:
        out.write(json.dumps(plan, indent=2) + "\n")
        return 0
    from prodigy_core.job_pool import agent_limit

    pool = workflow.worktree_config
    strategy = pool.allocation_strategy if pool is not None else "on_demand"
    out.write(f"Dry run: {workflow.name} (MapReduce workflow)\n")
    if wt is not None:
        out.write(f"  worktree: would create {wt.path}\n    branch {wt.branch} from "
                  f"{wt.base_commit[:12]} (original branch: {wt.original_branch or '-'})\n")
    for i, name in enumerate(plan["setup"], start=1):  # type: ignore[arg-type]
        out.write(f"  setup {i}: {name}\n")
    out.write(f"  map: items from {spec.input}"
              + (f" ({spec.json_path})" if spec.json_path else "")
              + f", up to {agent_limit(workflow)} agents at once"
              + f" ({strategy} agent worktrees)\n")
    for i, s in enumerate(spec.agent_template, start=1):
        out.write(f"    agent step {i}: {display_name(s)}\n")
    for i, name in enumerate(plan["reduce"], start=1):  # type: ignore[arg-type]
        out.write(f"  reduce {i}: {name}\n")
    out.write("Nothing was run (dry run).\n")
    return 0


def _workflow_worktree(workflow: Any) -> str | None:
    for key, value in workflow.extra:
        if key == "worktree" and isinstance(value, str) and value:
            return value
    return None


def _run_error(exc: Any, err: TextIO) -> None:
    err.write(f"error[{exc.code}]: {exc.message}\n")
    if exc.hint:
        err.write(f"  = help: {exc.hint}\n")


def _claude_settings(workflow: Any, environ: dict[str, str], repo_root: str, *,
                     dry_run: bool, err: TextIO) -> Any:
    """Claude settings, and the prerequisite check of spec 07 §10; None → exit 2."""
    from prodigy_core.support import uses_claude
    from prodigy_effects import runner

    try:
        settings = runner.claude_settings(workflow, environ=environ, repo_root=repo_root,
                                          storage_root=storage_for(environ).root)
    except runner.RunError as exc:
        err.write(f"error[{exc.code}]: {exc.message}\n")
        return None
    if uses_claude(workflow):
        reason = runner.check_claude(settings, environ,
                                     cache_dir=None if dry_run else storage_for(environ).root / "cache")
        if reason is not None:
            message = (f"Claude CLI is not available ({settings.executable}): {reason}. "
                       "Install Claude Code or set PRODIGY_CLAUDE_PATH.")
            if dry_run:
                err.write(f"warning: {message}\n")
            else:
                err.write(f"error[E7001]: {message}\n")
                return None
    return settings


def _stored_profile(checkpoint: dict[str, Any]) -> str | None:
    profile = checkpoint.get("profile")
    return profile if isinstance(profile, str) else None


def _resumable(doc: dict[str, Any]) -> bool:
    return doc.get("status") in ("Failed", "Paused", "Running") and not (
        isinstance(doc.get("merge"), dict) and doc["merge"].get("merged"))


def cmd_resume(args: argparse.Namespace, *, out: TextIO, err: TextIO, environ: dict[str, str],
               cwd: str) -> int:
    from prodigy_effects import runner
    from prodigy_effects.workflow_io import load_workflow_file

    storage = storage_for(environ)
    project = _abs(cwd, args.path) if getattr(args, "path", None) else Path(cwd)
    session_id: str | None = args.id
    if session_id is None:
        repo = runner.find_repo(project)
        candidates = [s for s in storage.list_sessions(repo.root) if _resumable(s)
                      and s.get("session_type", "Workflow") == "Workflow"]
        if not candidates:
            err.write("No resumable sessions found\n")
            return 2
        if len(candidates) > 1:
            err.write("Several sessions can be resumed:\n")
            for s in candidates:
                err.write(f"  {s.get('id')}  {s.get('status')}  "
                          f"{(s.get('workflow_data') or {}).get('workflow_name', '')}\n")
            err.write("Specify one: prodigy resume <id>\n")
            return 2
        session_id = str(candidates[0]["id"])
        out.write(f"Resuming the only resumable session: {session_id}\n")
    from prodigy_cli.cmd_jobs import job_of_session

    job = session_id if session_id.startswith("mapreduce-") else \
        job_of_session(storage, session_id)
    if job is not None:
        # a MapReduce job: `prodigy resume` routes to resume-job (spec 08 §2.4)
        job_args = argparse.Namespace(
            job_id=job, retry_failed=False, max_retries=2, force=args.force, yes=args.yes,
            path=getattr(args, "path", None), json=args.json,
            verbose=getattr(args, "verbose", 0), quiet=getattr(args, "quiet", False))
        from prodigy_cli.cmd_jobs import cmd_resume_job

        return cmd_resume_job(job_args, out=out, err=err, environ=environ, cwd=cwd)
    try:
        session = storage.read_session(session_id)
    except StorageError as exc:
        err.write(f"error[{exc.code}]: {exc}\n")
        return 2
    if session.get("status") == "Completed":
        err.write(f"error[E5006]: Session {session_id} has already completed and cannot be "
                  "resumed\n")
        return 2
    checkpoint, warnings = storage.read_checkpoint(session_id)
    for warning in warnings:
        err.write(f"{warning}\n")
    wf_path = Path(str(checkpoint.get("workflow_path") or
                       (session.get("workflow_data") or {}).get("workflow_path", "")))
    stored_hash = str(checkpoint.get("workflow_hash") or "")
    text: str | None = None
    if wf_path.is_file():
        loaded = load_workflow_file(wf_path, display_path=str(wf_path), environ=environ,
                                    profile=_stored_profile(checkpoint))
        text = loaded.text or ""
        if stored_hash and runner.workflow_hash(text) != stored_hash and not args.force:
            err.write(f"error[E5007]: workflow {wf_path} changed since the checkpoint\n"
                      "  = help: use --force to resume with the changed workflow (completed "
                      "steps are matched by id, else by position)\n")
            return 2
    else:
        snapshot = storage.read_snapshot(session_id)
        text = str(snapshot.get("source_text", ""))
        if "***REDACTED***" in text:
            err.write(f"error[E5007]: workflow file {wf_path} is gone, and its stored snapshot "
                      "had secret values masked, so it cannot be run as it was\n"
                      f"  = help: restore {wf_path} and run `prodigy resume {session_id}` "
                      "again\n")
            return 2
        if str(wf_path) != EXEC_PATH:
            err.write(f"warning: workflow file {wf_path} is gone; resuming from the stored "
                      "snapshot\n")
        import tempfile

        with tempfile.NamedTemporaryFile("w", suffix=wf_path.suffix or ".yml",
                                         delete=False) as handle:
            handle.write(text)
            tmp = Path(handle.name)
        loaded = load_workflow_file(tmp, display_path=str(wf_path), environ=environ,
                                    profile=_stored_profile(checkpoint))
        tmp.unlink()
    print_problems([p for p in loaded.problems if p.is_error], err,
                   early_mask(loaded.workflow, environ))
    if loaded.workflow is None:
        return 2
    workflow = loaded.workflow
    repo_root = str(session.get("repo_path") or project)
    repo = runner.Repo(root=repo_root, name=str(session.get("repo_name") or Path(repo_root).name),
                       is_git=True)
    inputs_doc = checkpoint.get("inputs") or {}
    args_list = tuple(str(a) for a in inputs_doc.get("args", []))
    profile = checkpoint.get("profile")
    # ``cache: true`` values computed before the interruption are in the checkpoint's
    # variables (``prodigy_core.step_env``): the step machine reuses them
    resolved = runner.resolve_env(workflow, repo_root=repo.root, project_dir=repo.root,
                                  environ=environ, profile=profile, args=args_list,
                                  file=str(wf_path), dynamic_at_start=False,
                                  positions=loaded.positions)
    if print_env_problems(resolved, workflow, environ, err, warnings=False):
        return 2
    patterns = [p for p in inputs_doc.get("map_patterns", []) if p]
    from prodigy_core.context import InputSpec

    inputs = [InputSpec(arg=a) for a in args_list]
    for rel in patterns:
        stem = Path(rel).stem
        inputs.append(InputSpec(arg=stem.split("-", 1)[0], file=Path(rel).name, file_path=rel))
    verbosity, quiet = _verbosity(args)
    exec_state = checkpoint.get("execution_state") or {}
    req = runner.RunRequest(
        workflow=workflow, workflow_path=str(wf_path), workflow_text=text or "",
        project_dir=Path(repo.root), environ=environ, args=args_list,
        max_iterations=int(exec_state.get("total_iterations") or 1),
        auto_yes=args.yes or str(wf_path) == EXEC_PATH,  # `exec` always merges
        fail_fast=bool(inputs_doc.get("fail_fast", False)),
        profile=profile, verbosity=verbosity, quiet=quiet, json_mode=args.json,
    )
    claude = _claude_settings(workflow, environ, repo.root, dry_run=False, err=err)
    if claude is None:
        return 2
    worktree = _stored_worktree(session, storage, repo.name, environ)
    ctx = runner.build_context(req, session_id=session_id, repo=repo, resolved=resolved,
                               inputs=inputs, claude=claude, worktree=worktree)
    if isinstance(session.get("started_at"), str) and session["started_at"]:
        # a resumed session keeps the time it first started
        import attrs

        ctx = attrs.evolve(ctx, started_at=session["started_at"])
    last = int(checkpoint.get("last_event_seq") or 0)
    later = runner.later_events(storage, repo.name, session_id, last)
    human = err if args.json else out
    human.write(f"Resuming session: {session_id}\n")
    human.write(f"Workflow: {wf_path}\n")
    transition = run_machine.resume(workflow, ctx, checkpoint, later)
    start_seq = runner.next_seq(storage, repo.name, session_id)
    try:
        result = runner.execute(transition, ctx, storage, verbosity=verbosity, quiet=quiet,
                                json_mode=args.json, out=out, err=err, start_seq=start_seq)
    except StorageError as exc:
        err.write(f"error[{exc.code}]: {exc}\n")
        return 1 if exc.code == "E5004" else 2
    if args.json:
        out.write(json.dumps(result.outcome) + "\n")
    return result.exit_code
