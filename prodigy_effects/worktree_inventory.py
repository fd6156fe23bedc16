"""Which worktrees exist, which may be removed, and what is left over (spec 06 §8, 08 §2.7).

Theory of operation
-------------------
A worktree is known from two sources that can disagree: its metadata document
(``worktrees/<scope>/.metadata/<name>.json``) and its directory
(``worktrees/<scope>/<name>``).  :func:`discover` joins them into :class:`Worktree`
records — a directory without a document becomes status ``unknown``, a document whose
directory is gone is marked ``exists=False`` — and keeps only those of one repository:
a document by its ``repo_path``, a directory by the repository its ``.git`` file points
to (two repositories with the same base name share ``worktrees/<repo>/``; spec 09 §1.2).

:func:`plan_clean` decides, without changing anything, whether ``worktree clean`` may
remove a worktree: never while a live process holds its session or job lock; not with
uncommitted changes or commits missing from its merge target unless forced; its branch
is deleted only when merged into the target or when forced (spec 06 §8.3).
:func:`apply_clean` carries a plan out (re-checking the lock first).  :func:`find_orphans`
and :func:`remove_orphans` serve ``worktree clean-orphaned``: directories under
``worktrees/<repo>/`` that git no longer knows as worktrees, and metadata documents
whose worktree directory is gone.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs

from prodigy_core.reprs import shows_fields, value_class
from prodigy_effects import worktree_pool
from prodigy_effects.locks import LockInfo
from prodigy_effects.repolock import repo_lock
from prodigy_effects.storage import Storage
from prodigy_effects.worktree_admin import (
    W_CLEANUP,
    Removal,
    ahead_count,
    branch_exists,
    git,
    git_common_dir,
    lock_holder,
    merge_target,
    owner_common_dir,
    read_all_meta,
    registered_worktrees,
    remove_meta,
    remove_worktree,
    uncommitted_count,
)

__all__ = [
    "MAPREDUCE_KINDS",
    "CleanPlan",
    "Orphans",
    "Worktree",
    "apply_clean",
    "created_at",
    "discover",
    "find_orphans",
    "plan_clean",
    "remove_orphans",
]

# ``shared_pool``: a worktree of the repository pool of ``reuse`` (``<repo>/.pool/pool-<n>``)
MAPREDUCE_KINDS = frozenset({"agent", "pool", "shared_pool"})
SHARED_POOL = ".pool"
_GONE_STATUSES = frozenset({"merged", "cleaned_up"})


@shows_fields
@attrs.frozen(kw_only=True, eq=False, repr=False)
class Worktree:
    """One worktree as the metadata and the file system describe it.

    ``scope`` is the directory under ``<storage>/worktrees/`` (a repository name, or a
    MapReduce session id); ``meta`` the metadata document (``None`` for a directory
    without one, whose ``status`` is then ``unknown``); ``repo_root`` the main working
    tree of its repository when known.
    """

    scope: str
    name: str
    path: str
    branch: str | None
    kind: str
    status: str
    exists: bool
    repo_root: str | None
    meta: Mapping[str, Any] | None

    @property
    def original_branch(self) -> str | None:
        value = (self.meta or {}).get("original_branch")
        return value if isinstance(value, str) and value else None

    @property
    def active(self) -> bool:
        """Listed by ``worktree ls``: everything but merged/cleaned-up ones that are gone."""
        return self.exists or self.status not in _GONE_STATUSES

    def lock_ids(self) -> tuple[str, ...]:
        """Ids of the session and job locks that keep this worktree in use."""
        meta = self.meta or {}
        ids = [meta.get("session_id"), meta.get("job_id"), self.name]
        if self.kind in MAPREDUCE_KINDS:
            ids.append(self.scope)
        return tuple(dict.fromkeys(i for i in ids if isinstance(i, str) and i))

    def document(self) -> dict[str, Any]:
        """The metadata document, or one with the known fields for an unknown directory."""
        if self.meta is not None:
            doc = dict(self.meta)
        else:
            doc = {"session_id": None, "worktree_name": self.name, "branch": self.branch,
                   "original_branch": None, "created_at": None, "updated_at": None,
                   "status": "unknown", "repo_path": self.repo_root, "kind": self.kind,
                   "job_id": None}
        doc["path"] = self.path
        return doc


def _kind_of(name: str, meta: Mapping[str, Any] | None) -> str:
    kind = (meta or {}).get("kind")
    if isinstance(kind, str) and kind:
        return kind
    if name.startswith("mapreduce-agent-"):
        return "agent"
    if name.startswith("pool-"):
        return "pool"
    return "session"


def _root_of_common(common: str | None) -> str | None:
    if common is None or os.path.basename(common) != ".git":
        return None
    return os.path.dirname(common)


def _scopes(storage: Storage) -> list[str]:
    base = storage.root / "worktrees"
    try:
        return sorted(e.name for e in os.scandir(base)
                      if e.is_dir(follow_symlinks=False) and not e.name.startswith("."))
    except OSError:
        return []


def _children(directory: Path) -> list[str]:
    try:
        return sorted(e.name for e in os.scandir(directory)
                      if e.is_dir(follow_symlinks=False) and not e.name.startswith("."))
    except OSError:
        return []


def _scope_entries(storage: Storage, scope: str, *, repo_root: str | None,
                   common: str | None, home_scope: bool,
                   registered: Mapping[str, str | None]) -> list[Worktree]:
    """The worktrees of one scope; with ``repo_root`` only those of that repository.

    ``home_scope``: the scope is the repository's own ``worktrees/<repo>/``, where a
    document without ``repo_path`` and a directory without a ``.git`` file count as the
    repository's.  Elsewhere only positive evidence does.  ``registered`` is
    :func:`registered_worktrees` of ``repo_root``.
    """
    scope_dir = storage.worktrees_dir(scope)
    entries: list[Worktree] = []
    seen: set[str] = set()
    for doc in read_all_meta(storage, scope):
        name = str(doc["worktree_name"])
        seen.add(name)
        raw_path = doc.get("path")
        path = raw_path if isinstance(raw_path, str) and raw_path else str(scope_dir / name)
        exists = os.path.isdir(path)
        doc_repo = doc.get("repo_path")
        owner_root = _root_of_common(owner_common_dir(path)) if exists else None
        if repo_root is not None:
            if isinstance(doc_repo, str) and doc_repo:
                if os.path.realpath(doc_repo) != repo_root:
                    continue
            elif owner_root is not None:
                if owner_root != repo_root:
                    continue
            elif not home_scope:
                continue
        root = repo_root or (doc_repo if isinstance(doc_repo, str) and doc_repo else None) \
            or owner_root
        branch = doc.get("branch")
        status = doc.get("status")
        entries.append(Worktree(
            scope=scope, name=name, path=path,
            branch=branch if isinstance(branch, str) and branch else f"prodigy-{name}",
            kind=_kind_of(name, doc), status=status if isinstance(status, str) else "unknown",
            exists=exists, repo_root=root, meta=doc))
    for name in _children(scope_dir):
        if name in seen:
            continue
        path = str(scope_dir / name)
        common_of_dir = owner_common_dir(path)
        if repo_root is not None:
            if common_of_dir is None and not home_scope:
                continue
            if common_of_dir is not None and common_of_dir != common:
                continue
            dir_root: str | None = repo_root
            branch = registered.get(os.path.realpath(path))
        else:
            dir_root = _root_of_common(common_of_dir)
            branch = (registered_worktrees(dir_root).get(os.path.realpath(path))
                      if dir_root else None)
        entries.append(Worktree(scope=scope, name=name, path=path, branch=branch,
                                kind=_kind_of(name, None), status="unknown", exists=True,
                                repo_root=dir_root, meta=None))
    if home_scope or repo_root is None:
        entries.extend(_shared_pool(scope_dir, scope, repo_root=repo_root, common=common,
                                    registered=registered))
    return entries


def _shared_pool(scope_dir: Path, scope: str, *, repo_root: str | None, common: str | None,
                 registered: Mapping[str, str | None]) -> list[Worktree]:
    """The repository pool of ``reuse`` (``<repo>/.pool/pool-<n>``, spec 06 §9.2)."""
    found: list[Worktree] = []
    pool_dir = scope_dir / SHARED_POOL
    for name in _children(pool_dir):
        if not worktree_pool.POOL_NAME.match(name):
            continue
        path = str(pool_dir / name)
        owner = owner_common_dir(path)
        if repo_root is not None and owner is not None and owner != common:
            continue
        root = repo_root or _root_of_common(owner)
        branch = registered.get(os.path.realpath(path)) if repo_root is not None else None
        found.append(Worktree(scope=scope, name=f"{SHARED_POOL}/{name}", path=path,
                              branch=branch, kind="shared_pool", status="unknown",
                              exists=True, repo_root=root, meta=None))
    return found


def discover(storage: Storage, repo: tuple[str, str] | None, *, sessions: bool = True,
             mapreduce: bool = False) -> list[Worktree]:
    """The worktrees of repository ``repo`` (``(root, name)``), or of all when ``None``.

    ``sessions``: session and named worktrees (and unknown directories) of
    ``worktrees/<repo>/``; ``mapreduce``: agent and pool worktrees of MapReduce sessions
    (``worktrees/<session id>/``).  Sorted by creation time, then name.
    """
    found: list[Worktree] = []
    if repo is None:
        for scope in _scopes(storage):
            found.extend(_scope_entries(storage, scope, repo_root=None, common=None,
                                        home_scope=False, registered={}))
    else:
        root, name = os.path.realpath(repo[0]), repo[1]
        common = git_common_dir(root)
        registered = registered_worktrees(root)
        for scope in _scopes(storage):
            if scope == name or mapreduce:
                found.extend(_scope_entries(storage, scope, repo_root=root, common=common,
                                            home_scope=scope == name, registered=registered))
    kept = [w for w in found
            if (mapreduce and w.kind in MAPREDUCE_KINDS)
            or (sessions and w.kind not in MAPREDUCE_KINDS)]
    return sorted(kept, key=lambda w: (str((w.meta or {}).get("created_at") or ""), w.name))


def created_at(worktree: Worktree) -> datetime | None:
    """When the worktree was created: ``created_at``, else its directory's mtime."""
    value = (worktree.meta or {}).get("created_at")
    if isinstance(value, str) and value:
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            moment = None
        if moment is not None:
            return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    try:
        return datetime.fromtimestamp(os.stat(worktree.path).st_mtime, UTC)
    except OSError:
        return None


