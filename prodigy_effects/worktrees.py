"""The production ``Worktrees``: session worktrees and merges with plain ``git``.

Performs the effects of ``prodigy_core.worktree_ops`` (spec 06 §3–§8).  Every command is
an argument vector (never a shell) run non-interactively (``GIT_TERMINAL_PROMPT=0``,
``GIT_EDITOR=true``, ``GIT_MERGE_AUTOEDIT=no``).  Operations that change state shared by
the whole repository — ``git worktree add/remove/prune``, branch creation and deletion,
and the merge into the user's branch — run while holding the per-repository lock
(``prodigy_effects.repolock``), so several runs in one repository never collide in git's
own lock files.  Nothing here stashes, resets or discards anything in the user's
checkout: a merge git refuses is reported, not forced (spec 06 §10).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import attrs
import trio

from prodigy_core.job_ops import (
    AgentReleased,
    FinishAgent,
    MeasureWorktree,
    WorktreeMeasured,
)
from prodigy_core.json_values import JSON
from prodigy_core.reprs import shows_fields
from prodigy_core.worktree_ops import (
    AskUser,
    BranchMerged,
    ConcludeMerge,
    CreateWorktree,
    InspectMerge,
    MergeBranch,
    MergeConcluded,
    MergeConflicted,
    MergeFailed,
    MergeInspected,
    MergeVerified,
    RemovePool,
    RemoveWorktree,
    UserAnswered,
    VerifyMerged,
    WorktreeCreated,
    WorktreeFailed,
    WorktreeRemoved,
)
from prodigy_effects import gitobjects, spawn, worktree_pool
from prodigy_effects.fsutil import (
    atomic_write_bytes,
    dumps_json,
    ensure_dir,
    read_json,
)
from prodigy_effects.repolock import open_repo_lock
from prodigy_effects.resources import tree_size

_GIT_ENV = {"GIT_TERMINAL_PROMPT": "0", "GIT_EDITOR": "true", "GIT_MERGE_AUTOEDIT": "no"}
_IDENTITY = {"user.name": "Prodigy", "user.email": "prodigy@localhost"}
MAX_COMMITS = 100
MAX_FILES = 500


class GitError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


async def git(cwd: str, *args: str, check: bool = True,
              stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, **_GIT_ENV}
    try:
        result = await spawn.run_process(["git", *args], cwd=cwd, stdin=stdin, env=env)
    except OSError as exc:
        raise GitError(f"cannot run git in {cwd}: {exc}") from exc
    if check and result.returncode != 0:
        raise GitError(_message(result) or f"git {args[0]} failed ({result.returncode})")
    return result


def _message(result: subprocess.CompletedProcess[bytes]) -> str:
    err = result.stderr.decode("utf-8", "replace").strip()
    out = result.stdout.decode("utf-8", "replace").strip()
    return err or out


def _text(result: subprocess.CompletedProcess[bytes]) -> str:
    return result.stdout.decode("utf-8", "surrogateescape").strip()


async def identity(cwd: str) -> list[str]:
    """``-c`` options for the parts of the committer identity the repository lacks."""
    options: list[str] = []
    for key, value in _IDENTITY.items():
        found = await git(cwd, "config", "--get", key, check=False)
        if found.returncode != 0 or not found.stdout.strip():
            options += ["-c", f"{key}={value}"]
    return options


@contextlib.asynccontextmanager
async def _locked(lock_path: str) -> AsyncIterator[None]:
    if lock_path:
        async with open_repo_lock(Path(lock_path)):
            yield
    else:
        yield


async def branch_exists(cwd: str, branch: str) -> bool:
    if loose_branch(cwd, branch) is not None:
        return True  # a loose ref file: no need to ask git
    result = await git(cwd, "show-ref", "--verify", "-q", f"refs/heads/{branch}", check=False)
    return result.returncode == 0


def loose_branch(cwd: str, branch: str) -> str | None:
    """The commit of ``branch`` when its ref is a loose file (None: ask git)."""
    gitdir = _git_dir(cwd)
    return gitobjects.loose_ref(_common_dir(gitdir), f"refs/heads/{branch}") \
        if gitdir is not None else None


async def _is_worktree(path: str) -> bool:
    if not os.path.isdir(path):
        return False
    result = await git(path, "rev-parse", "--show-toplevel", check=False)
    return result.returncode == 0 and os.path.realpath(_text(result)) == os.path.realpath(path)


async def status_paths(cwd: str) -> tuple[str, ...]:
    """Uncommitted paths: modified tracked files and untracked, not ignored files."""
    result = await git(cwd, "status", "--porcelain=v1", "-z", "--untracked-files=all",
                       check=False)
    if result.returncode != 0:
        return ()
    entries = [e for e in result.stdout.decode("utf-8", "surrogateescape").split("\0") if e]
    return tuple(sorted({e[3:] for e in entries if len(e) > 3}))


async def head(cwd: str) -> str | None:
    result = await git(cwd, "rev-parse", "--verify", "-q", "HEAD", check=False)
    return _text(result) or None if result.returncode == 0 else None


async def default_branch(cwd: str) -> str | None:
    """Spec 06 §4.2: ``origin/HEAD``'s branch, else ``main``, else ``master``."""
    result = await git(cwd, "symbolic-ref", "-q", "refs/remotes/origin/HEAD", check=False)
    if result.returncode == 0:
        name = _text(result).removeprefix("refs/remotes/origin/")
        if name and await branch_exists(cwd, name):
            return name
    for name in ("main", "master"):
        if await branch_exists(cwd, name):
            return name
    return None


async def worktree_of_branch(repo_root: str, branch: str) -> str | None:
    """The working tree where ``branch`` is checked out (``git worktree list``)."""
    result = await git(repo_root, "worktree", "list", "--porcelain", "-z", check=False)
    if result.returncode != 0:
        result = await git(repo_root, "worktree", "list", "--porcelain")
        records = [r.split("\n") for r in result.stdout.decode("utf-8", "surrogateescape")
                   .split("\n\n")]
    else:
        records = [r.split("\0") for r in result.stdout.decode("utf-8", "surrogateescape")
                   .split("\0\0")]
    for fields in records:
        path = next((f[len("worktree "):] for f in fields if f.startswith("worktree ")), None)
        if path and f"branch refs/heads/{branch}" in fields:
            return path
    return None


