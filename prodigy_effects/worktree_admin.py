"""Worktree housekeeping: metadata documents and synchronous git helpers (spec 06, 09 §4.6).

Theory of operation
-------------------
Session and named worktrees live in ``<storage>/worktrees/<repo>/<name>``, agent and pool
worktrees of a MapReduce session in ``<storage>/worktrees/<session id>/<name>``; each
such *scope* directory keeps one metadata document per worktree in ``.metadata/``
(spec 09 §2, §4.6).  This module reads and writes those documents and answers the
questions the worktree commands and the run ask of git: where the repository root is,
which worktrees git knows, how many commits a branch has that its target lacks, whether
a working tree has uncommitted changes.  It also removes a worktree and its branch.

Everything here is synchronous (plain ``subprocess``, argument vectors only, never a
shell, ``GIT_TERMINAL_PROMPT=0``); trio code calls it through ``trio.to_thread``.  Every
git command that changes shared repository state (``worktree remove``, ``worktree
prune``, ``branch -d/-D``) runs while holding the per-repository lock
(:func:`prodigy_effects.repolock.repo_lock`).  A cleanup failure is never an exception:
it comes back as a warning ``W4005: …`` naming the path and quoting git (spec 06 §8.4).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import attrs

from prodigy_core.reprs import value_class
from prodigy_effects.fsutil import atomic_write_bytes, dumps_json
from prodigy_effects.locks import LockInfo, is_stale, read_lock
from prodigy_effects.repolock import repo_lock
from prodigy_effects.storage import W_UNREADABLE_FILE, Storage

__all__ = [
    "GIT_ENV",
    "META_FIELDS",
    "W_CLEANUP",
    "Removal",
    "ahead_count",
    "branch_exists",
    "default_branch",
    "git",
    "git_common_dir",
    "has_uncommitted",
    "is_merged",
    "lock_holder",
    "merge_target",
    "owner_common_dir",
    "prune",
    "read_all_meta",
    "registered_worktrees",
    "remove_meta",
    "remove_worktree",
    "repo_of",
    "same_path",
    "save_meta",
    "uncommitted_count",
]

W_CLEANUP = "W4005"

#: Environment of every git command (spec 06 §1.2).
GIT_ENV = {"GIT_TERMINAL_PROMPT": "0", "GIT_EDITOR": "true", "GIT_MERGE_AUTOEDIT": "no"}

#: The fields of a worktree metadata document (spec 09 §4.6), in their documented order.
META_FIELDS = (
    "session_id", "worktree_name", "branch", "original_branch", "created_at", "updated_at",
    "status", "iterations", "stats", "merged", "merged_at", "error", "merge_prompt_shown",
    "merge_prompt_response", "interrupted_at", "interruption_type", "resumable", "path",
    "repo_path", "workflow_path", "kind", "job_id",
)


# ------------------------------------------------------------------------------ git


def git(cwd: str | os.PathLike[str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``git <args>`` in ``cwd`` non-interactively; never raises for a git failure.

    A missing ``git`` executable or ``cwd`` gives a result with return code 127 and the
    reason in ``stderr``.
    """
    env = {**os.environ, **GIT_ENV}
    try:
        return subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True,
                              text=True, encoding="utf-8", errors="replace",
                              stdin=subprocess.DEVNULL, check=False)
    except OSError as exc:
        return subprocess.CompletedProcess(["git", *args], 127, "", str(exc))


def _message(result: subprocess.CompletedProcess[str]) -> str:
    text = (result.stderr.strip() or result.stdout.strip()).splitlines()
    cleaned = [line.removeprefix("fatal: ").removeprefix("error: ") for line in text]
    return "; ".join(line for line in cleaned if line) or f"exit code {result.returncode}"


def _ref(branch: str) -> str:
    return branch if branch.startswith("refs/") else f"refs/heads/{branch}"


