"""``prodigy worktree ls | clean | clean-orphaned | merge`` (spec 08 §2.7, 06 §8).

``ls`` lists the worktrees of the repository (metadata joined with the directories
under ``<storage>/worktrees/``).  ``clean`` removes the selected worktrees, their
metadata and — when merged into their target, or with ``--force`` — their branches,
skipping with a reason those a running session holds (always) and those with
uncommitted changes or unmerged commits (unless ``--force``).  ``clean-orphaned``
removes what is left over: directories under ``<storage>/worktrees/<repo>/`` that git no
longer knows as worktrees, metadata documents whose worktree directory is gone, and
git's own records of worktrees whose directory is gone (``git worktree prune``).
The decisions live in :mod:`prodigy_effects.worktree_inventory`; this module selects,
asks, and renders.
"""

from __future__ import annotations

import argparse
import os
from datetime import UTC
from pathlib import Path
from typing import Any, TextIO

from prodigy_cli.cli_support import Confirm, now_utc, table, write_json
from prodigy_effects.storage import Storage, StorageError, resolve_storage_root
from prodigy_effects.worktree_admin import (
    ahead_count,
    git,
    merge_target,
    repo_of,
    uncommitted_count,
)
from prodigy_effects.worktree_inventory import (
    CleanPlan,
    Worktree,
    apply_clean,
    created_at,
    discover,
    find_orphans,
    plan_clean,
    remove_orphans,
)

__all__ = ["NO_SELECTOR", "clean", "clean_orphaned", "dispatch", "ls", "merge"]

NO_SELECTOR = "No worktrees specified for cleanup. Use --all or specify a worktree name."


def dispatch(args: argparse.Namespace, *, out: TextIO, err: TextIO, environ: dict[str, str],
             cwd: str) -> int:
    action = getattr(args, "action", None)
    if action is None:
        err.write("error[E8001]: `prodigy worktree` needs a subcommand (ls, merge, clean, "
                  "clean-orphaned); see `prodigy worktree --help`\n")
        return 2
    home = Path(environ.get("HOME") or Path.home())
    storage = Storage(resolve_storage_root(environ, home))
    project = Path(cwd) / args.path if getattr(args, "path", None) else Path(cwd)
    try:
        if action in ("ls", "list"):
            return ls(args, storage, project, out, err)
        if action == "clean":
            return clean(args, storage, project, out, err)
        if action == "clean-orphaned":
            return clean_orphaned(args, storage, project, out, err)
        args.cwd, args.environ, args.storage = cwd, environ, storage
        return merge(args, out, err)
    except StorageError as exc:
        err.write(f"error[{exc.code}]: {exc}\n")
        return 2
    except KeyboardInterrupt:
        err.write("Interrupted.\n")
        return 130
    finally:
        _flush_warnings(storage, err)