async def _busy(cwd: str) -> str | None:
    """Is a merge, rebase, cherry-pick or bisect in progress in ``cwd``?"""
    for marker, what in (("MERGE_HEAD", "a merge"), ("rebase-merge", "a rebase"),
                         ("rebase-apply", "a rebase"), ("CHERRY_PICK_HEAD", "a cherry-pick"),
                         ("REVERT_HEAD", "a revert"), ("BISECT_LOG", "a bisect")):
        found = await git(cwd, "rev-parse", "--git-path", marker, check=False)
        rel = _text(found)
        if rel and os.path.exists(os.path.join(cwd, rel)):
            return what
    return None


async def _unmerged(cwd: str) -> tuple[str, ...]:
    result = await git(cwd, "diff", "--name-only", "-z", "--diff-filter=U", check=False)
    return tuple(p for p in result.stdout.decode("utf-8", "surrogateescape").split("\0") if p)


def _git_dir(cwd: str) -> str | None:
    """The git directory of the working tree at ``cwd`` without running git."""
    dot = os.path.join(cwd, ".git")
    if os.path.isdir(dot):
        return dot
    first = _first_line(dot)
    if first is None or not first.startswith("gitdir:"):
        return None
    target = first[len("gitdir:"):].strip()
    return target if os.path.isabs(target) else os.path.normpath(os.path.join(cwd, target))


_SHA = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
# worktree ids git keeps as they are (it rewrites ``..`` and a ``.lock`` ending)
_WORKTREE_ID = re.compile(r"^(?!.*\.\.)(?!.*\.lock$)[A-Za-z0-9][A-Za-z0-9._-]*$")


def _registered(session: str, path: str) -> bool:
    """Is there an administrative directory named after the worktree at ``path``?"""
    gitdir = _git_dir(session)
    return gitdir is not None and os.path.isdir(
        os.path.join(_common_dir(gitdir), "worktrees", os.path.basename(path)))


def _write_admin(admin: str, path: str, branch: str) -> bool:
    """Write the new (empty) administrative directory ``admin`` of a worktree at ``path``
    with ``branch`` checked out, and the worktree's ``.git`` file; False (what was made
    removed again) when that fails.  ``admin`` keeps its ``locked`` file: the caller
    removes it once the files are checked out, as ``git worktree add`` does."""
    made_path = False
    try:
        _write_text(os.path.join(admin, "locked"), "initializing")
        os.mkdir(path)
        made_path = True
        real = os.path.realpath(path)
        _write_text(os.path.join(admin, "gitdir"), os.path.join(real, ".git") + "\n")
        _write_text(os.path.join(admin, "commondir"), "../..\n")
        _write_text(os.path.join(admin, "HEAD"), f"ref: refs/heads/{branch}\n")
        _write_text(os.path.join(real, ".git"), f"gitdir: {os.path.realpath(admin)}\n")
    except OSError:
        shutil.rmtree(admin, ignore_errors=True)
        if made_path:  # never what was there before
            shutil.rmtree(path, ignore_errors=True)
        return False
    return True


