"""``sessions``, ``checkpoints`` and ``events``: read-only views of what happened."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, TextIO

from prodigy_effects.journal import follow, list_run_dirs, read_events
from prodigy_effects.storage import Storage, StorageError


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
        return sessions_show(args, storage, out, err)
    if args.command == "checkpoints":
        if action in ("ls", "list"):
            return checkpoints_ls(args, storage, out, cwd)
        return checkpoints_show(args, storage, out, err)
    if args.command == "events":
        if action == "ls":
            return events_ls(args, storage, out, err, cwd)
        return events_follow(args, storage, out, err, cwd)
    return 2


def _repo_filter(args: argparse.Namespace, cwd: str) -> tuple[str | None, str | None]:
    """(repo_path, repo_name) of the current repository, or (None, None) for all repos."""
    if getattr(args, "all_repos", False):
        return None, None
    from prodigy_effects.runner import find_repo

    project = Path(args.path) if getattr(args, "path", None) else Path(cwd)
    repo = find_repo(project)
    if not repo.is_git:
        return None, None
    return repo.root, repo.name


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
    repo_path, _ = _repo_filter(args, cwd)
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
    _table(rows, out)
    return 0


def _table(rows: list[tuple[str, ...]], out: TextIO) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() + "\n")


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
    out.write(f"Progress:  step {wf.get('current_step', 0)} of {wf.get('total_steps', 0)}\n")
    if doc.get("error"):
        out.write(f"Error:     {doc.get('error')}\n")
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
    repo_path, _ = _repo_filter(args, cwd)
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
    table = [("ID", "KIND", "STATUS", "PROGRESS", "SAVED AT", "PATH")]
    table += [(r["id"], r["kind"], str(r["status"]), r["progress"], str(r["saved_at"]),
               r["path"]) for r in rows]
    _table(table, out)
    return 0


def checkpoints_show(args: argparse.Namespace, storage: Storage, out: TextIO,
                     err: TextIO) -> int:
    try:
        cp, warnings = storage.read_checkpoint(args.id)
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


def _run_dirs(args: argparse.Namespace, storage: Storage, cwd: str) -> list[Path]:
    if getattr(args, "file", None):
        return [Path(args.file)]
    _, repo_name = _repo_filter(args, cwd)
    dirs = list_run_dirs(storage, repo_name)
    if args.job_id:
        dirs = [d for d in dirs if d.name == args.job_id]
    return dirs


def _iter_file_or_dir(path: Path) -> list[dict[str, Any]]:
    if path.is_file():
        events = []
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
        return events
    return list(read_events(path))


def _line(e: dict[str, Any]) -> str:
    body = e.get("event") or {}
    kind = body.get("event_type", "?")
    who = body.get("agent_id") or body.get("item_id") or body.get("step_path") or "-"
    summary_keys = ("display", "status", "error", "workflow_name", "signal", "exit_code")
    summary = " ".join(f"{k}={body[k]}" for k in summary_keys if body.get(k) not in (None, ""))
    return f"{e.get('timestamp', '')} {kind} {e.get('correlation_id', '')} {who} {summary}"


def _match(e: dict[str, Any], args: argparse.Namespace) -> bool:
    body = e.get("event") or {}
    if args.event_type and body.get("event_type") not in args.event_type:
        return False
    if getattr(args, "agent_id", None) and body.get("agent_id") != args.agent_id:
        return False
    return not (getattr(args, "item_id", None) and body.get("item_id") != args.item_id)


def events_ls(args: argparse.Namespace, storage: Storage, out: TextIO, err: TextIO,
              cwd: str) -> int:
    dirs = _run_dirs(args, storage, cwd)
    if args.job_id and not dirs:
        err.write(f"error[E6010]: no events found for '{args.job_id}'\n")
        return 2
    events: list[dict[str, Any]] = []
    for d in dirs:
        events.extend(e for e in _iter_file_or_dir(d) if _match(e, args))
    events.sort(key=lambda e: (str(e.get("timestamp", "")), int(e.get("seq") or 0)))
    events = events[-args.limit:] if args.limit else events
    for e in events:
        out.write((json.dumps(e) if args.json else _line(e)) + "\n")
    if not events and not args.json:
        out.write("No events found.\n")
    return 0


def events_follow(args: argparse.Namespace, storage: Storage, out: TextIO, err: TextIO,
                  cwd: str) -> int:
    dirs = _run_dirs(args, storage, cwd)
    if not dirs:
        err.write("error[E6010]: no event log to follow (give --job-id or --file)\n")
        return 2
    target = dirs[-1]
    try:
        for e in follow(target, 0.2, lambda: False):
            if _match(e, args):
                out.write((json.dumps(e) if args.json else _line(e)) + "\n")
                out.flush()
    except KeyboardInterrupt:
        return 0
    return 0