# ---------------------------------------------------------------------------- clean


@shows_fields
@attrs.frozen(kw_only=True, eq=False, repr=False)
class CleanPlan:
    """What ``worktree clean`` would do with one worktree.

    ``skip`` is the reason it is kept (``None``: it will be removed); ``holder`` the
    live lock keeping it; ``target`` its merge target; ``ahead`` the commits of its
    branch missing from the target; ``merged`` whether the branch is fully on the target
    (``None`` when there is no branch any more); ``delete_branch`` whether the branch goes.
    """

    worktree: Worktree
    skip: str | None
    holder: LockInfo | None
    target: str | None
    ahead: int | None
    uncommitted: int | None
    merged: bool | None
    delete_branch: bool


def _holder_text(info: LockInfo) -> str:
    pid = "unknown" if info.process_id is None else str(info.process_id)
    return f"in use by a running session (PID {pid} on {info.hostname or 'unknown host'})"


def plan_clean(storage: Storage, worktree: Worktree, *, force: bool) -> CleanPlan:
    """Decide whether ``worktree`` may be removed (spec 06 §8.3, 08 §2.7)."""
    root = worktree.repo_root
    holder = lock_holder(storage, worktree.lock_ids())
    target = merge_target(root, worktree.original_branch) if root else None
    branch = worktree.branch
    has_branch = bool(root and branch and branch_exists(root, branch))
    ahead = ahead_count(root, branch, target) if root and branch and target and has_branch \
        else None
    merged: bool | None = (ahead == 0) if has_branch else None
    uncommitted = uncommitted_count(worktree.path) if worktree.exists else 0
    skip: str | None = None
    if worktree.kind == "shared_pool" and worktree_pool.held(f"{worktree.path}.lock"):
        skip = "in use by a running job (its pool lock is held)"
    elif holder is not None:
        skip = _holder_text(holder)
    elif root is None:
        skip = "its repository is unknown"
    elif worktree.exists and owner_common_dir(worktree.path) != git_common_dir(root):
        skip = ("it is not a git worktree of this repository; "
                "`prodigy worktree clean-orphaned` removes such directories")
    elif not force and uncommitted is None:
        skip = "cannot check it for uncommitted changes; use --force to remove it anyway"
    elif not force and uncommitted:
        skip = f"it has {uncommitted} uncommitted change(s); use --force to remove it anyway"
    elif not force and has_branch and not merged:
        if target is None:
            skip = (f"cannot tell whether {branch} is merged: there is no target branch; "
                    "use --force to remove it anyway")
        else:
            skip = (f"{branch} has {ahead} commit(s) not on {target}; merge them with "
                    f"`prodigy worktree merge {worktree.name}` or use --force")
    return CleanPlan(worktree=worktree, skip=skip, holder=holder, target=target, ahead=ahead,
                     uncommitted=uncommitted, merged=merged,
                     delete_branch=has_branch and (bool(merged) or force))