def _write_text(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8", errors="surrogateescape") as handle:
        handle.write(text)


def _common_dir(gitdir: str) -> str:
    rel = _first_line(os.path.join(gitdir, "commondir"))
    if rel is None:
        return gitdir
    return rel if os.path.isabs(rel) else os.path.normpath(os.path.join(gitdir, rel))


def head_branch(cwd: str) -> str | None:
    """The branch ``HEAD`` names at ``cwd`` (None: detached, or unreadable)."""
    gitdir = _git_dir(cwd)
    line = _first_line(os.path.join(gitdir, "HEAD")) if gitdir is not None else None
    return line.removeprefix("ref: refs/heads/") \
        if line is not None and line.startswith("ref: refs/heads/") else None


def _first_line(path: str) -> str | None:
    """The first line of a small text file of git's, stripped (None: unreadable).  Bytes
    that are not UTF-8 (a path's) come back as surrogate escapes, as ``os`` paths do."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as handle:
            return handle.readline().strip()
    except OSError:
        return None


def loose_head(cwd: str) -> str | None:
    """The commit of ``HEAD`` at ``cwd`` read from git's files, when that is certain.

    Only the common case is read: ``HEAD`` names a branch whose ref is a loose file
    (just created or moved by git: a loose ref wins over ``packed-refs``).  Anything
    else — a detached ``HEAD``, a packed ref, the reftable backend — gives ``None``, and
    the caller asks git.  Saves a process per agent worktree.
    """
    branch = head_branch(cwd)
    gitdir = _git_dir(cwd)
    if branch is None or gitdir is None:
        return None
    return gitobjects.loose_ref(_common_dir(gitdir), f"refs/heads/{branch}")


def linked_admin(path: str) -> str | None:
    """The administrative directory (``<common>/worktrees/<id>``) of the linked worktree
    at ``path`` when Prodigy may remove the worktree itself, as ``git worktree remove
    --force`` would: ``.git`` is a file naming that directory, whose ``gitdir`` names
    ``path/.git`` back, and the worktree is not locked.  None otherwise (ask git)."""
    if os.path.isdir(os.path.join(path, ".git")):
        return None  # a repository of its own, not a linked worktree
    admin = _git_dir(path)
    if admin is None or os.path.basename(os.path.dirname(admin)) != "worktrees":
        return None
    back = _first_line(os.path.join(admin, "gitdir"))
    if not back or os.path.realpath(back) != os.path.realpath(os.path.join(path, ".git")):
        return None
    if os.path.lexists(os.path.join(admin, "locked")):
        return None  # git refuses to remove a locked worktree: let it say so
    return admin


def _branch_in_use(cwd: str, branch: str) -> bool:
    """Is ``branch`` checked out in any worktree, or configured (``[branch "<name>"]``,
    which ``git branch -d`` removes and ``update-ref -d`` would leave)?  True when
    unsure: then ``git branch -d`` decides."""
    gitdir = _git_dir(cwd)
    if gitdir is None:
        return True
    common = _common_dir(gitdir)
    wanted = f"ref: refs/heads/{branch}"
    heads = [os.path.join(common, "HEAD")]
    try:
        heads += [os.path.join(common, "worktrees", name, "HEAD")
                  for name in os.listdir(os.path.join(common, "worktrees"))]
    except FileNotFoundError:
        pass
    except OSError:
        return True
    if any(_first_line(head) == wanted for head in heads):
        return True
    try:
        with open(os.path.join(common, "config"), "rb") as handle:
            config = handle.read()
    except OSError:
        return True
    return f'[branch "{branch}"]'.encode("utf-8", "surrogateescape") in config


def _reaches(cwd: str, start: str | None, wanted: str) -> bool:
    """Is commit ``wanted`` ``start`` or one of its ancestors, as far as git's loose
    objects tell (False: not found there — ask git)?"""
    gitdir = _git_dir(cwd)
    if start is None or gitdir is None:
        return False
    return gitobjects.reaches(os.path.join(_common_dir(gitdir), "objects"), start, wanted)


async def _remove_if_clean(path: str) -> bool:
    """Remove a clean linked worktree as ``git worktree remove`` (not forced) does: only
    when ``git status`` lists nothing (untracked files and submodule changes count);
    False, with nothing removed, when it is not clean or not usual (locked, with
    submodules: git refuses those in its own words)."""
    admin = linked_admin(path)
    if admin is None or os.path.exists(os.path.join(path, ".gitmodules")):
        return False
    status = await git(path, "status", "--porcelain=v1", "-z", "--untracked-files=all",
                       "--ignore-submodules=none", check=False)
    if status.returncode != 0 or status.stdout.strip(b"\0"):
        return False
    if not await remove_tree(path):
        return False
    await drop_admin(admin)
    return True


async def drop_admin(admin: str) -> None:
    """Delete a removed worktree's administrative directory (a handful of small files: no
    thread needed); when that fails, ``git worktree prune`` forgets it (its files are
    gone).  Already gone — pruned by someone — is fine."""
    try:
        shutil.rmtree(admin)
    except FileNotFoundError:
        pass
    except OSError:
        await git(os.path.dirname(os.path.dirname(admin)), "worktree", "prune", check=False)


async def remove_tree(path: str) -> bool:
    """Delete a directory tree in a worker thread (a big one must not hold the event
    loop); False when something in it could not be deleted."""
    try:
        await trio.to_thread.run_sync(shutil.rmtree, path)
    except FileNotFoundError:
        pass
    except OSError:
        return False
    return True


# pauses before merging again when another git process held a lock file (≈ 3 s in all)
MERGE_LOCK_RETRIES = (0.1, 0.3, 0.6, 1.0, 1.0)


def _lock_busy(result: subprocess.CompletedProcess[bytes]) -> bool:
    """Did git fail because another process held one of its ``*.lock`` files?"""
    err = result.stderr.decode("utf-8", "replace")
    return ".lock': File exists" in err or "cannot lock ref" in err


async def _merge_in_progress(cwd: str) -> bool:
    found_dir = _git_dir(cwd)
    if found_dir is not None and os.path.isdir(found_dir):
        return os.path.exists(os.path.join(found_dir, "MERGE_HEAD"))
    found = await git(cwd, "rev-parse", "--git-path", "MERGE_HEAD", check=False)
    rel = _text(found)
    return bool(rel) and os.path.exists(os.path.join(cwd, rel))


async def agent_work(repo: str, base: str, branch: str
                     ) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The commits of ``branch`` since ``base`` (oldest first) and the files they change.

    One ``git log`` answers both when the branch has a single commit on ``base`` (what
    most agents make): its own changes are the branch's.  Otherwise the files come
    from ``git diff --name-only base branch``.  A missing branch has no commits.
    """
    gitdir = _git_dir(repo)
    if gitdir is not None:
        known = gitobjects.branch_work(_common_dir(gitdir), base, branch)
        if known is not None:
            return known  # read from git's loose files (gitobjects)
    ref = f"refs/heads/{branch}"
    found = await git(repo, "log", "--reverse", "-z", "--format=%H%x01%P", "--name-only",
                      f"{base}..{ref}", "--", check=False)
    if found.returncode != 0:
        if await branch_exists(repo, branch):
            raise GitError(_message(found))  # the branch is there: a real failure
        return (), ()
    tokens = found.stdout.decode("utf-8", "surrogateescape").split("\0")
    heads = [t.lstrip("\n") for t in tokens if _LOG_HEAD.match(t.lstrip("\n"))]
    commits = tuple(h.split("\x01", 1)[0] for h in heads)
    if not commits:
        return (), ()
    if len(heads) == 1 and heads[0].split("\x01", 1)[1] == base and \
            tokens[0] == heads[0] and len(tokens) >= 2 and tokens[1].startswith("\n"):
        names = [tokens[1][1:], *tokens[2:]]
        return commits, tuple(sorted(n for n in names if n))
    if len(heads) == 1 and heads[0].split("\x01", 1)[1] == base and len(tokens) == 2 \
            and tokens[1] in ("", "\n"):
        return commits, ()  # an empty commit
    names_out = await git(repo, "diff", "--name-only", "-z", base, ref, "--")
    return commits, tuple(sorted(p for p in names_out.stdout.decode(
        "utf-8", "surrogateescape").split("\0") if p))


_LOG_HEAD = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})\x01[0-9a-f ]*$")


async def _merged_head(where: str, source: str) -> str:
    """``HEAD`` after ``git merge --no-ff`` of ``source`` said it succeeded, verified.

    The usual case needs one ``rev-parse``: the merge commit's second parent is the
    source's tip.  Otherwise (already up to date: no merge commit) ``source`` must be an
    ancestor of ``HEAD``; when it is not, git's success was not a merge (``GitError``).
    """
    found = await git(where, "rev-parse", "HEAD", f"{source}^{{commit}}", "HEAD^2",
                      check=False)
    shas = _text(found).split()
    if found.returncode == 0 and len(shas) == 3 and shas[1] == shas[2]:
        return shas[0]
    if not await is_ancestor(where, source, "HEAD"):
        raise GitError(f"git merge reported success but {source} is not an ancestor of "
                       f"HEAD in {where}")
    return await head(where) or ""


def loose_parents(cwd: str, sha: str) -> tuple[str, ...] | None:
    """The parents of commit ``sha`` read from its loose object (None: not loose, or not
    a readable commit — ask git)."""
    gitdir = _git_dir(cwd)
    if gitdir is None:
        return None
    fields = gitobjects.commit_fields(os.path.join(_common_dir(gitdir), "objects"), sha)
    return None if fields is None else fields[1]


