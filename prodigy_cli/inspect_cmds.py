"""``sessions``, ``checkpoints`` and ``events``: dispatch, and the listing/show views.

The maintenance subcommands live in their own modules: ``cmd_events`` (every
``events`` subcommand), ``cmd_sessions`` (``sessions clean``) and ``cmd_checkpoints``
(``checkpoints validate|delete|clean|mapreduce`` and ``show --version``).
"""

from __future__ import annotations

import argparse
import json
from typing import Any, TextIO

from prodigy_cli.cli_support import repo_filter, table
from prodigy_effects.storage import E_CHECKPOINT_NOT_FOUND, Storage, StorageError


def dispatch(args: argparse.Namespace, *, out: TextIO, err: TextIO, environ: dict[str, str],
             cwd: str) -> int:
    from prodigy_cli.commands import storage_for

    storage = storage_for(environ)
    action = getattr(args, "action", None)
    if action is None:
        err.write(f"error[E8001]: `prodigy {args.command}` needs a subcommand; see "
                  f"`prodigy {args.command} --help`\n")
        return 2
    if args.command == "sessions":
        if action in ("ls", "list"):
            return sessions_ls(args, storage, out, cwd)
        if action == "clean":
            from prodigy_cli.cmd_sessions import sessions_clean

            return sessions_clean(args, storage, out, err, cwd)
        return sessions_show(args, storage, out, err)
    if args.command == "checkpoints":
        if action in ("ls", "list"):
            return checkpoints_ls(args, storage, out, cwd)
        if action == "show":
            return checkpoints_show(args, storage, out, err)
        from prodigy_cli import cmd_checkpoints

        return cmd_checkpoints.dispatch(action, args, storage, out, err, cwd)
    if args.command == "events":
        from prodigy_cli import cmd_events

        return cmd_events.dispatch(action, args, storage, out, err, cwd)
    return 2


def _duration(doc: dict[str, Any]) -> str:
    from datetime import datetime

    start, end = doc.get("started_at"), doc.get("completed_at") or doc.get("updated_at")
    try:
        a = datetime.fromisoformat(str(start).replace("Z", "+00:00"))
        b = datetime.fromisoformat(str(end).replace("Z", "+00:00"))
    except ValueError:
        return "-"
    secs = max(0, int((b - a).total_seconds()))
    return f"{secs // 60}m{secs % 60:02d}s"


def sessions_ls(args: argparse.Namespace, storage: Storage, out: TextIO, cwd: str) -> int:
    repo_path, _ = repo_filter(args, cwd)
    docs = storage.list_sessions(repo_path)
    if args.status:
        docs = [d for d in docs if str(d.get("status", "")).lower() == args.status.lower()]
    docs = docs[: args.limit]
    if args.json:
        out.write(json.dumps(docs, indent=2) + "\n")
        return 0
    if not docs:
        out.write("No sessions found.\n")
        return 0
    rows = [("ID", "TYPE", "STATUS", "WORKFLOW", "STARTED", "DURATION", "COST")]
    for d in docs:
        wf = (d.get("workflow_data") or {}).get("workflow_name", "")
        cost = (d.get("analytics") or {}).get("total_cost_usd", 0.0) or 0.0
        rows.append((str(d.get("id")), str(d.get("session_type", "")), str(d.get("status")),
                     str(wf), str(d.get("started_at", "")), _duration(d), f"${cost:.2f}"))
    table(rows, out)
    return 0