def _remove_empty_scope(storage: Storage, scope: str) -> None:
    directory = storage.worktrees_dir(scope)
    for path in (directory / ".metadata", directory):
        try:
            path.rmdir()
        except FileNotFoundError:
            continue  # agent worktrees have no metadata directory of their own
        except OSError:
            return


def apply_clean(storage: Storage, plan: CleanPlan, *, force: bool) -> Removal:
    """Remove the planned worktree, its metadata and (per the plan) its branch.

    The lock is checked again first; a worktree taken meanwhile is left alone (a
    ``Removal`` with ``removed`` false and a W4005 warning).  Metadata is removed only
    when the worktree is gone.  An agent or pool scope left empty is removed (spec 06 §5.1).
    """
    wt = plan.worktree
    assert plan.skip is None and wt.repo_root is not None, "only removable plans are applied"
    holder = lock_holder(storage, wt.lock_ids())
    if holder is not None:
        return Removal(removed=False, branch_deleted=False,
                       warnings=(f"{W_CLEANUP}: kept {wt.path}: {_holder_text(holder)}",))
    repo = os.path.basename(wt.repo_root)
    if wt.kind == "shared_pool":
        return _remove_shared(storage, repo, plan, force=force)
    removal = remove_worktree(storage, repo, wt.repo_root, wt.path, wt.branch, force=force,
                              delete_branch=plan.delete_branch,
                              merged_into=plan.target if plan.merged else None)
    if removal.removed:
        remove_meta(storage, wt.scope, wt.name)
        if wt.kind in MAPREDUCE_KINDS and wt.scope != repo:
            _remove_empty_scope(storage, wt.scope)
    return removal