async def _merged_and_deleted(where: str, source: str) -> str | None:
    """After ``git merge --no-ff`` of agent branch ``source`` into ``where``: verify and
    delete the branch in one process when git's files allow it; the new ``HEAD``.

    ``HEAD`` and its parents are read from git's files; ``update-ref -d`` deletes
    ``source`` only if its tip is ``HEAD``'s second parent, which is the proof that it
    was merged.  None when this cannot be decided so (the caller verifies and deletes
    the slow way).  Agent branches have no configuration to remove (``--no-track``).
    """
    now = loose_head(where)
    parents = loose_parents(where, now) if now else None
    if now is None or parents is None or len(parents) != 2:
        return None
    gone = await git(where, "update-ref", "-d", f"refs/heads/{source}", parents[1],
                     check=False)
    return now if gone.returncode == 0 else None


async def is_ancestor(cwd: str, ancestor: str, of: str) -> bool:
    result = await git(cwd, "merge-base", "--is-ancestor", ancestor, of, check=False)
    return result.returncode == 0


# --- listing what a merge brings (spec 06 §7.7) ---------------------------------------


async def merge_commits(cwd: str, target: str, source: str) -> list[JSON]:
    fmt = "%H%x00%h%x00%an%x00%ae%x00%cn%x00%ce%x00%cI%x00%P%x00%B%x1e"
    result = await git(cwd, "log", "--reverse", f"--format={fmt}", f"{target}..{source}", "--")
    out: list[JSON] = []
    for record in result.stdout.decode("utf-8", "replace").split("\x1e"):
        record = record.strip("\n")
        if not record:
            continue
        parts = record.split("\0")
        if len(parts) < 9:
            continue
        sha, short, an, ae, cn, ce, when, parents, message = parts[:9]
        out.append({"id": sha, "short_id": short, "author": {"name": an, "email": ae},
                    "committer": {"name": cn, "email": ce}, "message": message.strip(),
                    "timestamp": when, "parent_ids": parents.split()})
    return out


async def modified_files(cwd: str, target: str, source: str) -> list[JSON]:
    base = _text(await git(cwd, "merge-base", target, source))
    status = await git(cwd, "diff", "--name-status", "-z", "-M", base, source, "--")
    numstat = await git(cwd, "diff", "--numstat", "-z", "-M", base, source, "--")
    counts: dict[str, tuple[int, int]] = {}
    fields = numstat.stdout.decode("utf-8", "surrogateescape").split("\0")
    i = 0
    while i < len(fields):
        entry = fields[i]
        if not entry:
            i += 1
            continue
        parts = entry.split("\t")
        ins, dels = parts[0], parts[1] if len(parts) > 1 else "0"
        if len(parts) >= 3 and parts[2]:
            path = parts[2]
            i += 1
        else:  # a rename: the two paths follow
            path = fields[i + 2] if i + 2 < len(fields) else ""
            i += 3
        counts[path] = (int(ins) if ins.isdigit() else 0, int(dels) if dels.isdigit() else 0)
    out: list[JSON] = []
    items = status.stdout.decode("utf-8", "surrogateescape").split("\0")
    i = 0
    kinds = {"A": "added", "D": "deleted", "R": "renamed", "C": "added"}
    while i < len(items):
        code = items[i]
        if not code:
            i += 1
            continue
        if code[:1] in ("R", "C"):
            path = items[i + 2] if i + 2 < len(items) else ""
            i += 3
        else:
            path = items[i + 1] if i + 1 < len(items) else ""
            i += 2
        ins, dels = counts.get(path, (0, 0))
        out.append({"path": path, "modification_type": kinds.get(code[:1], "modified"),
                    "insertions": ins, "deletions": dels})
    return out


# --- the performer ------------------------------------------------------------------