def sessions_show(args: argparse.Namespace, storage: Storage, out: TextIO, err: TextIO) -> int:
    try:
        doc = storage.read_session(args.id)
    except StorageError as exc:
        err.write(f"error[{exc.code}]: {exc}\n")
        return 2
    checkpoint: dict[str, Any] | None = None
    try:
        checkpoint, _warnings = storage.read_checkpoint(args.id)
    except StorageError:
        checkpoint = None
    if args.json:
        full = dict(doc)
        if checkpoint is not None:
            full["steps"] = checkpoint.get("completed_steps", [])
        out.write(json.dumps(full, indent=2) + "\n")
        return 0
    wf = doc.get("workflow_data") or {}
    out.write(f"Session:   {doc.get('id')}\n")
    out.write(f"Type:      {doc.get('session_type')}\n")
    out.write(f"Status:    {doc.get('status')}\n")
    out.write(f"Workflow:  {wf.get('workflow_name', '')} ({wf.get('workflow_path', '')})\n")
    out.write(f"Started:   {doc.get('started_at')}\n")
    out.write(f"Updated:   {doc.get('updated_at')}\n")
    out.write(f"Progress:  {wf.get('current_step', 0)} of {wf.get('total_steps', 0)} steps "
              "completed\n")
    if doc.get("error"):
        out.write(f"Error:     {doc.get('error')}\n")
    wt = doc.get("worktree")
    if isinstance(wt, dict):
        out.write(f"Worktree:  {wt.get('name')} ({wt.get('path')}, branch {wt.get('branch')}"
                  f", from {wt.get('original_branch') or '-'})\n")
        merge = doc.get("merge") or {}
        if merge.get("merged"):
            state = f"merged into {merge.get('target')}"
        elif merge.get("reason"):
            state = f"not merged ({merge.get('reason')})"
        else:
            state = "not merged yet"
        out.write(f"Merge:     {state}\n")
    analytics = doc.get("analytics") or {}
    out.write(f"Cost:      ${float(analytics.get('total_cost_usd') or 0.0):.2f} "
              f"({analytics.get('claude_calls', 0)} Claude calls)\n")
    if checkpoint is not None:
        out.write("Steps:\n")
        for step in checkpoint.get("completed_steps", []):
            out.write(f"  {int(step.get('step_index', 0)) + 1}. {step.get('command')}  "
                      f"[{step.get('status')}] exit {step.get('exit_code')}\n")
    if doc.get("status") in ("Failed", "Paused"):
        out.write(f"Resume with: prodigy resume {doc.get('id')}\n")
    return 0


def checkpoints_ls(args: argparse.Namespace, storage: Storage, out: TextIO, cwd: str) -> int:
    repo_path, _ = repo_filter(args, cwd)
    rows: list[dict[str, Any]] = []
    for doc in storage.list_sessions(repo_path):
        sid = str(doc.get("id"))
        if args.workflow_id and sid != args.workflow_id:
            continue
        path = storage.checkpoint_file(sid)
        if not path.exists():
            continue
        try:
            cp, _ = storage.read_checkpoint(sid)
        except StorageError as exc:
            rows.append({"id": sid, "kind": "standard", "status": "corrupt",
                         "progress": str(exc), "saved_at": "", "path": str(path)})
            continue
        state = cp.get("execution_state") or {}
        rows.append({"id": sid, "kind": "standard", "status": state.get("status"),
                     "progress": f"step {state.get('current_step_index', 0)}/"
                                 f"{state.get('total_steps', 0)}",
                     "saved_at": cp.get("timestamp"), "path": str(path)})
    if args.json:
        out.write(json.dumps(rows, indent=2) + "\n")
        return 0
    if not rows:
        out.write("No checkpoints found.\n")
        return 0
    grid = [("ID", "KIND", "STATUS", "PROGRESS", "SAVED AT", "PATH")]
    grid += [(r["id"], r["kind"], str(r["status"]), r["progress"], str(r["saved_at"]),
               r["path"]) for r in rows]
    table(grid, out)
    return 0


def checkpoints_show(args: argparse.Namespace, storage: Storage, out: TextIO,
                     err: TextIO) -> int:
    warnings: list[str] = []
    if args.checkpoint_version is not None:
        from prodigy_cli.cmd_checkpoints import checkpoint_show_version

        found = checkpoint_show_version(args.id, args.checkpoint_version, storage,
                                        err)
        if found is None:
            return 2
        cp = found
    else:
        try:
            cp, warnings = storage.read_checkpoint(args.id)
        except ValueError:
            err.write(f"error[{E_CHECKPOINT_NOT_FOUND}]: no checkpoint for session {args.id}\n"
                      "  hint: run `prodigy checkpoints ls` to see the checkpoints\n")
            return 2
        except StorageError as exc:
            err.write(f"error[{exc.code}]: {exc}\n")
            return 2
    for warning in warnings:
        err.write(f"{warning}\n")
    if args.json:
        out.write(json.dumps(cp, indent=2) + "\n")
        return 0
    state = cp.get("execution_state") or {}
    out.write(f"Checkpoint: {args.id}\n")
    out.write(f"Workflow:   {cp.get('workflow_name')} ({cp.get('workflow_path')})\n")
    out.write(f"Status:     {state.get('status')}\n")
    out.write(f"Next step:  {int(state.get('current_step_index', 0)) + 1} of "
              f"{state.get('total_steps')}\n")
    out.write(f"Iteration:  {state.get('current_iteration')}/{state.get('total_iterations')}\n")
    out.write(f"Saved at:   {cp.get('timestamp')}\n")
    out.write(f"Variables:  {len(cp.get('variable_state') or {})}\n")
    for step in cp.get("completed_steps", []):
        out.write(f"  {int(step.get('step_index', 0)) + 1}. {step.get('command')} "
                  f"[{step.get('status')}]\n")
    return 0