def _remove_shared(storage: Storage, repo: str, plan: CleanPlan, *, force: bool) -> Removal:
    """Remove a repository pool worktree with its lock and timestamps.

    Its lock is taken first, under the repository lock like every pool lock (spec 06
    §9.2), so a job starting meanwhile takes another worktree instead of this one; the
    lock goes, and the pool directory once empty, under the repository lock too, so a
    job making a new pool worktree never finds its directory vanishing.
    """
    wt = plan.worktree
    assert wt.repo_root is not None
    lock = f"{wt.path}.lock"
    with repo_lock(storage.repo_lock_file(repo)):
        taken = worktree_pool.take_lock(lock, "worktree-clean")
    if not taken:
        return Removal(removed=False, branch_deleted=False,
                       warnings=(f"{W_CLEANUP}: kept {wt.path}: in use by a running job",))
    try:
        removal = remove_worktree(storage, repo, wt.repo_root, wt.path, wt.branch,
                                  force=force, delete_branch=plan.delete_branch,
                                  merged_into=plan.target if plan.merged else None)
        if removal.removed:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{wt.path}.json")
    finally:
        with repo_lock(storage.repo_lock_file(repo)):
            worktree_pool.release_lock(lock)
            with contextlib.suppress(OSError):
                os.rmdir(os.path.dirname(wt.path))  # the pool directory, once empty
    return removal


# ------------------------------------------------------------------------- orphans


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class Orphans:
    """Left-overs under ``worktrees/<repo>/``.

    ``dirs``: directories git does not know as worktrees; ``metas``: names of metadata
    documents whose worktree directory is gone; ``kept``: (path, reason) of candidates
    that are left alone (another repository's worktree, a live lock).
    """

    dirs: tuple[str, ...]
    metas: tuple[str, ...]
    kept: tuple[tuple[str, str], ...]


