"""``prodigy worktree merge <name> | --all`` (spec 08 §2.7): merge kept session worktrees.

Runs the merge machine of ``prodigy_core.merge_machine`` on its own, with the procedure
of spec 06 §7.5–7.8 (or the session's custom ``merge:`` workflow), without a prompt: the
command is the confirmation.  The session record's ``merge`` field is updated afterwards.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, TextIO

import attrs

from prodigy_core import merge_machine
from prodigy_core.context import RunContext, WorktreeSpec
from prodigy_core.model import Workflow
from prodigy_effects.storage import Storage, StorageError


def merge(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from prodigy_effects import worktree_admin

    storage: Storage = args.storage
    environ: dict[str, str] = args.environ
    cwd = Path(args.cwd)
    project = cwd / args.path if getattr(args, "path", None) else cwd
    if not args.name and not args.all:
        err.write("error[E8001]: name a worktree to merge, or use --all\n"
                  "  = help: prodigy worktree merge <name>   (see `prodigy worktree ls`)\n")
        return 2
    found = worktree_admin.repo_of(project)
    if found is None:
        err.write(f"error[E4001]: not a git repository: {project}\n")
        return 2
    repo_root, repo_name = found
    metas = [m for m in worktree_admin.read_all_meta(storage, repo_name)
             if m.get("kind", "session") in ("session", "named")]
    if args.name:
        chosen = [m for m in metas if m.get("worktree_name") == args.name]
        if not chosen:
            err.write(f"error[E4006]: no session worktree named '{args.name}' in {repo_name}\n"
                      "  = help: list them with `prodigy worktree ls`\n")
            return 2
    else:
        chosen = [m for m in metas if not m.get("merged") and m.get("status") in
                  ("completed", "in_progress") and Path(str(m.get("path", ""))).is_dir()]
        if not chosen:
            out.write("No session worktrees to merge.\n")
            return 0
    results: list[dict[str, Any]] = []
    failed = False
    for meta in chosen:
        code, outcome = _merge_one(meta, storage, repo_root, repo_name, environ,
                                   out if not args.json else err, err,
                                   json_mode=bool(args.json))
        results.append({"worktree": meta.get("worktree_name"), "exit_code": code,
                        **(outcome or {})})
        if code == 0 and outcome and outcome.get("merged"):
            (err if args.json else out).write(
                f"Successfully merged worktree '{meta.get('worktree_name')}'\n")
        elif code != 0:
            failed = True
    if args.json:
        out.write(json.dumps(results) + "\n")
    return 1 if failed else 0


def _merge_one(meta: dict[str, Any], storage: Storage, repo_root: str, repo_name: str,
               environ: dict[str, str], out: TextIO, err: TextIO, *,
               json_mode: bool) -> tuple[int, dict[str, Any] | None]:
    from prodigy_effects import runner

    name = str(meta.get("worktree_name"))
    if meta.get("merged"):
        out.write(f"Worktree '{name}' is already merged.\n")
        return 0, {"merged": True, "target": meta.get("original_branch"), "reason": None}
    if not Path(str(meta.get("path", ""))).is_dir():
        err.write(f"error[E4006]: the worktree '{name}' is gone ({meta.get('path')})\n")
        return 2, None
    session_id = str(meta.get("session_id") or name)
    session: dict[str, Any] = {}
    try:
        session = storage.read_session(session_id)
    except (StorageError, ValueError):
        session = {}
    workflow = _workflow(session, meta, storage, environ, err)
    wt_doc = session.get("worktree") if isinstance(session.get("worktree"), dict) else {}
    auto = environ.get("PRODIGY_AUTO_CLEANUP", "").strip().lower() not in ("false", "0", "no")
    spec = WorktreeSpec(
        name=name, path=str(meta["path"]), branch=str(meta.get("branch") or f"prodigy-{name}"),
        base_commit=str((wt_doc or {}).get("base_commit") or meta.get("base_commit") or ""),
        original_branch=meta.get("original_branch") if isinstance(
            meta.get("original_branch"), str) else None,
        named=meta.get("kind") == "named", auto_cleanup=auto,
        repo_lock=str(storage.repo_lock_file(repo_name)))
    ctx = RunContext(
        session_id=session_id, workflow_name=workflow.name,
        workflow_path=str(meta.get("workflow_path") or ""), project_dir=spec.path,
        repo_root=repo_root, repo_name=repo_name, worktree_name=name,
        home=environ.get("HOME", ""), environ=tuple(sorted(environ.items())),
        started_at=str(meta.get("created_at") or ""), worktree=spec, auto_yes=True,
        is_root=_is_root())
    ctx = attrs.evolve(ctx, workflow_env=_workflow_env(workflow, repo_root, environ))
    machine = merge_machine.MergeMachine(ctx=ctx, workflow=workflow, ask=False)
    transition = merge_machine.start_alone(machine)
    try:
        result = runner.execute(
            transition, ctx, storage, verbosity=0, quiet=False, json_mode=json_mode,
            out=out, err=err, start_seq=runner.next_seq(storage, repo_name, session_id),
            step=merge_machine.step_alone)
    except StorageError as exc:
        err.write(f"error[{exc.code}]: {exc}\n")
        return (1 if exc.code == "E5004" else 2), None
    outcome = dict(result.outcome) if isinstance(result.outcome, dict) else {}
    if session:
        session["merge"] = {"target": outcome.get("target"), "merged": outcome.get("merged"),
                            "reason": outcome.get("reason")}
        if outcome.get("merged") and session.get("status") in ("Running",):
            session["status"] = "Completed"
        try:
            storage.write_session(session)
        except StorageError as exc:
            err.write(f"warning: cannot update the session record: {exc}\n")
    return result.exit_code, outcome


def _is_root() -> bool:
    import os

    return os.geteuid() == 0


def _workflow(session: dict[str, Any], meta: dict[str, Any], storage: Storage,
              environ: dict[str, str], err: TextIO) -> Workflow:
    """The session's workflow (for its custom ``merge:``), or a bare one."""
    from prodigy_effects.workflow_io import load_workflow_file

    path = Path(str(meta.get("workflow_path") or
                    (session.get("workflow_data") or {}).get("workflow_path") or ""))
    fallback = Workflow(name=str((session.get("workflow_data") or {}).get("workflow_name")
                                 or meta.get("worktree_name") or "merge"))
    if not path.is_file():
        return fallback
    loaded = load_workflow_file(path, display_path=str(path), environ=environ, profile=None)
    if loaded.workflow is None or any(p.is_error for p in loaded.problems):
        err.write(f"warning: cannot load {path}; merging without its custom merge workflow\n")
        return fallback
    return loaded.workflow


def _workflow_env(workflow: Workflow, repo_root: str,
                  environ: dict[str, str]) -> tuple[tuple[str, str], ...]:
    from prodigy_effects import runner

    resolved = runner.resolve_env(workflow, repo_root=repo_root, project_dir=repo_root,
                                  environ=environ, profile=None, args=(), file="")
    return resolved.values if not resolved.problems else ()