def merge(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``prodigy worktree merge <name> | --all`` (spec 08 §2.7).

    ``args`` also carries ``cwd``, ``environ`` and ``storage`` (set by :func:`dispatch`).
    """
    from prodigy_cli.cmd_worktree_merge import merge as merge_worktrees

    return merge_worktrees(args, out, err)


# ------------------------------------------------------------------------------ helpers


def _flush_warnings(storage: Storage, err: TextIO) -> None:
    for text in storage.warnings:
        code, _, rest = text.partition(": ")
        err.write(f"warning[{code}]: {rest}\n")
    storage.warnings.clear()


def _warn(err: TextIO, texts: tuple[str, ...] | list[str]) -> None:
    for text in texts:
        code, _, rest = text.partition(": ")
        err.write(f"warning[{code}]: {rest}\n")


def _not_a_repo(project: Path, err: TextIO) -> int:
    err.write(f"error[E4001]: not a git repository: {project}\n")
    return 2


def _created(wt: Worktree) -> str:
    moment = created_at(wt)
    return "-" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M")


def _target_and_ahead(wt: Worktree) -> tuple[str | None, int | None]:
    if wt.repo_root is None or not os.path.isdir(wt.repo_root):
        return wt.original_branch, None
    target = merge_target(wt.repo_root, wt.original_branch)
    if target is None or not wt.branch:
        return target or wt.original_branch, None
    return target, ahead_count(wt.repo_root, wt.branch, target)


def _last_commit(wt: Worktree) -> str | None:
    if not wt.exists:
        return None
    result = git(wt.path, "log", "-1", "--format=%h %s (%cr)")
    return result.stdout.strip() or None if result.returncode == 0 else None


def _details(wt: Worktree) -> dict[str, Any]:
    meta = wt.meta or {}
    session = meta.get("session_id")
    resume = (f"prodigy resume {session}"
              if wt.status in ("failed", "interrupted") and isinstance(session, str) else None)
    return {"workflow": meta.get("workflow_path"), "last_commit": _last_commit(wt),
            "uncommitted_changes": uncommitted_count(wt.path) if wt.exists else None,
            "resume_command": resume}


# ----------------------------------------------------------------------------------- ls


def ls(args: argparse.Namespace, storage: Storage, project: Path, out: TextIO,
       err: TextIO) -> int:
    """``worktree ls``: outside a repository (or with ``--all-repos``) every repository."""
    repo = None if args.all_repos else repo_of(project)
    everywhere = repo is None
    worktrees = [w for w in discover(storage, repo, mapreduce=args.mapreduce) if w.active]
    rows: list[tuple[Worktree, str | None, int | None]] = [
        (w, *_target_and_ahead(w)) for w in worktrees]
    if args.json:
        docs = []
        for wt, _target, ahead in rows:
            doc = wt.document()
            doc["ahead"] = ahead
            if args.detailed:
                doc.update(_details(wt))
            docs.append(doc)
        write_json(docs, out)
        return 0
    if not rows:
        out.write("No active Prodigy worktrees found.\n")
        return 0
    out.write("Active Prodigy worktrees:\n")
    header = ("NAME", "BRANCH", "TARGET", "STATUS", "AHEAD", "CREATED")
    lines: list[tuple[str, ...]] = [header + (("REPO",) if everywhere else ())]
    for wt, target, ahead in rows:
        status = wt.status if wt.exists else f"{wt.status} (missing)"
        line = (wt.name, wt.branch or "-", target or "-", status,
                "-" if ahead is None else str(ahead), _created(wt))
        repo_name = os.path.basename(wt.repo_root) if wt.repo_root else "-"
        lines.append(line + ((repo_name,) if everywhere else ()))
    table(lines, out)
    if not args.detailed:
        for wt, _target, _ahead in rows:
            command = _details(wt)["resume_command"]
            if command:
                out.write(f"  {wt.name}: {wt.status}, resume with: {command}\n")
    if args.detailed:
        for wt, _target, _ahead in rows:
            info = _details(wt)
            changes = info["uncommitted_changes"]
            out.write(f"\n{wt.name}\n")
            out.write(f"  Path:        {wt.path}{'' if wt.exists else ' (missing)'}\n")
            out.write(f"  Workflow:    {info['workflow'] or '-'}\n")
            out.write(f"  Last commit: {info['last_commit'] or '-'}\n")
            out.write(f"  Uncommitted: {'-' if changes is None else changes} change(s)\n")
            if info["resume_command"]:
                out.write(f"  Resume with: {info['resume_command']}\n")
    return 0


# -------------------------------------------------------------------------------- clean


def _select(args: argparse.Namespace, storage: Storage, repo: tuple[str, str],
            err: TextIO) -> list[Worktree] | None:
    """The worktrees the selectors name; ``None`` (error written) for an unknown name."""
    mapreduce = bool(args.mapreduce or args.job_id)
    found = discover(storage, repo, sessions=not mapreduce, mapreduce=mapreduce)
    if args.job_id:
        found = [w for w in found if args.job_id in
                 (w.scope, (w.meta or {}).get("job_id"), (w.meta or {}).get("session_id"))]
    if args.names:
        by_name = {w.name: w for w in found}
        missing = [n for n in dict.fromkeys(args.names) if n not in by_name]
        if missing:
            where = "MapReduce worktrees" if mapreduce else storage.root / "worktrees" / repo[1]
            for name in missing:
                err.write(f"error[E4006]: no worktree named '{name}' in {where}\n")
            err.write("  See `prodigy worktree ls` for the existing worktrees.\n")
            return None
        found = [by_name[n] for n in dict.fromkeys(args.names)]
    if args.older_than is not None:
        now = now_utc()
        found = [w for w in found
                 if (m := created_at(w)) is not None and (now - m).total_seconds()
                 >= args.older_than]
    return found


def _describe(plan: CleanPlan) -> str:
    wt = plan.worktree
    parts = []
    parts.append(f"worktree {wt.path}" if wt.exists else "metadata (directory already gone)")
    if plan.delete_branch and wt.branch:
        parts.append(f"branch {wt.branch}" + ("" if plan.merged else " (not merged)"))
    return f"{wt.name}: " + ", ".join(parts)


def clean(args: argparse.Namespace, storage: Storage, project: Path, out: TextIO,
          err: TextIO) -> int:
    """``worktree clean``: remove selected worktrees (spec 08 §2.7, 06 §8.3)."""
    if args.names and args.all:
        err.write("error[E8001]: give worktree names or --all, not both\n")
        return 2
    if not (args.names or args.all or args.merged_only or args.older_than is not None
            or args.mapreduce or args.job_id):
        err.write(f"error[E8001]: {NO_SELECTOR}\n")
        return 2
    repo = repo_of(project)
    if repo is None:
        return _not_a_repo(project, err)
    selected = _select(args, storage, repo, err)
    if selected is None:
        return 2
    plans = [plan_clean(storage, wt, force=args.force) for wt in selected]
    if args.merged_only:
        plans = [p for p in plans if p.merged or (p.merged is None
                                                  and p.worktree.status == "merged")]
    human = err if args.json else out
    report: dict[str, Any] = {"dry_run": bool(args.dry_run), "removed": [], "skipped": [],
                              "failed": [], "branches_deleted": []}
    named = set(args.names)
    code = 0
    for plan in plans:
        if plan.skip is not None:
            human.write(f"Skipping {plan.worktree.name}: {plan.skip}\n")
            report["skipped"].append({"name": plan.worktree.name, "reason": plan.skip})
            if plan.worktree.name in named:
                code = 1
    todo = [p for p in plans if p.skip is None]
    if not todo:
        human.write("No worktrees to clean.\n")
        return _finish(args, report, out, code)
    verb = "Would remove" if args.dry_run else "Will remove"
    for plan in todo:
        human.write(f"{verb} {_describe(plan)}\n")
    if args.dry_run:
        human.write(f"Dry run: {len(todo)} worktree(s) would be removed; nothing was "
                    "changed.\n")
        report["would_remove"] = [p.worktree.name for p in todo]
        return _finish(args, report, out, code)
    answer = Confirm.from_args(args, err).ask(f"Remove {len(todo)} worktree(s)?")
    if answer is None:
        return 2
    if not answer:
        return _finish(args, report, out, code)
    for plan in todo:
        removal = apply_clean(storage, plan, force=args.force)
        _warn(err, removal.warnings)
        name = plan.worktree.name
        if removal.removed:
            report["removed"].append(name)
            if removal.branch_deleted:
                report["branches_deleted"].append(plan.worktree.branch)
            kept = "" if removal.branch_deleted or not plan.worktree.branch else \
                f" (branch {plan.worktree.branch} kept)"
            human.write(f"Removed {name}{kept}\n")
        else:
            report["failed"].append({"name": name, "warnings": list(removal.warnings)})
            code = 1
    human.write(f"Removed {len(report['removed'])} worktree(s).\n")
    return _finish(args, report, out, code)


def _finish(args: argparse.Namespace, report: dict[str, Any], out: TextIO, code: int) -> int:
    if args.json:
        write_json(report, out)
    return code


# ----------------------------------------------------------------------- clean-orphaned


def clean_orphaned(args: argparse.Namespace, storage: Storage, project: Path, out: TextIO,
                   err: TextIO) -> int:
    """``worktree clean-orphaned``: left-over directories and metadata, then prune."""
    repo = repo_of(project)
    if repo is None:
        return _not_a_repo(project, err)
    root, name = repo
    orphans = find_orphans(storage, root, name)
    human = err if args.json else out
    report: dict[str, Any] = {"dry_run": bool(args.dry_run), "directories": list(orphans.dirs),
                              "metadata": [str(storage.worktree_meta_file(name, m))
                                           for m in orphans.metas],
                              "kept": [{"path": p, "reason": r} for p, r in orphans.kept],
                              "removed": []}
    for path, reason in orphans.kept:
        human.write(f"Keeping {path}: {reason}\n")
    verb = "Would remove" if args.dry_run else "Will remove"
    for path in orphans.dirs:
        human.write(f"{verb} directory {path} (not a git worktree)\n")
    for meta in report["metadata"]:
        human.write(f"{verb} metadata {meta} (its worktree is gone)\n")
    count = len(orphans.dirs) + len(orphans.metas)
    if args.dry_run:
        human.write(f"Dry run: {count} orphaned item(s) would be removed and "
                    "`git worktree prune` would run; nothing was changed.\n")
        return _finish(args, report, out, 0)
    if count:
        answer = Confirm.from_args(args, err).ask(f"Remove {count} orphaned item(s)?")
        if answer is None:
            return 2
        if not answer:
            return _finish(args, report, out, 0)
    removed, warnings = remove_orphans(storage, root, name, orphans)
    _warn(err, warnings)
    report["removed"] = removed
    if count:
        human.write(f"Removed {len(removed)} orphaned item(s).\n")
    else:
        human.write("No orphaned worktrees found.\n")
    human.write("Pruned git's records of missing worktrees.\n")
    return _finish(args, report, out, 1 if warnings else 0)
