"""``prodigy dlq purge`` (alias ``clear``): delete DLQ items and what they kept.

Selection (spec 08 §2.10): every item of the scope (see :mod:`prodigy_cli.cmd_dlq`),
narrowed by ``--job-id`` (or ``clear``'s positional job id), ``--item`` (repeatable; an
item id found in several jobs needs ``--job-id``, E6011) and ``--older-than-days N``
(last failure at least N days ago).  Items of a job whose lock is held by a live process
(the job is running or being resumed) are skipped with a reason.

After the confirmation of spec 08 §1.4, for each item: the agent branch it kept (and a
worktree kept with ``keep_failed``) is deleted in the job's repository under the
repository lock, then the entry file, then the index is rewritten.  If the branch cannot
be deleted, or the repository is not known here, the entry is kept (W4005) so that the
branch stays on record, and the exit status is 1.  Each job then gets one
``dlq_item_removed`` event per removed item (reason ``purged``) in its event log, and a
job directory left without entries is removed.
"""

from __future__ import annotations

import argparse
import os
from typing import TextIO

from prodigy_cli.cli_support import Confirm, describe_lock, live_lock, now_utc, parse_time
from prodigy_cli.cmd_dlq import E_DLQ_ITEM, Scope, select_entries
from prodigy_effects.dlq_cleanup import record_removals, remove_artifacts
from prodigy_effects.dlq_store import DlqEntry, prune_job, read_index, remove
from prodigy_effects.storage import Storage, StorageError
from prodigy_effects.worktree_admin import W_CLEANUP, repo_of, same_path

__all__ = ["purge"]

_GONE = "<gone>"


def _by_item(entries: list[DlqEntry], args: argparse.Namespace, err: TextIO) -> (
        list[DlqEntry] | None):
    """The entries named by ``--item``; ``None`` (error written) when one is unknown or
    ambiguous."""
    wanted = list(dict.fromkeys(args.item))
    found = [e for e in entries if e.item_id in wanted]
    missing = [i for i in wanted if all(e.item_id != i for e in found)]
    if missing:
        where = f" of job {args.job_id}" if args.job_id else ""
        for item in missing:
            err.write(f"error[{E_DLQ_ITEM}]: no DLQ item {item!r}{where}\n")
        err.write("  See `prodigy dlq list` for the items in the DLQ; nothing was deleted.\n")
        return None
    ambiguous = False
    for item in wanted:
        jobs = sorted({e.job_id for e in found if e.item_id == item})
        if len(jobs) > 1:
            ambiguous = True
            err.write(f"error[{E_DLQ_ITEM}]: DLQ item {item!r} is in several jobs "
                      f"({', '.join(jobs)}); choose one with --job-id\n")
    return None if ambiguous else found


def _old_enough(entry: DlqEntry, days: int) -> bool:
    moment = parse_time(entry.last_attempt)
    if moment is not None:
        age = (now_utc() - moment).total_seconds()
    else:
        try:
            age = now_utc().timestamp() - os.stat(entry.path).st_mtime
        except OSError:
            return False
    return age >= days * 86400


def _root_for(storage: Storage, scope: Scope, repo: str, job_id: str) -> str | None:
    """The repository root where the job's branches live; ``_GONE`` when that repository
    no longer exists; ``None`` when it is not known here."""
    recorded = (read_index(storage, repo, job_id) or {}).get("repo_path")
    recorded = recorded if isinstance(recorded, str) and recorded else None
    current = scope.current
    if current is not None and current[1] == repo and (
            recorded is None or same_path(recorded, current[0])):
        return current[0]
    if recorded is not None:
        if not os.path.isdir(recorded):
            return _GONE
        found = repo_of(recorded)
        return _GONE if found is None else found[0]
    return None


def _keeps_something(entry: DlqEntry) -> bool:
    """Whether the entry kept a branch, or a worktree directory that still exists."""
    worktree = entry.artifacts.get("worktree_path")
    return bool(entry.branch) or (isinstance(worktree, str) and bool(worktree)
                                  and os.path.isdir(worktree))