@shows_fields
@attrs.define(repr=False)
class RealWorktrees:
    """Answers the worktree and merge effects with the ``git`` on ``PATH``.

    ``meta_dir`` maps a repository name to the directory of its worktree metadata;
    ``mask`` (the run's live masker) is applied to the metadata text before it is written.
    """

    meta_file: Callable[[str], Path] | None = None
    clock: Callable[[], str] | None = None
    identities: dict[str, list[str]] = attrs.field(factory=dict)
    mask: Callable[[str], str] = attrs.field(default=lambda text: text)
    # working tree → may worktrees be made from it without ``git worktree add``
    plain_adds: dict[str, bool] = attrs.field(factory=dict)

    async def _identity(self, cwd: str) -> list[str]:
        """``identity`` of a working tree, asked once per run."""
        if cwd not in self.identities:
            self.identities[cwd] = await identity(cwd)
        return self.identities[cwd]

    async def create(self, effect: CreateWorktree) -> WorktreeCreated | WorktreeFailed:
        try:
            return await self._create(effect)
        except GitError as error:
            return WorktreeFailed(command_id=effect.command_id, code="E4003",
                                  message=f"cannot create the worktree {effect.path}: "
                                          f"{error.message}")

    async def _plain_add(self, session: str) -> bool:
        """May worktrees be made from ``session`` by ``_add_worktree``?  Not
        when ``git worktree add`` would do more than it does: run a ``post-checkout``
        hook, copy sparse-checkout or per-worktree settings (git 2.36+), or write refs
        other than loose files.  Asked once per session (one git process)."""
        if session not in self.plain_adds:
            gitdir = _git_dir(session)
            plain = False
            if gitdir is not None:
                common = _common_dir(gitdir)
                hook = _text(await git(session, "rev-parse", "--git-path",
                                       "hooks/post-checkout", check=False))
                hook = hook if os.path.isabs(hook) else os.path.join(session, hook)
                try:
                    with open(os.path.join(common, "config"), "rb") as handle:
                        config = handle.read().lower()
                except OSError:
                    config = b"worktreeconfig"  # unreadable: let git decide
                plain = not (
                    (os.path.isfile(hook) and os.access(hook, os.X_OK))
                    or b"worktreeconfig" in config or b"refstorage" in config
                    or os.path.exists(os.path.join(common, "reftable"))
                    or any(os.path.exists(os.path.join(where, *name)) for where in
                           (gitdir, common) for name in
                           (("config.worktree",), ("info", "sparse-checkout"))))
            self.plain_adds[session] = plain
        return self.plain_adds[session]

    async def _add_agent_worktree(self, effect: CreateWorktree) -> bool:
        """``git worktree add --no-track -B <branch> <path> HEAD`` in the session
        worktree, done by ``_add_worktree``; False when git must do it."""
        base = loose_head(effect.repo_root)
        return base is not None and await self._add_worktree(
            effect.repo_root, effect.path, effect.branch, base, effect.lock_path, new=False)

    async def _add_worktree(self, where: str, path: str, branch: str, base: str,
                            lock_path: str, *, new: bool) -> bool:
        """Make a worktree at ``path`` with ``branch`` at commit ``base``, as ``git worktree
        add`` run in ``where`` does, with the repository lock held only while its
        administrative directory is written (a few small files) instead of for four git
        processes; False (nothing changed but, maybe, an agent's branch) when git must do
        it: something in the way, an unusual repository.  ``new``: the branch must not
        exist yet (``-b``); otherwise it is reset (``-B``).

        The branch is set with ``git update-ref`` and the files are checked out with
        ``git reset --hard`` — what ``git worktree add`` itself runs — outside the lock.
        The layout written is git's (gitrepository-layout(5), "worktrees/<id>"): while
        it is being written the directory holds a ``locked`` file, as git's does, so
        that no ``git worktree prune`` takes it for a broken one.
        """
        gitdir = _git_dir(where)
        name = os.path.basename(path)
        if gitdir is None or os.path.lexists(path) or not _WORKTREE_ID.match(name) or \
                not _SHA.match(base) or not await self._plain_add(where):
            return False
        common = _common_dir(gitdir)
        admin = os.path.join(common, "worktrees", name)
        if os.path.lexists(admin):
            return False
        made = await git(where, "update-ref", "-m", "branch: Created from HEAD",
                         f"refs/heads/{branch}", base, *([""] if new else []), check=False)
        if made.returncode != 0:
            if new:
                return False  # it exists after all: git says so in its own words
            raise GitError(_message(made) or f"cannot set the branch {branch}")
        ensure_dir(Path(path).parent)
        async with _locked(lock_path):
            try:
                os.makedirs(os.path.dirname(admin), exist_ok=True)
                os.mkdir(admin)
            except OSError:
                made_here = False  # someone else's: git picks another name
            else:
                made_here = _write_admin(admin, path, branch)
        if not made_here:
            if new:  # the branch is ours alone: git makes it again
                await git(where, "update-ref", "-d", f"refs/heads/{branch}", base,
                          check=False)
            return False
        try:
            await git(path, "reset", "--hard", "--no-recurse-submodules", "--quiet")
            os.unlink(os.path.join(admin, "locked"))
        except BaseException:
            # a failed or interrupted checkout leaves nothing behind (as git's own)
            with trio.CancelScope(shield=True):
                shutil.rmtree(path, ignore_errors=True)
                shutil.rmtree(admin, ignore_errors=True)
                if new:
                    await git(where, "update-ref", "-d", f"refs/heads/{branch}", base,
                              check=False)
            raise
        return True

    async def _create_agent(self, effect: CreateWorktree) -> WorktreeCreated | WorktreeFailed:
        """An agent worktree from the session worktree's ``HEAD`` (spec 06 §5.1)."""
        if not await self._add_agent_worktree(effect):
            await self._git_add_agent_worktree(effect)
        # the new branch is the agent's alone: its commit is the base, read unlocked
        base = loose_head(effect.path) or await head(effect.path)
        if base is None:
            return WorktreeFailed(command_id=effect.command_id, code="E4003",
                                  message=f"the agent worktree {effect.path} has no HEAD")
        return WorktreeCreated(command_id=effect.command_id, path=effect.path,
                               branch=effect.branch, head=base)

    async def _git_add_agent_worktree(self, effect: CreateWorktree) -> None:
        """``git worktree add`` an agent worktree, replacing a stale one first."""
        async with _locked(effect.lock_path):
            if os.path.exists(effect.path):
                # a stale agent worktree of an interrupted attempt: ours to remove, also
                # when a checkout killed half-way left it locked ("initializing")
                await git(effect.repo_root, "worktree", "remove", "--force", "--force",
                          effect.path, check=False)
                await git(effect.repo_root, "worktree", "prune", check=False)
            elif _registered(effect.repo_root, effect.path):
                # its files are gone but git still has it (a crash while it was removed)
                await git(effect.repo_root, "worktree", "prune", check=False)
            ensure_dir(Path(effect.path).parent)
            # from the session worktree's HEAD (run there): the branch starts at it; ``-B``
            # resets a stale branch of the same agent id (a crash) instead of failing
            await git(effect.repo_root, "worktree", "add", "-q", "--no-track", "-B",
                      effect.branch, effect.path, "HEAD")

    async def _create_pooled(self, effect: CreateWorktree
                             ) -> WorktreeCreated | WorktreeFailed:
        """A pool worktree for an agent (spec 06 §9.2): recycled, or made anew."""
        try:
            async with _locked(effect.lock_path):
                if effect.mode == "shared_pool":
                    return await worktree_pool.take_shared(effect)
                made = await worktree_pool.take(effect, effect.path)
        except worktree_pool.PoolError as error:
            return WorktreeFailed(command_id=effect.command_id, code="E4003",
                                  message=f"cannot prepare the pool worktree {effect.path}: "
                                          f"{error.message}")
        except OSError as error:
            return WorktreeFailed(command_id=effect.command_id, code="E4003",
                                  message=f"cannot prepare the pool worktree {effect.path}: "
                                          f"{error}")
        return WorktreeCreated(command_id=effect.command_id, path=effect.path,
                               branch=effect.branch, head=await head(effect.path),
                               created=made)

    async def _create(self, effect: CreateWorktree) -> WorktreeCreated | WorktreeFailed:
        cid = effect.command_id
        if effect.mode == "agent":
            return await self._create_agent(effect)
        if effect.mode in ("pool", "shared_pool"):
            return await self._create_pooled(effect)
        dirty = await status_paths(effect.user_dir) if effect.user_dir else ()
        if effect.mode in ("reuse", "resume") and await _is_worktree(effect.path):
            return WorktreeCreated(command_id=cid, path=effect.path, branch=effect.branch,
                                   head=await head(effect.path), created=False, dirty=dirty)
        if effect.mode == "create" and await self._add_worktree(
                effect.repo_root, effect.path, effect.branch, effect.base_commit,
                effect.lock_path, new=True):
            return WorktreeCreated(command_id=cid, path=effect.path, branch=effect.branch,
                                   head=effect.base_commit, created=True, dirty=dirty)
        async with _locked(effect.lock_path):
            # a new session's branch is new (its name holds the unique session id): git
            # refuses ``-b`` if it is not, so no look first
            has_branch = effect.mode != "create" and \
                await branch_exists(effect.repo_root, effect.branch)
            if effect.mode == "resume" and not has_branch:
                return WorktreeFailed(
                    command_id=cid, code="E4006",
                    message=f"the session worktree {effect.path} and its branch "
                            f"{effect.branch} are both gone; the session cannot be resumed")
            if os.path.exists(effect.path):
                if effect.mode == "create" or os.listdir(effect.path):
                    return WorktreeFailed(
                        command_id=cid, code="E4003",
                        message=f"{effect.path} already exists and is not a worktree of "
                                f"this repository; remove it or run "
                                f"`prodigy worktree clean-orphaned`")
                os.rmdir(effect.path)
            ensure_dir(Path(effect.path).parent)
            if effect.mode != "create":
                # the worktree was there once: forget its stale registration first
                await git(effect.repo_root, "worktree", "prune", check=False)
            if has_branch:
                await git(effect.repo_root, "worktree", "add", effect.path, effect.branch)
            else:
                added = await git(effect.repo_root, "worktree", "add", "-b", effect.branch,
                                  effect.path, effect.base_commit, check=False)
                if added.returncode != 0 and effect.mode == "create":
                    # a stale registration of this very path: prune it, then try again
                    await git(effect.repo_root, "worktree", "prune", check=False)
                    added = await git(effect.repo_root, "worktree", "add", "-b",
                                      effect.branch, effect.path, effect.base_commit,
                                      check=False)
                if added.returncode != 0:
                    raise GitError(_message(added) or "git worktree add failed")
        made = loose_head(effect.path) or await head(effect.path)
        return WorktreeCreated(command_id=cid, path=effect.path, branch=effect.branch,
                               head=made, created=effect.mode != "resume",
                               recreated=effect.mode == "resume", dirty=dirty)

    async def inspect(self, effect: InspectMerge) -> MergeInspected | MergeFailed:
        cid = effect.command_id
        try:
            repo = effect.repo_root
            target: str | None = None
            warning: str | None = None
            if effect.original_branch and await branch_exists(repo, effect.original_branch):
                target = effect.original_branch
            else:
                target = await default_branch(repo)
                if effect.original_branch and target is not None:
                    warning = (f"original branch '{effect.original_branch}' no longer "
                               f"exists; merging into '{target}'")
            uncommitted = await status_paths(effect.worktree_path) \
                if os.path.isdir(effect.worktree_path) else ()
            if target is None:
                return MergeInspected(command_id=cid, target=None, uncommitted=uncommitted)
            ahead = int(_text(await git(repo, "rev-list", "--count",
                                        f"{target}..{effect.branch}")) or 0)
            commits: list[JSON] = []
            files: list[JSON] = []
            failed: str | None = None
            if effect.details and ahead:
                try:
                    commits = await merge_commits(repo, target, effect.branch)
                    files = await modified_files(repo, target, effect.branch)
                except GitError as error:
                    failed = error.message
            return MergeInspected(
                command_id=cid, target=target, ahead=ahead, target_warning=warning,
                uncommitted=uncommitted, commits=tuple(commits[:MAX_COMMITS]),
                commit_count=ahead if not failed else 0,
                modified_files=tuple(files[:MAX_FILES]), file_count=len(files),
                details_failed=failed)
        except GitError as error:
            return MergeFailed(command_id=cid, code="E4005",
                               message=f"cannot prepare the merge: {error.message}",
                               reason="failed")

    async def merge(self, effect: MergeBranch
                    ) -> BranchMerged | MergeConflicted | MergeFailed:
        try:
            async with _locked(effect.lock_path):
                return await self._merge(effect)
        except GitError as error:
            return MergeFailed(command_id=effect.command_id, code="E4005",
                               message=error.message, reason="failed")

    async def _merge(self, effect: MergeBranch
                     ) -> BranchMerged | MergeConflicted | MergeFailed:
        cid = effect.command_id
        warnings: list[str] = []
        temp = False
        if effect.into_worktree is not None:
            where = effect.into_worktree
            if await _merge_in_progress(where):
                await git(where, "merge", "--abort", check=False)
                warnings.append(f"a merge was in progress in {where}; it was aborted")
        else:
            found = await worktree_of_branch(effect.repo_root, effect.target)
            if found is not None:
                where = found
                busy = await _busy(where)
                if busy is not None:
                    return MergeFailed(
                        command_id=cid, code="E4005",
                        message=f"target working tree is busy: {busy} is in progress in "
                                f"{where}; finish or abort it, then run "
                                f"`prodigy worktree merge`", reason="refused")
            else:
                where = effect.temp_path
                await self._drop_temp(effect.repo_root, where)
                ensure_dir(Path(where).parent)
                await git(effect.repo_root, "worktree", "add", where, effect.target)
                temp = True
        # into a session worktree: no auto maintenance after each of the job's merges (the
        # agents' own commits still run it)
        quiet = ("-c", "maintenance.auto=false") if effect.into_worktree is not None else ()
        merged = await self._run_merge(where, effect, quiet)
        if merged.returncode == 0:
            fast = await _merged_and_deleted(where, effect.source) \
                if effect.into_worktree is not None else None
            if fast is not None:
                return BranchMerged(command_id=cid, sha=fast, merge_dir=where,
                                    warnings=tuple(warnings))
            sha = await _merged_head(where, effect.source)
            if effect.into_worktree is not None:
                # a merged agent branch is deleted (spec 05 §8.2)
                gone = await git(where, "branch", "-d", effect.source, check=False)
                if gone.returncode != 0:
                    warnings.append(f"cannot delete {effect.source}: {_message(gone)}")
            if temp:
                await self._drop_temp(effect.repo_root, where)
            return BranchMerged(command_id=cid, sha=sha, merge_dir=where,
                                warnings=tuple(warnings))
        conflicts = await _unmerged(where)
        if conflicts:
            pre = await head(where) or ""  # a conflicted merge has not moved HEAD
            aborted = not effect.keep_conflict
            if aborted:
                await git(where, "merge", "--abort", check=False)
                if temp:
                    await self._drop_temp(effect.repo_root, where)
            return MergeConflicted(command_id=cid, paths=conflicts, merge_dir=where, pre=pre,
                                   aborted=aborted, warnings=tuple(warnings))
        if await _merge_in_progress(where):
            # ours (none was in progress before it): leave the tree as it was
            await git(where, "merge", "--abort", check=False)
        if temp:
            await self._drop_temp(effect.repo_root, where)
        return MergeFailed(command_id=cid, code="E4005",
                           message=f"git refused to merge {effect.source} into "
                                   f"{effect.target} in {where}: {_message(merged)}",
                           reason="refused")

    async def _run_merge(self, where: str, effect: MergeBranch, quiet: tuple[str, ...]
                         ) -> subprocess.CompletedProcess[bytes]:
        """``git merge --no-ff``, again after a pause when another git process held one of
        git's lock files (the user's editor or IDE, a git command of theirs in the same
        checkout: Prodigy's lock cannot keep those out). Git makes the merge commit and
        then fails to move the branch, leaving ``MERGE_HEAD`` behind, so the half-made
        merge is aborted before the next attempt."""
        pauses = iter(MERGE_LOCK_RETRIES)
        while True:
            merged = await git(where, *await self._identity(where), *quiet, "merge",
                               "--no-ff", "-m", effect.message, effect.source, check=False)
            pause = next(pauses, None)
            if merged.returncode == 0 or pause is None or not _lock_busy(merged) \
                    or await _unmerged(where):  # (a conflict is reported as such)
                return merged
            if await _merge_in_progress(where):
                await git(where, "merge", "--abort", check=False)
            await trio.sleep(pause)

    async def _drop_temp(self, repo_root: str, path: str) -> None:
        """Remove a temporary merge worktree (ours alone; forcing is safe here)."""
        if os.path.exists(path):
            await git(repo_root, "worktree", "remove", "--force", path, check=False)
        await git(repo_root, "worktree", "prune", check=False)

    async def conclude(self, effect: ConcludeMerge) -> MergeConcluded:
        cid = effect.command_id
        where = effect.merge_dir
        try:
            async with _locked(effect.lock_path):
                reason = ""
                if effect.action == "accept":
                    reason = await self._accept(effect)
                    if not reason:
                        sha = await head(where)
                        if where == effect.temp_path:
                            await self._drop_temp(effect.repo_root, where)
                        return MergeConcluded(command_id=cid, accepted=True, sha=sha)
                if await _merge_in_progress(where):
                    await git(where, "merge", "--abort", check=False)
                else:
                    await git(where, "reset", "--keep", effect.pre, check=False)
                now = await head(where)
                if effect.pre and now != effect.pre:
                    # `reset --keep` refuses to overwrite local changes: say so, never
                    # claim a rollback that did not happen
                    reason = (f"{reason + '; ' if reason else ''}the rollback did not "
                              f"restore {effect.pre[:12]} in {where} (HEAD is "
                              f"{(now or '?')[:12]}; local changes are in the way): save "
                              f"them, then run `git -C {where} reset --keep {effect.pre}`")
                if where == effect.temp_path:
                    await self._drop_temp(effect.repo_root, where)
                return MergeConcluded(command_id=cid, accepted=False,
                                      reason=reason or "rolled back")
        except GitError as error:
            return MergeConcluded(command_id=cid, accepted=False, reason=error.message)

    async def _accept(self, effect: ConcludeMerge) -> str:
        """Why the resolution is not acceptable ('' when it is)."""
        where = effect.merge_dir
        left = await _unmerged(where)
        if left:
            return f"unmerged paths remain: {', '.join(left)}"
        for rel in effect.conflicting:
            path = os.path.join(where, rel)
            try:
                with open(path, "rb") as handle:
                    for line in handle:
                        if line.startswith((b"<<<<<<< ", b">>>>>>> ")):
                            return f"conflict markers remain in {rel}"
            except (FileNotFoundError, IsADirectoryError):
                continue
        if await _merge_in_progress(where):
            if effect.conflicting:
                listed = b"".join(p.encode("utf-8", "surrogateescape") + b"\0"
                                  for p in effect.conflicting)
                await git(where, "add", "-A", "--pathspec-from-file=-", "--pathspec-file-nul",
                          stdin=listed)
            done = await git(where, *await identity(where), "commit", "--no-edit",
                             check=False)
            if done.returncode != 0:
                return f"git commit failed: {_message(done)}"
        first = await git(where, "rev-parse", "HEAD^1", check=False)
        if first.returncode != 0 or _text(first) != effect.pre:
            return "the resulting HEAD does not have the previous HEAD as first parent"
        if not await is_ancestor(where, effect.source, "HEAD"):
            return f"{effect.source} is not an ancestor of the resulting HEAD"
        return ""

    async def verify(self, effect: VerifyMerged) -> MergeVerified:
        merged = await branch_exists(effect.repo_root, effect.target) and \
            await is_ancestor(effect.repo_root, effect.source, effect.target)
        return MergeVerified(command_id=effect.command_id, merged=merged)

    async def remove(self, effect: RemoveWorktree) -> WorktreeRemoved:
        problems: list[str] = []
        async with _locked(effect.lock_path):
            removed = False
            if os.path.exists(effect.path) and await _remove_if_clean(effect.path):
                removed = True
            elif os.path.exists(effect.path):
                gone = await git(effect.repo_root, "worktree", "remove", effect.path,
                                 check=False)
                removed = gone.returncode == 0
                if not removed:
                    problems.append(f"{effect.path}: {_message(gone)}")
            if not removed:
                # the directory was gone already (or stays): drop a stale registration
                # so that the branch is free to be deleted
                await git(effect.repo_root, "worktree", "prune", check=False)
            if await branch_exists(effect.repo_root, effect.branch):
                problem = await self._delete_branch(effect)
                if problem:
                    problems.append(f"branch {effect.branch}: {problem}")
        return WorktreeRemoved(command_id=effect.command_id,
                               warning="; ".join(problems) or None)

    async def _delete_branch(self, effect: RemoveWorktree) -> str:
        """Delete a merged branch, never an unmerged one (spec 06 §8.3)."""
        repo, branch, target = effect.repo_root, effect.branch, effect.target
        tip = loose_branch(repo, branch)
        if target and tip is not None and not _branch_in_use(repo, branch) and \
                _reaches(repo, loose_branch(repo, target), tip):
            # merged (the target's loose history holds its tip): one process deletes it,
            # and only if it still points there
            gone = await git(repo, "update-ref", "-d", f"refs/heads/{branch}", tip,
                             check=False)
            if gone.returncode == 0:
                return ""
        where = await worktree_of_branch(repo, target) if target else None
        if where is not None:
            # ``-d`` checks against HEAD: run it where the target is checked out
            deleted = await git(where, "branch", "-d", branch, check=False)
            return "" if deleted.returncode == 0 else _message(deleted)
        if target and await is_ancestor(repo, f"refs/heads/{branch}", f"refs/heads/{target}"):
            sha = _text(await git(repo, "rev-parse", f"refs/heads/{branch}"))
            gone = await git(repo, "update-ref", "-d", f"refs/heads/{branch}", sha,
                             check=False)
            return "" if gone.returncode == 0 else _message(gone)
        deleted = await git(repo, "branch", "-d", branch, check=False)
        return "" if deleted.returncode == 0 else _message(deleted)

    async def finish_agent(self, effect: FinishAgent) -> AgentReleased:
        """Describe an agent's work and release its worktree (spec 05 §7.4–§7.6)."""
        cid = effect.command_id
        commits: tuple[str, ...] = ()
        files: tuple[str, ...] = ()
        uncommitted: tuple[str, ...] = ()
        problems: list[str] = []
        try:
            if os.path.isdir(effect.path):
                uncommitted = await status_paths(effect.path)
            if effect.base:
                commits, files = await agent_work(effect.repo_root, effect.base,
                                                  effect.branch)
        except GitError as error:
            problems.append(error.message)
        # Removing the worktree as ``git worktree remove --force`` does, in two parts: its
        # files outside the repository lock (nothing else reads them), then its
        # administrative directory under the lock, which is all that concurrent ``git
        # worktree`` commands look at.  The lock is held for microseconds instead of a git
        # process; anything unusual (locked, not a linked worktree) is left to git.
        admin = None
        if not effect.keep and os.path.exists(effect.path):
            admin = linked_admin(effect.path)
            if admin is not None and not await remove_tree(effect.path):
                admin = None
        async with _locked(effect.lock_path):
            if admin is not None:
                await drop_admin(admin)
            elif not effect.keep and os.path.exists(effect.path):
                gone = await git(effect.repo_root, "worktree", "remove", "--force",
                                 effect.path, check=False)
                if gone.returncode != 0:
                    problems.append(f"{effect.path}: {_message(gone)}")
            problems += await worktree_pool.keep(effect)
            if effect.discard or (not commits and (not effect.keep or effect.detach)):
                await git(effect.repo_root, "branch", "-D", "-q", effect.branch, check=False)
            if effect.lock_file:
                try:
                    problems += await worktree_pool.give_back(effect)
                except OSError as error:
                    problems.append(f"cannot give {effect.path} back to the pool: {error}")
        return AgentReleased(command_id=cid, commits=commits, files=files,
                             uncommitted=uncommitted, warning="; ".join(problems) or None)

    async def measure(self, effect: MeasureWorktree) -> WorktreeMeasured:
        """The size of an agent worktree without git's data (spec 06 §9.4)."""
        try:
            size = await trio.to_thread.run_sync(tree_size, effect.path)
        except OSError as error:
            return WorktreeMeasured(command_id=effect.command_id,
                                    message=f"{effect.path}: {error.strerror or error}")
        return WorktreeMeasured(command_id=effect.command_id, size_bytes=size)

    async def remove_pool(self, effect: RemovePool) -> tuple[str, ...]:
        """Remove a job's worktree pool (spec 06 §9); the warnings of what was left."""
        async with _locked(effect.lock_path):
            return tuple(await worktree_pool.remove_pool(effect))

    def save_meta(self, doc: dict[str, Any]) -> None:
        if self.meta_file is None:
            return
        name = str(doc.get("worktree_name", ""))
        path = self.meta_file(name)
        now = self.clock() if self.clock is not None else ""
        out = dict(doc)
        try:
            old = read_json(path)
        except (OSError, ValueError):
            old = None
        if isinstance(old, dict) and old.get("created_at") and \
                old.get("session_id") == doc.get("session_id"):
            out["created_at"] = old["created_at"]
        elif now:
            out["created_at"] = now
        out["updated_at"] = now
        if out.get("merged") and not out.get("merged_at"):
            out["merged_at"] = now
        atomic_write_bytes(path, self.mask(dumps_json(out)).encode("utf-8"))


