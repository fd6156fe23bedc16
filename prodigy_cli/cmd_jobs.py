"""``prodigy resume-job <job_id>`` (spec 05 §16, spec 08 §2.5)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, TextIO

from prodigy_effects.storage import Storage, StorageError


def find_job(storage: Storage, job_id: str) -> Path | None:
    """``<storage>/state/<repo>/mapreduce/jobs/<job_id>/`` (None: no such job)."""
    state = storage.root / "state"
    if not state.is_dir() or "/" in job_id or job_id.startswith("."):
        return None
    for repo in sorted(state.iterdir()):
        candidate = repo / "mapreduce" / "jobs" / job_id
        if candidate.is_dir():
            return candidate
    return None


def job_of_session(storage: Storage, session_id: str) -> str | None:
    try:
        session = storage.read_session(session_id)
    except (StorageError, ValueError):
        return None
    meta = session.get("metadata") or {}
    job = meta.get("job_id") if isinstance(meta, dict) else None
    return job if isinstance(job, str) else None


def cmd_resume_job(args: argparse.Namespace, *, out: TextIO, err: TextIO,
                   environ: dict[str, str], cwd: str) -> int:
    from prodigy_cli.commands import _claude_settings, _stored_worktree, _verbosity, storage_for
    from prodigy_core import job_machine
    from prodigy_effects import job_runner, runner
    from prodigy_effects.jobs import read_newest
    from prodigy_effects.workflow_io import load_workflow_file, load_workflow_text

    storage = storage_for(environ)
    job_id: str = args.job_id
    directory = find_job(storage, job_id)
    if directory is None:
        err.write(f"error[E6010]: no MapReduce job {job_id} under {storage.root / 'state'}\n"
                  "  = help: list sessions with `prodigy sessions ls`\n")
        return 2
    human = err if args.json else out
    human.write(f"Found job at: {directory}\n")
    doc, warnings = read_newest(directory)
    for warning in warnings:
        code, _, rest = warning.partition(": ")
        err.write(f"warning[{code}]: {rest}\n")
    if doc is None:
        err.write(f"error[E5003]: job {job_id} has no readable job state in {directory}\n")
        return 2
    if doc.get("is_complete") or doc.get("status") in ("completed", "completed_with_failures"):
        session_id = str(doc.get("session_id") or "")
        try:
            session = storage.read_session(session_id)
        except (StorageError, ValueError):
            session = {}
        if session.get("status") == "Completed":
            err.write(f"error[E5006]: Job {job_id} has already completed\n")
            return 2
    session_id = str(doc.get("session_id") or "")
    try:
        session = storage.read_session(session_id)
    except (StorageError, ValueError) as exc:
        err.write(f"error[E5005]: the session {session_id} of job {job_id} is unknown: {exc}\n")
        return 2
    wf_path = Path(str(doc.get("workflow_path") or ""))
    stored_hash = str(doc.get("workflow_hash") or "")
    if wf_path.is_file():
        loaded = load_workflow_file(wf_path, display_path=str(wf_path), environ=environ,
                                    profile=doc.get("profile") if isinstance(
                                        doc.get("profile"), str) else None)
        if stored_hash and runner.workflow_hash(loaded.text or "") != stored_hash and \
                not args.force:
            err.write(f"error[E5007]: workflow {wf_path} changed since the job started\n"
                      "  = help: use --force to resume with the changed workflow\n")
            return 2
        text = loaded.text or ""
    else:
        snapshot_file = directory / "workflow.snapshot.json"
        try:
            snapshot: Any = json.loads(snapshot_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            err.write(f"error[E5007]: workflow {wf_path} is gone and the job has no snapshot\n")
            return 2
        text = str(snapshot.get("source_text", ""))
        if str(wf_path) not in ("(batch)", "(exec)"):
            err.write(f"warning: workflow file {wf_path} is gone; resuming from the stored "
                      "snapshot\n")
        loaded = load_workflow_text(text, display_path=str(wf_path), stem=wf_path.stem,
                                    environ=environ, filename=wf_path.name)
    if loaded.workflow is None or any(p.is_error for p in loaded.problems):
        from prodigy_cli.commands import print_problems

        print_problems([p for p in loaded.problems if p.is_error], err)
        return 2
    workflow = loaded.workflow
    repo_root = str(session.get("repo_path") or "")
    repo = runner.Repo(root=repo_root, name=str(session.get("repo_name") or
                                                 Path(repo_root).name), is_git=True)
    args_list = tuple(str(a) for a in doc.get("positional_args") or [])
    profile = doc.get("profile") if isinstance(doc.get("profile"), str) else None
    resolved = runner.resolve_env(workflow, repo_root=repo.root, project_dir=repo.root,
                                  environ=environ, profile=profile, args=args_list,
                                  file=str(wf_path),
                                  positions=loaded.positions)
    from prodigy_cli.commands import print_env_problems

    if print_env_problems(resolved, workflow, environ, err, warnings=False):
        return 2
    verbosity, quiet = _verbosity(args)
    req = runner.RunRequest(workflow=workflow, workflow_path=str(wf_path), workflow_text=text,
                            project_dir=Path(repo.root), environ=environ, args=args_list,
                            auto_yes=args.yes or str(wf_path) == "(batch)",  # merges
                            profile=profile, verbosity=verbosity,
                            quiet=quiet, json_mode=args.json)
    claude = _claude_settings(workflow, environ, repo.root, dry_run=False, err=err)
    if claude is None:
        return 2
    worktree = _stored_worktree(session, storage, repo.name, environ)
    ctx = runner.build_context(req, session_id=session_id, repo=repo, resolved=resolved,
                               inputs=[], claude=claude, worktree=worktree)
    import attrs

    if isinstance(session.get("started_at"), str) and session["started_at"]:
        ctx = attrs.evolve(ctx, started_at=session["started_at"])
    ctx = attrs.evolve(ctx, progress_interval=1.0)
    config = job_runner.job_config(storage, repo.name, job_id, session_id)
    if isinstance(doc.get("reprocess_of"), str):
        config = attrs.evolve(config, reprocess_of=doc["reprocess_of"],
                              final_merge=bool(doc.get("final_merge", True)))
    last = int(doc.get("last_event_seq") or 0)
    later = runner.later_events(storage, repo.name, job_id, last)
    transition = job_machine.resume(
        workflow, ctx, config, doc, later,
        retry_failed=args.max_retries if getattr(args, "retry_failed", False) else None)
    start_seq = runner.next_seq(storage, repo.name, job_id)
    try:
        result = job_runner.execute_job(transition, ctx, config, storage,
                                        verbosity=verbosity, quiet=quiet,
                                        json_mode=args.json, out=out, err=err,
                                        start_seq=start_seq)
    except StorageError as exc:
        err.write(f"error[{exc.code}]: {exc}\n")
        return 1 if exc.code == "E5004" else 2
    if args.json:
        out.write(json.dumps(result.outcome) + "\n")
    return result.exit_code