def same_path(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Whether two paths name the same location (symbolic links resolved)."""
    return os.path.realpath(a) == os.path.realpath(b)


def git_common_dir(path: str | os.PathLike[str]) -> str | None:
    """The absolute, resolved common git directory of the repository at ``path``."""
    result = git(path, "rev-parse", "--git-common-dir")
    if result.returncode != 0 or not result.stdout.strip():
        return None
    return os.path.realpath(os.path.join(path, result.stdout.strip()))


def repo_of(path: str | os.PathLike[str]) -> tuple[str, str] | None:
    """``(root, name)`` of the repository containing ``path``, ``None`` outside one.

    The root is the repository's *main* working tree, also when ``path`` is inside a
    linked worktree (spec 06 §2.2); the name is its base name.  Bare repositories, and
    paths inside a ``.git`` directory, give ``None`` (spec 06 §2.1 rejects them).
    """
    if not os.path.isdir(path):
        return None
    result = git(path, "rev-parse", "--is-inside-work-tree", "--git-common-dir")
    lines = result.stdout.splitlines()
    if result.returncode != 0 or len(lines) < 2 or lines[0].strip() != "true":
        return None
    common = os.path.realpath(os.path.join(path, lines[1].strip()))
    if os.path.basename(common) == ".git":
        root = os.path.dirname(common)
    else:
        # A separate git directory (``git init --separate-git-dir``, submodules): the
        # main working tree is the first entry of ``git worktree list``.
        listed = git(path, "worktree", "list", "--porcelain")
        first = next((line for line in listed.stdout.splitlines()
                      if line.startswith("worktree ")), None)
        if listed.returncode != 0 or first is None:
            return None
        root = os.path.realpath(first.removeprefix("worktree "))
    if not os.path.isdir(root):
        return None
    return root, os.path.basename(root)


def registered_worktrees(repo_root: str | os.PathLike[str]) -> dict[str, str | None]:
    """The worktrees git knows in this repository: resolved path → branch (or None).

    Includes the main working tree and worktrees whose directory is gone (prunable).
    """
    result = git(repo_root, "worktree", "list", "--porcelain")
    found: dict[str, str | None] = {}
    current: str | None = None
    for line in result.stdout.splitlines():
        if line.startswith("worktree "):
            current = os.path.realpath(line.removeprefix("worktree "))
            found[current] = None
        elif line.startswith("branch ") and current is not None:
            found[current] = line.removeprefix("branch ").removeprefix("refs/heads/")
    return found


def owner_common_dir(path: str | os.PathLike[str]) -> str | None:
    """The common git directory a worktree directory points at through its ``.git`` file.

    Read from the files alone (``<dir>/.git`` → ``gitdir: …/worktrees/<id>`` → its
    ``commondir``), so it also works when git no longer knows the worktree.  ``None``
    when ``path`` has no ``.git`` file or it is unreadable.
    """
    dotgit = Path(path) / ".git"
    try:
        if dotgit.is_dir():
            return os.path.realpath(dotgit)
        text = dotgit.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None
    if not text.startswith("gitdir:"):
        return None
    gitdir = Path(path) / text.removeprefix("gitdir:").strip()
    try:
        common = (gitdir / "commondir").read_text(encoding="utf-8").strip()
    except OSError:
        # The worktree's administrative directory is gone: …/.git/worktrees/<id>.
        if gitdir.parent.name == "worktrees":
            return os.path.realpath(gitdir.parent.parent)
        return None
    return os.path.realpath(gitdir / common)


def branch_exists(repo_root: str | os.PathLike[str], branch: str) -> bool:
    return git(repo_root, "show-ref", "--verify", "--quiet", _ref(branch)).returncode == 0


def default_branch(repo_root: str | os.PathLike[str]) -> str | None:
    """The default branch (spec 06 §4.2): ``origin/HEAD``'s branch, else main, else master."""
    result = git(repo_root, "symbolic-ref", "--quiet", "refs/remotes/origin/HEAD")
    if result.returncode == 0:
        name = result.stdout.strip().removeprefix("refs/remotes/origin/")
        if name and branch_exists(repo_root, name):
            return name
    for name in ("main", "master"):
        if branch_exists(repo_root, name):
            return name
    return None


def merge_target(repo_root: str | os.PathLike[str], original_branch: str | None) -> str | None:
    """``original_branch`` if it still exists, else the default branch (spec 06 §4.3)."""
    if original_branch and branch_exists(repo_root, original_branch):
        return original_branch
    return default_branch(repo_root)


def ahead_count(repo_root: str | os.PathLike[str], branch: str, target: str) -> int | None:
    """Commits on ``branch`` that ``target`` lacks; ``None`` if either is unknown."""
    result = git(repo_root, "rev-list", "--count", f"{_ref(target)}..{_ref(branch)}", "--")
    if result.returncode != 0:
        return None
    try:
        return int(result.stdout.strip())
    except ValueError:
        return None


def is_merged(repo_root: str | os.PathLike[str], branch: str, target: str) -> bool:
    """Whether every commit of ``branch`` is on ``target`` (false if either is missing)."""
    result = git(repo_root, "merge-base", "--is-ancestor", _ref(branch), _ref(target))
    return result.returncode == 0


def uncommitted_count(path: str | os.PathLike[str]) -> int | None:
    """Modified tracked plus untracked, not ignored, paths in a working tree.

    ``None`` when git cannot tell (not a working tree, a broken one).
    """
    if not os.path.isdir(path):
        return None
    result = git(path, "status", "--porcelain", "--untracked-files=all")
    if result.returncode != 0:
        return None
    return sum(1 for line in result.stdout.splitlines() if line.strip())


def has_uncommitted(path: str | os.PathLike[str]) -> bool:
    """Whether the working tree has uncommitted changes; true when git cannot tell."""
    count = uncommitted_count(path)
    return count is None or count > 0


# ------------------------------------------------------------------------- metadata


def read_all_meta(storage: Storage, repo: str) -> list[dict[str, Any]]:
    """Every metadata document under ``worktrees/<repo>/.metadata/``, by file name.

    ``repo`` is the scope: a repository name, or a MapReduce session id for agent and
    pool worktrees.  A file that cannot be read or is not a JSON object is skipped with
    warning W5003 appended to ``storage.warnings``.  A document without
    ``worktree_name`` gets the file's stem (in memory only).
    """
    try:
        directory = storage.worktrees_dir(repo) / ".metadata"
    except ValueError:
        return []
    try:
        files = sorted(p for p in directory.iterdir()
                       if p.suffix == ".json" and not p.name.startswith("."))
    except OSError:
        return []
    docs: list[dict[str, Any]] = []
    for file in files:
        try:
            doc = json.loads(file.read_bytes().decode("utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            storage.warnings.append(f"{W_UNREADABLE_FILE}: skipped worktree metadata {file}: "
                                    f"{exc}")
            continue
        if not isinstance(doc, dict):
            storage.warnings.append(f"{W_UNREADABLE_FILE}: skipped worktree metadata {file}: "
                                    f"expected a JSON object, found {type(doc).__name__}")
            continue
        name = doc.get("worktree_name")
        if name is None:
            doc["worktree_name"] = file.stem
        elif name != file.stem:
            storage.warnings.append(f"{W_UNREADABLE_FILE}: skipped worktree metadata {file}: "
                                    f"it names worktree {name!r}, not {file.stem!r}")
            continue
        docs.append(doc)
    return docs


def save_meta(storage: Storage, repo: str, doc: dict[str, Any]) -> Path:
    """Write ``doc`` to ``worktrees/<repo>/.metadata/<worktree_name>.json`` atomically.

    The text goes through ``storage.mask`` like every document under the root.
    Raises ``ValueError`` for a missing or unsafe ``worktree_name``, ``OSError`` when
    the file cannot be written.
    """
    name = doc.get("worktree_name")
    if not isinstance(name, str):
        raise ValueError("worktree metadata needs a worktree_name")
    path = storage.worktree_meta_file(repo, name)
    atomic_write_bytes(path, storage.mask(dumps_json(doc)).encode("utf-8"))
    return path


def remove_meta(storage: Storage, repo: str, name: str) -> bool:
    """Delete a worktree's metadata document; whether there was one."""
    try:
        storage.worktree_meta_file(repo, name).unlink()
    except FileNotFoundError:
        return False
    return True


def lock_holder(storage: Storage, ids: Iterable[str | None]) -> LockInfo | None:
    """The first session/job lock among ``ids`` held by a live process, else ``None``.

    A lock that cannot be read counts as held (its owner is unknown); a stale one (this
    host, process gone) does not.
    """
    for lock_id in dict.fromkeys(i for i in ids if isinstance(i, str) and i):
        try:
            path = storage.lock_file(lock_id)
        except ValueError:
            continue
        info = read_lock(path)
        if info is not None and not is_stale(info):
            return info
    return None


# -------------------------------------------------------------------------- removal


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class Removal:
    """What :func:`remove_worktree` did; ``warnings`` are ``W4005: …`` texts."""

    removed: bool
    branch_deleted: bool
    warnings: tuple[str, ...] = ()


def _warn(path: str | os.PathLike[str], what: str,
          result: subprocess.CompletedProcess[str]) -> str:
    return f"{W_CLEANUP}: {what} {os.fspath(path)}: {_message(result)}"


def remove_worktree(storage: Storage, repo: str, repo_root: str | os.PathLike[str],
                    path: str | os.PathLike[str], branch: str | None, *, force: bool,
                    delete_branch: bool, merged_into: str | None = None) -> Removal:
    """Remove a worktree, then prune, then (optionally) delete its branch.

    Runs, in ``repo_root`` and under the lock of ``repo``: ``git worktree remove
    [--force] <path>`` (skipped when the directory is already gone), ``git worktree
    prune``, and with ``delete_branch`` ``git branch -d <branch>`` — ``-D`` when
    ``force``, or when ``merged_into`` is given and the branch is verified (under the
    lock) to be merged into it, so that ``-d``'s comparison with the root's ``HEAD``
    does not keep a branch that is safely merged into its real target.  The branch is
    only deleted once the worktree is gone.  Failures become W4005 warnings.
    """
    warnings: list[str] = []
    removed = False
    branch_deleted = False
    with repo_lock(storage.repo_lock_file(repo)):
        if os.path.lexists(path):
            args = ["worktree", "remove", *(["--force"] if force else []), os.fspath(path)]
            result = git(repo_root, *args)
            if result.returncode == 0:
                removed = True
            else:
                warnings.append(_warn(path, "could not remove worktree", result))
        else:
            removed = True
        result = git(repo_root, "worktree", "prune")
        if result.returncode != 0:
            warnings.append(_warn(repo_root, "git worktree prune failed in", result))
        if removed and delete_branch and branch and branch_exists(repo_root, branch):
            safe = merged_into is not None and is_merged(repo_root, branch, merged_into)
            flag = "-D" if force or safe else "-d"
            result = git(repo_root, "branch", flag, branch)
            if result.returncode == 0:
                branch_deleted = True
            else:
                warnings.append(f"{W_CLEANUP}: could not delete branch {branch} of "
                                f"{os.fspath(path)}: {_message(result)}")
    return Removal(removed=removed, branch_deleted=branch_deleted, warnings=tuple(warnings))


def prune(storage: Storage, repo: str, repo_root: str | os.PathLike[str]) -> list[str]:
    """``git worktree prune`` under the repository lock; W4005 warnings on failure."""
    with repo_lock(storage.repo_lock_file(repo)):
        result = git(repo_root, "worktree", "prune")
    if result.returncode != 0:
        return [_warn(repo_root, "git worktree prune failed in", result)]
    return []