def _candidate_dirs(scope_dir: Path) -> list[Path]:
    found: list[Path] = []
    try:
        children = sorted(scope_dir.iterdir())
    except OSError:
        return found
    for child in children:
        if child.name == ".metadata" or child.is_symlink() or not child.is_dir():
            continue
        if child.name == ".pool":
            found.extend(p for p in sorted(child.iterdir())
                         if p.is_dir() and not p.is_symlink())
        else:
            found.append(child)
    return found


def find_orphans(storage: Storage, repo_root: str, repo: str) -> Orphans:
    """Scan ``worktrees/<repo>/`` of the repository at ``repo_root`` (read-only)."""
    root = os.path.realpath(repo_root)
    common = git_common_dir(root)
    registered = set(registered_worktrees(root))
    scope_dir = storage.worktrees_dir(repo)
    dirs: list[str] = []
    kept: list[tuple[str, str]] = []
    for path in _candidate_dirs(scope_dir):
        if os.path.realpath(path) in registered:
            continue
        owner = owner_common_dir(path)
        if owner is not None and owner != common and os.path.isdir(owner):
            kept.append((str(path), f"it belongs to the repository at {owner}"))
            continue
        dirs.append(str(path))
    metas: list[str] = []
    docs = read_all_meta(storage, repo)
    readable = {str(doc["worktree_name"]) for doc in docs}
    try:
        stems = sorted(p.stem for p in (scope_dir / ".metadata").iterdir()
                       if p.suffix == ".json" and not p.name.startswith("."))
    except OSError:
        stems = []
    # unreadable documents (reported as W5003) whose worktree directory is gone
    metas.extend(stem for stem in stems
                 if stem not in readable and not os.path.lexists(scope_dir / stem))
    for doc in docs:
        name = str(doc["worktree_name"])
        raw = doc.get("path")
        if os.path.isdir(raw if isinstance(raw, str) and raw else scope_dir / name):
            continue
        doc_repo = doc.get("repo_path")
        if isinstance(doc_repo, str) and doc_repo and os.path.realpath(doc_repo) != root:
            continue
        ids = [doc.get("session_id"), doc.get("job_id"), name]
        holder = lock_holder(storage, [i for i in ids if isinstance(i, str)])
        if holder is not None:
            kept.append((str(storage.worktree_meta_file(repo, name)), _holder_text(holder)))
            continue
        metas.append(name)
    return Orphans(dirs=tuple(dirs), metas=tuple(metas), kept=tuple(kept))


def _rmtree(path: str) -> str | None:
    """Delete a directory tree as far as possible; the first problem met, if any."""
    errors: list[str] = []

    def record(_func: Any, failed: str, exc: BaseException) -> None:
        errors.append(f"{failed}: {getattr(exc, 'strerror', None) or exc}")

    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=record)
    else:
        shutil.rmtree(path, onerror=lambda f, p, info: record(f, p, info[1]))
    return errors[0] if errors else None


def remove_orphans(storage: Storage, repo_root: str, repo: str,
                   orphans: Orphans) -> tuple[list[str], list[str]]:
    """Delete the orphans found by :func:`find_orphans`, then ``git worktree prune``.

    Runs under the repository lock and re-checks each directory against git's list
    first, so a worktree created meanwhile is never deleted.  Returns ``(removed paths,
    W4005 warnings)``.
    """
    removed: list[str] = []
    warnings: list[str] = []
    with repo_lock(storage.repo_lock_file(repo)):
        registered = set(registered_worktrees(repo_root))
        for path in orphans.dirs:
            if os.path.realpath(path) in registered:
                continue
            problem = _rmtree(path)
            if os.path.lexists(path):
                warnings.append(f"{W_CLEANUP}: could not remove {path}: "
                                f"{problem or 'it is still there'}")
            else:
                removed.append(path)
        for name in orphans.metas:
            meta = storage.worktree_meta_file(repo, name)
            try:
                meta.unlink()
            except FileNotFoundError:
                continue
            except OSError as exc:
                warnings.append(f"{W_CLEANUP}: could not remove {meta}: "
                                f"{exc.strerror or exc}")
                continue
            removed.append(str(meta))
        result = git(repo_root, "worktree", "prune")
        if result.returncode != 0:
            warnings.append(f"{W_CLEANUP}: git worktree prune failed in {repo_root}: "
                            f"{(result.stderr or result.stdout).strip()}")
    return removed, warnings