async def _read_line(stdin: Any) -> str:
    """Read a line in a thread that a cancelled run abandons (trio 0.22 and later)."""
    import inspect

    run = trio.to_thread.run_sync
    if "abandon_on_cancel" in inspect.signature(run).parameters:
        return str(await run(stdin.readline, abandon_on_cancel=True))
    return str(await run(stdin.readline, cancellable=True))


@shows_fields
@attrs.define(repr=False)
class TerminalPrompter:
    """Asks on the terminal when standard input and output both are one (spec 06 §7.4)."""

    out: Any
    enabled: bool = True
    stdin: Any = None

    async def ask(self, effect: AskUser, cancel: trio.Event) -> UserAnswered:
        import sys

        stdin = self.stdin or sys.stdin
        cid = effect.command_id
        try:
            terminal = self.enabled and stdin.isatty() and self.out.isatty()
        except (AttributeError, ValueError, OSError):
            terminal = False
        if not terminal:
            return UserAnswered(command_id=cid, answer=None, terminal=False)
        self.out.write(effect.question)
        self.out.flush()
        line: str | None = None
        async with trio.open_nursery() as nursery:
            async def watch() -> None:
                await cancel.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch)
            read = await _read_line(stdin)
            line = read if read else None
            nursery.cancel_scope.cancel()
        if line is None:
            self.out.write("\n")
        return UserAnswered(command_id=cid, answer=line.rstrip("\n") if line else None)
