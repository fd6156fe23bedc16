"""Discarding what DLQ entries kept, and logging removals (spec 05 §13.5, §17; 09 §5.5).

A DLQ entry may keep an agent branch (and, with ``keep_failed``, its worktree) in
``worktree_artifacts``.  When the entry goes (``dlq purge``, a successful ``dlq retry``)
those go too: :func:`remove_artifacts` deletes them in the repository, every git command
under the per-repository lock.  :func:`record_removals` appends ``dlq_item_removed``
events to the job's event log from a process that is not the job's own (a CLI command).
The entries themselves are handled by :mod:`prodigy_effects.dlq_store`.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs

from prodigy_core.reprs import value_class
from prodigy_effects.dlq_store import UNSET
from prodigy_effects.fsutil import rfc3339_ms
from prodigy_effects.journal import JournalWriter, last_seq
from prodigy_effects.repolock import repo_lock
from prodigy_effects.storage import Storage
from prodigy_effects.worktree_admin import (
    W_CLEANUP,
    branch_exists,
    git,
    registered_worktrees,
    remove_meta,
    remove_worktree,
)

__all__ = ["ArtifactRemoval", "job_session_id", "record_removals", "remove_artifacts"]


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class ArtifactRemoval:
    """What :func:`remove_artifacts` did.  ``ok`` is true when nothing is left behind
    (the branch and a kept worktree are gone, or there were none); ``warnings`` are
    ``W4005: …`` texts."""

    ok: bool
    branch_deleted: bool = False
    worktree_removed: bool = False
    warnings: tuple[str, ...] = ()


def _under(path: Path, root: Path) -> bool:
    try:
        return Path(os.path.realpath(path)).is_relative_to(os.path.realpath(root))
    except OSError:
        return False


def remove_artifacts(storage: Storage, repo: str, repo_root: str | os.PathLike[str],
                     artifacts: Mapping[str, Any] | None) -> ArtifactRemoval:
    """Delete what an entry kept: its agent branch and, if one was kept, its worktree.

    A kept worktree is removed only when it is under ``<storage>/worktrees/`` and git
    lists it as a worktree of ``repo_root`` (``git worktree remove --force``, prune, and
    its metadata document); the branch goes with ``git branch -D``.  Every git command
    runs under the repository lock.  Failures come back as W4005 warnings.
    """
    if not artifacts:
        return ArtifactRemoval(ok=True)
    branch = artifacts.get("branch_name")
    branch = branch if isinstance(branch, str) and branch else None
    wt_path = artifacts.get("worktree_path")
    wt_path = wt_path if isinstance(wt_path, str) and wt_path else None
    warnings: list[str] = []
    if (wt_path and os.path.isdir(wt_path) and _under(Path(wt_path), storage.root / "worktrees")
            and os.path.realpath(wt_path) in registered_worktrees(repo_root)):
        removal = remove_worktree(storage, repo, repo_root, wt_path, branch, force=True,
                                  delete_branch=True)
        warnings.extend(removal.warnings)
        if removal.removed:
            scope = Path(wt_path).parent.name
            with contextlib.suppress(ValueError, OSError):
                remove_meta(storage, scope, Path(wt_path).name)
            if scope != repo:
                # an agent scope (``worktrees/<session id>/``) left empty goes too
                with contextlib.suppress(OSError):
                    Path(wt_path).parent.rmdir()
        gone = not branch or removal.branch_deleted or not branch_exists(repo_root, branch)
        return ArtifactRemoval(ok=removal.removed and gone,
                               branch_deleted=removal.branch_deleted,
                               worktree_removed=removal.removed, warnings=tuple(warnings))
    if not branch:
        return ArtifactRemoval(ok=True)
    with repo_lock(storage.repo_lock_file(repo)):
        if not branch_exists(repo_root, branch):
            return ArtifactRemoval(ok=True)
        result = git(repo_root, "branch", "-D", branch)
    if result.returncode == 0:
        return ArtifactRemoval(ok=True, branch_deleted=True)
    detail = (result.stderr.strip() or result.stdout.strip()).replace("\n", "; ")
    detail = detail.removeprefix("error: ")
    return ArtifactRemoval(ok=False, warnings=(
        f"{W_CLEANUP}: could not delete branch {branch} in {os.fspath(repo_root)}: "
        f"{detail or f'exit code {result.returncode}'}",))


# ------------------------------------------------------------------------------ events


def job_session_id(storage: Storage, repo: str, job_id: str) -> str | None:
    """The job's session id from its newest checkpoint (spec 09 §4.3), if readable."""
    jobs = storage.root / "state" / repo / "mapreduce" / "jobs" / job_id
    try:
        meta = json.loads((jobs / "metadata.json").read_text(encoding="utf-8"))
        newest = meta.get("path") if isinstance(meta, dict) else None
        if isinstance(newest, str) and newest and "/" not in newest:
            state = json.loads((jobs / newest).read_text(encoding="utf-8"))
            session = state.get("session_id") if isinstance(state, dict) else None
            return session if isinstance(session, str) else None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return None


def record_removals(storage: Storage, repo: str, job_id: str, item_ids: Iterable[str], *,
                    reason: str, session_id: str | None = UNSET,
                    now: datetime | None = None,
                    mask: Callable[[str], str] | None = None) -> Path | None:
    """Append one ``dlq_item_removed`` event per item to the job's event log (09 §5.5).

    Opens a new event file in ``events/<repo>/<job_id>/`` continuing the run's ``seq``
    (the caller must not run while the job's own process writes events: hold or check
    the job lock).  ``reason`` is ``purged`` or ``retried``.  ``session_id`` defaults to
    the one in the job's state.  Returns the file written, ``None`` for no items.
    """
    ids = list(item_ids)
    if not ids:
        return None
    if session_id is UNSET:
        session_id = job_session_id(storage, repo, job_id)
    moment = now or datetime.now(UTC)
    events_dir = storage.events_dir(repo, job_id)
    with JournalWriter.open(events_dir, last_seq(events_dir) + 1, moment,
                            mask=mask or storage.mask) as writer:
        for item_id in ids:
            event = {"event_type": "dlq_item_removed", "job_id": job_id,
                     "session_id": session_id, "item_id": item_id, "reason": reason}
            writer.append(event, correlation_id=job_id, timestamp=rfc3339_ms(moment),
                          event_id=str(uuid.uuid4()))
        return writer.path