def _describe(entry: DlqEntry) -> str:
    kept = []
    if entry.branch:
        kept.append(f"branch {entry.branch}")
    worktree = entry.artifacts.get("worktree_path")
    if isinstance(worktree, str) and worktree and os.path.isdir(worktree):
        kept.append(f"worktree {worktree}")
    return f"{entry.job_id} {entry.item_id}" + (f" ({', '.join(kept)})" if kept else "")


def purge(args: argparse.Namespace, storage: Storage, scope: Scope, out: TextIO,
          err: TextIO) -> int:
    entries = select_entries(storage, scope, args.job_id)
    if args.item:
        named = _by_item(entries, args, err)
        if named is None:
            return 2
        entries = named
    if args.older_than_days is not None:
        entries = [e for e in entries if _old_enough(e, args.older_than_days)]
    jobs = sorted({(e.repo, e.job_id) for e in entries})
    locked = {job: info for job in jobs if (info := live_lock(storage, job[1])) is not None}
    for (_repo, job_id), info in sorted(locked.items()):
        count = sum(1 for e in entries if e.job_id == job_id)
        err.write(f"Skipping {count} item(s) of job {job_id}: the job is running "
                  f"({describe_lock(info)})\n")
    skipped_named = bool(args.item) and bool(locked)
    entries = [e for e in entries if (e.repo, e.job_id) not in locked]
    if not entries:
        out.write("No items in the DLQ match.\n" if not locked else "Nothing to purge.\n")
        return 1 if skipped_named else 0
    branches = sum(1 for e in entries if e.branch)
    out.write(f"The following {len(entries)} DLQ item(s) will be deleted:\n")
    for e in entries:
        out.write(f"  {_describe(e)}\n")
    question = f"Delete {len(entries)} DLQ item(s)" + (
        f" and {branches} kept branch(es)?" if branches else "?")
    answer = Confirm.from_args(args, err).ask(question)
    if answer is None:
        return 2
    if not answer:
        return 0
    removed, deleted_branches, failed = _apply(storage, scope, entries, err)
    out.write(f"Purged {removed} DLQ item(s); deleted {deleted_branches} branch(es).\n")
    if failed:
        err.write(f"{failed} item(s) were kept because what they kept could not be "
                  "deleted; see the warnings above.\n")
    return 1 if failed or skipped_named else 0


def _apply(storage: Storage, scope: Scope, entries: list[DlqEntry],
           err: TextIO) -> tuple[int, int, int]:
    """Delete the entries job by job; returns (removed, branches deleted, failed)."""
    removed = branches = failed = 0
    for repo, job_id in sorted({(e.repo, e.job_id) for e in entries}):
        info = live_lock(storage, job_id)
        members = [e for e in entries if (e.repo, e.job_id) == (repo, job_id)]
        if info is not None:  # started since the plan was shown
            err.write(f"Skipping {len(members)} item(s) of job {job_id}: the job is running "
                      f"({describe_lock(info)})\n")
            failed += len(members)
            continue
        root = _root_for(storage, scope, repo, job_id)
        gone: list[str] = []
        for entry in members:
            if _keeps_something(entry):
                if root is None:
                    err.write(f"warning[{W_CLEANUP}]: item {entry.item_id} of job {job_id} was "
                              f"kept: its branch {entry.branch or '-'} is in repository "
                              f"'{repo}', which is not known here; run the purge inside that "
                              "repository (or with -p DIR)\n")
                    failed += 1
                    continue
                if root != _GONE:
                    result = remove_artifacts(storage, repo, root, entry.artifacts)
                    for text in result.warnings:
                        code, _, rest = text.partition(": ")
                        err.write(f"warning[{code}]: {rest}\n")
                    if not result.ok:
                        failed += 1
                        continue
                    branches += int(result.branch_deleted)
            if remove(storage, repo, job_id, entry.item_id):
                gone.append(entry.item_id)
        removed += len(gone)
        try:
            record_removals(storage, repo, job_id, gone, reason="purged")
        except StorageError as exc:
            err.write(f"warning[{exc.code}]: could not log dlq_item_removed for job "
                      f"{job_id}: {exc}\n")
        prune_job(storage, repo, job_id)
    return removed, branches, failed
